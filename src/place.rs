//! Where a blob's bytes go as they arrive, besides the cache: its place in
//! the archive being written (a file and an offset per digest), so that a
//! blob is written once, from the buffer it arrived in, instead of being
//! copied from the cache afterwards. The archive writer lays the places out
//! ([`Placement::new`]); the fetcher writes into them and marks a blob
//! placed only once its size and digest are checked; the writer then skips
//! it. Knows nothing of HTTP or of archive formats.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest::Digest;

/// Whether a blob written into its place also goes into the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Into the cache and its place, from the same buffer.
    CacheAndArchive,
    /// Only into its place: nothing else in the run reads it (`--no-cache`,
    /// one image).
    ArchiveOnly,
}

/// The places of an archive's blobs in its (temporary) file.
pub struct Placement {
    file: File,
    path: PathBuf,
    /// Offset and size of each blob's data, by digest.
    slots: HashMap<Digest, (u64, u64)>,
    placed: Mutex<HashSet<Digest>>,
    keep: Keep,
}

impl Placement {
    /// Places in `file` (named `path` in errors) at the offsets given.
    pub fn new(
        file: File,
        path: &Path,
        slots: HashMap<Digest, (u64, u64)>,
        keep: Keep,
    ) -> Placement {
        Placement {
            file,
            path: path.to_path_buf(),
            slots,
            placed: Mutex::new(HashSet::new()),
            keep,
        }
    }

    /// Where `digest`'s `size` bytes go, if the archive has a place for them.
    pub fn slot(&self, digest: &Digest, size: u64) -> Option<u64> {
        match self.slots.get(digest) {
            Some(&(at, len)) if len == size && size > 0 => Some(at),
            _ => None,
        }
    }

    pub fn keep(&self) -> Keep {
        self.keep
    }

    /// The file the places are in, for positional reads and writes.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The blob is in its place, checked.
    pub fn mark_placed(&self, digest: &Digest) {
        self.lock().insert(digest.clone());
    }

    /// The blob is no longer known to be in its place (a later attempt
    /// overwrites it).
    pub fn unmark(&self, digest: &Digest) {
        self.lock().remove(digest);
    }

    pub fn is_placed(&self, digest: &Digest) -> bool {
        self.lock().contains(digest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Digest>> {
        self.placed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fit_their_blob_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let d = Digest::of(b"abc");
        let other = Digest::of(b"x");
        let slots = HashMap::from([(d.clone(), (512, 3))]);
        let p = Placement::new(
            File::create(&path).unwrap(),
            &path,
            slots,
            Keep::ArchiveOnly,
        );
        assert_eq!(p.slot(&d, 3), Some(512));
        assert_eq!(p.slot(&d, 4), None, "a size that does not fit");
        assert_eq!(p.slot(&other, 1), None);
        assert!(!p.is_placed(&d));
        p.mark_placed(&d);
        assert!(p.is_placed(&d));
        p.unmark(&d);
        assert!(!p.is_placed(&d));
    }
}
