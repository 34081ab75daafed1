//! The download lock of one blob, `ingest/<hex>.lock`: an exclusive OS file
//! lock (`flock`) held by the one process that may write `ingest/<hex>.*`
//! and commit the blob. Owns taking, checking and releasing that lock; it
//! must not touch the data file or the stored blobs.
//!
//! The protocol is lock-then-verify: after `flock` succeeds, the path must
//! still name the locked file (same device and inode); if it does not, the
//! file was removed while this process waited and the lock is worthless, so
//! it is dropped and taken again on whatever file the path names now. Only
//! the holder of a lock removes its file ([`IngestLock::remove`]), so once a
//! lock is verified nobody can pull its name away, and removing the lock
//! file after a commit (or in a prune) never lets two processes hold it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::fsx;

/// An exclusive claim on downloading one blob; released on drop.
pub struct IngestLock {
    file: File,
    path: PathBuf,
}

impl IngestLock {
    /// Removes the lock file; the lock stays held until dropped. Whoever
    /// waited on the removed file notices and locks the path's new file.
    pub(super) fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Takes the lock at `path`, waiting while another process holds it.
pub(super) fn lock(path: &Path) -> io::Result<IngestLock> {
    loop {
        let file = fsx::open_nofollow_rw(path)?;
        file.lock()?;
        if fsx::same_file(&file, path)? {
            return Ok(IngestLock {
                file,
                path: path.to_path_buf(),
            });
        }
    }
}

/// Takes the lock at `path` if nobody holds it (creating the lock file if
/// missing); `None` when another process holds it.
pub(super) fn try_lock(path: &Path) -> io::Result<Option<IngestLock>> {
    loop {
        let file = fsx::open_nofollow_rw(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if fsx::same_file(&file, path)? {
            return Ok(Some(IngestLock {
                file,
                path: path.to_path_buf(),
            }));
        }
    }
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

    /// A waits on the lock file B holds; B commits, which removes the file,
    /// and C takes the lock with a new file. When B lets go, A must not
    /// believe it holds the lock while C does.
    #[test]
    fn two_lockers_cannot_both_hold_the_lock_across_a_commit() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, mpsc};
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(dir.path()).unwrap());
        let d = Digest::of(b"blob");
        let b = cache.lock_ingest(&d).unwrap();
        let a_holds = Arc::new(AtomicBool::new(false));
        let (release_a, a_may_go) = mpsc::channel::<()>();
        let a = {
            let (cache, d, a_holds) = (Arc::clone(&cache), d.clone(), Arc::clone(&a_holds));
            std::thread::spawn(move || {
                let lock = cache.lock_ingest(&d).unwrap();
                a_holds.store(true, Ordering::SeqCst);
                a_may_go.recv().unwrap();
                drop(lock);
            })
        };
        // A is now waiting on B's lock file.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(cache.ingest_path(&d), b"blob").unwrap();
        cache.commit(&d, &b).unwrap();
        let c = cache.lock_ingest(&d).unwrap();
        drop(b);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !a_holds.load(Ordering::SeqCst),
            "A took a lock on a removed file while C holds the lock"
        );
        drop(c);
        let started = std::time::Instant::now();
        while !a_holds.load(Ordering::SeqCst) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "A never got it"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        release_a.send(()).unwrap();
        a.join().unwrap();
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
