//! The cap on a run's total transfer rate (`--limit-rate`): one token bucket,
//! shared (in an `Arc`) by every connection of the run.
//!
//! Every body the registry layer reads passes through it: blob bodies (whole
//! blobs, the ranged chunks of large ones, foreign layers' URLs) and the small
//! bodies of manifests, tokens and error envelopes too, so the cap is the
//! total of the run. A body to upload wraps its stream in [`throttle`].
//!
//! The bucket holds at most a tenth of a second's worth of bytes (at least
//! one byte), and bytes pass in pieces no larger than that: a large read at a
//! low cap is handed out piece by piece, never at once. Over any span of `T`
//! seconds at most `rate × T + burst` bytes pass, whatever the number of
//! connections; waiters are served in the order they asked.
//!
//! Waiting here is not the network's slowness: [`RateLimit::take`] says how
//! long it waited, so that the stall guard can leave that time out
//! ([`SpeedWatch::pause`](super::retry::SpeedWatch::pause)).

use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

/// A shared cap in bytes per second; see the module docs.
#[derive(Debug)]
pub struct RateLimit {
    /// Bytes per second.
    rate: u64,
    /// The most the bucket holds, and the largest piece handed out.
    burst: u64,
    bucket: Mutex<Bucket>,
}

/// The bucket's level at an instant. The level goes below zero when bytes
/// are promised ahead of time: a waiter owns the tokens that will refill
/// them, and the next waiter queues behind it.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A bucket of `rate` bytes per second, full.
    pub fn new(rate: NonZeroU64) -> RateLimit {
        let rate = rate.get();
        let burst = (rate / 10).max(1);
        RateLimit {
            rate,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst as f64,
                at: Instant::now(),
            }),
        }
    }

    /// The cap, in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The largest piece handed out at once (a tenth of a second's worth).
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Takes `n` bytes' worth of tokens now, in debt if need be; returns how
    /// long until that debt is paid off.
    fn reserve(&self, n: u64) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        let rate = self.rate as f64;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(self.burst as f64) - n as f64;
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate)
        }
    }

    /// Waits until `n` bytes may pass; returns the time waited. Any `n` keeps
    /// the long-run rate, but more than [`burst`](Self::burst) at once passes
    /// as a burst: hand out larger amounts with [`take`](Self::take).
    pub async fn acquire(&self, n: u64) -> Duration {
        let started = Instant::now();
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        started.elapsed()
    }

    /// Splits the next piece (at most [`burst`](Self::burst) bytes) off the
    /// front of `pending` once it may pass; returns it with the time waited.
    pub async fn take(&self, pending: &mut Bytes) -> (Bytes, Duration) {
        let n = pending
            .len()
            .min(usize::try_from(self.burst).unwrap_or(usize::MAX));
        let waited = self.acquire(n as u64).await;
        (pending.split_to(n), waited)
    }
}

/// `body` (an upload's stream of bytes) under the cap: its chunks split into
/// pieces of at most [`RateLimit::burst`], each handed on once it may pass.
pub fn throttle<S, E>(limit: Arc<RateLimit>, body: S) -> impl Stream<Item = Result<Bytes, E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    futures_util::stream::unfold(
        (limit, body, Bytes::new()),
        |(limit, mut body, mut pending)| async move {
            while pending.is_empty() {
                match body.next().await? {
                    Ok(chunk) => pending = chunk,
                    Err(e) => return Some((Err(e), (limit, body, pending))),
                }
            }
            let (piece, _) = limit.take(&mut pending).await;
            Some((Ok(piece), (limit, body, pending)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: u64) -> Arc<RateLimit> {
        Arc::new(RateLimit::new(NonZeroU64::new(rate).unwrap()))
    }

    /// Consumers that each read `chunk`-sized pieces as fast as the bucket
    /// lets them, for `secs` seconds: the bytes each handed out.
    async fn consume(limit: &Arc<RateLimit>, consumers: usize, chunk: usize, secs: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..consumers {
            let limit = Arc::clone(limit);
            tasks.push(tokio::spawn(async move {
                let mut passed = 0u64;
                loop {
                    let mut pending = Bytes::from(vec![0u8; chunk]);
                    while !pending.is_empty() {
                        let (piece, _) = limit.take(&mut pending).await;
                        if Instant::now() > deadline {
                            return passed;
                        }
                        passed += piece.len() as u64;
                    }
                }
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_consumers_share_the_cap() {
        for (rate, consumers, chunk) in [
            (1 << 20, 4, 64 << 10),
            (1 << 20, 8, 16 << 10),
            (1000, 3, 64 << 10),
            (7, 2, 100),
        ] {
            let limit = limit(rate);
            let secs = 10;
            let passed = consume(&limit, consumers, chunk, secs).await;
            let achieved = passed as f64 / secs as f64;
            assert!(
                achieved <= 1.1 * rate as f64,
                "{consumers} consumers of {chunk}-byte reads at {rate} B/s: {achieved} B/s"
            );
            assert!(
                achieved >= 0.9 * rate as f64,
                "the bucket hands out what the cap allows: {achieved} B/s of {rate}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_bounded() {
        let limit = limit(1 << 20);
        assert_eq!(limit.burst(), (1 << 20) / 10);
        // A read of 1 MiB at once: only the first tenth passes without waiting.
        let mut pending = Bytes::from(vec![0u8; 1 << 20]);
        let (piece, waited) = limit.take(&mut pending).await;
        assert_eq!(piece.len() as u64, limit.burst());
        assert_eq!(waited, Duration::ZERO);
        let (piece, waited) = limit.take(&mut pending).await;
        assert_eq!(piece.len() as u64, limit.burst());
        assert!(waited >= Duration::from_millis(99), "{waited:?}");
        // Idle for a minute: the bucket holds no more than one burst.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        let mut free = 0u64;
        while Instant::now() == start {
            let mut pending = Bytes::from(vec![0u8; 4096]);
            while !pending.is_empty() {
                let (piece, _) = limit.take(&mut pending).await;
                if Instant::now() == start {
                    free += piece.len() as u64;
                }
            }
        }
        assert!(free <= limit.burst(), "{free} bytes passed at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_read_at_a_low_cap_is_split() {
        // 64 KiB at 1 KiB/s: 102-byte pieces, the last one after about 64 s.
        let limit = limit(1024);
        let start = Instant::now();
        let mut pending = Bytes::from(vec![0u8; 64 << 10]);
        let mut pieces = 0;
        while !pending.is_empty() {
            let (piece, _) = limit.take(&mut pending).await;
            assert!(piece.len() as u64 <= limit.burst());
            pieces += 1;
        }
        assert!(pieces >= 640, "{pieces} pieces");
        let took = start.elapsed().as_secs_f64();
        assert!(took >= 63.9, "64 KiB at 1 KiB/s passed in {took} s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_stream_is_throttled() {
        let limit = limit(10 << 10);
        let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 16 << 10])));
        let start = Instant::now();
        let out: Vec<Bytes> = throttle(Arc::clone(&limit), futures_util::stream::iter(chunks))
            .map(|r| r.unwrap())
            .collect()
            .await;
        let total: usize = out.iter().map(Bytes::len).sum();
        assert_eq!(total, 160 << 10);
        assert!(out.iter().all(|p| p.len() as u64 <= limit.burst()));
        let took = start.elapsed().as_secs_f64();
        assert!(took >= 15.9, "160 KiB at 10 KiB/s in {took} s");
    }
}
