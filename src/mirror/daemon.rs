//! Docker's `daemon.json` (`$DOCKER_PULL_DAEMON_JSON`, else
//! `/etc/docker/daemon.json`): `registry-mirrors` (mirrors of Docker Hub,
//! tried after every other mirror) and `insecure-registries` (registry names
//! and CIDR ranges that may be reached over plain HTTP or unverified TLS, as
//! the Docker engine treats them). Every other key is the engine's business.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Mirror, Origin};

/// Larger files are refused.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Whether the user named the file (a missing one is then worth a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    ByVariable,
    Default,
}

/// A daemon.json that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: {detail} (the Docker engine would refuse it too; correct it, or point DOCKER_PULL_DAEMON_JSON at another file)",
    .file.display()
)]
pub struct DaemonError {
    pub file: PathBuf,
    pub detail: String,
}

/// What a pull takes from daemon.json.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Daemon {
    /// `registry-mirrors`, for Docker Hub.
    pub mirrors: Vec<Mirror>,
    pub insecure: Insecure,
}

/// `insecure-registries`: names (`host[:port]`) and address ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Insecure {
    names: Vec<String>,
    nets: Vec<Net>,
}

impl Insecure {
    /// Whether `host` (`host[:port]`) is listed by name, or is an address in
    /// a listed range.
    pub fn covers_name(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.names.contains(&host) || host_ip(&host).is_some_and(|ip| self.covers_address(ip))
    }

    pub fn covers_address(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// Whether `host` is a name that must be looked up to know whether a
    /// range covers it.
    pub fn needs_lookup(&self, host: &str) -> bool {
        !self.nets.is_empty() && host_ip(host).is_none()
    }
}

/// `10.0.0.0/8`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    bits: u8,
}

impl Net {
    fn parse(s: &str) -> Option<Net> {
        let (addr, bits) = s.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Net { addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, width) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a).into(), u32::from(b).into(), 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            (IpAddr::V4(a), IpAddr::V6(b)) => match b.to_ipv4_mapped() {
                Some(b) => (u32::from(a).into(), u32::from(b).into(), 32),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(_)) => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= width || (a >> shift) == (b >> shift)
    }
}

/// The address in `host[:port]` when the host is one.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name.parse().ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawDaemon {
    #[serde(default)]
    registry_mirrors: Vec<String>,
    #[serde(default)]
    insecure_registries: Vec<String>,
}

impl Daemon {
    /// Reads `file`; a missing one is no settings (and a warning when the
    /// user named it).
    pub fn load(
        file: &Path,
        named: Named,
        warnings: &mut Vec<String>,
    ) -> Result<Daemon, DaemonError> {
        let err = |detail: String| DaemonError {
            file: file.to_path_buf(),
            detail,
        };
        let f = match std::fs::File::open(file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if named == Named::ByVariable {
                    warnings.push(format!(
                        "DOCKER_PULL_DAEMON_JSON names {}, which does not exist",
                        file.display()
                    ));
                }
                return Ok(Daemon::default());
            }
            Err(e) => return Err(err(format!("cannot read it: {e}"))),
        };
        let mut bytes = Vec::new();
        f.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| err(format!("cannot read it: {e}")))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        tracing::debug!(file = %file.display(), "daemon.json");
        Daemon::parse(&bytes, file).map_err(err)
    }

    fn parse(bytes: &[u8], file: &Path) -> Result<Daemon, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Daemon::default());
        }
        let raw: RawDaemon = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mirrors = raw
            .registry_mirrors
            .iter()
            .map(|m| {
                Mirror::parse(m)
                    .map(|m| m.given_in(Origin::File(file.to_path_buf())))
                    .map_err(|e| format!("registry-mirrors: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut insecure = Insecure::default();
        for entry in &raw.insecure_registries {
            let e = entry.trim();
            let e = (e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://")))
            .unwrap_or(e)
            .trim_end_matches('/');
            if e.contains('/') {
                let net = Net::parse(e)
                    .ok_or_else(|| format!("insecure-registries: {entry:?} is not a CIDR range"))?;
                insecure.nets.push(net);
            } else if crate::reference::is_valid_registry(&e.to_ascii_lowercase()) {
                insecure.names.push(e.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "insecure-registries: {entry:?} is not HOST[:PORT] or a CIDR range"
                ));
            }
        }
        Ok(Daemon { mirrors, insecure })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Daemon, String> {
        Daemon::parse(text.as_bytes(), Path::new("/etc/docker/daemon.json"))
    }

    /// A daemon.json as Docker's documentation and NAS vendors write it.
    #[test]
    fn reads_mirrors_and_insecure_registries() {
        let d = parse(
            r#"{
  "data-root": "/volume1/@docker",
  "log-driver": "json-file",
  "registry-mirrors": ["https://mirror.gcr.io", "https://docker.m.daocloud.io/"],
  "insecure-registries": ["harbor.lan:8080", "http://10.1.2.3:5000", "192.168.0.0/16", "fd00::/8"],
  "storage-driver": "btrfs",
  "features": {"buildkit": true}
}"#,
        )
        .unwrap();
        let hosts: Vec<_> = d.mirrors.iter().map(|m| m.host.as_str()).collect();
        assert_eq!(hosts, ["mirror.gcr.io", "docker.m.daocloud.io"]);
        assert!(d.mirrors.iter().all(|m| m.registry == "docker.io"));
        assert_eq!(d.mirrors[0].scheme, Some("https"));
        assert_eq!(
            d.mirrors[0].from,
            Origin::File("/etc/docker/daemon.json".into())
        );
        let i = &d.insecure;
        assert!(i.covers_name("harbor.lan:8080"));
        assert!(
            !i.covers_name("harbor.lan"),
            "a name is matched with its port"
        );
        assert!(i.covers_name("10.1.2.3:5000"));
        assert!(i.covers_name("192.168.7.9:5000"));
        assert!(i.covers_name("[fd12::1]:5000"));
        assert!(!i.covers_name("10.1.2.4:5000"));
        assert!(!i.covers_name("[fe80::1]"));
        assert!(i.needs_lookup("registry.lan:5000"));
        assert!(!i.needs_lookup("192.168.1.1"));
        assert!(i.covers_address("::ffff:192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn empty_and_bad_files() {
        assert_eq!(parse("").unwrap(), Daemon::default());
        assert_eq!(parse("{}").unwrap(), Daemon::default());
        assert!(parse("{").unwrap_err().contains("EOF"));
        assert!(parse(r#"{"registry-mirrors": "https://m.io"}"#).is_err());
        assert!(
            parse(r#"{"registry-mirrors": ["ftp://m.io"]}"#)
                .unwrap_err()
                .contains("registry-mirrors")
        );
        assert!(parse(r#"{"insecure-registries": ["10.0.0.0/33"]}"#).is_err());
        assert!(parse(r#"{"insecure-registries": ["bad host"]}"#).is_err());
        let all = parse(r#"{"insecure-registries": ["0.0.0.0/0"]}"#).unwrap();
        assert!(all.insecure.covers_name("8.8.8.8:443"));
    }

    #[test]
    fn missing_files() {
        let mut warnings = Vec::new();
        let missing = Path::new("/nonexistent/daemon.json");
        assert_eq!(
            Daemon::load(missing, Named::Default, &mut warnings).unwrap(),
            Daemon::default()
        );
        assert!(warnings.is_empty());
        Daemon::load(missing, Named::ByVariable, &mut warnings).unwrap();
        assert!(
            warnings[0].contains("DOCKER_PULL_DAEMON_JSON"),
            "{warnings:?}"
        );
    }
}
