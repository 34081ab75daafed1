//! The archive formats with real consumers: Docker 20.10 loads and runs `-f docker` and
//! `-f legacy` archives (zstd images only through `legacy`), skopeo inspects `-f oci` and
//! `-f oci-dir` (every platform of a `--platform all` layout), podman loads `oci`, `docker`
//! and `legacy` archives into a private vfs store.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::env::{Env, MULTI_PLATFORMS, host_arch, setup};
use crate::run::{Run, docker, docker_cli, docker_pull_command, run_command};
use crate::support::image::{
    Flavor, Image, ImageBuilder, LayerBuilder, OCI_INDEX, OCI_MANIFEST, busybox_layer,
};
use crate::support::push::Pusher;
use crate::{Scratch, assert_loaded, assert_loads_and_runs, assert_runs, docker_load, inspect};

/// Images of this module, pushed to the plain registry once.
struct Images {
    /// Runnable busybox with a zstd layer (OCI media types).
    zstd: Image,
    /// Runnable busybox plus an empty layer, an uncompressed (`.tar`) layer, the empty layer
    /// again and 38 small gzip layers: 42 layers.
    odd: Image,
}

const ZSTD_REPO: &str = "formats/zstd";
const ODD_REPO: &str = "formats/odd";

fn build_images() -> Result<Images, String> {
    let path = std::env::var("E2E_BUSYBOX").map_err(|_| "E2E_BUSYBOX is not set".to_string())?;
    let busybox = std::fs::read(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let (arch, variant) = host_arch();
    let zstd = ImageBuilder::new(crate::support::image::Flavor::Oci)
        .platform("linux", arch, variant)
        .zstd_layer(busybox_layer(&busybox))
        .cmd(&["/bin/sh", "-c", "echo hello from docker-pull"])
        .label("fixture", "formats-zstd")
        .build();
    let mut odd = ImageBuilder::new(crate::support::image::Flavor::Docker)
        .platform("linux", arch, variant)
        .layer(busybox_layer(&busybox))
        .empty_layer()
        .uncompressed_layer(LayerBuilder::new().dir("etc", 0o755).file(
            "etc/odd",
            b"uncompressed\n".to_vec(),
            0o644,
        ))
        .repeat_layer(1);
    for i in 0..38 {
        odd = odd.layer(LayerBuilder::new().dir("layers", 0o755).file(
            &format!("layers/{i}"),
            format!("layer {i}\n").into_bytes(),
            0o644,
        ));
    }
    let odd = odd
        .cmd(&[
            "/bin/sh",
            "-c",
            "cat /etc/odd >/dev/null && echo hello from docker-pull",
        ])
        .label("fixture", "formats-odd")
        .build();
    Ok(Images { zstd, odd })
}

fn push_images(env: &Env) -> Result<Images, String> {
    let images = build_images()?;
    let pusher = Pusher::new(&env.registry).map_err(|e| format!("{e:#}"))?;
    pusher
        .push_image(ZSTD_REPO, Some("latest"), &images.zstd)
        .map_err(|e| format!("pushing {ZSTD_REPO}: {e:#}"))?;
    pusher
        .push_image(ODD_REPO, Some("latest"), &images.odd)
        .map_err(|e| format!("pushing {ODD_REPO}: {e:#}"))?;
    Ok(images)
}

static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();

/// The images of this module (pushed on first use), with the engine cleared of them and of
/// the suite's fixtures.
fn images(env: &Env) -> &'static Images {
    let images = match IMAGES.get_or_init(|| push_images(env)) {
        Ok(images) => images,
        Err(e) => panic!("formats fixtures not usable: {e}"),
    };
    env.reset_engine();
    for id in [&images.zstd.config.digest, &images.odd.config.digest] {
        let exists = docker(["image", "inspect", "--format", "{{.Id}}", id]);
        if exists.status.success() {
            docker(["rmi", "-f", id]).success();
        }
    }
    images
}

/// `docker-pull -q -f FORMAT -o <scratch>/NAME ARGS`, expecting success.
#[track_caller]
fn pull(scratch: &Scratch, format: &str, name: &str, args: &[&str]) -> PathBuf {
    let path = scratch.out(name);
    let mut all = vec!["-q", "-f", format, "-o", path.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let run = scratch.pull(&all).success();
    assert!(
        path.exists(),
        "{} missing\n{}",
        path.display(),
        run.describe()
    );
    path
}

fn tool(program: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command(cmd, None, Duration::from_secs(180))
}

/// `skopeo inspect TARGET` as JSON (with `global` options before `inspect`).
#[track_caller]
fn skopeo_inspect(global: &[&str], target: &str) -> Value {
    let mut args = global.to_vec();
    args.extend(["inspect", target]);
    let run = tool("skopeo", &args).success();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "skopeo inspect output is not JSON ({e})\n{}",
            run.describe()
        )
    })
}

fn layer_digests(image: &Image) -> Value {
    Value::from(
        image
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>(),
    )
}

/// A private podman store (vfs) under a scratch directory.
struct Podman {
    root: PathBuf,
}

impl Podman {
    fn new(scratch: &Scratch) -> Self {
        Self {
            root: scratch.path().join("podman"),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let root = self.root.join("root");
        let runroot = self.root.join("runroot");
        let mut all = vec![
            "--root",
            root.to_str().expect("utf-8 path"),
            "--runroot",
            runroot.to_str().expect("utf-8 path"),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
        ];
        all.extend_from_slice(args);
        tool("podman", &all)
    }

    /// `podman load -i FILE`, expecting success.
    #[track_caller]
    fn load(&self, archive: &Path) -> Run {
        self.run(&["load", "-i", archive.to_str().expect("utf-8 path")])
            .success()
    }

    /// `REPOSITORY:TAG` of every image in the store.
    fn names(&self) -> Vec<String> {
        self.run(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .success()
            .stdout
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The image ID podman gives `name`.
    fn id(&self, name: &str) -> String {
        self.run(&["image", "inspect", "--format", "{{.Id}}", name])
            .success()
            .stdout
            .trim()
            .to_string()
    }
}

/// The odd image (empty, uncompressed and repeated layers, 42 in all) in both Docker formats:
/// loads into Docker 20.10 and runs, with the config as image ID.
#[test]
fn odd_image_loads_and_runs_from_docker_and_legacy_archives() {
    let (_engine, env) = setup();
    let images = images(env);
    let scratch = Scratch::new();
    let reference = env.plain(ODD_REPO);
    let name = format!("{reference}:latest");
    for format in ["docker", "legacy"] {
        env.reset_engine();
        let archive = pull(
            &scratch,
            format,
            &format!("odd-{format}.tar"),
            &[&reference],
        );
        assert_loads_and_runs(&archive, &name);
        assert_eq!(
            inspect(&name, "{{.Id}}"),
            images.odd.config.digest,
            "-f {format}: the image ID is the config digest"
        );
        assert_eq!(
            inspect(&name, "{{len .RootFS.Layers}}"),
            "42",
            "-f {format}: every layer is loaded"
        );
    }
}

/// The small fixtures (Docker and OCI media types) in the legacy format, under both names.
#[test]
fn legacy_and_synology_archives_of_the_fixtures_load_and_run() {
    let (_engine, env) = setup();
    images(env);
    let scratch = Scratch::new();
    for (repo, format) in [("small", "legacy"), ("small-oci", "synology")] {
        env.reset_engine();
        let reference = env.plain(repo);
        let archive = pull(&scratch, format, &format!("{repo}.tar"), &[&reference]);
        assert_loads_and_runs(&archive, &format!("{reference}:latest"));
    }
}

/// `-o -` piped straight into `docker load`, and a gzip-compressed legacy archive (how a zstd
/// image goes to a NAS without tripling in size): both load and run on Docker 20.10.
#[test]
fn a_stream_into_docker_load_and_a_gzip_legacy_archive_load_and_run() {
    let (_engine, env) = setup();
    images(env);
    let scratch = Scratch::new();
    let reference = env.plain("small");
    let name = format!("{reference}:latest");
    env.reset_engine();
    let cache = scratch.cache();
    let args = [
        "--cache-dir",
        cache.to_str().unwrap(),
        "-q",
        "-o",
        "-",
        &reference,
    ];
    let mut streaming = docker_pull_command(args, scratch.path());
    streaming.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = streaming.spawn().expect("starting docker-pull");
    let stream = child.stdout.take().expect("piped stdout");
    let load = Command::new(docker_cli())
        .arg("load")
        .stdin(stream)
        .output()
        .expect("running docker load");
    let status = child.wait().expect("waiting for docker-pull");
    assert!(status.success(), "docker-pull -o - failed: {status}");
    assert!(
        load.status.success(),
        "docker load of the stream failed: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_loaded(&String::from_utf8_lossy(&load.stdout), &name);
    assert_runs(&name);

    env.reset_engine();
    let archive = pull(
        &scratch,
        "legacy",
        "small.tar.gz",
        &["--compress", "gzip", &reference],
    );
    assert_loads_and_runs(&archive, &name);
}

/// Thin archives (`--exclude-from`): an engine that has the base loads the thin archive and
/// runs the image; one without the base refuses it with its own error (a layer file missing),
/// in both tar formats `docker load` reads.
#[test]
fn thin_archives_load_where_the_base_is_and_fail_where_it_is_not() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let small = &env.fixtures.small;
    let (arch, variant) = host_arch();
    let app = ImageBuilder::new(Flavor::Docker)
        .platform("linux", arch, variant)
        .raw_layer(small.layers[0].clone(), small.diff_ids[0].clone())
        .layer(LayerBuilder::new().file("etc/thin", b"thin\n".to_vec(), 0o644))
        .cmd(&["/bin/sh", "-c", "echo hello from docker-pull"])
        .build();
    Pusher::new(&env.registry)
        .and_then(|p| p.push_image("e2e-thin/app", Some("v1"), &app))
        .expect("pushing the app image");
    let base = env.plain("small");
    let app_ref = env.plain("e2e-thin/app");
    let name = format!("{app_ref}:v1");
    let base_tar = pull(&scratch, "docker", "base.tar", &[&base]);
    for format in ["docker", "legacy"] {
        let thin = scratch.out(&format!("app-{format}.tar"));
        let run = scratch
            .pull(&[
                "--json",
                "-f",
                format,
                "--exclude-from",
                base_tar.to_str().unwrap(),
                "-o",
                thin.to_str().unwrap(),
                &format!("{app_ref}:v1"),
            ])
            .success();
        let report: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON report");
        assert_eq!(report["layers_left_out"], 1, "{report}");
        assert!(
            std::fs::metadata(&thin).unwrap().len() < std::fs::metadata(&base_tar).unwrap().len(),
            "the thin archive is smaller than the base"
        );

        env.reset_engine();
        let refused = docker(["load", "-i", thin.to_str().unwrap()]);
        assert_ne!(
            refused.code(),
            Some(0),
            "loaded without the base\n{}",
            refused.describe()
        );
        assert!(
            refused.stderr.contains("no such file or directory"),
            "-f {format}: the engine's error\n{}",
            refused.describe()
        );

        docker_load(&base_tar);
        let loaded = docker_load(&thin);
        assert_loaded(&loaded, &name);
        assert_runs(&name);
    }
}

/// `--split`: the parts pass `sha256sum -c` as they are and once joined with `cat`, the joined
/// archive loads and runs on Docker 20.10, and `push` takes the parts straight into the
/// registry with the digest unchanged.
#[test]
fn split_parts_check_join_load_and_push() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let reference = env.plain("small");
    let name = format!("{reference}:latest");
    env.reset_engine();
    let target = scratch.out("small.tar");
    scratch
        .pull(&[
            "-q",
            "--split",
            "256K",
            "-o",
            target.to_str().unwrap(),
            &reference,
        ])
        .success();
    assert!(!target.exists(), "only parts are written");
    let dir = scratch.path().to_str().unwrap();
    let checked = tool(
        "sh",
        &[
            "-c",
            &format!("cd {dir} && sha256sum -c --ignore-missing small.tar.sha256"),
        ],
    )
    .success();
    let parts = checked.stdout.matches(".part-").count();
    assert!(parts >= 3, "several parts checked\n{}", checked.describe());
    let joined = tool(
        "sh",
        &[
            "-c",
            &format!(
                "cd {dir} && cat small.tar.part-* > small.tar && sha256sum -c small.tar.sha256"
            ),
        ],
    )
    .success();
    assert!(
        joined.stdout.contains("small.tar: OK"),
        "{}",
        joined.describe()
    );
    assert_loads_and_runs(&target, &name);

    std::fs::remove_file(&target).unwrap();
    let pushed = env.plain("e2e-split/small:v1");
    let part = scratch.out("small.tar.part-001");
    scratch
        .pull(&["push", part.to_str().unwrap(), &pushed])
        .success();
    let run = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{pushed}"),
        ],
    )
    .success();
    let inspected: Value = serde_json::from_str(&run.stdout).expect("skopeo inspect JSON");
    assert_eq!(
        inspected["Digest"],
        env.fixtures.small.manifest.digest.as_str(),
        "{inspected}"
    );
    env.reset_engine();
    docker(["pull", "-q", &pushed]).success();
    assert_runs(&pushed);
}

/// A zstd image: `-f legacy` and `-f synology` decompress it, so Docker 20.10 loads and runs
/// it; the `docker` format keeps the zstd blob as the registry served it.
#[test]
fn zstd_image_runs_on_docker_20_10_through_legacy() {
    let (_engine, env) = setup();
    let images = images(env);
    let scratch = Scratch::new();
    let reference = env.plain(ZSTD_REPO);
    let name = format!("{reference}:latest");
    for format in ["legacy", "synology"] {
        env.reset_engine();
        images_cleanup(images);
        let archive = pull(
            &scratch,
            format,
            &format!("zstd-{format}.tar"),
            &[&reference],
        );
        assert_loads_and_runs(&archive, &name);
        assert_eq!(inspect(&name, "{{.Id}}"), images.zstd.config.digest);
    }
    // Why legacy exists: the docker format keeps the zstd layer, which this engine refuses.
    env.reset_engine();
    images_cleanup(images);
    let archive = pull(&scratch, "docker", "zstd-docker.tar", &[&reference]);
    let load = docker(["load", "-i", archive.to_str().unwrap()]);
    assert!(
        !load.status.success(),
        "Docker 20.10 loaded a zstd layer; legacy would not be needed for it\n{}",
        load.describe()
    );
    let engine = docker(["version", "--format", "{{.Server.Version}}"]).success();
    assert!(
        engine.stdout.trim().starts_with("20.10."),
        "this test documents Docker 20.10, the engine is {}",
        engine.stdout.trim()
    );
}

fn images_cleanup(images: &Images) {
    for id in [&images.zstd.config.digest, &images.odd.config.digest] {
        let _ = docker(["rmi", "-f", id]);
    }
}

/// `-f oci`: skopeo reads it and names the manifest digest; podman loads it under the full
/// reference; Docker 20.10 (which needs manifest.json) cannot.
#[test]
fn oci_archive_is_read_by_skopeo_and_podman() {
    let (_engine, env) = setup();
    let images = images(env);
    let scratch = Scratch::new();
    let podman = Podman::new(&scratch);
    for (repo, image) in [
        ("small-oci", &env.fixtures.small_oci),
        (ODD_REPO, &images.odd),
        (ZSTD_REPO, &images.zstd),
    ] {
        let reference = env.plain(repo);
        let archive = pull(
            &scratch,
            "oci",
            &format!("{}.tar", repo.replace('/', "-")),
            &[&reference],
        );
        let target = format!("oci-archive:{}", archive.display());
        let inspected = skopeo_inspect(&[], &target);
        assert_eq!(inspected["Digest"], image.manifest.digest, "{inspected}");
        assert_eq!(inspected["Layers"], layer_digests(image), "{inspected}");
        // By its ref.name too (skopeo 1.9 looks names up among OCI media types only).
        if image.manifest.media_type == OCI_MANIFEST {
            let named = skopeo_inspect(&[], &format!("{target}:{reference}:latest"));
            assert_eq!(named["Digest"], image.manifest.digest, "{named}");
        }

        podman.load(&archive);
        let name = format!("{reference}:latest");
        assert!(
            podman.names().contains(&name),
            "podman images lacks {name}: {:?}",
            podman.names()
        );
        assert_eq!(
            format!("sha256:{}", podman.id(&name)),
            image.config.digest,
            "podman's image ID is the config digest"
        );
    }
    let archive = scratch.out("small-oci.tar");
    let refused = docker(["load", "-i", archive.to_str().unwrap()]);
    assert!(
        !refused.status.success(),
        "Docker 20.10 is not expected to load an OCI archive without manifest.json\n{}",
        refused.describe()
    );
}

/// `-f docker` and `-f legacy` archives load into podman too, under the image's name.
#[test]
fn docker_and_legacy_archives_load_into_podman() {
    let (_engine, env) = setup();
    let images = images(env);
    let scratch = Scratch::new();
    for format in ["docker", "legacy"] {
        let podman = Podman::new(&scratch);
        for (repo, image) in [("small", &env.fixtures.small), (ODD_REPO, &images.odd)] {
            let reference = env.plain(repo);
            let archive = pull(
                &scratch,
                format,
                &format!("{format}-{}.tar", repo.replace('/', "-")),
                &[&reference],
            );
            podman.load(&archive);
            let name = format!("{reference}:latest");
            assert!(
                podman.names().contains(&name),
                "-f {format}: podman images lacks {name}: {:?}",
                podman.names()
            );
            assert_eq!(
                format!("sha256:{}", podman.id(&name)),
                image.config.digest,
                "-f {format}: podman's image ID is the config digest"
            );
        }
        podman.run(&["rmi", "-a", "-f"]).success();
    }
}

/// `-f oci-dir`: skopeo reads the layout, by its only entry and by name once there are two.
/// (skopeo 1.9 finds names only on entries with OCI media types, so the named lookups use
/// `small-oci`; a Docker-media-type image is inspected in a layout of its own.)
#[test]
fn oci_dir_is_read_by_skopeo() {
    let (_engine, env) = setup();
    let images = images(env);
    let scratch = Scratch::new();
    let dir = scratch.out("layout");
    let small_oci = env.plain("small-oci");
    let small = env.plain("small");
    pull(&scratch, "oci-dir", "layout", &[&small_oci]);
    let only = skopeo_inspect(&[], &format!("oci:{}", dir.display()));
    assert_eq!(
        only["Digest"], env.fixtures.small_oci.manifest.digest,
        "{only}"
    );
    assert_eq!(
        only["Layers"],
        layer_digests(&env.fixtures.small_oci),
        "{only}"
    );

    pull(&scratch, "oci-dir", "layout", &[&small]);
    let named = skopeo_inspect(&[], &format!("oci:{}:{small_oci}:latest", dir.display()));
    assert_eq!(
        named["Digest"], env.fixtures.small_oci.manifest.digest,
        "{named}"
    );

    for (repo, image) in [("small", &env.fixtures.small), (ODD_REPO, &images.odd)] {
        let name = format!("{}-layout", repo.replace('/', "-"));
        let layout = pull(&scratch, "oci-dir", &name, &[&env.plain(repo)]);
        let inspected = skopeo_inspect(&[], &format!("oci:{}", layout.display()));
        assert_eq!(inspected["Digest"], image.manifest.digest, "{inspected}");
        assert_eq!(inspected["Layers"], layer_digests(image), "{inspected}");
    }
}

/// `--platform all -f oci-dir` (and `-f oci`): skopeo finds every platform of the index in
/// the layout, each with its own layers, and `--raw` gives the index the registry served.
#[test]
fn platform_all_layout_serves_every_platform_to_skopeo() {
    let (_engine, env) = setup();
    images(env);
    let scratch = Scratch::new();
    for (repo, index) in [
        ("multi", &env.fixtures.multi),
        ("multi-docker", &env.fixtures.multi_docker),
    ] {
        let reference = env.plain(repo);
        let name = format!("{reference}:latest");
        let dir = pull(
            &scratch,
            "oci-dir",
            &format!("{repo}-layout"),
            &["--platform", "all", &reference],
        );
        let archive = pull(
            &scratch,
            "oci",
            &format!("{repo}.tar"),
            &["--platform", "all", &reference],
        );
        // skopeo 1.9 finds names only on OCI media types: the Docker manifest list is the
        // layout's only entry, taken without a name.
        let suffix = if index.index.media_type == OCI_INDEX {
            format!(":{name}")
        } else {
            String::new()
        };
        for target in [
            format!("oci:{}{suffix}", dir.display()),
            format!("oci-archive:{}{suffix}", archive.display()),
        ] {
            let raw = tool("skopeo", &["inspect", "--raw", &target]).success();
            assert!(
                raw.stdout.as_bytes() == index.index.data.as_slice(),
                "{target}: --raw is not the index byte-for-byte\n{}",
                raw.describe()
            );
            for (arch, variant) in MULTI_PLATFORMS {
                let platform = match variant {
                    Some(v) => format!("linux/{arch}/{v}"),
                    None => format!("linux/{arch}"),
                };
                let image = index
                    .image_for(&platform)
                    .expect("the fixture has the platform");
                let mut global = vec!["--override-os", "linux", "--override-arch", arch];
                if let Some(v) = variant {
                    global.extend(["--override-variant", v]);
                }
                let inspected = skopeo_inspect(&global, &target);
                assert_eq!(inspected["Digest"], index.index.digest, "{inspected}");
                assert_eq!(inspected["Architecture"], arch, "{target}: {inspected}");
                assert_eq!(
                    inspected["Layers"],
                    layer_digests(image),
                    "{target} for {platform}: {inspected}"
                );
            }
        }
    }
}

/// `--platform linux/amd64,linux/arm64/v8` into a layout and an OCI archive: a new index listing
/// only those two (and the attestation of the one it is for), which skopeo reads back: each
/// platform's layers, and no trace of the platform left out.
#[test]
fn a_platform_list_is_read_back_by_skopeo() {
    let (_engine, env) = setup();
    images(env);
    let scratch = Scratch::new();
    let index = &env.fixtures.multi;
    let reference = env.plain("multi");
    let name = format!("{reference}:latest");
    let list = ["linux/amd64", "linux/arm64/v8"];
    let args = [
        "--platform",
        "linux/amd64,linux/arm64/v8",
        reference.as_str(),
    ];
    let dir = pull(&scratch, "oci-dir", "list-layout", &args);
    let archive = pull(&scratch, "oci", "list.tar", &args);
    for target in [
        format!("oci:{}:{name}", dir.display()),
        format!("oci-archive:{}:{name}", archive.display()),
    ] {
        let raw = tool("skopeo", &["inspect", "--raw", &target]).success();
        let listed: Value = serde_json::from_str(&raw.stdout).expect("the index");
        let entries = listed["manifests"].as_array().expect("manifests");
        let platforms: Vec<String> = entries
            .iter()
            .filter(|e| e["annotations"]["vnd.docker.reference.type"].is_null())
            .map(|e| {
                let p = &e["platform"];
                let base = format!(
                    "{}/{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                );
                match p["variant"].as_str() {
                    Some(v) => format!("{base}/{v}"),
                    None => base,
                }
            })
            .collect();
        assert_eq!(platforms, list, "{target}: {}", raw.stdout);
        assert_eq!(
            entries.len(),
            2 + index.extra_manifests.len(),
            "{}",
            raw.stdout
        );
        for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
            let platform = variant.map_or(format!("linux/{arch}"), |v| format!("linux/{arch}/{v}"));
            let image = index.image_for(&platform).expect("the fixture has it");
            let mut global = vec!["--override-os", "linux", "--override-arch", arch];
            if let Some(v) = variant {
                global.extend(["--override-variant", v]);
            }
            let inspected = skopeo_inspect(&global, &target);
            assert_ne!(
                inspected["Digest"], index.index.digest,
                "the index is a new one"
            );
            assert_eq!(
                inspected["Layers"],
                layer_digests(image),
                "{target} {platform}: {inspected}"
            );
        }
        let arm = tool(
            "skopeo",
            &[
                "--override-os",
                "linux",
                "--override-arch",
                "arm",
                "--override-variant",
                "v7",
                "inspect",
                &target,
            ],
        );
        assert_ne!(
            arm.code(),
            Some(0),
            "{target}: linux/arm/v7 was left out\n{}",
            arm.describe()
        );
    }
}

/// Three images in one `-f docker` bundle: Docker loads all three names, each runs.
#[test]
fn docker_bundle_of_three_loads_every_name() {
    let (_engine, env) = setup();
    let images = images(env);
    let scratch = Scratch::new();
    let refs = [
        env.plain("small"),
        env.plain("small-oci"),
        env.plain(ODD_REPO),
    ];
    let args: Vec<&str> = refs.iter().map(String::as_str).collect();
    let bundle = pull(&scratch, "docker", "bundle.tar", &args);
    let loaded = docker_load(&bundle);
    for reference in &refs {
        assert_loaded(&loaded, &format!("{reference}:latest"));
    }
    for reference in &refs {
        assert_runs(&format!("{reference}:latest"));
    }
    assert_eq!(
        inspect(&format!("{}:latest", refs[2]), "{{.Id}}"),
        images.odd.config.digest
    );

    // The same three in a legacy bundle.
    env.reset_engine();
    images_cleanup(images);
    let bundle = pull(&scratch, "legacy", "bundle-legacy.tar", &args);
    let loaded = docker_load(&bundle);
    for reference in &refs {
        assert_loaded(&loaded, &format!("{reference}:latest"));
        assert_runs(&format!("{reference}:latest"));
    }
}

/// Two pulls of one image, each with a fresh cache, give the same bytes in every tar format.
#[test]
fn two_pulls_give_identical_archives() {
    let (_engine, env) = setup();
    images(env);
    let (first, second) = (Scratch::new(), Scratch::new());
    let odd = env.plain(ODD_REPO);
    let zstd = env.plain(ZSTD_REPO);
    for format in ["docker", "legacy", "oci"] {
        for reference in [&odd, &zstd] {
            let name = format!("{format}-{}.tar", reference.replace(['/', ':'], "_"));
            let a = pull(&first, format, &name, &[reference]);
            let b = pull(&second, format, &name, &[reference]);
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "-f {format} {reference}: two pulls differ"
            );
        }
    }
}
