//! Where an image is pulled from: mirrors given with `--mirror
//! [REGISTRY=]HOST[:PORT][/PREFIX]` and `DOCKER_PULL_MIRRORS`, then those of
//! containers' `registries.conf` (`conf.rs`), then Docker's `daemon.json`
//! (`daemon.rs`), then the origin (which `registries.conf` may move
//! elsewhere, mark insecure, or block).
//!
//! The files are read once per run into a [`Config`]; [`sources`] is pure.

pub mod conf;
pub mod daemon;

use std::fmt;
use std::path::PathBuf;

use crate::reference::{
    DOCKER_HUB, DOCKER_HUB_API, Reference, is_valid_registry, normalise_registry,
};
use crate::registry::Trust;

/// Where a mirror (or another source setting) was written down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `--mirror`.
    Flag,
    /// `DOCKER_PULL_MIRRORS`.
    Env,
    /// A registries.conf or daemon.json file.
    File(PathBuf),
    /// The image's own registry, configured nowhere.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("--mirror"),
            Origin::Env => f.write_str("DOCKER_PULL_MIRRORS"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Default => f.write_str("the image reference"),
        }
    }
}

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
    /// Where it was given.
    pub from: Origin,
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
        } else if is_repository_path(prefix) {
            Some(prefix.to_string())
        } else {
            return Err(bad("the path must be a repository prefix such as `proxy`"));
        };
        Ok(Mirror {
            registry,
            host: host.to_ascii_lowercase(),
            scheme,
            prefix,
            from: Origin::Flag,
        })
    }

    /// Parses `DOCKER_PULL_MIRRORS`: comma- or space-separated mirrors.
    pub fn parse_list(s: &str) -> Result<Vec<Mirror>, MirrorError> {
        s.split([',', ' ', '\t', '\n'])
            .filter(|p| !p.trim().is_empty())
            .map(|p| Mirror::parse(p).map(|m| m.given_in(Origin::Env)))
            .collect()
    }

    /// The same mirror, noted as given in `from`.
    pub fn given_in(self, from: Origin) -> Mirror {
        Mirror { from, ..self }
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
    /// Whether it is a mirror (else the origin, or where registries.conf
    /// moved it).
    pub mirror: bool,
    /// How reports name it: `host[:port][/prefix]`.
    pub label: String,
    /// Whether the settings mark it insecure.
    pub trust: Trust,
    /// Where it was configured.
    pub from: Origin,
}

impl Source {
    /// A source at `host[/path]` serving `repository` (the part of the
    /// reference after what the configuration matched).
    fn at(
        endpoint: &Endpoint,
        rest: &str,
        mirror: bool,
        trust: Trust,
        from: Origin,
    ) -> Option<Source> {
        let repository = match (&endpoint.path, rest.is_empty()) {
            (Some(p), true) => p.clone(),
            (Some(p), false) => format!("{p}/{rest}"),
            (None, false) => rest.to_string(),
            (None, true) => return None,
        };
        let registry = normalise_registry(&endpoint.host);
        let host = if registry == DOCKER_HUB {
            DOCKER_HUB_API.to_string()
        } else {
            endpoint.host.clone()
        };
        Some(Source {
            registry,
            host,
            scheme: endpoint.scheme,
            repository,
            mirror,
            label: endpoint.to_string(),
            trust,
            from,
        })
    }
}

/// `host[:port]` and an optional repository path under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub scheme: Option<&'static str>,
    pub path: Option<String>,
}

impl Endpoint {
    /// `host[:port][/path]`, as registries.conf writes locations; `None`
    /// when it is not one.
    pub fn parse(s: &str) -> Option<Endpoint> {
        let s = s.trim().trim_end_matches('/');
        let (host, path) = match s.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let host = host.to_ascii_lowercase();
        if !is_valid_registry(&host) || path.is_some_and(|p| !is_repository_path(p)) {
            return None;
        }
        Some(Endpoint {
            host,
            scheme: None,
            path: path.map(str::to_string),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(p) = &self.path {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// `a/b-c/d.e`: lower-case path components, none empty.
pub(crate) fn is_repository_path(p: &str) -> bool {
    p.split('/').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    })
}

/// The source settings of a run, read once: registries.conf and daemon.json
/// (the mirrors given with flags and the environment are in `Settings`).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub registries: conf::Registries,
    pub daemon: daemon::Daemon,
}

/// Where [`Config`] is read from (resolved from the environment by `cli`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFiles {
    pub registries_conf: conf::Files,
    pub daemon_json: (PathBuf, daemon::Named),
}

/// A settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    RegistriesConf(#[from] conf::ConfError),
    #[error(transparent)]
    DaemonJson(#[from] daemon::DaemonError),
}

impl Config {
    /// Reads the files once; `warnings` collects what was named but missing.
    pub fn load(files: &ConfigFiles, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
        let registries = conf::Registries::load(&files.registries_conf, warnings)?;
        let (path, named) = &files.daemon_json;
        let daemon = daemon::Daemon::load(path, *named, warnings)?;
        Ok(Config { registries, daemon })
    }
}

/// A pull that registries.conf forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{image}: pulls of {prefix} are blocked by {} (blocked = true); remove that entry to allow them", .file.display())]
pub struct Blocked {
    pub image: String,
    pub prefix: String,
    pub file: PathBuf,
}

/// Where to pull `reference` from, in order: the mirrors given (`mirrors`:
/// flags, then the environment) for its registry, registries.conf's mirrors
/// for it, daemon.json's (Docker Hub only), then the origin, or where
/// registries.conf's `location` moved it. The same place twice is tried once.
pub fn sources(
    reference: &Reference,
    mirrors: &[Mirror],
    config: &Config,
) -> Result<Vec<Source>, Blocked> {
    let rule = config.registries.rule_for(reference);
    if let Some(rule) = rule.filter(|r| r.blocked) {
        return Err(Blocked {
            image: reference.to_string(),
            prefix: rule.prefix.to_string(),
            file: rule.file.clone(),
        });
    }
    let daemon = (reference.registry == DOCKER_HUB).then_some(&config.daemon.mirrors[..]);
    let given = mirrors
        .iter()
        .chain(daemon.unwrap_or_default())
        .filter(|m| m.registry == reference.registry);
    let mut out: Vec<Source> = Vec::new();
    let mut push = |s: Source| {
        if !out
            .iter()
            .any(|o| o.host == s.host && o.repository == s.repository)
        {
            out.push(s);
        }
    };
    let (from_flags, from_daemon): (Vec<&Mirror>, Vec<&Mirror>) =
        given.partition(|m| !matches!(m.from, Origin::File(_)));
    for m in from_flags {
        push(m.source(reference));
    }
    if let Some(rule) = rule {
        rule.mirrors(reference).into_iter().for_each(&mut push);
    }
    for m in from_daemon {
        push(m.source(reference));
    }
    let origin = rule.and_then(|r| r.origin(reference));
    push(origin.unwrap_or_else(|| origin_of(reference)));
    Ok(out)
}

impl Mirror {
    fn source(&self, reference: &Reference) -> Source {
        let repository = match &self.prefix {
            Some(p) => format!("{p}/{}", reference.repository),
            None => reference.repository.clone(),
        };
        Source {
            registry: self.host.clone(),
            host: self.host.clone(),
            scheme: self.scheme,
            repository,
            mirror: true,
            label: self.to_string(),
            trust: Trust::Verified,
            from: self.from.clone(),
        }
    }
}

/// The image's own registry.
fn origin_of(reference: &Reference) -> Source {
    Source {
        registry: reference.registry.clone(),
        host: reference.api_host().to_string(),
        scheme: None,
        repository: reference.repository.clone(),
        mirror: false,
        label: reference.api_host().to_string(),
        trust: Trust::Verified,
        from: Origin::Default,
    }
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
        let s = sources(&hub, &mirrors, &Config::default()).unwrap();
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
        let s = sources(&other, &mirrors, &Config::default()).unwrap();
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
        let s = sources(&quay, &mirrors, &Config::default()).unwrap();
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            (s[0].host.as_str(), s[0].repository.as_str(), s[0].mirror),
            ("m.daocloud.io", "quay.io/org/app", true)
        );
        assert_eq!((s[1].host.as_str(), s[1].mirror), ("quay.io", false));
        let hub = Reference::parse("alpine", DOCKER_HUB).unwrap();
        let s = sources(&hub, &mirrors, &Config::default()).unwrap();
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
