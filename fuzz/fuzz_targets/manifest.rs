//! Manifests and indexes from a registry: decoding never panics, whatever the bytes and the
//! `Content-Type`; the same bytes as a timestamp (`issued_at`) never panic either.
#![no_main]

use docker_pull::registry::auth::parse_rfc3339;
use docker_pull::resolve::{Decoded, decode};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let (content_type, bytes) = match data.split_first() {
        Some((first, rest)) => (
            CONTENT_TYPES[usize::from(*first) % CONTENT_TYPES.len()],
            rest,
        ),
        None => (None, data),
    };
    if let Ok(Decoded::Index { manifests }) = decode(bytes, content_type) {
        for m in &manifests {
            let _ = m.digest();
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_rfc3339(s);
    }
});
