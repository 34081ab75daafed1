//! The shared end-to-end environment: the real components scripts/test.sh starts (addresses
//! from environment variables), the fixture images pushed to them once, and the lock that makes
//! tests take turns with the Docker engine.
//!
//! Nothing here skips: a missing variable, an unreachable engine or a failed push makes every
//! test fail with the reason.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::run::docker;
use crate::support::image::{
    Flavor, Image, ImageBuilder, Index, LayerBuilder, SplitMix64, busybox_image_builder, index,
};
use crate::support::push::Pusher;

/// What the container of every runnable fixture prints.
pub const HELLO: &str = "hello from docker-pull";

/// The Docker Hub name the mirror tests pull (`docker.io/library/<MIRRORED>`): the plain
/// registry has `small` under `library/<MIRRORED>` (and under `<MIRROR_PREFIX>/library/...`).
pub const MIRRORED: &str = "docker-pull-e2e-mirrored";
/// The path prefix of the prefixed mirror on the plain registry.
pub const MIRROR_PREFIX: &str = "mirror-prefix";
/// Where the plain registry plays `ghcr.io` (`ghcr.io/<GHCR_REPO>` through `--mirror
/// ghcr.io=...`) and a prefix-style mirror of quay.io (`quay.io/<QUAY_REPO>` is
/// `quay.io/<QUAY_REPO>` on it): `small` under both names.
pub const GHCR_REPO: &str = "e2e-owner/docker-pull-e2e-mirrored";
pub const QUAY_REPO: &str = "e2e-org/docker-pull-e2e-mirrored";
/// Repositories of the `slow` fixture: under the first the slow token server tells the real
/// token lifetime, under the second it claims 300 s.
pub const SLOW_HONEST: &str = "private/slow-honest";
pub const SLOW_LYING: &str = "private/slow-lying";

/// The fixtures, as pushed.
pub struct Fixtures {
    /// `small`: runnable busybox, Docker media types.
    pub small: Image,
    /// `small-oci`: runnable busybox, OCI media types.
    pub small_oci: Image,
    /// `multi`: OCI index, host platform runnable, the others not, plus an attestation.
    pub multi: Index,
    /// `multi-docker`: Docker manifest list of the same three platforms.
    pub multi_docker: Index,
    /// `slow`: runnable busybox plus two layers of random bytes (pulled through the throttled
    /// relay, it takes several token lifetimes).
    pub slow: Image,
}

/// Addresses of the real components and the pushed fixtures.
pub struct Env {
    /// Plain-HTTP distribution registry, `127.0.0.1:PORT`.
    pub registry: String,
    /// Distribution registry with Bearer token auth, `127.0.0.1:PORT`.
    pub token_registry: String,
    /// The token server (`127.0.0.1:PORT`), when `E2E_TOKEN_SERVER` names it.
    pub token_server: Option<String>,
    /// A user the token server gives pull and push.
    pub token_user: String,
    pub token_pass: String,
    /// `linux/<arch>[/variant]` of this machine, as docker-pull should choose by default.
    pub host_platform: String,
    pub fixtures: Fixtures,
    /// The TLS, redirect, short-token, proxy components (see [`Env::net`]).
    network: Result<Network, String>,
}

/// The components of the registry/network tests (TLS, Basic auth, redirects, short-lived
/// tokens, identity tokens, proxies). The registries here serve the plain registry's storage,
/// so every fixture pushed there is on them too.
pub struct Network {
    /// The token server of `token_registry` (`127.0.0.1:PORT`).
    pub token_server: String,
    /// Identity tokens (OAuth2 refresh tokens) the token server knows for `token_user`: one for
    /// docker configs, one for the credential helper.
    pub token_identity: String,
    pub token_helper_identity: String,
    /// HTTPS registry (certificate for 127.0.0.1 and localhost by `tls_ca`), htpasswd Basic.
    pub tls_registry: String,
    pub tls_ca: PathBuf,
    /// HTTPS registry (same certificate) whose token realm is the plain-HTTP `token_server`.
    pub tls_token_registry: String,
    /// The htpasswd user of the TLS and the redirect registry.
    pub basic_user: String,
    pub basic_pass: String,
    /// Plain-HTTP registry with htpasswd Basic auth whose blob GETs redirect (307) to
    /// `redirect_target` (tests/e2e/blobserver.py, which refuses Authorization headers).
    pub redirect_registry: String,
    pub redirect_target: String,
    /// Token-auth registry behind the throttling relay (the address is the relay's), with its
    /// own token server issuing tokens that work `slow_ttl` seconds.
    pub slow_registry: String,
    pub slow_token_server: String,
    pub slow_ttl: u64,
    /// The short-token registry's log, with its access log (`"GET /v2/... HTTP/1.1" 401 ...`).
    pub slow_registry_log: PathBuf,
    /// tinyproxy: HTTP proxy with Basic proxy auth; its log shows every request it carried.
    pub http_proxy: String,
    pub http_proxy_user: String,
    pub http_proxy_pass: String,
    pub http_proxy_log: PathBuf,
    /// microsocks: SOCKS5 with username/password; its log shows every connection it made.
    pub socks_proxy: String,
    pub socks_user: String,
    pub socks_pass: String,
    pub socks_log: PathBuf,
}

const SETUP_HINT: &str = "run the end-to-end suite through scripts/test.sh, which starts a \
    distribution registry, a token-auth registry with its token server and a Docker engine and \
    exports E2E_REGISTRY, E2E_TOKEN_REGISTRY, E2E_TOKEN_USER, E2E_TOKEN_PASS, E2E_BUSYBOX and \
    DOCKER_HOST";

const NETWORK_HINT: &str = "run the end-to-end suite through scripts/test.sh, which also \
    starts the TLS, redirecting and short-token registries, tinyproxy and microsocks and \
    exports their E2E_* variables";

fn var(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(format!("{name} is not set: {SETUP_HINT}")),
    }
}

/// `(architecture, variant)` of the machine in OCI terms.
pub fn host_arch() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        other => panic!(
            "the end-to-end fixtures know amd64 and arm64 hosts only, not {other}: the runnable \
             busybox image must match the engine's architecture"
        ),
    }
}

/// The three platforms of the multi-platform fixtures, in index order.
pub const MULTI_PLATFORMS: [(&str, Option<&str>); 3] =
    [("amd64", None), ("arm64", Some("v8")), ("arm", Some("v7"))];

fn platform_path(arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("linux/{arch}/{v}"),
        None => format!("linux/{arch}"),
    }
}

/// A small image for another architecture: it cannot run here, but its config says its
/// platform, which `docker image inspect` shows after loading.
fn foreign_image(flavor: Flavor, arch: &str, variant: Option<&str>) -> Image {
    let text = format!("built for {}\n", platform_path(arch, variant));
    ImageBuilder::new(flavor)
        .platform("linux", arch, variant)
        .layer(
            LayerBuilder::new()
                .dir("etc", 0o755)
                .file("etc/platform", text.into_bytes(), 0o644),
        )
        .cmd(&["/bin/cat", "/etc/platform"])
        .label("org.example.platform", &platform_path(arch, variant))
        .build()
}

fn multi_index(flavor: Flavor, busybox: &[u8], with_attestation: bool) -> Index {
    let (host, host_variant) = host_arch();
    let images: Vec<Image> = MULTI_PLATFORMS
        .iter()
        .map(|&(arch, variant)| {
            if arch == host {
                busybox_image_builder(flavor, busybox)
                    .platform("linux", arch, host_variant.or(variant))
                    .build()
            } else {
                foreign_image(flavor, arch, variant)
            }
        })
        .collect();
    index(flavor, images, with_attestation)
}

/// Runnable busybox plus two layers of 384 KiB random (incompressible) bytes.
fn slow_image(busybox: &[u8]) -> Image {
    let (arch, variant) = host_arch();
    let mut builder =
        busybox_image_builder(Flavor::Docker, busybox).platform("linux", arch, variant);
    for seed in 1..=2u64 {
        let data = SplitMix64::new(0x5107_0000 + seed).bytes(384 * 1024);
        builder = builder.layer(LayerBuilder::new().dir("data", 0o755).file(
            &format!("data/random-{seed}"),
            data,
            0o644,
        ));
    }
    builder.build()
}

fn build_fixtures(busybox: &[u8]) -> Fixtures {
    let (arch, variant) = host_arch();
    let runnable = |flavor| {
        busybox_image_builder(flavor, busybox)
            .platform("linux", arch, variant)
            .build()
    };
    Fixtures {
        small: runnable(Flavor::Docker),
        small_oci: runnable(Flavor::Oci),
        multi: multi_index(Flavor::Oci, busybox, true),
        multi_docker: multi_index(Flavor::Docker, busybox, false),
        slow: slow_image(busybox),
    }
}

/// A secret the tests look for in docker-pull's output: long enough not to occur by chance.
fn secret(name: &str) -> Result<String, String> {
    let value = var(name)?;
    if value.len() < 8 {
        return Err(format!(
            "{name} is too short ({} characters): the tests look for it in docker-pull's output \
             to prove it is never printed, so it must be at least 8 random characters",
            value.len()
        ));
    }
    Ok(value)
}

fn network() -> Result<Network, String> {
    let need = |name: &str| var(name).map_err(|_| format!("{name} is not set: {NETWORK_HINT}"));
    let file = |name: &str| -> Result<PathBuf, String> {
        let path = PathBuf::from(need(name)?);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{name}={} is not a file: {NETWORK_HINT}",
                path.display()
            ))
        }
    };
    let slow_ttl = need("E2E_SLOW_TTL")?;
    Ok(Network {
        token_server: need("E2E_TOKEN_SERVER")?,
        token_identity: secret("E2E_TOKEN_IDENTITY")?,
        token_helper_identity: secret("E2E_TOKEN_HELPER_IDENTITY")?,
        tls_registry: need("E2E_TLS_REGISTRY")?,
        tls_ca: file("E2E_TLS_CA")?,
        tls_token_registry: need("E2E_TLS_TOKEN_REGISTRY")?,
        basic_user: need("E2E_BASIC_USER")?,
        basic_pass: secret("E2E_BASIC_PASS")?,
        redirect_registry: need("E2E_REDIRECT_REGISTRY")?,
        redirect_target: need("E2E_REDIRECT_TARGET")?,
        slow_registry: need("E2E_SLOW_REGISTRY")?,
        slow_token_server: need("E2E_SLOW_TOKEN_SERVER")?,
        slow_ttl: slow_ttl
            .parse()
            .map_err(|_| format!("E2E_SLOW_TTL={slow_ttl} is not a number of seconds"))?,
        slow_registry_log: file("E2E_SLOW_REGISTRY_LOG")?,
        http_proxy: need("E2E_HTTP_PROXY")?,
        http_proxy_user: need("E2E_HTTP_PROXY_USER")?,
        http_proxy_pass: secret("E2E_HTTP_PROXY_PASS")?,
        http_proxy_log: file("E2E_HTTP_PROXY_LOG")?,
        socks_proxy: need("E2E_SOCKS_PROXY")?,
        socks_user: need("E2E_SOCKS_USER")?,
        socks_pass: secret("E2E_SOCKS_PASS")?,
        socks_log: file("E2E_SOCKS_PROXY_LOG")?,
    })
}

fn init() -> Result<Env, String> {
    let registry = var("E2E_REGISTRY")?;
    let token_registry = var("E2E_TOKEN_REGISTRY")?;
    let token_user = var("E2E_TOKEN_USER")?;
    let token_pass = secret("E2E_TOKEN_PASS")?;
    let busybox_path = var("E2E_BUSYBOX")?;
    var("DOCKER_HOST")?;
    let token_server = std::env::var("E2E_TOKEN_SERVER")
        .ok()
        .filter(|s| !s.is_empty());

    let version = docker(["version", "--format", "{{.Server.Version}}"]);
    if !version.status.success() {
        return Err(format!(
            "the Docker engine at DOCKER_HOST={} does not answer: {SETUP_HINT}\n{}",
            std::env::var("DOCKER_HOST").unwrap_or_default(),
            version.describe()
        ));
    }

    let busybox = std::fs::read(&busybox_path)
        .map_err(|e| format!("cannot read E2E_BUSYBOX={busybox_path}: {e}"))?;
    let fixtures = build_fixtures(&busybox);

    let plain = Pusher::new(&registry).map_err(|e| format!("{e:#}"))?;
    let push = |what: &str, result: anyhow::Result<String>| {
        result.map_err(|e| format!("pushing fixture {what} to {registry}: {e:#}"))
    };
    push(
        "small",
        plain.push_image("small", Some("latest"), &fixtures.small),
    )?;
    push(
        "small-oci",
        plain.push_image("small-oci", Some("latest"), &fixtures.small_oci),
    )?;
    push(
        "multi",
        plain.push_index("multi", Some("latest"), &fixtures.multi),
    )?;
    push(
        "multi-docker",
        plain.push_index("multi-docker", Some("latest"), &fixtures.multi_docker),
    )?;
    // For the registries sharing the plain registry's storage, and the mirror tests.
    let mirrored = format!("library/{MIRRORED}");
    let prefixed = format!("{MIRROR_PREFIX}/library/{MIRRORED}");
    let quay = format!("quay.io/{QUAY_REPO}");
    for repo in [
        mirrored.as_str(),
        prefixed.as_str(),
        GHCR_REPO,
        quay.as_str(),
    ] {
        push(
            repo,
            plain.push_image(repo, Some("latest"), &fixtures.small),
        )?;
    }
    for repo in [SLOW_HONEST, SLOW_LYING] {
        push(repo, plain.push_image(repo, Some("latest"), &fixtures.slow))?;
    }

    // Pushing needs a token with push scope for the user: this exercises the token server.
    let authed = Pusher::new(&token_registry)
        .map_err(|e| format!("{e:#}"))?
        .with_credentials(&token_user, &token_pass);
    for repo in ["small", "private/small"] {
        authed
            .push_image(repo, Some("latest"), &fixtures.small)
            .map_err(|e| {
                format!("pushing fixture {repo} to the token registry {token_registry}: {e:#}")
            })?;
    }

    let (arch, variant) = host_arch();
    Ok(Env {
        registry,
        token_registry,
        token_server,
        token_user,
        token_pass,
        host_platform: platform_path(arch, variant),
        fixtures,
        network: network(),
    })
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
static ENGINE: Mutex<()> = Mutex::new(());

/// The environment (set up on first use), and the lock that serialises use of the Docker
/// engine. Panics with the reason when the environment is not usable.
pub fn setup() -> (MutexGuard<'static, ()>, &'static Env) {
    let guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    match ENV.get_or_init(init) {
        Ok(env) => (guard, env),
        Err(message) => panic!("end-to-end environment not usable: {message}"),
    }
}

impl Env {
    /// `REGISTRY/repo` on the plain registry.
    pub fn plain(&self, repo: &str) -> String {
        format!("{}/{repo}", self.registry)
    }

    /// `REGISTRY/repo` on the token registry.
    pub fn token(&self, repo: &str) -> String {
        format!("{}/{repo}", self.token_registry)
    }

    /// The registry/network components; panics with the reason when they are not set up.
    pub fn net(&self) -> &Network {
        match &self.network {
            Ok(network) => network,
            Err(message) => panic!("end-to-end network components not usable: {message}"),
        }
    }

    /// Image IDs of every fixture (what `docker load` can create).
    pub fn fixture_image_ids(&self) -> Vec<String> {
        let f = &self.fixtures;
        let mut ids = vec![
            f.small.config.digest.clone(),
            f.small_oci.config.digest.clone(),
            f.slow.config.digest.clone(),
        ];
        for index in [&f.multi, &f.multi_docker] {
            ids.extend(index.images.iter().map(|i| i.config.digest.clone()));
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// Removes from the engine every image this suite can have loaded (by name under both
    /// registries, and by fixture image ID), so the next `docker load` really loads. Panics if
    /// one remains.
    pub fn reset_engine(&self) {
        let listed = docker(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).success();
        let names: Vec<&str> = listed
            .stdout
            .lines()
            .map(str::trim)
            .filter(|n| {
                n.starts_with(&format!("{}/", self.registry))
                    || n.starts_with(&format!("{}/", self.token_registry))
            })
            .collect();
        if !names.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(names.iter().copied());
            docker(args).success();
        }
        for id in self.fixture_image_ids() {
            let exists = docker(["image", "inspect", "--format", "{{.Id}}", &id]);
            if exists.status.success() {
                docker(["rmi", "-f", &id]).success();
            }
        }
        for id in self.fixture_image_ids() {
            let left = docker(["image", "inspect", "--format", "{{.Id}}", &id]);
            assert!(
                !left.status.success(),
                "image {id} is still in the engine after removing it:\n{}",
                left.describe()
            );
        }
    }
}
