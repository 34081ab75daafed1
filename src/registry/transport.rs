//! The HTTP client under every registry request: TLS (verified by default,
//! extra CA files, Docker's per-registry `certs.d` directories, `--insecure`),
//! proxies (`--proxy` and the `*_PROXY` environment), the connect timeout,
//! and turning transport failures into [`RegistryError`]s that name the
//! registry. Silence after connecting is timed by the callers (`client.rs`
//! for answers, `body.rs` for bodies), only while they wait on the network.
//!
//! It never reads the environment: the proxy variables and the `certs.d`
//! directories arrive resolved in [`TransportOptions`], and the client uses
//! exactly those (reqwest's own environment lookup is off), so what messages
//! say about proxies is what the connections do.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
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
    /// Proxy URL for every request (`--proxy`; else `env_proxies`).
    pub proxy: Option<String>,
    /// The proxy variables of the environment, resolved once.
    pub env_proxies: EnvProxies,
    /// Docker's `certs.d` directories, in order (see [`registry_tls`]).
    pub certs_d_roots: Vec<PathBuf>,
    /// A response that sends nothing for this long is abandoned.
    pub timeout: Duration,
    /// Attempts per request.
    pub retries: u32,
    /// The cap on the run's total transfer rate, bytes per second
    /// (`--limit-rate`); see [`RateLimit`](super::RateLimit).
    pub limit_rate: Option<NonZeroU64>,
    /// Connections opened to a registry at once when it is first reached
    /// (`-j`; see `Registry::ping`), so that the requests after the ping
    /// find them open.
    pub connections: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            insecure: false,
            plain_http: false,
            ca_certs: Vec::new(),
            proxy: None,
            env_proxies: EnvProxies::default(),
            certs_d_roots: Vec::new(),
            timeout: Duration::from_secs(30),
            retries: 5,
            limit_rate: None,
            connections: 1,
        }
    }
}

/// The proxies the environment names (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`, `NO_PROXY`, as the caller read them), used when `--proxy` is
/// not given. URLs are as [`env_proxy_url`] accepts them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvProxies {
    /// For `https://` requests.
    pub https: Option<String>,
    /// For `http://` requests.
    pub http: Option<String>,
    /// For requests the two above do not cover.
    pub all: Option<String>,
    /// Hosts reached directly, with `--proxy` too (see [`no_proxy_matches`]).
    pub no_proxy: Option<String>,
}

impl EnvProxies {
    /// The proxy for a request to `scheme://...`, before `NO_PROXY` is asked.
    fn for_scheme(&self, scheme: &str) -> Option<&String> {
        let specific = if scheme == "https" {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        };
        specific.or(self.all.as_ref())
    }

    fn urls(&self) -> impl Iterator<Item = &String> {
        [&self.https, &self.http, &self.all].into_iter().flatten()
    }
}

impl std::fmt::Debug for EnvProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |u: &Option<String>| u.as_deref().map(redact_url);
        f.debug_struct("EnvProxies")
            .field("https", &shown(&self.https))
            .field("http", &shown(&self.http))
            .field("all", &shown(&self.all))
            .field("no_proxy", &self.no_proxy)
            .finish()
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
    #[error("cannot read {path}: {source}")]
    CertsDirRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{cert} is a client certificate without its key {key}: add the key or remove the certificate"
    )]
    MissingKey { cert: PathBuf, key: PathBuf },
    #[error("{cert} with {key} is not a usable client certificate: {detail}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Build(String),
}

/// TLS settings for one registry from Docker's `certs.d` directories.
#[derive(Default)]
pub struct RegistryTls {
    /// The directories that were read.
    pub dirs: Vec<PathBuf>,
    /// Extra trusted roots (`*.crt`).
    pub roots: Vec<reqwest::Certificate>,
    /// A client certificate and key (`*.cert` with `*.key`).
    pub identity: Option<reqwest::Identity>,
}

impl std::fmt::Debug for RegistryTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryTls")
            .field("dirs", &self.dirs)
            .field("roots", &self.roots.len())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// Reads `ROOT/<registry>/` for every root that has it (Docker keeps them in
/// the user's `~/.config/docker/certs.d` for rootless Docker, and in
/// `/etc/docker/certs.d`): `*.crt` files are trusted roots for that registry,
/// a `*.cert` with the `*.key` of the same name is a client certificate.
/// `None` when no directory exists.
pub fn registry_tls(
    roots: &[PathBuf],
    registry: &str,
) -> Result<Option<RegistryTls>, TransportError> {
    let mut tls = RegistryTls::default();
    for root in roots {
        let dir = root.join(registry);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(source) => return Err(TransportError::CertsDirRead { path: dir, source }),
        };
        let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in &files {
            match file.extension().and_then(|e| e.to_str()) {
                Some("crt") => tls.roots.extend(read_certificates(file)?),
                Some("cert") if tls.identity.is_none() => {
                    let key = file.with_extension("key");
                    tls.identity = Some(read_identity(file, &key)?);
                }
                _ => {}
            }
        }
        tls.dirs.push(dir);
    }
    Ok((!tls.dirs.is_empty()).then_some(tls))
}

fn read_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, TransportError> {
    let pem = std::fs::read(path).map_err(|source| TransportError::CaRead {
        path: path.to_path_buf(),
        source,
    })?;
    let found =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| TransportError::CaParse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if found.is_empty() {
        return Err(TransportError::CaParse {
            path: path.to_path_buf(),
            detail: "no certificate found".into(),
        });
    }
    Ok(found)
}

fn read_identity(cert: &Path, key: &Path) -> Result<reqwest::Identity, TransportError> {
    let mut pem = std::fs::read(cert).map_err(|source| TransportError::CaRead {
        path: cert.to_path_buf(),
        source,
    })?;
    let key_pem = match std::fs::read(key) {
        Ok(k) => k,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TransportError::MissingKey {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(TransportError::CaRead {
                path: key.to_path_buf(),
                source,
            });
        }
    };
    pem.push(b'\n');
    pem.extend_from_slice(&key_pem);
    reqwest::Identity::from_pem(&pem).map_err(|e| TransportError::Identity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        detail: error_chain(&e),
    })
}

/// The HTTP clients for one registry: one for the registry's API (which
/// follows redirects, as blob downloads to storage hosts need), and one for
/// its token server that follows none by itself (token requests decide
/// which redirects to follow).
#[derive(Clone)]
pub struct Clients {
    pub registry: reqwest::Client,
    pub token: reqwest::Client,
}

/// The HTTP clients for registries without `certs.d` settings.
pub fn build_client(opts: &TransportOptions) -> Result<Clients, TransportError> {
    build_client_with(opts, None)
}

/// The HTTP clients, with a registry's `certs.d` settings when it has some.
pub fn build_client_with(
    opts: &TransportOptions,
    registry_tls: Option<RegistryTls>,
) -> Result<Clients, TransportError> {
    let mut certs = Vec::new();
    for path in &opts.ca_certs {
        certs.extend(read_certificates(path)?);
    }
    let mut identity = None;
    if let Some(tls) = registry_tls {
        certs.extend(tls.roots);
        identity = tls.identity;
    }
    let build = |redirects: reqwest::redirect::Policy| {
        let mut b = reqwest::Client::builder()
            // No proxy from the environment or the system behind our back:
            // only the ones `proxies` adds below.
            .no_proxy()
            .user_agent(concat!("docker-pull/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.timeout.min(Duration::from_secs(30)))
            // No read timeout here: reqwest's would keep running between
            // reads, while a reader waits on the rate limit.
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(redirects);
        if opts.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(identity) = identity.clone() {
            b = b.identity(identity);
        }
        if !certs.is_empty() {
            b = b.tls_certs_merge(certs.clone());
        }
        for proxy in proxies(opts)? {
            b = b.proxy(proxy);
        }
        b.build()
            .map_err(|e| TransportError::Build(error_chain(&e)))
    };
    Ok(Clients {
        registry: build(reqwest::redirect::Policy::limited(10))?,
        token: build(reqwest::redirect::Policy::none())?,
    })
}

/// The client's proxies, in the order reqwest tries them: `--proxy` alone,
/// else the environment's for https, for http, then for all requests; each
/// skips the `NO_PROXY` hosts. (The builder must also have reqwest's own
/// environment lookup turned off.)
fn proxies(opts: &TransportOptions) -> Result<Vec<reqwest::Proxy>, TransportError> {
    type Make = fn(&str) -> reqwest::Result<reqwest::Proxy>;
    let (https, http, all): (Make, Make, Make) = (
        |u| reqwest::Proxy::https(u),
        |u| reqwest::Proxy::http(u),
        |u| reqwest::Proxy::all(u),
    );
    let env = &opts.env_proxies;
    let wanted = match &opts.proxy {
        Some(url) => vec![(all, url)],
        None => [(https, &env.https), (http, &env.http), (all, &env.all)]
            .into_iter()
            .filter_map(|(make, url)| url.as_ref().map(|u| (make, u)))
            .collect(),
    };
    wanted
        .into_iter()
        .map(|(make, url)| {
            let proxy = make(url).map_err(|e| TransportError::Proxy {
                url: redact_url(url),
                detail: redact_text(&e.to_string(), url),
            })?;
            let no_proxy = env
                .no_proxy
                .as_deref()
                .and_then(reqwest::NoProxy::from_string);
            Ok(proxy.no_proxy(no_proxy))
        })
        .collect()
}

/// Why a proxy URL cannot be used. Messages never show its password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    #[error("{url:?} is not a URL ({detail})")]
    NotAUrl { url: String, detail: String },
    #[error("{url:?}: the scheme must be {allowed}")]
    Scheme { url: String, allowed: &'static str },
    #[error("{url:?} names no host")]
    NoHost { url: String },
}

/// Checks that `url` parses, has one of `schemes` and a host.
fn checked_proxy_url(
    url: &str,
    schemes: &[&str],
    allowed: &'static str,
) -> Result<(), ProxyUrlError> {
    let shown = || redact_url(url);
    let parsed = url::Url::parse(url).map_err(|e| ProxyUrlError::NotAUrl {
        url: shown(),
        detail: e.to_string(),
    })?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(ProxyUrlError::Scheme {
            url: shown(),
            allowed,
        });
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ProxyUrlError::NoHost { url: shown() });
    }
    Ok(())
}

/// A proxy variable's value as a URL the client can use, as curl and Go read
/// them: without a scheme it is `http://`; the scheme must be http, https,
/// socks4, socks4a, socks5 or socks5h, and there must be a host.
pub fn env_proxy_url(value: &str) -> Result<String, ProxyUrlError> {
    let value = value.trim();
    let url = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    checked_proxy_url(
        &url,
        &["http", "https", "socks4", "socks4a", "socks5", "socks5h"],
        "http, https, socks4, socks4a, socks5 or socks5h",
    )?;
    Ok(url)
}

/// Checks a proxy URL as `--proxy` takes it: a URL with an http, https,
/// socks5 or socks5h scheme and a host.
pub fn check_proxy_url(url: &str) -> Result<(), ProxyUrlError> {
    checked_proxy_url(
        url,
        &["http", "https", "socks5", "socks5h"],
        "http, https, socks5 or socks5h",
    )
}

/// A URL without the password of its user info, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url).ok().filter(|u| u.has_host()) {
        Some(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        // Not a URL: drop anything that looks like user info.
        None => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_string(),
        },
    }
}

/// `text` with the password of `url` (raw and percent-decoded) masked.
fn redact_text(text: &str, url: &str) -> String {
    let mut out = text.to_string();
    if let Ok(u) = url::Url::parse(url)
        && let Some(p) = u.password()
    {
        let decoded = url::form_urlencoded::parse(format!("p={p}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        for secret in [p.to_string(), decoded] {
            if !secret.is_empty() {
                out = out.replace(&secret, "***");
            }
        }
    }
    out
}

/// The proxy a request to `scheme://...` goes through, for messages
/// (password masked): `--proxy`, else the environment's.
pub fn proxy_for(opts: &TransportOptions, scheme: &str) -> Option<String> {
    match &opts.proxy {
        Some(p) => Some(redact_url(p)),
        None => opts.env_proxies.for_scheme(scheme).map(|p| redact_url(p)),
    }
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

/// Turns a failed request into the error a user should see. A connection
/// that went through a proxy names it (without its password).
pub fn classify_send_error(
    registry: &str,
    what: &str,
    opts: &TransportOptions,
    e: &reqwest::Error,
) -> RegistryError {
    let mut detail = error_chain(e);
    let proxy = e.url().and_then(|u| proxy_for_url(opts, u));
    for secret in proxy_passwords(opts) {
        detail = detail.replace(&secret, "***");
    }
    if e.is_timeout() {
        RegistryError::Timeout {
            registry: registry.to_string(),
            what: what.to_string(),
            seconds: opts.timeout.as_secs(),
        }
    } else if is_tls_failure(e) {
        RegistryError::Tls {
            registry: registry.to_string(),
            detail,
        }
    } else {
        if let Some(p) = proxy {
            detail = format!("{detail} (through proxy {p})");
        }
        RegistryError::Connect {
            registry: registry.to_string(),
            detail,
        }
    }
}

/// Whether a request failed because the server's certificate did not
/// verify: some cause in its chain is rustls's certificate error (as such or
/// inside an I/O error). A server that does not speak TLS at all is not.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    has_certificate_error(e)
}

fn has_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let is_certificate = |err: &(dyn std::error::Error + 'static)| {
        matches!(
            err.downcast_ref::<rustls::Error>(),
            Some(
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::InvalidCertRevocationList(_)
            )
        )
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // I/O errors nest (the connector wraps the TLS stream's error) and
        // hide what they wrap from `source()`.
        let mut wrapped = Some(err);
        while let Some(w) = wrapped {
            if is_certificate(w) {
                return true;
            }
            wrapped = w
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|inner| inner as &(dyn std::error::Error + 'static));
        }
        cur = err.source();
    }
    false
}

/// The passwords of the proxies in use, raw and percent-decoded.
fn proxy_passwords(opts: &TransportOptions) -> Vec<String> {
    let mut out = Vec::new();
    for u in opts.proxy.iter().chain(opts.env_proxies.urls()) {
        if let Ok(parsed) = url::Url::parse(u)
            && let Some(p) = parsed.password()
        {
            let decoded = url::form_urlencoded::parse(format!("p={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            out.extend(
                [p.to_string(), decoded]
                    .into_iter()
                    .filter(|s| s.len() >= 3),
            );
        }
    }
    out
}

/// The proxy a request to `url` goes through (password masked), honouring
/// `NO_PROXY`; `None` for a direct connection.
pub fn proxy_for_url(opts: &TransportOptions, url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    let no_proxy = opts.env_proxies.no_proxy.as_deref().unwrap_or_default();
    if no_proxy_matches(no_proxy, host) {
        return None;
    }
    proxy_for(opts, url.scheme())
}

/// Whether a `NO_PROXY` list (curl's rules: `*`, domains matching
/// themselves and their subdomains, IP addresses and CIDR ranges) covers
/// `host`.
pub fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some(ip) = ip {
                if let Some((net, bits)) = entry.split_once('/') {
                    return cidr_contains(net, bits, ip);
                }
                return entry
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|e| e == ip);
            }
            let domain = entry.trim_start_matches('.').to_ascii_lowercase();
            host == domain || host.ends_with(&format!(".{domain}"))
        })
}

fn cidr_contains(net: &str, bits: &str, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_rules() {
        let list = "example.com, .corp.local,10.0.0.0/8, 127.0.0.1,[::1]";
        assert!(no_proxy_matches(list, "example.com"));
        assert!(no_proxy_matches(list, "registry.example.com"));
        assert!(!no_proxy_matches(list, "badexample.com"));
        assert!(no_proxy_matches(list, "a.corp.local"));
        assert!(no_proxy_matches(list, "corp.local"));
        assert!(no_proxy_matches(list, "10.1.2.3"));
        assert!(!no_proxy_matches(list, "11.1.2.3"));
        assert!(no_proxy_matches(list, "127.0.0.1"));
        assert!(!no_proxy_matches(list, "127.0.0.2"));
        assert!(no_proxy_matches(list, "[::1]"));
        assert!(no_proxy_matches("*", "anything"));
        assert!(!no_proxy_matches("", "anything"));
    }

    #[test]
    fn proxy_urls_are_checked_and_redacted() {
        assert!(check_proxy_url("http://proxy:3128").is_ok());
        assert!(check_proxy_url("socks5h://u:p@proxy:1080").is_ok());
        assert!(check_proxy_url("ftp://proxy").is_err());
        let e = check_proxy_url("gopher://u:hunter22@proxy")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter22"), "{e}");
        assert_eq!(
            redact_url("http://u:hunter22@proxy:3128"),
            "http://u:***@proxy:3128/"
        );
        assert_eq!(redact_url("u:hunter22@proxy"), "***@proxy");
        let opts = TransportOptions {
            proxy: Some("socks5://u:p%40ss@127.0.0.1:1080".into()),
            ..TransportOptions::default()
        };
        let pw = proxy_passwords(&opts);
        assert!(pw.contains(&"p%40ss".to_string()) && pw.contains(&"p@ss".to_string()));
    }

    #[test]
    fn certificate_failures_are_told_from_other_tls_failures_by_type() {
        use std::io::{Error, ErrorKind};
        let nested = |e: rustls::Error| Error::other(Error::new(ErrorKind::InvalidData, e));
        let bad_cert = nested(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(has_certificate_error(&bad_cert));
        // A plain-HTTP server answering a TLS hello: not a certificate problem.
        let not_tls = nested(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(!has_certificate_error(&not_tls));
        let text_only = Error::other("invalid peer certificate: UnknownIssuer");
        assert!(!has_certificate_error(&text_only));
    }

    #[test]
    fn environment_proxy_values() {
        assert_eq!(
            env_proxy_url("proxy.corp:3128").as_deref(),
            Ok("http://proxy.corp:3128")
        );
        assert_eq!(
            env_proxy_url(" http://10.0.0.1:3128 ").as_deref(),
            Ok("http://10.0.0.1:3128")
        );
        for ok in ["https://p:1", "socks4a://p", "socks5h://u:p@p:1080"] {
            assert!(env_proxy_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "socks://u:hunter22@p:1080/",
            "ftp://u:hunter22@p",
            "http://",
        ] {
            let e = env_proxy_url(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter22"), "{e}");
        }
    }

    fn with_env(env: EnvProxies) -> TransportOptions {
        TransportOptions {
            env_proxies: env,
            ..TransportOptions::default()
        }
    }

    #[test]
    fn the_proxy_of_a_request() {
        let url = |u: &str| url::Url::parse(u).unwrap();
        let opts = with_env(EnvProxies {
            https: Some("http://u:hunter22@secure:1".into()),
            http: Some("http://plain:2".into()),
            all: Some("socks5://any:3".into()),
            no_proxy: Some("internal.example,10.0.0.0/8".into()),
        });
        assert_eq!(
            proxy_for_url(&opts, &url("https://r.io/v2/")).as_deref(),
            Some("http://u:***@secure:1/")
        );
        assert_eq!(
            proxy_for_url(&opts, &url("http://r.io/v2/")).as_deref(),
            Some("http://plain:2/")
        );
        assert_eq!(
            proxy_for_url(&opts, &url("https://internal.example/")),
            None
        );
        assert_eq!(proxy_for_url(&opts, &url("http://10.1.2.3:5000/")), None);
        assert!(proxy_passwords(&opts).contains(&"hunter22".to_string()));
        assert!(!format!("{:?}", opts.env_proxies).contains("hunter22"));

        // ALL_PROXY covers what the others do not.
        let only_all = with_env(EnvProxies {
            all: Some("socks5://any:3".into()),
            ..EnvProxies::default()
        });
        assert_eq!(
            proxy_for(&only_all, "https").as_deref(),
            Some("socks5://any:3")
        );
        // --proxy beats the environment, and NO_PROXY still applies to it.
        let flag = TransportOptions {
            proxy: Some("http://flag:4".into()),
            ..opts.clone()
        };
        assert_eq!(
            proxy_for_url(&flag, &url("https://r.io/")).as_deref(),
            Some("http://flag:4/")
        );
        assert_eq!(
            proxy_for_url(&flag, &url("https://internal.example/")),
            None
        );
        assert_eq!(proxy_for(&TransportOptions::default(), "https"), None);
    }

    #[test]
    fn the_client_takes_the_resolved_proxies() {
        let opts = with_env(EnvProxies {
            https: Some("http://secure:1".into()),
            http: Some("http://plain:2".into()),
            all: Some("socks5h://any:3".into()),
            no_proxy: Some("internal.example".into()),
        });
        assert_eq!(proxies(&opts).unwrap().len(), 3);
        assert!(build_client(&opts).is_ok());
        let flag = TransportOptions {
            proxy: Some("http://flag:4".into()),
            ..opts
        };
        assert_eq!(proxies(&flag).unwrap().len(), 1, "--proxy alone");
        assert!(proxies(&TransportOptions::default()).unwrap().is_empty());
    }

    #[test]
    fn certs_d_directories() {
        let root = tempfile::tempdir().unwrap();
        let roots = vec![root.path().to_path_buf()];
        assert!(registry_tls(&roots, "r.example:5000").unwrap().is_none());
        let dir = root.path().join("r.example:5000");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("client.cert"), "not pem").unwrap();
        let e = registry_tls(&roots, "r.example:5000").unwrap_err();
        assert!(matches!(e, TransportError::MissingKey { .. }), "{e}");
        assert!(e.to_string().contains("client.key"), "{e}");
        std::fs::remove_file(dir.join("client.cert")).unwrap();
        std::fs::write(dir.join("ca.crt"), "garbage").unwrap();
        assert!(matches!(
            registry_tls(&roots, "r.example:5000").unwrap_err(),
            TransportError::CaParse { .. }
        ));
    }
}
