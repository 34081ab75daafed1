//! The shared end-to-end environment: the real components scripts/test.sh starts (addresses
//! from environment variables), the fixture images pushed to them once, and the lock that makes
//! tests take turns with the Docker engine.
//!
//! Nothing here skips: a missing variable, an unreachable engine or a failed push makes every
//! test fail with the reason.

use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::run::docker;
use crate::support::image::{
    Flavor, Image, ImageBuilder, Index, LayerBuilder, busybox_image_builder, index,
};
use crate::support::push::Pusher;

/// What the container of every runnable fixture prints.
pub const HELLO: &str = "hello from docker-pull";

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
}

const SETUP_HINT: &str = "run the end-to-end suite through scripts/test.sh, which starts a \
    distribution registry, a token-auth registry with its token server and a Docker engine and \
    exports E2E_REGISTRY, E2E_TOKEN_REGISTRY, E2E_TOKEN_USER, E2E_TOKEN_PASS, E2E_BUSYBOX and \
    DOCKER_HOST";

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
    }
}

fn init() -> Result<Env, String> {
    let registry = var("E2E_REGISTRY")?;
    let token_registry = var("E2E_TOKEN_REGISTRY")?;
    let token_user = var("E2E_TOKEN_USER")?;
    let token_pass = var("E2E_TOKEN_PASS")?;
    if token_pass.len() < 8 {
        return Err(format!(
            "E2E_TOKEN_PASS is too short ({} characters): the tests look for it in docker-pull's \
             output to prove it is never printed, so it must be at least 8 random characters",
            token_pass.len()
        ));
    }
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

    /// Image IDs of every fixture (what `docker load` can create).
    pub fn fixture_image_ids(&self) -> Vec<String> {
        let f = &self.fixtures;
        let mut ids = vec![
            f.small.config.digest.clone(),
            f.small_oci.config.digest.clone(),
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
