//! In-process proxies for integration tests: an HTTP proxy ([`HttpProxy`]: absolute-form requests
//! for `http://` targets and `CONNECT` tunnels, optionally demanding Basic
//! `Proxy-Authorization`) and a SOCKS5 proxy ([`SocksProxy`]: no authentication or RFC 1929
//! username/password, `CONNECT` to IPv4, IPv6 and domain-name addresses).
//!
//! Like the fake registry, each runs on `127.0.0.1:<free port>` on its own thread with its own
//! tokio runtime and stops when dropped. Both count the connections they accept and record where
//! each one wanted to go, so a test can prove that traffic went through them (or did not).
//! Neither keeps a client connection alive across requests: the HTTP proxy forwards one request
//! per connection (asking the origin to close after it), which every client copes with.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A listener on its own thread and runtime, handing each accepted connection to a handler.
struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start<H, F>(name: &str, handler: H) -> Self
    where
        H: Fn(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a test proxy");
        listener
            .set_nonblocking(true)
            .expect("making the proxy socket non-blocking");
        let addr = listener.local_addr().expect("proxy local address");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("building the proxy runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("registering the proxy socket");
                    loop {
                        tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => {
                                    tokio::spawn(handler(stream));
                                }
                                Err(e) => eprintln!("test proxy: accept failed: {e}"),
                            },
                            _ = &mut rx => break,
                        }
                    }
                });
                runtime.shutdown_background();
            })
            .expect("spawning the proxy thread");
        Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Relays bytes both ways until both sides are done; errors just end the relay.
async fn relay(mut client: TcpStream, mut upstream: TcpStream) {
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// HTTP proxy
// ---------------------------------------------------------------------------------------------

/// One request the HTTP proxy received.
#[derive(Clone, Debug)]
pub struct ProxiedRequest {
    /// `CONNECT`, `GET`, `POST`, ...
    pub method: String,
    /// `host:port` the client wanted to reach (port 80 when an `http://` URL names none).
    pub target: String,
    /// The request target as sent: `host:port` for `CONNECT`, an absolute URL otherwise.
    pub uri: String,
    /// The `Proxy-Authorization` header was present.
    pub sent_credentials: bool,
    /// The request was let through (credentials right, or none needed).
    pub authorized: bool,
}

#[derive(Default)]
struct HttpState {
    connections: usize,
    requests: Vec<ProxiedRequest>,
}

struct HttpShared {
    /// `Basic <base64>` the proxy demands, if any.
    expected: Option<String>,
    state: Mutex<HttpState>,
}

/// A running HTTP proxy; stops when dropped.
pub struct HttpProxy {
    shared: Arc<HttpShared>,
    server: Server,
}

impl HttpProxy {
    /// A proxy that lets everyone through.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A proxy that answers `407` unless `Proxy-Authorization: Basic user:pass` is sent.
    pub fn with_auth(user: &str, pass: &str) -> Self {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        Self::start_with(Some(format!("Basic {encoded}")))
    }

    fn start_with(expected: Option<String>) -> Self {
        let shared = Arc::new(HttpShared {
            expected,
            state: Mutex::new(HttpState::default()),
        });
        let handler_shared = shared.clone();
        let server = Server::start("http-proxy", move |stream| {
            serve_http(handler_shared.clone(), stream)
        });
        Self { shared, server }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.server.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `http://user:pass@127.0.0.1:PORT`.
    pub fn url_with(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@{}", self.addr())
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.shared.state).connections
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        lock(&self.shared.state).requests.clone()
    }

    /// The distinct `host:port` targets asked for, in first-seen order.
    pub fn targets(&self) -> Vec<String> {
        let mut targets: Vec<String> = Vec::new();
        for r in self.requests() {
            if !targets.contains(&r.target) {
                targets.push(r.target);
            }
        }
        targets
    }
}

/// Reads up to the end of the request head. Returns the head (without the blank line) and the
/// bytes that came after it.
async fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `http://host[:port]/path?query` -> (`host:port`, `/path?query`).
fn split_absolute(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit('@').next()?;
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    let target = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Some((target, path.to_string()))
}

async fn respond(stream: &mut TcpStream, status: &str, extra: &str) {
    let text =
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve_http(shared: Arc<HttpShared>, mut client: TcpStream) {
    lock(&shared.state).connections += 1;
    let Some((head, rest)) = read_head(&mut client).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        respond(&mut client, "400 Bad Request", "").await;
        return;
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let proxy_auth = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.clone());
    let authorized = shared
        .expected
        .as_ref()
        .is_none_or(|expected| proxy_auth.as_ref() == Some(expected));
    let connect = method.eq_ignore_ascii_case("CONNECT");
    let (target, path) = if connect {
        (uri.to_string(), None)
    } else {
        match split_absolute(uri) {
            Some((target, path)) => (target, Some(path)),
            None => {
                respond(&mut client, "400 Bad Request", "").await;
                return;
            }
        }
    };
    lock(&shared.state).requests.push(ProxiedRequest {
        method: method.to_string(),
        target: target.clone(),
        uri: uri.to_string(),
        sent_credentials: proxy_auth.is_some(),
        authorized,
    });
    if !authorized {
        respond(
            &mut client,
            "407 Proxy Authentication Required",
            "Proxy-Authenticate: Basic realm=\"test-proxy\"\r\n",
        )
        .await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        respond(&mut client, "502 Bad Gateway", "").await;
        return;
    };
    match path {
        None => {
            if client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_err()
                || upstream.write_all(&rest).await.is_err()
            {
                return;
            }
        }
        Some(path) => {
            let mut out = format!("{method} {path} {version}\r\n");
            for (name, value) in &headers {
                let lower = name.to_ascii_lowercase();
                if !matches!(
                    lower.as_str(),
                    "proxy-authorization" | "proxy-connection" | "connection" | "keep-alive"
                ) {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
            }
            out.push_str("Connection: close\r\n\r\n");
            if upstream.write_all(out.as_bytes()).await.is_err()
                || upstream.write_all(&rest).await.is_err()
            {
                return;
            }
        }
    }
    relay(client, upstream).await;
}

// ---------------------------------------------------------------------------------------------
// SOCKS5 proxy
// ---------------------------------------------------------------------------------------------

/// The address type of a SOCKS5 `CONNECT` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressType {
    Ipv4,
    /// A host name, resolved by the proxy (what `socks5h://` asks for).
    Domain,
    Ipv6,
}

/// One SOCKS5 `CONNECT` request.
#[derive(Clone, Debug)]
pub struct SocksConnect {
    /// `host:port` as the client sent it (`[v6]:port` for IPv6).
    pub target: String,
    pub address_type: AddressType,
    /// The RFC 1929 user name, when that method was used.
    pub user: Option<String>,
}

#[derive(Default)]
struct SocksState {
    connections: usize,
    connects: Vec<SocksConnect>,
    /// Username/password negotiations that failed (wrong credentials or method not offered).
    auth_failures: usize,
}

struct SocksShared {
    auth: Option<(String, String)>,
    state: Mutex<SocksState>,
}

/// A running SOCKS5 proxy; stops when dropped.
pub struct SocksProxy {
    shared: Arc<SocksShared>,
    server: Server,
}

impl SocksProxy {
    /// A proxy with the "no authentication" method.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A proxy that demands RFC 1929 username/password authentication with these credentials.
    pub fn with_auth(user: &str, pass: &str) -> Self {
        Self::start_with(Some((user.to_string(), pass.to_string())))
    }

    fn start_with(auth: Option<(String, String)>) -> Self {
        let shared = Arc::new(SocksShared {
            auth,
            state: Mutex::new(SocksState::default()),
        });
        let handler_shared = shared.clone();
        let server = Server::start("socks-proxy", move |stream| {
            serve_socks(handler_shared.clone(), stream)
        });
        Self { shared, server }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.server.addr.to_string()
    }

    /// `SCHEME://127.0.0.1:PORT` (`socks5` or `socks5h`).
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr())
    }

    /// `SCHEME://user:pass@127.0.0.1:PORT`.
    pub fn url_with(&self, scheme: &str, user: &str, pass: &str) -> String {
        format!("{scheme}://{user}:{pass}@{}", self.addr())
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.shared.state).connections
    }

    /// Every `CONNECT` request that got past authentication, in arrival order.
    pub fn connects(&self) -> Vec<SocksConnect> {
        lock(&self.shared.state).connects.clone()
    }

    /// Failed username/password negotiations.
    pub fn auth_failures(&self) -> usize {
        lock(&self.shared.state).auth_failures
    }
}

async fn read_bytes(stream: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

/// A SOCKS5 reply with `code` and an all-zero IPv4 bound address.
fn socks_reply(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

async fn serve_socks(shared: Arc<SocksShared>, mut client: TcpStream) {
    lock(&shared.state).connections += 1;
    // Greeting: VER NMETHODS METHODS...
    let Some(greeting) = read_bytes(&mut client, 2).await else {
        return;
    };
    if greeting[0] != 5 {
        return;
    }
    let Some(methods) = read_bytes(&mut client, usize::from(greeting[1])).await else {
        return;
    };
    let wanted = if shared.auth.is_some() { 2 } else { 0 };
    if !methods.contains(&wanted) {
        if wanted == 2 {
            lock(&shared.state).auth_failures += 1;
        }
        let _ = client.write_all(&[5, 0xff]).await;
        return;
    }
    if client.write_all(&[5, wanted]).await.is_err() {
        return;
    }
    let mut user = None;
    if let Some((want_user, want_pass)) = &shared.auth {
        // RFC 1929: VER ULEN UNAME PLEN PASSWD
        let Some(head) = read_bytes(&mut client, 2).await else {
            return;
        };
        let Some(name) = read_bytes(&mut client, usize::from(head[1])).await else {
            return;
        };
        let Some(plen) = read_bytes(&mut client, 1).await else {
            return;
        };
        let Some(pass) = read_bytes(&mut client, usize::from(plen[0])).await else {
            return;
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        let ok = head[0] == 1 && name == *want_user && pass == want_pass.as_bytes();
        if !ok {
            lock(&shared.state).auth_failures += 1;
            let _ = client.write_all(&[1, 1]).await;
            return;
        }
        if client.write_all(&[1, 0]).await.is_err() {
            return;
        }
        user = Some(name);
    }
    // Request: VER CMD RSV ATYP DST.ADDR DST.PORT
    let Some(request) = read_bytes(&mut client, 4).await else {
        return;
    };
    let (host, address_type) = match request[3] {
        1 => {
            let Some(ip) = read_bytes(&mut client, 4).await else {
                return;
            };
            (
                format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]),
                AddressType::Ipv4,
            )
        }
        3 => {
            let Some(len) = read_bytes(&mut client, 1).await else {
                return;
            };
            let Some(name) = read_bytes(&mut client, usize::from(len[0])).await else {
                return;
            };
            (
                String::from_utf8_lossy(&name).into_owned(),
                AddressType::Domain,
            )
        }
        4 => {
            let Some(ip) = read_bytes(&mut client, 16).await else {
                return;
            };
            let octets: [u8; 16] = ip.try_into().unwrap_or([0; 16]);
            (
                format!("[{}]", std::net::Ipv6Addr::from(octets)),
                AddressType::Ipv6,
            )
        }
        _ => {
            let _ = client.write_all(&socks_reply(8)).await;
            return;
        }
    };
    let Some(port) = read_bytes(&mut client, 2).await else {
        return;
    };
    let target = format!("{host}:{}", u16::from_be_bytes([port[0], port[1]]));
    lock(&shared.state).connects.push(SocksConnect {
        target: target.clone(),
        address_type,
        user,
    });
    if request[1] != 1 {
        // Only CONNECT.
        let _ = client.write_all(&socks_reply(7)).await;
        return;
    }
    // `connect` tries every address a name resolves to (`localhost` may be ::1 first).
    let Ok(upstream) = TcpStream::connect(&target).await else {
        let _ = client.write_all(&socks_reply(5)).await;
        return;
    };
    if client.write_all(&socks_reply(0)).await.is_err() {
        return;
    }
    relay(client, upstream).await;
}
