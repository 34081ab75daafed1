//! Parallel ranged downloads of large blobs: the rest of the blob is cut into
//! `Range: bytes=A-B` chunks fetched over several connections at once (each
//! holding one of the run's `-j` connection permits), written at their
//! offsets, and hashed in order as the verified prefix grows. The prefix is
//! recorded beside the partial file, so an interrupted download resumes from
//! it. A registry that ignores `Range` makes the caller fall back to one
//! stream.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::debug;

use super::sink::{Hash, Sink, Target};
use super::{Event, Fetcher};
use crate::cache::ingest;
use crate::cache::open_nofollow_write;
use crate::digest::Hasher;
use crate::error::PullError;
use crate::registry::{Piece, RegistryError, Span};
use crate::resolve::Descriptor;

/// When and how to cut blobs into ranged chunks.
#[derive(Debug, Clone, Copy)]
pub struct Chunking {
    /// Blobs with more than this many bytes left are fetched in chunks.
    pub threshold: u64,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// Connections one blob may use at once (within the `-j` permits).
    pub max_streams: usize,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            threshold: 64 << 20,
            chunk_size: 16 << 20,
            max_streams: 4,
        }
    }
}

/// How a chunked download ended.
pub enum Outcome {
    /// Every byte is written and hashed.
    Done { downloaded: u64 },
    /// The registry ignores `Range`: use one stream (nothing was written).
    NoRanges,
}

struct Shared {
    queue: Mutex<VecDeque<(u64, u64)>>,
    /// The hash of the verified prefix (its length is the prefix). A chunk
    /// whose bytes arrive right at the prefix is hashed as it arrives;
    /// chunks that finish ahead of it are read back once it gets there.
    hasher: Arc<Mutex<Hasher>>,
    /// Bytes received for this blob, and since when.
    received: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

/// A blob arriving at least this fast over one stream gets no more: the
/// network is not what limits it, and parallel chunks written out of order
/// cost reading them back to hash them.
const FAST_ENOUGH: f64 = 100.0 * 1024.0 * 1024.0;
/// How long the first stream has to show its speed.
const SHOW_SPEED: std::time::Duration = std::time::Duration::from_millis(500);

impl Shared {
    /// Whether another stream would help: the blob has arrived slower than
    /// [`FAST_ENOUGH`] so far.
    fn wants_help(&self) -> bool {
        let elapsed = self.started.elapsed();
        if elapsed < SHOW_SPEED {
            return false;
        }
        let bytes = self.received.load(std::sync::atomic::Ordering::Relaxed) as f64;
        bytes / elapsed.as_secs_f64() < FAST_ENOUGH
    }
}

/// Downloads bytes `start..d.size` of `d` to `target` in chunks; `hasher`
/// holds the hash of the first `start` bytes and receives the rest in order.
pub(super) async fn download(
    f: &Fetcher,
    d: &Descriptor,
    target: &Target,
    start: u64,
    hasher: &mut Hasher,
) -> Result<Outcome, PullError> {
    let queue = plan(start, d.size, f.chunking.chunk_size);
    let streams = f
        .chunking
        .max_streams
        .min(f.concurrency.max(1))
        .min(queue.len())
        .max(1);
    debug!(digest = %d.digest, chunks = queue.len(), streams, "ranged download");
    // The verified prefix so far is what a later run may keep, whatever
    // happens to the chunks beyond it: recorded before any chunk is written.
    let mut prefix = Prefix::start(target, start)?;
    let before = hasher.clone();
    let shared = Arc::new(Shared {
        queue: Mutex::new(queue),
        hasher: Arc::new(Mutex::new(std::mem::take(hasher))),
        received: std::sync::atomic::AtomicU64::new(0),
        started: std::time::Instant::now(),
    });
    let (done_tx, done_rx) = mpsc::unbounded_channel::<(u64, u64)>();
    let workers = futures_util::future::try_join_all(
        (0..streams).map(|i| worker(i, f, d, target, &shared, done_tx.clone())),
    );
    drop(done_tx);
    let result = prefix.follow(workers, done_rx, &shared).await?;
    *hasher = std::mem::take(&mut *lock(&shared.hasher));
    match result {
        Ok(counts) => {
            if hasher.len() != d.size {
                let detail = format!("its chunks ended at byte {} of {}", hasher.len(), d.size);
                return Err(f.integrity(d, detail));
            }
            prefix.forget();
            Ok(Outcome::Done {
                downloaded: counts.iter().sum(),
            })
        }
        Err(WorkerError::NoRanges) => {
            // Back to the first `start` bytes, whatever arrived since.
            *hasher = before;
            prefix.forget();
            if let Some(path) = &target.cache {
                open_nofollow_write(path)
                    .and_then(|file| file.set_len(start))
                    .map_err(|e| PullError::io("writing", path, e))?;
            }
            Ok(Outcome::NoRanges)
        }
        Err(WorkerError::Failed(e)) => Err(e),
    }
}

/// The chunks of bytes `start..size`.
fn plan(start: u64, size: u64, chunk: u64) -> VecDeque<(u64, u64)> {
    let chunk = chunk.max(1);
    let mut queue = VecDeque::new();
    let mut at = start;
    while at < size {
        let end = (at + chunk).min(size);
        queue.push_back((at, end));
        at = end;
    }
    queue
}

/// One stream: takes chunks off the queue until it is empty; returns the
/// bytes it received. The first stream waits its turn for a connection; the
/// others take a chunk only when the blob arrives slowly and a connection is
/// free. Otherwise (a fast link, or other blobs keeping every connection
/// busy) the blob goes chunk after chunk, in order, hashed as it arrives.
async fn worker(
    i: usize,
    f: &Fetcher,
    d: &Descriptor,
    target: &Target,
    shared: &Shared,
    done: mpsc::UnboundedSender<(u64, u64)>,
) -> Result<u64, WorkerError> {
    let mut downloaded = 0u64;
    loop {
        let permit = if i == 0 {
            None
        } else {
            loop {
                if lock(&shared.queue).is_empty() {
                    return Ok(downloaded);
                }
                if shared.wants_help()
                    && let Ok(p) = f.connections.try_acquire()
                {
                    break Some(p);
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        let Some((s, e)) = lock(&shared.queue).pop_front() else {
            return Ok(downloaded);
        };
        downloaded += fetch_chunk(f, d, target, (s, e), permit, shared).await?;
        let _ = done.send((s, e));
    }
}

/// The verified prefix of a chunked download while its workers run: hashes
/// chunks that finished ahead of it when it reaches them, and records how
/// far the cache's file holds every chunk without a gap (what a later run
/// keeps).
struct Prefix<'a> {
    target: &'a Target,
    /// The cache's partial file, whose prefix is recorded.
    path: Option<&'a Path>,
    /// Finished chunks not yet hashed, by start.
    finished: BTreeMap<u64, u64>,
    /// Finished chunks beyond `written_to`, by start.
    written: BTreeMap<u64, u64>,
    written_to: u64,
}

impl<'a> Prefix<'a> {
    fn start(target: &'a Target, start: u64) -> Result<Prefix<'a>, PullError> {
        let path = target.cache.as_deref();
        if let Some(path) = path {
            ingest::record_prefix(path, start)
                .map_err(|e| PullError::io("writing", ingest::prefix_path(path), e))?;
        }
        Ok(Prefix {
            target,
            path,
            finished: BTreeMap::new(),
            written: BTreeMap::new(),
            written_to: start,
        })
    }

    /// Follows the workers' finished chunks until every worker is gone;
    /// returns their result.
    async fn follow<W>(
        &mut self,
        workers: W,
        mut done: mpsc::UnboundedReceiver<(u64, u64)>,
        shared: &Shared,
    ) -> Result<W::Output, PullError>
    where
        W: std::future::Future,
    {
        tokio::pin!(workers);
        let mut result = None;
        loop {
            tokio::select! {
                r = &mut workers, if result.is_none() => result = Some(r),
                msg = done.recv() => match msg {
                    Some(chunk) => self.chunk_done(chunk, shared).await?,
                    // Every worker is gone; their result says how it went.
                    None => break,
                },
            }
        }
        match result {
            Some(r) => Ok(r),
            None => Ok(workers.await),
        }
    }

    async fn chunk_done(&mut self, (s, e): (u64, u64), shared: &Shared) -> Result<(), PullError> {
        self.finished.insert(s, e);
        self.written.insert(s, e);
        // Chunks that finished ahead of the prefix are read back and hashed
        // on a blocking thread.
        let mut finished = std::mem::take(&mut self.finished);
        let (target, hasher) = (self.target.clone(), Arc::clone(&shared.hasher));
        let hashed = tokio::task::spawn_blocking(move || {
            let mut h = lock(&hasher);
            // The finished chunk that holds the prefix (or ends where it
            // is, hashed as it arrived), if any.
            while let Some((&s0, &e0)) = finished.range(..=h.len()).next_back() {
                finished.remove(&s0);
                let prefix = h.len();
                if e0 > prefix {
                    target.read_back(prefix, e0, &mut h)?;
                }
            }
            Ok::<_, PullError>(finished)
        });
        self.finished = hashed.await.map_err(|e| {
            PullError::io("hashing", "a chunked download", std::io::Error::other(e))
        })??;
        let before = self.written_to;
        while let Some(e) = self.written.remove(&self.written_to) {
            self.written_to = e;
        }
        if self.written_to > before
            && let Some(path) = self.path
        {
            ingest::record_prefix(path, self.written_to)
                .map_err(|err| PullError::io("writing", ingest::prefix_path(path), err))?;
        }
        Ok(())
    }

    /// The download ended one way or the other: no record to keep.
    fn forget(&self) {
        if let Some(path) = self.path {
            ingest::forget_prefix(path);
        }
    }
}

enum WorkerError {
    NoRanges,
    Failed(PullError),
}

impl From<PullError> for WorkerError {
    fn from(e: PullError) -> Self {
        WorkerError::Failed(e)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fetches bytes `s..e` to their place (the registry's body resumes
/// within the chunk after a broken connection) through a writing thread;
/// returns the bytes received. The first request uses `permit` when given
/// one; bytes that arrive right at the verified prefix are hashed at once.
async fn fetch_chunk(
    f: &Fetcher,
    d: &Descriptor,
    target: &Target,
    (s, e): (u64, u64),
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
    shared: &Shared,
) -> Result<u64, WorkerError> {
    let mut sink = Sink::start(target.writer(s, Hash::Shared(Arc::clone(&shared.hasher)))?);
    let _permit = match permit {
        Some(p) => Some(p),
        None => f.connections.acquire().await.ok(),
    };
    let received = receive_chunk(f, d, (s, e), shared, &mut sink).await;
    // The thread ends either way; a failure of the body comes first.
    let written = sink.finish().await;
    let n = received?;
    written?;
    Ok(n)
}

/// The bytes of one chunk, handed to `sink` as they arrive.
async fn receive_chunk(
    f: &Fetcher,
    d: &Descriptor,
    (s, e): (u64, u64),
    shared: &Shared,
    sink: &mut Sink,
) -> Result<u64, WorkerError> {
    let span = Span::Range { start: s, end: e };
    let mut body = f
        .registry
        .blob_body(&f.repository, &d.digest, &d.urls, span);
    let mut received = 0u64;
    loop {
        let piece = match body.next().await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(RegistryError::RangesUnsupported { .. }) => return Err(WorkerError::NoRanges),
            Err(err) => return Err(f.registry_error(d, err).into()),
        };
        let Piece::Data(bytes) = piece else {
            // A ranged body never starts over; it reports missing ranges.
            return Err(WorkerError::NoRanges);
        };
        let n = bytes.len() as u64;
        sink.write(bytes).await?;
        shared
            .received
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        received += n;
        f.observer.event(Event::Progress {
            digest: d.digest.clone(),
            bytes: n,
        });
    }
    Ok(received)
}
