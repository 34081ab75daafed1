//! The content-addressed blob store shared by every image and every process.
//!
//! On disk, below the cache directory:
//!
//! ```text
//! blobs/sha256/<hex>     verified blobs only, each entered by an atomic rename
//! meta/<hex>.json        what is known of a blob's use: hits, images (meta.rs)
//! ingest/<hex>.data      a partial download, kept across runs and resumed
//! ingest/<hex>.lock      held (OS file lock) by the process downloading <hex> (lock.rs)
//! ```
//!
//! A blob is written only by the holder of its lock, so processes sharing the
//! cache never download the same blob twice at once, and no reader ever sees a
//! half-written blob. With `--no-cache` a temporary directory with the same
//! layout is used and removed at the end. Listing, statistics and eviction
//! live in prune.rs.
//!
//! No symbolic link is ever followed: every file the cache opens or creates
//! is opened with `O_NOFOLLOW` (fsx.rs), a link planted at a blob's name is
//! no blob, and records are replaced through random temporary names created
//! exclusively beside them, never through a predictable name.
//!
//! This module owns the files below the cache directory and nothing else: it
//! never talks to the network and knows no archive format.

pub mod fsx;
mod lock;
mod meta;
mod prune;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::digest::Digest;

pub use fsx::{open_nofollow_read, open_nofollow_rw, open_nofollow_write};
pub use lock::IngestLock;
pub use prune::{CacheEntry, CacheStats, PruneOutcome};

pub struct Cache {
    root: PathBuf,
    /// Keeps a `--no-cache` directory alive; removed on drop.
    _temporary: Option<tempfile::TempDir>,
    /// Blobs this process uses, each held with a shared lock until the
    /// process ends, so `cache prune` in another process leaves them alone.
    held: std::sync::Mutex<std::collections::HashMap<Digest, File>>,
    /// Blobs this process downloaded and verified itself: copying them into
    /// an archive needs no second hash.
    fresh: std::sync::Mutex<std::collections::HashSet<Digest>>,
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> io::Result<Cache> {
        let cache = Cache {
            root: root.to_path_buf(),
            _temporary: None,
            held: Default::default(),
            fresh: Default::default(),
        };
        cache.create_layout()?;
        Ok(cache)
    }

    /// A private cache that disappears when dropped (`--no-cache`).
    pub fn temporary() -> io::Result<Cache> {
        let dir = tempfile::Builder::new().prefix("docker-pull-").tempdir()?;
        let cache = Cache {
            root: dir.path().to_path_buf(),
            _temporary: Some(dir),
            held: Default::default(),
            fresh: Default::default(),
        };
        cache.create_layout()?;
        Ok(cache)
    }

    fn create_layout(&self) -> io::Result<()> {
        fs::create_dir_all(self.root.join("blobs").join("sha256"))?;
        fs::create_dir_all(self.root.join("meta"))?;
        fs::create_dir_all(self.root.join("ingest"))
    }

    fn meta_path(&self, hex: &str) -> PathBuf {
        self.root.join("meta").join(format!("{hex}.json"))
    }

    /// Notes that `image` used a stored blob (`hit`: found in the cache, not
    /// downloaded now), marks it used now, and holds it with a shared lock
    /// for the rest of this process so no prune removes it meanwhile.
    /// Best effort: statistics never fail a pull.
    pub fn record_use(&self, digest: &Digest, image: &str, hit: bool) {
        self.touch(digest);
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

    fn hold(&self, digest: &Digest) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains_key(digest) {
            return;
        }
        if let Ok(f) = fsx::open_nofollow_read(&self.blob_path(digest))
            && f.lock_shared().is_ok()
        {
            held.insert(digest.clone(), f);
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    pub fn ingest_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}.data", digest.hex()))
    }

    fn lock_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}.lock", digest.hex()))
    }

    /// Whether a verified blob of `size` bytes is stored (a regular file:
    /// a link there is no blob).
    pub fn contains(&self, digest: &Digest, size: u64) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// The partial download of `digest` for the holder of its lock: created
    /// (owner only) if missing, read and write, its content kept, never
    /// through a link.
    pub fn open_ingest(&self, digest: &Digest) -> io::Result<File> {
        fsx::open_nofollow_rw(&self.ingest_path(digest))
    }

    /// Takes the download lock for `digest`, waiting while another process
    /// holds it. Blocking: call from a blocking context.
    pub fn lock_ingest(&self, digest: &Digest) -> io::Result<IngestLock> {
        lock::lock(&self.lock_path(digest))
    }

    /// Moves a verified download into the store. The lock file goes too:
    /// whoever takes a lock from now on finds the blob stored.
    pub fn commit(&self, digest: &Digest, _lock: &IngestLock) -> io::Result<PathBuf> {
        let target = self.blob_path(digest);
        fs::rename(self.ingest_path(digest), &target)?;
        let _ = fs::remove_file(self.lock_path(digest));
        Ok(target)
    }

    /// Marks a stored blob as used now (its mtime), for least-recently-used
    /// pruning. Best effort: a read-only cache still works.
    pub fn touch(&self, digest: &Digest) {
        if let Ok(f) = fsx::open_nofollow_write(&self.blob_path(digest)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Removes a stored blob found damaged.
    pub fn evict(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_commit_and_evict() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let d = Digest::of(b"hello");
        assert!(!cache.contains(&d, 5));
        let lock = cache.lock_ingest(&d).unwrap();
        fs::write(cache.ingest_path(&d), b"hello").unwrap();
        let p = cache.commit(&d, &lock).unwrap();
        assert_eq!(p, dir.path().join("c/blobs/sha256").join(d.hex()));
        assert!(cache.contains(&d, 5));
        assert!(
            !cache.lock_path(&d).exists(),
            "the lock file goes with the commit"
        );
        drop(lock);
        assert!(!cache.contains(&d, 6), "size is part of the check");
        cache.evict(&d).unwrap();
        assert!(!cache.contains(&d, 5));
        cache.evict(&d).unwrap();
    }

    #[test]
    fn a_link_at_a_blob_is_no_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let d = Digest::of(b"hello");
        let theirs = dir.path().join("theirs");
        fs::write(&theirs, b"hello").unwrap();
        std::os::unix::fs::symlink(&theirs, cache.blob_path(&d)).unwrap();
        assert!(!cache.contains(&d, 5));
        // Nor is it held, touched or written through when recorded.
        cache.record_use(&d, "r/a:1", true);
        assert!(cache.held.lock().unwrap().is_empty());
        assert_eq!(fs::read(&theirs).unwrap(), b"hello");
    }

    #[test]
    fn temporary_cache_is_removed() {
        let root = {
            let c = Cache::temporary().unwrap();
            assert!(c.root().join("blobs/sha256").is_dir());
            c.root().to_path_buf()
        };
        assert!(!root.exists());
    }
}
