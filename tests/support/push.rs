//! Pushes test images to a real registry over the distribution API (plain HTTP, loopback).
//!
//! Owns only the upload side of the protocol a test or the demo needs: `HEAD` a blob to skip it
//! when present, `POST /v2/<name>/blobs/uploads/` then a monolithic `PUT ...?digest=`, and
//! `PUT /v2/<name>/manifests/<reference>` with the manifest's media type, by digest and by tag.
//! A 401 challenge is answered: Basic with the configured credentials, or Bearer by fetching a
//! token from the realm for `repository:<name>:pull,push` (with the credentials as Basic when
//! given). It never reads anything back except to check what the registry reports.
//!
//! The API is blocking: each [`Pusher`] drives its own current-thread tokio runtime, so call it
//! from plain `#[test]` functions or `main`, never from inside another runtime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use reqwest::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};

use super::image::{Blob, Image, Index};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm=...` or `Bearer realm="...",service="...",scope="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `k="v",k2=v2` (values may be quoted and contain commas) into a map with lower-case keys.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// Pushes blobs, images and indexes to one registry.
pub struct Pusher {
    registry: String,
    base: url::Url,
    credentials: Option<(String, String)>,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    /// Authorization header value per scope (`Basic ...` or `Bearer ...`).
    auth: Mutex<HashMap<String, String>>,
}

/// What one request sends; the body is kept so the request can be repeated after a challenge.
struct Request<'a> {
    method: Method,
    url: url::Url,
    content_type: Option<&'a str>,
    body: Option<&'a [u8]>,
}

impl Pusher {
    /// A pusher for the plain-HTTP registry at `registry` (`HOST:PORT`), anonymous.
    pub fn new(registry: &str) -> Result<Self> {
        let base = url::Url::parse(&format!("http://{registry}/"))
            .with_context(|| format!("bad registry address {registry:?}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime for the pusher")?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .context("building the HTTP client for the pusher")?;
        Ok(Self {
            registry: registry.to_string(),
            base,
            credentials: None,
            runtime,
            client,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// Uses `username`/`password` for Basic challenges and for token requests.
    pub fn with_credentials(mut self, username: &str, password: &str) -> Self {
        self.credentials = Some((username.to_string(), password.to_string()));
        self
    }

    /// The registry address this pusher talks to (`HOST:PORT`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Uploads `blob` to `repo` unless the registry already has it. Returns true when uploaded.
    pub fn push_blob(&self, repo: &str, blob: &Blob) -> Result<bool> {
        self.runtime.block_on(self.push_blob_async(repo, blob))
    }

    /// Puts `manifest` (an image manifest or an index) under `reference` (a tag or its digest).
    pub fn push_manifest(&self, repo: &str, reference: &str, manifest: &Blob) -> Result<()> {
        self.runtime
            .block_on(self.push_manifest_async(repo, reference, manifest))
    }

    /// Pushes an image's config and layers, its manifest by digest and, when `tag` is given,
    /// by tag. Returns the manifest digest.
    pub fn push_image(&self, repo: &str, tag: Option<&str>, image: &Image) -> Result<String> {
        self.runtime.block_on(async {
            self.push_image_content(repo, image).await?;
            if let Some(tag) = tag {
                self.push_manifest_async(repo, tag, &image.manifest).await?;
            }
            Ok(image.manifest.digest.clone())
        })
    }

    /// Pushes every image of `index` (and its attestation manifests), then the index by digest
    /// and, when `tag` is given, by tag. Returns the index digest.
    pub fn push_index(&self, repo: &str, tag: Option<&str>, index: &Index) -> Result<String> {
        self.runtime.block_on(async {
            for image in index.images.iter().chain(&index.extra_manifests) {
                self.push_image_content(repo, image).await?;
            }
            self.push_manifest_async(repo, &index.index.digest, &index.index)
                .await?;
            if let Some(tag) = tag {
                self.push_manifest_async(repo, tag, &index.index).await?;
            }
            Ok(index.index.digest.clone())
        })
    }

    async fn push_image_content(&self, repo: &str, image: &Image) -> Result<()> {
        for blob in image.blobs() {
            self.push_blob_async(repo, blob).await?;
        }
        self.push_manifest_async(repo, &image.manifest.digest, &image.manifest)
            .await
    }

    async fn push_blob_async(&self, repo: &str, blob: &Blob) -> Result<bool> {
        let what = format!("blob {} to {}/{repo}", blob.digest, self.registry);
        let head = self
            .send(
                repo,
                Request {
                    method: Method::HEAD,
                    url: self.url(&format!("v2/{repo}/blobs/{}", blob.digest))?,
                    content_type: None,
                    body: None,
                },
            )
            .await
            .with_context(|| format!("checking {what}"))?;
        match head.status() {
            StatusCode::OK => return Ok(false),
            StatusCode::NOT_FOUND => {}
            other => bail!("checking {what}: unexpected HEAD status {other}"),
        }

        let start = self
            .send(
                repo,
                Request {
                    method: Method::POST,
                    url: self.url(&format!("v2/{repo}/blobs/uploads/"))?,
                    content_type: None,
                    body: Some(&[]),
                },
            )
            .await
            .with_context(|| format!("starting the upload of {what}"))?;
        if start.status() != StatusCode::ACCEPTED {
            let status = start.status();
            let body = start.text().await.unwrap_or_default();
            bail!("starting the upload of {what}: expected 202, got {status}: {body}");
        }
        let location = start
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("starting the upload of {what}: no Location header"))?;
        let mut upload = self
            .base
            .join(location)
            .with_context(|| format!("upload location {location:?} of {what}"))?;
        upload.query_pairs_mut().append_pair("digest", &blob.digest);

        let put = self
            .send(
                repo,
                Request {
                    method: Method::PUT,
                    url: upload,
                    content_type: Some("application/octet-stream"),
                    body: Some(&blob.data),
                },
            )
            .await
            .with_context(|| format!("uploading {what}"))?;
        if put.status() != StatusCode::CREATED {
            let status = put.status();
            let body = put.text().await.unwrap_or_default();
            bail!("uploading {what}: expected 201, got {status}: {body}");
        }
        check_digest(put.headers(), &blob.digest).with_context(|| format!("uploading {what}"))?;
        Ok(true)
    }

    async fn push_manifest_async(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Blob,
    ) -> Result<()> {
        let what = format!(
            "manifest {} ({}) as {}/{repo}:{reference}",
            manifest.digest, manifest.media_type, self.registry
        );
        let response = self
            .send(
                repo,
                Request {
                    method: Method::PUT,
                    url: self.url(&format!("v2/{repo}/manifests/{reference}"))?,
                    content_type: Some(&manifest.media_type),
                    body: Some(&manifest.data),
                },
            )
            .await
            .with_context(|| format!("pushing {what}"))?;
        if response.status() != StatusCode::CREATED {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("pushing {what}: expected 201, got {status}: {body}");
        }
        check_digest(response.headers(), &manifest.digest)
            .with_context(|| format!("pushing {what}"))
    }

    fn url(&self, path: &str) -> Result<url::Url> {
        self.base
            .join(path)
            .with_context(|| format!("bad request path {path:?}"))
    }

    /// Sends a request with the cached authorization for `repo`; on a 401 answers the challenge
    /// once and repeats the request.
    async fn send(&self, repo: &str, request: Request<'_>) -> Result<reqwest::Response> {
        let scope = format!("repository:{repo}:pull,push");
        let cached = self.cached_auth(&scope);
        let response = self.send_once(&request, cached.as_deref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let header = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                anyhow!(
                    "{} answered 401 without a WWW-Authenticate challenge",
                    self.registry
                )
            })?
            .to_string();
        let challenge = parse_challenge(&header)
            .ok_or_else(|| anyhow!("{}: unsupported challenge {header:?}", self.registry))?;
        let authorization = match challenge {
            Challenge::Basic => {
                let (user, password) = self.credentials.as_ref().ok_or_else(|| {
                    anyhow!(
                        "{} wants Basic credentials and the pusher has none",
                        self.registry
                    )
                })?;
                basic(user, password)
            }
            Challenge::Bearer { realm, service, .. } => {
                format!(
                    "Bearer {}",
                    self.fetch_token(&realm, service.as_deref(), &scope).await?
                )
            }
        };
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope, authorization.clone());
        let retried = self.send_once(&request, Some(&authorization)).await?;
        if retried.status() == StatusCode::UNAUTHORIZED {
            let body = retried.text().await.unwrap_or_default();
            bail!(
                "{} still answers 401 after authenticating ({header}): {body}",
                self.registry
            );
        }
        Ok(retried)
    }

    fn cached_auth(&self, scope: &str) -> Option<String> {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .cloned()
    }

    async fn send_once(
        &self,
        request: &Request<'_>,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone());
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        if let Some(content_type) = request.content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        if let Some(body) = request.body {
            builder = builder
                .header(CONTENT_LENGTH, body.len())
                .body(body.to_vec());
        }
        builder
            .send()
            .await
            .with_context(|| format!("{} {}", request.method, request.url))
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let mut url =
            url::Url::parse(realm).with_context(|| format!("bad token realm {realm:?}"))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut builder = self.client.get(url.clone());
        if let Some((user, password)) = &self.credentials {
            builder = builder.header(AUTHORIZATION, basic(user, password));
        }
        let response = builder
            .send()
            .await
            .with_context(|| format!("requesting a token from {realm}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the token response from {realm}"))?;
        if !status.is_success() {
            bail!("token server {realm} answered {status} for scope {scope}: {text}");
        }
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("token response from {realm} is not JSON: {text}"))?;
        value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("token response from {realm} has no token: {text}"))
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The registry's `Docker-Content-Digest` (when it sends one) must be what we computed.
fn check_digest(headers: &HeaderMap, expected: &str) -> Result<()> {
    match headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        Some(got) if got != expected => {
            bail!("registry stored digest {got}, expected {expected}")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_scope() {
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="svc",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/token".into(),
                service: Some("svc".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
