//! The bytes of one blob upload on their way to the registry.
//!
//! A blob small enough is read into memory and checked before anything is
//! sent. A larger one is read from its [`UploadBody`] on a blocking thread
//! in pieces of [`PIECE`] bytes and handed to reqwest through a bounded
//! channel, so memory stays bounded whatever the blob's size. Every piece
//! is counted as it is handed over (the upload's `bytes_sent`) and hashed
//! in order; the piece that completes the blob is only sent once the whole
//! blob has the size and sha256 it is pushed as, so a source that lies
//! never completes an upload.
//!
//! It knows nothing of sessions or statuses: `upload.rs` says which bytes
//! to send and when.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::error::SourceProblem;
use super::rate::RateLimit;
use super::upload::UploadBody;
use crate::digest::{Digest, Hasher};

/// The size of the pieces read from a source and handed to the connection.
pub(super) const PIECE: usize = 256 * 1024;
/// Pieces read ahead of the connection, at most.
const QUEUE: usize = 4;

/// Where the bytes come from.
#[derive(Clone)]
enum Source {
    /// Read whole and checked already.
    Memory(Bytes),
    /// Read as they are sent.
    Reader(Arc<dyn UploadBody>),
}

/// The bytes of one blob: what to send for a range of it, how much was
/// handed to connections, and whether the source is what it claims.
pub(super) struct Feed {
    source: Source,
    check: Arc<Mutex<Check>>,
    sent: Arc<AtomicU64>,
    /// Why the last body failed, when its source did.
    problem: Arc<Mutex<Option<SourceProblem>>>,
}

/// The hash of the source's prefix read so far, and the verdict once it
/// covers the whole blob.
struct Check {
    digest: Digest,
    size: u64,
    hasher: Hasher,
    /// Bytes hashed: the source's first `hashed` bytes.
    hashed: u64,
    /// Once the whole blob is hashed: what its sha256 turned out to be.
    found: Option<Digest>,
}

impl Check {
    fn new(digest: &Digest, size: u64) -> Check {
        Check {
            digest: digest.clone(),
            size,
            hasher: Hasher::new(),
            hashed: 0,
            found: None,
        }
    }

    /// Takes `piece`, the source's bytes from offset `pos` (which is at or
    /// before the end of what is hashed): hashes what is new, and once the
    /// blob is complete, says whether it is the blob named.
    fn take(&mut self, pos: u64, piece: &[u8]) -> Result<(), SourceProblem> {
        let end = pos + piece.len() as u64;
        if end > self.hashed && pos <= self.hashed {
            let new = (self.hashed - pos) as usize;
            self.hasher.update(&piece[new..]);
            self.hashed = end;
        }
        if self.hashed >= self.size && self.found.is_none() {
            self.found = Some(std::mem::take(&mut self.hasher).finish());
        }
        match end >= self.size {
            true => self.verdict().unwrap_or(Ok(())),
            false => Ok(()),
        }
    }

    /// The verdict on the whole blob, once it is known.
    fn verdict(&self) -> Option<Result<(), SourceProblem>> {
        let found = self.found.as_ref()?;
        Some(match *found == self.digest {
            true => Ok(()),
            false => Err(SourceProblem::Digest {
                found: found.clone(),
            }),
        })
    }
}

impl Feed {
    /// Reads the whole blob into memory and checks it (for blobs small
    /// enough to hold).
    pub(super) async fn in_memory(
        body: Arc<dyn UploadBody>,
        digest: &Digest,
        size: u64,
    ) -> Result<Feed, SourceProblem> {
        let bytes = tokio::task::spawn_blocking(move || read_whole(body.as_ref(), size))
            .await
            .map_err(|e| SourceProblem::Read(std::io::Error::other(e)))??;
        let mut check = Check::new(digest, size);
        check.take(0, &bytes)?;
        Ok(Feed::new(Source::Memory(bytes), check))
    }

    /// A blob read from `body` as it is sent.
    pub(super) fn streamed(body: Arc<dyn UploadBody>, digest: &Digest, size: u64) -> Feed {
        Feed::new(Source::Reader(body), Check::new(digest, size))
    }

    fn new(source: Source, check: Check) -> Feed {
        Feed {
            source,
            check: Arc::new(Mutex::new(check)),
            sent: Arc::new(AtomicU64::new(0)),
            problem: Arc::new(Mutex::new(None)),
        }
    }

    /// Bytes handed to connections so far.
    pub(super) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// A counter of the bytes handed to connections, for a stall watch.
    pub(super) fn sent_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.sent)
    }

    /// Why the last body failed, if its source is to blame.
    pub(super) fn take_problem(&self) -> Option<SourceProblem> {
        lock(&self.problem).take()
    }

    /// A request body of the blob's bytes `from..to`, under the run's cap
    /// on the total rate when there is one.
    pub(super) fn body(&self, from: u64, to: u64, rate: Option<Arc<RateLimit>>) -> reqwest::Body {
        if from >= to {
            return reqwest::Body::from(Bytes::new());
        }
        let sent = Arc::clone(&self.sent);
        let count = move |piece: &std::io::Result<Bytes>| {
            if let Ok(piece) = piece {
                sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
        };
        match &self.source {
            Source::Memory(bytes) => {
                let whole = bytes.slice(from as usize..to as usize);
                let pieces: Vec<std::io::Result<Bytes>> = (0..whole.len())
                    .step_by(PIECE)
                    .map(|i| Ok(whole.slice(i..(i + PIECE).min(whole.len()))))
                    .collect();
                limited(
                    rate,
                    Box::pin(futures_util::stream::iter(pieces).inspect(count)),
                )
            }
            Source::Reader(body) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                let reading = Reading {
                    body: Arc::clone(body),
                    check: Arc::clone(&self.check),
                    problem: Arc::clone(&self.problem),
                };
                tokio::task::spawn_blocking(move || reading.send(from, to, tx));
                let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|piece| (piece, rx))
                });
                limited(rate, Box::pin(pieces.inspect(count)))
            }
        }
    }

    /// Makes sure the whole source was read and is the blob named (before
    /// a request that commits bytes already sent): reads locally what was
    /// not hashed yet.
    pub(super) async fn verify(&self) -> Result<(), SourceProblem> {
        if let Some(verdict) = lock(&self.check).verdict() {
            return verdict;
        }
        let Source::Reader(body) = &self.source else {
            return Ok(());
        };
        let reading = Reading {
            body: Arc::clone(body),
            check: Arc::clone(&self.check),
            problem: Arc::clone(&self.problem),
        };
        tokio::task::spawn_blocking(move || reading.hash_rest())
            .await
            .map_err(|e| SourceProblem::Read(std::io::Error::other(e)))?
    }
}

/// One pass over a source, on a blocking thread.
struct Reading {
    body: Arc<dyn UploadBody>,
    check: Arc<Mutex<Check>>,
    problem: Arc<Mutex<Option<SourceProblem>>>,
}

impl Reading {
    /// Sends the bytes `from..to` into `tx`; a failure of the source is
    /// recorded and ends the body with an error, so that the request fails
    /// rather than completes.
    fn send(self, from: u64, to: u64, tx: mpsc::Sender<std::io::Result<Bytes>>) {
        if let Err(problem) = self.pieces(from, to, &tx) {
            let message = problem.to_string();
            *lock(&self.problem) = Some(problem);
            let _ = tx.blocking_send(Err(std::io::Error::other(message)));
        }
    }

    fn pieces(
        &self,
        from: u64,
        to: u64,
        tx: &mpsc::Sender<std::io::Result<Bytes>>,
    ) -> Result<(), SourceProblem> {
        // Bytes not hashed yet are read (and hashed) even when the registry
        // already holds them, so that the verdict covers the whole blob.
        let start = from.min(lock(&self.check).hashed);
        let size = lock(&self.check).size;
        let mut reader = self.body.open_at(start).map_err(SourceProblem::Read)?;
        let mut buf = vec![0u8; PIECE];
        let mut pos = start;
        while pos < to {
            let want = (to - pos).min(PIECE as u64) as usize;
            let n = read_full(&mut reader, &mut buf[..want]).map_err(SourceProblem::Read)?;
            if n == 0 {
                return Err(SourceProblem::Short {
                    found: pos,
                    expected: size,
                });
            }
            lock(&self.check).take(pos, &buf[..n])?;
            let end = pos + n as u64;
            if end > from {
                let skip = from.saturating_sub(pos) as usize;
                let piece = Bytes::copy_from_slice(&buf[skip..n]);
                if tx.blocking_send(Ok(piece)).is_err() {
                    // The request is gone (a broken connection).
                    return Ok(());
                }
            }
            pos = end;
        }
        Ok(())
    }

    /// Hashes the source from where hashing stopped to its end.
    fn hash_rest(self) -> Result<(), SourceProblem> {
        let (start, size) = {
            let check = lock(&self.check);
            (check.hashed, check.size)
        };
        let mut reader = self.body.open_at(start).map_err(SourceProblem::Read)?;
        let mut buf = vec![0u8; PIECE];
        let mut pos = start;
        while pos < size {
            let want = (size - pos).min(PIECE as u64) as usize;
            let n = read_full(&mut reader, &mut buf[..want]).map_err(SourceProblem::Read)?;
            if n == 0 {
                return Err(SourceProblem::Short {
                    found: pos,
                    expected: size,
                });
            }
            lock(&self.check).take(pos, &buf[..n])?;
            pos += n as u64;
        }
        lock(&self.check).verdict().unwrap_or(Ok(()))
    }
}

/// Reads the first `size` bytes of a source.
fn read_whole(body: &dyn UploadBody, size: u64) -> Result<Bytes, SourceProblem> {
    let reader = body.open_at(0).map_err(SourceProblem::Read)?;
    let mut out = Vec::with_capacity(size.min(PIECE as u64 * 16) as usize);
    reader
        .take(size)
        .read_to_end(&mut out)
        .map_err(SourceProblem::Read)?;
    if (out.len() as u64) < size {
        return Err(SourceProblem::Short {
            found: out.len() as u64,
            expected: size,
        });
    }
    Ok(Bytes::from(out))
}

/// Fills `buf` unless the reader ends first; returns how much it read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `pieces` as a request body, held to `rate` when there is one.
fn limited(
    rate: Option<Arc<RateLimit>>,
    pieces: std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>>,
) -> reqwest::Body {
    match rate {
        Some(rate) => reqwest::Body::wrap_stream(super::rate::throttle(rate, pieces)),
        None => reqwest::Body::wrap_stream(pieces),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_needs_every_byte_once_in_order() {
        let data = b"hello, registry".to_vec();
        let digest = Digest::of(&data);
        let mut check = Check::new(&digest, data.len() as u64);
        check.take(0, &data[..5]).unwrap();
        // A piece read again from an earlier offset adds nothing twice.
        check.take(2, &data[2..8]).unwrap();
        assert!(check.verdict().is_none());
        check.take(8, &data[8..]).unwrap();
        assert!(matches!(check.verdict(), Some(Ok(()))));

        let mut wrong = Check::new(&digest, data.len() as u64);
        let mut other = data.clone();
        other[3] ^= 1;
        assert!(wrong.take(0, &other[..10]).is_ok(), "not complete yet");
        assert!(matches!(
            wrong.take(10, &other[10..]),
            Err(SourceProblem::Digest { .. })
        ));
    }
}
