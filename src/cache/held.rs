//! Blobs in use by this process: each one a pull uses is marked used now (its
//! mtime, for least-recently-used pruning), recorded in `meta/`, and held with
//! a shared lock on its file so that `cache prune` in another process leaves
//! it alone, until [`Cache::release`] once the archive that needs it is
//! written. Also which blobs this process verified itself. Must not write or
//! remove blobs.

use std::time::SystemTime;

use super::{Cache, fsx, meta};
use crate::digest::Digest;

impl Cache {
    /// Notes that `image` used a stored blob (`hit`: found in the cache, not
    /// downloaded now), marks it used now, and holds it with a shared lock
    /// until [`release`](Self::release) (or the end of the process) so no
    /// prune removes it meanwhile. Best effort: statistics never fail a pull.
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

    /// Lets go of blobs held since their use: their files close, and a prune
    /// may remove them again. Call once the archive that needs them is
    /// written; a later use holds them again. One open file per held blob
    /// would otherwise add up to the open-file limit over a long run.
    pub fn release<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for d in digests {
            held.remove(d);
        }
    }

    /// How many blobs this process holds now.
    #[cfg(test)]
    pub(crate) fn held_count(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Marks a stored blob as used now (its mtime), for least-recently-used
    /// pruning. Best effort: a read-only cache still works.
    pub fn touch(&self, digest: &Digest) {
        if let Ok(f) = fsx::open_nofollow_write(&self.blob_path(digest)) {
            let _ = f.set_modified(SystemTime::now());
        }
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
}
