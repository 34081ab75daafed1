//! Mirrors (`--mirror [REGISTRY=]HOST[:PORT][/PREFIX]`, `DOCKER_PULL_MIRRORS`)
//! and the list of places an image is pulled from: the mirrors of its
//! registry in order, then its origin.

use std::fmt;

use crate::reference::{DOCKER_HUB, Reference, is_valid_registry, normalise_registry};

/// A registry that serves another registry's images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The registry it mirrors (`docker.io` unless written `REGISTRY=`).
    pub registry: String,
    /// `host[:port]`.
    pub host: String,
    /// `http` or `https` when the user wrote one.
    pub scheme: Option<&'static str>,
    /// A repository prefix (`proxy` for `harbor.local/proxy`): Docker Hub's
    /// `library/nginx` is `proxy/library/nginx` there, and with
    /// `quay.io=m.daocloud.io/quay.io` quay.io's `org/app` is `quay.io/org/app`.
    pub prefix: Option<String>,
}

/// Why a mirror cannot be used as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mirror {given:?}: {why}")]
pub struct MirrorError {
    pub given: String,
    pub why: &'static str,
}

impl Mirror {
    /// Parses `[REGISTRY=][http://|https://]host[:port][/prefix]`.
    pub fn parse(s: &str) -> Result<Mirror, MirrorError> {
        let bad = |why: &'static str| MirrorError {
            given: s.to_string(),
            why,
        };
        let (registry, t) = match s.trim().split_once('=') {
            Some((r, rest)) => {
                let r = r.trim().to_ascii_lowercase();
                if !is_valid_registry(&r) {
                    return Err(bad("REGISTRY= must name a registry, HOST[:PORT]"));
                }
                (normalise_registry(&r), rest.trim())
            }
            None => (DOCKER_HUB.to_string(), s.trim()),
        };
        let (scheme, rest) = match t.split_once("://") {
            Some((sch, rest)) => match sch.to_ascii_lowercase().as_str() {
                "http" => (Some("http"), rest),
                "https" => (Some("https"), rest),
                _ => return Err(bad("the scheme must be http:// or https://")),
            },
            None => (None, t),
        };
        let (host, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h, p.trim_end_matches('/')),
            None => (rest, ""),
        };
        if !is_valid_registry(host) {
            return Err(bad("expected HOST[:PORT], optionally with a path"));
        }
        let prefix = if prefix.is_empty() {
            None
        } else {
            let ok = prefix.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
            if !ok {
                return Err(bad("the path must be a repository prefix such as `proxy`"));
            }
            Some(prefix.to_string())
        };
        Ok(Mirror {
            registry,
            host: host.to_ascii_lowercase(),
            scheme,
            prefix,
        })
    }

    /// Parses `DOCKER_PULL_MIRRORS`: comma- or space-separated mirrors.
    pub fn parse_list(s: &str) -> Result<Vec<Mirror>, MirrorError> {
        s.split([',', ' ', '\t', '\n'])
            .filter(|p| !p.trim().is_empty())
            .map(Mirror::parse)
            .collect()
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(p) = &self.prefix {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// One place to pull an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The registry name for messages and the credentials lookup.
    pub registry: String,
    /// Where its API lives.
    pub host: String,
    pub scheme: Option<&'static str>,
    /// The repository there.
    pub repository: String,
    /// Whether it is a mirror (else the origin).
    pub mirror: bool,
    /// How reports name it: `host[:port][/prefix]`.
    pub label: String,
}

/// Where to pull `reference` from: the mirrors of its registry in order,
/// then the origin.
pub fn sources(reference: &Reference, mirrors: &[Mirror]) -> Vec<Source> {
    let mut out = Vec::new();
    for m in mirrors.iter().filter(|m| m.registry == reference.registry) {
        let repository = match &m.prefix {
            Some(p) => format!("{p}/{}", reference.repository),
            None => reference.repository.clone(),
        };
        out.push(Source {
            registry: m.host.clone(),
            host: m.host.clone(),
            scheme: m.scheme,
            repository,
            mirror: true,
            label: m.to_string(),
        });
    }
    out.push(Source {
        registry: reference.registry.clone(),
        host: reference.api_host().to_string(),
        scheme: None,
        repository: reference.repository.clone(),
        mirror: false,
        label: reference.api_host().to_string(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mirrors() {
        let m = Mirror::parse("mirror.gcr.io").unwrap();
        assert_eq!(
            (m.host.as_str(), m.scheme, m.prefix.as_deref()),
            ("mirror.gcr.io", None, None)
        );
        let m = Mirror::parse("http://127.0.0.1:5001/").unwrap();
        assert_eq!(
            (m.host.as_str(), m.scheme),
            ("127.0.0.1:5001", Some("http"))
        );
        assert_eq!(m.prefix, None);
        let m = Mirror::parse("HTTPS://Harbor.Local/dockerhub-proxy").unwrap();
        assert_eq!(m.host, "harbor.local");
        assert_eq!(m.scheme, Some("https"));
        assert_eq!(m.prefix.as_deref(), Some("dockerhub-proxy"));
        assert_eq!(m.to_string(), "harbor.local/dockerhub-proxy");
        for bad in [
            "", "ftp://x", "bad host", "h:port", "h/Upper", "h//x", "http://",
        ] {
            assert!(Mirror::parse(bad).is_err(), "{bad}");
        }
        let list = Mirror::parse_list(" a.io, b.io:5000 http://c ").unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[2].scheme, Some("http"));
        assert!(Mirror::parse_list("").unwrap().is_empty());
        assert!(Mirror::parse_list("a.io,,bad_host!").is_err());
    }

    #[test]
    fn sources_put_mirrors_first_for_hub_images_only() {
        let mirrors = vec![
            Mirror::parse("m1.io").unwrap(),
            Mirror::parse("m2.io/proxy").unwrap(),
        ];
        let hub = Reference::parse("nginx", DOCKER_HUB).unwrap();
        let s = sources(&hub, &mirrors);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].host.as_str(), s[0].repository.as_str(), s[0].mirror),
            ("m1.io", "library/nginx", true)
        );
        assert_eq!(s[1].repository, "proxy/library/nginx");
        assert_eq!(s[1].label, "m2.io/proxy");
        assert_eq!(
            (s[2].host.as_str(), s[2].registry.as_str(), s[2].mirror),
            ("registry-1.docker.io", "docker.io", false)
        );
        let other = Reference::parse("ghcr.io/o/a", DOCKER_HUB).unwrap();
        let s = sources(&other, &mirrors);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].label, "ghcr.io");
    }

    #[test]
    fn mirrors_for_other_registries_and_prefix_style() {
        let m = Mirror::parse("ghcr.io=ghcr.m.daocloud.io").unwrap();
        assert_eq!(
            (m.registry.as_str(), m.host.as_str()),
            ("ghcr.io", "ghcr.m.daocloud.io")
        );
        let m = Mirror::parse("index.docker.io=http://127.0.0.1:5001").unwrap();
        assert_eq!((m.registry.as_str(), m.scheme), ("docker.io", Some("http")));
        assert!(Mirror::parse("not a host=m.io").is_err());
        assert!(Mirror::parse("ghcr.io=").is_err());
        let mirrors = vec![
            Mirror::parse("quay.io=m.daocloud.io/quay.io").unwrap(),
            Mirror::parse("ghcr.io=ghcr.m.daocloud.io").unwrap(),
            Mirror::parse("hub.mirror.io").unwrap(),
        ];
        let quay = Reference::parse("quay.io/org/app:v1", DOCKER_HUB).unwrap();
        let s = sources(&quay, &mirrors);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            (s[0].host.as_str(), s[0].repository.as_str(), s[0].mirror),
            ("m.daocloud.io", "quay.io/org/app", true)
        );
        assert_eq!((s[1].host.as_str(), s[1].mirror), ("quay.io", false));
        let hub = Reference::parse("alpine", DOCKER_HUB).unwrap();
        let s = sources(&hub, &mirrors);
        assert_eq!(
            s.iter().map(|s| s.host.as_str()).collect::<Vec<_>>(),
            ["hub.mirror.io", "registry-1.docker.io"]
        );
        let list = Mirror::parse_list("ghcr.io=a.io, quay.io=b.io/quay.io c.io").unwrap();
        assert_eq!(
            list.iter().map(|m| m.registry.as_str()).collect::<Vec<_>>(),
            ["ghcr.io", "quay.io", "docker.io"]
        );
    }
}
