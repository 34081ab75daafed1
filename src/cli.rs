//! Command-line flags (clap) and the validated settings a pull runs with:
//! flags override environment variables, which override defaults.
//!
//! This is the one place that reads the environment (`DOCKER_PULL_*`, the
//! proxy variables, the credential and `certs.d` file locations): everything
//! is resolved here, once, into [`Settings`], and the layers below get values.

use std::ffi::OsString;
use std::io::Read;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::archive::{Format, LayerLimit, Packing};
use crate::credentials::GivenCredentials;
use crate::credentials::Locations;
use crate::fetch::Chunking;
use crate::mirror::{ConfigFiles, Mirror, conf, daemon};
use crate::platform::Platform;
use crate::push::PushSettings;
use crate::push::target::Target;
use crate::reference::{DOCKER_HUB, Reference};
use crate::registry::transport;
use crate::registry::{Credentials, EnvProxies, TransportOptions};
use crate::thin::ExcludeSource;
use crate::units::{parse_duration, parse_rate, parse_size};

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

#[derive(Debug, Clone, Parser)]
#[command(name = "docker-pull", version = VERSION, about, long_about = None)]
#[command(subcommand_negates_reqs = true)]
#[command(
    after_help = "Examples:\n  docker-pull nginx\n  docker-pull --platform linux/arm64 -o nginx-arm64.tar nginx:1.27\n  docker-pull alpine busybox -o bundle.tar\n  docker-pull 127.0.0.1:5000/app:v1 --json\n\nExit codes: 0 written, 1 pull failed, 2 bad usage or reference, 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Images to pull: [registry[:port]/][namespace/]name[:tag][@sha256:digest]
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,

    /// Platform to take from a multi-platform image (OS/ARCH[/VARIANT]); `all` keeps every platform, a comma-separated list keeps those in a new index (its digest changes) (-f oci, -f oci-dir) [default: the host's, linux/<arch>]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", conflicts_with = "arch")]
    pub platform: Option<String>,

    /// Shorthand for --platform linux/ARCH
    #[arg(short = 'a', long, value_name = "ARCH")]
    pub arch: Option<String>,

    /// A path ending in .tar (or .tar.gz, .tgz, .tar.zst, which imply --compress) is the archive (several images go into it together); - writes it to stdout (for | ssh host docker load); any other path is a directory that receives one archive per image. With -f oci-dir: the layout directory [default: .]
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Archive format
    #[arg(short, long, value_enum, default_value_t = FormatArg::Docker)]
    pub format: FormatArg,

    /// Compress the archive as a whole (.tar.gz, .tar.zst); docker load reads gzip on every engine and zstd from Docker 23; worth it for -f legacy, whose layers are uncompressed
    #[arg(long, value_enum, value_name = "gzip|zstd")]
    pub compress: Option<CompressArg>,

    /// A thin archive for a machine that already has SOURCE's images (an archive, a layout or an image reference; repeatable): the bottom layers they share with the image, as a chain (which is how docker load tells a layer is there), are named but not stored. -f docker and -f legacy only
    #[arg(long, value_name = "SOURCE")]
    pub exclude_from: Vec<String>,

    /// Write each archive in parts of at most SIZE (NAME.tar.part-000, …) plus NAME.tar.sha256, the sha256 of the whole and of each part (sha256sum -c); `cat NAME.tar.part-* > NAME.tar` joins them; verify and push read the parts as they are. For FAT32 media (files under 4 GiB) use 4095M
    #[arg(long, value_name = "SIZE", value_parser = parse_split)]
    pub split: Option<u64>,

    /// Blobs downloaded (or, with push, uploaded) at once
    #[arg(short = 'j', long = "max-concurrent-downloads", visible_alias = "workers", value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64), global = true)]
    pub jobs: u16,

    /// Registry username: for the registry of the first image (other registries use their stored credentials); with push, for the target registry
    #[arg(
        short,
        long,
        env = "DOCKER_PULL_USERNAME",
        value_name = "USER",
        global = true
    )]
    pub username: Option<String>,

    /// Registry password or token (visible to other users in the process list: prefer --password-stdin)
    #[arg(
        short,
        long,
        env = "DOCKER_PULL_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        conflicts_with = "password_stdin",
        global = true
    )]
    pub password: Option<String>,

    /// Read the registry password or token from standard input
    #[arg(long, global = true)]
    pub password_stdin: bool,

    /// Registry for references that name none
    #[arg(short, long, value_name = "HOST[:PORT]", default_value = DOCKER_HUB)]
    pub registry: String,

    /// Mirror tried before the registry itself: [REGISTRY=]HOST[:PORT][/PREFIX], optionally with http:// or https:// before HOST; without REGISTRY= it mirrors docker.io (e.g. ghcr.io=ghcr.m.daocloud.io, quay.io=m.daocloud.io/quay.io; repeatable; else DOCKER_PULL_MIRRORS, comma- or space-separated); the mirrors of registries.conf ($CONTAINERS_REGISTRIES_CONF) and daemon.json ($DOCKER_PULL_DAEMON_JSON) come after these
    #[arg(long, value_name = "[REGISTRY=]HOST[:PORT]")]
    pub mirror: Vec<String>,

    /// Blob cache directory [default: the platform cache dir, e.g. ~/.cache/docker-pull]
    #[arg(long, env = "DOCKER_PULL_CACHE", value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,

    /// Neither read nor write the cache (a temporary one is used and removed)
    #[arg(long, global = true)]
    pub no_cache: bool,

    /// Flush each archive to disk before it gets its name and the command ends (slower; worth it before unplugging removable media)
    #[arg(long)]
    pub sync: bool,

    /// -f legacy: the most one layer may decompress to, a guard against decompression bombs: SIZE (e.g. 20G), or none for no limit, not even the free space beside the archive [default: 100 times its compressed size, at least 64 MiB, at most 64 GiB]
    #[arg(long, value_name = "SIZE|none", value_parser = parse_layer_limit)]
    pub max_layer_size: Option<LayerLimit>,

    /// Do not verify TLS certificates
    #[arg(long, global = true)]
    pub insecure: bool,

    /// Talk plain HTTP, not HTTPS, to the registry (loopback registries fall back to HTTP by themselves)
    #[arg(long, global = true)]
    pub plain_http: bool,

    /// Cap on the total transfer rate of the run, across all connections, in bytes per second: K, M, G, T are powers of 1024 (2M = 2 MiB/s) [env: DOCKER_PULL_LIMIT_RATE]
    #[arg(long, value_name = "RATE", value_parser = parse_rate, global = true)]
    pub limit_rate: Option<NonZeroU64>,

    /// Extra trusted CA certificate, PEM (repeatable)
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_cert: Vec<PathBuf>,

    /// HTTP(S) or SOCKS5 proxy URL (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY are honoured too)
    #[arg(long, value_name = "URL", global = true)]
    pub proxy: Option<String>,

    /// The name the archive gives the image, NAME:TAG (one image only)
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,

    /// Read image references from FILE, one per line (# comments and blank lines are ignored)
    #[arg(short = 'i', long, value_name = "FILE")]
    pub images_file: Option<PathBuf>,

    /// Abandon (and resume) a response that sends nothing for this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub timeout: u64,

    /// Attempts per request before giving up
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100), global = true)]
    pub retries: u32,

    /// Write a detailed log to this file (credentials are never logged)
    #[arg(long, value_name = "PATH", global = true)]
    pub log_file: Option<PathBuf>,

    /// Debug-level logging on stderr
    #[arg(long, global = true)]
    pub debug: bool,

    /// No progress: only errors and the result
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print one JSON object per image on stdout
    #[arg(long, global = true)]
    pub json: bool,
}

/// `-f, --format`: the values the command line accepts for an
/// [`archive::Format`](Format), with their help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// `docker load` of every engine since 1.10, and an OCI image layout too.
    Docker,
    /// The Docker 1.10-era layout with uncompressed layers, for old engines
    /// (Synology DSM's Docker 18.09 and 20.10).
    #[value(alias = "synology")]
    Legacy,
    /// An OCI image layout in a tar (oci-archive).
    Oci,
    /// An OCI image layout directory (-o DIR); blobs hard-linked from the cache.
    OciDir,
}

/// `--compress`: how the archive as a whole is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressArg {
    Gzip,
    Zstd,
}

impl From<CompressArg> for Packing {
    fn from(c: CompressArg) -> Packing {
        match c {
            CompressArg::Gzip => Packing::Gzip,
            CompressArg::Zstd => Packing::Zstd,
        }
    }
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Docker => Format::Docker,
            FormatArg::Legacy => Format::Legacy,
            FormatArg::Oci => Format::Oci,
            FormatArg::OciDir => Format::OciDir,
        }
    }
}

/// Commands besides pulling.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Inspect and manage the local blob cache
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Check archives or layouts offline: every manifest, config and layer present with the right size and sha256, layers matching the config's diff_ids, names that parse
    #[command(
        after_help = "SOURCE: an archive docker-pull wrote (-f docker, oci, legacy, a bundle), one from docker save or skopeo (docker-archive:, oci-archive:), a gzip- or zstd-compressed one, or an OCI layout directory.\n\nExit codes: 0 every image is sound, 1 a problem was found (each is named), 2 bad usage."
    )]
    Verify {
        /// Archives (.tar, .tar.gz, .tar.zst) or OCI layout directories
        #[arg(value_name = "SOURCE", required = true)]
        sources: Vec<PathBuf>,
    },
    /// Put the images of an archive or layout into a registry, digests unchanged
    #[command(
        after_help = "SOURCE: an archive docker-pull wrote (-f docker, oci, legacy, a bundle), one from docker save or skopeo (docker-archive:, oci-archive:), a gzip- or zstd-compressed one, or an OCI layout directory.\nTARGET: REGISTRY[:PORT]/REPOSITORY[:TAG] for one image (the tag defaults to the image's own), REGISTRY[:PORT][/PREFIX] for several (each image goes to PREFIX/<its repository>:<its tag>).\n\nExamples:\n  docker-pull push nginx.tar 127.0.0.1:5000/web/nginx:1.27\n  docker-pull push bundle.tar harbor.internal/mirror\n  docker-pull push layout/ registry.lan:5000 --image docker.io/library/alpine:3.20\n\nExit codes: 0 every image pushed, 1 a push failed, 2 bad usage."
    )]
    Push {
        /// Archive (.tar, .tar.gz, .tar.zst) or OCI layout directory
        #[arg(value_name = "SOURCE")]
        source: PathBuf,
        /// REGISTRY[:PORT]/REPOSITORY[:TAG], or REGISTRY[:PORT][/PREFIX] for several images
        #[arg(value_name = "TARGET")]
        target: String,
        /// Push only this image of SOURCE (a name it has, or its digest)
        #[arg(long, value_name = "NAME")]
        image: Option<String>,
    },
    /// Copy an image from one registry to another through the blob cache, digests unchanged
    #[command(
        after_help = "TARGET: REGISTRY[:PORT]/REPOSITORY[:TAG] (the tag defaults to the image's own).\nWith -i FILE: lines `IMAGE TARGET` (# comments and blank lines are ignored).\nThe image is pulled into the cache (mirrors apply) and pushed from there: an interrupted copy resumes on both sides. -u is for the target registry; the source uses stored credentials.\n\nExamples:\n  docker-pull copy nginx:1.27 harbor.internal/mirror/library/nginx\n  docker-pull copy --platform all ghcr.io/owner/app:v1 registry.lan:5000/owner/app\n  docker-pull copy -i images.txt\n\nExit codes: 0 every image copied, 1 a copy failed, 2 bad usage."
    )]
    Copy {
        /// The image to copy
        #[arg(value_name = "IMAGE", required_unless_present = "images_file")]
        image: Option<String>,
        /// Where it goes: REGISTRY[:PORT]/REPOSITORY[:TAG]
        #[arg(value_name = "TARGET", required_unless_present = "images_file")]
        target: Option<String>,
        /// Platform to copy (OS/ARCH[/VARIANT]), or `all` for the whole multi-platform image [default: the host's]
        #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
        platform: Option<String>,
        /// Lines `IMAGE TARGET` to copy, one pair per line
        #[arg(short = 'i', long, value_name = "FILE", conflicts_with_all = ["image", "target"])]
        images_file: Option<PathBuf>,
        /// Mirror for the source, as for pulls (repeatable)
        #[arg(long, value_name = "[REGISTRY=]HOST[:PORT]")]
        mirror: Vec<String>,
    },
    /// Show an image without pulling it: its digest, platforms, layers, sizes, created time, and what the cache already holds
    #[command(
        after_help = "No layer is downloaded: only the manifests and the chosen platforms' configs (which go into the cache).\n\nExamples:\n  docker-pull inspect nginx:1.27\n  docker-pull inspect --platform all ghcr.io/owner/app:v1\n  docker-pull inspect --json alpine | jq .platforms\n\nExit codes: 0 shown, 1 the registry could not tell, 2 bad usage."
    )]
    Inspect {
        /// The image: [registry[:port]/][namespace/]name[:tag][@sha256:digest]
        #[arg(value_name = "IMAGE")]
        image: String,
        /// Platform to describe in full (OS/ARCH[/VARIANT]), or `all` for every one [default: the host's]
        #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
        platform: Option<String>,
        /// Mirror to ask first, as for pulls (repeatable)
        #[arg(long, value_name = "[REGISTRY=]HOST[:PORT]")]
        mirror: Vec<String>,
    },
    /// List the tags of a repository, following the registry's pagination to the end
    #[command(
        after_help = "Examples:\n  docker-pull tags nginx\n  docker-pull tags registry.k8s.io/kube-apiserver --json\n\nExit codes: 0 listed, 1 the registry could not tell, 2 bad usage."
    )]
    Tags {
        /// [registry[:port]/][namespace/]name, without a tag
        #[arg(value_name = "REPOSITORY")]
        repository: String,
        /// Mirror to ask first, as for pulls (repeatable)
        #[arg(long, value_name = "[REGISTRY=]HOST[:PORT]")]
        mirror: Vec<String>,
        /// Tags per page to ask the registry for (it may send fewer)
        #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        page_size: Option<u32>,
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
#[derive(Debug, Clone, Subcommand)]
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

/// Where archives go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One archive holding every image.
    File(PathBuf),
    /// One archive holding every image, on stdout (`-o -`).
    Stdout,
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
    /// `--platform a,b`: keep these platforms of an index (a new index
    /// listing only them).
    pub platform_list: Vec<Platform>,
    pub output: Output,
    pub format: Format,
    /// `--compress`, or what the archive's name implies.
    pub packing: Packing,
    pub jobs: usize,
    /// Credentials given on the command line or in the environment, and the
    /// one registry they are for.
    pub credentials: Option<GivenCredentials>,
    /// The Docker config and containers auth files stored credentials come from.
    pub credential_locations: Locations,
    /// Mirrors given with `--mirror` (else `DOCKER_PULL_MIRRORS`), each for
    /// one registry, in order.
    pub mirrors: Vec<Mirror>,
    /// The registries.conf and daemon.json files to read mirrors and
    /// registry settings from.
    pub source_files: ConfigFiles,
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
    /// `--split SIZE`: archives are written in parts of at most this size.
    pub split: Option<u64>,
    /// `--exclude-from`: what the target already has.
    pub exclude_from: Vec<ExcludeSource>,
    /// When blobs are fetched in ranged chunks: `DOCKER_PULL_CHUNK_THRESHOLD`
    /// and `DOCKER_PULL_CHUNK_SIZE`, else the defaults.
    pub chunking: Chunking,
    /// Settings that were left out, and why (shown once logging is set up).
    pub warnings: Vec<String>,
    /// `--max-layer-size`: how far `-f legacy` lets a layer decompress.
    pub max_layer_size: LayerLimit,
}

/// Where logs go.
#[derive(Debug, Clone)]
pub struct Logging {
    pub debug: bool,
    pub quiet: bool,
    pub log_file: Option<PathBuf>,
}

/// What a command besides pulling needs of the registry options.
#[derive(Debug)]
pub struct RunOptions {
    pub logging: Logging,
    pub json: bool,
    pub warnings: Vec<String>,
    pub password_on_command_line: bool,
}

impl Settings {
    pub fn logging(&self) -> Logging {
        Logging {
            debug: self.debug,
            quiet: self.quiet,
            log_file: self.log_file.clone(),
        }
    }
}

/// A usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The environment as settings are resolved from it: each variable looked up
/// by name, once (the process environment, or a fixed set in tests).
struct Env<'a>(&'a dyn Fn(&str) -> Option<OsString>);

impl Env<'_> {
    /// The raw value: set but empty counts as set.
    fn raw(&self, name: &str) -> Option<OsString> {
        (self.0)(name)
    }

    /// The value; unset and empty are the same.
    fn value(&self, name: &str) -> Option<OsString> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.value(name).map(PathBuf::from)
    }

    /// The value as text, blank counting as unset (a value that is not UTF-8
    /// keeps its replacement characters, so it fails to parse, by name).
    fn text(&self, name: &str) -> Option<String> {
        self.value(name)
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.trim().is_empty())
    }

    /// A size such as `64M`; an unreadable one is a usage error naming the variable.
    fn size(&self, name: &str) -> Result<Option<u64>, UsageError> {
        self.text(name)
            .map(|v| parse_size(&v).map_err(|e| UsageError(format!("{name}: {e}"))))
            .transpose()
    }

    /// A rate such as `2M` (bytes per second, not 0); an unreadable one is a
    /// usage error naming the variable.
    fn rate(&self, name: &str) -> Result<Option<NonZeroU64>, UsageError> {
        self.text(name)
            .map(|v| parse_rate(&v).map_err(|e| UsageError(format!("{name}: {e}"))))
            .transpose()
    }
}

/// Where `docker login` and `podman login` leave credentials:
/// `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`), then the
/// containers auth files `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json` and
/// `$XDG_CONFIG_HOME/containers/auth.json` (else
/// `~/.config/containers/auth.json`).
fn credential_locations(env: &Env) -> Locations {
    let home = env.path("HOME");
    let docker_config = env
        .path("DOCKER_CONFIG")
        .map(|d| d.join("config.json"))
        .or_else(|| home.as_ref().map(|h| h.join(".docker/config.json")));
    let mut auth_files = Vec::new();
    if let Some(f) = env.path("REGISTRY_AUTH_FILE") {
        auth_files.push(f);
    }
    if let Some(d) = env.path("XDG_RUNTIME_DIR") {
        auth_files.push(d.join("containers/auth.json"));
    }
    match env.path("XDG_CONFIG_HOME") {
        Some(d) => auth_files.push(d.join("containers/auth.json")),
        None => auth_files.extend(home.map(|h| h.join(".config/containers/auth.json"))),
    }
    Locations {
        docker_config,
        auth_files,
    }
}

/// registries.conf: `$CONTAINERS_REGISTRIES_CONF` alone, else the user's
/// `~/.config/containers` and the system's `/etc/containers`; daemon.json:
/// `$DOCKER_PULL_DAEMON_JSON`, else `/etc/docker/daemon.json`.
fn source_files(env: &Env) -> ConfigFiles {
    let registries_conf = match env.path("CONTAINERS_REGISTRIES_CONF") {
        Some(file) => conf::Files::Only(file),
        None => conf::Files::Search {
            user: env.path("HOME").map(|h| h.join(".config/containers")),
            system: PathBuf::from("/etc/containers"),
        },
    };
    let daemon_json = match env.path("DOCKER_PULL_DAEMON_JSON") {
        Some(file) => (file, daemon::Named::ByVariable),
        None => (
            PathBuf::from("/etc/docker/daemon.json"),
            daemon::Named::Default,
        ),
    };
    ConfigFiles {
        registries_conf,
        daemon_json,
    }
}

/// The first of the variables that is set and not blank, with its name. Proxy
/// variables are read upper case first, then lower case, skipping empty ones
/// (as Go's net/http, and so Docker and containerd, read them).
fn first_set(env: &Env, names: [&'static str; 2]) -> Option<(&'static str, String)> {
    names.into_iter().find_map(|n| env.text(n).map(|v| (n, v)))
}

/// Docker's per-registry certificate directories: the user's (rootless
/// Docker) `$XDG_CONFIG_HOME/docker/certs.d`, else
/// `~/.config/docker/certs.d`, then `/etc/docker/certs.d`.
fn certs_d_roots(env: &Env) -> Vec<PathBuf> {
    let user = env
        .path("XDG_CONFIG_HOME")
        .or_else(|| env.path("HOME").map(|h| h.join(".config")));
    user.map(|d| d.join("docker/certs.d"))
        .into_iter()
        .chain([PathBuf::from("/etc/docker/certs.d")])
        .collect()
}

/// The ranged-chunk defaults, tuned by `DOCKER_PULL_CHUNK_THRESHOLD` (`0`
/// turns chunking off) and `DOCKER_PULL_CHUNK_SIZE` (at least 64 KiB).
/// What an archive's name says of it: `None` for a name that is not an
/// archive's (a directory), else how it is compressed.
fn archive_name_packing(path: &Path) -> Option<Packing> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    [
        (".tar", Packing::None),
        (".tar.gz", Packing::Gzip),
        (".tgz", Packing::Gzip),
        (".tar.zst", Packing::Zstd),
    ]
    .into_iter()
    .find(|(end, _)| name.ends_with(end))
    .map(|(_, packing)| packing)
}

fn packing_name(packing: Packing) -> &'static str {
    match packing {
        Packing::None => "none",
        Packing::Gzip => "gzip",
        Packing::Zstd => "zstd",
    }
}

fn chunking(env: &Env) -> Result<Chunking, UsageError> {
    let mut c = Chunking::default();
    if let Some(t) = env.size("DOCKER_PULL_CHUNK_THRESHOLD")? {
        c.threshold = if t == 0 { u64::MAX } else { t };
    }
    if let Some(s) = env.size("DOCKER_PULL_CHUNK_SIZE")? {
        c.chunk_size = s.max(64 << 10);
    }
    Ok(c)
}

impl Cli {
    /// Validates the flags against the process environment. `stdin` supplies
    /// the password for `--password-stdin`.
    pub fn into_settings(self, stdin: &mut dyn Read) -> Result<Settings, UsageError> {
        self.into_settings_with(stdin, &|name| std::env::var_os(name))
    }

    /// [`Cli::into_settings`] with the environment given as a lookup. (The
    /// variables clap reads itself, such as `DOCKER_PULL_USERNAME`, are
    /// already in the flags.)
    pub fn into_settings_with(
        self,
        stdin: &mut dyn Read,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Settings, UsageError> {
        let env = Env(env);
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

        let format = Format::from(self.format);
        let (platform, platform_explicit, platform_all, platform_list) = self.platforms(format)?;

        let tag = self.tag(images.len())?;
        let (output, packing) = self.output(format)?;
        self.check_split(&output)?;

        // `--mirror` replaces DOCKER_PULL_MIRRORS, as every flag replaces its
        // variable; the files' mirrors come after either.
        let mirrors = if self.mirror.is_empty() {
            match env.raw("DOCKER_PULL_MIRRORS") {
                Some(v) => Mirror::parse_list(&v.to_string_lossy())
                    .map_err(|e| UsageError(format!("DOCKER_PULL_MIRRORS: {e}")))?,
                None => Vec::new(),
            }
        } else {
            (self.mirror.iter())
                .map(|m| Mirror::parse(m).map_err(|e| UsageError(format!("--mirror: {e}"))))
                .collect::<Result<_, _>>()?
        };
        let mut warnings = Vec::new();
        let credentials = self.credentials(stdin, &env, &images, &mut warnings)?;
        let transport = self.transport(&env, &mut warnings)?;
        let cache_max = env.size("DOCKER_PULL_CACHE_MAX")?;
        let chunking = chunking(&env)?;
        let password_on_command_line =
            self.password.is_some() && env.raw("DOCKER_PULL_PASSWORD").is_none();

        Ok(Settings {
            images,
            platform,
            platform_explicit,
            platform_all,
            platform_list,
            output,
            format,
            packing,
            jobs: usize::from(self.jobs),
            credentials,
            credential_locations: credential_locations(&env),
            mirrors,
            source_files: source_files(&env),
            cache_dir: if self.no_cache {
                None
            } else {
                Some(self.cache_dir.clone().unwrap_or_else(default_cache_dir))
            },
            transport,
            tag,
            log_file: self.log_file.clone(),
            debug: self.debug,
            quiet: self.quiet,
            json: self.json,
            password_on_command_line,
            cache_max,
            sync: self.sync,
            split: self.split,
            exclude_from: self.exclusions(format)?,
            max_layer_size: self.max_layer_size.unwrap_or_default(),
            chunking,
            warnings,
        })
    }

    /// `--platform` (or `-a`): the platform, whether the user chose it,
    /// whether it is `all`, and the platforms of a comma-separated list.
    /// `all` and lists keep several platforms: `-f oci` and `-f oci-dir` only.
    fn platforms(
        &self,
        format: Format,
    ) -> Result<(Platform, bool, bool, Vec<Platform>), UsageError> {
        let several = |what: &str| {
            if matches!(format, Format::Oci | Format::OciDir) {
                return Ok(());
            }
            Err(UsageError(format!(
                "{what} keeps several platforms, which only -f oci and -f oci-dir can hold (a {format} archive holds one platform per image); add -f oci, or choose a platform such as --platform linux/arm64"
            )))
        };
        let parse = |p: &str| Platform::parse(p).map_err(|e| UsageError(e.to_string()));
        match (&self.platform, &self.arch) {
            (Some(p), _) if p.eq_ignore_ascii_case("all") => {
                several("--platform all")?;
                Ok((Platform::host(), true, true, Vec::new()))
            }
            (Some(p), _) if p.contains(',') => {
                several("a list of platforms")?;
                let mut list: Vec<Platform> = Vec::new();
                for one in p.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let one = parse(one)?;
                    if !list.contains(&one) {
                        list.push(one);
                    }
                }
                let first = list
                    .first()
                    .cloned()
                    .ok_or_else(|| UsageError(format!("--platform {p:?} names no platform")))?;
                Ok((first, true, false, list))
            }
            (Some(p), _) => Ok((parse(p)?, true, false, Vec::new())),
            (None, Some(a)) => Ok((parse(&format!("linux/{a}"))?, true, false, Vec::new())),
            (None, None) => Ok((Platform::host(), false, false, Vec::new())),
        }
    }

    /// `--exclude-from`'s sources, for the formats `docker load` reads.
    fn exclusions(&self, format: Format) -> Result<Vec<ExcludeSource>, UsageError> {
        if !self.exclude_from.is_empty() && !matches!(format, Format::Docker | Format::Legacy) {
            return Err(UsageError(format!(
                "--exclude-from makes archives for docker load: -f docker or -f legacy, not -f {format} (OCI tools refuse a layout that names blobs it does not hold)"
            )));
        }
        self.exclude_from
            .iter()
            .map(|s| {
                ExcludeSource::classify(s, &self.registry)
                    .map_err(|e| UsageError(format!("--exclude-from: {e}")))
            })
            .collect()
    }

    /// `--split` writes files: not to stdout, not into a layout.
    fn check_split(&self, output: &Output) -> Result<(), UsageError> {
        match (output, self.split) {
            (Output::Stdout, Some(_)) => Err(UsageError(
                "--split writes files: it cannot go to standard output (-o -)".into(),
            )),
            (Output::Layout(_), Some(_)) => Err(UsageError(
                "-f oci-dir writes a directory: --split is for archives".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The settings of `push SOURCE TARGET`: the registry options as for a
    /// pull, `-u` for the target's registry.
    pub fn into_push_settings(
        self,
        source: PathBuf,
        target: &str,
        image: Option<String>,
        stdin: &mut dyn Read,
    ) -> Result<(PushSettings, RunOptions), UsageError> {
        let lookup = |name: &str| std::env::var_os(name);
        let env = Env(&lookup);
        let target = Target::parse(target).map_err(|e| UsageError(e.to_string()))?;
        let mut warnings = Vec::new();
        let for_target = Reference {
            registry: target.registry.clone(),
            repository: target.path.clone().unwrap_or_default(),
            tag: None,
            digest: None,
        };
        let credentials = self.credentials(
            stdin,
            &env,
            &[(target.to_string(), for_target)],
            &mut warnings,
        )?;
        let transport = self.transport(&env, &mut warnings)?;
        let scratch = if self.no_cache {
            None
        } else {
            Some(self.cache_dir.clone().unwrap_or_else(default_cache_dir))
        };
        let options = RunOptions {
            logging: Logging {
                debug: self.debug,
                quiet: self.quiet,
                log_file: self.log_file.clone(),
            },
            json: self.json,
            warnings,
            password_on_command_line: self.password.is_some()
                && env.raw("DOCKER_PULL_PASSWORD").is_none(),
        };
        Ok((
            PushSettings {
                source,
                target,
                image,
                jobs: usize::from(self.jobs),
                transport,
                credentials,
                credential_locations: credential_locations(&env),
                scratch,
            },
            options,
        ))
    }

    /// `--tag NAME:TAG`, for one image only.
    fn tag(&self, images: usize) -> Result<Option<Reference>, UsageError> {
        match &self.tag {
            None => Ok(None),
            Some(_) if images > 1 => Err(UsageError(
                "--tag names one image, but several were given".into(),
            )),
            Some(t) => {
                let r = Reference::parse(t, DOCKER_HUB)
                    .map_err(|e| UsageError(format!("invalid --tag: {e}")))?;
                if r.digest.is_some() {
                    return Err(UsageError(
                        "invalid --tag: give NAME:TAG, without a digest".into(),
                    ));
                }
                Ok(Some(r))
            }
        }
    }

    /// Where archives go (`-o` as a `.tar`, stdout, a directory, or with
    /// `-f oci-dir` a layout directory) and how they are compressed.
    fn output(&self, format: Format) -> Result<(Output, Packing), UsageError> {
        let given_output = self.output.clone();
        let out_path = given_output.clone().unwrap_or_else(|| PathBuf::from("."));
        let named = archive_name_packing(&out_path);
        let packing = match (self.compress.map(Packing::from), named) {
            (Some(asked), Some(implied)) if asked != implied => {
                return Err(UsageError(format!(
                    "--compress {} does not match the archive name {}",
                    packing_name(asked),
                    out_path.display()
                )));
            }
            (Some(asked), _) => asked,
            (None, Some(implied)) => implied,
            (None, None) => Packing::None,
        };
        if format.is_dir() {
            return match given_output {
                None => Err(UsageError(
                    "-f oci-dir writes an OCI layout directory: name it with -o DIR".into(),
                )),
                Some(_) if named.is_some() || out_path == Path::new("-") => Err(UsageError(
                    "-f oci-dir writes a directory, not a .tar: use -f oci for an OCI archive"
                        .into(),
                )),
                Some(_) if packing != Packing::None => Err(UsageError(
                    "-f oci-dir writes a directory: --compress is for archives".into(),
                )),
                Some(dir) => Ok((Output::Layout(dir), packing)),
            };
        }
        if out_path == Path::new("-") {
            return self.stdout_output().map(|o| (o, packing));
        }
        match named {
            Some(_) => Ok((Output::File(out_path), packing)),
            None => Ok((Output::Dir(out_path), packing)),
        }
    }

    /// `-o -`: stdout carries the tar, so it must not be a terminal nor
    /// carry JSON.
    fn stdout_output(&self) -> Result<Output, UsageError> {
        use std::io::IsTerminal as _;
        if self.json {
            return Err(UsageError(
                "--json with -o -: stdout carries the archive".into(),
            ));
        }
        if std::io::stdout().is_terminal() {
            return Err(UsageError(
                "-o - writes the archive to stdout, which is a terminal: pipe it (| docker load) or redirect it"
                    .into(),
            ));
        }
        Ok(Output::Stdout)
    }

    /// `-u` with `-p` or `--password-stdin` (or `DOCKER_PULL_USERNAME` and
    /// `DOCKER_PULL_PASSWORD`), for the registry of the first image.
    fn credentials(
        &self,
        stdin: &mut dyn Read,
        env: &Env,
        images: &[(String, Reference)],
        warnings: &mut Vec<String>,
    ) -> Result<Option<GivenCredentials>, UsageError> {
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
        let env_password = env.value("DOCKER_PULL_PASSWORD");
        let source = if self.password_stdin {
            "-u/--password-stdin"
        } else if env_password.is_some()
            && env_password.as_deref().and_then(|p| p.to_str()) == self.password.as_deref()
        {
            "DOCKER_PULL_USERNAME/DOCKER_PULL_PASSWORD"
        } else {
            "-u/-p"
        };
        let credentials = match (self.username.clone(), password) {
            (Some(username), Some(password)) => Credentials::password(&username, &password, source),
            (None, None) => return Ok(None),
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
        // There is always a first image by now.
        let registry = images
            .first()
            .map(|(_, r)| r.registry.clone())
            .unwrap_or_default();
        let mut others: Vec<&str> = Vec::new();
        for (_, r) in images {
            if !r.registry.eq_ignore_ascii_case(&registry) && !others.contains(&r.registry.as_str())
            {
                others.push(&r.registry);
            }
        }
        if !others.is_empty() {
            warnings.push(format!(
                "the credentials from {source} are for {registry}, the first image's registry, only; images from {} use their stored credentials (docker login, podman login) or none",
                others.join(", ")
            ));
        }
        Ok(Some(GivenCredentials {
            registry,
            credentials,
        }))
    }

    /// How to reach registries: the flags, the proxy variables (unless
    /// `--proxy` is given; `NO_PROXY` counts with it too), Docker's
    /// `certs.d` directories and the rate limit (`--limit-rate`, else
    /// `DOCKER_PULL_LIMIT_RATE`, which is not read when the flag is given).
    fn transport(
        &self,
        env: &Env,
        warnings: &mut Vec<String>,
    ) -> Result<TransportOptions, UsageError> {
        if let Some(p) = &self.proxy {
            transport::check_proxy_url(p)
                .map_err(|e| UsageError(format!("invalid --proxy: {e}")))?;
        }
        let mut env_proxies = EnvProxies {
            no_proxy: first_set(env, ["NO_PROXY", "no_proxy"]).map(|(_, v)| v),
            ..EnvProxies::default()
        };
        if self.proxy.is_none() {
            let mut proxy = |names| {
                let (name, value) = first_set(env, names)?;
                transport::env_proxy_url(&value)
                    .map_err(|e| warnings.push(format!("{name} is ignored: {e}")))
                    .ok()
            };
            env_proxies.https = proxy(["HTTPS_PROXY", "https_proxy"]);
            env_proxies.http = proxy(["HTTP_PROXY", "http_proxy"]);
            env_proxies.all = proxy(["ALL_PROXY", "all_proxy"]);
        }
        let limit_rate = match self.limit_rate {
            Some(rate) => Some(rate),
            None => env.rate("DOCKER_PULL_LIMIT_RATE")?,
        };
        Ok(TransportOptions {
            insecure: self.insecure,
            plain_http: self.plain_http,
            ca_certs: self.ca_cert.clone(),
            proxy: self.proxy.clone(),
            env_proxies,
            certs_d_roots: certs_d_roots(env),
            timeout: Duration::from_secs(self.timeout),
            retries: self.retries,
            limit_rate,
            connections: usize::from(self.jobs),
        })
    }
}

/// `copy -i FILE`: lines `IMAGE TARGET`, `#` comments, blank lines.
pub fn parse_copy_file(text: &str) -> Result<Vec<(String, String)>, UsageError> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [image, target] => pairs.push((image.to_string(), target.to_string())),
            _ => {
                return Err(UsageError(format!(
                    "line {}: expected `IMAGE TARGET`, got {:?}",
                    i + 1,
                    crate::text::escape_untrusted(line)
                )));
            }
        }
    }
    if pairs.is_empty() {
        return Err(UsageError("the file lists no `IMAGE TARGET` line".into()));
    }
    Ok(pairs)
}

/// References from an images file: one per line, `#` comments, blank lines.
pub fn parse_images_file(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The smallest `--split` part.
const MIN_SPLIT: u64 = 64 << 10;

/// Parses `--split`: a size of at least [`MIN_SPLIT`].
fn parse_split(s: &str) -> Result<u64, String> {
    match parse_size(s).map_err(|e| e.to_string())? {
        n if n < MIN_SPLIT => Err(format!(
            "parts of {n} bytes are too small: give at least 64K (for FAT32, 4095M)"
        )),
        n => Ok(n),
    }
}

/// Parses `--max-layer-size`: a size (`20G`), or `none`.
fn parse_layer_limit(s: &str) -> Result<LayerLimit, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(LayerLimit::None);
    }
    match parse_size(s).map_err(|e| e.to_string())? {
        0 => Err("a layer of at most 0 bytes: give a size such as 20G, or none".into()),
        n => Ok(LayerLimit::Size(n)),
    }
}

/// The platform's cache directory (`~/.cache/docker-pull` on Linux).
pub fn default_cache_dir() -> PathBuf {
    use etcetera::BaseStrategy;
    match etcetera::choose_base_strategy() {
        Ok(s) => s.cache_dir().join("docker-pull"),
        Err(_) => homeless_cache_dir(),
    }
}

/// Without a home directory: one per user in the temporary directory, never
/// a fixed name that another user could create first (the cache refuses a
/// directory that is not the user's own, and makes its own private).
fn homeless_cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("docker-pull-cache-{}", crate::cache::fsx::euid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_home_the_cache_is_per_user() {
        let dir = homeless_cache_dir();
        assert_eq!(dir.parent(), Some(std::env::temp_dir().as_path()));
        assert_eq!(
            dir.file_name().unwrap().to_string_lossy(),
            format!("docker-pull-cache-{}", crate::cache::fsx::euid())
        );
    }

    fn settings(args: &[&str]) -> Result<Settings, UsageError> {
        let mut argv = vec!["docker-pull"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .into_settings(&mut std::io::empty())
    }

    /// Settings from `args` with exactly the variables `vars` set.
    fn settings_env(args: &[&str], vars: &[(&str, &str)]) -> Result<Settings, UsageError> {
        let mut argv = vec!["docker-pull"];
        argv.extend_from_slice(args);
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .into_settings_with(&mut std::io::empty(), &|name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
    }

    #[test]
    fn limit_rate_from_the_flag_else_the_environment() {
        let rate = |args: &[&str], vars: &[(&str, &str)]| {
            settings_env(args, vars).map(|s| s.transport.limit_rate.map(NonZeroU64::get))
        };
        assert_eq!(rate(&["nginx"], &[]).unwrap(), None);
        assert_eq!(
            rate(&["--limit-rate", "2M", "nginx"], &[]).unwrap(),
            Some(2 << 20)
        );
        let env = [("DOCKER_PULL_LIMIT_RATE", "512K")];
        assert_eq!(rate(&["nginx"], &env).unwrap(), Some(512 << 10));
        // The flag wins, and the variable is then not read at all.
        assert_eq!(
            rate(&["--limit-rate", "100", "nginx"], &env).unwrap(),
            Some(100)
        );
        let bad = [("DOCKER_PULL_LIMIT_RATE", "lots")];
        assert_eq!(
            rate(&["--limit-rate", "1K", "nginx"], &bad).unwrap(),
            Some(1024)
        );
        assert_eq!(
            rate(&["nginx"], &[("DOCKER_PULL_LIMIT_RATE", " ")]).unwrap(),
            None,
            "blank is unset"
        );
        for value in ["lots", "0", "-1M"] {
            let e = rate(&["nginx"], &[("DOCKER_PULL_LIMIT_RATE", value)]).unwrap_err();
            assert!(e.0.starts_with("DOCKER_PULL_LIMIT_RATE: "), "{e}");
            assert!(e.0.contains(&format!("{value:?}")), "{e}");
        }
        for value in ["lots", "0", ""] {
            let e =
                Cli::try_parse_from(["docker-pull", "--limit-rate", value, "nginx"]).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{value:?}"
            );
        }
    }

    #[test]
    fn chunking_from_the_environment() {
        let c = settings_env(&["nginx"], &[]).unwrap().chunking;
        assert_eq!(
            (c.threshold, c.chunk_size),
            (
                Chunking::default().threshold,
                Chunking::default().chunk_size
            )
        );
        let c = settings_env(
            &["nginx"],
            &[
                ("DOCKER_PULL_CHUNK_THRESHOLD", "100K"),
                ("DOCKER_PULL_CHUNK_SIZE", "2M"),
            ],
        )
        .unwrap()
        .chunking;
        assert_eq!((c.threshold, c.chunk_size), (100 << 10, 2 << 20));
        // 0 turns chunking off; chunks are never smaller than 64 KiB; blank is unset.
        let c = settings_env(
            &["nginx"],
            &[
                ("DOCKER_PULL_CHUNK_THRESHOLD", "0"),
                ("DOCKER_PULL_CHUNK_SIZE", "1K"),
            ],
        )
        .unwrap()
        .chunking;
        assert_eq!((c.threshold, c.chunk_size), (u64::MAX, 64 << 10));
        let c = settings_env(&["nginx"], &[("DOCKER_PULL_CHUNK_SIZE", " ")])
            .unwrap()
            .chunking;
        assert_eq!(c.chunk_size, Chunking::default().chunk_size);
        for name in ["DOCKER_PULL_CHUNK_THRESHOLD", "DOCKER_PULL_CHUNK_SIZE"] {
            let e = settings_env(&["nginx"], &[(name, "lots")]).unwrap_err();
            assert!(e.0.starts_with(name) && e.0.contains("\"lots\""), "{e}");
        }
    }

    #[test]
    fn credential_files_from_the_environment() {
        let l = settings_env(&["nginx"], &[("HOME", "/h")])
            .unwrap()
            .credential_locations;
        assert_eq!(
            l,
            Locations {
                docker_config: Some("/h/.docker/config.json".into()),
                auth_files: vec!["/h/.config/containers/auth.json".into()],
            }
        );
        let l = settings_env(
            &["nginx"],
            &[
                ("HOME", "/h"),
                ("DOCKER_CONFIG", "/d"),
                ("REGISTRY_AUTH_FILE", "/r/auth.json"),
                ("XDG_RUNTIME_DIR", "/run/user/1"),
                ("XDG_CONFIG_HOME", "/c"),
            ],
        )
        .unwrap()
        .credential_locations;
        assert_eq!(
            l,
            Locations {
                docker_config: Some("/d/config.json".into()),
                auth_files: vec![
                    "/r/auth.json".into(),
                    "/run/user/1/containers/auth.json".into(),
                    "/c/containers/auth.json".into(),
                ],
            }
        );
        // Empty variables count as unset; without HOME nothing is guessed.
        let l = settings_env(&["nginx"], &[("DOCKER_CONFIG", ""), ("HOME", "")])
            .unwrap()
            .credential_locations;
        assert_eq!(l, Locations::default());
    }

    #[test]
    fn proxies_from_the_environment() {
        let t = settings_env(&["nginx"], &[]).unwrap().transport;
        assert_eq!(t.env_proxies, EnvProxies::default());
        let s = settings_env(
            &["nginx"],
            &[
                ("HTTPS_PROXY", "http://upper:1"),
                ("https_proxy", "http://lower:1"),
                // An empty upper-case variable does not hide the lower-case one.
                ("HTTP_PROXY", ""),
                ("http_proxy", "proxy.corp:3128"),
                ("all_proxy", "socks5h://any:1080"),
                ("NO_PROXY", " "),
                ("no_proxy", "localhost,.internal"),
            ],
        )
        .unwrap();
        assert_eq!(
            s.transport.env_proxies,
            EnvProxies {
                https: Some("http://upper:1".into()),
                http: Some("http://proxy.corp:3128".into()),
                all: Some("socks5h://any:1080".into()),
                no_proxy: Some("localhost,.internal".into()),
            }
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);

        // --proxy replaces the proxy variables; NO_PROXY still counts.
        let s = settings_env(
            &["nginx", "--proxy", "http://flag:3128"],
            &[("HTTPS_PROXY", "ftp://x"), ("NO_PROXY", "r.internal")],
        )
        .unwrap();
        assert_eq!(s.transport.proxy.as_deref(), Some("http://flag:3128"));
        assert_eq!(
            s.transport.env_proxies,
            EnvProxies {
                no_proxy: Some("r.internal".into()),
                ..EnvProxies::default()
            }
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);

        // A value the client cannot use is left out, with a warning that
        // names the variable and never the password.
        let s = settings_env(
            &["nginx"],
            &[
                ("ALL_PROXY", "socks://u:hunter22@127.0.0.1:1080/"),
                ("HTTP_PROXY", "http://ok:1"),
            ],
        )
        .unwrap();
        assert_eq!(s.transport.env_proxies.all, None);
        assert_eq!(s.transport.env_proxies.http.as_deref(), Some("http://ok:1"));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].starts_with("ALL_PROXY is ignored"),
            "{:?}",
            s.warnings
        );
        assert!(!s.warnings[0].contains("hunter22"), "{:?}", s.warnings);
    }

    #[test]
    fn certs_d_directories_from_the_environment() {
        let roots = |vars: &[(&str, &str)]| {
            settings_env(&["nginx"], vars)
                .unwrap()
                .transport
                .certs_d_roots
        };
        let etc = PathBuf::from("/etc/docker/certs.d");
        assert_eq!(
            roots(&[("HOME", "/h")]),
            [PathBuf::from("/h/.config/docker/certs.d"), etc.clone()]
        );
        assert_eq!(
            roots(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "/c")]),
            [PathBuf::from("/c/docker/certs.d"), etc.clone()]
        );
        assert_eq!(roots(&[]), [etc]);
    }

    #[test]
    fn given_credentials_are_for_the_first_images_registry() {
        let s = settings(&[
            "-u",
            "me",
            "-p",
            "pw",
            "ghcr.io/o/a",
            "nginx",
            "GHCR.io/o/b",
        ])
        .unwrap();
        let given = s.credentials.unwrap();
        assert_eq!(given.registry, "ghcr.io");
        assert!(given.for_registry("ghcr.io").is_some());
        assert!(given.for_registry("docker.io").is_none());
        assert!(given.for_registry("ghcr.io:443").is_none());
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].contains("for ghcr.io,") && s.warnings[0].contains("from docker.io use"),
            "{:?}",
            s.warnings
        );
        // One registry: nothing to warn about.
        let s = settings(&["-u", "me", "-p", "pw", "ghcr.io/o/a", "ghcr.io/o/b"]).unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let s = settings(&["nginx", "ghcr.io/o/a"]).unwrap();
        assert!(s.credentials.is_none() && s.warnings.is_empty());
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
    fn format_values() {
        use clap::ValueEnum;
        for (given, format) in [
            ("docker", Format::Docker),
            ("legacy", Format::Legacy),
            ("synology", Format::Legacy),
            ("oci", Format::Oci),
        ] {
            let s = settings(&["nginx", "-f", given]).unwrap();
            assert_eq!(s.format, format, "{given}");
        }
        let s = settings(&["nginx", "--format", "oci-dir", "-o", "layout"]).unwrap();
        assert_eq!(s.format, Format::OciDir);
        assert_eq!(settings(&["nginx"]).unwrap().format, Format::Docker);
        assert!(Cli::try_parse_from(["docker-pull", "nginx", "-f", "tar"]).is_err());
        // The flag's names are the names reports and --json give the format.
        for arg in FormatArg::value_variants() {
            let name = arg.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name, Format::from(*arg).to_string());
        }
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
        let cli = Cli::try_parse_from(["docker-pull", "verify", "-q", "a.tar", "dir"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Verify { ref sources }) if sources.len() == 2
        ));
        assert!(cli.quiet && !cli.json);
        // The registry options go before or after the command.
        let cli = Cli::try_parse_from([
            "docker-pull",
            "--insecure",
            "push",
            "a.tar",
            "r.io/x:1",
            "--json",
            "-j",
            "8",
            "--image",
            "nginx",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Push { ref target, image: Some(_), .. }) if target == "r.io/x:1"
        ));
        assert!(cli.insecure && cli.json && cli.jobs == 8);
        assert!(Cli::try_parse_from(["docker-pull", "push", "a.tar"]).is_err());
        assert!(Cli::try_parse_from(["docker-pull", "verify"]).is_err());
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
        let given = s.credentials.unwrap();
        assert_eq!(given.registry, "docker.io");
        let c = given.credentials;
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
