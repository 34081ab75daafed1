//! The content-addressed blob store shared by every image and every process.
//!
//! On disk, below the cache directory:
//!
//! ```text
//! blobs/sha256/<hex>     verified blobs only, each entered by an atomic rename
//! ingest/<hex>.data      a partial download, kept across runs and resumed
//! ingest/<hex>.lock      held (OS file lock) by the process downloading <hex>
//! ```
//!
//! A blob is written only by the holder of its lock, so processes sharing the
//! cache never download the same blob twice at once, and no reader ever sees a
//! half-written blob. With `--no-cache` a temporary directory with the same
//! layout is used and removed at the end.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

pub struct Cache {
    root: PathBuf,
    /// Keeps a `--no-cache` directory alive; removed on drop.
    _temporary: Option<tempfile::TempDir>,
}

/// An exclusive claim on downloading one blob; released on drop.
pub struct IngestLock {
    file: File,
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> io::Result<Cache> {
        let cache = Cache {
            root: root.to_path_buf(),
            _temporary: None,
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
        };
        cache.create_layout()?;
        Ok(cache)
    }

    fn create_layout(&self) -> io::Result<()> {
        fs::create_dir_all(self.root.join("blobs").join("sha256"))?;
        fs::create_dir_all(self.root.join("ingest"))
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

    /// Whether a verified blob of `size` bytes is stored.
    pub fn contains(&self, digest: &Digest, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Takes the download lock for `digest`, waiting while another process
    /// holds it. Blocking: call from a blocking context.
    pub fn lock_ingest(&self, digest: &Digest) -> io::Result<IngestLock> {
        let path = self.lock_path(digest);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok(IngestLock { file })
    }

    /// Moves a verified download into the store. The lock file goes too:
    /// whoever takes a lock from now on finds the blob stored.
    pub fn commit(&self, digest: &Digest, _lock: &IngestLock) -> io::Result<PathBuf> {
        let target = self.blob_path(digest);
        fs::rename(self.ingest_path(digest), &target)?;
        let _ = fs::remove_file(self.lock_path(digest));
        Ok(target)
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
    fn temporary_cache_is_removed() {
        let root = {
            let c = Cache::temporary().unwrap();
            assert!(c.root().join("blobs/sha256").is_dir());
            c.root().to_path_buf()
        };
        assert!(!root.exists());
    }

    #[test]
    fn lock_excludes_other_holders() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let d = Digest::of(b"x");
        let held = cache.lock_ingest(&d).unwrap();
        let other = OpenOptions::new()
            .write(true)
            .open(cache.lock_path(&d))
            .unwrap();
        assert!(other.try_lock().is_err());
        drop(held);
        assert!(other.try_lock().is_ok());
    }
}
