//! Deterministic tar output: fixed order is the caller's job; here every
//! entry gets mtime 0, uid/gid 0 and fixed modes, and blobs are copied from
//! the cache with their digest checked on the way.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use crate::cache::Cache;
use crate::digest::{Digest, Hasher};
use crate::error::PullError;

const BUFFER: usize = 1 << 20;

pub struct TarOut<'a> {
    builder: tar::Builder<BufWriter<File>>,
    path: &'a Path,
}

impl<'a> TarOut<'a> {
    pub fn new(file: File, path: &'a Path) -> TarOut<'a> {
        TarOut {
            builder: tar::Builder::new(BufWriter::with_capacity(BUFFER, file)),
            path,
        }
    }

    fn header(name: &str, size: u64, mode: u32, kind: tar::EntryType) -> io::Result<tar::Header> {
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

    /// Copies a cached blob into the archive, checking its size and digest.
    /// A damaged blob is evicted from the cache and reported.
    pub fn blob(
        &mut self,
        name: &str,
        cache: &Cache,
        digest: &Digest,
        size: u64,
    ) -> Result<(), PullError> {
        let src = cache.blob_path(digest);
        let damaged = |detail: String| {
            let _ = cache.evict(digest);
            PullError::io(
                "reading",
                &src,
                io::Error::other(format!(
                    "the cached blob is damaged ({detail}) and was removed; run the pull again to download it"
                )),
            )
        };
        let file = File::open(&src).map_err(|e| PullError::io("reading", &src, e))?;
        let len = file
            .metadata()
            .map_err(|e| PullError::io("reading", &src, e))?
            .len();
        if len != size {
            return Err(damaged(format!("{len} bytes, expected {size}")));
        }
        let h =
            Self::header(name, size, 0o644, tar::EntryType::Regular).map_err(|e| self.err(e))?;
        if cache.is_fresh(digest) {
            // Verified by this process a moment ago: let the kernel copy it
            // (copy_file_range, a reflink where the file system can).
            return self.copy_verified(&h, file, size);
        }
        let mut reader = HashingReader {
            inner: file,
            hasher: Hasher::new(),
        };
        self.builder
            .append(&h, &mut reader)
            .map_err(|e| self.err(e))?;
        let actual = reader.hasher.finish();
        if &actual != digest {
            return Err(damaged(format!("its content hashes to {actual}")));
        }
        Ok(())
    }

    /// Appends an entry whose data is a whole file, copied file-to-file so
    /// the standard library can use `copy_file_range` on Linux.
    fn copy_verified(
        &mut self,
        h: &tar::Header,
        mut file: File,
        size: u64,
    ) -> Result<(), PullError> {
        let path = self.path;
        let err = |e| PullError::io("writing", path, e);
        let out = self.builder.get_mut();
        out.write_all(h.as_bytes()).map_err(err)?;
        out.flush().map_err(err)?;
        let copied = io::copy(&mut file, out.get_mut()).map_err(err)?;
        if copied != size {
            return Err(err(io::Error::other(format!(
                "the cached blob changed while it was copied ({copied} of {size} bytes)"
            ))));
        }
        let pad = (512 - size % 512) % 512;
        out.write_all(&[0u8; 512][..pad as usize]).map_err(err)
    }

    pub fn finish(self) -> Result<(), PullError> {
        let path = self.path;
        let mut w = self
            .builder
            .into_inner()
            .map_err(|e| PullError::io("writing", path, e))?;
        w.flush().map_err(|e| PullError::io("writing", path, e))?;
        let file = w
            .into_inner()
            .map_err(|e| PullError::io("writing", path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| PullError::io("writing", path, e))
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
