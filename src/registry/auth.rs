//! Authentication: `WWW-Authenticate` challenges, the Bearer token exchange at
//! the challenge's realm, Basic credentials, and the per-scope token cache.
//!
//! Credentials and tokens never reach a log line: [`Credentials`] and
//! [`Token`] redact themselves in `Debug`.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;

/// What a registry login holds besides the username.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A password or access token, sent with HTTP Basic (to the registry or
    /// to its token server).
    Password(String),
    /// An OAuth2 refresh token (`identitytoken` in Docker's config), exchanged
    /// at the token server for access tokens.
    IdentityToken(String),
    /// A bearer token sent to the registry as it is (`registrytoken`).
    RegistryToken(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Password(_) => "Password(<redacted>)",
            Secret::IdentityToken(_) => "IdentityToken(<redacted>)",
            Secret::RegistryToken(_) => "RegistryToken(<redacted>)",
        })
    }
}

/// Credentials for one registry, and where they came from (for messages).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: Secret,
    /// `-u/-p`, a config file's path, `credential helper docker-credential-x`.
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.secret {
            Secret::Password(_) => "password",
            Secret::IdentityToken(_) => "identity token",
            Secret::RegistryToken(_) => "registry token",
        };
        write!(
            f,
            "Credentials({}, {kind} <redacted>, from {})",
            self.username, self.source
        )
    }
}

impl Credentials {
    /// A username and password (or access token).
    pub fn password(username: &str, password: &str, source: &str) -> Credentials {
        Credentials {
            username: username.to_string(),
            secret: Secret::Password(password.to_string()),
            source: source.to_string(),
        }
    }

    /// The value of a `Basic` `Authorization` header: the username with the
    /// password or identity token. A registry token has none.
    pub fn basic_header(&self) -> Option<String> {
        let secret = match &self.secret {
            Secret::Password(p) | Secret::IdentityToken(p) => p,
            Secret::RegistryToken(_) => return None,
        };
        let raw = format!("{}:{}", self.username, secret);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }
}

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: `bearer`, `basic`, ...
    pub scheme: String,
    /// Parameters with lowercased names.
    pub params: HashMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235): one or more challenges, each a
/// scheme followed by comma-separated `name=value` or `name="quoted"` params.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_ws_commas();
        if p.peek().is_none() {
            break;
        }
        let Some(token) = p.token() else {
            // Not a token character: skip it so parsing always advances.
            p.i += 1;
            continue;
        };
        p.skip_ws();
        if p.peek() == Some(b'=') {
            // A parameter of the current challenge.
            p.i += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token68().unwrap_or_default()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: HashMap::new(),
            });
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn token68(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b == b',' || b == b' ' || b == b'\t' {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn quoted(&mut self) -> String {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                b'"' => break,
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A bearer token with its expiry.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub expires: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted>, expires {:?})", self.expires)
    }
}

/// Tokens are refreshed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Lifetime assumed when the token server states none (as Docker does).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The longest a token is trusted, whatever the server claims: a day.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// A token server's answer.
#[derive(Debug)]
pub struct TokenGrant {
    pub token: Token,
    /// A new refresh token (OAuth2 servers may rotate it).
    pub refresh_token: Option<RefreshToken>,
}

/// An OAuth2 refresh token, redacted in `Debug`.
#[derive(Clone)]
pub struct RefreshToken(pub String);

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// Reads a token server's answer. `now` and `wall_now` are the same moment
/// on the monotonic and the wall clock; `issued_at` shortens the lifetime
/// by the time already gone since the server issued the token.
pub fn parse_token_response(
    body: &[u8],
    now: Instant,
    wall_now: SystemTime,
) -> Result<TokenGrant, String> {
    let r: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        let e = crate::text::escape_untrusted(&e.to_string());
        format!("token response is not JSON: {e}")
    })?;
    let value = r
        .token
        .filter(|t| !t.is_empty())
        .or(r.access_token.filter(|t| !t.is_empty()))
        .ok_or("token response has neither token nor access_token")?;
    let life = r
        .expires_in
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .min(MAX_TOKEN_LIFETIME);
    // Time gone since issue, when the server says and the clocks roughly agree
    // (a token "issued" in the future or before its whole lifetime is skew).
    let gone = r
        .issued_at
        .as_deref()
        .and_then(parse_rfc3339)
        .and_then(|issued| wall_now.duration_since(issued).ok())
        .filter(|gone| *gone <= life)
        .unwrap_or_default();
    let left = life
        .saturating_sub(gone)
        .saturating_sub(EXPIRY_MARGIN.min(life / 2));
    // Even a clamped lifetime could pass the end of a monotonic clock that
    // starts late: then the token counts as expired and is asked for again.
    let expires = now.checked_add(left).unwrap_or(now);
    Ok(TokenGrant {
        token: Token { value, expires },
        refresh_token: r.refresh_token.filter(|t| !t.is_empty()).map(RefreshToken),
    })
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00Z`,
/// `2024-05-01T12:00:00.123456789+02:00`), ignoring surrounding white space.
/// Anything but ASCII where digits and separators belong is refused.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    // Every index below is into these bytes, never into `s`.
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = std::str::from_utf8(&b[start..i.min(start + 9)]).ok()?;
        if digits.is_empty() {
            return None;
        }
        nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
    }
    let offset: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// What a request needs the registry to allow in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reading: manifests, blobs (`repository:<name>:pull`).
    Pull,
    /// Writing as well: uploads, manifests put (`repository:<name>:pull,push`).
    Push,
}

/// The permission one request needs: a repository, the access to it, and
/// for a cross-repository mount the repository the blob is mounted from
/// (which must be readable too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    pub repository: &'a str,
    pub access: Access,
    /// The source of a cross-repository mount, read with `pull`.
    pub from: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// Reading `repository`.
    pub fn pull(repository: &'a str) -> Scope<'a> {
        Scope {
            repository,
            access: Access::Pull,
            from: None,
        }
    }

    /// Writing to `repository`.
    pub fn push(repository: &'a str) -> Scope<'a> {
        Scope {
            repository,
            access: Access::Push,
            from: None,
        }
    }

    /// Writing to `repository` a blob mounted from `from`.
    pub fn mount(repository: &'a str, from: &'a str) -> Scope<'a> {
        Scope {
            from: Some(from),
            ..Scope::push(repository)
        }
    }

    /// The token scopes this permission needs, before anything a challenge
    /// added.
    pub fn base(&self) -> Vec<String> {
        let own = match self.access {
            Access::Pull => pull_scope(self.repository),
            Access::Push => push_scope(self.repository),
        };
        let mut scopes = vec![own];
        if let Some(from) = self.from.filter(|f| *f != self.repository) {
            scopes.push(pull_scope(from));
        }
        scopes
    }

    /// The key of [`base`](Self::base) in the token and challenge caches.
    pub fn key(&self) -> String {
        self.base().join(" ")
    }
}

/// What the registry asked for on its last challenge, and the tokens we hold.
#[derive(Debug, Default)]
pub struct AuthState {
    /// `None` until the registry has challenged us.
    pub challenge: Option<Challenge>,
    /// Tokens by the scopes they were asked for (one string, space-separated).
    pub tokens: HashMap<String, Token>,
    /// Scopes a 401 asked for beyond a permission's own, by [`Scope::key`].
    pub extra_scopes: HashMap<String, Vec<String>>,
    /// The refresh token in use, once a token server has rotated it.
    pub refresh_token: Option<RefreshToken>,
}

impl AuthState {
    /// A still-valid token for `scope`.
    pub fn token(&self, scope: &str, now: Instant) -> Option<&Token> {
        self.tokens.get(scope).filter(|t| t.expires > now)
    }

    /// The scopes to ask for `scope`'s permission: its own (pull, or pull
    /// and push, plus pull on a mount's source) and whatever a challenge to
    /// a request with that permission added. Tokens are cached per result.
    pub fn scopes(&self, scope: &Scope<'_>) -> Vec<String> {
        let mut scopes = scope.base();
        for s in self.extra_scopes.get(&scope.key()).into_iter().flatten() {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        scopes
    }
}

/// The scope to pull from `repository`.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The scope to pull from and push to `repository`.
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn parses_several_challenges_quotes_and_spacing() {
        let c = parse_challenges(
            r#"Basic realm="Registry Realm", Bearer  realm = "http://h/token" , service="a \"b\", c",error="insufficient_scope",scope="repository:x:pull repository:y:pull""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("http://h/token"));
        assert_eq!(c[1].param("service"), Some(r#"a "b", c"#));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert_eq!(
            c[1].param("scope"),
            Some("repository:x:pull repository:y:pull")
        );
    }

    #[test]
    fn unquoted_params_and_garbage_do_not_hang() {
        let c = parse_challenges("Bearer realm=http://h/t,service=svc");
        assert_eq!(c[0].param("realm"), Some("http://h/t"));
        assert_eq!(c[0].param("service"), Some("svc"));
        for junk in [
            "",
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            ",,,",
            "{}[]()",
            "Basic",
        ] {
            let _ = parse_challenges(junk);
        }
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
    }

    #[test]
    fn token_responses() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let g = parse_token_response(br#"{"token":"abc","expires_in":300}"#, now, wall).unwrap();
        assert_eq!(g.token.value, "abc");
        assert!(g.token.expires > now + Duration::from_secs(280));
        assert!(g.refresh_token.is_none());
        let g = parse_token_response(br#"{"access_token":"x","refresh_token":"r2"}"#, now, wall)
            .unwrap();
        assert_eq!(g.token.value, "x");
        assert!(g.token.expires <= now + DEFAULT_TOKEN_LIFETIME);
        assert!(g.token.expires > now + DEFAULT_TOKEN_LIFETIME / 2);
        assert_eq!(g.refresh_token.unwrap().0, "r2");
        assert!(parse_token_response(br#"{"token":""}"#, now, wall).is_err());
        assert!(parse_token_response(b"nope", now, wall).is_err());
    }

    #[test]
    fn issued_at_shortens_the_lifetime() {
        let now = Instant::now();
        let wall = parse_rfc3339("2026-01-01T00:01:40Z").unwrap();
        // Issued 100 s ago with 300 s to live: about 200 s left.
        let body = br#"{"token":"t","expires_in":300,"issued_at":"2026-01-01T00:00:00Z"}"#;
        let t = parse_token_response(body, now, wall).unwrap().token;
        assert!(t.expires > now + Duration::from_secs(185));
        assert!(t.expires <= now + Duration::from_secs(200));
        // Issued longer ago than it lives: clock skew, the full lifetime counts.
        let body = br#"{"token":"t","expires_in":30,"issued_at":"2025-01-01T00:00:00Z"}"#;
        let t = parse_token_response(body, now, wall).unwrap().token;
        assert!(t.expires > now + Duration::from_secs(15));
        // Issued in the future: skew again.
        let body = br#"{"token":"t","expires_in":300,"issued_at":"2027-01-01T00:00:00Z"}"#;
        let t = parse_token_response(body, now, wall).unwrap().token;
        assert!(t.expires > now + Duration::from_secs(280));
        // Unparseable: ignored.
        let body = br#"{"token":"t","expires_in":300,"issued_at":"yesterday"}"#;
        let t = parse_token_response(body, now, wall).unwrap().token;
        assert!(t.expires > now + Duration::from_secs(280));
    }

    #[test]
    fn hostile_lifetimes_are_clamped() {
        let now = Instant::now();
        let wall = SystemTime::now();
        for body in [
            format!(r#"{{"token":"t","expires_in":{}}}"#, u64::MAX),
            format!(
                r#"{{"token":"t","expires_in":{},"issued_at":"1970-01-01T00:00:00Z"}}"#,
                u64::MAX
            ),
            format!(r#"{{"token":"t","expires_in":{}}}"#, u64::MAX / 2),
        ] {
            let t = parse_token_response(body.as_bytes(), now, wall)
                .unwrap()
                .token;
            assert!(t.expires <= now + MAX_TOKEN_LIFETIME, "{body}");
            assert!(t.expires > now + MAX_TOKEN_LIFETIME / 2, "{body}");
        }
    }

    #[test]
    fn issued_at_with_wide_spaces_does_not_panic() {
        let at = |s: &str| {
            parse_rfc3339(s).map(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
            })
        };
        let ideographic = "\u{3000}".repeat(7);
        for s in [
            format!("{ideographic}2024-02-29T12:30:15.5Z"),
            format!("{ideographic}2024-02-29T12:30:15.Z"),
            format!("2024-02-29T12:30:15.5Z{ideographic}"),
            "\u{2003}\u{3000}2024-02-29T12:30:15.123Z".to_string(),
        ] {
            let parsed = at(&s);
            assert!(
                parsed.is_none() || parsed.is_some_and(|p| (p - 1_709_209_815.0).abs() < 1.0),
                "{s:?}: {parsed:?}"
            );
        }
        assert_eq!(
            at(&format!("{ideographic}2024-02-29T12:30:15.5Z")),
            Some(1_709_209_815.5)
        );
        // Multibyte characters where the digits should be are refused, never sliced.
        for s in [
            "2024-02-29T12:30:15.\u{0663}Z",
            "2024-02-29T12:30:15.5\u{3000}Z",
            "\u{3000}2024-02-29T12:30:\u{3000}",
            "2024-02-29T12:30:15\u{00e9}",
        ] {
            assert_eq!(at(s), None, "{s:?}");
        }
        let body = format!(
            r#"{{"token":"t","expires_in":300,"issued_at":"{ideographic}2026-01-01T00:00:00.25Z"}}"#
        );
        let now = Instant::now();
        let wall = parse_rfc3339("2026-01-01T00:01:40Z").unwrap();
        let t = parse_token_response(body.as_bytes(), now, wall)
            .unwrap()
            .token;
        assert!(t.expires <= now + Duration::from_secs(200));
    }

    #[test]
    fn rfc3339_timestamps() {
        let at = |s| {
            parse_rfc3339(s).map(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
            })
        };
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(at("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(at("2024-02-29T12:30:15Z"), Some(1_709_209_815.0));
        assert_eq!(at("2024-02-29T14:30:15+02:00"), Some(1_709_209_815.0));
        assert_eq!(at("2024-02-29T12:30:15.5Z"), Some(1_709_209_815.5));
        assert_eq!(
            at("2024-02-29T12:30:15.123456789Z").map(|s| (s * 10.0).round()),
            Some(17_092_098_151.0)
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:30:15",
            "2024-02-29T12:30:15.Z",
            "2024-02-29T12:30:15+0200",
            "1969-12-31T23:59:59Z",
            "abcd-ef-ghTij:kl:mnZ",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn scopes_add_what_a_challenge_asked_for() {
        let mut state = AuthState::default();
        let pull = Scope::pull("a/b");
        assert_eq!(state.scopes(&pull), ["repository:a/b:pull"]);
        state.extra_scopes.insert(
            pull.key(),
            vec!["repository:a/b:pull".into(), "repository:c:pull".into()],
        );
        assert_eq!(
            state.scopes(&pull),
            ["repository:a/b:pull", "repository:c:pull"]
        );
        assert_eq!(state.scopes(&Scope::pull("x")), ["repository:x:pull"]);
        assert_eq!(
            state.scopes(&Scope::push("a/b")),
            ["repository:a/b:pull,push"],
            "what a pull's challenge added is not asked for a push"
        );
    }

    #[test]
    fn push_and_mount_scopes_are_their_own_cache_keys() {
        let push = Scope::push("team/app");
        assert_eq!(push.base(), ["repository:team/app:pull,push"]);
        let mount = Scope::mount("team/app", "library/base");
        assert_eq!(
            mount.base(),
            [
                "repository:team/app:pull,push",
                "repository:library/base:pull"
            ]
        );
        assert_eq!(
            Scope::mount("team/app", "team/app").base(),
            push.base(),
            "mounting from itself needs nothing more"
        );
        let keys = [Scope::pull("team/app").key(), push.key(), mount.key()];
        assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = Credentials::password("u", "s3cret", "-u/-p");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.basic_header().unwrap(), "Basic dTpzM2NyZXQ=");
        let c = Credentials {
            username: "u".into(),
            secret: Secret::IdentityToken("r3fresh".into()),
            source: "config.json".into(),
        };
        assert!(!format!("{c:?}").contains("r3fresh"));
        let c = Credentials {
            username: String::new(),
            secret: Secret::RegistryToken("b3arer".into()),
            source: "config.json".into(),
        };
        assert!(!format!("{c:?}").contains("b3arer"));
        assert_eq!(c.basic_header(), None);
        let t = Token {
            value: "tok3n".into(),
            expires: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("tok3n"));
        assert!(!format!("{:?}", RefreshToken("r".into())).contains("\"r\""));
    }
}
