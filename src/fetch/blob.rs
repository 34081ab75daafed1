//! One blob's download into the cache: take the blob's lock, continue any
//! partial download left by an earlier run (re-hashing what is there), stream
//! the rest hashed while written, resume with `Range` after a broken body,
//! verify size and digest, and commit by rename.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::CONTENT_RANGE;
use tracing::{debug, warn};

use super::{Event, Fetched, Fetcher, LOW_SPEED_BYTES, SpeedWatch};
use crate::cache::IngestLock;
use crate::digest::{Digest, Hasher};
use crate::error::PullError;
use crate::registry::RegistryError;
use crate::registry::retry;
use crate::registry::transport::classify_send_error;
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
        super::chunked::trim_to_recorded_prefix(&path)
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
    let integrity = |detail: String| PullError::Integrity {
        image: f.image.clone(),
        registry: f.registry.name().to_string(),
        digest: d.digest.clone(),
        detail,
    };
    let mut partial = Partial::open(f.cache.ingest_path(&d.digest), d.size)?;
    let resumed_from = partial.len();
    f.observer.event(Event::Started {
        digest: d.digest.clone(),
        size: d.size,
        offset: resumed_from,
    });
    let mut restarts = 0u32;
    let mut restart = |partial: &mut Partial| {
        restarts += 1;
        if restarts > f.retries.max(1) {
            return Err(f.protocol_error(format!(
                "blob {} had to start over {restarts} times; giving up",
                d.digest
            )));
        }
        f.observer.event(Event::Rewound {
            digest: d.digest.clone(),
            offset: 0,
        });
        partial.restart()
    };
    let mut downloaded = 0u64;
    // A large rest goes in parallel ranged chunks; the single stream below
    // takes over when the registry ignores ranges.
    if d.size - partial.len() > f.chunking.threshold {
        let start = partial.len();
        partial.flush()?;
        match super::chunked::download(f, d, &partial.path, start, &mut partial.hasher).await? {
            super::chunked::Outcome::Done { downloaded: n } => {
                downloaded = n;
                partial.seek_end()?;
            }
            super::chunked::Outcome::NoRanges => {
                debug!(digest = %d.digest, "no Range support; one stream");
                partial.seek_end()?;
            }
        }
    }
    // One connection permit for the single stream.
    let _permit = if partial.len() < d.size {
        f.connections.acquire().await.ok()
    } else {
        None
    };
    let mut failures = 0u32;
    // Whether the last body ended cleanly before the blob was complete.
    let mut ended_short = false;
    // An empty blob needs no request: its digest alone is checked below.
    while partial.len() < d.size {
        let offset = partial.len();
        let mut resp = match f
            .registry
            .get_blob_or_urls(&f.repository, &d.digest, offset, &d.urls)
            .await
        {
            Ok(r) => r,
            // The partial data is not a prefix the registry recognises: start over.
            Err(RegistryError::Status { status, .. })
                if offset > 0 && status == StatusCode::RANGE_NOT_SATISFIABLE =>
            {
                if ended_short {
                    // It sent everything it has, and that is too little.
                    return Err(integrity(format!(
                        "the registry has {offset} bytes, the manifest states {}",
                        d.size
                    )));
                }
                restart(&mut partial)?;
                continue;
            }
            Err(source) => {
                return Err(PullError::Registry {
                    image: f.image.clone(),
                    source,
                });
            }
        };
        if offset > 0 {
            if resp.status() == StatusCode::PARTIAL_CONTENT {
                let range = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !content_range_starts_at(range, offset) {
                    return Err(f.protocol_error(format!(
                        "asked for blob {} from byte {offset}, got Content-Range {range:?}",
                        d.digest
                    )));
                }
            } else {
                debug!(digest = %d.digest, "Range ignored; restarting from zero");
                restart(&mut partial)?;
            }
        }
        let before = partial.len();
        let mut watch = SpeedWatch::new(f.registry.timeout());
        let mut too_slow = false;
        let body_error = loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if partial.len() + chunk.len() as u64 > d.size {
                        return Err(integrity(format!(
                            "the registry sent more than the {} bytes the manifest states",
                            d.size
                        )));
                    }
                    partial.write(&chunk)?;
                    downloaded += chunk.len() as u64;
                    f.observer.event(Event::Progress {
                        digest: d.digest.clone(),
                        bytes: chunk.len() as u64,
                    });
                    if watch.record(chunk.len() as u64) && partial.len() < d.size {
                        too_slow = true;
                        break None;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let now = partial.len();
        ended_short = body_error.is_none() && !too_slow && now < d.size;
        if too_slow {
            // A trickle is no progress: it counts against the attempts.
            failures += 1;
            let seconds = f.registry.timeout().as_secs();
            if failures >= f.retries.max(1) {
                return Err(f.connect_error(format!(
                    "blob {} arrived slower than {LOW_SPEED_BYTES} bytes per {seconds} s {failures} times (stopped at byte {now} of {}); the link is too slow for --timeout {seconds}",
                    d.digest, d.size
                )));
            }
            warn!(
                "{}: blob {} is arriving slower than {LOW_SPEED_BYTES} bytes per {seconds} s; reconnecting at byte {now}",
                f.image, d.digest
            );
            tokio::time::sleep(retry::backoff(failures)).await;
            continue;
        }
        match body_error {
            None if now == d.size => break,
            None => warn!(
                "{}: blob {} ended after {now} of {} bytes; resuming",
                f.image, d.digest, d.size
            ),
            Some(e) => {
                let err = classify_send_error(
                    f.registry.name(),
                    &format!("blob {}", d.digest),
                    f.registry.transport(),
                    &e,
                );
                warn!("{}: {err}; resuming at byte {now}", f.image);
            }
        }
        // Progress resets the failure count: a flaky link that keeps
        // delivering data finishes; one that delivers nothing gives up.
        if now > before {
            failures = 0;
        } else {
            failures += 1;
            if failures >= f.retries.max(1) {
                return Err(f.connect_error(format!(
                    "blob {} stopped at byte {now} of {} after {failures} attempts without progress",
                    d.digest, d.size
                )));
            }
            tokio::time::sleep(retry::backoff(failures)).await;
        }
    }
    let path = partial.path.clone();
    let actual = partial.finish()?;
    if actual != d.digest {
        let _ = std::fs::remove_file(&path);
        return Err(integrity(format!("its content hashes to {actual}")));
    }
    f.cache
        .commit(&d.digest, lock)
        .map_err(|e| PullError::io("storing a blob in", f.cache.root(), e))?;
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

/// Whether `Content-Range: bytes A-B/N` starts at `offset`.
pub(super) fn content_range_starts_at(header: &str, offset: u64) -> bool {
    header
        .trim()
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('-'))
        .and_then(|(start, _)| start.trim().parse::<u64>().ok())
        == Some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_check() {
        assert!(content_range_starts_at("bytes 100-199/200", 100));
        assert!(content_range_starts_at("bytes 100-199/*", 100));
        assert!(!content_range_starts_at("bytes 0-199/200", 100));
        assert!(!content_range_starts_at("", 100));
        assert!(!content_range_starts_at("items 100-199/200", 100));
    }

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
