//! The `Authorization` header for a request: Basic credentials, or a Bearer
//! token from the challenge's token server (an OAuth2 refresh-token `POST`
//! when we hold an identity token, else the classic `GET`), cached per scope.
//!
//! Rules kept here: a challenge is only ever one the registry's own origin
//! sent (see `client.rs`); a token realm on plain HTTP is refused for an
//! HTTPS registry unless `--insecure` or `--plain-http` allows it; token
//! requests follow redirects only within the realm's origin, except an
//! anonymous `GET`, which carries nothing worth keeping.

use std::time::{Instant, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Response, StatusCode};
use tracing::debug;
use url::Url;

use super::auth::{self, Challenge, Credentials, Scope, Secret};
use super::body;
use super::client::{Registry, same_origin, strip_query};
use super::error::RegistryError;
use super::transport;

/// The OAuth2 `client_id` token requests carry.
const CLIENT_ID: &str = "docker-pull";
/// Token responses larger than this are refused.
const MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// Redirects a token request follows.
const MAX_REDIRECTS: usize = 5;

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

/// A token request: where, and what it carries.
struct TokenRequest<'a> {
    url: Url,
    /// The form of an OAuth2 `POST`; `None` for a `GET`.
    form: Option<String>,
    basic: Option<&'a str>,
}

impl TokenRequest<'_> {
    fn carries_secrets(&self) -> bool {
        self.form.is_some() || self.basic.is_some()
    }

    fn build(&self, client: &reqwest::Client, url: &Url) -> reqwest::RequestBuilder {
        let req = match &self.form {
            Some(form) => client
                .post(url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.clone()),
            None => client.get(url.clone()),
        };
        match self.basic {
            Some(b) => req.header(AUTHORIZATION, b),
            None => req,
        }
    }
}

/// Whether a token may be asked for at a plain-HTTP realm: for a registry
/// reached over plain HTTP anyway, or when the user said `--insecure` or
/// `--plain-http`.
fn plain_realm_allowed(registry_scheme: &str, opts: &super::TransportOptions) -> bool {
    registry_scheme != "https" || opts.insecure || opts.plain_http
}

impl Registry {
    /// The `Authorization` header for a request that needs `scope`,
    /// fetching a token if the registry wants one. Tokens are cached per
    /// set of scopes, so pulls and pushes each have theirs.
    pub(super) async fn authorization(
        &self,
        scope: &Scope<'_>,
    ) -> Result<Option<String>, RegistryError> {
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
                let scopes = state.scopes(scope);
                let key = scopes.join(" ");
                if let Some(t) = state.token(&key, Instant::now()) {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let refresh = state.refresh_token.clone();
                let grant = self
                    .fetch_token(&challenge, &scopes, scope, refresh)
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
            other => {
                Err(self.token_protocol(format!("unsupported authentication scheme {other:?}")))
            }
        }
    }

    fn token_protocol(&self, detail: String) -> RegistryError {
        RegistryError::Protocol {
            registry: self.name().to_string(),
            detail,
        }
    }

    /// The challenge's realm, checked: an http(s) URL, and not plain HTTP
    /// for an HTTPS registry unless the user allowed it.
    async fn realm(&self, challenge: &Challenge) -> Result<Url, RegistryError> {
        let realm = challenge
            .param("realm")
            .ok_or_else(|| self.token_protocol("Bearer challenge without a realm".into()))?;
        let url = Url::parse(realm)
            .map_err(|e| self.token_protocol(format!("token realm {realm:?} is not a URL: {e}")))?;
        match url.scheme() {
            "https" => Ok(url),
            "http" => {
                let registry_scheme = self.base().await?.scheme();
                if !plain_realm_allowed(registry_scheme, self.transport()) {
                    return Err(RegistryError::PlainTokenRealm {
                        registry: self.name().to_string(),
                        realm: strip_query(&url),
                    });
                }
                Ok(url)
            }
            _ => Err(self.token_protocol(format!("token realm {realm:?} is not an http(s) URL"))),
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
        scope: &Scope<'_>,
        rotated: Option<auth::RefreshToken>,
    ) -> Result<auth::TokenGrant, RegistryError> {
        let realm = self.realm(challenge).await?;
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
            form.extend(service.map(|s| ("service", s)));
            form.extend(scopes.iter().map(|s| ("scope", s.as_str())));
            let form = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            debug!(%realm, ?scopes, "OAuth2 token request (refresh token)");
            let request = TokenRequest {
                url: realm.clone(),
                form: Some(form),
                basic: None,
            };
            match self.token_request(&request, scope).await {
                Err(TokenFailure::NotOAuth(status)) => {
                    debug!(%status, "the token server does not take OAuth2 requests; asking with GET");
                }
                Err(TokenFailure::Error(e)) => return Err(e),
                Ok(grant) => return Ok(grant),
            }
        }
        let mut url = realm.clone();
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
        debug!(%realm, ?scopes, with_credentials = basic.is_some(), "token request");
        let request = TokenRequest {
            url,
            form: None,
            basic: basic.as_deref(),
        };
        self.token_request(&request, scope)
            .await
            .map_err(|f| match f {
                TokenFailure::Error(e) => e,
                TokenFailure::NotOAuth(status) => RegistryError::Status {
                    registry: self.name().to_string(),
                    status,
                    url: strip_query(&realm),
                    detail: " (token server)".into(),
                },
            })
    }

    /// Sends a token request under the retry policy (the request and the
    /// reading of the grant share one budget) and reads the grant.
    async fn token_request(
        &self,
        request: &TokenRequest<'_>,
        scope: &Scope<'_>,
    ) -> Result<auth::TokenGrant, TokenFailure> {
        let mut budget = self.policy().budget();
        loop {
            let resp = self.token_response(request, &mut budget).await?;
            let status = resp.status();
            if !status.is_success() {
                return Err(self.token_status(status, &resp, scope));
            }
            match body::read_small(self, resp, MAX_TOKEN_BYTES, "a token").await {
                Ok(bytes) => {
                    return auth::parse_token_response(&bytes, Instant::now(), SystemTime::now())
                        .map_err(|detail| {
                            self.token_protocol(format!(
                                "token server {}: {detail}",
                                strip_query(&request.url)
                            ))
                            .into()
                        });
                }
                Err(e) => match budget.failed(&e, None) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Err(e.into()),
                },
            }
        }
    }

    /// The answer to a token request, following redirects within the
    /// realm's origin (and anywhere for an anonymous `GET`).
    async fn token_response(
        &self,
        request: &TokenRequest<'_>,
        budget: &mut super::retry::Budget,
    ) -> Result<Response, RegistryError> {
        let mut url = request.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self
                .with_retries(budget, "a token", || request.build(&self.http.token, &url))
                .await?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    self.token_protocol(format!(
                        "token server {} answered {} without a usable Location",
                        strip_query(&url),
                        resp.status()
                    ))
                })?;
            if request.carries_secrets() && !same_origin(&next, &request.url) {
                return Err(self.token_protocol(format!(
                    "token server {} redirected to another host ({}); credentials are not sent there",
                    strip_query(&request.url),
                    super::client::origin_of(&next)
                )));
            }
            debug!(from = %strip_query(&url), to = %strip_query(&next), "token request redirected");
            url = next;
        }
        Err(self.token_protocol(format!(
            "token server {} redirected more than {MAX_REDIRECTS} times",
            strip_query(&request.url)
        )))
    }

    fn token_status(&self, status: StatusCode, resp: &Response, scope: &Scope<'_>) -> TokenFailure {
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.credentials_refused(scope).into()
            }
            StatusCode::PROXY_AUTHENTICATION_REQUIRED => RegistryError::ProxyAuth {
                registry: self.name().to_string(),
                proxy: transport::proxy_for_url(self.transport(), resp.url())
                    .unwrap_or_else(|| "in use".to_string()),
            }
            .into(),
            StatusCode::BAD_REQUEST
            | StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => TokenFailure::NotOAuth(status),
            s => RegistryError::Status {
                registry: self.name().to_string(),
                status: s,
                url: strip_query(resp.url()),
                detail: " (token server)".into(),
            }
            .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::TransportOptions;

    #[test]
    fn plain_http_realms_only_where_allowed() {
        let strict = TransportOptions::default();
        assert!(!plain_realm_allowed("https", &strict));
        assert!(plain_realm_allowed("http", &strict));
        let insecure = TransportOptions {
            insecure: true,
            ..TransportOptions::default()
        };
        assert!(plain_realm_allowed("https", &insecure));
        let plain = TransportOptions {
            plain_http: true,
            ..TransportOptions::default()
        };
        assert!(plain_realm_allowed("https", &plain));
    }

    #[test]
    fn secrets_decide_which_redirects_a_token_request_follows() {
        let url = Url::parse("https://auth.example/token").unwrap();
        let anonymous = TokenRequest {
            url: url.clone(),
            form: None,
            basic: None,
        };
        assert!(!anonymous.carries_secrets());
        let basic = TokenRequest {
            url: url.clone(),
            form: None,
            basic: Some("Basic dTpw"),
        };
        assert!(basic.carries_secrets());
        let oauth = TokenRequest {
            url,
            form: Some("grant_type=refresh_token".into()),
            basic: None,
        };
        assert!(oauth.carries_secrets());
    }
}
