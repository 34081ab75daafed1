//! The ways a pull fails, as one error type whose messages name the image, the
//! registry and what to do. `main` maps every variant to exit code 1.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::platform::Platform;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },

    #[error("{image}: no image for {wanted}; available platforms: {}", list(.available))]
    NoMatchingPlatform {
        image: String,
        wanted: Platform,
        available: Vec<Platform>,
    },

    #[error("{image}: the image is {actual}, not {wanted}; choose another with --platform")]
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

    #[error("interrupted")]
    Interrupted,
}

fn list(platforms: &[Platform]) -> String {
    if platforms.is_empty() {
        return "none".to_string();
    }
    platforms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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
}
