//! Blobs in use by this process: each one a pull uses is recorded in `meta/`
//! (which marks it used now, for least-recently-used pruning), and held so
//! that `cache prune` in another process leaves it alone, until
//! [`Cache::release`] once the archive that needs it is written. Also which
//! blobs this process verified itself. Must not write or remove blobs.
//!
//! Holding costs one open file per process, not one per blob: the digests
//! held are lines of a lease file, `leases/<random>.lease`, which the
//! process keeps locked (`flock`, exclusive) while it lives. A prune reads
//! the leases that are locked (their owners are alive) and skips what they
//! name; an unlocked lease belongs to a process that is gone and is removed.
//! `leases/gate.lock` orders the two: a lease changes under a shared lock on
//! it, and a prune decides under an exclusive one, so no blob is held and
//! removed at once.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Cache, fsx, meta};
use crate::digest::Digest;

/// A lease file nobody holds and nothing was written to yet is removed only
/// once it is this old: its owner may be between creating and locking it.
const FRESH_LEASE: Duration = Duration::from_secs(60);

/// What this process holds.
#[derive(Default)]
pub(super) struct Lease {
    /// The lease file, locked, once anything is held.
    file: Option<tempfile::NamedTempFile>,
    digests: HashSet<Digest>,
}

impl Lease {
    /// Writes the held digests into the lease file from scratch.
    fn rewrite(&mut self) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut text = String::with_capacity(self.digests.len() * 65);
        for d in &self.digests {
            text.push_str(d.hex());
            text.push('\n');
        }
        let f = file.as_file_mut();
        f.set_len(0)?;
        f.rewind()?;
        f.write_all(text.as_bytes())
    }
}

pub(super) fn leases_dir(root: &Path) -> PathBuf {
    root.join("leases")
}

/// Takes `leases/gate.lock`: shared to change a lease, exclusive to prune.
pub(super) fn gate(root: &Path, exclusive: bool) -> io::Result<File> {
    let file = fsx::open_nofollow_rw(&leases_dir(root).join("gate.lock"))?;
    if exclusive {
        file.lock()?;
    } else {
        file.lock_shared()?;
    }
    Ok(file)
}

impl Cache {
    /// Notes that `image` used a stored blob (`hit`: found in the cache, not
    /// downloaded now) in its record, which marks it used now, and holds it
    /// (see [`hold`]) until [`release`](Self::release) or the end of the
    /// process, so no prune removes it meanwhile. Best effort: statistics
    /// never fail a pull.
    ///
    /// [`hold`]: Self::hold
    pub fn record_use(&self, digest: &Digest, image: &str, hit: bool) {
        self.hold(digest);
        if !hit {
            self.fresh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(digest.clone());
        }
        meta::note_use(&self.meta_path(digest.hex()), image, hit);
    }

    /// Whether this process downloaded and verified `digest` itself.
    pub fn is_fresh(&self, digest: &Digest) -> bool {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(digest)
    }

    /// Holds `digest` for this process: from now on no prune removes it.
    /// Hold a blob before looking it up, so that one found is one held.
    /// Best effort: a cache that cannot record it still serves the pull.
    pub fn hold(&self, digest: &Digest) {
        let mut lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        if lease.digests.contains(digest) {
            return;
        }
        if let Err(e) = self.add_to_lease(&mut lease, digest) {
            tracing::debug!(%digest, error = %e, "cannot hold a blob in the cache");
        }
    }

    fn add_to_lease(&self, lease: &mut Lease, digest: &Digest) -> io::Result<()> {
        let _gate = gate(&self.root, false)?;
        if lease.file.is_none() {
            let file = fsx::temp_in(&leases_dir(&self.root), "", ".lease", false)?;
            file.as_file().try_lock().map_err(io::Error::other)?;
            lease.file = Some(file);
        }
        let line = format!("{}\n", digest.hex());
        if let Some(file) = lease.file.as_mut() {
            file.as_file_mut().write_all(line.as_bytes())?;
        }
        lease.digests.insert(digest.clone());
        Ok(())
    }

    /// Lets go of blobs held since their use: a prune may remove them
    /// again. Call once the archive that needs them is written; a later use
    /// holds them again.
    pub fn release<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        let mut lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        let before = lease.digests.len();
        for d in digests {
            lease.digests.remove(d);
        }
        if lease.digests.len() == before {
            return;
        }
        let rewritten = gate(&self.root, false).and_then(|_gate| lease.rewrite());
        if let Err(e) = rewritten {
            tracing::debug!(error = %e, "cannot update the cache lease");
        }
    }

    /// The hex digests that running pulls hold, from every live lease; the
    /// leases of processes that are gone are removed. Call with the gate
    /// held exclusively.
    pub(super) fn leased(&self) -> io::Result<HashSet<String>> {
        let mut held = HashSet::new();
        let dir = leases_dir(&self.root);
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("lease") {
                continue;
            }
            let Ok(mut file) = fsx::open_nofollow_read(&path) else {
                continue;
            };
            if file.try_lock().is_ok() {
                // Nobody holds it: its process is gone (or has not locked
                // it yet, while it is new and empty).
                let meta = file.metadata()?;
                let age = meta.modified().ok().and_then(|m| m.elapsed().ok());
                if meta.len() > 0 || age.is_some_and(|a| a > FRESH_LEASE) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            let mut text = String::new();
            io::Read::read_to_string(&mut file, &mut text)?;
            held.extend(text.lines().map(str::to_string));
        }
        Ok(held)
    }

    /// How many blobs this process holds now.
    #[cfg(test)]
    pub(crate) fn held_count(&self) -> usize {
        self.lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .digests
            .len()
    }
}

#[cfg(test)]
mod tests {
    use crate::cache::Cache;
    use crate::digest::Digest;

    #[test]
    fn released_blobs_can_be_pruned_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let blobs: Vec<Digest> = (0..3u8)
            .map(|i| {
                let d = Digest::of(&[i]);
                std::fs::write(cache.blob_path(&d), [i]).unwrap();
                cache.record_use(&d, "r/a:1", true);
                d
            })
            .collect();
        assert_eq!(cache.held_count(), 3);
        let other = Cache::open(dir.path()).unwrap();
        assert_eq!(other.prune(None, Some(0)).unwrap().in_use, 3);
        cache.release(&blobs[..2]);
        assert_eq!(cache.held_count(), 1);
        let out = other.prune(None, Some(0)).unwrap();
        assert_eq!((out.blobs, out.in_use), (2, 1));
    }

    #[test]
    fn holding_many_blobs_takes_one_file_and_a_gone_process_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pull = Cache::open(dir.path()).unwrap();
        let blobs: Vec<Digest> = (0..300u16)
            .map(|i| {
                let d = Digest::of(&i.to_le_bytes());
                std::fs::write(pull.blob_path(&d), i.to_le_bytes()).unwrap();
                pull.record_use(&d, "r/a:1", true);
                d
            })
            .collect();
        let leases: Vec<_> = std::fs::read_dir(dir.path().join("leases"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "lease"))
            .collect();
        assert_eq!(leases.len(), 1, "one lease file for the process");
        let other = Cache::open(dir.path()).unwrap();
        assert_eq!(other.prune(None, Some(0)).unwrap().in_use, 300);
        // The process ends: its lease goes, and so does its hold.
        drop(pull);
        let out = other.prune(None, Some(0)).unwrap();
        assert_eq!((out.blobs, out.in_use), (300, 0));
        assert!(!other.blob_path(&blobs[0]).exists());
    }

    #[test]
    fn a_lease_left_by_a_killed_process_is_removed_and_spares_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let d = Digest::of(b"x");
        std::fs::write(cache.blob_path(&d), b"x").unwrap();
        // A killed process leaves its lease unlocked.
        let stale = dir.path().join("leases").join("abc123.lease");
        std::fs::write(&stale, format!("{}\n", d.hex())).unwrap();
        let out = cache.prune(None, Some(0)).unwrap();
        assert_eq!((out.blobs, out.in_use), (1, 0));
        assert!(!stale.exists());
    }
}
