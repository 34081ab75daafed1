//! Reading stored blobs: the only way code outside the cache gets at a blob's
//! bytes. A blob is opened without following a link and only as a regular
//! file; one whose size or digest is wrong is evicted and reported as
//! damaged, with what to do. Must not write blobs, and must not skip the
//! hash of a blob the cache does not trust ([`Cache::trusts`]).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use super::{Cache, fsx};
use crate::digest::{Digest, Hasher};

impl Cache {
    /// The stored blob `digest`, open for reading, as it is: the caller
    /// checks it (or uses [`open_verified`](Self::open_verified)).
    pub fn open_blob(&self, digest: &Digest) -> io::Result<File> {
        fsx::open_nofollow_read(&self.blob_path(digest))
    }

    /// The stored blob `digest`, checked: `size` bytes that hash to
    /// `digest` (the hash is skipped for a blob the cache trusts: this
    /// process verified it, or its seal matches). A blob found right is
    /// sealed; a damaged one is evicted and the error says so. The file is
    /// returned at offset 0.
    pub fn open_verified(&self, digest: &Digest, size: u64) -> io::Result<File> {
        let file = self.open_blob(digest)?;
        let before = file.metadata()?;
        let len = before.len();
        if len != size {
            return Err(self.damaged(digest, &format!("{len} bytes, expected {size}")));
        }
        if !self.trusts(digest, &before) {
            let (actual, len) = hash_file(&file)?;
            if len != size {
                return Err(self.damaged(digest, &format!("{len} bytes, expected {size}")));
            }
            if &actual != digest {
                return Err(self.damaged(digest, &format!("its content hashes to {actual}")));
            }
            self.seal(digest, &before, &file.metadata()?);
        }
        Ok(file)
    }

    /// A small stored blob (a config) read into memory and checked: `size`
    /// bytes that hash to `digest`. A `size` above `limit` is refused before
    /// anything is read. A damaged blob is evicted and the error says so.
    pub fn read_verified(&self, digest: &Digest, size: u64, limit: u64) -> io::Result<Vec<u8>> {
        if size > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it has {size} bytes, more than the {limit} read into memory"),
            ));
        }
        let file = self.open_blob(digest)?;
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(size + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != size || Digest::of(&bytes) != *digest {
            let _ = self.evict(digest);
            return Err(io::Error::other(
                "the cached blob is damaged and was removed; run again to download it",
            ));
        }
        Ok(bytes)
    }

    /// Evicts a blob found damaged (`detail`: how) and returns the error
    /// that tells the user.
    pub fn damaged(&self, digest: &Digest, detail: &str) -> io::Error {
        let _ = self.evict(digest);
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the cached blob is damaged ({detail}) and was removed; run the pull again to download it"
            ),
        )
    }
}

/// The digest and length of a file's content, read at explicit offsets: the
/// file's own offset is left alone, so another thread may copy from the
/// same handle meanwhile.
pub fn hash_file(file: &File) -> io::Result<(Digest, u64)> {
    let mut hasher = Hasher::new();
    let len = hasher.update_from(At { file, at: 0 })?;
    Ok((hasher.finish(), len))
}

/// Reads a file from an offset of its own.
struct At<'a> {
    file: &'a File,
    at: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::cache::Cache;
    use crate::digest::Digest;

    #[test]
    fn small_blobs_are_read_checked_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let d = Digest::of(b"config");
        fs::write(cache.blob_path(&d), b"config").unwrap();
        assert_eq!(cache.read_verified(&d, 6, 6).unwrap(), b"config");
        let err = cache.read_verified(&d, 6, 5).unwrap_err().to_string();
        assert!(err.contains("more than the 5"), "{err}");
        assert!(cache.contains(&d, 6), "an oversized request evicts nothing");

        fs::write(cache.blob_path(&d), b"CONFIG").unwrap();
        let err = cache.read_verified(&d, 6, 100).unwrap_err().to_string();
        assert!(err.contains("damaged and was removed"), "{err}");
        assert!(!cache.contains(&d, 6));

        let theirs = dir.path().join("theirs");
        fs::write(&theirs, b"config").unwrap();
        std::os::unix::fs::symlink(&theirs, cache.blob_path(&d)).unwrap();
        let err = cache.read_verified(&d, 6, 100).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(cache.open_blob(&d).is_err());
        assert!(cache.open_verified(&d, 6).is_err());
    }

    #[test]
    fn verified_opens_hash_unless_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let d = Digest::of(b"layer");
        fs::write(cache.blob_path(&d), b"LAYER").unwrap();
        let err = cache.open_verified(&d, 5).unwrap_err().to_string();
        assert!(
            err.contains("hashes to") && err.contains("run the pull again"),
            "{err}"
        );
        assert!(!cache.contains(&d, 5), "evicted");
        fs::write(cache.blob_path(&d), b"layer").unwrap();
        let err = cache.open_verified(&d, 6).unwrap_err().to_string();
        assert!(err.contains("5 bytes, expected 6"), "{err}");
        fs::write(cache.blob_path(&d), b"layer").unwrap();
        let mut f = cache.open_verified(&d, 5).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "layer", "handed over at offset 0");

        // Found right, it is sealed; once its bytes change (same length) the
        // seal counts for nothing and the damage is found.
        let sealed = dir.path().join("meta").join(format!("{}.seal", d.hex()));
        assert_eq!(sealed.exists(), cfg!(target_os = "linux"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::OpenOptions::new()
            .write(true)
            .open(cache.blob_path(&d))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"LAYER"))
            .unwrap();
        let err = cache.open_verified(&d, 5).unwrap_err().to_string();
        assert!(err.contains("hashes to"), "{err}");
        assert!(!sealed.exists(), "the seal goes with the blob");
    }

    #[test]
    fn a_blob_found_right_is_trusted_by_the_next_process() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let d = Digest::of(b"layer");
        fs::write(cache.blob_path(&d), b"layer").unwrap();
        cache.open_verified(&d, 5).unwrap();
        if !cfg!(target_os = "linux") {
            return;
        }
        // Not downloaded by this process, so trusted by its seal alone, in
        // this process and the next.
        let m = fs::metadata(cache.blob_path(&d)).unwrap();
        assert!(!cache.is_fresh(&d));
        assert!(cache.trusts(&d, &m));
        let other = Cache::open(dir.path()).unwrap();
        assert!(other.trusts(&d, &m), "another process trusts the seal too");
    }
}
