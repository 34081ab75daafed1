//! An in-process fake OCI distribution registry for integration tests.
//!
//! It serves `GET /v2/`, `GET|HEAD /v2/<name>/manifests/<reference>` and
//! `GET|HEAD /v2/<name>/blobs/<digest>` (with `Range`) from memory, speaks the distribution error
//! envelope, and can demand Basic or Bearer authentication (with its own `/token` endpoint, which
//! speaks the classic `GET` and the OAuth2 `POST` forms; see [`Config`] for refresh tokens,
//! `expires_in`/`issued_at` claims and how long tokens really last).
//! Every request is logged and blob traffic is counted so tests can assert what the client did;
//! token requests and issued tokens are recorded too ([`FakeRegistry::token_log`],
//! [`FakeRegistry::issued_tokens`]).
//! Every misbehaviour comes from one fault table: a list of [`Fault`]s, each a [`Match`] (path
//! suffix, blob digest, method, [`Kind`] of endpoint, ranged requests only), an [`Action`] (a
//! canned status with headers and body, other bytes for a blob, pacing, a stall after N bytes, a
//! redirect to another host name, ignoring `Range`, a [`BodyFault`]: a body that resets, ends
//! early, drips, never ends or answers a `Range` wrongly; manifests streamed without
//! `Content-Length` or dripped) and how many requests it is good for. Faults are added with
//! [`FakeRegistry::add_fault`] and consulted in the order added, in one place in the request path.
//! The shorthands [`FakeRegistry::inject`], [`FakeRegistry::corrupt_blob`],
//! [`FakeRegistry::throttle_blobs`], [`FakeRegistry::stall_blob`],
//! [`FakeRegistry::redirect_blobs`], [`FakeRegistry::ignore_ranges`], [`FakeRegistry::blob_fault`],
//! [`FakeRegistry::stream_manifests`] and [`FakeRegistry::drip_manifests`] add (or, turning a
//! behaviour off, remove) entries of that table.
//!
//! It takes uploads as distribution does: `POST /v2/<name>/blobs/uploads/` opens a session (`202`,
//! `Location`, `Range: 0-0`, `Docker-Upload-UUID`), or mounts with `?mount=&from=` (`201` when
//! the blob is in `from` and [`Mounts::Allowed`]), or takes a whole blob with `?digest=`; `PATCH`
//! appends (a `Content-Range` must start at the session's offset, else `416`), `PUT ?digest=`
//! appends its body and commits after checking the sha256 (`400 DIGEST_INVALID` otherwise, and
//! the session is gone), `GET` tells the `Range` held, `DELETE` cancels. `PUT` of a manifest
//! checks that the blobs (and, for an index, the manifests) it names are there
//! (`400 MANIFEST_BLOB_UNKNOWN`). Pushing needs the push scope (see [`PushGrant`]); chunked
//! uploads can be ignored or refused ([`Chunked`]); bytes received are counted per blob
//! ([`FakeRegistry::uploaded_bytes`]). An upload request can be cut off after N bytes of its body
//! ([`Action::ResetRequest`]).
//!
//! The server runs on its own thread with its own tokio runtime, so plain synchronous `#[test]`
//! functions can start one, run the binary against it and inspect it afterwards. It is dropped
//! (and its thread joined) with the [`FakeRegistry`] value.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::json;

use super::image::{Blob, Image, Index, sha256_digest};

/// The `service` the Bearer challenge names.
pub const SERVICE: &str = "fake-registry";

/// How the registry authenticates clients.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// Everything is public.
    #[default]
    None,
    /// HTTP Basic on every endpoint: `401` with `WWW-Authenticate: Basic realm="fake"` otherwise.
    Basic { user: String, pass: String },
    /// Docker token auth: registry endpoints want `Authorization: Bearer <token>` issued by
    /// `/token` for a scope covering the repository. With `user_pass`, `/token` demands those
    /// credentials (Basic on `GET`, `grant_type=password` on `POST`) or the configured
    /// [`Config::refresh_token`]; without, it hands out tokens anonymously.
    Bearer { user_pass: Option<(String, String)> },
}

impl Auth {
    /// `Auth::Basic` from string slices.
    pub fn basic(user: &str, pass: &str) -> Self {
        Auth::Basic {
            user: user.to_string(),
            pass: pass.to_string(),
        }
    }

    /// `Auth::Bearer` with anonymous token issuance.
    pub fn bearer_anonymous() -> Self {
        Auth::Bearer { user_pass: None }
    }

    /// `Auth::Bearer` whose token endpoint requires these credentials.
    pub fn bearer(user: &str, pass: &str) -> Self {
        Auth::Bearer {
            user_pass: Some((user.to_string(), pass.to_string())),
        }
    }
}

/// What the token endpoint puts in `issued_at`.
#[derive(Clone, Debug, Default)]
pub enum IssuedAt {
    /// The time the token was issued (RFC 3339, UTC).
    #[default]
    Now,
    /// That long before the token was really issued (a token that is partly used up).
    Ago(Duration),
    /// Exactly this string.
    Fixed(String),
    /// Like [`IssuedAt::Ago`], with fractional seconds and `prefix` before it (white space a
    /// parser should trim, such as U+3000): `<prefix>YYYY-MM-DDTHH:MM:SS.5Z`.
    AgoPadded { ago: Duration, prefix: String },
    /// No `issued_at` field.
    Absent,
}

/// Whether `POST ?mount=&from=` mounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mounts {
    /// A blob that is in `from` is mounted (`201`).
    #[default]
    Allowed,
    /// Never: a mount request opens an ordinary upload (`202`), as a registry that does not
    /// mount across repositories answers.
    Refused,
}

/// What the registry does with `PATCH`es (chunks of an upload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chunked {
    /// Appends them.
    #[default]
    Accepted,
    /// Answers `202` but drops the bytes: the `Range` never advances.
    Ignored,
    /// Answers `416`; only a whole blob in the final `PUT` is taken.
    Refused,
}

/// Who may push.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PushGrant {
    /// Anyone with the registry's credentials: with [`Auth::Bearer`], tokens issued to
    /// authenticated requests carry `push`, anonymous ones never; with [`Auth::Basic`], the user;
    /// with [`Auth::None`], everyone.
    #[default]
    Authenticated,
    /// Nobody (accounts that may pull only): tokens never carry `push` (a push gets `401` with an
    /// `insufficient_scope` challenge), and without token auth a push gets `403 DENIED`.
    Nobody,
}

/// Settings for [`FakeRegistry::start`].
#[derive(Clone, Debug)]
pub struct Config {
    pub auth: Auth,
    /// With [`Auth::Bearer`]: an OAuth2 refresh (identity) token the token endpoint accepts, as
    /// `POST grant_type=refresh_token&refresh_token=...` or as the password of a Basic `GET`.
    pub refresh_token: Option<String>,
    /// When set, every `POST /token` is answered with this status (e.g. `404`, a token server
    /// without OAuth2 support), which forces the client back to `GET`.
    pub post_token_status: Option<u16>,
    /// The `expires_in` the token endpoint claims, in seconds (`None`: no such field).
    pub expires_in: Option<u64>,
    /// The `issued_at` the token endpoint claims.
    pub issued_at: IssuedAt,
    /// How long an issued token is really accepted, whatever `expires_in` says (`None`: forever).
    /// An older token gets `401` with a fresh challenge carrying `error="invalid_token"`.
    pub token_validity: Option<Duration>,
    /// Whether cross-repository mounts happen.
    pub mounts: Mounts,
    /// What `PATCH` does.
    pub chunked: Chunked,
    /// Who may push.
    pub push: PushGrant,
    /// Tags per `tags/list` page when the client names no `n` (`None`: all on one page).
    pub tags_page: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            auth: Auth::None,
            refresh_token: None,
            post_token_status: None,
            expires_in: Some(300),
            issued_at: IssuedAt::Now,
            token_validity: None,
            mounts: Mounts::default(),
            chunked: Chunked::default(),
            push: PushGrant::default(),
            tags_page: None,
        }
    }
}

impl Config {
    /// A registry with the given authentication mode.
    pub fn with_auth(auth: Auth) -> Self {
        Self {
            auth,
            ..Self::default()
        }
    }

    /// Pages of `n` tags when the client asks for none.
    pub fn tags_page(mut self, n: usize) -> Self {
        self.tags_page = Some(n);
        self
    }

    /// Accept this OAuth2 refresh (identity) token at the token endpoint.
    pub fn refresh_token(mut self, token: &str) -> Self {
        self.refresh_token = Some(token.to_string());
        self
    }

    /// Answer every `POST /token` with `status`.
    pub fn post_token_status(mut self, status: u16) -> Self {
        self.post_token_status = Some(status);
        self
    }

    /// The `expires_in` claimed in token responses (`None`: left out).
    pub fn expires_in(mut self, seconds: Option<u64>) -> Self {
        self.expires_in = seconds;
        self
    }

    /// The `issued_at` claimed in token responses.
    pub fn issued_at(mut self, issued_at: IssuedAt) -> Self {
        self.issued_at = issued_at;
        self
    }

    /// How long tokens are really accepted.
    pub fn token_validity(mut self, validity: Duration) -> Self {
        self.token_validity = Some(validity);
        self
    }

    /// Whether cross-repository mounts happen.
    pub fn mounts(mut self, mounts: Mounts) -> Self {
        self.mounts = mounts;
        self
    }

    /// What `PATCH` does.
    pub fn chunked(mut self, chunked: Chunked) -> Self {
        self.chunked = chunked;
        self
    }

    /// Who may push.
    pub fn push(mut self, push: PushGrant) -> Self {
        self.push = push;
        self
    }
}

/// How a request to the token endpoint authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenAuth {
    /// No credentials.
    Anonymous,
    /// `GET` with HTTP Basic.
    Basic { user: String, pass: String },
    /// `POST grant_type=refresh_token`.
    RefreshToken(String),
    /// `POST grant_type=password`.
    Password { user: String, pass: String },
    /// A `POST` with a grant type the fake does not know (or none).
    OtherGrant(Option<String>),
}

/// One request to the token endpoint.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    pub auth: TokenAuth,
    /// `service` (query or form).
    pub service: Option<String>,
    /// Every `scope` value, split at spaces.
    pub scopes: Vec<String>,
    /// `client_id` (query or form).
    pub client_id: Option<String>,
    /// The status the endpoint answered with.
    pub status: u16,
    /// The token handed out, if any.
    pub issued: Option<String>,
}

impl TokenRequest {
    /// Whether a token was handed out.
    pub fn ok(&self) -> bool {
        self.issued.is_some()
    }

    /// Whether the request asked for `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// One request as the registry saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// The client's port: which connection the request came on.
    pub connection: u16,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The `Accept` header, verbatim.
    pub accept: Option<String>,
    /// The scheme of the `Authorization` header (`Basic`, `Bearer`), never the secret.
    pub auth_scheme: Option<String>,
    /// The `Range` header, verbatim.
    pub range: Option<String>,
    /// The `Content-Range` header, verbatim.
    pub content_range: Option<String>,
    /// Bytes of the request body received (up to where a [`Action::ResetRequest`] cut it).
    pub body_bytes: usize,
    /// The status code the registry answered with (`0`: the connection was cut).
    pub status: u16,
}

/// The endpoints a [`Match`] can be limited to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// Every request.
    #[default]
    Any,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest,
    /// `/v2/<name>/blobs/<digest>` and its redirect target `/cdn/<name>/<digest>`.
    Blob,
    /// `/token`.
    Token,
    /// `/v2/<name>/blobs/uploads/` and the upload sessions below it.
    Upload,
}

/// Which requests a [`Fault`] applies to: every condition that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    /// The path ends with this (a digest, `/manifests/v1`, `/token`, `/v2/`); `/cdn/` paths
    /// included.
    pub path_suffix: Option<String>,
    /// Blob requests (under `/v2/` or `/cdn/`) for this digest.
    pub digest: Option<String>,
    /// Requests with this method.
    pub method: Option<Method>,
    /// Requests for this kind of endpoint.
    pub kind: Kind,
    /// Requests with a `Range` header the registry honours (for blob actions: one no
    /// [`Action::IgnoreRange`] fault set aside).
    pub ranged: bool,
}

impl Match {
    /// Every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Requests whose path ends with `suffix`.
    pub fn path(suffix: &str) -> Self {
        Self {
            path_suffix: Some(suffix.to_string()),
            ..Self::default()
        }
    }

    /// Every blob request (`/v2/` and `/cdn/`).
    pub fn blobs() -> Self {
        Self {
            kind: Kind::Blob,
            ..Self::default()
        }
    }

    /// Blob requests for `digest`.
    pub fn blob(digest: &str) -> Self {
        Self {
            digest: Some(digest.to_string()),
            ..Self::blobs()
        }
    }

    /// Every manifest request.
    pub fn manifests() -> Self {
        Self {
            kind: Kind::Manifest,
            ..Self::default()
        }
    }

    /// Requests to upload endpoints (`POST .../blobs/uploads/` and the sessions: `PATCH`, `PUT`,
    /// `GET`, `DELETE`).
    pub fn uploads() -> Self {
        Self {
            kind: Kind::Upload,
            ..Self::default()
        }
    }

    /// Requests to the token endpoint.
    pub fn token() -> Self {
        Self {
            kind: Kind::Token,
            ..Self::default()
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Only ranged requests.
    pub fn ranged(mut self) -> Self {
        self.ranged = true;
        self
    }

    /// Whether `request` is one of these (`ranged`: whether its `Range` counts).
    fn matches(&self, request: &Incoming, ranged: bool) -> bool {
        let target = request.target;
        let kind = match self.kind {
            Kind::Any => true,
            Kind::Manifest => matches!(target, Target::Manifest { .. }),
            Kind::Blob => matches!(target, Target::Blob { .. }),
            Kind::Token => matches!(target, Target::Token),
            Kind::Upload => matches!(target, Target::Upload { .. }),
        };
        kind && (ranged || !self.ranged)
            && self
                .path_suffix
                .as_ref()
                .is_none_or(|suffix| request.path.ends_with(suffix.as_str()))
            && self.method.as_ref().is_none_or(|m| m == request.method)
            && self.digest.as_ref().is_none_or(
                |wanted| matches!(target, Target::Blob { digest, .. } if digest == wanted),
            )
    }
}

/// What a [`Fault`] does to a request it matches.
///
/// [`Action::Respond`] answers any request before anything else (authentication included).
/// The others shape the response a request would get: [`Action::Redirect`] an authorized `/v2/`
/// blob request; the blob actions the response for a stored blob; the manifest actions the
/// response for a stored manifest. Actions that shape a body apply to `GET`s only.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer `status` with `headers` and `body` instead of serving the request.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// `307 Temporary Redirect` to `http://<host>:<port>/cdn/<name>/<digest>` on this same
    /// server, which serves the blob without asking for credentials (like a CDN); `/v2/` blob
    /// requests only.
    Redirect { host: String },
    /// Serve these bytes instead of the stored blob (the headers follow them).
    ServeBytes(Vec<u8>),
    /// Ignore `Range` and answer `200` with the whole blob, like a server without range support.
    IgnoreRange,
    /// The blob body misbehaves as the [`BodyFault`] says. `Reset` and `Truncate` win over a
    /// stall, a stall wins over `Drip`, and `Drip` replaces any pacing.
    Body(BodyFault),
    /// Send this many bytes of the blob body, then nothing more until the client gives up (the
    /// headers promise the full length).
    StallAfter(usize),
    /// Send the blob body at this pace.
    Pace(Throttle),
    /// Send the manifest without `Content-Length`, in 64 KiB chunks (a streaming server, so a
    /// client cannot tell the size before reading).
    StreamManifest,
    /// Send the manifest body one byte at a time, one every this long.
    DripManifest(Duration),
    /// Answer (as otherwise) only after this long; any request.
    Delay(Duration),
    /// Upload requests with a body (`PATCH`, `PUT`, `POST`): read `after` bytes of the body (a
    /// session keeps them, as a registry that wrote them to storage does), then drop the
    /// connection without an answer, as a reset mid-request looks to the client.
    ResetRequest { after: usize },
    /// Like [`Action::ResetRequest`], but instead of dropping the connection stop reading it (a
    /// registry that stopped taking the body) until the client gives up.
    StallRequest { after: usize },
}

/// One entry of the fault table: `action` for the next `times` requests `when` matches
/// (`usize::MAX`: every one). See [`FakeRegistry::add_fault`].
#[derive(Clone, Debug)]
pub struct Fault {
    pub when: Match,
    pub action: Action,
    pub times: usize,
}

impl Fault {
    /// `action` for the next request `when` matches.
    pub fn new(when: Match, action: Action) -> Self {
        Self {
            when,
            action,
            times: 1,
        }
    }

    /// Answer `status` once for paths ending in `path_suffix` (e.g. a digest, `/manifests/v1`).
    pub fn status(path_suffix: &str, status: u16) -> Self {
        Self::new(
            Match::path(path_suffix),
            Action::Respond {
                status,
                headers: Vec::new(),
                body: String::new(),
            },
        )
    }

    /// Apply to the first `times` matching requests (`usize::MAX` for always).
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    /// Apply to every matching request.
    pub fn always(self) -> Self {
        self.times(usize::MAX)
    }

    /// Only for requests with this method.
    pub fn method(mut self, method: Method) -> Self {
        self.when.method = Some(method);
        self
    }

    /// Adds a response header (e.g. `Retry-After`) to an [`Action::Respond`].
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let Action::Respond { headers, .. } = &mut self.action else {
            panic!("Fault::header needs Action::Respond, not {:?}", self.action);
        };
        headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body of an [`Action::Respond`].
    pub fn body(mut self, text: &str) -> Self {
        let Action::Respond { body, .. } = &mut self.action else {
            panic!("Fault::body needs Action::Respond, not {:?}", self.action);
        };
        *body = text.to_string();
        self
    }
}

/// Sends a blob body `chunk` bytes at a time with `delay` between chunks.
#[derive(Clone, Copy, Debug)]
pub struct Throttle {
    pub chunk: usize,
    pub delay: Duration,
}

/// How a blob body misbehaves (see [`Action::Body`] and [`FakeRegistry::blob_fault`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyFault {
    /// Send `after` bytes of the body, then fail the stream: the connection is torn down
    /// mid-body (what a reset looks like to the client). The headers promise the full length.
    Reset { after: usize },
    /// Send `after` bytes, then end the body cleanly although `Content-Length` promised more.
    Truncate { after: usize },
    /// Send the body one byte at a time, one every `every` (a link that never quite stalls).
    Drip { every: Duration },
    /// Answer `200` without `Content-Length` and send zero bytes without end.
    Endless,
    /// Ranged GETs only: answer `416 Range Not Satisfiable`.
    RangeNotSatisfiable,
    /// Ranged GETs only: answer `206` with the whole blob and `Content-Range: bytes 0-..`,
    /// whatever start was asked for.
    WrongContentRange,
    /// Ranged GETs only: answer `206` whose `Content-Range` names the range asked for but whose
    /// bytes start `shift` bytes earlier (a server that lies; only the digest can tell).
    ShiftedRange { shift: usize },
}

impl BodyFault {
    /// Whether the fault only means something for ranged GETs.
    fn ranged_only(&self) -> bool {
        matches!(
            self,
            BodyFault::RangeNotSatisfiable
                | BodyFault::WrongContentRange
                | BodyFault::ShiftedRange { .. }
        )
    }
}

#[derive(Default)]
struct Repo {
    /// Tag or digest -> (media type, bytes).
    manifests: HashMap<String, (String, Vec<u8>)>,
    /// Digest -> bytes.
    blobs: HashMap<String, Vec<u8>>,
}

/// An upload in progress.
struct UploadSession {
    repo: String,
    data: Vec<u8>,
    /// Body bytes that arrived for it, dropped ones included.
    received: u64,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    /// Upload sessions by id.
    uploads: HashMap<String, UploadSession>,
    /// Upload sessions opened so far (for ids).
    upload_count: u64,
    /// Body bytes received by upload endpoints, by the digest they were committed (or refused)
    /// as.
    uploaded: HashMap<String, u64>,
    /// Body bytes received by upload endpoints in all.
    upload_bytes: u64,
    log: Vec<Request>,
    /// Every connection accepted: its client port, and how many requests were answered
    /// before it was.
    accepted: Vec<(u16, usize)>,
    blob_gets: HashMap<String, usize>,
    blob_bytes_sent: u64,
    token_requests: usize,
    /// Issued token -> what it grants.
    tokens: HashMap<String, Grant>,
    /// Every request to the token endpoint.
    token_log: Vec<TokenRequest>,
    /// Issued tokens in issue order (never forgotten, even by `reset_log`).
    issued: Vec<String>,
    /// The fault table, in the order faults were added.
    faults: Vec<Fault>,
    /// Blob bodies being sent right now, and the most at once.
    in_flight: usize,
    max_in_flight: usize,
}

/// What an issued token allows.
#[derive(Clone, Debug)]
struct Grant {
    /// Repositories it may pull.
    repos: HashSet<String>,
    /// Repositories it may push to.
    push: HashSet<String>,
    /// When it was really issued.
    at: Instant,
}

/// What a blob body does once it has sent what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Everything was sent.
    Complete,
    /// Go silent, connection open.
    Stall,
    /// Fail the stream (connection torn down).
    Reset,
    /// End the stream early.
    Truncate,
}

struct Shared {
    auth: Auth,
    config: Config,
    addr: SocketAddr,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the original failure.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake registry; stops when dropped.
pub struct FakeRegistry {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    /// Starts a registry on `127.0.0.1:<free port>`.
    pub fn start(config: Config) -> Self {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fake registry");
        listener
            .set_nonblocking(true)
            .expect("making the fake registry socket non-blocking");
        let addr = listener.local_addr().expect("fake registry local address");
        let shared = Arc::new(Shared {
            auth: config.auth.clone(),
            config,
            addr,
            state: Mutex::new(State::default()),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app_state = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-registry-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("building the fake registry runtime");
                runtime.block_on(async move {
                    let listener = Counted {
                        inner: tokio::net::TcpListener::from_std(listener)
                            .expect("registering the fake registry socket"),
                        shared: app_state.clone(),
                    };
                    let app = Router::new().fallback(
                        move |ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
                              method: Method,
                              uri: Uri,
                              headers: HeaderMap,
                              body: Body| {
                            let shared = app_state.clone();
                            let call = Call {
                                peer,
                                method,
                                uri,
                                headers,
                            };
                            async move { handle(shared, call, body).await }
                        },
                    );
                    let app = app.into_make_service_with_connect_info::<Peer>();
                    tokio::select! {
                        result = axum::serve(listener, app) => {
                            if let Err(e) = result {
                                eprintln!("fake registry stopped: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                runtime.shutdown_background();
            })
            .expect("spawning the fake registry thread");
        Self {
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// A registry without authentication.
    pub fn anonymous() -> Self {
        Self::start(Config::default())
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.shared.addr.to_string()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// `127.0.0.1:PORT/<repo>:<tag>`, a reference to pass to the binary.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr())
    }

    /// `127.0.0.1:PORT/<repo>@<digest>`.
    pub fn digest_reference(&self, repo: &str, digest: &str) -> String {
        format!("{}/{repo}@{digest}", self.addr())
    }

    /// Stores a blob in `repo`.
    pub fn put_blob(&self, repo: &str, blob: &Blob) {
        self.put_blob_bytes(repo, &blob.digest, blob.data.clone());
    }

    /// Stores `data` under `digest` without checking that they match.
    pub fn put_blob_bytes(&self, repo: &str, digest: &str, data: Vec<u8>) {
        let mut state = self.shared.lock();
        let repo = state.repos.entry(repo.to_string()).or_default();
        repo.blobs.insert(digest.to_string(), data);
    }

    /// Stores a manifest under `reference` (a tag, or a digest) and always under its own digest.
    /// Returns that digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let digest = sha256_digest(bytes);
        let mut state = self.shared.lock();
        let repo = state.repos.entry(repo.to_string()).or_default();
        let entry = (media_type.to_string(), bytes.to_vec());
        repo.manifests.insert(digest.clone(), entry.clone());
        repo.manifests.insert(reference.to_string(), entry);
        digest
    }

    /// Stores an image's blobs and manifest, tagged `tag`.
    pub fn push_image(&self, repo: &str, tag: &str, image: &Image) {
        for blob in image.blobs() {
            self.put_blob(repo, blob);
        }
        self.put_manifest(repo, tag, &image.manifest.media_type, &image.manifest.data);
    }

    /// Stores an index, every manifest it lists (by digest) and all their blobs; tags the index.
    pub fn push_index(&self, repo: &str, tag: &str, index: &Index) {
        for image in index.images.iter().chain(&index.extra_manifests) {
            self.push_image(repo, &image.manifest.digest, image);
        }
        self.put_manifest(repo, tag, &index.index.media_type, &index.index.data);
    }

    /// Removes a blob (e.g. to prove a later pull did not need it).
    pub fn delete_blob(&self, repo: &str, digest: &str) {
        if let Some(repo) = self.shared.lock().repos.get_mut(repo) {
            repo.blobs.remove(digest);
        }
    }

    /// Adds `fault` to the end of the fault table (see [`Fault`], [`Match`] and [`Action`]).
    ///
    /// For each request the table is consulted in the order faults were added: of each action
    /// the first fault whose [`Match`] holds and that has `times` left is picked (and one of its
    /// `times` used up, unless it is `usize::MAX`), and only when the request gets as far as
    /// that action: a picked [`Action::Respond`] answers the request at once, a picked
    /// [`Action::Redirect`] answers a `/v2/` blob request, and the blob or manifest actions
    /// picked then shape the response together.
    pub fn add_fault(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Adds a fault, usually a canned failure from [`Fault::status`] (the same as
    /// [`FakeRegistry::add_fault`]).
    pub fn inject(&self, fault: Fault) {
        self.add_fault(fault);
    }

    /// Removes the faults matching exactly `when` whose action is `same`, then adds `action`
    /// (if any) for every request `when` matches: what the on/off setters below do, so that the
    /// last setting wins.
    fn set_fault(&self, when: Match, same: fn(&Action) -> bool, action: Option<Action>) {
        let mut state = self.shared.lock();
        state
            .faults
            .retain(|fault| fault.when != when || !same(&fault.action));
        if let Some(action) = action {
            state.faults.push(Fault::new(when, action).always());
        }
    }

    /// Serves `data` instead of the stored blob `digest` (in every repository):
    /// [`Action::ServeBytes`] for [`Match::blob`], replacing an earlier `corrupt_blob`.
    pub fn corrupt_blob(&self, digest: &str, data: Vec<u8>) {
        self.set_fault(
            Match::blob(digest),
            |a| matches!(a, Action::ServeBytes(_)),
            Some(Action::ServeBytes(data)),
        );
    }

    /// Paces every blob body: `chunk` bytes, then `delay`, and so on (for progress, concurrency
    /// and interruption tests). `None` turns pacing off. [`Action::Pace`] for [`Match::blobs`].
    pub fn throttle_blobs(&self, throttle: Option<Throttle>) {
        self.set_fault(
            Match::blobs(),
            |a| matches!(a, Action::Pace(_)),
            throttle.map(Action::Pace),
        );
    }

    /// The next `times` GETs of blob `digest` send only `after` bytes, then stall (the connection
    /// stays open and silent) until the client hangs up. [`Action::StallAfter`].
    pub fn stall_blob(&self, digest: &str, after: usize, times: usize) {
        self.add_fault(Fault::new(Match::blob(digest), Action::StallAfter(after)).times(times));
    }

    /// Answers blob GETs with `307 Temporary Redirect` to `http://<host>:<port>/cdn/<name>/<digest>`
    /// on this same server, which serves the blob without asking for credentials (like a CDN).
    /// Use another spelling of the loopback address (`localhost`) to make the redirect cross-host.
    /// [`Action::Redirect`] for blob GETs, replacing an earlier `redirect_blobs`.
    pub fn redirect_blobs(&self, host: &str) {
        self.set_fault(
            Match::blobs().method(Method::GET),
            |a| matches!(a, Action::Redirect { .. }),
            Some(Action::Redirect {
                host: host.to_string(),
            }),
        );
    }

    /// Ignores `Range` headers on blobs and always answers `200` with the whole blob
    /// ([`Action::IgnoreRange`] for [`Match::blobs`]; `false` removes it).
    pub fn ignore_ranges(&self, ignore: bool) {
        self.set_fault(
            Match::blobs(),
            |a| matches!(a, Action::IgnoreRange),
            ignore.then_some(Action::IgnoreRange),
        );
    }

    /// The next `times` GETs of blob `digest` misbehave as `fault` says (for the `Range` faults,
    /// the next `times` ranged GETs). Faults are used in the order they were added.
    /// [`Action::Body`] for [`Match::blob`] (made [`Match::ranged`] for the `Range` faults).
    pub fn blob_fault(&self, digest: &str, fault: BodyFault, times: usize) {
        let when = if fault.ranged_only() {
            Match::blob(digest).ranged()
        } else {
            Match::blob(digest)
        };
        self.add_fault(Fault::new(when, Action::Body(fault)).times(times));
    }

    /// Sends manifest bodies without `Content-Length`, in chunks (a streaming server, so a
    /// client cannot tell the size before reading). [`Action::StreamManifest`] for
    /// [`Match::manifests`]; `false` removes it.
    pub fn stream_manifests(&self, on: bool) {
        self.set_fault(
            Match::manifests(),
            |a| matches!(a, Action::StreamManifest),
            on.then_some(Action::StreamManifest),
        );
    }

    /// Sends manifest bodies one byte every `every` (`None`: all at once again).
    /// [`Action::DripManifest`] for [`Match::manifests`].
    pub fn drip_manifests(&self, every: Option<Duration>) {
        self.set_fault(
            Match::manifests(),
            |a| matches!(a, Action::DripManifest(_)),
            every.map(Action::DripManifest),
        );
    }

    /// GET requests for blob `digest` (under `/v2/` or `/cdn/`), in arrival order.
    pub fn blob_requests(&self, digest: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/{digest}")))
            .collect()
    }

    /// The most blob bodies that were being sent at the same time.
    pub fn max_blobs_in_flight(&self) -> usize {
        self.shared.lock().max_in_flight
    }

    /// Every request so far, in the order they were answered.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().log.clone()
    }

    /// Every connection accepted so far: its client port ([`Request::connection`]) and how many
    /// requests of [`requests`](Self::requests) were answered before it was accepted.
    pub fn connections(&self) -> Vec<(u16, usize)> {
        self.shared.lock().accepted.clone()
    }

    /// Forgets the request log and all counters (stored content and faults stay).
    pub fn reset_log(&self) {
        let mut state = self.shared.lock();
        state.log.clear();
        state.accepted.clear();
        state.blob_gets.clear();
        state.blob_bytes_sent = 0;
        state.token_requests = 0;
        state.token_log.clear();
    }

    /// GET requests for blob `digest` under `/v2/` (ranged or not, whatever the status, faults
    /// included; redirected `/cdn/` fetches are in [`FakeRegistry::requests`] only).
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.shared
            .lock()
            .blob_gets
            .get(digest)
            .copied()
            .unwrap_or(0)
    }

    /// GET requests for any blob.
    pub fn total_blob_gets(&self) -> usize {
        self.shared.lock().blob_gets.values().sum()
    }

    /// Bytes of blob bodies handed to connections (200 and 206 responses, `/cdn/` included).
    pub fn blob_bytes_sent(&self) -> u64 {
        self.shared.lock().blob_bytes_sent
    }

    /// Requests to `/token`.
    pub fn token_requests(&self) -> usize {
        self.shared.lock().token_requests
    }

    /// Every request to the token endpoint, in arrival order (faults excluded).
    pub fn token_log(&self) -> Vec<TokenRequest> {
        self.shared.lock().token_log.clone()
    }

    /// Every token handed out so far, in issue order (including [`FakeRegistry::add_token`]).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().issued.clone()
    }

    /// Makes `token` a valid Bearer token for pulling `repos`, as if issued now (a token that
    /// never went through `/token`, like a docker config `registrytoken`).
    pub fn add_token(&self, token: &str, repos: &[&str]) {
        let mut state = self.shared.lock();
        state.tokens.insert(
            token.to_string(),
            Grant {
                repos: repos.iter().map(|r| r.to_string()).collect(),
                push: HashSet::new(),
                at: Instant::now(),
            },
        );
        state.issued.push(token.to_string());
    }

    /// The stored bytes of blob `digest` in `repo`.
    pub fn blob(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        let state = self.shared.lock();
        state.repos.get(repo)?.blobs.get(digest).cloned()
    }

    /// The media type and bytes stored under `reference` (a tag or a digest) in `repo`.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Vec<u8>)> {
        let state = self.shared.lock();
        state.repos.get(repo)?.manifests.get(reference).cloned()
    }

    /// Body bytes received by upload endpoints for blob `digest`: every request of the sessions
    /// committed (or refused) as that digest, cut and dropped ones included, and whole-blob
    /// `POST`s.
    pub fn uploaded_bytes(&self, digest: &str) -> u64 {
        let state = self.shared.lock();
        state.uploaded.get(digest).copied().unwrap_or(0)
    }

    /// Body bytes received by upload endpoints in all (sessions never committed included).
    pub fn upload_bytes(&self) -> u64 {
        self.shared.lock().upload_bytes
    }

    /// Upload sessions open now.
    pub fn open_uploads(&self) -> usize {
        self.shared.lock().uploads.len()
    }

    /// Requests to upload endpoints, in arrival order.
    pub fn upload_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains("/blobs/uploads/"))
            .collect()
    }

    /// Stops reading the next `times` upload requests with method `method` after `after` bytes of
    /// their body ([`Action::StallRequest`] for [`Match::uploads`]).
    pub fn stall_uploads(&self, method: Method, after: usize, times: usize) {
        self.add_fault(
            Fault::new(
                Match::uploads().method(method),
                Action::StallRequest { after },
            )
            .times(times),
        );
    }

    /// Cuts the next `times` upload requests with method `method` after `after` bytes of their
    /// body ([`Action::ResetRequest`] for [`Match::uploads`]).
    pub fn reset_uploads(&self, method: Method, after: usize, times: usize) {
        self.add_fault(
            Fault::new(
                Match::uploads().method(method),
                Action::ResetRequest { after },
            )
            .times(times),
        );
    }

    /// Requests to manifest endpoints (GET and HEAD).
    pub fn manifest_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains("/manifests/"))
            .collect()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The registry's listener: notes each connection it accepts.
struct Counted {
    inner: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for Counted {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let mut state = self.shared.lock();
        let answered = state.log.len();
        state.accepted.push((addr.port(), answered));
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The client port of a request's connection.
#[derive(Clone, Copy)]
struct Peer(u16);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Counted>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Counted>) -> Self {
        Peer(stream.remote_addr().port())
    }
}

/// A request's head and the client port of the connection it came on.
struct Call {
    peer: u16,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

async fn handle(shared: Arc<Shared>, call: Call, body: Body) -> Response {
    let Call {
        peer,
        method,
        uri,
        headers,
    } = call;
    let path = uri.path().to_string();
    let request = Incoming {
        peer,
        method: &method,
        path: &path,
        query: uri.query(),
        target: Target::parse(&path),
        range: header_str(&headers, header::RANGE),
        headers: &headers,
    };
    if let Some(wait) = delay(&shared, &request) {
        tokio::time::sleep(wait).await;
    }
    let gate = gate(&shared, &request);
    let picked = pick(&shared, &request, matches!(gate, Gate::Serve));
    let cut = picked.cut;
    let (body, end) = read_body(body, cut.map(|(after, _)| after)).await;
    if end == BodyEnd::Cut {
        cut_upload(&shared, &request, &body);
        log_request(&shared, &request, &uri, body.len(), 0);
        if let Some((_, Cut::Stall)) = cut {
            // Silent, connection open, until the client hangs up (which drops this).
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        return cut_response();
    }
    let response = route(&shared, &request, &uri, gate, picked, &body);
    log_request(
        &shared,
        &request,
        &uri,
        body.len(),
        response.status().as_u16(),
    );
    response
}

/// Records a request in the log (`status` 0: the connection was cut).
fn log_request(shared: &Shared, request: &Incoming, uri: &Uri, body_bytes: usize, status: u16) {
    let headers = request.headers;
    let mut state = shared.lock();
    if *request.method == Method::GET
        && let Target::Blob {
            digest, cdn: false, ..
        } = request.target
    {
        *state.blob_gets.entry(digest.to_string()).or_default() += 1;
    }
    state.log.push(Request {
        connection: request.peer,
        method: request.method.to_string(),
        path: request.path.to_string(),
        query: uri.query().map(str::to_string),
        accept: header_str(headers, header::ACCEPT),
        auth_scheme: header_str(headers, header::AUTHORIZATION)
            .and_then(|v| v.split_whitespace().next().map(str::to_string)),
        range: request.range.clone(),
        content_range: header_str(headers, header::CONTENT_RANGE),
        body_bytes,
        status,
    });
}

/// What happens to a request whose body is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// The connection is dropped.
    Reset,
    /// The connection stays open and nothing more is read.
    Stall,
}

/// How a request body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyEnd {
    /// Whole.
    Complete,
    /// Cut by an [`Action::ResetRequest`], or broken by the client.
    Cut,
}

/// Reads a request body, or its first `limit` bytes when an [`Action::ResetRequest`] applies.
async fn read_body(body: Body, limit: Option<usize>) -> (Vec<u8>, BodyEnd) {
    use futures_util::StreamExt as _;
    if limit == Some(0) {
        return (Vec::new(), BodyEnd::Cut);
    }
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(frame) = stream.next().await {
        let Ok(frame) = frame else {
            return (out, BodyEnd::Cut);
        };
        out.extend_from_slice(&frame);
        if let Some(limit) = limit
            && out.len() >= limit
        {
            out.truncate(limit);
            return (out, BodyEnd::Cut);
        }
    }
    (out, BodyEnd::Complete)
}

/// An answer that never arrives: its body fails before the head is written, so the server drops
/// the connection (with unread request bytes, a reset).
fn cut_response() -> Response {
    let cut = futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fake registry: connection cut mid-request",
        ))
    });
    response(StatusCode::INTERNAL_SERVER_ERROR, Body::from_stream(cut))
}

/// A request as the router and the fault table see it.
struct Incoming<'a> {
    /// The client port of the connection (which connection it came on).
    peer: u16,
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    target: Target<'a>,
    /// The `Range` header, verbatim.
    range: Option<String>,
    headers: &'a HeaderMap,
}

impl Incoming<'_> {
    /// A query parameter.
    fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// What a request's path asks for.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// `/token`.
    Token,
    /// `/v2/`.
    Ping,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest { name: &'a str, reference: &'a str },
    /// `/v2/<name>/blobs/<digest>`, or (`cdn`) the redirect target `/cdn/<name>/<digest>`.
    Blob {
        name: &'a str,
        digest: &'a str,
        cdn: bool,
    },
    /// `/v2/<name>/blobs/uploads/` (`id`: `None`) or a session `/v2/<name>/blobs/uploads/<id>`.
    Upload { name: &'a str, id: Option<&'a str> },
    /// `/v2/<name>/tags/list`.
    Tags { name: &'a str },
    /// Anything else.
    Unknown,
}

impl<'a> Target<'a> {
    fn parse(path: &'a str) -> Self {
        if path == "/token" {
            return Target::Token;
        }
        if let Some(rest) = path.strip_prefix("/cdn/")
            && let Some((name, digest)) = rest.rsplit_once('/')
        {
            return Target::Blob {
                name,
                digest,
                cdn: true,
            };
        }
        if path == "/v2/" || path == "/v2" {
            return Target::Ping;
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Target::Unknown;
        };
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Target::Tags { name };
        }
        if let Some(i) = rest.rfind("/blobs/uploads/") {
            let id = &rest[i + "/blobs/uploads/".len()..];
            return match id {
                "" => Target::Upload {
                    name: &rest[..i],
                    id: None,
                },
                id if !id.contains('/') => Target::Upload {
                    name: &rest[..i],
                    id: Some(id),
                },
                _ => Target::Unknown,
            };
        }
        if let Some(i) = rest.rfind("/manifests/") {
            Target::Manifest {
                name: &rest[..i],
                reference: &rest[i + "/manifests/".len()..],
            }
        } else if let Some(i) = rest.rfind("/blobs/") {
            Target::Blob {
                name: &rest[..i],
                digest: &rest[i + "/blobs/".len()..],
                cdn: false,
            }
        } else {
            Target::Unknown
        }
    }
}

/// Where a request goes unless a fault answers it first.
enum Gate {
    /// To the token endpoint.
    Token,
    /// This answer (an error, a denial, the `/v2/` ping), which no fault shapes.
    Answer(Response),
    /// To the manifest or blob it names, served as the picked faults say.
    Serve,
}

/// The faults picked for one request, already used up.
#[derive(Default)]
struct Picked {
    respond: Option<Canned>,
    /// Where an [`Action::ResetRequest`] or [`Action::StallRequest`] cuts the body, and how.
    cut: Option<(usize, Cut)>,
    /// The `Location` of an [`Action::Redirect`].
    redirect: Option<String>,
    blob: BlobFaults,
    manifest: ManifestFaults,
}

/// The answer of an [`Action::Respond`].
struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// The blob actions picked for one request.
#[derive(Default)]
struct BlobFaults {
    bytes: Option<Vec<u8>>,
    ignore_range: bool,
    body: Option<BodyFault>,
    stall: Option<usize>,
    pace: Option<Throttle>,
}

/// The manifest actions picked for one request.
#[derive(Clone, Copy, Default)]
struct ManifestFaults {
    stream: bool,
    drip: Option<Duration>,
}

fn route(
    shared: &Arc<Shared>,
    request: &Incoming,
    uri: &Uri,
    gate: Gate,
    picked: Picked,
    body: &[u8],
) -> Response {
    if let Some(canned) = picked.respond {
        return canned_response(canned);
    }
    if let Some(location) = picked.redirect {
        let mut response = response(StatusCode::TEMPORARY_REDIRECT, Body::empty());
        set_header(&mut response, header::LOCATION, &location);
        return response;
    }
    match gate {
        Gate::Token => token(shared, request.method, uri, request.headers, body),
        Gate::Answer(response) => response,
        Gate::Serve => serve(shared, request, picked, body),
    }
}

/// What a request needs to be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Pull,
    Push,
}

fn reading(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// Routing and authentication, without side effects (so a fault can still answer instead).
fn gate(shared: &Shared, request: &Incoming) -> Gate {
    let method = request.method;
    let upload_session = [
        Method::PATCH,
        Method::PUT,
        Method::GET,
        Method::HEAD,
        Method::DELETE,
    ];
    let (repo, need) = match request.target {
        Target::Token => return Gate::Token,
        Target::Blob { cdn: true, .. } if reading(method) => return Gate::Serve,
        Target::Unknown => {
            return Gate::Answer(error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such endpoint",
            ));
        }
        Target::Ping if reading(method) => (None, Need::Pull),
        Target::Manifest { name, .. } | Target::Blob { name, .. } | Target::Tags { name }
            if reading(method) =>
        {
            (Some(name), Need::Pull)
        }
        Target::Manifest { name, .. } if *method == Method::PUT => (Some(name), Need::Push),
        Target::Upload { name, id: None } if *method == Method::POST => (Some(name), Need::Push),
        Target::Upload { name, id: Some(_) } if upload_session.contains(method) => {
            (Some(name), Need::Push)
        }
        _ => {
            return Gate::Answer(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the operation is unsupported",
            ));
        }
    };
    let from = match request.target {
        Target::Upload { id: None, .. } if request.param("mount").is_some() => {
            request.param("from")
        }
        _ => None,
    };
    if let Some(denied) = authorize(shared, request.headers, repo, need, from.as_deref()) {
        return Gate::Answer(denied);
    }
    match request.target {
        Target::Ping => Gate::Answer(json_response(StatusCode::OK, b"{}".to_vec())),
        _ => Gate::Serve,
    }
}

/// The one place the fault table is consulted: picks, in table order, the faults that apply
/// to `request` and uses them up. `served`: whether the request gets past routing and
/// authentication to the manifest or blob it names (only an [`Action::Respond`] applies to
/// the others).
/// How long an [`Action::Delay`] holds the request back.
fn delay(shared: &Shared, request: &Incoming) -> Option<Duration> {
    let mut state = shared.lock();
    let ranged = request.range.is_some();
    take(&mut state.faults, request, ranged, |action| match action {
        Action::Delay(wait) => Some(*wait),
        _ => None,
    })
}

fn pick(shared: &Shared, request: &Incoming, served: bool) -> Picked {
    let mut state = shared.lock();
    let State { repos, faults, .. } = &mut *state;
    let ranged = request.range.is_some();
    let respond = take(faults, request, ranged, |action| match action {
        Action::Respond {
            status,
            headers,
            body,
        } => Some(Canned {
            status: *status,
            headers: headers.clone(),
            body: body.clone(),
        }),
        _ => None,
    });
    if respond.is_some() || !served {
        return Picked {
            respond,
            ..Picked::default()
        };
    }
    let mut picked = Picked::default();
    match request.target {
        Target::Upload { .. } if !reading(request.method) => {
            picked.cut = take(faults, request, ranged, |action| match action {
                Action::ResetRequest { after } => Some((*after, Cut::Reset)),
                Action::StallRequest { after } => Some((*after, Cut::Stall)),
                _ => None,
            });
        }
        Target::Blob { name, digest, cdn } => {
            if !cdn {
                picked.redirect = take(faults, request, ranged, |action| match action {
                    Action::Redirect { host } => Some(format!(
                        "http://{host}:{}/cdn/{name}/{digest}",
                        shared.addr.port()
                    )),
                    _ => None,
                });
            }
            let stored = repos.get(name).and_then(|repo| repo.blobs.get(digest));
            if let (None, Some(data)) = (&picked.redirect, stored) {
                picked.blob = pick_blob(faults, request, data.len() as u64);
            }
        }
        Target::Manifest { name, reference }
            if repos
                .get(name)
                .is_some_and(|repo| repo.manifests.contains_key(reference)) =>
        {
            picked.manifest = pick_manifest(faults, request);
        }
        _ => {}
    }
    picked
}

/// The blob actions for a request for a stored blob of `stored_len` bytes. Body actions only
/// for GETs, and a stall or pacing only for bodies that are sent (not `416`, not endless).
fn pick_blob(faults: &mut [Fault], request: &Incoming, stored_len: u64) -> BlobFaults {
    let ranged = request.range.is_some();
    let bytes = take(faults, request, ranged, |action| match action {
        Action::ServeBytes(data) => Some(data.clone()),
        _ => None,
    });
    let ignore_range = take(faults, request, ranged, |action| {
        matches!(action, Action::IgnoreRange).then_some(())
    })
    .is_some();
    let mut picked = BlobFaults {
        bytes,
        ignore_range,
        ..BlobFaults::default()
    };
    if *request.method != Method::GET {
        return picked;
    }
    let range = request.range.as_deref().filter(|_| !ignore_range);
    picked.body = take(faults, request, range.is_some(), |action| match action {
        Action::Body(fault) => Some(fault.clone()),
        _ => None,
    });
    let len = picked
        .bytes
        .as_ref()
        .map_or(stored_len, |data| data.len() as u64);
    let sent = picked.body != Some(BodyFault::Endless)
        && !matches!(blob_range(range, len, picked.body.as_ref()), Some(Err(())));
    if sent {
        picked.stall = take(faults, request, ranged, |action| match action {
            Action::StallAfter(after) => Some(*after),
            _ => None,
        });
        picked.pace = take(faults, request, ranged, |action| match action {
            Action::Pace(throttle) => Some(*throttle),
            _ => None,
        });
    }
    picked
}

/// The manifest actions for a request for a stored manifest (dripping only for GETs).
fn pick_manifest(faults: &mut [Fault], request: &Incoming) -> ManifestFaults {
    let ranged = request.range.is_some();
    let stream = take(faults, request, ranged, |action| {
        matches!(action, Action::StreamManifest).then_some(())
    })
    .is_some();
    let drip = if *request.method == Method::GET {
        take(faults, request, ranged, |action| match action {
            Action::DripManifest(every) => Some(*every),
            _ => None,
        })
    } else {
        None
    };
    ManifestFaults { stream, drip }
}

/// The first fault in the table with `times` left that matches `request` (`ranged`: whether
/// its `Range` counts) and whose action `what` accepts; uses one of its `times`.
fn take<T>(
    faults: &mut [Fault],
    request: &Incoming,
    ranged: bool,
    what: impl Fn(&Action) -> Option<T>,
) -> Option<T> {
    faults
        .iter_mut()
        .filter(|fault| fault.times > 0 && fault.when.matches(request, ranged))
        .find_map(|fault| {
            let picked = what(&fault.action)?;
            if fault.times != usize::MAX {
                fault.times -= 1;
            }
            Some(picked)
        })
}

/// The answer of an [`Action::Respond`].
fn canned_response(canned: Canned) -> Response {
    let mut response = response(
        StatusCode::from_u16(canned.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Body::from(canned.body),
    );
    for (name, value) in &canned.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A request that got through [`gate`], served as `picked` says.
fn serve(shared: &Arc<Shared>, request: &Incoming, picked: Picked, body: &[u8]) -> Response {
    let head = *request.method == Method::HEAD;
    match request.target {
        Target::Manifest { name, reference } if *request.method == Method::PUT => {
            put_manifest(shared, request, name, reference, body)
        }
        Target::Manifest { name, reference } => {
            manifest(shared, name, reference, head, picked.manifest)
        }
        Target::Upload { name, id } => upload(shared, request, name, id, body),
        Target::Tags { name } => tags(shared, request, name),
        Target::Blob { name, digest, .. } => blob(
            shared,
            name,
            digest,
            head,
            request.range.as_deref(),
            picked.blob,
        ),
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint"),
    }
}

fn response(status: StatusCode, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = response(status, Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
    json_response(status, body.to_string().into_bytes())
}

fn set_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = header_str(headers, header::AUTHORIZATION)?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// `None` when the request may proceed (with `need` in `repo`, and pull in `from`, the source of
/// a mount), else the 401 (or, for a push nobody may make, the 403) to send.
fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    repo: Option<&str>,
    need: Need,
    from: Option<&str>,
) -> Option<Response> {
    let read_only = need == Need::Push && shared.config.push == PushGrant::Nobody;
    match &shared.auth {
        Auth::None if read_only => Some(push_denied()),
        Auth::None => None,
        Auth::Basic { user, pass } => {
            if basic_credentials(headers) == Some((user.clone(), pass.clone())) {
                return read_only.then(push_denied);
            }
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
            set_header(
                &mut response,
                header::WWW_AUTHENTICATE,
                "Basic realm=\"fake\"",
            );
            Some(response)
        }
        Auth::Bearer { .. } => bearer_authorize(shared, headers, repo, need, from),
    }
}

/// The `403` of a push by an account that may only pull.
fn push_denied() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "DENIED",
        "requested access to the resource is denied",
    )
}

/// [`authorize`] for token auth: the token must be live and grant what is needed.
fn bearer_authorize(
    shared: &Shared,
    headers: &HeaderMap,
    repo: Option<&str>,
    need: Need,
    from: Option<&str>,
) -> Option<Response> {
    let token = header_str(headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    let mut expired = false;
    let mut insufficient = false;
    let allowed = token.is_some_and(|token| {
        let state = shared.lock();
        let Some(grant) = state.tokens.get(&token) else {
            return false;
        };
        if shared
            .config
            .token_validity
            .is_some_and(|validity| grant.at.elapsed() > validity)
        {
            expired = true;
            return false;
        }
        let ok = repo.is_none_or(|repo| {
            grant.repos.contains(repo) && (need == Need::Pull || grant.push.contains(repo))
        }) && from.is_none_or(|from| grant.repos.contains(from));
        insufficient = !ok;
        ok
    });
    if allowed {
        return None;
    }
    let mut scopes = Vec::new();
    if let Some(repo) = repo {
        scopes.push(match need {
            Need::Pull => format!("repository:{repo}:pull"),
            Need::Push => format!("repository:{repo}:pull,push"),
        });
    }
    if let Some(from) = from {
        scopes.push(format!("repository:{from}:pull"));
    }
    let mut challenge = format!(
        "Bearer realm=\"http://{}/token\",service=\"{SERVICE}\"",
        shared.addr
    );
    if !scopes.is_empty() {
        challenge.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
    }
    if expired {
        challenge.push_str(",error=\"invalid_token\"");
    } else if insufficient {
        challenge.push_str(",error=\"insufficient_scope\"");
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        if expired {
            "token expired"
        } else {
            "authentication required"
        },
    );
    set_header(&mut response, header::WWW_AUTHENTICATE, &challenge);
    Some(response)
}

/// The token endpoint: classic `GET` (anonymous or Basic) and OAuth2 `POST` (refresh token or
/// password grant). Every request is recorded in the token log.
fn token(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    shared.lock().token_requests += 1;
    let mut record = TokenRequest {
        method: method.to_string(),
        auth: TokenAuth::Anonymous,
        service: None,
        scopes: Vec::new(),
        client_id: None,
        status: 0,
        issued: None,
    };
    let response = token_response(shared, method, uri, headers, body, &mut record);
    record.status = response.status().as_u16();
    shared.lock().token_log.push(record);
    response
}

fn token_response(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut TokenRequest,
) -> Response {
    let Auth::Bearer { user_pass } = &shared.auth else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "this registry issues no tokens",
        );
    };
    let post = *method == Method::POST;
    if !post && *method != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "use GET or POST /token",
        );
    }
    let params = if post {
        body.to_vec()
    } else {
        uri.query().unwrap_or("").as_bytes().to_vec()
    };
    let form = token_form(&params, record);
    let config = &shared.config;
    let granted = if post {
        if let Some(status) = config.post_token_status {
            record.auth = TokenAuth::OtherGrant(form.get("grant_type").cloned());
            return error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND),
                "UNSUPPORTED",
                "this token server does not speak OAuth2",
            );
        }
        post_grant(config, user_pass.as_ref(), &form, record)
    } else {
        get_grant(config, user_pass.as_ref(), headers, record)
    };
    if !granted {
        return token_refused(post);
    }
    issue_token(shared, record)
}

/// Parses the token request's query or form: `scope`, `service` and `client_id` go into
/// `record`, the other fields are returned.
fn token_form(params: &[u8], record: &mut TokenRequest) -> HashMap<String, String> {
    let mut form = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(params) {
        match &*key {
            "scope" => record.scopes.extend(
                value
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "service" => record.service = Some(value.into_owned()),
            "client_id" => record.client_id = Some(value.into_owned()),
            _ => {
                form.insert(key.into_owned(), value.into_owned());
            }
        }
    }
    form
}

/// Whether an OAuth2 `POST` earns a token (refresh token or password grant).
fn post_grant(
    config: &Config,
    user_pass: Option<&(String, String)>,
    form: &HashMap<String, String>,
    record: &mut TokenRequest,
) -> bool {
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            let given = form.get("refresh_token").cloned().unwrap_or_default();
            let ok = config.refresh_token.as_ref() == Some(&given);
            record.auth = TokenAuth::RefreshToken(given);
            ok
        }
        Some("password") => {
            let user = form.get("username").cloned().unwrap_or_default();
            let pass = form.get("password").cloned().unwrap_or_default();
            let ok = user_pass.is_none_or(|expected| *expected == (user.clone(), pass.clone()));
            record.auth = TokenAuth::Password { user, pass };
            ok
        }
        other => {
            record.auth = TokenAuth::OtherGrant(other.map(str::to_string));
            false
        }
    }
}

/// Whether a classic `GET` earns a token (anonymously, or with Basic credentials or the
/// refresh token as the password).
fn get_grant(
    config: &Config,
    user_pass: Option<&(String, String)>,
    headers: &HeaderMap,
    record: &mut TokenRequest,
) -> bool {
    match basic_credentials(headers) {
        Some((user, pass)) => {
            let ok = user_pass.is_none_or(|expected| *expected == (user.clone(), pass.clone()))
                || config.refresh_token.as_ref() == Some(&pass);
            record.auth = TokenAuth::Basic { user, pass };
            ok
        }
        None => user_pass.is_none(),
    }
}

/// The answer to a token request that earned nothing.
fn token_refused(post: bool) -> Response {
    if post {
        // RFC 6749 section 5.2.
        let body = json!({ "error": "invalid_grant", "error_description": "bad credentials" });
        return json_response(StatusCode::BAD_REQUEST, body.to_string().into_bytes());
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "incorrect username or password",
    );
    set_header(
        &mut response,
        header::WWW_AUTHENTICATE,
        "Basic realm=\"fake-token\"",
    );
    response
}

/// Issues a token for the pull scopes in `record` and answers with it.
fn issue_token(shared: &Shared, record: &mut TokenRequest) -> Response {
    let mut repos = HashSet::new();
    let mut push = HashSet::new();
    let may_push =
        record.auth != TokenAuth::Anonymous && shared.config.push == PushGrant::Authenticated;
    for scope in &record.scopes {
        let mut parts = scope.splitn(3, ':');
        if let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        {
            let has = |wanted: &str| actions.split(',').any(|a| a == wanted || a == "*");
            if has("pull") {
                repos.insert(name.to_string());
            }
            if has("push") && may_push {
                push.insert(name.to_string());
            }
        }
    }
    let mut state = shared.lock();
    let token = format!(
        "faketoken-{}-{}",
        shared.addr.port(),
        state.issued.len() + 1
    );
    state.tokens.insert(
        token.clone(),
        Grant {
            repos,
            push,
            at: Instant::now(),
        },
    );
    state.issued.push(token.clone());
    drop(state);
    record.issued = Some(token.clone());
    let config = &shared.config;
    let mut body = json!({ "token": token, "access_token": token });
    if let Some(seconds) = config.expires_in {
        body["expires_in"] = json!(seconds);
    }
    let issued_at = match &config.issued_at {
        IssuedAt::Now => Some(rfc3339(SystemTime::now())),
        IssuedAt::Ago(ago) => Some(rfc3339(SystemTime::now() - *ago)),
        IssuedAt::Fixed(text) => Some(text.clone()),
        IssuedAt::AgoPadded { ago, prefix } => {
            let at = rfc3339(SystemTime::now() - *ago);
            let at = at.strip_suffix('Z').unwrap_or(&at);
            Some(format!("{prefix}{at}.5Z"))
        }
        IssuedAt::Absent => None,
    };
    if let Some(issued_at) = issued_at {
        body["issued_at"] = json!(issued_at);
    }
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

/// `time` as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The `404` for a repository the registry does not know.
fn name_unknown() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        "repository name not known to registry",
    )
}

/// `tags/list` as distribution answers it: the repository's tags sorted, `n` at most (else
/// [`Config::tags_page`], else all) after `last`, and a `Link` to the next page when more follow.
fn tags(shared: &Shared, request: &Incoming, name: &str) -> Response {
    let mut tags: Vec<String> = {
        let state = shared.lock();
        let Some(repo) = state.repos.get(name) else {
            return name_unknown();
        };
        repo.manifests
            .keys()
            .filter(|k| !k.starts_with("sha256:"))
            .cloned()
            .collect()
    };
    tags.sort();
    if let Some(last) = request.param("last") {
        tags.retain(|t| *t > last);
    }
    let n = request
        .param("n")
        .and_then(|n| n.parse::<usize>().ok())
        .or(shared.config.tags_page);
    let more = n.is_some_and(|n| tags.len() > n);
    if let Some(n) = n {
        tags.truncate(n);
    }
    let body = json!({ "name": name, "tags": tags });
    let mut response = json_response(StatusCode::OK, body.to_string().into_bytes());
    if let (true, Some(n), Some(last)) = (more, n, tags.last()) {
        let link = format!("</v2/{name}/tags/list?last={last}&n={n}>; rel=\"next\"");
        set_header(&mut response, header::LINK, &link);
    }
    response
}

fn manifest(
    shared: &Shared,
    name: &str,
    reference: &str,
    head: bool,
    faults: ManifestFaults,
) -> Response {
    let (media_type, bytes) = {
        let state = shared.lock();
        let Some(repo) = state.repos.get(name) else {
            return name_unknown();
        };
        let Some(stored) = repo.manifests.get(reference) else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        stored.clone()
    };
    let digest = sha256_digest(&bytes);
    let len = bytes.len();
    let body = if head {
        Body::empty()
    } else {
        manifest_body(Bytes::from(bytes), faults)
    };
    let mut response = response(StatusCode::OK, body);
    set_header(&mut response, header::CONTENT_TYPE, &media_type);
    if !faults.stream {
        set_header(&mut response, header::CONTENT_LENGTH, &len.to_string());
    }
    set_header(
        &mut response,
        header::HeaderName::from_static("docker-content-digest"),
        &digest,
    );
    response
}

/// A manifest body: dripped, streamed in chunks, or all at once.
fn manifest_body(data: Bytes, faults: ManifestFaults) -> Body {
    if let Some(delay) = faults.drip {
        let stream = futures_util::stream::unfold(0usize, move |i| {
            let data = data.clone();
            async move {
                if i >= data.len() {
                    return None;
                }
                tokio::time::sleep(delay).await;
                Some((Ok::<_, std::io::Error>(data.slice(i..i + 1)), i + 1))
            }
        });
        Body::from_stream(stream)
    } else if faults.stream {
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
            .step_by(64 * 1024)
            .map(|i| Ok(data.slice(i..(i + 64 * 1024).min(data.len()))))
            .collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    } else {
        Body::from(data)
    }
}

/// Parses `bytes=A-` or `bytes=A-B` against a blob of `len` bytes into an inclusive range.
/// `Err(())` means unsatisfiable.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => len.saturating_sub(1),
        end => end.parse::<u64>().ok()?.min(len.saturating_sub(1)),
    };
    if start >= len || end < start {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

/// The range a blob GET is answered with: what the `range` header asks for (`None`: the whole
/// blob, `Err`: unsatisfiable), as a picked body `fault` bends it.
fn blob_range(
    range: Option<&str>,
    len: u64,
    fault: Option<&BodyFault>,
) -> Option<Result<(u64, u64), ()>> {
    let range = range.and_then(|r| parse_range(r, len));
    match (fault, range) {
        (Some(BodyFault::RangeNotSatisfiable), Some(_)) => Some(Err(())),
        (Some(BodyFault::WrongContentRange), Some(Ok(_))) => Some(Ok((0, len.saturating_sub(1)))),
        (_, range) => range,
    }
}

/// The bytes served for blob `digest` in `name` (`instead` of the stored ones, if given), or
/// the error code and message of the `404` to send.
fn blob_data(
    shared: &Shared,
    name: &str,
    digest: &str,
    instead: Option<Vec<u8>>,
) -> Result<Vec<u8>, (&'static str, &'static str)> {
    let state = shared.lock();
    let Some(repo) = state.repos.get(name) else {
        return Err(("NAME_UNKNOWN", "repository name not known to registry"));
    };
    let Some(stored) = repo.blobs.get(digest) else {
        return Err(("BLOB_UNKNOWN", "blob unknown to registry"));
    };
    Ok(instead.unwrap_or_else(|| stored.clone()))
}

fn blob(
    shared: &Arc<Shared>,
    name: &str,
    digest: &str,
    head: bool,
    range: Option<&str>,
    mut faults: BlobFaults,
) -> Response {
    let data = match blob_data(shared, name, digest, faults.bytes.take()) {
        Ok(data) => data,
        Err((code, message)) => return error(StatusCode::NOT_FOUND, code, message),
    };
    let len = data.len() as u64;
    if faults.body == Some(BodyFault::Endless) {
        return endless_response(shared.clone());
    }
    let range = range.filter(|_| !faults.ignore_range);
    let (status, start, end) = match blob_range(range, len, faults.body.as_ref()) {
        None => (StatusCode::OK, 0, len),
        Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        Some(Err(())) => {
            let mut response = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_INVALID",
                "requested range not satisfiable",
            );
            set_header(
                &mut response,
                header::CONTENT_RANGE,
                &format!("bytes */{len}"),
            );
            return response;
        }
    };
    let body = match faults.body {
        Some(BodyFault::ShiftedRange { shift }) => {
            let from = (start as usize).saturating_sub(shift);
            Bytes::from(data).slice(from..from + (end - start) as usize)
        }
        _ => Bytes::from(data).slice(start as usize..end as usize),
    };
    let body_len = body.len();
    let body = if head {
        Body::empty()
    } else {
        let (pace, limit, ending) = delivery(&faults, body_len);
        stream_body(shared.clone(), body, pace, limit, ending)
    };
    let mut response = response(status, body);
    set_header(
        &mut response,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    set_header(&mut response, header::CONTENT_LENGTH, &body_len.to_string());
    set_header(&mut response, header::ACCEPT_RANGES, "bytes");
    set_header(
        &mut response,
        header::HeaderName::from_static("docker-content-digest"),
        digest,
    );
    if status == StatusCode::PARTIAL_CONTENT {
        set_header(
            &mut response,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{len}", end - 1),
        );
    }
    response
}

/// How a blob body of `body_len` bytes is sent: its pacing, how much of it, and how it ends.
/// A reset or truncation wins over a stall, a stall over dripping; dripping replaces pacing.
fn delivery(faults: &BlobFaults, body_len: usize) -> (Option<Throttle>, usize, Ending) {
    match (&faults.body, faults.stall) {
        (Some(BodyFault::Reset { after }), _) => (faults.pace, *after, Ending::Reset),
        (Some(BodyFault::Truncate { after }), _) => (faults.pace, *after, Ending::Truncate),
        (_, Some(after)) => (faults.pace, after, Ending::Stall),
        (Some(BodyFault::Drip { every }), None) => {
            let drip = Throttle {
                chunk: 1,
                delay: *every,
            };
            (Some(drip), body_len, Ending::Complete)
        }
        _ => (faults.pace, body_len, Ending::Complete),
    }
}

/// Counts a blob body as in flight for as long as it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: Arc<Shared>) -> Self {
        {
            let mut state = shared.lock();
            state.in_flight += 1;
            state.max_in_flight = state.max_in_flight.max(state.in_flight);
        }
        Self(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

/// A blob body sent in chunks (paced by `throttle`), counting the bytes handed to the connection.
/// It sends `limit` bytes at most and then ends as `ending` says: complete, silent until the
/// client hangs up, failed (the connection is torn down) or cut short.
fn stream_body(
    shared: Arc<Shared>,
    data: Bytes,
    throttle: Option<Throttle>,
    limit: usize,
    ending: Ending,
) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunk = throttle.map_or(CHUNK, |t| t.chunk.max(1));
    let delay = throttle.map(|t| t.delay);
    let limit = limit.min(data.len());
    let guard = InFlight::new(shared);
    let stream = futures_util::stream::unfold(
        (data, 0usize, guard, false),
        move |(data, pos, guard, done)| async move {
            if done {
                return None;
            }
            if pos >= limit {
                match ending {
                    Ending::Complete => return None,
                    Ending::Stall => {
                        // Keep the connection open and silent; the client's timeout must notice.
                        std::future::pending::<()>().await;
                        return None;
                    }
                    Ending::Reset | Ending::Truncate => {
                        // Let what was sent reach the client before the cut.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if ending == Ending::Truncate {
                            return None;
                        }
                        let reset = std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "fake registry: connection reset mid-body",
                        );
                        return Some((Err(reset), (data, pos, guard, true)));
                    }
                }
            }
            if pos > 0
                && let Some(delay) = delay
            {
                tokio::time::sleep(delay).await;
            }
            let end = (pos + chunk).min(limit);
            let piece = data.slice(pos..end);
            guard.0.lock().blob_bytes_sent += piece.len() as u64;
            Some((
                Ok::<Bytes, std::io::Error>(piece),
                (data, end, guard, false),
            ))
        },
    );
    Body::from_stream(stream)
}

/// `200` without `Content-Length` whose body is zero bytes without end (counted as sent).
fn endless_response(shared: Arc<Shared>) -> Response {
    let guard = InFlight::new(shared);
    let zeros = Bytes::from(vec![0u8; 64 * 1024]);
    let stream = futures_util::stream::unfold((zeros, guard), |(zeros, guard)| async move {
        tokio::task::yield_now().await;
        guard.0.lock().blob_bytes_sent += zeros.len() as u64;
        Some((Ok::<Bytes, std::io::Error>(zeros.clone()), (zeros, guard)))
    });
    let mut response = response(StatusCode::OK, Body::from_stream(stream));
    set_header(
        &mut response,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    response
}

const DIGEST_HEADER: &str = "docker-content-digest";
const UPLOAD_UUID: &str = "docker-upload-uuid";

/// The upload endpoints: open (or mount, or take a whole blob), append, commit, status, cancel.
fn upload(
    shared: &Shared,
    request: &Incoming,
    name: &str,
    id: Option<&str>,
    body: &[u8],
) -> Response {
    let Some(id) = id else {
        return start_upload(shared, request, name, body);
    };
    let method = request.method;
    let mut state = shared.lock();
    let Some(session) = state.uploads.get(id).filter(|s| s.repo == name) else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
        );
    };
    let held = session.data.len();
    if reading(method) {
        return session_response(StatusCode::NO_CONTENT, name, id, held);
    }
    if *method == Method::DELETE {
        state.uploads.remove(id);
        return response(StatusCode::NO_CONTENT, Body::empty());
    }
    state.upload_bytes += body.len() as u64;
    if *method == Method::PATCH {
        return patch_upload(&mut state, shared.config.chunked, request, name, id, body);
    }
    let digest = request.param("digest").unwrap_or_default();
    let mut session = state.uploads.remove(id).expect("looked up above");
    session.data.extend_from_slice(body);
    session.received += body.len() as u64;
    commit_blob(&mut state, name, &digest, session.data, session.received)
}

/// `POST /v2/<name>/blobs/uploads/`: a mount, a whole blob (`?digest=`), or a new session.
fn start_upload(shared: &Shared, request: &Incoming, name: &str, body: &[u8]) -> Response {
    let mut state = shared.lock();
    state.upload_bytes += body.len() as u64;
    if let (Some(digest), Some(from)) = (request.param("mount"), request.param("from")) {
        let found = state
            .repos
            .get(&from)
            .and_then(|repo| repo.blobs.get(&digest))
            .cloned();
        if let (Mounts::Allowed, Some(data)) = (shared.config.mounts, found) {
            state
                .repos
                .entry(name.to_string())
                .or_default()
                .blobs
                .insert(digest.clone(), data);
            return blob_created(name, &digest);
        }
    } else if let Some(digest) = request.param("digest") {
        return commit_blob(&mut state, name, &digest, body.to_vec(), body.len() as u64);
    }
    state.upload_count += 1;
    let id = format!("upload-{}-{}", shared.addr.port(), state.upload_count);
    state.uploads.insert(
        id.clone(),
        UploadSession {
            repo: name.to_string(),
            data: Vec::new(),
            received: body.len() as u64,
        },
    );
    session_response(StatusCode::ACCEPTED, name, &id, 0)
}

/// `PATCH`: appends a chunk whose `Content-Range` (if any) starts where the session stands.
fn patch_upload(
    state: &mut State,
    chunked: Chunked,
    request: &Incoming,
    name: &str,
    id: &str,
    body: &[u8],
) -> Response {
    let session = state.uploads.get_mut(id).expect("looked up by the caller");
    session.received += body.len() as u64;
    let held = session.data.len();
    let range = header_str(request.headers, header::CONTENT_RANGE);
    let fits = range.as_deref().is_none_or(|r| {
        let (start, end) = r.trim().split_once('-').unwrap_or(("", ""));
        let (start, end) = (start.parse::<usize>(), end.parse::<usize>());
        matches!((start, end), (Ok(s), Ok(e)) if s == held && e + 1 == held + body.len())
    });
    match chunked {
        Chunked::Refused => return range_refused(held),
        Chunked::Ignored => return session_response(StatusCode::ACCEPTED, name, id, held),
        Chunked::Accepted if !fits => return range_refused(held),
        Chunked::Accepted => session.data.extend_from_slice(body),
    }
    let held = session.data.len();
    session_response(StatusCode::ACCEPTED, name, id, held)
}

fn range_refused(held: usize) -> Response {
    let mut response = error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UPLOAD_INVALID",
        "the chunk does not start where the upload stands",
    );
    set_header(&mut response, header::RANGE, &upload_range(held));
    response
}

/// Commits `data` as `digest` in `name` if its sha256 says so (`received`: the body bytes that
/// went into it, counted for the digest either way).
fn commit_blob(
    state: &mut State,
    name: &str,
    digest: &str,
    data: Vec<u8>,
    received: u64,
) -> Response {
    *state.uploaded.entry(digest.to_string()).or_default() += received;
    if digest.is_empty() || sha256_digest(&data) != digest {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "provided digest did not match uploaded content",
        );
    }
    state
        .repos
        .entry(name.to_string())
        .or_default()
        .blobs
        .insert(digest.to_string(), data);
    blob_created(name, digest)
}

fn blob_created(name: &str, digest: &str) -> Response {
    let mut response = response(StatusCode::CREATED, Body::empty());
    set_header(
        &mut response,
        header::LOCATION,
        &format!("/v2/{name}/blobs/{digest}"),
    );
    set_header(&mut response, header::CONTENT_LENGTH, "0");
    set_header(
        &mut response,
        header::HeaderName::from_static(DIGEST_HEADER),
        digest,
    );
    response
}

/// Distribution's `Range` of an upload holding `held` bytes: `0-<last>`, and `0-0` when empty.
fn upload_range(held: usize) -> String {
    format!("0-{}", held.saturating_sub(1))
}

/// The headers of an upload session's answers.
fn session_response(status: StatusCode, name: &str, id: &str, held: usize) -> Response {
    let mut response = response(status, Body::empty());
    set_header(
        &mut response,
        header::LOCATION,
        &format!("/v2/{name}/blobs/uploads/{id}"),
    );
    set_header(&mut response, header::RANGE, &upload_range(held));
    set_header(&mut response, header::CONTENT_LENGTH, "0");
    set_header(
        &mut response,
        header::HeaderName::from_static(UPLOAD_UUID),
        id,
    );
    response
}

/// A cut upload request: the bytes that arrived stay in the session (if they fit where it
/// stands), as they would in a registry that wrote them before the connection broke.
fn cut_upload(shared: &Shared, request: &Incoming, body: &[u8]) {
    let mut state = shared.lock();
    state.upload_bytes += body.len() as u64;
    let Target::Upload { id: Some(id), .. } = request.target else {
        return;
    };
    let chunked = shared.config.chunked;
    let Some(session) = state.uploads.get_mut(id) else {
        return;
    };
    session.received += body.len() as u64;
    let start = header_str(request.headers, header::CONTENT_RANGE)
        .and_then(|r| r.split_once('-').and_then(|(s, _)| s.parse::<usize>().ok()));
    let appends = match *request.method {
        Method::PATCH => chunked == Chunked::Accepted,
        _ => true,
    };
    if appends && start.is_none_or(|s| s == session.data.len()) {
        session.data.extend_from_slice(body);
    }
}

/// `PUT /v2/<name>/manifests/<reference>`: checks what it names is there, stores it under its
/// digest and `reference`.
fn put_manifest(
    shared: &Shared,
    request: &Incoming,
    name: &str,
    reference: &str,
    body: &[u8],
) -> Response {
    let digest = sha256_digest(body);
    if reference.starts_with("sha256:") && reference != digest {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "the manifest is not the digest it is put as",
        );
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "manifest invalid",
        );
    };
    let media_type = header_str(request.headers, header::CONTENT_TYPE)
        .or_else(|| value["mediaType"].as_str().map(str::to_string))
        .unwrap_or_default();
    let mut state = shared.lock();
    let repo = state.repos.entry(name.to_string()).or_default();
    if let Some(missing) = missing_reference(repo, &value) {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            &format!("blob unknown to registry: {missing}"),
        );
    }
    let entry = (media_type, body.to_vec());
    repo.manifests.insert(digest.clone(), entry.clone());
    repo.manifests.insert(reference.to_string(), entry);
    let mut response = response(StatusCode::CREATED, Body::empty());
    set_header(
        &mut response,
        header::LOCATION,
        &format!("/v2/{name}/manifests/{digest}"),
    );
    set_header(&mut response, header::CONTENT_LENGTH, "0");
    set_header(
        &mut response,
        header::HeaderName::from_static(DIGEST_HEADER),
        &digest,
    );
    response
}

/// The first blob (config, layers that are not foreign) or child manifest (of an index) that a
/// manifest names and `repo` does not have.
fn missing_reference(repo: &Repo, manifest: &serde_json::Value) -> Option<String> {
    let digest_of = |d: &serde_json::Value| d["digest"].as_str().map(str::to_string);
    let foreign = |d: &serde_json::Value| {
        d["urls"].as_array().is_some_and(|u| !u.is_empty())
            || d["mediaType"]
                .as_str()
                .is_some_and(|m| m.contains("foreign") || m.contains("nondistributable"))
    };
    let blobs = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| !foreign(d))
        .chain(manifest.get("config"))
        .filter_map(digest_of);
    let children = manifest["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(digest_of);
    blobs
        .filter(|d| !repo.blobs.contains_key(d))
        .chain(children.filter(|d| !repo.manifests.contains_key(d)))
        .next()
}
