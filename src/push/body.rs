//! What `push` uploads from, as the registry layer's [`UploadBody`]: a blob
//! of the source (the registry layer checks its size and sha256 as it is
//! sent, so a damaged source fails its upload), a file written for the push (a layer
//! compressed to gzip), or bytes in memory (a config). Each re-opens at an
//! offset when an upload resumes, and reports the bytes it hands over as
//! progress events.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use crate::archive::read::{Blob, Source};
use crate::digest::Digest;
use crate::events::{Event, Observer};
use crate::registry::UploadBody;

/// Where the bytes are.
pub enum From {
    /// A blob of the source archive or layout.
    Source { source: Arc<Source>, blob: Blob },
    /// A file written for this push (verified when it was written).
    File(PathBuf),
    /// Bytes in memory.
    Memory(Arc<Vec<u8>>),
}

/// One blob to upload, and who hears of its progress.
pub struct Body {
    pub from: From,
    pub digest: Digest,
    pub size: u64,
    pub observer: Arc<dyn Observer>,
}

impl UploadBody for Body {
    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let inner: Box<dyn Read + Send> = match &self.from {
            // The registry layer checks the size and sha256 of what it
            // sends (and hashes a resumed upload's prefix itself).
            From::Source { source, blob } => source
                .open_blob_unchecked_at(blob, offset)
                .map_err(io::Error::other)?,
            From::File(path) => {
                let mut f = crate::cache::fsx::open_nofollow_read(path)?;
                f.seek(SeekFrom::Start(offset))?;
                Box::new(f)
            }
            From::Memory(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                Box::new(io::Cursor::new(bytes[start..].to_vec()))
            }
        };
        self.observer.event(Event::Uploading {
            digest: self.digest.clone(),
            size: self.size,
            offset,
        });
        Ok(Box::new(Counted {
            inner,
            digest: self.digest.clone(),
            observer: Arc::clone(&self.observer),
        }))
    }
}

/// A reader that reports what passes through it.
struct Counted {
    inner: Box<dyn Read + Send>,
    digest: Digest,
    observer: Arc<dyn Observer>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.observer.event(Event::Progress {
                digest: self.digest.clone(),
                bytes: n as u64,
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Silent;

    #[test]
    fn memory_and_files_reopen_at_an_offset() {
        let bytes = Arc::new(b"0123456789".to_vec());
        let body = Body {
            from: From::Memory(Arc::clone(&bytes)),
            digest: Digest::of(&bytes),
            size: 10,
            observer: Arc::new(Silent),
        };
        let mut out = String::new();
        body.open_at(4).unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out, "456789");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, &*bytes).unwrap();
        let body = Body {
            from: From::File(path),
            ..body
        };
        let mut out = String::new();
        body.open_at(7).unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out, "789");
    }
}
