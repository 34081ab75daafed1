//! Stored registry credentials, found as `docker login` and `podman login`
//! leave them: Docker's `config.json` (`credHelpers`, `credsStore`, `auths`)
//! and the containers `auth.json` files.
//!
//! Lookup order for a registry: the Docker config (its credential helper for
//! the registry, else its `credsStore`, else its `auths` entry), then the
//! containers auth files in order. Which files those are ([`Locations`]) is
//! resolved from the environment with the other settings (`crate::cli`);
//! this module never reads the environment. Secrets are never logged.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use tracing::{debug, warn};

use crate::reference::DOCKER_HUB;
use crate::registry::auth::{Credentials, Secret};

/// The server address credential helpers know Docker Hub by.
pub const DOCKER_HUB_SERVER_ADDRESS: &str = "https://index.docker.io/v1/";

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry(<redacted>)")
    }
}

/// One credentials file that was read.
#[derive(Debug)]
struct Loaded {
    path: PathBuf,
    file: ConfigFile,
    /// Whether helpers apply (Docker's config), or only `auths` (auth.json).
    docker: bool,
}

/// Where to look for credentials files (resolved by the caller: see
/// `crate::cli` for the environment variables that say where they are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locations {
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Containers auth files, in order.
    pub auth_files: Vec<PathBuf>,
}

/// The credentials files of a run, read once.
#[derive(Debug, Default)]
pub struct CredentialStore {
    files: Vec<Loaded>,
}

impl CredentialStore {
    /// Reads the files that exist; one that cannot be read or parsed is
    /// reported with a warning and skipped.
    pub fn load(locations: &Locations) -> CredentialStore {
        let mut files = Vec::new();
        let all = locations
            .docker_config
            .iter()
            .map(|p| (p, true))
            .chain(locations.auth_files.iter().map(|p| (p, false)));
        for (path, docker) in all {
            if files.iter().any(|l: &Loaded| l.path == *path) {
                continue;
            }
            let text = match std::fs::read(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    warn!(
                        "cannot read {}: {e}; its credentials are ignored",
                        path.display()
                    );
                    continue;
                }
            };
            match serde_json::from_slice::<ConfigFile>(&text) {
                Ok(file) => {
                    debug!(path = %path.display(), entries = file.auths.len(), "credentials file");
                    files.push(Loaded {
                        path: path.clone(),
                        file,
                        docker,
                    });
                }
                Err(e) => warn!(
                    "{} is not a valid credentials file ({}); its credentials are ignored",
                    path.display(),
                    // serde_json's messages name positions, never values.
                    e
                ),
            }
        }
        CredentialStore { files }
    }

    /// Credentials for `repository` on `registry` (`docker.io`,
    /// `host[:port]`), or `None` to go anonymous.
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<Credentials> {
        let wanted = normalize_key(registry)?;
        for loaded in &self.files {
            if loaded.docker {
                let helper = loaded
                    .file
                    .cred_helpers
                    .iter()
                    .find(|(k, _)| normalize_key(k).is_some_and(|k| k.host == wanted.host))
                    .map(|(_, v)| v)
                    .or(loaded.file.creds_store.as_ref())
                    .filter(|h| !h.trim().is_empty());
                if let Some(helper) = helper
                    && let Some(c) = run_helper(helper.trim(), registry, &loaded.path)
                {
                    return Some(c);
                }
            }
            if let Some(c) = auths_entry(loaded, &wanted.host, repository) {
                return Some(c);
            }
        }
        None
    }
}

/// A config key or registry name, as a host and (podman's) repository path.
#[derive(Debug, PartialEq, Eq)]
struct Key {
    /// Lowercase `host[:port]`; Docker Hub's aliases are all `docker.io`.
    host: String,
    /// A repository prefix the entry is limited to (only for keys written
    /// without a scheme, as podman does).
    path: Option<String>,
}

fn normalize_key(key: &str) -> Option<Key> {
    let key = key.trim();
    let (rest, had_scheme) = match key.split_once("://") {
        Some((_, rest)) => (rest, true),
        None => (key, false),
    };
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p.trim_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    };
    // Docker writes `https://index.docker.io/v1/` and `host/v2/`: API paths,
    // not repository prefixes.
    let path = if had_scheme || path.is_empty() || path == "v1" || path == "v2" {
        None
    } else {
        Some(path.to_string())
    };
    Some(Key { host, path })
}

/// The `auths` entry for the registry; for podman-style keys with a path,
/// the longest prefix of the repository wins over a bare host.
fn auths_entry(loaded: &Loaded, host: &str, repository: &str) -> Option<Credentials> {
    let mut best: Option<(usize, &String, &AuthEntry)> = None;
    for (k, entry) in &loaded.file.auths {
        let Some(key) = normalize_key(k) else {
            continue;
        };
        if key.host != host {
            continue;
        }
        let rank = match &key.path {
            None => 0,
            Some(p) if repository == p || repository.starts_with(&format!("{p}/")) => p.len() + 1,
            Some(_) => continue,
        };
        if best.is_none_or(|(r, _, _)| rank > r) {
            best = Some((rank, k, entry));
        }
    }
    let (_, key, entry) = best?;
    let source = loaded.path.display().to_string();
    match entry_credentials(entry, &source) {
        Ok(c) => c,
        Err(why) => {
            warn!("{source}: the entry for {key} {why}; it is ignored");
            None
        }
    }
}

/// Why a stored `auth` value is no credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum AuthValueError {
    #[error("has an `auth` value that is not base64")]
    NotBase64,
    #[error("has an `auth` value that is not UTF-8")]
    NotUtf8,
    #[error("has an `auth` value without `user:password`")]
    NoColon,
}

fn entry_credentials(
    entry: &AuthEntry,
    source: &str,
) -> Result<Option<Credentials>, AuthValueError> {
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| AuthValueError::NotBase64)?;
        let raw = String::from_utf8(raw).map_err(|_| AuthValueError::NotUtf8)?;
        let (u, p) = raw.split_once(':').ok_or(AuthValueError::NoColon)?;
        username = Some(u.to_string());
        password = Some(p.to_string());
    }
    let username = username.unwrap_or_default();
    let make = |secret| {
        Ok(Some(Credentials {
            username: username.clone(),
            secret,
            source: source.to_string(),
        }))
    };
    if let Some(t) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return make(Secret::IdentityToken(t.clone()));
    }
    if let Some(t) = entry.registrytoken.as_ref().filter(|t| !t.is_empty()) {
        return make(Secret::RegistryToken(t.clone()));
    }
    match password.filter(|p| !p.is_empty()) {
        Some(p) if !username.is_empty() => make(Secret::Password(p)),
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Asks `docker-credential-<helper>` for the registry's credentials, as
/// Docker does: `get`, the server address on stdin, JSON on stdout.
fn run_helper(helper: &str, registry: &str, config: &Path) -> Option<Credentials> {
    let program = format!("docker-credential-{helper}");
    let server = if registry == DOCKER_HUB {
        DOCKER_HUB_SERVER_ADDRESS
    } else {
        registry
    };
    debug!(%program, server, "asking the credential helper");
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(
                "{} names the credential helper {program}, which cannot be run ({e}); install it or fix the file. Going on without stored credentials for {registry}",
                config.display()
            );
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is reported by its status.
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = match wait_with_timeout(child, HELPER_TIMEOUT) {
        Ok(o) => o,
        Err(e) => {
            warn!("credential helper {program} failed for {registry}: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = format!("{} {}", stdout.trim(), stderr.trim());
        if said.to_ascii_lowercase().contains("credentials not found") {
            debug!(%program, registry, "the credential helper has no credentials");
        } else {
            warn!(
                "credential helper {program} failed for {registry} ({}): {}",
                output.status,
                first_line(said.trim())
            );
        }
        return None;
    }
    let answer: HelperAnswer = match serde_json::from_str(stdout.trim()) {
        Ok(a) => a,
        Err(_) => {
            warn!("credential helper {program} gave an answer that is not JSON for {registry}");
            return None;
        }
    };
    if answer.secret.is_empty() {
        return None;
    }
    let source = format!("credential helper {program}");
    Some(if answer.username == "<token>" {
        Credentials {
            username: String::new(),
            secret: Secret::IdentityToken(answer.secret),
            source,
        }
    } else {
        Credentials {
            username: answer.username,
            secret: Secret::Password(answer.secret),
            source,
        }
    })
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    line.chars().take(200).collect()
}

/// Waits for a child, killing it after `timeout`; collects its output.
fn wait_with_timeout(
    mut child: std::process::Child,
    timeout: Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer in {} s", timeout.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Credentials given with `-u` and `-p` / `--password-stdin`, or
/// `DOCKER_PULL_USERNAME` / `DOCKER_PULL_PASSWORD`, and the one registry they
/// are for: that of the first image (on the command line, else in the images
/// file). Other registries, and mirrors, never get them.
#[derive(Debug, Clone)]
pub struct GivenCredentials {
    /// `docker.io`, `host[:port]`.
    pub registry: String,
    pub credentials: Credentials,
}

impl GivenCredentials {
    /// The credentials, when `registry` is the one they were given for.
    pub fn for_registry(&self, registry: &str) -> Option<&Credentials> {
        self.registry
            .eq_ignore_ascii_case(registry)
            .then_some(&self.credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(json: &str) -> (tempfile::TempDir, CredentialStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        let s = CredentialStore::load(&Locations {
            docker_config: Some(path),
            auth_files: Vec::new(),
        });
        (dir, s)
    }

    fn password(c: &Credentials) -> (&str, &str) {
        match &c.secret {
            Secret::Password(p) => (c.username.as_str(), p.as_str()),
            _ => panic!("not a password: {c:?}"),
        }
    }

    #[test]
    fn keys_normalise_like_docker() {
        let k = |s| normalize_key(s).unwrap();
        assert_eq!(k("https://index.docker.io/v1/").host, "docker.io");
        assert_eq!(k("https://index.docker.io/v1/").path, None);
        assert_eq!(k("registry-1.docker.io").host, "docker.io");
        assert_eq!(k("docker.io").host, "docker.io");
        assert_eq!(k("http://LocalHost:5000/v2/").host, "localhost:5000");
        assert_eq!(k("ghcr.io").path, None);
        assert_eq!(k("quay.io/org").path.as_deref(), Some("org"));
        assert_eq!(k("https://quay.io/org").path, None);
        assert!(normalize_key("").is_none());
        assert!(normalize_key("https:///x").is_none());
    }

    #[test]
    fn auth_entries_of_every_kind() {
        // "user:pa:ss" in base64: the password may hold colons.
        let (_d, s) = store(
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                "ghcr.io":{"username":"me","password":"tok"},
                "acr.example.io":{"username":"00000000-0000-0000-0000-000000000000","identitytoken":"refresh"},
                "reg.example:5000":{"registrytoken":"bearer"},
                "empty.example":{}
            }}"#,
        );
        let hub = s.lookup("docker.io", "library/nginx").unwrap();
        assert_eq!(password(&hub), ("user", "pa:ss"));
        assert!(hub.source.ends_with("config.json"));
        assert_eq!(
            password(&s.lookup("ghcr.io", "o/a").unwrap()),
            ("me", "tok")
        );
        let acr = s.lookup("acr.example.io", "x").unwrap();
        assert_eq!(acr.secret, Secret::IdentityToken("refresh".into()));
        assert_eq!(acr.username, "00000000-0000-0000-0000-000000000000");
        let reg = s.lookup("reg.example:5000", "x").unwrap();
        assert_eq!(reg.secret, Secret::RegistryToken("bearer".into()));
        assert!(s.lookup("empty.example", "x").is_none());
        assert!(s.lookup("reg.example", "x").is_none(), "the port matters");
        assert!(s.lookup("other.io", "x").is_none());
    }

    #[test]
    fn hub_aliases_all_match() {
        for key in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
            "https://registry-1.docker.io",
        ] {
            let (_d, s) = store(&format!(
                r#"{{"auths":{{"{key}":{{"username":"u","password":"p"}}}}}}"#
            ));
            assert!(s.lookup("docker.io", "library/x").is_some(), "{key}");
        }
    }

    #[test]
    fn podman_namespace_keys_pick_the_longest_prefix() {
        let (_d, s) = store(
            r#"{"auths":{
                "quay.io":{"username":"any","password":"1"},
                "quay.io/team":{"username":"team","password":"2"},
                "quay.io/team/app":{"username":"app","password":"3"}
            }}"#,
        );
        assert_eq!(s.lookup("quay.io", "team/app").unwrap().username, "app");
        assert_eq!(s.lookup("quay.io", "team/other").unwrap().username, "team");
        assert_eq!(s.lookup("quay.io", "teamx/a").unwrap().username, "any");
        assert_eq!(s.lookup("quay.io", "else").unwrap().username, "any");
    }

    #[test]
    fn bad_files_and_entries_are_skipped() {
        let (_d, s) = store("{not json");
        assert!(s.lookup("docker.io", "x").is_none());
        let (_d, s) = store(r#"{"auths":{"h.io":{"auth":"%%%"}}}"#);
        assert!(s.lookup("h.io", "x").is_none());
        let (_d, s) = store(r#"{"auths":{"h.io":{"auth":"bm9jb2xvbg=="}}}"#);
        assert!(s.lookup("h.io", "x").is_none());
    }

    #[test]
    fn auth_files_come_after_the_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        let podman = dir.path().join("auth.json");
        std::fs::write(
            &docker,
            r#"{"auths":{"a.io":{"username":"d","password":"1"}}}"#,
        )
        .unwrap();
        std::fs::write(
            &podman,
            r#"{"auths":{"a.io":{"username":"p","password":"2"},"b.io":{"username":"p","password":"3"}},"credsStore":"never-run"}"#,
        )
        .unwrap();
        let s = CredentialStore::load(&Locations {
            docker_config: Some(docker),
            auth_files: vec![podman.clone(), dir.path().join("missing.json")],
        });
        assert_eq!(s.lookup("a.io", "x").unwrap().username, "d");
        let b = s.lookup("b.io", "x").unwrap();
        assert_eq!(b.username, "p");
        assert_eq!(b.source, podman.display().to_string());
    }
}
