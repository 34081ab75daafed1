//! Parallel ranged downloads of large blobs: the rest of the blob is cut into
//! `Range: bytes=A-B` chunks fetched over several connections at once (each
//! holding one of the run's `-j` connection permits), written at their
//! offsets, and hashed in order as the verified prefix grows. The prefix is
//! recorded beside the partial file, so an interrupted download resumes from
//! it. A registry that ignores `Range` makes the caller fall back to one
//! stream.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use reqwest::header::CONTENT_RANGE;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Event, Fetcher};
use crate::cache::{open_nofollow_read, open_nofollow_write};
use crate::digest::Hasher;
use crate::error::PullError;
use crate::registry::retry;
use crate::registry::transport::classify_send_error;
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

impl Chunking {
    /// The defaults, tuned by `DOCKER_PULL_CHUNK_THRESHOLD` and
    /// `DOCKER_PULL_CHUNK_SIZE` (sizes such as `64M`; a threshold of `0`
    /// turns chunking off).
    pub fn from_env() -> Chunking {
        let mut c = Chunking::default();
        let size = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| crate::cli::parse_size(&v).ok())
        };
        if let Some(t) = size("DOCKER_PULL_CHUNK_THRESHOLD") {
            c.threshold = if t == 0 { u64::MAX } else { t };
        }
        if let Some(s) = size("DOCKER_PULL_CHUNK_SIZE") {
            c.chunk_size = s.max(64 << 10);
        }
        c
    }
}

/// The file recording how much of a partial download is verified.
pub fn prefix_path(data: &Path) -> PathBuf {
    data.with_extension("prefix")
}

/// Cuts a partial download back to its recorded verified prefix (after a
/// chunked download stopped with chunks beyond it), and forgets the record.
pub fn trim_to_recorded_prefix(data: &Path) -> std::io::Result<()> {
    let record = prefix_path(data);
    let Ok(text) = std::fs::read_to_string(&record) else {
        return Ok(());
    };
    let prefix: u64 = text.trim().parse().unwrap_or(0);
    if let Ok(meta) = std::fs::metadata(data)
        && meta.len() > prefix
    {
        open_nofollow_write(data)?.set_len(prefix)?;
    }
    std::fs::remove_file(record)
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
    hasher: Mutex<Hasher>,
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

/// Downloads bytes `start..d.size` of `d` into `path` in chunks; `hasher`
/// holds the hash of the first `start` bytes and receives the rest in order.
pub async fn download(
    f: &Fetcher,
    d: &Descriptor,
    path: &Path,
    start: u64,
    hasher: &mut Hasher,
) -> Result<Outcome, PullError> {
    let chunk = f.chunking.chunk_size.max(1);
    let mut queue = VecDeque::new();
    let mut at = start;
    while at < d.size {
        let end = (at + chunk).min(d.size);
        queue.push_back((at, end));
        at = end;
    }
    let streams = f
        .chunking
        .max_streams
        .min(f.concurrency.max(1))
        .min(queue.len())
        .max(1);
    debug!(digest = %d.digest, chunks = queue.len(), streams, "ranged download");
    let before = hasher.clone();
    let shared = Arc::new(Shared {
        queue: Mutex::new(queue),
        hasher: Mutex::new(std::mem::take(hasher)),
        received: std::sync::atomic::AtomicU64::new(0),
        started: std::time::Instant::now(),
    });
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, u64)>();
    let workers: Vec<_> = (0..streams)
        .map(|i| {
            let shared = Arc::clone(&shared);
            let done = done_tx.clone();
            async move {
                let mut downloaded = 0u64;
                loop {
                    // The first stream waits its turn for a connection; the
                    // others take a chunk only when the blob arrives slowly
                    // and a connection is free. Otherwise (a fast link, or
                    // other blobs keeping every connection busy) the blob
                    // goes chunk after chunk, in order, hashed as it arrives.
                    let permit = if i == 0 {
                        None
                    } else {
                        loop {
                            if lock(&shared.queue).is_empty() {
                                return Ok::<_, WorkerError>(downloaded);
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
                    downloaded += fetch_chunk(f, d, path, s, e, permit, &shared).await?;
                    let _ = done.send((s, e));
                }
            }
        })
        .collect();
    drop(done_tx);
    let workers = futures_util::future::try_join_all(workers);
    tokio::pin!(workers);

    // Hash the verified prefix as it grows, while the workers run: chunks
    // that finished ahead of it are read back when it reaches them.
    let mut finished: BTreeMap<u64, u64> = BTreeMap::new();
    // Finished (so written out) chunks from `start` on without a gap end
    // here: what a later run may keep.
    let mut written_to = start;
    let mut written: BTreeMap<u64, u64> = BTreeMap::new();
    let mut reader = open_nofollow_read(path).map_err(|e| PullError::io("reading", path, e))?;
    let record = prefix_path(path);
    let mut workers_result = None;
    loop {
        tokio::select! {
            r = &mut workers, if workers_result.is_none() => {
                workers_result = Some(r);
            }
            msg = done_rx.recv() => {
                match msg {
                    Some((s, e)) => {
                        finished.insert(s, e);
                        written.insert(s, e);
                        let mut h = lock(&shared.hasher);
                        // The finished chunk that holds the prefix (or ends
                        // where it is, hashed as it arrived), if any.
                        while let Some((&s0, &e0)) = finished.range(..=h.len()).next_back() {
                            finished.remove(&s0);
                            let prefix = h.len();
                            if e0 > prefix {
                                hash_range(&mut reader, path, prefix, e0, &mut h)?;
                            }
                        }
                        drop(h);
                        let before = written_to;
                        while let Some(e) = written.remove(&written_to) {
                            written_to = e;
                        }
                        if written_to > before {
                            std::fs::write(&record, written_to.to_string())
                                .map_err(|err| PullError::io("writing", &record, err))?;
                        }
                    }
                    None => {
                        // Every worker is gone; their result says how it went.
                        if workers_result.is_none() {
                            workers_result = Some((&mut workers).await);
                        }
                        break;
                    }
                }
            }
        }
    }
    *hasher = std::mem::take(&mut *lock(&shared.hasher));
    let prefix = hasher.len();
    match workers_result.expect("the loop ends once the workers have") {
        Ok(counts) => {
            if prefix != d.size {
                return Err(f.protocol_error(format!(
                    "blob {}: chunks ended at byte {prefix} of {}",
                    d.digest, d.size
                )));
            }
            let _ = std::fs::remove_file(&record);
            Ok(Outcome::Done {
                downloaded: counts.iter().sum(),
            })
        }
        Err(WorkerError::NoRanges) => {
            // Back to the first `start` bytes, whatever arrived since.
            *hasher = before;
            let _ = std::fs::remove_file(&record);
            open_nofollow_write(path)
                .and_then(|file| file.set_len(start))
                .map_err(|e| PullError::io("writing", path, e))?;
            Ok(Outcome::NoRanges)
        }
        Err(WorkerError::Failed(e)) => Err(e),
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

fn hash_range(
    reader: &mut File,
    path: &Path,
    from: u64,
    to: u64,
    hasher: &mut Hasher,
) -> Result<(), PullError> {
    let io = |e| PullError::io("reading", path, e);
    reader.seek(SeekFrom::Start(from)).map_err(io)?;
    let read = hasher
        .update_from(Read::take(&mut *reader, to - from))
        .map_err(io)?;
    if read != to - from {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file ends at byte {}, before byte {to}", from + read),
        )));
    }
    Ok(())
}

/// Fetches bytes `s..e` into the file at their offset, resuming within the
/// chunk after a broken body; returns the bytes received. The first attempt
/// uses `permit` when given one; bytes that arrive right at the verified
/// prefix are hashed at once.
async fn fetch_chunk(
    f: &Fetcher,
    d: &Descriptor,
    path: &Path,
    s: u64,
    e: u64,
    mut permit: Option<tokio::sync::SemaphorePermit<'_>>,
    shared: &Shared,
) -> Result<u64, WorkerError> {
    let mut file = open_nofollow_write(path).map_err(|err| PullError::io("writing", path, err))?;
    let mut at = s;
    let mut received = 0u64;
    let mut failures = 0u32;
    while at < e {
        let _permit = match permit.take() {
            Some(p) => Some(p),
            None => f.connections.acquire().await.ok(),
        };
        let before = at;
        let failure: String = match f
            .registry
            .get_blob_range(&f.repository, &d.digest, at, e - 1, &d.urls)
            .await
        {
            Ok(mut resp) => {
                if resp.status() != StatusCode::PARTIAL_CONTENT {
                    // The whole blob came back: no ranges here.
                    return Err(WorkerError::NoRanges);
                }
                let range = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if !super::blob::content_range_starts_at(&range, at) {
                    return Err(f
                        .protocol_error(format!(
                            "asked for blob {} bytes {at}-{}, got Content-Range {range:?}",
                            d.digest,
                            e - 1
                        ))
                        .into());
                }
                file.seek(SeekFrom::Start(at))
                    .map_err(|err| PullError::io("writing", path, err))?;
                let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
                let mut watch = super::SpeedWatch::new(f.registry.timeout());
                let mut too_slow = false;
                let body_error = loop {
                    match resp.chunk().await {
                        Ok(Some(bytes)) => {
                            if at + bytes.len() as u64 > e {
                                return Err(PullError::Integrity {
                                    image: f.image.clone(),
                                    registry: f.registry.name().to_string(),
                                    digest: d.digest.clone(),
                                    detail: format!(
                                        "the registry sent more than the {} bytes asked for",
                                        e - s
                                    ),
                                }
                                .into());
                            }
                            out.write_all(&bytes)
                                .map_err(|err| PullError::io("writing", path, err))?;
                            {
                                let mut h = lock(&shared.hasher);
                                if h.len() == at {
                                    h.update(&bytes);
                                }
                            }
                            shared.received.fetch_add(
                                bytes.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            at += bytes.len() as u64;
                            received += bytes.len() as u64;
                            f.observer.event(Event::Progress {
                                digest: d.digest.clone(),
                                bytes: bytes.len() as u64,
                            });
                            if watch.record(bytes.len() as u64) && at < e {
                                too_slow = true;
                                break None;
                            }
                        }
                        Ok(None) => break None,
                        Err(err) => break Some(err),
                    }
                };
                out.flush()
                    .map_err(|err| PullError::io("writing", path, err))?;
                if too_slow {
                    // A trickle is no progress.
                    failures += 1;
                    let seconds = f.registry.timeout().as_secs();
                    if failures >= f.retries.max(1) {
                        return Err(f.connect_error(format!(
                            "blob {} arrived slower than {} bytes per {seconds} s {failures} times; the link is too slow for --timeout {seconds}",
                            d.digest,
                            super::LOW_SPEED_BYTES
                        ))
                        .into());
                    }
                    tokio::time::sleep(retry::backoff(failures)).await;
                    continue;
                }
                match body_error {
                    None if at == e => break,
                    None => format!("the body ended at byte {at}"),
                    Some(err) => classify_send_error(
                        f.registry.name(),
                        &format!("blob {}", d.digest),
                        f.registry.transport(),
                        &err,
                    )
                    .to_string(),
                }
            }
            Err(err) if err.is_transient() => err.to_string(),
            Err(source) => {
                return Err(PullError::Registry {
                    image: f.image.clone(),
                    source,
                }
                .into());
            }
        };
        if at > before {
            failures = 0;
            warn!(
                "{}: {failure}; resuming blob {} at byte {at}",
                f.image, d.digest
            );
            continue;
        }
        failures += 1;
        if failures >= f.retries.max(1) {
            return Err(f
                .connect_error(format!(
                    "blob {} bytes {s}-{}: {failure}; gave up after {failures} attempts without progress",
                    d.digest,
                    e - 1
                ))
                .into());
        }
        warn!(
            "{}: {failure}; retrying blob {} at byte {at}",
            f.image, d.digest
        );
        tokio::time::sleep(retry::backoff(failures)).await;
    }
    Ok(received)
}
