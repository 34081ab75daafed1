//! When and how long to wait before trying a request again: exponential
//! backoff from 1 s, doubling, capped at 30 s, with jitter; `Retry-After` is
//! honoured when the registry sends it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;

const BASE: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(30);
/// Longest `Retry-After` we are willing to sleep through.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

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
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
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
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", "99999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }
}
