//! One registry's endpoints: the `/v2/` ping (which picks HTTPS or, for
//! loopback and insecure registries, plain HTTP, and learns how to authenticate),
//! manifests, and blob requests (with `Range`, and foreign layers' URLs).
//!
//! Every request goes through `Registry::call` (what [`Registry::send`]
//! builds), which adds authentication for the permission the request needs
//! (pull, or push for uploads), answers challenges (only those from the
//! registry's own origin) and retries transient failures under the one
//! [`RetryPolicy`]; or, for a streamed upload body that cannot be sent
//! twice, through `Registry::call_once`, whose caller (`upload.rs`) resumes.
//! Credentials go only to the registry's own origin. The errors a user sees
//! for refused requests are made here (`refusal`): for a push, a 401 after
//! fresh credentials or a 403 says the account may pull but not push, and a
//! 401 without credentials says to log in.
//! A request whose answer does not begin within `--timeout` counts as silent.

use std::sync::Arc;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::{Mutex, OnceCell};
use tracing::{debug, warn};
use url::Url;

use super::auth::{self, Access, AuthState, Challenge, Credentials, Scope, Secret};
use super::body::{self, BlobBody, Span};
use super::error::{self, RegistryError};
use super::rate::RateLimit;
use super::retry::{self, Budget, LOW_SPEED_BYTES, RetryPolicy};
use super::transport::{self, Clients, TransportOptions, classify_send_error, error_chain};
use crate::digest::Digest;
use crate::media_type;
use crate::reference::is_loopback_host;

/// The most connections opened to a registry at its first contact.
const OPENED_AHEAD: usize = 8;
/// Manifests larger than this are refused.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Error bodies are read up to this much (for the error envelope).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A client for one registry.
pub struct Registry {
    /// The registry as users name it (`docker.io`).
    name: String,
    /// Where its API lives (`registry-1.docker.io`).
    host: String,
    pub(super) http: Clients,
    opts: TransportOptions,
    pub(super) credentials: Option<Credentials>,
    /// `http` or `https` when the scheme is fixed (a mirror written with one).
    scheme: Option<&'static str>,
    trust: Trust,
    base: OnceCell<Url>,
    pub(super) auth: Mutex<AuthState>,
    /// The run's cap on the total rate, shared with every other client.
    rate: Option<Arc<RateLimit>>,
}

/// How far a registry is trusted to prove who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// HTTPS with a verified certificate (plain HTTP only for loopback
    /// registries, `--plain-http`, or a mirror written with `http://`).
    #[default]
    Verified,
    /// Marked insecure by the user's settings (`insecure = true` in
    /// registries.conf, `insecure-registries` in daemon.json): HTTPS without
    /// verifying the certificate, else plain HTTP.
    Insecure,
}

/// One request: where it goes, the permission it needs, and what it
/// carries. A `body` here can be sent again; streamed bodies go to
/// [`Registry::call_once`].
pub(super) struct Call<'a> {
    pub method: Method,
    pub url: Url,
    pub scope: Scope<'a>,
    pub headers: HeaderMap,
    pub body: Option<bytes::Bytes>,
    /// The object, for messages (`blob sha256:... of library/x`).
    pub what: &'a str,
}

/// A small document as the registry answered it: where the answer came
/// from (after redirects), its headers and its body.
pub(super) struct Small {
    pub url: Url,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The sha256 of `bytes`.
    pub digest: Digest,
}

impl Registry {
    pub fn new(
        name: &str,
        host: &str,
        http: Clients,
        opts: TransportOptions,
        credentials: Option<Credentials>,
    ) -> Registry {
        Registry {
            name: name.to_string(),
            host: host.to_string(),
            http,
            opts,
            credentials,
            scheme: None,
            trust: Trust::Verified,
            base: OnceCell::new(),
            auth: Mutex::new(AuthState::default()),
            rate: None,
        }
    }

    /// The run's cap on the total rate, for bodies this client sends.
    pub(super) fn shared_rate_limit(&self) -> Option<Arc<RateLimit>> {
        self.rate.clone()
    }

    /// Puts every body this client reads under `rate` (the run's one
    /// [`RateLimit`], shared by all its clients).
    pub fn with_rate_limit(mut self, rate: Option<Arc<RateLimit>>) -> Registry {
        self.rate = rate;
        self
    }

    /// The rate limit bodies pass under, if any.
    pub(super) fn rate_limit(&self) -> Option<&RateLimit> {
        self.rate.as_deref()
    }

    /// Fixes the scheme (`http` or `https`) instead of choosing it.
    pub fn with_scheme(mut self, scheme: Option<&'static str>) -> Registry {
        self.scheme = scheme;
        self
    }

    /// Marks the registry insecure (or not): an insecure one is reached
    /// over HTTPS without verification, else plain HTTP, and may name a
    /// plain-HTTP token realm. Its clients must not verify certificates.
    pub fn with_trust(mut self, trust: Trust) -> Registry {
        self.trust = trust;
        if trust == Trust::Insecure {
            self.opts.insecure = true;
        }
        self
    }

    /// Reaches the registry (the `/v2/` ping, once per client): an error
    /// when it cannot be reached at all.
    pub async fn reach(&self) -> Result<(), RegistryError> {
        self.base().await.map(drop)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How this registry is reached.
    pub fn transport(&self) -> &TransportOptions {
        &self.opts
    }

    /// The retry policy every request to this registry follows.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.opts.retries.max(1),
            stall: self.opts.timeout,
        }
    }

    /// `scheme://host`, found by pinging `/v2/` once.
    pub(super) async fn base(&self) -> Result<&Url, RegistryError> {
        self.base.get_or_try_init(|| self.ping()).await
    }

    /// `scheme://host` once the registry was reached (every answer in hand
    /// comes after that).
    pub(super) fn base_url(&self) -> Result<&Url, RegistryError> {
        self.base
            .get()
            .ok_or_else(|| self.protocol("the registry was not reached yet".into()))
    }

    pub(super) fn protocol(&self, detail: String) -> RegistryError {
        RegistryError::Protocol {
            registry: self.name.clone(),
            detail,
        }
    }

    /// Nothing arrived for `--timeout` while waiting on `what`.
    pub(super) fn silent(&self, what: &str) -> RegistryError {
        RegistryError::Timeout {
            registry: self.name.clone(),
            what: what.to_string(),
            seconds: self.opts.timeout.as_secs(),
        }
    }

    pub(super) fn too_slow(&self, what: &str, times: u32, at: String) -> RegistryError {
        RegistryError::TooSlow {
            registry: self.name.clone(),
            what: what.to_string(),
            bytes: LOW_SPEED_BYTES,
            seconds: self.opts.timeout.as_secs(),
            times,
            at,
        }
    }

    async fn ping(&self) -> Result<Url, RegistryError> {
        let schemes: &[&str] = if let Some(fixed) = &self.scheme {
            std::slice::from_ref(fixed)
        } else if self.opts.plain_http {
            &["http"]
        } else if is_loopback_host(&self.host) || self.trust == Trust::Insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last_err = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = Url::parse(&format!("{scheme}://{}/", self.host))
                .map_err(|e| self.protocol(format!("bad registry address {}: {e}", self.host)))?;
            let url = base.join("v2/").map_err(|e| self.protocol(e.to_string()))?;
            // A server that does not speak TLS gets plain HTTP at once; one
            // whose certificate fails verification does not.
            let fallback_left = i + 1 < schemes.len();
            let mut budget = if fallback_left {
                RetryPolicy {
                    attempts: 1,
                    ..self.policy()
                }
                .budget()
            } else {
                self.policy().budget()
            };
            match self.ping_at(&base, &url, &mut budget).await {
                Ok(()) => return Ok(base),
                Err(e @ RegistryError::Tls { .. }) if self.trust == Trust::Verified => {
                    return Err(e);
                }
                Err(e) if fallback_left => {
                    debug!(error = %e, "HTTPS failed on a loopback or insecure registry; trying HTTP");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| RegistryError::Connect {
            registry: self.name.clone(),
            detail: "no way to reach it".into(),
        }))
    }

    /// One `/v2/` ping: any answer means the registry is there; a 401 from
    /// it tells how to authenticate.
    async fn ping_at(
        &self,
        base: &Url,
        url: &Url,
        budget: &mut Budget,
    ) -> Result<(), RegistryError> {
        debug!(%url, "ping");
        self.open_ahead(url).await;
        let resp = self
            .with_retries(budget, "/v2/", || self.http.registry.get(url.clone()))
            .await?;
        debug!(status = %resp.status(), "ping answered");
        if resp.status() == StatusCode::UNAUTHORIZED && is_own_origin(resp.url(), base) {
            self.remember_challenge(resp.headers()).await;
        }
        Ok(())
    }

    /// Opens the other connections the requests after the ping will want
    /// (`-j` in all, at most [`OPENED_AHEAD`]) while the ping is on its
    /// way, each with a `/v2/` request of its own, instead of one round
    /// trip later when they are needed. Their requests are polled once
    /// here, before the ping is sent, so each finds no free connection and
    /// opens one; then they go on in a task of their own, so the ping never
    /// waits for them. Their answers are read (a bounded few bytes) and
    /// dropped, which leaves each connection idle in the client's pool; a
    /// failure costs nothing but the connection.
    async fn open_ahead(&self, url: &Url) {
        let mut ahead = Box::pin(self.requests_ahead(url));
        let done =
            std::future::poll_fn(|cx| std::task::Poll::Ready(ahead.as_mut().poll(cx).is_ready()))
                .await;
        if !done {
            tokio::spawn(ahead);
        }
    }

    /// The requests of [`open_ahead`](Self::open_ahead).
    fn requests_ahead(&self, url: &Url) -> impl Future<Output = ()> + Send + use<> {
        let extra = self.opts.connections.clamp(1, OPENED_AHEAD) - 1;
        let timeout = self.opts.timeout;
        let requests = (0..extra).map(|_| {
            let request = self.http.registry.get(url.clone());
            async move {
                let drained = tokio::time::timeout(timeout, async {
                    let mut resp = request.send().await?;
                    let mut seen = 0;
                    while let Some(chunk) = resp.chunk().await? {
                        seen += chunk.len();
                        if seen > MAX_ERROR_BODY {
                            break;
                        }
                    }
                    Ok::<_, reqwest::Error>(())
                })
                .await;
                debug!(?drained, "a connection opened ahead");
            }
        });
        futures_util::FutureExt::map(
            futures_util::future::join_all(requests.collect::<Vec<_>>()),
            drop,
        )
    }

    /// Sends what `make` builds until the answer is not a transient
    /// failure, or the budget is spent: then the last answer (the caller
    /// reads its status) or the transport error. An answer that does not
    /// begin within `--timeout` is a failure like any other.
    pub(super) async fn with_retries(
        &self,
        budget: &mut Budget,
        what: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Response, RegistryError> {
        loop {
            let sent = match tokio::time::timeout(self.opts.timeout, make().send()).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => Err(classify_send_error(&self.name, what, &self.opts, &e)),
                Err(_) => Err(self.silent(what)),
            };
            let (err, wait) = match sent {
                Ok(resp) if retry::status_is_retryable(resp.status()) => {
                    let err = RegistryError::Status {
                        registry: self.name.clone(),
                        status: resp.status(),
                        url: strip_query(resp.url()),
                        detail: String::new(),
                    };
                    match budget.failed(&err, retry::retry_after(resp.headers())) {
                        Some(wait) => (err, wait),
                        None => return Ok(resp),
                    }
                }
                Ok(resp) => return Ok(resp),
                Err(err) => match budget.failed(&err, None) {
                    Some(wait) => (err, wait),
                    None => return Err(err),
                },
            };
            warn!("{err} ({what}); retrying in {:.1} s", wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes the challenge of a 401 from the registry's own origin.
    pub(super) async fn remember_challenge(&self, headers: &HeaderMap) {
        let challenges: Vec<Challenge> = headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(auth::parse_challenges)
            .collect();
        let chosen = challenges
            .iter()
            .find(|c| c.scheme == "bearer")
            .or_else(|| challenges.iter().find(|c| c.scheme == "basic"))
            .cloned();
        if let Some(c) = chosen {
            debug!(scheme = %c.scheme, realm = ?c.param("realm"), "auth challenge");
            self.auth.lock().await.challenge = Some(c);
        }
    }

    /// A 401 or 403 from a token server: the credentials (or their absence)
    /// are the problem.
    pub(super) fn credentials_refused(&self, scope: &Scope<'_>) -> RegistryError {
        let registry = self.name.clone();
        let repository = scope.repository.to_string();
        match (&self.credentials, scope.access) {
            (Some(c), _) => RegistryError::AuthRejected {
                registry,
                repository,
                from: c.source.clone(),
            },
            (None, Access::Pull) => RegistryError::AuthRequired {
                registry,
                repository,
            },
            (None, Access::Push) => RegistryError::PushAuthRequired {
                registry,
                repository,
            },
        }
    }

    /// The registry's last 401, after fresh credentials did not help. For
    /// a push with a token the token server granted for our credentials,
    /// the credentials were good: the account lacks push access.
    async fn unauthorized(&self, scope: &Scope<'_>) -> RegistryError {
        let bearer = self
            .auth
            .lock()
            .await
            .challenge
            .as_ref()
            .is_some_and(|c| c.scheme == "bearer");
        match &self.credentials {
            Some(c)
                if scope.access == Access::Push
                    && bearer
                    && !matches!(c.secret, Secret::RegistryToken(_)) =>
            {
                RegistryError::PushDenied {
                    registry: self.name.clone(),
                    repository: scope.repository.to_string(),
                    answer: format!("401, credentials from {}", c.source),
                }
            }
            _ => self.credentials_refused(scope),
        }
    }

    /// The URL of `path` below `/v2/<repository>/`.
    pub(super) async fn url_in(&self, repository: &str, path: &str) -> Result<Url, RegistryError> {
        self.base()
            .await?
            .join(&format!("v2/{repository}/{path}"))
            .map_err(|e| self.protocol(e.to_string()))
    }

    /// Sends a request for `path` (below `/v2/<repository>/`) with
    /// authentication and retries; returns a successful response or the
    /// error a user should see. `what` names the object for messages.
    pub async fn send(
        &self,
        method: Method,
        repository: &str,
        path: &str,
        headers: HeaderMap,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let call = Call {
            method,
            url: self.url_in(repository, path).await?,
            scope: Scope::pull(repository),
            headers,
            body: None,
            what,
        };
        self.call(&mut self.policy().budget(), &call).await
    }

    /// Sends `call` with authentication (only to the registry's own origin)
    /// and retries under `budget`, renewing credentials once after a 401;
    /// returns a successful response or the error a user should see.
    pub(super) async fn call(
        &self,
        budget: &mut Budget,
        call: &Call<'_>,
    ) -> Result<Response, RegistryError> {
        let base = self.base().await?;
        let own = is_own_origin(&call.url, base);
        let mut reauthenticated = false;
        loop {
            let authorization = match own {
                true => self.authorization(&call.scope).await?,
                false => None,
            };
            debug!(method = %call.method, url = %call.url, "request");
            let resp = self
                .with_retries(budget, call.what, || {
                    let req = self.request(call, authorization.as_deref());
                    match &call.body {
                        Some(body) => req.body(body.clone()),
                        None => req,
                    }
                })
                .await?;
            let status = resp.status();
            debug!(%status, "response");
            if status.is_success() {
                return Ok(resp);
            }
            if !is_own_origin(resp.url(), base) {
                // A redirect to a storage host that refuses: its challenge
                // is not ours to answer, nor its realm ours to trust.
                return Err(RegistryError::Redirected {
                    registry: self.name.clone(),
                    what: call.what.to_string(),
                    origin: origin_of(resp.url()),
                    status,
                });
            }
            if status == StatusCode::UNAUTHORIZED
                && !reauthenticated
                && self.renew_after_401(&call.scope, resp.headers()).await
            {
                reauthenticated = true;
                continue;
            }
            return Err(self
                .refusal(resp, &call.scope, call.what, budget.failures())
                .await);
        }
    }

    /// Sends `call` once with `body` (a stream that cannot be sent again),
    /// with authentication when it goes to the registry's own origin.
    /// Returns the answer whatever its status, or the transport failure;
    /// an answer from anywhere but `call.url` (a redirect) is an error.
    pub(super) async fn call_once(
        &self,
        call: &Call<'_>,
        body: reqwest::Body,
    ) -> Result<Response, RegistryError> {
        let base = self.base().await?;
        let authorization = match is_own_origin(&call.url, base) {
            true => self.authorization(&call.scope).await?,
            false => None,
        };
        debug!(method = %call.method, url = %strip_query(&call.url), "request with a body");
        let resp = self
            .request(call, authorization.as_deref())
            .body(body)
            .send()
            .await
            .map_err(|e| classify_send_error(&self.name, call.what, &self.opts, &e))?;
        debug!(status = %resp.status(), "response");
        if resp.url() != &call.url {
            return Err(self.protocol(format!(
                "{} was redirected to {}; uploads are not redirected",
                call.what,
                origin_of(resp.url())
            )));
        }
        Ok(resp)
    }

    fn request(&self, call: &Call<'_>, authorization: Option<&str>) -> reqwest::RequestBuilder {
        let req = self
            .http
            .registry
            .request(call.method.clone(), call.url.clone())
            .headers(call.headers.clone());
        match authorization {
            Some(a) => req.header(AUTHORIZATION, a),
            None => req,
        }
    }

    /// After a 401 from the registry: takes its challenge and the scopes it
    /// asks for, drops the token that failed, and says whether trying once
    /// more with fresh credentials can help.
    pub(super) async fn renew_after_401(&self, scope: &Scope<'_>, headers: &HeaderMap) -> bool {
        let had_challenge = self.auth.lock().await.challenge.is_some();
        self.remember_challenge(headers).await;
        let mut state = self.auth.lock().await;
        let asked: Vec<String> = state
            .challenge
            .as_ref()
            .and_then(|c| c.param("scope"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let before = state.scopes(scope).join(" ");
        if !asked.is_empty() {
            state.extra_scopes.insert(scope.key(), asked);
        }
        let after = state.scopes(scope).join(" ");
        state.tokens.remove(&before);
        state.tokens.remove(&after);
        debug!(repository = scope.repository, access = ?scope.access, "401: renewing the token");
        match state.challenge.as_ref().map(|c| c.scheme.as_str()) {
            Some("bearer") => true,
            Some("basic") => self.credentials.is_some() && !had_challenge,
            _ => false,
        }
    }

    /// The error a user should see for an answer that is not a success.
    /// `attempts`: how many tries it took (for rate limits).
    pub(super) async fn refusal(
        &self,
        resp: Response,
        scope: &Scope<'_>,
        what: &str,
        attempts: u32,
    ) -> RegistryError {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return self.unauthorized(scope).await;
        }
        let url = resp.url().clone();
        let headers = resp.headers().clone();
        let body = body::read_small(self, resp, MAX_ERROR_BODY, "an error body")
            .await
            .unwrap_or_default();
        let envelope = error::envelope_message(&body);
        let detail = envelope
            .as_ref()
            .map(|(c, m)| format!(": {c} {m}"))
            .unwrap_or_default();
        let repository = scope.repository.to_string();
        match status {
            StatusCode::PROXY_AUTHENTICATION_REQUIRED => RegistryError::ProxyAuth {
                registry: self.name.clone(),
                proxy: transport::proxy_for_url(&self.opts, &url)
                    .unwrap_or_else(|| "in use".to_string()),
            },
            StatusCode::FORBIDDEN if scope.access == Access::Push => match &self.credentials {
                Some(c) => RegistryError::PushDenied {
                    registry: self.name.clone(),
                    repository,
                    answer: format!("{}, credentials from {}{detail}", status.as_u16(), c.source),
                },
                None => RegistryError::PushAuthRequired {
                    registry: self.name.clone(),
                    repository,
                },
            },
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry: self.name.clone(),
                repository,
                detail,
            },
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                registry: self.name.clone(),
                what: match envelope.as_ref().map(|(c, _)| c.as_str()) {
                    Some("NAME_UNKNOWN") => format!("repository {repository}"),
                    _ => what.to_string(),
                },
            },
            StatusCode::TOO_MANY_REQUESTS => RegistryError::RateLimited {
                registry: self.name.clone(),
                quota: error::quota_note(&headers),
                attempts: attempts.max(1),
                wait: error::wait_note(retry::retry_after(&headers)),
            },
            _ => RegistryError::Status {
                registry: self.name.clone(),
                status,
                url: strip_query(&url),
                detail,
            },
        }
    }

    /// Fetches a manifest or index by tag or digest. The request and the
    /// reading of its body share one retry budget.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&media_type::manifest_accept_header())
                .expect("static Accept header is valid"),
        );
        let what = if reference.contains(':') {
            format!("manifest {reference} of repository {repository}")
        } else {
            format!("tag {reference} of repository {repository}")
        };
        let url = self
            .url_in(repository, &format!("manifests/{reference}"))
            .await?;
        let got = self
            .get_small(&url, repository, headers, &what, MAX_MANIFEST_BYTES)
            .await?;
        let content_type = got
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Manifest {
            digest: Digest::of(&got.bytes),
            bytes: got.bytes,
            content_type,
        })
    }

    /// A `GET` of a small document at `url` (a manifest, a page of tags),
    /// its body read whole up to `limit`. The request and the reading of its
    /// body share one retry budget.
    pub(super) async fn get_small(
        &self,
        url: &Url,
        repository: &str,
        headers: HeaderMap,
        what: &str,
        limit: usize,
    ) -> Result<Small, RegistryError> {
        let mut budget = self.policy().budget();
        loop {
            let call = Call {
                method: Method::GET,
                url: url.clone(),
                scope: Scope::pull(repository),
                headers: headers.clone(),
                body: None,
                what,
            };
            let resp = self.call(&mut budget, &call).await?;
            let answered = resp.url().clone();
            let head = resp.headers().clone();
            match body::read_small(self, resp, limit, what).await {
                Ok(bytes) => {
                    return Ok(Small {
                        url: answered,
                        headers: head,
                        bytes,
                    });
                }
                Err(e) => match budget.failed(&e, None) {
                    Some(wait) => {
                        warn!("{e}; retrying in {:.1} s", wait.as_secs_f64());
                        tokio::time::sleep(wait).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }

    /// The bytes of a blob in `span`, resumed across broken connections
    /// (see [`BlobBody`]). Foreign layers come from the descriptor's `urls`
    /// when the registry does not have them.
    pub fn blob_body<'a>(
        &'a self,
        repository: &'a str,
        digest: &'a Digest,
        urls: &'a [String],
        span: Span,
    ) -> BlobBody<'a> {
        BlobBody::new(self, repository, digest, urls, span)
    }

    /// One GET of a blob, with `range` if given; a blob the registry does
    /// not have is fetched from `urls` (foreign and non-distributable
    /// layers), in order, without the registry's credentials.
    pub(super) async fn blob_request(
        &self,
        repository: &str,
        digest: &Digest,
        range: Option<&str>,
        urls: &[String],
    ) -> Result<Response, RegistryError> {
        let mut headers = HeaderMap::new();
        if let Some(range) = range {
            headers.insert(
                RANGE,
                HeaderValue::from_str(range).expect("range header is ASCII"),
            );
        }
        let first = self
            .send(
                Method::GET,
                repository,
                &format!("blobs/{digest}"),
                headers,
                &format!("blob {digest} of {repository}"),
            )
            .await;
        let Err(RegistryError::NotFound { .. }) = &first else {
            return first;
        };
        if let Some(resp) = self.foreign_layer(urls, range).await {
            return Ok(resp);
        }
        match first {
            Err(RegistryError::NotFound { registry, what }) if !urls.is_empty() => {
                Err(RegistryError::NotFound {
                    registry,
                    what: format!("{what} (nor at its URLs {})", urls.join(", ")),
                })
            }
            other => other,
        }
    }

    /// The first of a foreign layer's URLs that answers with success.
    async fn foreign_layer(&self, urls: &[String], range: Option<&str>) -> Option<Response> {
        for raw in urls {
            let Ok(url) = Url::parse(raw) else {
                debug!(url = raw, "skipping a layer URL that does not parse");
                continue;
            };
            if !matches!(url.scheme(), "http" | "https") {
                continue;
            }
            let mut req = self.http.registry.get(url.clone());
            if let Some(range) = range {
                req = req.header(RANGE, range);
            }
            debug!(%url, "fetching a foreign layer from its URL");
            match tokio::time::timeout(self.opts.timeout, req.send()).await {
                Ok(Ok(resp)) if resp.status().is_success() => return Some(resp),
                Ok(Ok(resp)) => debug!(%url, status = %resp.status(), "layer URL failed"),
                Ok(Err(e)) => debug!(%url, error = %error_chain(&e), "layer URL failed"),
                Err(_) => debug!(%url, "layer URL sent no answer in time"),
            }
        }
        None
    }
}

/// Whether two URLs share scheme, host and port.
pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether a response from `url` is the registry at `base` itself: the same
/// origin, or the same host upgraded from plain HTTP to HTTPS on its default
/// port (a registry reached over HTTP that redirects to HTTPS).
pub(super) fn is_own_origin(url: &Url, base: &Url) -> bool {
    same_origin(url, base)
        || (base.scheme() == "http"
            && url.scheme() == "https"
            && url.host_str() == base.host_str()
            && url.port().is_none()
            && base.port().is_none())
}

/// `scheme://host[:port]` of a URL, for messages.
pub(super) fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A URL without its query, for messages.
pub(super) fn strip_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(
            &u("https://r.io/v2/"),
            &u("https://r.io:443/x")
        ));
        assert!(!same_origin(&u("https://r.io/"), &u("http://r.io/")));
        assert!(!same_origin(&u("https://r.io/"), &u("https://s3.r.io/")));
        assert!(!same_origin(
            &u("http://127.0.0.1:5000/"),
            &u("http://127.0.0.1:5001/")
        ));
        assert_eq!(
            origin_of(&u("https://s3.example/a?b")),
            "https://s3.example"
        );
    }
}
