//! The upload side of the distribution API: whether a blob or a manifest is
//! there (`HEAD`), blob uploads, and manifests put.
//!
//! A blob goes up the cheapest way that works: not at all when the registry
//! has it; mounted from another repository of the same registry (`POST
//! ?mount=&from=`; a `202` instead is an ordinary upload session, which is
//! then used); in one `PUT ?digest=` for a blob up to the chunk size; else
//! in `PATCH`es of at most the chunk size with `Content-Range`, then an
//! empty `PUT ?digest=`. A registry that does not take chunks (a `PATCH`
//! answered with a `Range` that did not advance, with `416`, or refused)
//! gets the rest in one `PUT`.
//!
//! Resuming is decided here, and only here: after a broken `PATCH` or `PUT`
//! (connection lost, 5xx, 429, 408, a body the registry stopped taking) the
//! upload asks the registry how far it got (`GET` on the upload URL, its
//! `Range: 0-N`), opens the body again at N+1 and goes on. It starts from
//! byte 0 only when the registry says so, or when the session is gone
//! (`404`: a new session, after checking the blob did not arrive after
//! all). Failures without progress count under the one retry policy; new
//! sessions are bounded by it too.
//!
//! Upload URLs (`Location`) are bounded and checked: http(s) only, no user
//! information, no step down from HTTPS to plain HTTP; credentials go only
//! to the registry's own origin (see `client.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RANGE,
};
use reqwest::{Method, Response, StatusCode};
use tracing::{debug, warn};
use url::Url;

use super::auth::Scope;
use super::client::{Call, Registry};
use super::error::{RegistryError, SourceProblem};
use super::feed::Feed;
use super::retry::{self, Budget, LOW_SPEED_BYTES, RetryPolicy};
use crate::digest::Digest;
use crate::media_type;
use crate::reference::{valid_repository, valid_tag};
use crate::text::escape_untrusted;

/// Where an upload's bytes come from; opened again at an offset when an
/// upload resumes.
pub trait UploadBody: Send + Sync {
    /// A reader positioned `offset` bytes into the blob (blocking reads;
    /// call it from spawn_blocking / block_in_place).
    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn std::io::Read + Send>>;
}

/// How a blob came to be in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPushed {
    /// The registry had it already.
    Present,
    /// Mounted from another repository of the registry.
    Mounted,
    /// Uploaded; `bytes_sent` counts every byte handed to a connection,
    /// resent ones included.
    Uploaded { bytes_sent: u64 },
}

const DIGEST_HEADER: &str = "docker-content-digest";
const OCTET_STREAM: &str = "application/octet-stream";
/// Blobs sent in one `PUT` are read into memory (and checked before anything
/// is sent) up to this size; larger ones are streamed.
const MAX_IN_MEMORY: u64 = 64 * 1024 * 1024;
/// Upload URLs longer than this are refused.
const MAX_LOCATION: usize = 8 * 1024;
/// Repositories a blob is offered to be mounted from, at most.
const MAX_MOUNT_SOURCES: usize = 8;

/// An upload session: its URL and how many bytes the registry holds.
#[derive(Debug, Clone)]
struct Session {
    url: Url,
    offset: u64,
    history: History,
}

/// Whether a session may hold bytes other than those a `PUT` is about to
/// complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    /// Nothing was sent to it yet.
    Fresh,
    /// Chunks or broken requests went to it.
    Used,
}

/// How the bytes of a blob go up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The rest in one `PUT ?digest=`.
    Monolithic,
    /// `PATCH`es of at most the chunk size, then an empty `PUT ?digest=`.
    Chunked,
}

/// The answer to a mount request.
enum Mount {
    Mounted,
    /// The registry opened an ordinary upload instead.
    Started(Session),
    /// Not mounted (no such blob there, no access, not supported).
    Refused,
}

impl Registry {
    /// HEAD /v2/<repo>/blobs/<digest>: whether the registry has it (size
    /// checked against Content-Length when given).
    pub async fn has_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, RegistryError> {
        let what = format!("blob {digest} of {repository}");
        let call = Call {
            method: Method::HEAD,
            url: self.url_in(repository, &format!("blobs/{digest}")).await?,
            scope: Scope::push(repository),
            headers: HeaderMap::new(),
            body: None,
            what: &what,
        };
        let resp = match self.call(&mut self.policy().budget(), &call).await {
            Ok(resp) => resp,
            Err(RegistryError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        // The header itself: for a HEAD, reqwest's body length is 0.
        match resp.headers().get(CONTENT_LENGTH).map(header_u64) {
            Some(Some(stated)) if stated != size => Err(RegistryError::Mismatch {
                registry: self.name().to_string(),
                what,
                detail: format!("the registry has {stated} bytes, the source {size}"),
            }),
            Some(None) => Err(self.protocol(format!(
                "HEAD of {what} answered with a Content-Length that is not a number"
            ))),
            _ => Ok(true),
        }
    }

    /// Makes sure the blob is in `repository`: HEAD first (Present); then a
    /// cross-repository mount from each of `mount_from` (same registry) in
    /// turn (201 = Mounted; a 202 opens an ordinary upload, which is used);
    /// else an upload, in one `PUT` for blobs up to `chunk` bytes, else in
    /// chunks of at most `chunk` bytes, resumed where the registry says it
    /// stands after a broken request (see the module docs).
    pub async fn push_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        mount_from: &[String],
        body: Arc<dyn UploadBody>,
        chunk: u64,
    ) -> Result<BlobPushed, RegistryError> {
        if self.has_blob(repository, digest, size).await? {
            return Ok(BlobPushed::Present);
        }
        let mut started = None;
        for from in mount_sources(repository, mount_from) {
            match self.mount(repository, digest, from).await? {
                Mount::Mounted => return Ok(BlobPushed::Mounted),
                Mount::Started(session) => {
                    started = Some(session);
                    break;
                }
                Mount::Refused => {}
            }
        }
        let chunk = chunk.max(1);
        let what = format!("blob {digest}");
        let mode = match size <= chunk {
            true => Mode::Monolithic,
            false => Mode::Chunked,
        };
        let feed = match (mode, size <= MAX_IN_MEMORY) {
            (Mode::Monolithic, true) => match Feed::in_memory(body, digest, size).await {
                Ok(feed) => feed,
                Err(problem) => {
                    if let Some(session) = &started {
                        self.cancel(repository, &what, session).await;
                    }
                    return Err(self.source_error(repository, &what, problem));
                }
            },
            _ => Feed::streamed(body, digest, size),
        };
        let session = match started {
            Some(session) => session,
            None => self.start_upload(repository, &what).await?,
        };
        let upload = Upload {
            registry: self,
            repository,
            digest,
            size,
            chunk,
            mode,
            feed,
            budget: self.policy().budget(),
            restarts: 0,
            renewal: Renewal::Allowed,
            what,
        };
        let bytes_sent = upload.run(session).await?;
        Ok(BlobPushed::Uploaded { bytes_sent })
    }

    /// HEAD /v2/<repo>/manifests/<digest>: whether it is there.
    pub async fn has_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let what = format!("manifest {digest} of {repository}");
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&media_type::manifest_accept_header())
                .expect("static Accept header is valid"),
        );
        let call = Call {
            method: Method::HEAD,
            url: self
                .url_in(repository, &format!("manifests/{digest}"))
                .await?,
            scope: Scope::push(repository),
            headers,
            body: None,
            what: &what,
        };
        match self.call(&mut self.policy().budget(), &call).await {
            Ok(resp) => {
                self.check_digest_header(resp.headers(), digest, &what)?;
                Ok(true)
            }
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// PUT /v2/<repo>/manifests/<reference> (a tag or a digest) with
    /// Content-Type `media_type`; returns the digest (the registry's
    /// Docker-Content-Digest, when present, must be sha256(bytes)).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        let what = format!("manifest {reference} of {repository}");
        let unsendable = |detail: String| RegistryError::Unsendable {
            registry: self.name().to_string(),
            what: what.clone(),
            detail,
        };
        if !valid_tag(reference) && reference.parse::<Digest>().is_err() {
            return Err(unsendable(format!(
                "{:?} is neither a tag nor a sha256 digest",
                escape_untrusted(reference)
            )));
        }
        let mut headers = HeaderMap::new();
        let content_type = HeaderValue::from_str(media_type).map_err(|_| {
            unsendable(format!(
                "its media type {:?} cannot be a header",
                escape_untrusted(media_type)
            ))
        })?;
        headers.insert(CONTENT_TYPE, content_type);
        let call = Call {
            method: Method::PUT,
            url: self
                .url_in(repository, &format!("manifests/{reference}"))
                .await?,
            scope: Scope::push(repository),
            headers,
            body: Some(Bytes::copy_from_slice(bytes)),
            what: &what,
        };
        let resp = self.call(&mut self.policy().budget(), &call).await?;
        self.check_digest_header(resp.headers(), &digest, &what)?;
        Ok(digest)
    }

    /// Offers to mount `digest` from `from`.
    async fn mount(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount, RegistryError> {
        let what = format!("a mount of blob {digest} from {from} into {repository}");
        let mut url = self.url_in(repository, "blobs/uploads/").await?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let call = Call {
            method: Method::POST,
            url,
            scope: Scope::mount(repository, from),
            headers: HeaderMap::new(),
            body: Some(Bytes::new()),
            what: &what,
        };
        match self.call(&mut self.policy().budget(), &call).await {
            Ok(resp) if resp.status() == StatusCode::CREATED => {
                self.check_digest_header(resp.headers(), digest, &what)?;
                debug!(%digest, from, repository, "mounted");
                Ok(Mount::Mounted)
            }
            Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                debug!(%digest, from, "not mounted; the registry opened an upload instead");
                Ok(Mount::Started(self.session_from(&resp, &what)?))
            }
            Ok(resp) => {
                debug!(status = %resp.status(), "unexpected answer to a mount");
                Ok(Mount::Refused)
            }
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                debug!(error = %e, "not mounted");
                Ok(Mount::Refused)
            }
        }
    }

    /// Opens an upload session (`POST /v2/<repo>/blobs/uploads/`).
    async fn start_upload(&self, repository: &str, what: &str) -> Result<Session, RegistryError> {
        let call = Call {
            method: Method::POST,
            url: self.url_in(repository, "blobs/uploads/").await?,
            scope: Scope::push(repository),
            headers: HeaderMap::new(),
            body: Some(Bytes::new()),
            what,
        };
        let resp = self.call(&mut self.policy().budget(), &call).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.protocol(format!(
                "{} answered {} to the start of an upload of {what}, not 202 Accepted",
                self.name(),
                resp.status()
            )));
        }
        self.session_from(&resp, what)
    }

    /// The session a `202` opened: its `Location` (required) and `Range`.
    fn session_from(&self, resp: &Response, what: &str) -> Result<Session, RegistryError> {
        let url = self.location(resp, what)?.ok_or_else(|| {
            self.protocol(format!("the upload session for {what} has no Location"))
        })?;
        Ok(Session {
            url,
            offset: held(resp.headers()).unwrap_or(0),
            history: History::Fresh,
        })
    }

    /// The upload URL an answer names, checked; `None` without a `Location`.
    fn location(&self, resp: &Response, what: &str) -> Result<Option<Url>, RegistryError> {
        let Some(value) = resp.headers().get(LOCATION) else {
            return Ok(None);
        };
        let value = value.to_str().map_err(|_| {
            self.protocol(format!("the upload Location for {what} is not ASCII text"))
        })?;
        let base = self.base_url()?;
        upload_location(base, resp.url(), value)
            .map(Some)
            .map_err(|detail| self.protocol(format!("{detail} (upload of {what})")))
    }

    /// Checks `Docker-Content-Digest`, when the registry sends one.
    fn check_digest_header(
        &self,
        headers: &HeaderMap,
        expected: &Digest,
        what: &str,
    ) -> Result<(), RegistryError> {
        let Some(value) = headers.get(DIGEST_HEADER) else {
            return Ok(());
        };
        let stated = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<Digest>().ok());
        match stated {
            Some(d) if d == *expected => Ok(()),
            _ => Err(RegistryError::Mismatch {
                registry: self.name().to_string(),
                what: what.to_string(),
                detail: format!(
                    "its Docker-Content-Digest is {:?}, not {expected}",
                    escape_untrusted(&String::from_utf8_lossy(value.as_bytes()))
                ),
            }),
        }
    }

    /// Abandons an upload session (best effort: a failure changes nothing).
    async fn cancel(&self, repository: &str, what: &str, session: &Session) {
        let call = Call {
            method: Method::DELETE,
            url: session.url.clone(),
            scope: Scope::push(repository),
            headers: HeaderMap::new(),
            body: None,
            what,
        };
        match self
            .call_once(&call, reqwest::Body::from(Bytes::new()))
            .await
        {
            Ok(resp) => debug!(status = %resp.status(), "upload session cancelled"),
            Err(e) => debug!(error = %e, "could not cancel the upload session"),
        }
    }

    fn source_error(&self, repository: &str, what: &str, problem: SourceProblem) -> RegistryError {
        RegistryError::UploadSource {
            registry: self.name().to_string(),
            repository: repository.to_string(),
            what: what.to_string(),
            problem: Box::new(problem),
        }
    }
}

/// Whether the credentials may be renewed after a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    /// Not renewed since the last progress.
    Allowed,
    Spent,
}

/// What to do after one request of an upload.
enum Next {
    /// The blob is in the repository.
    Committed,
    /// The registry took the bytes; it holds what `Session` says.
    At(Session),
    /// The registry does not take chunks: the rest in one `PUT`, from
    /// where it says it stands.
    Unchunked,
    /// The request broke in a way worth another try: after the wait the
    /// budget allows, ask where the registry stands.
    Broken {
        error: RegistryError,
        retry_after: Option<Duration>,
    },
    /// Credentials were renewed after a 401: ask where it stands, go on.
    Renewed,
    /// The session is gone, or holds other bytes than were sent: a new one,
    /// sent this way.
    Restart(Mode),
}

/// One blob's upload, from an open session to the committed blob.
struct Upload<'r> {
    registry: &'r Registry,
    repository: &'r str,
    digest: &'r Digest,
    size: u64,
    chunk: u64,
    mode: Mode,
    feed: Feed,
    /// Failures without progress.
    budget: Budget,
    /// Sessions opened after the first.
    restarts: u32,
    renewal: Renewal,
    /// `blob sha256:...`, for messages.
    what: String,
}

impl Upload<'_> {
    /// Sends the blob; returns the bytes handed to connections.
    async fn run(mut self, first: Session) -> Result<u64, RegistryError> {
        let mut session = self.checked(first)?;
        loop {
            let step = match self.mode {
                Mode::Chunked if session.offset < self.size => self.patch(&session).await,
                _ => self.put(&session).await,
            };
            let next = match step {
                Ok(next) => next,
                Err(e) => {
                    if let RegistryError::UploadSource { .. } = e {
                        self.registry
                            .cancel(self.repository, &self.what, &session)
                            .await;
                    }
                    return Err(e);
                }
            };
            let resumed = match next {
                Next::Committed => return Ok(self.feed.sent()),
                Next::At(next) => Some(self.checked(next)?),
                Next::Unchunked => {
                    debug!(digest = %self.digest, "the registry does not take chunks; sending the rest in one PUT");
                    self.mode = Mode::Monolithic;
                    self.resume(session).await?
                }
                Next::Broken { error, retry_after } => {
                    self.pause(error, retry_after).await?;
                    self.resume(session).await?
                }
                Next::Renewed => self.resume(session).await?,
                Next::Restart(mode) => {
                    self.mode = mode;
                    None
                }
            };
            session = match resumed {
                Some(session) => session,
                // A commit whose answer was lost leaves the blob there.
                None if self.arrived().await? => return Ok(self.feed.sent()),
                None => self.restart().await?,
            };
        }
    }

    /// One chunk: `PATCH` with `Content-Range`.
    async fn patch(&mut self, session: &Session) -> Result<Next, RegistryError> {
        let from = session.offset;
        let to = from.saturating_add(self.chunk).min(self.size);
        let mut headers = body_headers(to - from);
        headers.insert(
            CONTENT_RANGE,
            HeaderValue::from_str(&content_range(from, to)).expect("digits and a dash"),
        );
        let resp = match self
            .send(Method::PATCH, session.url.clone(), headers, from, to)
            .await?
        {
            Ok(resp) => resp,
            Err(error) => {
                return Ok(Next::Broken {
                    error,
                    retry_after: None,
                });
            }
        };
        let status = resp.status();
        if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
            let url = self
                .registry
                .location(&resp, &self.what)?
                .unwrap_or_else(|| session.url.clone());
            let offset = held(resp.headers()).unwrap_or(to);
            if offset > to {
                return Err(self.registry.protocol(format!(
                    "after a chunk ending at byte {to} of {}, the registry says it holds {offset} bytes",
                    self.what
                )));
            }
            if offset <= from {
                return Ok(Next::Unchunked);
            }
            self.budget.progressed();
            self.renewal = Renewal::Allowed;
            let history = History::Used;
            return Ok(Next::At(Session {
                url,
                offset,
                history,
            }));
        }
        if matches!(
            status,
            StatusCode::RANGE_NOT_SATISFIABLE
                | StatusCode::BAD_REQUEST
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
                | StatusCode::NOT_IMPLEMENTED
        ) {
            debug!(%status, "a chunk refused");
            return Ok(Next::Unchunked);
        }
        self.failed(resp).await
    }

    /// The rest of the blob (possibly nothing) and the digest: `PUT
    /// ?digest=`, which commits.
    async fn put(&mut self, session: &Session) -> Result<Next, RegistryError> {
        let from = session.offset;
        if from == self.size {
            // Nothing left to send: the source must have been the blob.
            if let Err(problem) = self.feed.verify().await {
                let what = &self.what;
                return Err(self.registry.source_error(self.repository, what, problem));
            }
        }
        let mut url = session.url.clone();
        url.query_pairs_mut()
            .append_pair("digest", &self.digest.to_string());
        let headers = body_headers(self.size - from);
        let resp = match self
            .send(Method::PUT, url, headers, from, self.size)
            .await?
        {
            Ok(resp) => resp,
            Err(error) => {
                return Ok(Next::Broken {
                    error,
                    retry_after: None,
                });
            }
        };
        let status = resp.status();
        if matches!(
            status,
            StatusCode::CREATED | StatusCode::OK | StatusCode::NO_CONTENT
        ) {
            self.registry
                .check_digest_header(resp.headers(), self.digest, &self.what)?;
            return Ok(Next::Committed);
        }
        if status == StatusCode::BAD_REQUEST && session.history == History::Used {
            // The source checked out, so the session holds other bytes than
            // were meant (chunks put together wrongly): once more, whole.
            warn!(
                "{} refused the upload of {} put together from pieces; sending it again in one piece",
                self.registry.name(),
                self.what
            );
            return Ok(Next::Restart(Mode::Monolithic));
        }
        self.failed(resp).await
    }

    /// Sends `from..to` of the blob once. `Ok(Err(_))`: a failure worth
    /// resuming after; `Err(_)`: a final one (the source's included).
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        from: u64,
        to: u64,
    ) -> Result<Result<Response, RegistryError>, RegistryError> {
        let call = Call {
            method,
            url,
            scope: Scope::push(self.repository),
            headers,
            body: None,
            what: &self.what,
        };
        let counter = self.feed.sent_counter();
        let complete_at = counter.load(Ordering::Relaxed) + (to - from);
        let sending = self.registry.call_once(
            &call,
            self.feed.body(from, to, self.registry.shared_rate_limit()),
        );
        let result = tokio::select! {
            result = sending => result,
            () = stalled(self.registry.policy(), counter, complete_at) => {
                Err(RegistryError::UploadStalled {
                    registry: self.registry.name().to_string(),
                    what: self.what.clone(),
                    bytes: LOW_SPEED_BYTES,
                    seconds: self.registry.policy().stall.as_secs(),
                })
            }
        };
        if let Some(problem) = self.feed.take_problem() {
            let what = &self.what;
            return Err(self.registry.source_error(self.repository, what, problem));
        }
        match result {
            Ok(resp) => Ok(Ok(resp)),
            Err(e) if e.is_transient() => Ok(Err(e)),
            Err(e) => Err(e),
        }
    }

    /// An answer that is neither progress nor a refusal of chunks.
    async fn failed(&mut self, resp: Response) -> Result<Next, RegistryError> {
        let status = resp.status();
        let scope = Scope::push(self.repository);
        if status == StatusCode::UNAUTHORIZED
            && self.renewal == Renewal::Allowed
            && self.registry.renew_after_401(&scope, resp.headers()).await
        {
            self.renewal = Renewal::Spent;
            return Ok(Next::Renewed);
        }
        if status == StatusCode::NOT_FOUND {
            debug!(digest = %self.digest, "the upload session is gone");
            return Ok(Next::Restart(self.mode));
        }
        let attempts = self.budget.failures() + 1;
        if retry::status_is_retryable(status) {
            let retry_after = retry::retry_after(resp.headers());
            let error = self
                .registry
                .refusal(resp, &scope, &self.what, attempts)
                .await;
            return Ok(Next::Broken { error, retry_after });
        }
        Err(self
            .registry
            .refusal(resp, &scope, &self.what, attempts)
            .await)
    }

    /// Waits as the budget allows after a broken request, or gives up.
    async fn pause(
        &mut self,
        error: RegistryError,
        retry_after: Option<Duration>,
    ) -> Result<(), RegistryError> {
        match self.budget.failed(&error, retry_after) {
            Some(wait) => {
                warn!(
                    "{error}; asking where the upload of {} stands in {:.1} s",
                    self.what,
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
                Ok(())
            }
            None => Err(error),
        }
    }

    /// Asks the registry how much of the upload it holds (`GET` on the
    /// upload URL); `None` when the session is gone. A registry that cannot
    /// say is taken at its last word.
    async fn resume(&mut self, session: Session) -> Result<Option<Session>, RegistryError> {
        let call = Call {
            method: Method::GET,
            url: session.url.clone(),
            scope: Scope::push(self.repository),
            headers: HeaderMap::new(),
            body: None,
            what: &self.what,
        };
        let registry = self.registry;
        match registry.call(&mut registry.policy().budget(), &call).await {
            Ok(resp) => {
                let url = registry
                    .location(&resp, &self.what)?
                    .unwrap_or_else(|| session.url.clone());
                let offset = held(resp.headers()).unwrap_or(session.offset);
                debug!(digest = %self.digest, offset, "resuming the upload where the registry stands");
                let history = History::Used;
                self.checked(Session {
                    url,
                    offset,
                    history,
                })
                .map(Some)
            }
            Err(RegistryError::NotFound { .. }) => {
                debug!(digest = %self.digest, "the upload session is gone");
                Ok(None)
            }
            Err(e @ RegistryError::Status { .. }) if !e.is_transient() => {
                debug!(error = %e, "no upload status; going on from the last offset confirmed");
                let history = History::Used;
                Ok(Some(Session { history, ..session }))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the blob is in the repository after all (a commit whose
    /// answer was lost).
    async fn arrived(&self) -> Result<bool, RegistryError> {
        self.registry
            .has_blob(self.repository, self.digest, self.size)
            .await
    }

    /// A new session, from byte 0.
    async fn restart(&mut self) -> Result<Session, RegistryError> {
        self.restarts += 1;
        if self.restarts > self.registry.policy().attempts.max(1) {
            return Err(RegistryError::Restarts {
                registry: self.registry.name().to_string(),
                what: format!("the upload of {} to {}", self.what, self.repository),
                times: self.restarts - 1,
            });
        }
        warn!(
            "starting the upload of {} to {} over",
            self.what, self.repository
        );
        let session = self
            .registry
            .start_upload(self.repository, &self.what)
            .await?;
        self.checked(session)
    }

    /// A session whose offset is within the blob.
    fn checked(&self, session: Session) -> Result<Session, RegistryError> {
        if session.offset > self.size {
            return Err(self.registry.protocol(format!(
                "the registry says it holds {} bytes of {}, which has {}",
                session.offset, self.what, self.size
            )));
        }
        Ok(session)
    }
}

/// Resolves when fewer than [`LOW_SPEED_BYTES`] went out in a stall window
/// while the body (complete once `counter` reaches `complete_at`) was still
/// being sent, or when no answer began within `--timeout` once it was all
/// handed to the connection.
async fn stalled(policy: RetryPolicy, counter: Arc<AtomicU64>, complete_at: u64) {
    let mut watch = policy.watch();
    let mut last = counter.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(watch.remaining().max(Duration::from_millis(10))).await;
        let now = counter.load(Ordering::Relaxed);
        if now >= complete_at {
            tokio::time::sleep(policy.stall).await;
            return;
        }
        if watch.record(now - last) {
            return;
        }
        last = now;
    }
}

/// The headers of a request carrying `len` bytes of a blob.
fn body_headers(len: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers
}

/// `Content-Range` of a chunk `from..to` (to > from), as distribution
/// writes it: `first-last`, inclusive, without a unit.
fn content_range(from: u64, to: u64) -> String {
    format!("{from}-{}", to - 1)
}

/// The repositories worth offering a mount from: valid names other than
/// the target, each once, at most [`MAX_MOUNT_SOURCES`].
fn mount_sources<'a>(repository: &str, from: &'a [String]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for f in from {
        if f != repository && valid_repository(f) && !out.contains(&f.as_str()) {
            out.push(f);
        } else {
            debug!(from = %escape_untrusted(f), "not offered as a mount source");
        }
    }
    out.truncate(MAX_MOUNT_SOURCES);
    out
}

/// How many bytes an upload's `Range` header says the registry holds.
fn held(headers: &HeaderMap) -> Option<u64> {
    headers.get(RANGE)?.to_str().ok().and_then(held_bytes)
}

/// Reads `Range: 0-N` (or `bytes=0-N`) of an upload: N+1 bytes held. `0-0`
/// is read as none (registries write it for an empty upload, and also for
/// one byte; resending one byte is the safe side). `None` for anything
/// else: a start other than 0, signs, an end that overflows, garbage.
fn held_bytes(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (start, end) = v.split_once('-')?;
    let end = end.trim();
    if start.trim() != "0" || end.is_empty() || !end.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match end.parse::<u64>().ok()? {
        0 => Some(0),
        n => n.checked_add(1),
    }
}

/// Resolves an upload `Location` against the URL it came with, and checks
/// it: bounded, http(s), no user information, not plain HTTP for a
/// registry reached over HTTPS. Whether credentials go there is decided
/// per request (the registry's own origin only).
fn upload_location(base: &Url, current: &Url, value: &str) -> Result<Url, String> {
    if value.len() > MAX_LOCATION {
        return Err(format!(
            "an upload Location of {} bytes (more than {MAX_LOCATION})",
            value.len()
        ));
    }
    let shown = || escape_untrusted(value);
    let mut url = current
        .join(value.trim())
        .map_err(|e| format!("upload Location {:?} is not a URL: {e}", shown()))?;
    match url.scheme() {
        "https" => {}
        "http" if base.scheme() == "http" => {}
        "http" => {
            return Err(format!(
                "upload Location {:?} is plain HTTP although the registry uses HTTPS",
                shown()
            ));
        }
        _ => return Err(format!("upload Location {:?} is not http(s)", shown())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "upload Location {:?} carries user information",
            shown()
        ));
    }
    url.set_fragment(None);
    Ok(url)
}

/// A header holding a decimal number.
fn header_u64(value: &HeaderValue) -> Option<u64> {
    let v = value.to_str().ok()?.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers_say_what_the_registry_holds() {
        assert_eq!(held_bytes("0-0"), Some(0));
        assert_eq!(held_bytes("0-1023"), Some(1024));
        assert_eq!(held_bytes(" bytes=0-99 "), Some(100));
        assert_eq!(held_bytes("0-18446744073709551614"), Some(u64::MAX));
        for hostile in [
            "",
            "-",
            "0-",
            "-5",
            "5-10",
            "1-0",
            "0--1",
            "0-+5",
            "0-1e9",
            "0-18446744073709551615",
            "0-99999999999999999999999",
            "0-5,7-9",
            "0-5/10",
            "bytes 0-5",
            "0-٣",
            "\u{0}0-5",
        ] {
            assert_eq!(held_bytes(hostile), None, "{hostile:?}");
        }
    }

    #[test]
    fn upload_locations_are_resolved_and_checked() {
        let u = |s: &str| Url::parse(s).unwrap();
        let base = u("https://r.io/");
        let current = u("https://r.io/v2/a/blobs/uploads/");
        assert_eq!(
            upload_location(&base, &current, "/v2/a/blobs/uploads/x?_state=s").unwrap(),
            u("https://r.io/v2/a/blobs/uploads/x?_state=s")
        );
        assert_eq!(
            upload_location(&base, &current, "x").unwrap(),
            u("https://r.io/v2/a/blobs/uploads/x")
        );
        let elsewhere = upload_location(&base, &current, "https://s3.example/up?sig=1").unwrap();
        assert_eq!(elsewhere.host_str(), Some("s3.example"));
        assert!(
            !super::super::client::is_own_origin(&elsewhere, &base),
            "another origin gets no credentials"
        );
        for hostile in [
            "http://r.io/v2/a/blobs/uploads/x",
            "ftp://r.io/x",
            "file:///etc/passwd",
            "https://user:pass@r.io/x",
            "https://user@r.io/x",
            "https://[::1",
            "javascript:alert(1)",
        ] {
            assert!(
                upload_location(&base, &current, hostile).is_err(),
                "{hostile}"
            );
        }
        let long = format!("/{}", "a".repeat(MAX_LOCATION));
        assert!(upload_location(&base, &current, &long).is_err());
        let plain = u("http://127.0.0.1:5000/");
        let url = upload_location(&plain, &plain, "http://127.0.0.1:5000/v2/a/u#frag").unwrap();
        assert_eq!(url.fragment(), None);
    }

    #[test]
    fn chunks_and_mount_sources() {
        assert_eq!(content_range(0, 16), "0-15");
        assert_eq!(content_range(16, 17), "16-16");
        let from = [
            "team/app".to_string(),
            "library/base".to_string(),
            "library/base".to_string(),
            "Bad/Name".to_string(),
            "a b:push".to_string(),
            "../x".to_string(),
            "other".to_string(),
        ];
        assert_eq!(mount_sources("team/app", &from), ["library/base", "other"]);
        let many: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
        assert_eq!(mount_sources("x", &many).len(), MAX_MOUNT_SOURCES);
    }

    #[test]
    fn content_lengths_are_digits_only() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(header_u64(&v("42")), Some(42));
        assert_eq!(header_u64(&v(" 7 ")), Some(7));
        for bad in ["", "-1", "+1", "1.0", "99999999999999999999999", "0x10"] {
            assert_eq!(header_u64(&v(bad)), None, "{bad}");
        }
    }
}
