//! One registry's endpoints: the `/v2/` ping (which picks HTTPS or, for
//! loopback registries, plain HTTP, and learns how to authenticate), manifests
//! and blobs (with `Range`). Every request goes through [`Registry::send`],
//! which adds authentication, answers challenges and retries transient failures.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::{Mutex, OnceCell};
use tracing::{debug, warn};
use url::Url;

use super::auth::{self, AuthState, Challenge, Credentials, Secret};
use super::error::{self, RegistryError};
use super::retry;
use super::transport::{self, TransportOptions, classify_send_error, error_chain};
use crate::digest::Digest;
use crate::media_type;
use crate::reference::is_loopback_host;

/// The OAuth2 `client_id` token requests carry.
const CLIENT_ID: &str = "docker-pull";

/// Why a token request failed: an error to report, or a token server that
/// does not take OAuth2 requests (so the classic request is worth a try).
enum TokenFailure {
    Error(RegistryError),
    NotOAuth(StatusCode),
}

impl From<RegistryError> for TokenFailure {
    fn from(e: RegistryError) -> Self {
        TokenFailure::Error(e)
    }
}

/// Manifests larger than this are refused.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// A client for one registry.
pub struct Registry {
    /// The registry as users name it (`docker.io`).
    name: String,
    /// Where its API lives (`registry-1.docker.io`).
    host: String,
    http: reqwest::Client,
    opts: TransportOptions,
    credentials: Option<Credentials>,
    /// `http` or `https` when the scheme is fixed (a mirror written with one).
    scheme: Option<&'static str>,
    base: OnceCell<Url>,
    auth: Mutex<AuthState>,
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
        http: reqwest::Client,
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
            base: OnceCell::new(),
            auth: Mutex::new(AuthState::default()),
        }
    }

    /// Fixes the scheme (`http` or `https`) instead of choosing it.
    pub fn with_scheme(mut self, scheme: Option<&'static str>) -> Registry {
        self.scheme = scheme;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `scheme://host`, found by pinging `/v2/` once.
    async fn base(&self) -> Result<&Url, RegistryError> {
        self.base.get_or_try_init(|| self.ping()).await
    }

    async fn ping(&self) -> Result<Url, RegistryError> {
        let schemes: &[&str] = if let Some(fixed) = &self.scheme {
            std::slice::from_ref(fixed)
        } else if self.opts.plain_http {
            &["http"]
        } else if is_loopback_host(&self.host) {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last_err = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = Url::parse(&format!("{scheme}://{}/", self.host)).map_err(|e| {
                RegistryError::Protocol {
                    registry: self.name.clone(),
                    detail: format!("bad registry address {}: {e}", self.host),
                }
            })?;
            let url = base.join("v2/").map_err(|e| RegistryError::Protocol {
                registry: self.name.clone(),
                detail: e.to_string(),
            })?;
            let mut attempt = 0;
            loop {
                attempt += 1;
                debug!(%url, "ping");
                match self.http.get(url.clone()).send().await {
                    Ok(resp) => {
                        if resp.status() == StatusCode::UNAUTHORIZED {
                            self.remember_challenge(resp.headers()).await;
                        }
                        debug!(status = %resp.status(), "ping answered");
                        return Ok(base);
                    }
                    Err(e) => {
                        let err = classify_send_error(&self.name, "/v2/", &self.opts, &e);
                        // A server that does not speak TLS gets plain HTTP; one
                        // whose certificate fails verification does not.
                        let fallback_left = i + 1 < schemes.len();
                        if fallback_left && !matches!(err, RegistryError::Tls { .. }) {
                            debug!(error = %error_chain(&e), "HTTPS failed on a loopback registry; trying HTTP");
                            last_err = Some(err);
                            break;
                        }
                        if self.pause_before_retry(&err, attempt).await {
                            continue;
                        }
                        return Err(err);
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| RegistryError::Connect {
            registry: self.name.clone(),
            detail: "no way to reach it".into(),
        }))
    }

    /// After a failed attempt: whether to try again (having waited).
    async fn pause_before_retry(&self, err: &RegistryError, attempt: u32) -> bool {
        if !err.is_transient() || attempt >= self.opts.retries {
            return false;
        }
        let wait = retry::backoff(attempt);
        warn!("{err}; retrying in {:.1} s", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        true
    }

    async fn remember_challenge(&self, headers: &HeaderMap) {
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

    /// The `Authorization` header for a request in `repository`, fetching a
    /// token if the registry wants one.
    async fn authorization(&self, repository: &str) -> Result<Option<String>, RegistryError> {
        let mut state = self.auth.lock().await;
        let Some(challenge) = state.challenge.clone() else {
            return Ok(None);
        };
        match challenge.scheme.as_str() {
            "bearer" => {
                if let Some(Credentials {
                    secret: Secret::RegistryToken(t),
                    ..
                }) = &self.credentials
                {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let scopes = state.scopes(repository);
                let key = scopes.join(" ");
                if let Some(t) = state.token(&key, Instant::now()) {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let refresh = state.refresh_token.clone();
                let grant = self
                    .fetch_token(&challenge, &scopes, repository, refresh)
                    .await?;
                let header = format!("Bearer {}", grant.token.value);
                if grant.refresh_token.is_some() {
                    state.refresh_token = grant.refresh_token;
                }
                state.tokens.insert(key, grant.token);
                Ok(Some(header))
            }
            "basic" => Ok(self
                .credentials
                .as_ref()
                .and_then(Credentials::basic_header)),
            other => Err(RegistryError::Protocol {
                registry: self.name.clone(),
                detail: format!("unsupported authentication scheme {other:?}"),
            }),
        }
    }

    /// Asks the challenge's token server for a token: an OAuth2 refresh-token
    /// `POST` when we hold an identity token (falling back to the classic
    /// request if the server does not do OAuth2), else the classic `GET` with
    /// Basic credentials or anonymously.
    async fn fetch_token(
        &self,
        challenge: &Challenge,
        scopes: &[String],
        repository: &str,
        rotated: Option<auth::RefreshToken>,
    ) -> Result<auth::TokenGrant, RegistryError> {
        let realm = challenge
            .param("realm")
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.name.clone(),
                detail: "Bearer challenge without a realm".into(),
            })?;
        let realm_url = Url::parse(realm).map_err(|e| RegistryError::Protocol {
            registry: self.name.clone(),
            detail: format!("token realm {realm:?} is not a URL: {e}"),
        })?;
        if !matches!(realm_url.scheme(), "http" | "https") {
            return Err(RegistryError::Protocol {
                registry: self.name.clone(),
                detail: format!("token realm {realm:?} is not an http(s) URL"),
            });
        }
        let service = challenge.param("service");
        if let Some(Credentials {
            secret: Secret::IdentityToken(identity),
            ..
        }) = &self.credentials
        {
            let refresh = rotated.map(|r| r.0).unwrap_or_else(|| identity.clone());
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", CLIENT_ID),
            ];
            if let Some(service) = service {
                form.push(("service", service));
            }
            for scope in scopes {
                form.push(("scope", scope));
            }
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            debug!(realm, ?scopes, "OAuth2 token request (refresh token)");
            match self
                .token_request(&realm_url, realm, repository, || {
                    self.http
                        .post(realm_url.clone())
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(body.clone())
                })
                .await
            {
                Err(TokenFailure::NotOAuth(status)) => {
                    debug!(%status, "the token server does not take OAuth2 requests; asking with GET");
                }
                Err(TokenFailure::Error(e)) => return Err(e),
                Ok(grant) => return Ok(grant),
            }
        }
        let mut url = realm_url.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = service {
                q.append_pair("service", service);
            }
            for scope in scopes {
                q.append_pair("scope", scope);
            }
        }
        let basic = self
            .credentials
            .as_ref()
            .and_then(Credentials::basic_header);
        debug!(
            realm,
            ?scopes,
            with_credentials = basic.is_some(),
            "token request"
        );
        self.token_request(&realm_url, realm, repository, || {
            let req = self.http.get(url.clone());
            match &basic {
                Some(b) => req.header(AUTHORIZATION, b.as_str()),
                None => req,
            }
        })
        .await
        .map_err(|f| match f {
            TokenFailure::Error(e) => e,
            TokenFailure::NotOAuth(status) => RegistryError::Status {
                registry: self.name.clone(),
                status,
                url: strip_query(&realm_url),
                detail: " (token server)".into(),
            },
        })
    }

    /// Sends a token request built by `make` with retries and reads the grant.
    async fn token_request(
        &self,
        realm_url: &Url,
        realm: &str,
        repository: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<auth::TokenGrant, TokenFailure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match make().send().await {
                Ok(resp) if resp.status().is_success() => {
                    let body = self.read_limited(resp, 1024 * 1024).await?;
                    return auth::parse_token_response(&body, Instant::now(), SystemTime::now())
                        .map_err(|detail| {
                            TokenFailure::Error(RegistryError::Protocol {
                                registry: self.name.clone(),
                                detail: format!("token server {realm}: {detail}"),
                            })
                        });
                }
                Ok(resp) => match resp.status() {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        return Err(self.unauthorized(repository).into());
                    }
                    StatusCode::PROXY_AUTHENTICATION_REQUIRED => {
                        return Err(RegistryError::ProxyAuth {
                            registry: self.name.clone(),
                            proxy: transport::proxy_for_url(&self.opts, realm_url)
                                .unwrap_or_else(|| "in use".to_string()),
                        }
                        .into());
                    }
                    s @ (StatusCode::BAD_REQUEST
                    | StatusCode::NOT_FOUND
                    | StatusCode::METHOD_NOT_ALLOWED
                    | StatusCode::NOT_IMPLEMENTED) => return Err(TokenFailure::NotOAuth(s)),
                    s => {
                        let retry_after = retry::retry_after(resp.headers());
                        let e = RegistryError::Status {
                            registry: self.name.clone(),
                            status: s,
                            url: strip_query(realm_url),
                            detail: " (token server)".into(),
                        };
                        if retry::status_is_retryable(s) && attempt < self.opts.retries {
                            tokio::time::sleep(
                                retry_after.unwrap_or_else(|| retry::backoff(attempt)),
                            )
                            .await;
                            continue;
                        }
                        e
                    }
                },
                Err(e) => classify_send_error(&self.name, "a token", &self.opts, &e),
            };
            if err.is_transient() && attempt < self.opts.retries {
                tokio::time::sleep(retry::backoff(attempt)).await;
                continue;
            }
            return Err(err.into());
        }
    }

    fn unauthorized(&self, repository: &str) -> RegistryError {
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
        let base = self.base().await?;
        let url =
            base.join(&format!("v2/{repository}/{path}"))
                .map_err(|e| RegistryError::Protocol {
                    registry: self.name.clone(),
                    detail: e.to_string(),
                })?;
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = self.authorization(repository).await? {
                req = req.header(AUTHORIZATION, a);
            }
            debug!(%method, %url, attempt, "request");
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let err = classify_send_error(&self.name, what, &self.opts, &e);
                    if self.pause_before_retry(&err, attempt).await {
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = resp.status();
            debug!(%status, "response");
            if status.is_success() || status == StatusCode::PARTIAL_CONTENT {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED {
                // A first challenge, an expired token, or a wider scope: take
                // the new challenge and try once more with fresh credentials.
                let had_challenge = self.auth.lock().await.challenge.is_some();
                self.remember_challenge(resp.headers()).await;
                let can_answer = {
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
                };
                if can_answer && !reauthenticated {
                    reauthenticated = true;
                    attempt -= 1;
                    continue;
                }
                return Err(self.unauthorized(repository));
            }
            if retry::status_is_retryable(status) && attempt < self.opts.retries {
                let wait =
                    retry::retry_after(resp.headers()).unwrap_or_else(|| retry::backoff(attempt));
                warn!(
                    "{} answered {status} for {what}; retrying in {:.1} s",
                    self.name,
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(self
                .status_error(resp, repository, what, &url, attempt)
                .await);
        }
    }

    async fn status_error(
        &self,
        resp: Response,
        repository: &str,
        what: &str,
        url: &Url,
        attempts: u32,
    ) -> RegistryError {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = self.read_limited(resp, 64 * 1024).await.unwrap_or_default();
        let envelope = error::envelope_message(&body);
        match status {
            StatusCode::PROXY_AUTHENTICATION_REQUIRED => RegistryError::ProxyAuth {
                registry: self.name.clone(),
                proxy: transport::proxy_for_url(&self.opts, url)
                    .unwrap_or_else(|| "in use".to_string()),
            },
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry: self.name.clone(),
                repository: repository.to_string(),
                detail: envelope
                    .map(|(c, m)| format!(": {c} {m}"))
                    .unwrap_or_default(),
            },
            StatusCode::NOT_FOUND => {
                let what = match envelope.as_ref().map(|(c, _)| c.as_str()) {
                    Some("NAME_UNKNOWN") => format!("repository {repository}"),
                    _ => what.to_string(),
                };
                RegistryError::NotFound {
                    registry: self.name.clone(),
                    what,
                }
            }
            StatusCode::TOO_MANY_REQUESTS => RegistryError::RateLimited {
                registry: self.name.clone(),
                quota: error::quota_note(&headers),
                attempts,
                wait: error::wait_note(retry::retry_after(&headers)),
            },
            _ => RegistryError::Status {
                registry: self.name.clone(),
                status,
                url: strip_query(url),
                detail: envelope
                    .map(|(c, m)| format!(": {c} {m}"))
                    .unwrap_or_default(),
            },
        }
    }

    /// Fetches a manifest or index by tag or digest.
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
        let resp = self
            .send(
                Method::GET,
                repository,
                &format!("manifests/{reference}"),
                headers,
                &what,
            )
            .await?;
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self.read_limited(resp, MAX_MANIFEST_BYTES).await?;
        Ok(Manifest {
            digest: Digest::of(&bytes),
            bytes,
            content_type,
        })
    }

    /// Starts a blob download at byte `offset` (a `Range` request when
    /// non-zero). The response is 200 (whole blob) or 206 (from `offset`).
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<Response, RegistryError> {
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(
                RANGE,
                HeaderValue::from_str(&format!("bytes={offset}-")).expect("range header is ASCII"),
            );
        }
        self.send(
            Method::GET,
            repository,
            &format!("blobs/{digest}"),
            headers,
            &format!("blob {digest} of {repository}"),
        )
        .await
    }

    /// Fetches bytes `start..=end` of a blob (`Range: bytes=start-end`); the
    /// answer is 206 when the registry honours ranges, else 200 with the
    /// whole blob. Foreign layers come from their `urls` as in
    /// [`Registry::get_blob_or_urls`].
    pub async fn get_blob_range(
        &self,
        repository: &str,
        digest: &Digest,
        start: u64,
        end: u64,
        urls: &[String],
    ) -> Result<Response, RegistryError> {
        self.blob_request(repository, digest, &format!("bytes={start}-{end}"), urls)
            .await
    }

    /// Like [`Registry::get_blob`], but a blob the registry does not have is
    /// fetched from the descriptor's `urls` (foreign and non-distributable
    /// layers), in order, without the registry's credentials.
    pub async fn get_blob_or_urls(
        &self,
        repository: &str,
        digest: &Digest,
        offset: u64,
        urls: &[String],
    ) -> Result<Response, RegistryError> {
        let range = if offset > 0 {
            format!("bytes={offset}-")
        } else {
            String::new()
        };
        self.blob_request(repository, digest, &range, urls).await
    }

    async fn blob_request(
        &self,
        repository: &str,
        digest: &Digest,
        range: &str,
        urls: &[String],
    ) -> Result<Response, RegistryError> {
        let mut headers = HeaderMap::new();
        if !range.is_empty() {
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
        for raw in urls {
            let Ok(url) = Url::parse(raw) else {
                debug!(url = raw, "skipping a layer URL that does not parse");
                continue;
            };
            if !matches!(url.scheme(), "http" | "https") {
                continue;
            }
            let mut req = self.http.get(url.clone());
            if !range.is_empty() {
                req = req.header(RANGE, range);
            }
            debug!(%url, "fetching a foreign layer from its URL");
            match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => debug!(%url, status = %resp.status(), "layer URL failed"),
                Err(e) => debug!(%url, error = %error_chain(&e), "layer URL failed"),
            }
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

    async fn read_limited(&self, resp: Response, limit: usize) -> Result<Vec<u8>, RegistryError> {
        read_body(resp, limit, &self.name, &self.opts).await
    }

    /// How this registry is reached.
    pub fn transport(&self) -> &TransportOptions {
        &self.opts
    }

    /// The read timeout, for messages.
    pub fn timeout(&self) -> Duration {
        self.opts.timeout
    }
}

/// A URL without its query, for messages.
fn strip_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
async fn read_body(
    mut resp: Response,
    limit: usize,
    registry: &str,
    opts: &TransportOptions,
) -> Result<Vec<u8>, RegistryError> {
    if let Some(len) = resp.content_length()
        && len > limit as u64
    {
        return Err(RegistryError::Protocol {
            registry: registry.to_string(),
            detail: format!("response of {len} bytes is larger than the {limit} allowed"),
        });
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(RegistryError::Protocol {
                        registry: registry.to_string(),
                        detail: format!("response is larger than the {limit} bytes allowed"),
                    });
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(classify_send_error(registry, "a response body", opts, &e));
            }
        }
    }
}
