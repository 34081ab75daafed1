//! Deterministic tar output: fixed order is the caller's job; here every
//! entry gets mtime 0, uid/gid 0 and fixed modes, and blobs are copied from
//! the cache with their digest checked on the way ([`copy_blob_at`]).

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::cache::{Cache, hash_file};
use crate::digest::Digest;
use crate::error::PullError;

const BUFFER: usize = 1 << 20;

pub struct TarOut<'a> {
    builder: tar::Builder<BufWriter<&'a mut dyn Write>>,
    path: &'a Path,
}

impl<'a> TarOut<'a> {
    /// A tar written into `out` (a file, or a stream), named `path` in errors.
    pub fn new(out: &'a mut dyn Write, path: &'a Path) -> TarOut<'a> {
        TarOut {
            builder: tar::Builder::new(BufWriter::with_capacity(BUFFER, out)),
            path,
        }
    }

    pub(super) fn header(
        name: &str,
        size: u64,
        mode: u32,
        kind: tar::EntryType,
    ) -> io::Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(kind);
        h.set_cksum();
        Ok(h)
    }

    fn err(&self, e: io::Error) -> PullError {
        PullError::io("writing", self.path, e)
    }

    pub fn dir(&mut self, name: &str) -> Result<(), PullError> {
        let h = Self::header(name, 0, 0o755, tar::EntryType::Directory).map_err(|e| self.err(e))?;
        self.builder
            .append(&h, io::empty())
            .map_err(|e| self.err(e))
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> Result<(), PullError> {
        let h = Self::header(name, data.len() as u64, 0o644, tar::EntryType::Regular)
            .map_err(|e| self.err(e))?;
        self.builder.append(&h, data).map_err(|e| self.err(e))
    }

    /// A symbolic link entry.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<(), PullError> {
        let mut h =
            Self::header(name, 0, 0o777, tar::EntryType::Symlink).map_err(|e| self.err(e))?;
        h.set_link_name(target).map_err(|e| self.err(e))?;
        h.set_cksum();
        self.builder
            .append(&h, io::empty())
            .map_err(|e| self.err(e))
    }

    /// A regular file of `size` bytes read from `reader`.
    pub fn reader(
        &mut self,
        name: &str,
        size: u64,
        reader: &mut dyn Read,
    ) -> Result<(), PullError> {
        let h =
            Self::header(name, size, 0o644, tar::EntryType::Regular).map_err(|e| self.err(e))?;
        self.builder.append(&h, reader).map_err(|e| self.err(e))
    }

    /// Ends the archive and flushes it to the file (the caller decides
    /// whether to wait for the disk).
    pub fn finish(self) -> Result<(), PullError> {
        let path = self.path;
        let mut w = self
            .builder
            .into_inner()
            .map_err(|e| PullError::io("writing", path, e))?;
        w.flush().map_err(|e| PullError::io("writing", path, e))
    }
}

/// Copies a cached blob of `size` bytes into `out` at offset `at` (the
/// entry's data; its header and padding are the caller's), checking its size
/// and, unless the cache trusts it ([`Cache::trusts`]), its digest: a blob
/// found right is sealed, a damaged one is evicted from the cache and
/// reported. `path` names `out` in errors.
pub(super) fn copy_blob_at(
    out: &mut File,
    at: u64,
    path: &Path,
    cache: &Cache,
    digest: &Digest,
    size: u64,
) -> Result<(), PullError> {
    let src = cache.blob_path(digest);
    let damaged = |detail: String| PullError::io("reading", &src, cache.damaged(digest, &detail));
    let file = cache
        .open_blob(digest)
        .map_err(|e| PullError::io("reading", &src, e))?;
    let before = file
        .metadata()
        .map_err(|e| PullError::io("reading", &src, e))?;
    let len = before.len();
    if len != size {
        return Err(damaged(format!("{len} bytes, expected {size}")));
    }
    let err = |e| PullError::io("writing", path, e);
    out.seek(SeekFrom::Start(at)).map_err(err)?;
    let trusted = cache.trusts(digest, &before);
    // The kernel copies it file to file (copy_file_range on Linux, a reflink
    // where the file system can). A blob the cache does not trust is hashed
    // at the same time, on another core, from the same handle at offsets of
    // its own; a mismatch fails the archive, whose temporary file is removed.
    let (copied, hashed) = std::thread::scope(|scope| {
        let hashing = (!trusted).then(|| scope.spawn(|| hash_file(&file)));
        let copied = io::copy(&mut &file, out);
        (copied, hashing.map(|h| h.join()))
    });
    let copied = copied.map_err(err)?;
    if copied != size {
        return Err(damaged(format!("{copied} bytes, expected {size}")));
    }
    let Some(hashed) = hashed else {
        return Ok(());
    };
    let (actual, hashed_len) = hashed
        .map_err(|_| PullError::io("reading", &src, io::Error::other("hashing failed")))?
        .map_err(|e| PullError::io("reading", &src, e))?;
    if hashed_len != size {
        return Err(damaged(format!("{hashed_len} bytes, expected {size}")));
    }
    if &actual != digest {
        return Err(damaged(format!("its content hashes to {actual}")));
    }
    if let Ok(now) = file.metadata() {
        cache.seal(digest, &before, &now);
    }
    Ok(())
}
