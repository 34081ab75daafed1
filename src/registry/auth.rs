//! Authentication: `WWW-Authenticate` challenges, the Bearer token exchange at
//! the challenge's realm, Basic credentials, and the per-scope token cache.
//!
//! Credentials and tokens never reach a log line: [`Credentials`] and
//! [`Token`] redact themselves in `Debug`.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// A username and a password (or access token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The value of a `Basic` `Authorization` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
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

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Reads a token server's answer.
pub fn parse_token_response(body: &[u8], now: Instant) -> Result<Token, String> {
    let r: TokenResponse =
        serde_json::from_slice(body).map_err(|e| format!("token response is not JSON: {e}"))?;
    let value = r
        .token
        .filter(|t| !t.is_empty())
        .or(r.access_token.filter(|t| !t.is_empty()))
        .ok_or("token response has neither token nor access_token")?;
    let life = r
        .expires_in
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Ok(Token {
        value,
        expires: now + life.saturating_sub(EXPIRY_MARGIN.min(life / 2)),
    })
}

/// What the registry asked for on its last challenge, and the tokens we hold.
#[derive(Debug, Default)]
pub struct AuthState {
    /// `None` until the registry has challenged us.
    pub challenge: Option<Challenge>,
    /// Tokens by scope.
    pub tokens: HashMap<String, Token>,
}

impl AuthState {
    /// A still-valid token for `scope`.
    pub fn token(&self, scope: &str, now: Instant) -> Option<&Token> {
        self.tokens.get(scope).filter(|t| t.expires > now)
    }
}

/// The scope to pull from `repository`.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
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
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#, now).unwrap();
        assert_eq!(t.value, "abc");
        assert!(t.expires > now + Duration::from_secs(280));
        let t = parse_token_response(br#"{"access_token":"x"}"#, now).unwrap();
        assert_eq!(t.value, "x");
        assert!(t.expires <= now + DEFAULT_TOKEN_LIFETIME);
        assert!(parse_token_response(br#"{"token":""}"#, now).is_err());
        assert!(parse_token_response(b"nope", now).is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = Credentials {
            username: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
        let t = Token {
            value: "tok3n".into(),
            expires: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("tok3n"));
        assert_eq!(c.basic_header(), "Basic dTpzM2NyZXQ=");
    }
}
