//! The one retry policy for every request the registry layer makes (pings,
//! tokens, manifests, blobs): how many attempts, how long to wait between
//! them (exponential backoff from 1 s, doubling, capped at 30 s, with
//! jitter; `Retry-After` honoured up to 120 s), which failures are worth
//! another try, that progress restores the budget, and when a body that
//! still trickles counts as stalled.
//!
//! Nothing else in the crate decides when to retry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::error::RegistryError;

const BASE: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(30);
/// Longest `Retry-After` we are willing to sleep through.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// A body that brings fewer bytes than this in a whole stall window is
/// treated as stalled (a trickle that never goes silent would otherwise hold
/// a pull for hours).
pub const LOW_SPEED_BYTES: u64 = 1024;

/// How hard to try: attempts per request, and the stall window (`--timeout`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts without progress before giving up (at least 1).
    pub attempts: u32,
    /// A response that sends nothing, or fewer than [`LOW_SPEED_BYTES`], in
    /// this long is abandoned.
    pub stall: Duration,
}

impl RetryPolicy {
    /// A fresh budget for one request (or one body).
    pub fn budget(&self) -> Budget {
        Budget {
            policy: *self,
            failures: 0,
        }
    }

    /// A speed watch over this policy's stall window.
    pub fn watch(&self) -> SpeedWatch {
        SpeedWatch::new(self.stall)
    }
}

/// The failures one request (or one body) has had since its last progress.
#[derive(Debug, Clone)]
pub struct Budget {
    policy: RetryPolicy,
    failures: u32,
}

impl Budget {
    /// After a failure: how long to wait before the next attempt, or `None`
    /// when the failure is final or the budget is spent. `retry_after` is
    /// what the server asked for, if anything.
    pub fn failed(
        &mut self,
        err: &RegistryError,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        self.failures += 1;
        if !err.is_transient() || self.failures >= self.policy.attempts.max(1) {
            return None;
        }
        Some(retry_after.unwrap_or_else(|| backoff(self.failures)))
    }

    /// Data arrived: a flaky link that keeps delivering finishes, one that
    /// delivers nothing gives up.
    pub fn progressed(&mut self) {
        self.failures = 0;
    }

    /// Failures counted so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Statuses worth another try.
pub fn status_is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// The delay before attempt `attempt + 1` (attempt counts from 1).
pub fn backoff(attempt: u32) -> Duration {
    let exp = BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(5));
    let capped = exp.min(CAP);
    // Up to 25% jitter so that parallel downloads do not retry in lockstep.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = capped.mul_f64(f64::from(nanos % 1000) / 4000.0);
    capped + jitter
}

/// Parses `Retry-After` (delta seconds), capped.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Watches a body's speed over windows of the stall length. A window is
/// time spent on the network: what the reader spends waiting on the rate
/// limit is left out ([`SpeedWatch::pause`]), so a cap below
/// [`LOW_SPEED_BYTES`] per window is not taken for a trickling link.
#[derive(Debug)]
pub struct SpeedWatch {
    window: Duration,
    start: Instant,
    bytes: u64,
}

impl SpeedWatch {
    pub fn new(window: Duration) -> SpeedWatch {
        SpeedWatch {
            window,
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` bytes; true when the window that just ended brought fewer
    /// than [`LOW_SPEED_BYTES`].
    pub fn record(&mut self, n: u64) -> bool {
        self.bytes += n;
        if self.start.elapsed() < self.window {
            return false;
        }
        let slow = self.bytes < LOW_SPEED_BYTES;
        self.start = Instant::now();
        self.bytes = 0;
        slow
    }

    /// Leaves `waited` out of the current window: the reader spent it
    /// waiting on something other than the network (the rate limit), after
    /// the window began.
    pub fn pause(&mut self, waited: Duration) {
        let now = Instant::now();
        self.start = self.start.checked_add(waited).unwrap_or(now).min(now);
    }

    /// How long until the current window ends (for a read that waits).
    pub fn remaining(&self) -> Duration {
        self.window.saturating_sub(self.start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        for (attempt, base) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (20, 30)] {
            let d = backoff(attempt);
            let b = Duration::from_secs(base);
            assert!(d >= b && d <= b.mul_f64(1.25), "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status_is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 416] {
            assert!(
                !status_is_retryable(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn reads_retry_after() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", "99999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn budget_gives_up_resets_after_progress_and_skips_final_errors() {
        let policy = RetryPolicy {
            attempts: 3,
            stall: Duration::from_secs(1),
        };
        let transient = RegistryError::Connect {
            registry: "r".into(),
            detail: "reset".into(),
        };
        let mut b = policy.budget();
        assert!(b.failed(&transient, None).is_some());
        assert_eq!(
            b.failed(&transient, Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(b.failed(&transient, None), None, "third failure of three");
        let mut b = policy.budget();
        b.failed(&transient, None);
        b.failed(&transient, None);
        b.progressed();
        assert!(b.failed(&transient, None).is_some(), "progress restores it");
        let final_error = RegistryError::NotFound {
            registry: "r".into(),
            what: "w".into(),
        };
        assert_eq!(policy.budget().failed(&final_error, None), None);
    }

    #[test]
    fn a_trickle_is_slow_a_stream_is_not() {
        let mut w = SpeedWatch::new(Duration::from_millis(20));
        assert!(!w.record(10));
        std::thread::sleep(Duration::from_millis(25));
        assert!(w.record(10), "20 bytes in a window is a trickle");
        assert!(!w.record(LOW_SPEED_BYTES * 10));
        std::thread::sleep(Duration::from_millis(25));
        assert!(!w.record(0), "the window before had enough");
    }

    #[test]
    fn time_waiting_on_the_rate_limit_is_left_out() {
        let mut w = SpeedWatch::new(Duration::from_millis(40));
        assert!(!w.record(10));
        std::thread::sleep(Duration::from_millis(50));
        w.pause(Duration::from_millis(50));
        assert!(!w.record(10), "the window has not run yet");
        std::thread::sleep(Duration::from_millis(50));
        assert!(w.record(10), "time on the network still counts");
        // A pause longer than the window so far cannot move it into the future.
        w.pause(Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(50));
        assert!(w.record(10), "10 bytes in a window is a trickle");
    }
}
