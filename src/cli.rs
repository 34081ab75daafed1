//! Command-line flags (clap) and the validated settings a pull runs with:
//! flags override environment variables, which override defaults.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::archive::{Format, LayerLimit};
use crate::mirror::Mirror;
use crate::platform::Platform;
use crate::reference::{DOCKER_HUB, Reference};
use crate::registry::{Credentials, TransportOptions};

/// Download container images from Docker/OCI registries without a Docker
/// daemon and write archives that `docker load` accepts.
/// `--version`: version, commit and target.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DOCKER_PULL_COMMIT"),
    ", ",
    env!("DOCKER_PULL_TARGET"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "docker-pull", version = VERSION, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Examples:\n  docker-pull nginx\n  docker-pull --platform linux/arm64 -o nginx-arm64.tar nginx:1.27\n  docker-pull alpine busybox -o bundle.tar\n  docker-pull 127.0.0.1:5000/app:v1 --json\n\nExit codes: 0 written, 1 pull failed, 2 bad usage or reference, 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Images to pull: [registry[:port]/][namespace/]name[:tag][@sha256:digest]
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,

    /// Platform to take from a multi-platform image (OS/ARCH[/VARIANT]), or `all` to keep every platform (-f oci, -f oci-dir) [default: the host's, linux/<arch>]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", conflicts_with = "arch")]
    pub platform: Option<String>,

    /// Shorthand for --platform linux/ARCH
    #[arg(short = 'a', long, value_name = "ARCH")]
    pub arch: Option<String>,

    /// A path ending in .tar is the archive (several images go into it together); any other path is a directory that receives one archive per image. With -f oci-dir: the layout directory [default: .]
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Archive format
    #[arg(short, long, value_enum, default_value_t = Format::Docker)]
    pub format: Format,

    /// Blobs downloaded at once
    #[arg(short = 'j', long = "max-concurrent-downloads", visible_alias = "workers", value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Registry username
    #[arg(short, long, env = "DOCKER_PULL_USERNAME", value_name = "USER")]
    pub username: Option<String>,

    /// Registry password or token (visible to other users in the process list: prefer --password-stdin)
    #[arg(
        short,
        long,
        env = "DOCKER_PULL_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        conflicts_with = "password_stdin"
    )]
    pub password: Option<String>,

    /// Read the registry password or token from standard input
    #[arg(long)]
    pub password_stdin: bool,

    /// Registry for references that name none
    #[arg(short, long, value_name = "HOST[:PORT]", default_value = DOCKER_HUB)]
    pub registry: String,

    /// Mirror for Docker Hub images, tried before Docker Hub itself: HOST[:PORT][/PREFIX], optionally with http:// or https:// (repeatable; else DOCKER_PULL_MIRRORS, comma- or space-separated)
    #[arg(long, value_name = "HOST[:PORT]")]
    pub mirror: Vec<String>,

    /// Blob cache directory [default: the platform cache dir, e.g. ~/.cache/docker-pull]
    #[arg(long, env = "DOCKER_PULL_CACHE", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Neither read nor write the cache (a temporary one is used and removed)
    #[arg(long)]
    pub no_cache: bool,

    /// Flush each archive to disk before it gets its name and the command ends (slower; worth it before unplugging removable media)
    #[arg(long)]
    pub sync: bool,

    /// -f legacy: the most one layer may decompress to, a guard against decompression bombs: SIZE (e.g. 20G), or none for no limit, not even the free space beside the archive [default: 100 times its compressed size, at least 64 MiB, at most 64 GiB]
    #[arg(long, value_name = "SIZE|none", value_parser = parse_layer_limit)]
    pub max_layer_size: Option<LayerLimit>,

    /// Do not verify TLS certificates
    #[arg(long)]
    pub insecure: bool,

    /// Talk plain HTTP, not HTTPS, to the registry (loopback registries fall back to HTTP by themselves)
    #[arg(long)]
    pub plain_http: bool,

    /// Extra trusted CA certificate, PEM (repeatable)
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,

    /// HTTP(S) or SOCKS5 proxy URL (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY are honoured too)
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,

    /// The name the archive gives the image, NAME:TAG (one image only)
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,

    /// Read image references from FILE, one per line (# comments and blank lines are ignored)
    #[arg(short = 'i', long, value_name = "FILE")]
    pub images_file: Option<PathBuf>,

    /// Abandon (and resume) a response that sends nothing for this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,

    /// Attempts per request before giving up
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub retries: u32,

    /// Write a detailed log to this file (credentials are never logged)
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Debug-level logging on stderr
    #[arg(long)]
    pub debug: bool,

    /// No progress: only errors and the result
    #[arg(short, long)]
    pub quiet: bool,

    /// Print one JSON object per image on stdout
    #[arg(long)]
    pub json: bool,
}

/// Commands besides pulling.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and manage the local blob cache
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        /// Blob cache directory [default: the platform cache dir, e.g. ~/.cache/docker-pull]
        #[arg(long, env = "DOCKER_PULL_CACHE", value_name = "DIR", global = true)]
        cache_dir: Option<PathBuf>,
    },
    /// Print shell completions (bash, zsh, fish, powershell, elvish)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    #[command(hide = true)]
    Man,
}

/// `docker-pull cache ...`
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Blob count, bytes and partial downloads
    Stats {
        /// One JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// Every blob with its size and last use, least recently used first
    Ls {
        /// One JSON object per blob on stdout
        #[arg(long)]
        json: bool,
    },
    /// Evict blobs unused for a while, or the least recently used beyond a size
    #[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["older_than", "max_size"])))]
    Prune {
        /// Evict blobs (and abandoned partial downloads) unused for longer than this: 90s, 30m, 12h, 7d, 2w
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<Duration>,
        /// Then evict the least recently used until the cache holds at most this: 500M, 10G, 1T (powers of 1024), or bytes
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<u64>,
    },
    /// Remove every blob and partial download (except downloads running now)
    Clear,
}

/// Parses `90s`, `30m`, `12h`, `7d`, `2w` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 30m, 12h, 7d or 2w"))?;
    let secs = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{s:?}: the unit must be s, m, h, d or w")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Parses `500M`, `10G`, `1.5T`, `2GiB`, `1024` (bytes); units are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 500M or 10G"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("{s:?}: the unit must be K, M, G or T")),
    };
    let bytes = n * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Where archives go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One archive holding every image.
    File(PathBuf),
    /// A directory receiving one default-named archive per image.
    Dir(PathBuf),
    /// An OCI layout directory receiving every image (`-f oci-dir`).
    Layout(PathBuf),
}

/// Validated settings for a run.
#[derive(Debug)]
pub struct Settings {
    pub images: Vec<(String, Reference)>,
    pub platform: Platform,
    /// Whether the user chose the platform (else it is the host's).
    pub platform_explicit: bool,
    /// `--platform all`: keep every platform of an index.
    pub platform_all: bool,
    pub output: Output,
    pub format: Format,
    pub jobs: usize,
    /// Credentials given on the command line or in the environment, for the
    /// registries the images name.
    pub credentials: Option<Credentials>,
    /// Docker Hub mirrors, in order.
    pub mirrors: Vec<Mirror>,
    pub cache_dir: Option<PathBuf>,
    pub transport: TransportOptions,
    pub tag: Option<Reference>,
    pub log_file: Option<PathBuf>,
    pub debug: bool,
    pub quiet: bool,
    pub json: bool,
    /// `-p` was used on the command line (worth a warning).
    pub password_on_command_line: bool,
    /// `DOCKER_PULL_CACHE_MAX`: prune the cache to this size after a pull.
    pub cache_max: Option<u64>,
    /// `--sync`: archives reach the disk before the command ends.
    pub sync: bool,
    /// `--max-layer-size`: how far `-f legacy` lets a layer decompress.
    pub max_layer_size: LayerLimit,
}

/// A usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Cli {
    /// Validates the flags. `stdin` supplies the password for `--password-stdin`.
    pub fn into_settings(self, stdin: &mut dyn Read) -> Result<Settings, UsageError> {
        if !crate::reference::is_valid_registry(&self.registry) {
            return Err(UsageError(format!(
                "invalid --registry {:?}: expected HOST[:PORT]",
                self.registry
            )));
        }
        let mut raw: Vec<String> = self.images.clone();
        if let Some(file) = &self.images_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                UsageError(format!("cannot read images file {}: {e}", file.display()))
            })?;
            raw.extend(parse_images_file(&text));
        }
        if raw.is_empty() {
            return Err(UsageError(
                "no image given; try `docker-pull nginx` or see --help".into(),
            ));
        }
        let mut images = Vec::with_capacity(raw.len());
        for s in raw {
            let r = Reference::parse(&s, &self.registry).map_err(|e| UsageError(e.to_string()))?;
            images.push((s, r));
        }

        let platform_all = self
            .platform
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("all"));
        if platform_all && !matches!(self.format, Format::Oci | Format::OciDir) {
            return Err(UsageError(format!(
                "--platform all keeps every platform, which only -f oci and -f oci-dir can hold (a {} archive holds one platform per image); add -f oci, or choose a platform such as --platform linux/arm64",
                self.format
            )));
        }
        let (platform, platform_explicit) = match (&self.platform, &self.arch) {
            (Some(_), _) if platform_all => (Platform::host(), true),
            (Some(p), _) => (
                Platform::parse(p).map_err(|e| UsageError(e.to_string()))?,
                true,
            ),
            (None, Some(a)) => (
                Platform::parse(&format!("linux/{a}")).map_err(|e| UsageError(e.to_string()))?,
                true,
            ),
            (None, None) => (Platform::host(), false),
        };

        let tag = match &self.tag {
            None => None,
            Some(_) if images.len() > 1 => {
                return Err(UsageError(
                    "--tag names one image, but several were given".into(),
                ));
            }
            Some(t) => {
                let r = Reference::parse(t, DOCKER_HUB)
                    .map_err(|e| UsageError(format!("invalid --tag: {e}")))?;
                if r.digest.is_some() {
                    return Err(UsageError(
                        "invalid --tag: give NAME:TAG, without a digest".into(),
                    ));
                }
                Some(r)
            }
        };

        let given_output = self.output.clone();
        let out_path = given_output.clone().unwrap_or_else(|| PathBuf::from("."));
        let is_tar = out_path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tar"));
        let output = if self.format.is_dir() {
            match given_output {
                None => {
                    return Err(UsageError(
                        "-f oci-dir writes an OCI layout directory: name it with -o DIR".into(),
                    ));
                }
                Some(_) if is_tar => {
                    return Err(UsageError(
                        "-f oci-dir writes a directory, not a .tar: use -f oci for an OCI archive"
                            .into(),
                    ));
                }
                Some(dir) => Output::Layout(dir),
            }
        } else if is_tar {
            Output::File(out_path)
        } else {
            Output::Dir(out_path)
        };

        let password = if self.password_stdin {
            let mut s = String::new();
            stdin
                .read_to_string(&mut s)
                .map_err(|e| UsageError(format!("cannot read the password from stdin: {e}")))?;
            let s = s.trim_end_matches(['\r', '\n']).to_string();
            if s.is_empty() {
                return Err(UsageError(
                    "--password-stdin: standard input was empty".into(),
                ));
            }
            Some(s)
        } else {
            self.password.clone()
        };
        let env_set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let source = if self.password_stdin {
            "-u/--password-stdin"
        } else if env_set("DOCKER_PULL_PASSWORD")
            && std::env::var("DOCKER_PULL_PASSWORD").ok() == self.password
        {
            "DOCKER_PULL_USERNAME/DOCKER_PULL_PASSWORD"
        } else {
            "-u/-p"
        };
        let credentials = match (self.username.clone(), password) {
            (Some(username), Some(password)) => {
                Some(Credentials::password(&username, &password, source))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(UsageError(
                    "a username needs a password: add --password-stdin (or -p)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(UsageError(
                    "a password needs a username: add -u USER".into(),
                ));
            }
        };
        if let Some(p) = &self.proxy {
            crate::registry::transport::check_proxy_url(p)
                .map_err(|e| UsageError(format!("invalid --proxy: {e}")))?;
        }
        let mirrors = if self.mirror.is_empty() {
            match std::env::var("DOCKER_PULL_MIRRORS") {
                Ok(v) => Mirror::parse_list(&v)
                    .map_err(|e| UsageError(format!("DOCKER_PULL_MIRRORS: {e}")))?,
                Err(_) => Vec::new(),
            }
        } else {
            self.mirror
                .iter()
                .map(|m| Mirror::parse(m).map_err(|e| UsageError(format!("--mirror: {e}"))))
                .collect::<Result<_, _>>()?
        };
        let cache_max = match std::env::var("DOCKER_PULL_CACHE_MAX") {
            Ok(v) if !v.trim().is_empty() => Some(
                parse_size(&v).map_err(|e| UsageError(format!("DOCKER_PULL_CACHE_MAX: {e}")))?,
            ),
            _ => None,
        };
        let password_on_command_line =
            self.password.is_some() && std::env::var_os("DOCKER_PULL_PASSWORD").is_none();

        Ok(Settings {
            images,
            platform,
            platform_explicit,
            platform_all,
            output,
            format: self.format,
            jobs: usize::from(self.jobs),
            credentials,
            mirrors,
            cache_dir: if self.no_cache {
                None
            } else {
                Some(self.cache_dir.clone().unwrap_or_else(default_cache_dir))
            },
            transport: TransportOptions {
                insecure: self.insecure,
                plain_http: self.plain_http,
                ca_certs: self.ca_cert.clone(),
                proxy: self.proxy.clone(),
                timeout: Duration::from_secs(self.timeout),
                retries: self.retries,
            },
            tag,
            log_file: self.log_file.clone(),
            debug: self.debug,
            quiet: self.quiet,
            json: self.json,
            password_on_command_line,
            cache_max,
            sync: self.sync,
            max_layer_size: self.max_layer_size.unwrap_or_default(),
        })
    }
}

/// References from an images file: one per line, `#` comments, blank lines.
pub fn parse_images_file(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `--max-layer-size`: a size (`20G`), or `none`.
fn parse_layer_limit(s: &str) -> Result<LayerLimit, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(LayerLimit::None);
    }
    match parse_size(s)? {
        0 => Err("a layer of at most 0 bytes: give a size such as 20G, or none".into()),
        n => Ok(LayerLimit::Size(n)),
    }
}

/// The platform's cache directory (`~/.cache/docker-pull` on Linux).
pub fn default_cache_dir() -> PathBuf {
    use etcetera::BaseStrategy;
    match etcetera::choose_base_strategy() {
        Ok(s) => s.cache_dir().join("docker-pull"),
        Err(_) => std::env::temp_dir().join("docker-pull-cache"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, UsageError> {
        let mut argv = vec!["docker-pull"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .into_settings(&mut std::io::empty())
    }

    #[test]
    fn images_file_syntax() {
        let text =
            "# base images\nnginx:1.27\n\n  alpine  # small\n#busybox\nghcr.io/o/a@sha256:abc\n";
        assert_eq!(
            parse_images_file(text),
            ["nginx:1.27", "alpine", "ghcr.io/o/a@sha256:abc"]
        );
    }

    #[test]
    fn output_kinds() {
        let s = settings(&["nginx", "-o", "x/y.tar"]).unwrap();
        assert_eq!(s.output, Output::File("x/y.tar".into()));
        let s = settings(&["nginx", "-o", "out"]).unwrap();
        assert_eq!(s.output, Output::Dir("out".into()));
        let s = settings(&["nginx"]).unwrap();
        assert_eq!(s.output, Output::Dir(".".into()));
        let s = settings(&["nginx", "-f", "oci-dir", "-o", "layout"]).unwrap();
        assert_eq!(s.output, Output::Layout("layout".into()));
        assert!(settings(&["nginx", "-f", "oci-dir"]).is_err());
        assert!(settings(&["nginx", "-f", "oci-dir", "-o", "x.tar"]).is_err());
        let s = settings(&["nginx", "-f", "synology", "-o", "x.tar"]).unwrap();
        assert_eq!(s.format, Format::Legacy);
    }

    #[test]
    fn platform_flags() {
        let s = settings(&["nginx", "-a", "aarch64"]).unwrap();
        assert_eq!(s.platform.to_string(), "linux/arm64");
        assert!(s.platform_explicit);
        let s = settings(&["nginx", "--platform", "linux/arm"]).unwrap();
        assert_eq!(s.platform.to_string(), "linux/arm/v7");
        let s = settings(&["nginx"]).unwrap();
        assert_eq!(s.platform, Platform::host());
        assert!(!s.platform_explicit);
        assert!(settings(&["nginx", "--platform", "linux/"]).is_err());
        assert!(settings(&["nginx", "--platform", "all"]).is_err());
        assert!(settings(&["nginx", "--platform", "all", "-f", "legacy"]).is_err());
        let s = settings(&["nginx", "--platform", "all", "-f", "oci"]).unwrap();
        assert!(s.platform_all);
    }

    #[test]
    fn usage_errors() {
        assert!(settings(&[]).is_err());
        assert!(settings(&["Nginx"]).is_err());
        assert!(settings(&["a", "b", "--tag", "x:y"]).is_err());
        assert!(
            settings(&[
                "a",
                "--tag",
                "x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ])
            .is_err()
        );
        assert!(settings(&["a", "-u", "me"]).is_err());
        assert!(settings(&["a", "-r", "bad host"]).is_err());
        assert!(settings(&["a", "--mirror", "ftp://m"]).is_err());
        assert!(settings(&["a", "--proxy", "ftp://p:1"]).is_err());
        assert!(settings(&["a", "--proxy", "not a url"]).is_err());
        assert!(settings(&["a", "--proxy", "socks5h://u:p@127.0.0.1:1080"]).is_ok());
        assert!(Cli::try_parse_from(["docker-pull", "a", "-j", "0"]).is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("2W"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        for bad in ["", "d", "7y", "-1d", "1.5h", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("3 MB"), Ok(3 << 20));
        for bad in ["", "G", "10X", "1e99T", "-5M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommands_parse() {
        let cli =
            Cli::try_parse_from(["docker-pull", "cache", "prune", "--older-than", "7d"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Cache {
                action: CacheAction::Prune {
                    older_than: Some(_),
                    max_size: None
                },
                ..
            })
        ));
        let cli = Cli::try_parse_from(["docker-pull", "completions", "zsh"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Completions { .. })));
        let cli = Cli::try_parse_from(["docker-pull", "nginx", "alpine"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.images, ["nginx", "alpine"]);
        assert!(Cli::try_parse_from(["docker-pull", "completions", "tcsh"]).is_err());
    }

    #[test]
    fn mirrors_in_order() {
        let s = settings(&["a", "--mirror", "m1.io", "--mirror", "http://m2.io:5000/p"]).unwrap();
        let shown: Vec<String> = s.mirrors.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["m1.io", "m2.io:5000/p"]);
        assert_eq!(s.mirrors[1].scheme, Some("http"));
    }

    #[test]
    fn registry_flag_and_tag() {
        let s = settings(&["small", "-r", "127.0.0.1:5000", "--tag", "mine:v1"]).unwrap();
        assert_eq!(s.images[0].1.to_string(), "127.0.0.1:5000/small:latest");
        assert_eq!(s.tag.unwrap().familiar_tagged().unwrap(), "mine:v1");
    }

    #[test]
    fn password_from_stdin() {
        let cli =
            Cli::try_parse_from(["docker-pull", "a", "-u", "me", "--password-stdin"]).unwrap();
        let s = cli.into_settings(&mut &b"s3cret\n"[..]).unwrap();
        let c = s.credentials.unwrap();
        assert_eq!(
            c.secret,
            crate::registry::auth::Secret::Password("s3cret".into())
        );
        assert_eq!(c.source, "-u/--password-stdin");
        let cli =
            Cli::try_parse_from(["docker-pull", "a", "-u", "me", "--password-stdin"]).unwrap();
        assert!(cli.into_settings(&mut &b""[..]).is_err());
    }
}
