//! The download lock of one blob, `ingest/<hex>.lock`: an exclusive OS file
//! lock held by the one process that may write `ingest/<hex>.data` and commit
//! it. Owns taking and releasing that lock; it must not touch the data file
//! or the stored blobs.

use std::fs::File;
use std::io;
use std::path::Path;

use super::fsx;

/// An exclusive claim on downloading one blob; released on drop.
pub struct IngestLock {
    file: File,
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Takes the lock at `path`, waiting while another process holds it.
pub(super) fn lock(path: &Path) -> io::Result<IngestLock> {
    let file = fsx::open_nofollow_rw(path)?;
    file.lock()?;
    Ok(IngestLock { file })
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use crate::cache::Cache;
    use crate::digest::Digest;

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

    #[test]
    fn a_link_planted_at_a_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let d = Digest::of(b"x");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        std::os::unix::fs::symlink(&victim, cache.lock_path(&d)).unwrap();
        let err = cache.lock_ingest(&d).err().expect("refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // Nobody can take the victim's lock through the link meanwhile.
        let f = std::fs::File::open(&victim).unwrap();
        assert!(f.try_lock().is_ok());
    }
}
