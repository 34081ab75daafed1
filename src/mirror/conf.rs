//! containers' `registries.conf`, as podman, skopeo and buildah read it:
//! `$CONTAINERS_REGISTRIES_CONF` alone when set; else the user's
//! `~/.config/containers/registries.conf` with its `registries.conf.d/`
//! drop-ins, or, when the user has none, `/etc/containers/registries.conf`
//! with the drop-ins of both directories (system first), each directory's
//! `*.conf` files in name order. A drop-in's `[[registry]]` replaces an
//! earlier one with the same prefix.
//!
//! Used: `[[registry]]` `prefix`, `location` (where the image really is),
//! `insecure`, `blocked`, `mirror-by-digest-only`, and `[[registry.mirror]]`
//! `location`, `insecure`, `pull-from-mirror`; the version 1 lists
//! `[registries.insecure]` and `[registries.block]`. Short-name settings
//! (`unqualified-search-registries`, `[aliases]`) are not: references keep
//! Docker's rules. The longest matching prefix decides, as in containers/image.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Endpoint, Origin, Source, is_repository_path};
use crate::reference::{Reference, is_valid_registry, normalise_registry};
use crate::registry::Trust;

/// Larger files are refused (the ones podman installs are a few KiB).
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Which registries.conf files a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Files {
    /// `$CONTAINERS_REGISTRIES_CONF`: this file alone.
    Only(PathBuf),
    /// The user's directory (`~/.config/containers`, when `HOME` is set),
    /// else the system's (`/etc/containers`).
    Search {
        user: Option<PathBuf>,
        system: PathBuf,
    },
}

impl Files {
    /// The files to read, in order (those that do not exist are skipped).
    fn list(&self) -> Vec<PathBuf> {
        match self {
            Files::Only(path) => vec![path.clone()],
            Files::Search { user, system } => {
                let main = |dir: &Path| dir.join("registries.conf");
                let user_main = user.as_deref().map(main).filter(|p| p.exists());
                let mut out = Vec::new();
                match user_main {
                    Some(file) => out.push(file),
                    None => {
                        out.push(main(system));
                        out.extend(drop_ins(system));
                    }
                }
                out.extend(user.iter().flat_map(|d| drop_ins(d)));
                out
            }
        }
    }
}

/// `DIR/registries.conf.d/*.conf` in name order.
fn drop_ins(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join("registries.conf.d")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
        .collect();
    files.sort();
    files
}

/// A registries.conf file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: {detail} (podman and skopeo would refuse it too; correct it, or point CONTAINERS_REGISTRIES_CONF at another file)",
    .file.display()
)]
pub struct ConfError {
    pub file: PathBuf,
    pub detail: String,
}

/// Which references an entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefix {
    /// A registry, optionally a repository path under it.
    Exact {
        registry: String,
        path: Option<String>,
    },
    /// `*.example.com`: every registry whose name ends in `.example.com`
    /// (kept with its leading dot).
    Wildcard(String),
}

impl Prefix {
    fn parse(s: &str) -> Result<Prefix, String> {
        let s = s.trim().trim_end_matches('/');
        if let Some(domain) = s.strip_prefix("*.") {
            if !is_valid_registry(domain) || domain.contains(':') {
                return Err(format!("prefix {s:?}: a wildcard is `*.` and a domain"));
            }
            return Ok(Prefix::Wildcard(format!(
                ".{}",
                domain.to_ascii_lowercase()
            )));
        }
        let (registry, path) = match s.split_once('/') {
            Some((r, p)) => (r, Some(p)),
            None => (s, None),
        };
        let registry = registry.to_ascii_lowercase();
        if !is_valid_registry(&registry) {
            return Err(format!("prefix {s:?} does not start with a registry host"));
        }
        if path.is_some_and(|p| !is_repository_path(p)) {
            return Err(format!(
                "prefix {s:?}: only a registry and repository path are supported (no tag or digest)"
            ));
        }
        Ok(Prefix::Exact {
            registry: normalise_registry(&registry),
            path: path.map(str::to_string),
        })
    }

    /// What follows the prefix in `reference`'s repository, when it matches.
    fn rest<'r>(&self, reference: &'r Reference) -> Option<&'r str> {
        let repo = reference.repository.as_str();
        match self {
            Prefix::Wildcard(suffix) => reference.registry.ends_with(suffix).then_some(repo),
            Prefix::Exact { registry, path } if *registry == reference.registry => match path {
                None => Some(repo),
                Some(p) if repo == p => Some(""),
                Some(p) => repo.strip_prefix(p.as_str())?.strip_prefix('/'),
            },
            Prefix::Exact { .. } => None,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::Wildcard(suffix) => write!(f, "*{suffix}"),
            Prefix::Exact { registry, path } => {
                f.write_str(registry)?;
                if let Some(p) = path {
                    write!(f, "/{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// Which references a mirror serves (`pull-from-mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFrom {
    All,
    DigestOnly,
    TagOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfMirror {
    location: Endpoint,
    trust: Trust,
    pull_from: PullFrom,
}

/// One `[[registry]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub prefix: Prefix,
    /// Where the images really are, when not at the prefix.
    location: Option<Endpoint>,
    trust: Trust,
    pub blocked: bool,
    mirror_by_digest_only: bool,
    mirrors: Vec<ConfMirror>,
    /// The file that says so.
    pub file: PathBuf,
}

impl Rule {
    /// The entry's mirrors that serve `reference`, in order.
    pub fn mirrors(&self, reference: &Reference) -> Vec<Source> {
        let Some(rest) = self.prefix.rest(reference) else {
            return Vec::new();
        };
        let by_digest = reference.digest.is_some();
        self.mirrors
            .iter()
            .filter(|m| match m.pull_from {
                _ if self.mirror_by_digest_only => by_digest,
                PullFrom::All => true,
                PullFrom::DigestOnly => by_digest,
                PullFrom::TagOnly => !by_digest,
            })
            .filter_map(|m| {
                let from = Origin::File(self.file.clone());
                Source::at(&m.location, rest, true, m.trust, from)
            })
            .collect()
    }

    /// The origin, moved by `location` and marked by `insecure`, when the
    /// entry changes either.
    pub fn origin(&self, reference: &Reference) -> Option<Source> {
        let rest = self.prefix.rest(reference)?;
        let from = Origin::File(self.file.clone());
        match &self.location {
            Some(location) => Source::at(location, rest, false, self.trust, from),
            None => {
                let mut origin = super::origin_of(reference);
                origin.trust = self.trust;
                origin.from = from;
                Some(origin)
            }
        }
    }

    /// The length of the prefix as written: the longest match wins.
    fn specificity(&self) -> usize {
        self.prefix.to_string().len()
    }
}

/// Every `[[registry]]` entry of the files read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registries {
    rules: Vec<Rule>,
}

impl Registries {
    /// The entry for `reference`: the one with the longest matching prefix.
    pub fn rule_for(&self, reference: &Reference) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| r.prefix.rest(reference).is_some())
            .max_by_key(|r| r.specificity())
    }

    /// Reads `files` in order; those that do not exist are skipped, and
    /// `warnings` says so when the user named one.
    pub fn load(files: &Files, warnings: &mut Vec<String>) -> Result<Registries, ConfError> {
        let mut out = Registries::default();
        for file in files.list() {
            let text = match read_bounded(&file) {
                Ok(Some(text)) => text,
                Ok(None) => {
                    if let Files::Only(_) = files {
                        warnings.push(format!(
                            "CONTAINERS_REGISTRIES_CONF names {}, which does not exist",
                            file.display()
                        ));
                    }
                    continue;
                }
                Err(detail) => return Err(ConfError { file, detail }),
            };
            tracing::debug!(file = %file.display(), "registries.conf");
            let rules = parse(&text, &file).map_err(|detail| ConfError {
                file: file.clone(),
                detail,
            })?;
            out.merge(rules);
        }
        Ok(out)
    }

    /// A later file's entries replace earlier ones with the same prefix.
    fn merge(&mut self, rules: Vec<Rule>) {
        for rule in rules {
            match self.rules.iter_mut().find(|r| r.prefix == rule.prefix) {
                Some(old) => *old = rule,
                None => self.rules.push(rule),
            }
        }
    }
}

/// The file's text; `None` when it does not exist.
fn read_bounded(file: &Path) -> Result<Option<String>, String> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "not UTF-8 text".to_string())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    #[serde(default)]
    registry: Vec<RawRegistry>,
    /// Version 1: `[registries.insecure]`, `[registries.block]`.
    #[serde(default)]
    registries: Option<RawV1>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: String,
}

#[derive(Deserialize, Default)]
struct RawV1 {
    #[serde(default)]
    insecure: Option<RawList>,
    #[serde(default)]
    block: Option<RawList>,
}

#[derive(Deserialize, Default)]
struct RawList {
    #[serde(default)]
    registries: Vec<String>,
}

/// The entries of one file.
fn parse(text: &str, file: &Path) -> Result<Vec<Rule>, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
    if let Some(v1) = raw.registries {
        if !raw.registry.is_empty() {
            return Err("mixes the version 1 [registries.*] tables with [[registry]]".into());
        }
        return v1_rules(v1, file);
    }
    raw.registry
        .into_iter()
        .map(|r| rule(r, file))
        .collect::<Result<Vec<_>, _>>()
}

fn rule(raw: RawRegistry, file: &Path) -> Result<Rule, String> {
    let written = if raw.prefix.trim().is_empty() {
        raw.location.as_str()
    } else {
        raw.prefix.as_str()
    };
    if written.trim().is_empty() {
        return Err("a [[registry]] has neither prefix nor location".into());
    }
    let location = match raw.location.trim() {
        "" => None,
        l => Some(Endpoint::parse(l).ok_or_else(|| {
            format!("location {l:?} is not HOST[:PORT][/PATH] (no scheme, tag or digest)")
        })?),
    };
    let prefix = Prefix::parse(written)?;
    if matches!(prefix, Prefix::Wildcard(_)) && location.is_some() {
        return Err(format!(
            "prefix {written:?}: a wildcard prefix cannot have a location"
        ));
    }
    // A location that names the prefix itself moves nothing.
    let location =
        location.filter(|l| Prefix::parse(&l.to_string()).ok().as_ref() != Some(&prefix));
    let mirrors = raw
        .mirror
        .into_iter()
        .map(|m| mirror(m, written))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        prefix,
        location,
        trust: trust(raw.insecure),
        blocked: raw.blocked,
        mirror_by_digest_only: raw.mirror_by_digest_only,
        mirrors,
        file: file.to_path_buf(),
    })
}

fn mirror(raw: RawMirror, prefix: &str) -> Result<ConfMirror, String> {
    let location = Endpoint::parse(&raw.location).ok_or_else(|| {
        format!(
            "a mirror of {prefix:?} has location {:?}, not HOST[:PORT][/PATH]",
            raw.location
        )
    })?;
    let pull_from = match raw.pull_from_mirror.trim() {
        "" | "all" => PullFrom::All,
        "digest-only" => PullFrom::DigestOnly,
        "tag-only" => PullFrom::TagOnly,
        other => {
            return Err(format!(
                "pull-from-mirror {other:?} (a mirror of {prefix:?}) is not all, digest-only or tag-only"
            ));
        }
    };
    Ok(ConfMirror {
        location,
        trust: trust(raw.insecure),
        pull_from,
    })
}

fn trust(insecure: bool) -> Trust {
    if insecure {
        Trust::Insecure
    } else {
        Trust::Verified
    }
}

/// Version 1: lists of insecure and blocked registries.
fn v1_rules(v1: RawV1, file: &Path) -> Result<Vec<Rule>, String> {
    let mut rules: Vec<Rule> = Vec::new();
    let insecure = v1.insecure.unwrap_or_default().registries;
    let blocked = v1.block.unwrap_or_default().registries;
    let entries = (insecure.iter().map(|r| (r, true))).chain(blocked.iter().map(|r| (r, false)));
    for (written, is_insecure) in entries {
        let prefix = Prefix::parse(written)?;
        let index = match rules.iter().position(|r| r.prefix == prefix) {
            Some(i) => i,
            None => {
                rules.push(Rule {
                    prefix,
                    location: None,
                    trust: Trust::Verified,
                    blocked: false,
                    mirror_by_digest_only: false,
                    mirrors: Vec::new(),
                    file: file.to_path_buf(),
                });
                rules.len() - 1
            }
        };
        if is_insecure {
            rules[index].trust = Trust::Insecure;
        } else {
            rules[index].blocked = true;
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::DOCKER_HUB;

    fn r(s: &str) -> Reference {
        Reference::parse(s, DOCKER_HUB).unwrap()
    }

    fn load_text(text: &str) -> Result<Registries, String> {
        let mut reg = Registries::default();
        reg.merge(parse(text, Path::new("/etc/containers/registries.conf"))?);
        Ok(reg)
    }

    /// The file podman's packages install (comments trimmed), with the
    /// short-name aliases drop-in: nothing in them changes a pull.
    #[test]
    fn reads_the_files_podman_installs() {
        let reg = load_text(
            r#"
# For more information on this configuration file, see containers-registries.conf(5).
unqualified-search-registries = ["registry.fedoraproject.org", "registry.access.redhat.com", "docker.io"]
short-name-mode = "enforcing"

[aliases]
  "fedora" = "registry.fedoraproject.org/fedora"
  "nginx" = "docker.io/library/nginx"
"#,
        )
        .unwrap();
        assert_eq!(reg, Registries::default());
        assert!(reg.rule_for(&r("nginx")).is_none());
    }

    #[test]
    fn mirrors_locations_and_the_longest_prefix() {
        let reg = load_text(
            r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror.gcr.io"

[[registry.mirror]]
location = "harbor.corp.example:8443/dockerhub-proxy"
insecure = true

[[registry]]
prefix = "docker.io/library/private"
location = "internal.example/team/private"
insecure = true

[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "m.daocloud.io/quay.io"
"#,
        )
        .unwrap();
        let nginx = r("nginx:1.27");
        let rule = reg.rule_for(&nginx).unwrap();
        let m = rule.mirrors(&nginx);
        assert_eq!(
            m.iter()
                .map(|s| (s.host.as_str(), s.repository.as_str(), s.trust))
                .collect::<Vec<_>>(),
            [
                ("mirror.gcr.io", "library/nginx", Trust::Verified),
                (
                    "harbor.corp.example:8443",
                    "dockerhub-proxy/library/nginx",
                    Trust::Insecure
                ),
            ]
        );
        assert_eq!(m[1].label, "harbor.corp.example:8443/dockerhub-proxy");
        assert_eq!(
            m[0].from,
            Origin::File("/etc/containers/registries.conf".into())
        );
        let origin = rule.origin(&nginx).unwrap();
        assert_eq!(
            (origin.host.as_str(), origin.mirror),
            ("registry-1.docker.io", false)
        );

        let private = r("private/app:v1");
        assert_eq!(private.repository, "private/app");
        let private = r("docker.io/library/private/app");
        let rule = reg.rule_for(&private).unwrap();
        assert!(rule.mirrors(&private).is_empty());
        let origin = rule.origin(&private).unwrap();
        assert_eq!(
            (
                origin.host.as_str(),
                origin.repository.as_str(),
                origin.trust
            ),
            ("internal.example", "team/private/app", Trust::Insecure)
        );
        // `library/privateer` does not match `library/private`.
        let other = r("privateer");
        assert_eq!(
            reg.rule_for(&other).unwrap().prefix.to_string(),
            "docker.io"
        );

        let quay = r("quay.io/org/app:v2");
        let m = reg.rule_for(&quay).unwrap().mirrors(&quay);
        assert_eq!(
            (m[0].host.as_str(), m[0].repository.as_str()),
            ("m.daocloud.io", "quay.io/org/app")
        );
        assert!(reg.rule_for(&r("ghcr.io/o/a")).is_none());
    }

    #[test]
    fn blocked_wildcards_digest_only_mirrors() {
        let reg = load_text(
            r#"
[[registry]]
prefix = "*.blocked.example"
blocked = true

[[registry]]
prefix = "ghcr.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "ghcr.m.daocloud.io"

[[registry]]
prefix = "registry.k8s.io"
[[registry.mirror]]
location = "k8s-tags.example"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "k8s-digests.example"
pull-from-mirror = "digest-only"
"#,
        )
        .unwrap();
        let blocked = r("a.blocked.example/x/y");
        assert!(reg.rule_for(&blocked).unwrap().blocked);
        assert!(reg.rule_for(&r("blocked.example/x")).is_none());
        let digest = format!("@sha256:{}", "a".repeat(64));
        let by_tag = r("ghcr.io/o/a:v1");
        let by_digest = r(&format!("ghcr.io/o/a{digest}"));
        assert!(reg.rule_for(&by_tag).unwrap().mirrors(&by_tag).is_empty());
        assert_eq!(
            reg.rule_for(&by_digest).unwrap().mirrors(&by_digest).len(),
            1
        );
        let hosts = |s: &str| {
            let k = r(s);
            let m = reg.rule_for(&k).unwrap().mirrors(&k);
            m.into_iter().map(|s| s.host).collect::<Vec<_>>()
        };
        assert_eq!(hosts("registry.k8s.io/pause:3.9"), ["k8s-tags.example"]);
        assert_eq!(
            hosts(&format!("registry.k8s.io/pause{digest}")),
            ["k8s-digests.example"]
        );
    }

    #[test]
    fn version_1_lists() {
        let reg = load_text(
            r#"
[registries.search]
registries = ['docker.io']
[registries.insecure]
registries = ['10.0.0.5:5000']
[registries.block]
registries = ['bad.example', '10.0.0.5:5000']
"#,
        )
        .unwrap();
        let rule = reg.rule_for(&r("10.0.0.5:5000/app")).unwrap();
        assert!(rule.blocked);
        assert_eq!(rule.trust, Trust::Insecure);
        assert!(reg.rule_for(&r("bad.example/x")).unwrap().blocked);
    }

    #[test]
    fn refuses_what_containers_would_refuse() {
        for (text, says) in [
            ("[[registry]\nprefix = 1", "TOML"),
            (
                "[[registry]]\ninsecure = true",
                "neither prefix nor location",
            ),
            (
                "[[registry]]\nprefix = \"*.x.io\"\nlocation = \"y.io\"",
                "wildcard",
            ),
            ("[[registry]]\nlocation = \"https://x.io\"", "HOST[:PORT]"),
            ("[[registry]]\nprefix = \"x.io/a:tag\"", "no tag"),
            (
                "[[registry]]\nprefix = \"x.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"some\"",
                "pull-from-mirror",
            ),
            (
                "[registries.block]\nregistries = ['a.io']\n[[registry]]\nprefix = \"b.io\"",
                "mixes",
            ),
            (
                "[[registry]]\nprefix = \"x.io\"\nblocked = \"yes\"",
                "blocked",
            ),
        ] {
            let e = load_text(text).unwrap_err();
            assert!(e.contains(says) || says == "TOML", "{text}: {e}");
        }
    }

    #[test]
    fn files_in_order_and_drop_ins_replace_entries() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("etc");
        let user = dir.path().join("home/.config/containers");
        std::fs::create_dir_all(system.join("registries.conf.d")).unwrap();
        std::fs::create_dir_all(user.join("registries.conf.d")).unwrap();
        std::fs::write(
            system.join("registries.conf"),
            "[[registry]]\nprefix = \"a.io\"\nblocked = true\n",
        )
        .unwrap();
        std::fs::write(
            system.join("registries.conf.d/10-b.conf"),
            "[[registry]]\nprefix = \"b.io\"\nblocked = true\n",
        )
        .unwrap();
        std::fs::write(system.join("registries.conf.d/ignored.txt"), "not toml [").unwrap();
        std::fs::write(
            user.join("registries.conf.d/20-a.conf"),
            "[[registry]]\nprefix = \"a.io\"\ninsecure = true\n",
        )
        .unwrap();
        let files = Files::Search {
            user: Some(user.clone()),
            system: system.clone(),
        };
        let mut warnings = Vec::new();
        let reg = Registries::load(&files, &mut warnings).unwrap();
        let a = reg.rule_for(&r("a.io/x")).unwrap();
        assert!(!a.blocked, "the user's drop-in replaced the entry");
        assert_eq!(a.file, user.join("registries.conf.d/20-a.conf"));
        assert!(reg.rule_for(&r("b.io/x")).unwrap().blocked);
        // A user file of one's own: the system's files are not read.
        std::fs::write(user.join("registries.conf"), "").unwrap();
        let reg = Registries::load(&files, &mut warnings).unwrap();
        assert!(reg.rule_for(&r("b.io/x")).is_none());
        assert!(!reg.rule_for(&r("a.io/x")).unwrap().blocked);
        assert!(warnings.is_empty());
        // The variable: that file alone, and a warning when it is missing.
        let only = Files::Only(dir.path().join("missing.conf"));
        let reg = Registries::load(&only, &mut warnings).unwrap();
        assert_eq!(reg, Registries::default());
        assert!(warnings[0].contains("missing.conf"), "{warnings:?}");
        std::fs::write(
            system.join("registries.conf"),
            "[[registry]]\nprefix = \"?\"\n",
        )
        .unwrap();
        let files = Files::Only(system.join("registries.conf"));
        let e = Registries::load(&files, &mut warnings).unwrap_err();
        assert!(e.to_string().contains("etc/registries.conf: prefix"), "{e}");
    }
}
