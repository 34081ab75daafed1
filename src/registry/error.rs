//! Registry failures as typed errors whose messages say what failed, where, and
//! what to try. The distribution error envelope (`{"errors":[{code,message}]}`)
//! is read here.

use std::time::Duration;

use reqwest::StatusCode;

use crate::text::escape_untrusted;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}: {detail}")]
    Connect { registry: String, detail: String },

    #[error(
        "TLS verification of registry {registry} failed: {detail}; trust its CA with --ca-cert FILE (or put it in /etc/docker/certs.d/{registry}/ca.crt), or skip verification with --insecure"
    )]
    Tls { registry: String, detail: String },

    #[error(
        "{registry} asks for credentials to pull {repository} (401): the repository may not exist, or it is private; log in with -u USER --password-stdin"
    )]
    AuthRequired {
        registry: String,
        repository: String,
    },

    #[error(
        "{registry} rejected the credentials (from {from}) for {repository} (401): check the username and password or token"
    )]
    AuthRejected {
        registry: String,
        repository: String,
        /// Where the credentials came from.
        from: String,
    },

    #[error(
        "{registry} asks for credentials to push to {repository} (401): log in to push, with -u USER --password-stdin or docker login {registry}"
    )]
    PushAuthRequired {
        registry: String,
        repository: String,
    },

    #[error(
        "{registry} does not let the account push to {repository} ({answer}): the account may pull but not push there; ask for push access, or use an account that has it"
    )]
    PushDenied {
        registry: String,
        repository: String,
        /// The status, where the credentials came from, and the registry's
        /// words: `403, credentials from -u/-p: DENIED ...`.
        answer: String,
    },

    #[error(
        "cannot upload {what} to {repository} on {registry}: the source {problem}; nothing was committed"
    )]
    UploadSource {
        registry: String,
        repository: String,
        what: String,
        problem: Box<SourceProblem>,
    },

    #[error("access to {repository} on {registry} is denied (403){detail}")]
    Denied {
        registry: String,
        repository: String,
        detail: String,
    },

    #[error("{what} not found on {registry} (404): check the name and tag")]
    NotFound { registry: String, what: String },

    #[error(
        "{registry} is rate-limiting requests (429){quota}; gave up after {attempts} attempts{wait}"
    )]
    RateLimited {
        registry: String,
        quota: String,
        attempts: u32,
        wait: String,
    },

    #[error(
        "the proxy {proxy} refused to carry requests to {registry} (407 Proxy Authentication Required): check the user and password in the proxy URL"
    )]
    ProxyAuth { registry: String, proxy: String },

    #[error("{registry} answered {status} for {url}{detail}")]
    Status {
        registry: String,
        status: StatusCode,
        url: String,
        detail: String,
    },

    #[error(
        "no data from {registry} for {seconds} s while reading {what}; raise --timeout if the link is slow"
    )]
    Timeout {
        registry: String,
        what: String,
        seconds: u64,
    },

    #[error(
        "{what} from {registry} arrived slower than {bytes} bytes per {seconds} s {times} times{at}; the link is too slow for --timeout {seconds}"
    )]
    TooSlow {
        registry: String,
        what: String,
        bytes: u64,
        seconds: u64,
        times: u32,
        /// ` (stopped at byte N of M)`, or empty.
        at: String,
    },

    #[error(
        "{registry} redirected {what} to {origin}, which answered {status}; no credentials are sent to another host"
    )]
    Redirected {
        registry: String,
        what: String,
        origin: String,
        status: StatusCode,
    },

    #[error(
        "{registry} names a token server on plain HTTP ({realm}) although the registry uses HTTPS; credentials and tokens would travel unencrypted, so the request was not sent (use --insecure or --plain-http to allow it)"
    )]
    PlainTokenRealm { registry: String, realm: String },

    #[error("{registry} sent {what} that does not match its descriptor: {detail}")]
    Mismatch {
        registry: String,
        what: String,
        detail: String,
    },

    #[error("{registry} does not serve byte ranges of {what}")]
    RangesUnsupported { registry: String, what: String },

    #[error("{what} on {registry} had to start over {times} times; giving up")]
    Restarts {
        registry: String,
        what: String,
        times: u32,
    },

    #[error(
        "{registry} took fewer than {bytes} bytes of {what} in {seconds} s; the link is too slow for --timeout {seconds}"
    )]
    UploadStalled {
        registry: String,
        what: String,
        bytes: u64,
        seconds: u64,
    },

    #[error("cannot send {what} to {registry}: {detail}")]
    Unsendable {
        registry: String,
        what: String,
        detail: String,
    },

    #[error("invalid response from {registry}: {detail}")]
    Protocol { registry: String, detail: String },
}

/// What is wrong with the bytes an upload was given to send.
#[derive(Debug, thiserror::Error)]
pub enum SourceProblem {
    #[error("could not be read: {0}")]
    Read(std::io::Error),
    #[error("ended after {found} of its {expected} bytes")]
    Short { found: u64, expected: u64 },
    #[error("has the digest {found}, not the one it is pushed as")]
    Digest { found: crate::digest::Digest },
}

impl RegistryError {
    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Connect { .. }
            | RegistryError::Timeout { .. }
            | RegistryError::TooSlow { .. }
            | RegistryError::UploadStalled { .. }
            | RegistryError::RateLimited { .. } => true,
            RegistryError::Status { status, .. } => super::retry::status_is_retryable(*status),
            _ => false,
        }
    }
}

/// The first `code: message` of a distribution error body, if it has one,
/// with control characters escaped (they are the server's words, shown on a
/// terminal).
pub fn envelope_message(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = v.get("errors")?.as_array()?.first()?;
    let text =
        |field: &str| escape_untrusted(first.get(field).and_then(|c| c.as_str()).unwrap_or(""));
    let code = text("code");
    let message = text("message");
    Some((code, message))
}

/// Docker Hub's quota headers, as ` (remaining quota: 0;w=21600)`.
pub fn quota_note(headers: &reqwest::header::HeaderMap) -> String {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(escape_untrusted)
    };
    match (get("ratelimit-remaining"), get("ratelimit-limit")) {
        (Some(rem), Some(lim)) => format!(" (remaining pull quota: {rem} of {lim})"),
        (Some(rem), None) => format!(" (remaining pull quota: {rem})"),
        _ => String::new(),
    }
}

/// Describes a wait for messages: `; the registry asked to wait 30 s`.
pub fn wait_note(wait: Option<Duration>) -> String {
    match wait {
        Some(d) => format!(
            "; the registry asked to wait {} s before retrying",
            d.as_secs()
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_error_envelope() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            envelope_message(body),
            Some(("MANIFEST_UNKNOWN".into(), "manifest unknown".into()))
        );
        assert_eq!(envelope_message(b"<html>"), None);
        let hostile =
            br#"{"errors":[{"code":"DENIED\u202e","message":"x\r\u001b[2KPulled evil"}]}"#;
        assert_eq!(
            envelope_message(hostile),
            Some(("DENIED\\u{202e}".into(), "x\\r\\x1b[2KPulled evil".into()))
        );
        assert_eq!(envelope_message(br#"{"errors":[]}"#), None);
    }

    #[test]
    fn transient_errors() {
        let status = |s: u16| RegistryError::Status {
            registry: "r".into(),
            status: StatusCode::from_u16(s).unwrap(),
            url: "u".into(),
            detail: String::new(),
        };
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(status(408).is_transient());
        assert!(!status(400).is_transient());
        assert!(
            !RegistryError::NotFound {
                registry: "r".into(),
                what: "w".into()
            }
            .is_transient()
        );
    }
}
