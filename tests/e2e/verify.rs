//! `verify` on archives other tools wrote: `docker save` of the Docker 20.10 engine (the
//! legacy layout, uncompressed layers), skopeo's `docker-archive:` and `oci-archive:`, and
//! docker-pull archives compressed whole with gzip and zstd.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::env::setup;
use crate::run::{Run, docker, docker_pull, run_command};
use crate::{Scratch, docker_load, parse_json_lines};

/// `docker-pull verify --json SOURCE`, expecting exit 0 and one sound image named `name`.
#[track_caller]
fn assert_verifies(scratch: &Scratch, source: &Path, name: &str) {
    let source = source.to_str().expect("utf-8 path");
    let run = docker_pull(["verify", "--json", source], scratch.path()).success();
    let objects = parse_json_lines(&run);
    assert_eq!(objects.len(), 1, "one image\n{}", run.describe());
    let image = &objects[0];
    assert_eq!(image["problems"], serde_json::json!([]), "{image}");
    assert_eq!(image["name"], name, "{image}");
    assert!(image["layers"].as_u64().unwrap_or(0) > 0, "{image}");
    // The plain form says ok too.
    let run = docker_pull(["verify", "-q", source], scratch.path()).success();
    assert!(run.stdout.starts_with("ok  "), "{}", run.describe());
}

fn tool(program: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command(cmd, None, Duration::from_secs(180))
}

/// `sh -c SCRIPT`, expecting success.
fn shell(script: &str) {
    tool("sh", &["-c", script]).success();
}

#[test]
fn docker_save_of_the_engine_verifies() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let reference = env.plain("small");
    let name = format!("{reference}:latest");
    let pulled = scratch.out("small.tar");
    scratch
        .pull(&["-q", "-o", pulled.to_str().unwrap(), &reference])
        .success();
    docker_load(&pulled);
    let saved = scratch.out("saved.tar");
    docker(["save", "-o", saved.to_str().unwrap(), &name]).success();
    assert_verifies(&scratch, &saved, &name);

    let listing = tool("tar", &["-tf", saved.to_str().unwrap()]).success();
    assert!(
        listing.stdout.contains("/layer.tar"),
        "docker save of Docker 20.10 writes <v1id>/layer.tar\n{}",
        listing.describe()
    );
    env.reset_engine();
}

#[test]
fn skopeo_docker_archive_and_oci_archive_verify() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let reference = env.plain("small-oci");
    let name = format!("{reference}:latest");
    let docker_archive = scratch.out("skopeo-docker.tar");
    let oci_archive = scratch.out("skopeo-oci.tar");
    for target in [
        format!("docker-archive:{}:{name}", docker_archive.display()),
        format!("oci-archive:{}:{name}", oci_archive.display()),
    ] {
        tool(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{name}"),
                &target,
            ],
        )
        .success();
    }
    assert_verifies(&scratch, &docker_archive, &name);
    assert_verifies(&scratch, &oci_archive, &name);
}

#[test]
fn gzip_and_zstd_compressed_archives_verify() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let reference = env.plain("small");
    let name = format!("{reference}:latest");
    for format in ["docker", "legacy", "oci"] {
        let tar = scratch.out(&format!("{format}.tar"));
        scratch
            .pull(&["-q", "-f", format, "-o", tar.to_str().unwrap(), &reference])
            .success();
        let (gz, zst) = (
            scratch.out(&format!("{format}.tar.gz")),
            scratch.out(&format!("{format}.tar.zst")),
        );
        shell(&format!(
            "gzip -c '{}' > '{}' && zstd -q -c '{}' > '{}'",
            tar.display(),
            gz.display(),
            tar.display(),
            zst.display()
        ));
        for archive in [&tar, &gz, &zst] {
            assert_verifies(&scratch, archive, &name);
        }
    }
}

/// The blob file of `digest` in the layout `dir`.
fn blob_file(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256").join(&digest["sha256:".len()..])
}

/// Writes `value` as a blob of the layout `dir`; its descriptor fields.
fn put_json_blob(dir: &Path, value: &serde_json::Value) -> (String, usize) {
    use sha2::Digest as _;
    let bytes = serde_json::to_vec(value).unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    std::fs::write(blob_file(dir, &digest), &bytes).unwrap();
    (digest, bytes.len())
}

/// `verify` of archives pulled from the real registry: every format passes; a layout with a
/// flipped layer byte, one with a blob gone and one whose config states another diff_id (the
/// config, manifest and index rewritten to match, so only the diff_id is wrong) each fail,
/// naming the problem.
#[test]
fn pulled_archives_verify_and_damaged_ones_are_named() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let reference = env.plain("small");
    let small = &env.fixtures.small;
    for (format, name) in [
        ("docker", "d.tar"),
        ("oci", "o.tar"),
        ("legacy", "l.tar"),
        ("oci-dir", "good"),
    ] {
        let out = scratch.out(name);
        scratch
            .pull(&["-q", "-f", format, "-o", out.to_str().unwrap(), &reference])
            .success();
        assert_verifies(&scratch, &out, &format!("{reference}:latest"));
    }
    let good = scratch.out("good");
    let copy = |name: &str| {
        let dir = scratch.out(name);
        shell(&format!("cp -a {} {}", good.display(), dir.display()));
        dir
    };
    let failing = |dir: &Path, says: &str| {
        let run = docker_pull(["verify", dir.to_str().unwrap()], scratch.path());
        assert_eq!(run.code(), Some(1), "{}", run.describe());
        assert!(
            run.stderr.contains(says),
            "{dir:?}: expected {says:?}\n{}",
            run.describe()
        );
    };
    let layer = &small.layers[0].digest;

    let flipped = copy("flipped");
    let path = blob_file(&flipped, layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    failing(
        &flipped,
        &format!("{}: expected {layer}, found sha256:", &layer[7..]),
    );

    let missing = copy("missing");
    std::fs::remove_file(blob_file(&missing, layer)).unwrap();
    failing(&missing, "is missing");

    let edited = copy("edited");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob_file(&edited, &small.config.digest)).unwrap())
            .unwrap();
    let other = format!("sha256:{}", "ab".repeat(32));
    config["rootfs"]["diff_ids"][0] = other.clone().into();
    let (config_digest, config_size) = put_json_blob(&edited, &config);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob_file(&edited, &small.manifest.digest)).unwrap())
            .unwrap();
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_size.into();
    let (manifest_digest, manifest_size) = put_json_blob(&edited, &manifest);
    let index_path = edited.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["digest"] = manifest_digest.into();
    index["manifests"][0]["size"] = manifest_size.into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    failing(&edited, &format!("but the config's diff_id is {other}"));
}
