//! Media types of manifests, configs and layers, the `Accept` list sent for
//! manifests, and classification of what a registry returned.

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The manifest media types we can read, most specific first; sent as `Accept`.
pub const MANIFEST_ACCEPT: [&str; 4] = [
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// The `Accept` header value for manifest requests.
pub fn manifest_accept_header() -> String {
    MANIFEST_ACCEPT.join(", ")
}

/// What a manifest document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An OCI image index or a Docker manifest list.
    Index,
    /// An OCI image manifest or a Docker schema 2 manifest.
    Image,
    /// A Docker schema 1 manifest (not supported).
    Schema1,
}

/// A manifest whose media type (or shape) is none we know; holds what it
/// declared, `(none)` when it declared nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported media type {0}")]
pub struct UnknownKind(pub String);

/// Classifies a manifest by its declared media type (the `mediaType` field, or
/// else the `Content-Type` header), falling back to its shape for documents that
/// declare neither (OCI allows leaving `mediaType` out).
pub fn classify(
    content_type: Option<&str>,
    body: &serde_json::Value,
) -> Result<ManifestKind, UnknownKind> {
    let declared = body
        .get("mediaType")
        .and_then(|v| v.as_str())
        .or(content_type.map(|c| c.split(';').next().unwrap_or("").trim()))
        .filter(|m| !m.is_empty() && *m != "application/json" && *m != "text/plain");
    match declared {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => Ok(ManifestKind::Index),
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Ok(ManifestKind::Image),
        Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED) => Ok(ManifestKind::Schema1),
        Some(other) => {
            if body.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
                Ok(ManifestKind::Schema1)
            } else {
                Err(UnknownKind(other.to_string()))
            }
        }
        None => {
            if body.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
                Ok(ManifestKind::Schema1)
            } else if body.get("manifests").is_some() {
                Ok(ManifestKind::Index)
            } else if body.get("layers").is_some() && body.get("config").is_some() {
                Ok(ManifestKind::Image)
            } else {
                Err(UnknownKind("(none)".to_string()))
            }
        }
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn layer_compression(media_type: &str) -> Option<Compression> {
    let m = media_type;
    if m.ends_with("+zstd") || m.ends_with(".zstd") {
        Some(Compression::Zstd)
    } else if m.ends_with("+gzip") || m.ends_with(".gzip") {
        Some(Compression::Gzip)
    } else if m.ends_with(".tar") || m.ends_with("rootfs.diff.tar") {
        Some(Compression::None)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accept_lists_every_readable_type() {
        let h = manifest_accept_header();
        for t in [
            OCI_INDEX,
            DOCKER_MANIFEST_LIST,
            OCI_MANIFEST,
            DOCKER_MANIFEST,
        ] {
            assert!(h.contains(t), "{t} missing from {h}");
        }
        assert!(!h.contains(DOCKER_SCHEMA1) && !h.contains(DOCKER_SCHEMA1_SIGNED));
    }

    #[test]
    fn classifies_by_media_type_then_header_then_shape() {
        let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        assert_eq!(classify(None, &idx), Ok(ManifestKind::Index));
        let list = json!({"schemaVersion": 2, "manifests": []});
        assert_eq!(
            classify(Some(DOCKER_MANIFEST_LIST), &list),
            Ok(ManifestKind::Index)
        );
        assert_eq!(classify(None, &list), Ok(ManifestKind::Index));
        let img = json!({"schemaVersion": 2, "config": {}, "layers": []});
        assert_eq!(
            classify(Some("application/json"), &img),
            Ok(ManifestKind::Image)
        );
        assert_eq!(
            classify(Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")), &img),
            Ok(ManifestKind::Image)
        );
        let v1 = json!({"schemaVersion": 1, "fsLayers": []});
        assert_eq!(
            classify(Some(DOCKER_SCHEMA1_SIGNED), &v1),
            Ok(ManifestKind::Schema1)
        );
        assert_eq!(classify(None, &v1), Ok(ManifestKind::Schema1));
        assert!(classify(Some("application/x-foo"), &json!({})).is_err());
    }

    #[test]
    fn layer_compression_from_media_type() {
        use Compression::*;
        for (m, c) in [
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Gzip,
            ),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Zstd),
            ("application/vnd.oci.image.layer.v1.tar", None),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Gzip,
            ),
        ] {
            assert_eq!(layer_compression(m), Some(c), "{m}");
        }
        assert_eq!(
            layer_compression("application/vnd.in-toto+json"),
            Option::None
        );
    }
}
