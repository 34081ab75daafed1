//! One registry's endpoints: the `/v2/` ping (which picks HTTPS or, for
//! loopback and insecure registries, plain HTTP, and learns how to authenticate),
//! manifests, and blob requests (with `Range`, and foreign layers' URLs).
//!
//! Every request goes through [`Registry::send`], which adds authentication,
//! answers challenges (only those from the registry's own origin) and
//! retries transient failures under the one [`RetryPolicy`]. A request
//! whose answer does not begin within `--timeout` counts as silent.

use std::sync::Arc;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::{Mutex, OnceCell};
use tracing::{debug, warn};
use url::Url;

use super::auth::{self, AuthState, Challenge, Credentials};
use super::body::{self, BlobBody, Span};
use super::error::{self, RegistryError};
use super::rate::RateLimit;
use super::retry::{self, Budget, LOW_SPEED_BYTES, RetryPolicy};
use super::transport::{self, Clients, TransportOptions, classify_send_error, error_chain};
use crate::digest::Digest;
use crate::media_type;
use crate::reference::is_loopback_host;

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

    fn protocol(&self, detail: String) -> RegistryError {
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
        let resp = self
            .with_retries(budget, "/v2/", || self.http.registry.get(url.clone()))
            .await?;
        debug!(status = %resp.status(), "ping answered");
        if resp.status() == StatusCode::UNAUTHORIZED && is_own_origin(resp.url(), base) {
            self.remember_challenge(resp.headers()).await;
        }
        Ok(())
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

    pub(super) fn unauthorized(&self, repository: &str) -> RegistryError {
        if let Some(c) = &self.credentials {
            RegistryError::AuthRejected {
                registry: self.name.clone(),
                repository: repository.to_string(),
                from: c.source.clone(),
            }
        } else {
            RegistryError::AuthRequired {
                registry: self.name.clone(),
                repository: repository.to_string(),
            }
        }
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
        let mut budget = self.policy().budget();
        self.send_with(&mut budget, method, repository, path, headers, what)
            .await
    }

    /// [`send`](Self::send) spending `budget`, so that a caller who also
    /// reads the body retries both under one budget.
    async fn send_with(
        &self,
        budget: &mut Budget,
        method: Method,
        repository: &str,
        path: &str,
        headers: HeaderMap,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let base = self.base().await?;
        let url = base
            .join(&format!("v2/{repository}/{path}"))
            .map_err(|e| self.protocol(e.to_string()))?;
        let mut reauthenticated = false;
        loop {
            let authorization = self.authorization(repository).await?;
            debug!(%method, %url, "request");
            let resp = self
                .with_retries(budget, what, || {
                    let req = self
                        .http
                        .registry
                        .request(method.clone(), url.clone())
                        .headers(headers.clone());
                    match &authorization {
                        Some(a) => req.header(AUTHORIZATION, a),
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
                    what: what.to_string(),
                    origin: origin_of(resp.url()),
                    status,
                });
            }
            if status == StatusCode::UNAUTHORIZED {
                if !reauthenticated && self.renew_after_401(repository, resp.headers()).await {
                    reauthenticated = true;
                    continue;
                }
                return Err(self.unauthorized(repository));
            }
            return Err(self
                .status_error(resp, repository, what, budget.failures())
                .await);
        }
    }

    /// After a 401 from the registry: takes its challenge and the scopes it
    /// asks for, drops the token that failed, and says whether trying once
    /// more with fresh credentials can help.
    async fn renew_after_401(&self, repository: &str, headers: &HeaderMap) -> bool {
        let had_challenge = self.auth.lock().await.challenge.is_some();
        self.remember_challenge(headers).await;
        let mut state = self.auth.lock().await;
        let asked: Vec<String> = state
            .challenge
            .as_ref()
            .and_then(|c| c.param("scope"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        if !asked.is_empty() {
            state.extra_scopes.insert(repository.to_string(), asked);
        }
        let key = state.scopes(repository).join(" ");
        state.tokens.remove(&key);
        debug!(repository, "401: renewing the token");
        match state.challenge.as_ref().map(|c| c.scheme.as_str()) {
            Some("bearer") => true,
            Some("basic") => self.credentials.is_some() && !had_challenge,
            _ => false,
        }
    }

    async fn status_error(
        &self,
        resp: Response,
        repository: &str,
        what: &str,
        attempts: u32,
    ) -> RegistryError {
        let status = resp.status();
        let url = resp.url().clone();
        let headers = resp.headers().clone();
        let body = body::read_small(self, resp, MAX_ERROR_BODY, "an error body")
            .await
            .unwrap_or_default();
        let envelope = error::envelope_message(&body);
        let detail = || {
            envelope
                .as_ref()
                .map(|(c, m)| format!(": {c} {m}"))
                .unwrap_or_default()
        };
        match status {
            StatusCode::PROXY_AUTHENTICATION_REQUIRED => RegistryError::ProxyAuth {
                registry: self.name.clone(),
                proxy: transport::proxy_for_url(&self.opts, &url)
                    .unwrap_or_else(|| "in use".to_string()),
            },
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry: self.name.clone(),
                repository: repository.to_string(),
                detail: detail(),
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
                detail: detail(),
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
        let path = format!("manifests/{reference}");
        let mut budget = self.policy().budget();
        loop {
            let resp = self
                .send_with(
                    &mut budget,
                    Method::GET,
                    repository,
                    &path,
                    headers.clone(),
                    &what,
                )
                .await?;
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match body::read_small(self, resp, MAX_MANIFEST_BYTES, &what).await {
                Ok(bytes) => {
                    return Ok(Manifest {
                        digest: Digest::of(&bytes),
                        bytes,
                        content_type,
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
fn is_own_origin(url: &Url, base: &Url) -> bool {
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
