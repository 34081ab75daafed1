//! The ways a pull fails, as one error type whose messages name the image, the
//! registry and what to do. `main` maps every variant to exit code 1.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::platform::Platform;
use crate::registry::RegistryError;
use crate::text::escape_untrusted;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },

    #[error("{image}: no image for {}; available platforms: {}", shown(.wanted), list(.available))]
    NoMatchingPlatform {
        image: String,
        wanted: Platform,
        available: Vec<Platform>,
    },

    #[error(
        "{image}: the image is {}, not {}; choose another with --platform",
        shown(.actual),
        shown(.wanted)
    )]
    PlatformMismatch {
        image: String,
        wanted: Box<Platform>,
        actual: Box<Platform>,
    },

    #[error(
        "{image}: the registry serves a Docker schema 1 manifest, which is not supported (it was deprecated in 2017 and cannot be loaded by current engines); push the image again with a current client"
    )]
    Schema1 { image: String },

    #[error("{image}: invalid {what} from {registry}: {detail}")]
    InvalidManifest {
        image: String,
        registry: String,
        what: String,
        detail: String,
    },

    #[error(
        "{image}: {what} from {registry} does not match its digest: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        image: String,
        registry: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },

    #[error(
        "{image}: blob {digest} from {registry} is damaged: {detail}; it was discarded and nothing was written"
    )]
    Integrity {
        image: String,
        registry: String,
        digest: Digest,
        detail: String,
    },

    #[error("{image}: layer {digest}: {detail}; nothing was written")]
    Layer {
        image: String,
        digest: Digest,
        detail: String,
    },

    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Setup(String),

    #[error(transparent)]
    Blocked(#[from] crate::mirror::Blocked),

    /// The origin failed after every mirror had.
    #[error("{last}; the mirrors tried first failed too: {}", mirrors_failed(.mirrors))]
    EverySource {
        last: Box<PullError>,
        /// Each mirror and why it failed.
        mirrors: Vec<(String, String)>,
    },

    #[error("interrupted")]
    Interrupted,
}

/// A platform as a registry's index or config states it, escaped.
fn shown(platform: &Platform) -> String {
    escape_untrusted(&platform.to_string())
}

fn mirrors_failed(mirrors: &[(String, String)]) -> String {
    let each: Vec<String> = (mirrors.iter())
        .map(|(m, why)| format!("{} ({why})", escape_untrusted(m)))
        .collect();
    each.join("; ")
}

fn list(platforms: &[Platform]) -> String {
    if platforms.is_empty() {
        return "none".to_string();
    }
    platforms.iter().map(shown).collect::<Vec<_>>().join(", ")
}

impl PullError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> PullError {
        PullError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_mismatch_lists_what_is_offered() {
        let e = PullError::NoMatchingPlatform {
            image: "127.0.0.1:5000/multi:latest".into(),
            wanted: Platform::parse("linux/s390x").unwrap(),
            available: vec![
                Platform::parse("linux/amd64").unwrap(),
                Platform::parse("linux/arm/v7").unwrap(),
            ],
        };
        assert_eq!(
            e.to_string(),
            "127.0.0.1:5000/multi:latest: no image for linux/s390x; available platforms: linux/amd64, linux/arm/v7"
        );
    }

    #[test]
    fn platforms_from_a_registry_are_escaped() {
        let e = PullError::NoMatchingPlatform {
            image: "r/x:1".into(),
            wanted: Platform::parse("linux/s390x").unwrap(),
            available: vec![Platform::new("linux\r\u{1b}[2K", "amd64\u{202e}", None)],
        };
        assert_eq!(
            e.to_string(),
            "r/x:1: no image for linux/s390x; available platforms: linux\\r\\x1b[2k/amd64\\u{202e}"
        );
        let e = PullError::PlatformMismatch {
            image: "r/x:1".into(),
            wanted: Box::new(Platform::parse("linux/amd64").unwrap()),
            actual: Box::new(Platform::new("linux", "arm64\n", None)),
        };
        assert!(
            e.to_string()
                .contains("the image is linux/arm64\\n, not linux/amd64"),
            "{e}"
        );
    }
}
