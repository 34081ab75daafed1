//! Looking at and shrinking the store: every stored blob with its use
//! (`cache ls`), counts (`cache stats`), eviction by age and size (`cache
//! prune`) and emptying (`cache clear`). Never removes what a running pull
//! holds or a download in progress; must not write blobs.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{Cache, fsx, lock, meta};

/// One stored blob.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub hex: String,
    pub size: u64,
    /// When a pull last used it (the mtime of its use record), or else when
    /// it came in (the blob's mtime).
    pub last_used: SystemTime,
    /// Pulls that found it in the cache.
    pub hits: u64,
    /// Images that used it (as far as recorded).
    pub images: Vec<String>,
}

/// What `cache stats` reports.
#[derive(Debug, Clone)]
pub struct CacheStats {
    pub blobs: usize,
    pub bytes: u64,
    /// Cache hits over all blobs.
    pub hits: u64,
    pub partials: usize,
    pub partial_bytes: u64,
    pub oldest_use: Option<SystemTime>,
}

/// What a prune or clear removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    pub blobs: usize,
    pub partials: usize,
    pub freed: u64,
    /// Blobs left alone because a running pull holds them.
    pub in_use: usize,
    /// Files interrupted runs left: temporary files, lock files nobody
    /// holds, records of partial downloads that are gone.
    pub leftovers: usize,
}

/// What became of a blob [`Cache::remove_entry`] was asked to remove.
#[derive(Debug, PartialEq, Eq)]
enum Removal {
    Removed,
    /// Someone else removed it first.
    Gone,
    /// A running pull holds it: it stays.
    InUse,
}

impl Cache {
    /// Every stored blob, least recently used first.
    pub fn entries(&self) -> io::Result<Vec<CacheEntry>> {
        let dir = self.root.join("blobs").join("sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only names that are digests: anything else is not ours.
            if !is_hex(&name) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            let record = self.meta_path(&name);
            let info = meta::read(&record);
            let used = fs::symlink_metadata(&record)
                .and_then(|m| m.modified())
                .ok();
            let stored = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(CacheEntry {
                size: meta.len(),
                last_used: used.map_or(stored, |u| u.max(stored)),
                hits: info.hits,
                images: info.images,
                hex: name,
            });
        }
        out.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.hex.cmp(&b.hex)));
        Ok(out)
    }

    /// The sizes of the partial downloads.
    fn partials(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("ingest"))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(".data")
                && let Ok(meta) = entry.metadata()
                && meta.is_file()
            {
                out.push(meta.len());
            }
        }
        Ok(out)
    }

    /// Counts and bytes of stored blobs and partial downloads.
    pub fn stats(&self) -> io::Result<CacheStats> {
        let entries = self.entries()?;
        let partials = self.partials()?;
        Ok(CacheStats {
            blobs: entries.len(),
            bytes: entries.iter().map(|e| e.size).sum(),
            hits: entries.iter().map(|e| e.hits).sum(),
            partials: partials.len(),
            partial_bytes: partials.iter().sum(),
            oldest_use: entries.first().map(|e| e.last_used),
        })
    }

    /// Evicts blobs unused for longer than `older_than` (and partial
    /// downloads as old that no process is working on), then the least
    /// recently used until at most `max_size` bytes are stored. Blobs a
    /// running pull holds stay, and still count against `max_size`.
    pub fn prune(
        &self,
        older_than: Option<Duration>,
        max_size: Option<u64>,
    ) -> io::Result<PruneOutcome> {
        let now = SystemTime::now();
        let mut out = PruneOutcome::default();
        let old = |t: SystemTime| {
            older_than.is_some_and(|age| now.duration_since(t).is_ok_and(|d| d > age))
        };
        // While it decides, no pull takes or drops a blob (held.rs).
        let gate = super::held::gate(&self.root, true)?;
        let leased = self.leased()?;
        let mut kept = Vec::new();
        // Bytes that stay whatever happens: old blobs a pull holds.
        let mut staying = 0;
        for e in self.entries()? {
            if !old(e.last_used) {
                kept.push(e);
            } else if self.remove_entry(&e, &leased, &mut out)? == Removal::InUse {
                staying += e.size;
            }
        }
        if let Some(max) = max_size {
            let mut total: u64 = staying + kept.iter().map(|e| e.size).sum::<u64>();
            for e in &kept {
                if total <= max {
                    break;
                }
                if self.remove_entry(e, &leased, &mut out)? != Removal::InUse {
                    total -= e.size;
                }
            }
        }
        drop(gate);
        self.sweep_ingest(&old, &mut out)?;
        self.sweep_temporary(now, &mut out)?;
        Ok(out)
    }

    /// Removes a blob unless a running pull holds it: in its lease, or (an
    /// earlier version of docker-pull) with a shared lock on the blob.
    fn remove_entry(
        &self,
        e: &CacheEntry,
        leased: &HashSet<String>,
        out: &mut PruneOutcome,
    ) -> io::Result<Removal> {
        if leased.contains(&e.hex) {
            out.in_use += 1;
            return Ok(Removal::InUse);
        }
        let path = self.root.join("blobs").join("sha256").join(&e.hex);
        let file = match fsx::open_nofollow_read(&path) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
            Err(err) => return Err(err),
        };
        if file.try_lock().is_err() {
            out.in_use += 1;
            return Ok(Removal::InUse);
        }
        // The file locked must be the one removed.
        if !fsx::same_file(&file, &path)? {
            return Ok(Removal::Gone);
        }
        let removed = fs::remove_file(&path);
        let _ = file.unlock();
        match removed {
            Ok(()) => {
                let _ = fs::remove_file(self.meta_path(&e.hex));
                self.unseal(&e.hex);
                out.blobs += 1;
                out.freed += e.size;
                Ok(Removal::Removed)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Removal::Gone),
            Err(err) => Err(err),
        }
    }

    /// Empties the cache but for what running pulls hold and downloads in
    /// progress in other processes.
    pub fn clear(&self) -> io::Result<PruneOutcome> {
        let mut out = PruneOutcome::default();
        let gate = super::held::gate(&self.root, true)?;
        let leased = self.leased()?;
        for e in self.entries()? {
            self.remove_entry(&e, &leased, &mut out)?;
        }
        drop(gate);
        self.sweep_ingest(&|_| true, &mut out)?;
        self.sweep_temporary(SystemTime::now(), &mut out)?;
        Ok(out)
    }

    /// Goes over `ingest/`: for each blob no process is downloading, removes
    /// the partial download if `drop_partial` says so for its mtime, and the
    /// lock file and whatever else is left of it. Stale temporary files go
    /// too.
    fn sweep_ingest(
        &self,
        drop_partial: &dyn Fn(SystemTime) -> bool,
        out: &mut PruneOutcome,
    ) -> io::Result<()> {
        let dir = self.root.join("ingest");
        let mut downloads: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            match name.split_once('.') {
                Some((hex, kind)) if is_hex(hex) && matches!(kind, "data" | "lock" | "prefix") => {
                    downloads
                        .entry(hex.to_string())
                        .or_default()
                        .push(kind.to_string());
                }
                _ => remove_stale(&dir.join(&name), SystemTime::now(), out),
            }
        }
        for (hex, kinds) in downloads {
            let has = |kind: &str| kinds.iter().any(|k| k == kind);
            self.sweep_download(&dir, &hex, has("data"), has("lock"), drop_partial, out)?;
        }
        Ok(())
    }

    /// One blob's files in `ingest/`, under its lock (so never while a
    /// process downloads it).
    fn sweep_download(
        &self,
        dir: &Path,
        hex: &str,
        had_data: bool,
        had_lock: bool,
        drop_partial: &dyn Fn(SystemTime) -> bool,
        out: &mut PruneOutcome,
    ) -> io::Result<()> {
        let lock_path = dir.join(format!("{hex}.lock"));
        // A link is never a lock anybody holds (locks refuse links).
        if fs::symlink_metadata(&lock_path).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&lock_path)?;
        }
        let Some(lock) = lock::try_lock(&lock_path)? else {
            return Ok(());
        };
        let data = dir.join(format!("{hex}.data"));
        let mut data_left = false;
        if let Ok(meta) = fs::symlink_metadata(&data) {
            if drop_partial(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)) {
                fs::remove_file(&data)?;
                out.partials += 1;
                out.freed += meta.len();
            } else {
                data_left = true;
            }
        }
        if !data_left && fs::remove_file(dir.join(format!("{hex}.prefix"))).is_ok() && !had_data {
            out.leftovers += 1;
        }
        lock.remove()?;
        if had_lock && (data_left || !had_data) {
            out.leftovers += 1;
        }
        Ok(())
    }

    /// Temporary files in `meta/` that no run has written to for an hour
    /// (left by a run that stopped between writing and renaming), and seals
    /// of blobs that are gone.
    fn sweep_temporary(&self, now: SystemTime, out: &mut PruneOutcome) -> io::Result<()> {
        let dir = self.root.join("meta");
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                remove_stale(&dir.join(&*name), now, out);
            } else if let Some(hex) = name.strip_suffix(".seal")
                && is_hex(hex)
                && fs::symlink_metadata(self.root.join("blobs/sha256").join(hex)).is_err()
            {
                self.unseal(hex);
                out.leftovers += 1;
            }
        }
        Ok(())
    }
}

/// How long a temporary file goes unchanged before it counts as left behind
/// (writing one takes moments).
const STALE: Duration = Duration::from_secs(3600);

/// Removes a temporary file (`*.tmp`, `*.partial`) unchanged for [`STALE`].
fn remove_stale(path: &Path, now: SystemTime, out: &mut PruneOutcome) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if !(name.ends_with(".tmp") || name.ends_with(".partial")) {
        return;
    }
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if now.duration_since(modified).is_ok_and(|d| d > STALE) && fs::remove_file(path).is_ok() {
        out.leftovers += 1;
        out.freed += meta.len();
    }
}

fn is_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::time::{Duration, SystemTime};

    use crate::cache::Cache;
    use crate::digest::Digest;

    fn stored(cache: &Cache, data: &[u8], age: Duration) -> Digest {
        let d = Digest::of(data);
        let path = cache.blob_path(&d);
        fs::write(&path, data).unwrap();
        let f = OpenOptions::new().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        d
    }

    #[test]
    fn prune_by_age_and_size_lru_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let day = Duration::from_secs(86_400);
        let old = stored(&cache, &[1u8; 100], day * 10);
        let mid = stored(&cache, &[2u8; 100], day * 2);
        let new = stored(&cache, &[3u8; 100], day / 24);
        fs::write(dir.path().join("blobs/sha256/not-a-digest"), b"x").unwrap();
        let stats = cache.stats().unwrap();
        assert_eq!((stats.blobs, stats.bytes), (3, 300));
        let order: Vec<String> = cache
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.hex)
            .collect();
        assert_eq!(order, [old.hex(), mid.hex(), new.hex()]);

        let out = cache.prune(Some(day * 5), None).unwrap();
        assert_eq!((out.blobs, out.freed), (1, 100));
        assert!(!cache.blob_path(&old).exists());
        // A use (by a pull that is over) makes the middle one the newest, its
        // blob untouched; a size cap then drops the other.
        let before = fs::metadata(cache.blob_path(&mid))
            .unwrap()
            .modified()
            .unwrap();
        drop({
            let pull = Cache::open(dir.path()).unwrap();
            pull.record_use(&mid, "r/a:1", true);
            pull
        });
        let blob = fs::metadata(cache.blob_path(&mid))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(blob, before, "a use leaves the blob alone");
        let out = cache.prune(None, Some(150)).unwrap();
        assert_eq!(out.blobs, 1);
        assert!(cache.blob_path(&mid).exists());
        assert!(!cache.blob_path(&new).exists());
        assert!(dir.path().join("blobs/sha256/not-a-digest").exists());
    }

    #[test]
    fn prune_spares_blobs_a_running_pull_holds_and_records_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let used = stored(&cache, b"used", Duration::from_secs(86_400));
        let idle = stored(&cache, b"idle", Duration::from_secs(86_400));
        let other = Cache::open(dir.path()).unwrap();
        other.record_use(&used, "r/a:1", true);
        other.record_use(&used, "r/b:1", false);
        let out = cache.prune(None, Some(0)).unwrap();
        assert_eq!((out.blobs, out.in_use), (1, 1));
        assert!(cache.blob_path(&used).exists());
        assert!(!cache.blob_path(&idle).exists());
        let e = &cache.entries().unwrap()[0];
        assert_eq!(
            (e.hits, e.images.clone()),
            (1, vec!["r/a:1".to_string(), "r/b:1".into()])
        );
        drop(other);
        assert_eq!(cache.prune(None, Some(0)).unwrap().blobs, 1);
        assert!(
            !dir.path()
                .join("meta")
                .join(format!("{}.json", used.hex()))
                .exists()
        );
    }

    #[test]
    fn max_size_goes_on_past_blobs_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let day = Duration::from_secs(86_400);
        // Both the blob and its use record, as a pull that long ago left them.
        let set_age = |d: &Digest, age: Duration| {
            for path in [cache.blob_path(d), cache.meta_path(d.hex())] {
                let f = OpenOptions::new().append(true).open(path).unwrap();
                f.set_modified(SystemTime::now() - age).unwrap();
            }
        };
        let pull = Cache::open(dir.path()).unwrap();
        let used = stored(&cache, &[1u8; 100], day * 3);
        pull.record_use(&used, "r/a:1", true);
        set_age(&used, day * 3);
        let b = stored(&cache, &[2u8; 100], day * 2);
        let c = stored(&cache, &[3u8; 100], day);
        // The least recently used is in use: the next ones go instead.
        let out = cache.prune(None, Some(150)).unwrap();
        assert_eq!((out.blobs, out.in_use, out.freed), (2, 1, 200));
        assert!(!cache.blob_path(&b).exists() && !cache.blob_path(&c).exists());
        assert!(cache.blob_path(&used).exists());

        // An old blob in use still counts against the size.
        let old = stored(&cache, &[4u8; 100], day * 30);
        pull.record_use(&old, "r/a:1", true);
        set_age(&old, day * 30);
        let new = stored(&cache, &[5u8; 100], Duration::ZERO);
        let out = cache.prune(Some(day * 7), Some(200)).unwrap();
        assert_eq!((out.blobs, out.in_use), (1, 2), "{out:?}");
        assert!(!cache.blob_path(&new).exists());
    }

    /// Sets a file's mtime `age` ago.
    fn age(path: &std::path::Path, age: Duration) {
        let f = OpenOptions::new().append(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn prune_and_clear_remove_what_interrupted_runs_left() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let hour = Duration::from_secs(3600);
        let (meta, ingest) = (dir.path().join("meta"), dir.path().join("ingest"));
        let hex = |n: u8| Digest::of(&[n]).hex().to_string();
        let file = |path: std::path::PathBuf, old: bool| {
            fs::write(&path, b"left").unwrap();
            if old {
                age(&path, hour * 2);
            }
            path
        };
        // Temporary files of records: as earlier versions named them, and as now.
        let stale = [
            file(meta.join(format!("{}.4242.tmp", hex(1))), true),
            file(meta.join(format!(".{}.json.Ab12Cd.tmp", hex(2))), true),
            file(ingest.join(format!(".{}.x1y2.partial", hex(3))), true),
        ];
        let recent = file(meta.join(format!(".{}.json.Zz99Yy.tmp", hex(4))), false);
        // Lock files nobody holds, a verified-prefix record without its data,
        // the seal of a blob that is gone.
        let orphans = [
            file(ingest.join(format!("{}.lock", hex(5))), false),
            file(ingest.join(format!("{}.prefix", hex(6))), false),
            file(meta.join(format!("{}.seal", hex(7))), false),
        ];
        // A stored blob's seal stays with it, and goes with it.
        let kept = Digest::of(&[8]);
        fs::write(cache.blob_path(&kept), [8]).unwrap();
        let kept_seal = file(meta.join(format!("{}.seal", kept.hex())), false);
        // A download in progress keeps everything; an idle recent one its data.
        let busy = Digest::of(b"busy");
        let lock = cache.lock_ingest(&busy).unwrap();
        let busy_data = file(cache.ingest_path(&busy), true);
        let idle = Digest::of(b"idle");
        let idle_data = file(cache.ingest_path(&idle), false);
        let idle_lock = file(cache.lock_path(&idle), false);

        let out = cache.prune(None, Some(u64::MAX)).unwrap();
        assert_eq!(
            (out.leftovers, out.partials, out.blobs),
            (7, 0, 0),
            "{out:?}"
        );
        for path in stale.iter().chain(&orphans).chain([&idle_lock]) {
            assert!(!path.exists(), "{} stays", path.display());
        }
        for path in [
            &recent,
            &busy_data,
            &cache.lock_path(&busy),
            &idle_data,
            &kept_seal,
        ] {
            assert!(path.exists(), "{} is gone", path.display());
        }

        let out = cache.clear().unwrap();
        assert_eq!(
            (out.partials, out.leftovers, out.blobs),
            (1, 0, 1),
            "{out:?}"
        );
        assert!(!idle_data.exists() && !cache.lock_path(&idle).exists());
        assert!(!kept_seal.exists(), "the seal goes with its blob");
        assert!(busy_data.exists() && recent.exists());
        drop(lock);
        let out = cache.clear().unwrap();
        assert_eq!(out.partials, 1, "{out:?}");
        let left: Vec<_> = fs::read_dir(&ingest).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn clear_spares_downloads_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        stored(&cache, b"blob", Duration::ZERO);
        let busy = Digest::of(b"busy");
        let idle = Digest::of(b"idle");
        fs::write(cache.ingest_path(&busy), b"bu").unwrap();
        fs::write(cache.ingest_path(&idle), b"id").unwrap();
        let lock = cache.lock_ingest(&busy).unwrap();
        let out = cache.clear().unwrap();
        assert_eq!((out.blobs, out.partials), (1, 1));
        assert!(cache.ingest_path(&busy).exists());
        assert!(!cache.ingest_path(&idle).exists());
        drop(lock);
        assert_eq!(cache.stats().unwrap().blobs, 0);
    }
}
