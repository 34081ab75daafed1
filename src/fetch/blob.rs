//! One blob's download into the cache: take the blob's lock, continue any
//! partial download left by an earlier run (re-hashing what is there), take
//! the rest from the registry's resumable body (in ranged chunks when large)
//! hashed while written, verify size and digest, and commit by rename.
//!
//! It never sees a status code or a header: resuming, retrying and the stall
//! guard are the registry layer's.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{debug, warn};

use super::{Event, Fetched, Fetcher};
use crate::cache::IngestLock;
use crate::digest::{Digest, Hasher};
use crate::error::PullError;
use crate::registry::{Piece, Span};
use crate::resolve::Descriptor;

const WRITE_BUFFER: usize = 1 << 20;

pub(super) async fn download(f: &Fetcher, d: &Descriptor) -> Result<Fetched, PullError> {
    let cache = Arc::clone(&f.cache);
    let digest = d.digest.clone();
    let lock = tokio::task::spawn_blocking(move || cache.lock_ingest(&digest))
        .await
        .map_err(|e| PullError::io("locking", f.cache.root(), std::io::Error::other(e)))?
        .map_err(|e| PullError::io("locking a download in", f.cache.root(), e))?;
    // Another process may have finished it while we waited.
    if f.cache.contains(&d.digest, d.size) {
        return Ok(f.cached(d));
    }
    let mut integrity_retry_left = true;
    loop {
        match download_locked(f, d, &lock).await {
            Err(PullError::Integrity { detail, .. }) if integrity_retry_left => {
                warn!(
                    "{}: blob {} was damaged in transit ({detail}); downloading it again",
                    f.image, d.digest
                );
                integrity_retry_left = false;
                let _ = std::fs::remove_file(f.cache.ingest_path(&d.digest));
            }
            other => return other,
        }
    }
}

/// A partial download on disk: the file, the hash of what it holds, and its
/// length.
struct Partial {
    out: BufWriter<File>,
    hasher: Hasher,
    path: PathBuf,
}

impl Partial {
    /// Opens the partial download for appending and hashes what it holds. A
    /// partial longer than the blob is discarded.
    fn open(path: PathBuf, size: u64) -> Result<Partial, PullError> {
        crate::cache::ingest::trim_to_recorded_prefix(&path)
            .map_err(|e| PullError::io("reading", &path, e))?;
        let io = |e| PullError::io("reading", &path, e);
        let mut file = crate::cache::open_nofollow_rw(&path)
            .map_err(|e| PullError::io("opening", &path, e))?;
        let len = file.metadata().map_err(io)?.len();
        let mut hasher = Hasher::new();
        if len > size {
            file.set_len(0).map_err(io)?;
        } else if len > 0 {
            hasher.update_from(&mut file).map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Partial {
            out: BufWriter::with_capacity(WRITE_BUFFER, file),
            hasher,
            path,
        })
    }

    fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Writes out what is buffered.
    fn flush(&mut self) -> Result<(), PullError> {
        self.out
            .flush()
            .map_err(|e| PullError::io("writing", &self.path, e))
    }

    /// Continues writing at the end of the file (after chunks were written
    /// through other handles).
    fn seek_end(&mut self) -> Result<(), PullError> {
        self.flush()?;
        self.out
            .get_mut()
            .seek(SeekFrom::End(0))
            .map(|_| ())
            .map_err(|e| PullError::io("writing", &self.path, e))
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), PullError> {
        self.hasher.update(chunk);
        self.out
            .write_all(chunk)
            .map_err(|e| PullError::io("writing", &self.path, e))
    }

    /// Empties it to start again from byte 0.
    fn restart(&mut self) -> Result<(), PullError> {
        self.hasher = Hasher::new();
        let out = &mut self.out;
        out.flush()
            .and_then(|_| out.get_mut().set_len(0))
            .and_then(|_| out.get_mut().seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|e| PullError::io("writing", &self.path, e))
    }

    /// Flushes it; returns the digest of its content. No fsync: a blob
    /// that a crash leaves damaged is caught when a later run reads it (cache
    /// hits are hashed on their way into an archive) and downloaded again,
    /// so waiting for the disk on every blob would buy nothing.
    fn finish(self) -> Result<Digest, PullError> {
        let path = self.path;
        self.out
            .into_inner()
            .map_err(|e| PullError::io("writing", &path, e.into_error()))?;
        Ok(self.hasher.finish())
    }
}

async fn download_locked(
    f: &Fetcher,
    d: &Descriptor,
    lock: &IngestLock,
) -> Result<Fetched, PullError> {
    let mut partial = Partial::open(f.cache.ingest_path(&d.digest), d.size)?;
    let resumed_from = partial.len();
    f.observer.event(Event::Started {
        digest: d.digest.clone(),
        size: d.size,
        offset: resumed_from,
    });
    let mut downloaded = 0u64;
    // A large rest goes in ranged chunks; the single stream below takes
    // over when the registry ignores ranges.
    if d.size - partial.len() > f.chunking.threshold {
        let start = partial.len();
        partial.flush()?;
        match super::chunked::download(f, d, &partial.path, start, &mut partial.hasher).await? {
            super::chunked::Outcome::Done { downloaded: n } => downloaded = n,
            super::chunked::Outcome::NoRanges => {
                debug!(digest = %d.digest, "no Range support; one stream");
            }
        }
        partial.seek_end()?;
    }
    // An empty blob needs no request: its digest alone is checked below.
    if partial.len() < d.size {
        // One connection permit for the single stream.
        let _permit = f.connections.acquire().await.ok();
        downloaded += stream_rest(f, d, &mut partial).await?;
    }
    let path = partial.path.clone();
    let actual = partial.finish()?;
    if actual != d.digest {
        let _ = std::fs::remove_file(&path);
        return Err(f.integrity(d, format!("its content hashes to {actual}")));
    }
    f.cache
        .commit(&d.digest, lock)
        .map_err(|e| PullError::io("storing a blob in", f.cache.root(), e))?;
    debug!(digest = %d.digest, downloaded, "blob in the cache");
    if resumed_from > 0 {
        debug!(digest = %d.digest, resumed_from, "resumed a partial download");
    }
    f.observer.event(Event::Finished {
        digest: d.digest.clone(),
    });
    Ok(Fetched {
        digest: d.digest.clone(),
        size: d.size,
        from_cache: false,
        downloaded,
    })
}

/// Streams the rest of the blob into the partial file; returns the bytes
/// received.
async fn stream_rest(f: &Fetcher, d: &Descriptor, partial: &mut Partial) -> Result<u64, PullError> {
    let span = Span::Rest {
        from: partial.len(),
        size: d.size,
    };
    let mut body = f
        .registry
        .blob_body(&f.repository, &d.digest, &d.urls, span);
    let mut downloaded = 0u64;
    while let Some(piece) = body.next().await.map_err(|e| f.registry_error(d, e))? {
        match piece {
            Piece::Data(bytes) => {
                partial.write(&bytes)?;
                downloaded += bytes.len() as u64;
                f.observer.event(Event::Progress {
                    digest: d.digest.clone(),
                    bytes: bytes.len() as u64,
                });
            }
            Piece::Restart => {
                partial.restart()?;
                f.observer.event(Event::Rewound {
                    digest: d.digest.clone(),
                    offset: 0,
                });
            }
        }
    }
    Ok(downloaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_is_rehashed_continued_or_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.data");
        std::fs::write(&p, b"hello").unwrap();
        let mut partial = Partial::open(p.clone(), 11).unwrap();
        assert_eq!(partial.len(), 5);
        partial.write(b" world").unwrap();
        assert_eq!(partial.finish().unwrap(), Digest::of(b"hello world"));
        assert_eq!(std::fs::read(&p).unwrap(), b"hello world");

        let mut partial = Partial::open(p.clone(), 3).unwrap();
        assert_eq!(partial.len(), 0, "longer than the blob: discarded");
        partial.write(b"abc").unwrap();
        partial.restart().unwrap();
        partial.write(b"xy").unwrap();
        assert_eq!(partial.finish().unwrap(), Digest::of(b"xy"));
        assert_eq!(std::fs::read(&p).unwrap(), b"xy");
    }
}
