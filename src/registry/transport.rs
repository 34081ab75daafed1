//! The HTTP client under every registry request: TLS (verified by default,
//! extra CA files, `--insecure`), proxies (`--proxy` and the `*_PROXY`
//! environment), timeouts, and turning transport failures into
//! [`RegistryError`]s that name the registry.

use std::path::PathBuf;
use std::time::Duration;

use super::error::RegistryError;

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Do not verify TLS certificates.
    pub insecure: bool,
    /// Speak plain HTTP to every registry.
    pub plain_http: bool,
    /// Extra trusted CA certificates (PEM files).
    pub ca_certs: Vec<PathBuf>,
    /// Proxy URL for every request (else the environment's).
    pub proxy: Option<String>,
    /// A response that sends nothing for this long is abandoned.
    pub timeout: Duration,
    /// Attempts per request.
    pub retries: u32,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            insecure: false,
            plain_http: false,
            ca_certs: Vec::new(),
            proxy: None,
            timeout: Duration::from_secs(30),
            retries: 5,
        }
    }
}

/// Why the HTTP client could not be built (bad CA file, bad proxy URL).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read CA certificate {path}: {source}")]
    CaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate: {detail}")]
    CaParse { path: PathBuf, detail: String },
    #[error("invalid proxy URL {url:?}: {detail}")]
    Proxy { url: String, detail: String },
    #[error("cannot set up the HTTP client: {0}")]
    Build(String),
}

pub fn build_client(opts: &TransportOptions) -> Result<reqwest::Client, TransportError> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("docker-pull/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(opts.timeout.min(Duration::from_secs(30)))
        .read_timeout(opts.timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    if opts.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    let mut certs = Vec::new();
    for path in &opts.ca_certs {
        let pem = std::fs::read(path).map_err(|source| TransportError::CaRead {
            path: path.clone(),
            source,
        })?;
        let found =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| TransportError::CaParse {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if found.is_empty() {
            return Err(TransportError::CaParse {
                path: path.clone(),
                detail: "no certificate found".into(),
            });
        }
        certs.extend(found);
    }
    if !certs.is_empty() {
        b = b.tls_certs_merge(certs);
    }
    if let Some(url) = &opts.proxy {
        let proxy = reqwest::Proxy::all(url).map_err(|e| TransportError::Proxy {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        b = b.proxy(proxy);
    }
    b.build()
        .map_err(|e| TransportError::Build(error_chain(&e)))
}

/// The error and all its causes, joined. Request URLs carry no secrets:
/// credentials and tokens travel in headers only.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    // reqwest's own top layers ("error sending request for url (...)",
    // "client error (Connect)") say less than their causes.
    let top = e.to_string();
    if !top.starts_with("error sending request") || e.source().is_none() {
        parts.push(top);
    }
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !text.starts_with("client error (") && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Turns a failed request into the error a user should see.
pub fn classify_send_error(
    registry: &str,
    what: &str,
    seconds: u64,
    e: &reqwest::Error,
) -> RegistryError {
    let detail = error_chain(e);
    let lower = detail.to_ascii_lowercase();
    if e.is_timeout() {
        RegistryError::Timeout {
            registry: registry.to_string(),
            what: what.to_string(),
            seconds,
        }
    } else if lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("invalid peer")
        || lower.contains("notvalidforname")
    {
        RegistryError::Tls {
            registry: registry.to_string(),
            detail,
        }
    } else {
        RegistryError::Connect {
            registry: registry.to_string(),
            detail,
        }
    }
}
