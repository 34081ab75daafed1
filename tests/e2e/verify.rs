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
