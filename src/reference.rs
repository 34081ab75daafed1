//! Image references: parsing `[registry[:port]/][namespace/]name[:tag][@digest]`,
//! normalising it exactly as `docker pull` does, and the names derived from it
//! (the registry API host, the name `docker load` gives the image, the default
//! archive file name).

use std::fmt;

use crate::digest::{Digest, DigestError};
use crate::platform::Platform;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, ...
    pub registry: String,
    /// `library/nginx`, `owner/app`, ...
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: {0:?} is empty")]
    Empty(String),
    #[error("invalid reference format: repository name in {0:?} must be lowercase")]
    Uppercase(String),
    #[error(
        "invalid reference format: {0:?} is not [registry[:port]/][namespace/]name[:tag][@sha256:digest]"
    )]
    Format(String),
    #[error(
        "invalid reference format: the tag in {0:?} is not valid (letters, digits, '_', '.', '-', at most 128)"
    )]
    Tag(String),
    #[error("invalid reference format: repository name in {0:?} is longer than 255 characters")]
    TooLong(String),
    #[error("invalid reference format: {reference:?}: {source}")]
    Digest {
        reference: String,
        source: DigestError,
    },
}

impl Reference {
    /// Parses `input`; `default_registry` is used when the reference names none
    /// (`docker.io` unless the user chose another with `--registry`).
    pub fn parse(input: &str, default_registry: &str) -> Result<Reference, ReferenceError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ReferenceError::Empty(input.to_string()));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::Digest {
                        reference: s.to_string(),
                        source,
                    })?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&name_tag[..i], Some(&name_tag[i + 1..]))
            }
            None => (name_tag, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(ReferenceError::Tag(s.to_string()));
        }
        if name.is_empty() {
            return Err(ReferenceError::Format(s.to_string()));
        }

        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_registry(first) => {
                if !valid_registry(first) {
                    return Err(ReferenceError::Format(s.to_string()));
                }
                (first.to_string(), rest)
            }
            _ => (normalise_registry(default_registry), name),
        };
        let registry = normalise_registry(&registry);
        if path.is_empty() {
            return Err(ReferenceError::Format(s.to_string()));
        }
        for component in path.split('/') {
            if !valid_component(component) {
                if component.bytes().any(|b| b.is_ascii_uppercase())
                    && valid_component(&component.to_ascii_lowercase())
                {
                    return Err(ReferenceError::Uppercase(s.to_string()));
                }
                return Err(ReferenceError::Format(s.to_string()));
            }
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong(s.to_string()));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host[:port] that serves the registry API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on a loopback address (plain-HTTP fallback allowed).
    pub fn is_loopback_registry(&self) -> bool {
        is_loopback_host(&self.registry)
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `registry/repository`, as containerd names images.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The repository as `docker images` shows it: `nginx`, `user/app`,
    /// `127.0.0.1:5000/small`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.full_name()
        }
    }

    /// The `name:tag` that `docker pull` would give the image, if it has a tag.
    pub fn familiar_tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{t}", self.familiar_name()))
    }

    /// The tag used in file names: the tag, or `sha256-<12 hex>` for digest-only references.
    fn name_tag(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => format!("sha256-{}", d.short(12)),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `[<registry>_]<repository>_<tag>_<arch>[_<variant>].tar`.
    pub fn archive_file_name(&self, platform: &Platform) -> String {
        let mut name = String::new();
        if self.registry != DOCKER_HUB {
            name.push_str(&self.registry);
            name.push('_');
        }
        name.push_str(&self.repository);
        name.push('_');
        name.push_str(&self.name_tag());
        name.push('_');
        name.push_str(&platform.architecture);
        if let Some(v) = &platform.variant {
            name.push('_');
            name.push_str(v);
        }
        let mut name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        name.push_str(".tar");
        name
    }
}

impl fmt::Display for Reference {
    /// The fully qualified form: `docker.io/library/nginx:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Docker's rule: the first path component is a registry when it has a `.` or
/// a `:`, is `localhost`, or is a bracketed IPv6 address.
fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

/// A registry name as references use it: Docker Hub's other names are
/// `docker.io`.
pub fn normalise_registry(registry: &str) -> String {
    match registry {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        other => other.to_string(),
    }
}

/// Whether `s` is a registry name (`host[:port]`), as `--registry` takes.
pub fn is_valid_registry(s: &str) -> bool {
    valid_registry(s)
}

/// `host[:port]` where host is DNS labels or a bracketed IPv6 address.
fn valid_registry(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
    }
}

/// Whether `path` is a repository path as registries name them
/// (`library/nginx`): components of lowercase letters and digits joined by
/// `.`, `_`, `__` or dashes, separated by `/`, 255 characters at most.
pub fn valid_repository(path: &str) -> bool {
    path.len() <= MAX_NAME_LEN && path.split('/').all(valid_component)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
/// Whether `t` is a valid tag: letters, digits, `_`, `.`, `-`, at most 128,
/// not starting with `.` or `-`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// localhost, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback_host(registry: &str) -> bool {
    if let Ok(ip) = registry.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    if host == "localhost" || host == "::1" {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn p(s: &str) -> Reference {
        Reference::parse(s, DOCKER_HUB).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_like_docker_pull() {
        let cases: &[(&str, &str)] = &[
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.25", "docker.io/library/nginx:1.25"),
            ("library/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            (
                "index.docker.io/library/nginx",
                "docker.io/library/nginx:latest",
            ),
            ("registry-1.docker.io/nginx:x", "docker.io/library/nginx:x"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("ghcr.io/owner/app:v1", "ghcr.io/owner/app:v1"),
            ("gcr.io/a/b/c/d", "gcr.io/a/b/c/d:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
            ("127.0.0.1:5000/small", "127.0.0.1:5000/small:latest"),
            ("[::1]:5000/x:t", "[::1]:5000/x:t"),
            (
                "my-reg.example.com:443/ns/x",
                "my-reg.example.com:443/ns/x:latest",
            ),
            ("a__b-c---d/e.f_g", "docker.io/a__b-c---d/e.f_g:latest"),
            ("a.b/c", "a.b/c:latest"),
            ("Registry.Example.com/x", "Registry.Example.com/x:latest"),
            (
                &format!("nginx:1.25@{D}"),
                &format!("docker.io/library/nginx:1.25@{D}"),
            ),
            (
                &format!("nginx@{D}"),
                &format!("docker.io/library/nginx@{D}"),
            ),
            (
                &format!("localhost:5000/x@{D}"),
                &format!("localhost:5000/x@{D}"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(p(input).to_string(), *want, "{input}");
        }
    }

    #[test]
    fn parts_and_hosts() {
        let r = p("nginx");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/nginx");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_reference(), "latest");
        let r = p(&format!("ghcr.io/o/a:v1@{D}"));
        assert_eq!(r.api_host(), "ghcr.io");
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.tag.as_deref(), Some("v1"));
    }

    #[test]
    fn default_registry_flag() {
        let r = Reference::parse("small", "127.0.0.1:5000").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/small:latest");
        let r = Reference::parse("ghcr.io/x/y", "127.0.0.1:5000").unwrap();
        assert_eq!(r.registry, "ghcr.io");
        let r = Reference::parse("nginx", "index.docker.io").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
    }

    #[test]
    fn familiar_names_are_what_docker_load_shows() {
        assert_eq!(p("nginx").familiar_tagged().unwrap(), "nginx:latest");
        assert_eq!(p("user/app:v1").familiar_tagged().unwrap(), "user/app:v1");
        assert_eq!(
            p("127.0.0.1:5000/small").familiar_tagged().unwrap(),
            "127.0.0.1:5000/small:latest"
        );
        assert_eq!(p("docker.io/library/a/b").familiar_name(), "library/a/b");
        assert_eq!(p(&format!("nginx@{D}")).familiar_tagged(), None);
    }

    #[test]
    fn archive_names_follow_the_contract() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let armv7 = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(
            p("nginx").archive_file_name(&amd64),
            "library_nginx_latest_amd64.tar"
        );
        assert_eq!(
            p("ghcr.io/owner/app:v1").archive_file_name(&armv7),
            "ghcr.io_owner_app_v1_arm_v7.tar"
        );
        assert_eq!(
            p("127.0.0.1:5000/small").archive_file_name(&amd64),
            "127.0.0.1_5000_small_latest_amd64.tar"
        );
        assert_eq!(
            p(&format!("nginx@{D}")).archive_file_name(&amd64),
            "library_nginx_sha256-e3b0c44298fc_amd64.tar"
        );
        assert_eq!(
            p("[::1]:5000/x").archive_file_name(&amd64),
            "___1__5000_x_latest_amd64.tar"
        );
    }

    #[test]
    fn rejects_invalid_references() {
        for bad in [
            "",
            "   ",
            "Nginx",
            "user/App",
            "a:b:c",
            "nginx:",
            ":tag",
            "nginx:-bad",
            "nginx@sha256:xyz",
            "nginx@sha256:",
            "nginx@md5:abc",
            "nginx@",
            "/nginx",
            "nginx/",
            "a//b",
            "a/../b",
            "..",
            "ngi nx",
            "a-/b",
            "-a",
            "a___b",
            "ghcr.io/",
            "ghcr.io:port/x",
            "host:99999999/x",
            "[::1/x",
            "nginx:a/b",
            &format!("nginx:{}", "t".repeat(129)),
            &format!("{}/x", "a".repeat(300)),
        ] {
            assert!(
                Reference::parse(bad, DOCKER_HUB).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(matches!(
            Reference::parse("Nginx", DOCKER_HUB),
            Err(ReferenceError::Uppercase(_))
        ));
    }

    #[test]
    fn repository_paths() {
        for good in ["library/nginx", "a", "team/app-1/x__y", "a.b/c_d"] {
            assert!(valid_repository(good), "{good}");
        }
        let long = "a".repeat(256);
        for bad in [
            "", "/", "a//b", "../x", "a/../b", "Team/app", "a b", "a:b", "a/", "-a", &long,
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.8.9.1",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
