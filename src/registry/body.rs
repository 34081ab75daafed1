//! Bodies read from the network under the one retry policy.
//!
//! [`read_small`] reads a whole small body (a manifest, a token, an error
//! envelope) with a size limit and the stall guard. [`BlobBody`] is the one
//! resumable blob body: it hands out a blob's bytes in order, reconnects
//! with `Range: bytes=N-` after a broken, silent or trickling connection,
//! insists that a `206` answer's `Content-Range` starts where it asked, and
//! starts over from byte 0 without `Range` when a resume is answered wrongly
//! (ignored, refused, or with a range that starts elsewhere). The caller sees
//! bytes and "start over", never a status code or a header.
//!
//! Both kinds of body pass under the run's rate limit ([`RateLimit`]), when
//! there is one, in pieces of at most its burst. Silence (`--timeout`) is
//! timed here, only while a read waits on the network: the time a reader
//! spends waiting on the rate limit is neither silence nor a trickle.
//!
//! It does not hash or store anything: the caller verifies what it receives.

use bytes::Bytes;
use reqwest::header::CONTENT_RANGE;
use reqwest::{Response, StatusCode};
use tracing::{debug, warn};

use super::client::Registry;
use super::error::RegistryError;
use super::rate::RateLimit;
use super::retry::{Budget, LOW_SPEED_BYTES, SpeedWatch};
use super::transport::classify_send_error;
use crate::digest::Digest;

/// The next chunk of `resp`, waiting at most `--timeout` for it. The one
/// place a body's silence is timed, so that only time spent waiting on the
/// network counts, not what the reader spends between chunks (on the rate
/// limit, on the disk).
async fn next_chunk(
    registry: &Registry,
    resp: &mut Response,
    what: &str,
) -> Result<Option<Bytes>, RegistryError> {
    let opts = registry.transport();
    match tokio::time::timeout(opts.timeout, resp.chunk()).await {
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(e)) => Err(classify_send_error(registry.name(), what, opts, &e)),
        Err(_) => Err(registry.silent(what)),
    }
}

/// The next piece of `pending`: as much as the rate limit lets pass at once
/// (all of it without a limit). The time waited for it is left out of
/// `watch`.
async fn pass(limit: Option<&RateLimit>, watch: &mut SpeedWatch, pending: &mut Bytes) -> Bytes {
    match limit {
        Some(limit) => {
            let (piece, waited) = limit.take(pending).await;
            watch.pause(waited);
            piece
        }
        None => std::mem::take(pending),
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes and a body
/// that stalls or trickles (fewer than [`LOW_SPEED_BYTES`] in a window).
/// Manifests, tokens and error envelopes count against the rate limit too.
pub(super) async fn read_small(
    registry: &Registry,
    mut resp: Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let name = registry.name();
    let too_large = |detail: String| RegistryError::Protocol {
        registry: name.to_string(),
        detail,
    };
    if let Some(len) = resp.content_length()
        && len > limit as u64
    {
        return Err(too_large(format!(
            "{what} of {len} bytes is larger than the {limit} allowed"
        )));
    }
    let mut watch = registry.policy().watch();
    let mut out = Vec::new();
    while let Some(mut chunk) = next_chunk(registry, &mut resp, what).await? {
        if out.len() + chunk.len() > limit {
            return Err(too_large(format!(
                "{what} is larger than the {limit} bytes allowed"
            )));
        }
        if watch.record(chunk.len() as u64) {
            return Err(registry.too_slow(what, 1, String::new()));
        }
        while !chunk.is_empty() {
            let piece = pass(registry.rate_limit(), &mut watch, &mut chunk).await;
            out.extend_from_slice(&piece);
        }
    }
    Ok(out)
}

/// Which bytes of a blob to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// From byte `from` to the end, `size` bytes in all. A registry that
    /// cannot resume makes the body start over from byte 0.
    Rest { from: u64, size: u64 },
    /// Bytes `start..end` only (a ranged chunk). A registry that does not
    /// serve ranges ends the body with [`RegistryError::RangesUnsupported`].
    Range { start: u64, end: u64 },
}

/// What a [`BlobBody`] hands out.
#[derive(Debug)]
pub enum Piece {
    /// The next bytes, following those handed out before.
    Data(Bytes),
    /// Everything handed out so far is void: the blob starts again at
    /// byte 0 (a registry that could not resume where asked).
    Restart,
}

/// A blob's bytes, resumed across broken connections; see the module docs.
pub struct BlobBody<'a> {
    registry: &'a Registry,
    repository: &'a str,
    digest: &'a Digest,
    urls: &'a [String],
    span: Span,
    /// One past the last byte received (the next byte to ask for).
    pos: u64,
    /// Bytes received but not handed out yet (they wait on the rate limit).
    pending: Bytes,
    /// One past the last byte wanted.
    end: u64,
    resp: Option<Response>,
    budget: Budget,
    watch: SpeedWatch,
    /// Whether the current connection has delivered anything yet.
    progressed: bool,
    /// The last body ended cleanly before `end`.
    ended_short: bool,
    /// The next request asks for the whole blob, without `Range`.
    without_range: bool,
    restarts: u32,
    slow: u32,
}

impl<'a> BlobBody<'a> {
    pub(super) fn new(
        registry: &'a Registry,
        repository: &'a str,
        digest: &'a Digest,
        urls: &'a [String],
        span: Span,
    ) -> BlobBody<'a> {
        let (pos, end) = match span {
            Span::Rest { from, size } => (from, size),
            Span::Range { start, end } => (start, end),
        };
        BlobBody {
            registry,
            repository,
            digest,
            urls,
            span,
            pos,
            end,
            pending: Bytes::new(),
            resp: None,
            budget: registry.policy().budget(),
            watch: registry.policy().watch(),
            progressed: false,
            ended_short: false,
            without_range: false,
            restarts: 0,
            slow: 0,
        }
    }

    /// The offset of the next byte handed out.
    pub fn position(&self) -> u64 {
        self.pos - self.pending.len() as u64
    }

    /// The next bytes, a restart, or `None` once every byte wanted arrived.
    pub async fn next(&mut self) -> Result<Option<Piece>, RegistryError> {
        loop {
            if !self.pending.is_empty() {
                return Ok(Some(self.hand_out().await));
            }
            if self.pos >= self.end {
                self.resp = None;
                return Ok(None);
            }
            if self.resp.is_none()
                && let Some(piece) = self.open().await?
            {
                return Ok(Some(piece));
            }
            let what = self.what();
            let Some(resp) = self.resp.as_mut() else {
                continue;
            };
            match next_chunk(self.registry, resp, &what).await {
                Ok(Some(bytes)) => return self.take(bytes).await.map(Some),
                Ok(None) => {
                    self.resp = None;
                    self.ended_short = true;
                    let detail = format!("the body ended at byte {} of {}", self.pos, self.end);
                    self.broken(&detail, None).await?;
                }
                Err(err) => {
                    self.resp = None;
                    self.broken(&err.to_string(), Some(err)).await?;
                }
            }
        }
    }

    /// Takes bytes that arrived, after checking they fit and that the
    /// connection is not trickling, and hands out their first piece.
    async fn take(&mut self, bytes: Bytes) -> Result<Piece, RegistryError> {
        let n = bytes.len() as u64;
        if self.pos + n > self.end {
            return Err(RegistryError::Mismatch {
                registry: self.registry.name().to_string(),
                what: self.what(),
                detail: format!(
                    "it sent more than the {} bytes {}",
                    self.end - self.span_start(),
                    match self.span {
                        Span::Rest { .. } => "the manifest states",
                        Span::Range { .. } => "asked for",
                    }
                ),
            });
        }
        self.pos += n;
        self.progressed = true;
        self.ended_short = false;
        if self.watch.record(n) && self.pos < self.end {
            // A trickle is no progress: it counts against the attempts.
            self.resp = None;
            self.slow += 1;
            let at = format!(" (stopped at byte {} of {})", self.pos, self.end);
            let err = self.registry.too_slow(&self.what(), self.slow, at);
            match self.budget.failed(&err, None) {
                Some(wait) => {
                    warn!(
                        "{} is arriving slower than {LOW_SPEED_BYTES} bytes per {} s; reconnecting at byte {}",
                        self.what(),
                        self.registry.policy().stall.as_secs(),
                        self.pos
                    );
                    tokio::time::sleep(wait).await;
                }
                None => return Err(err),
            }
        }
        self.pending = bytes;
        Ok(self.hand_out().await)
    }

    /// The next piece of what arrived, once the rate limit lets it pass.
    async fn hand_out(&mut self) -> Piece {
        let limit = self.registry.rate_limit();
        Piece::Data(pass(limit, &mut self.watch, &mut self.pending).await)
    }

    /// A connection broke (or ended early): resume at once after progress,
    /// else count a failure and wait.
    async fn broken(
        &mut self,
        detail: &str,
        err: Option<RegistryError>,
    ) -> Result<(), RegistryError> {
        if std::mem::take(&mut self.progressed) {
            self.budget.progressed();
            warn!("{}: {detail}; resuming at byte {}", self.what(), self.pos);
            return Ok(());
        }
        let err = err.unwrap_or_else(|| RegistryError::Connect {
            registry: self.registry.name().to_string(),
            detail: format!("{}: {detail}", self.what()),
        });
        match self.budget.failed(&err, None) {
            Some(wait) => {
                warn!("{}: {detail}; retrying at byte {}", self.what(), self.pos);
                tokio::time::sleep(wait).await;
                Ok(())
            }
            None => Err(self.gave_up(err)),
        }
    }

    fn gave_up(&self, err: RegistryError) -> RegistryError {
        match err {
            RegistryError::Connect { registry, detail } => RegistryError::Connect {
                detail: format!(
                    "{}{detail}; gave up at byte {} of {} after {} attempts without progress",
                    if detail.contains(self.digest.hex()) {
                        String::new()
                    } else {
                        format!("{}: ", self.what())
                    },
                    self.pos,
                    self.end,
                    self.budget.failures()
                ),
                registry,
            },
            other => other,
        }
    }

    /// Sends the next request. `Some(Restart)` when the blob starts over.
    async fn open(&mut self) -> Result<Option<Piece>, RegistryError> {
        let range = match self.span {
            Span::Rest { .. } if self.pos == 0 || self.without_range => None,
            Span::Rest { .. } => Some(format!("bytes={}-", self.pos)),
            Span::Range { .. } => Some(format!("bytes={}-{}", self.pos, self.end - 1)),
        };
        self.watch = self.registry.policy().watch();
        self.progressed = false;
        let sent = self
            .registry
            .blob_request(self.repository, self.digest, range.as_deref(), self.urls)
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(RegistryError::Status { status, .. })
                if status == StatusCode::RANGE_NOT_SATISFIABLE && range.is_some() =>
            {
                return self.refused().map(Some);
            }
            Err(e) => return Err(e),
        };
        let Some(range) = range else {
            self.without_range = false;
            self.resp = Some(resp);
            return Ok(None);
        };
        self.answered(range, resp)
    }

    /// Checks the answer to a ranged request.
    fn answered(&mut self, range: String, resp: Response) -> Result<Option<Piece>, RegistryError> {
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            // The whole blob came back.
            if let Span::Range { .. } = self.span {
                return Err(self.no_ranges());
            }
            debug!(digest = %self.digest, "Range ignored; starting over from byte 0");
            self.resp = Some(resp);
            return self.restart().map(Some);
        }
        let got = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if content_range_starts_at(&got, self.pos) {
            self.resp = Some(resp);
            return Ok(None);
        }
        warn!(
            "asked {} for {} with {range}, got Content-Range {got:?}; fetching it again from byte 0",
            self.registry.name(),
            self.what()
        );
        if let Span::Range { .. } = self.span {
            return Err(self.no_ranges());
        }
        self.without_range = true;
        self.restart().map(Some)
    }

    /// A `416` to a resume: the partial data is not a prefix the registry
    /// knows, or (after a body that ended short) the registry has no more.
    fn refused(&mut self) -> Result<Piece, RegistryError> {
        if let Span::Range { .. } = self.span {
            return Err(self.no_ranges());
        }
        if self.ended_short {
            return Err(RegistryError::Mismatch {
                registry: self.registry.name().to_string(),
                what: self.what(),
                detail: format!(
                    "the registry has {} bytes, the manifest states {}",
                    self.pos, self.end
                ),
            });
        }
        self.without_range = true;
        self.restart()
    }

    fn restart(&mut self) -> Result<Piece, RegistryError> {
        self.restarts += 1;
        if self.restarts > self.registry.policy().attempts.max(1) {
            return Err(RegistryError::Restarts {
                registry: self.registry.name().to_string(),
                what: self.what(),
                times: self.restarts,
            });
        }
        self.pos = 0;
        self.pending = Bytes::new();
        self.ended_short = false;
        Ok(Piece::Restart)
    }

    fn no_ranges(&self) -> RegistryError {
        RegistryError::RangesUnsupported {
            registry: self.registry.name().to_string(),
            what: self.what(),
        }
    }

    fn span_start(&self) -> u64 {
        match self.span {
            Span::Rest { .. } => 0,
            Span::Range { start, .. } => start,
        }
    }

    fn what(&self) -> String {
        format!("blob {}", self.digest)
    }
}

/// Whether `Content-Range: bytes A-B/N` starts at `offset`.
fn content_range_starts_at(header: &str, offset: u64) -> bool {
    header
        .trim()
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('-'))
        .and_then(|(start, _)| start.trim().parse::<u64>().ok())
        == Some(offset)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiting_on_the_rate_limit_is_not_a_trickle() {
        // 100 B/s: far below LOW_SPEED_BYTES per one-second window.
        let limit = RateLimit::new(NonZeroU64::new(100).unwrap());
        let mut watch = SpeedWatch::new(Duration::from_secs(1));
        let start = Instant::now();
        for _ in 0..10 {
            // 200 bytes arrive at once, then take two seconds to pass.
            let mut pending = Bytes::from(vec![0u8; 200]);
            assert!(!watch.record(200), "a trickle at {:?}", start.elapsed());
            while !pending.is_empty() {
                let piece = pass(Some(&limit), &mut watch, &mut pending).await;
                assert!(piece.len() as u64 <= limit.burst());
            }
        }
        assert!(start.elapsed() >= Duration::from_secs(19));
        // Time on the network still counts.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!watch.record(10), "the window before had enough");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(watch.record(10), "10 bytes in 2 s on the network");
    }

    #[tokio::test]
    async fn without_a_limit_everything_passes_at_once() {
        let mut watch = SpeedWatch::new(Duration::from_secs(1));
        let mut pending = Bytes::from(vec![7u8; 1 << 20]);
        let piece = pass(None, &mut watch, &mut pending).await;
        assert_eq!((piece.len(), pending.len()), (1 << 20, 0));
    }

    #[test]
    fn content_range_check() {
        assert!(content_range_starts_at("bytes 100-199/200", 100));
        assert!(content_range_starts_at("bytes 100-199/*", 100));
        assert!(!content_range_starts_at("bytes 0-199/200", 100));
        assert!(!content_range_starts_at("", 100));
        assert!(!content_range_starts_at("items 100-199/200", 100));
    }
}
