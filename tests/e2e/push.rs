//! `push SOURCE TARGET` into the real distribution registries: archives docker-pull wrote
//! come back with the very same manifest digest (`skopeo inspect --raw`), an engine's `docker
//! save` gets a manifest made for it, the engine pulls each pushed image back and runs it, a
//! second push sends nothing, another repository of the same registry gets mounts, the token
//! registry wants credentials with push scope, and a damaged archive writes no tag.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::env::setup;
use crate::run::{Run, run_command};
use crate::{Scratch, assert_runs, docker, field, number, parse_json_lines};

/// `docker-pull -f FORMAT -o <scratch>/<name> <args>`: the archive.
fn pulled(scratch: &Scratch, name: &str, format: &str, args: &[&str]) -> PathBuf {
    let path = scratch.out(name);
    let mut all = vec!["-q", "-f", format, "-o", path.to_str().unwrap()];
    all.extend_from_slice(args);
    scratch.pull(&all).success();
    path
}

/// `docker-pull push SOURCE TARGET --json <args>`.
fn push(scratch: &Scratch, source: &Path, target: &str, args: &[&str]) -> Run {
    let mut all = vec!["push", source.to_str().unwrap(), target, "--json"];
    all.extend_from_slice(args);
    scratch.pull(&all)
}

/// `skopeo inspect --raw docker://REF` (plain HTTP): the manifest's sha256.
fn remote_digest(reference: &str, creds: Option<&str>) -> Option<String> {
    let mut cmd = std::process::Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false", "--raw"]);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    cmd.arg(format!("docker://{reference}"));
    let run = run_command(cmd, None, Duration::from_secs(120));
    if run.code() != Some(0) {
        return None;
    }
    use sha2::Digest as _;
    Some(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(run.stdout.as_bytes()))
    ))
}

/// The engine pulls `reference` from the loopback registry and runs it.
fn engine_pulls_and_runs(reference: &str) {
    docker(["pull", "-q", reference]).success();
    assert_runs(reference);
}

fn only_report(run: &Run) -> Value {
    let objects = parse_json_lines(run);
    assert_eq!(objects.len(), 1, "one report\n{}", run.describe());
    objects[0].clone()
}

/// `-f docker` and `-f oci` archives go back byte for byte: same digest, the engine runs it.
#[test]
fn archives_go_back_with_their_digests() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    for (format, fixture, want) in [
        ("docker", "small", &env.fixtures.small.manifest.digest),
        ("oci", "small-oci", &env.fixtures.small_oci.manifest.digest),
    ] {
        let source = format!("{}/{fixture}:latest", env.registry);
        let archive = pulled(&scratch, &format!("{format}.tar"), format, &[&source]);
        let target = format!("{}/pushed/{format}:v1", env.registry);
        let run = push(&scratch, &archive, &target, &[]).success();
        let report = only_report(&run);
        assert_eq!(
            field(&report, "digest"),
            want.as_str(),
            "{}",
            run.describe()
        );
        assert_eq!(report["digest_changed"], false);
        assert_eq!(remote_digest(&target, None).as_deref(), Some(want.as_str()));
        engine_pulls_and_runs(&target);

        // Again: the registry has every blob.
        let again = push(&scratch, &archive, &target, &[]).success();
        let report = only_report(&again);
        assert_eq!(number(&report, "blobs_skipped"), number(&report, "blobs"));
        assert_eq!(number(&report, "bytes_uploaded"), 0);

        // Another repository of the same registry: mounted, not uploaded.
        let other = format!("{}/pushed/{format}-copy:v1", env.registry);
        let copy = push(&scratch, &archive, &other, &[]).success();
        let report = only_report(&copy);
        assert_eq!(remote_digest(&other, None).as_deref(), Some(want.as_str()));
        assert!(
            number(&report, "blobs_mounted") + number(&report, "blobs_skipped") >= 1
                && number(&report, "bytes_uploaded") == 0,
            "the second repository needs no upload\n{}",
            copy.describe()
        );
    }
}

/// The engine's own `docker save` (Docker 20.10: no registry manifest): a manifest is made,
/// the report says the digest is new, and the engine pulls and runs what was pushed.
#[test]
fn a_docker_save_archive_gets_a_new_manifest() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let original = format!("{}/small:latest", env.registry);
    docker(["pull", "-q", &original]).success();
    let saved = scratch.out("saved.tar");
    docker(["save", "-o", saved.to_str().unwrap(), &original]).success();
    let target = format!("{}/pushed/saved:v1", env.registry);
    let run = push(&scratch, &saved, &target, &[]).success();
    let report = only_report(&run);
    assert_eq!(report["digest_changed"], true, "{}", run.describe());
    assert!(
        report["note"]
            .as_str()
            .unwrap_or_default()
            .contains("new digest")
    );
    let digest = field(&report, "digest").to_string();
    assert_eq!(remote_digest(&target, None), Some(digest));
    docker(["rmi", "-f", &original]).success();
    engine_pulls_and_runs(&target);
    // The image ID (the config) is the one the engine saved.
    let id = crate::inspect(&target, "{{.Id}}");
    assert_eq!(id, env.fixtures.small.config.digest);
}

/// A bundle of two images to `REGISTRY/PREFIX`: each under the prefix with its own name.
#[test]
fn a_bundle_goes_under_a_prefix() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let a = format!("{}/small:latest", env.registry);
    let b = format!("{}/small-oci:latest", env.registry);
    let bundle = pulled(&scratch, "bundle.tar", "docker", &[&a, &b]);
    let target = format!("{}/mirror", env.registry);
    let run = push(&scratch, &bundle, &target, &[]).success();
    assert_eq!(parse_json_lines(&run).len(), 2, "{}", run.describe());
    for (name, want) in [
        ("small", &env.fixtures.small.manifest.digest),
        ("small-oci", &env.fixtures.small_oci.manifest.digest),
    ] {
        let pushed = format!("{}/mirror/{name}:latest", env.registry);
        assert_eq!(remote_digest(&pushed, None).as_deref(), Some(want.as_str()));
    }
    engine_pulls_and_runs(&format!("{}/mirror/small:latest", env.registry));
}

/// `--platform all` layouts push every child and then the index, byte for byte.
#[test]
fn a_multi_platform_layout_pushes_its_index() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let layout = scratch.out("all");
    let source = format!("{}/multi:latest", env.registry);
    scratch
        .pull(&[
            "-q",
            "-f",
            "oci-dir",
            "--platform",
            "all",
            "-o",
            layout.to_str().unwrap(),
            &source,
        ])
        .success();
    let target = format!("{}/pushed/multi:v1", env.registry);
    let run = push(&scratch, &layout, &target, &[]).success();
    let report = only_report(&run);
    let want = env.fixtures.multi.index.digest.as_str();
    assert_eq!(field(&report, "digest"), want, "{}", run.describe());
    assert_eq!(remote_digest(&target, None).as_deref(), Some(want));
}

/// The token registry: anonymous pushes are refused with a clear message; the user with
/// push rights pushes.
#[test]
fn the_token_registry_wants_credentials_to_push() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = pulled(
        &scratch,
        "token.tar",
        "docker",
        &[&format!("{}/small:latest", env.registry)],
    );
    let target = format!("{}/pushed/authed:v1", env.token_registry);
    let run = push(&scratch, &archive, &target, &["--retries", "1"]).exit_code(1);
    crate::assert_error_line(&run);
    assert!(
        run.stderr.contains("-u") || run.stderr.contains("credentials"),
        "the message says to log in\n{}",
        run.describe()
    );
    let mut cmd = scratch.command(&[
        "push",
        archive.to_str().unwrap(),
        &target,
        "--json",
        "-u",
        &env.token_user,
        "--password-stdin",
    ]);
    cmd.env_remove("DOCKER_PULL_PASSWORD");
    let run = scratch
        .run(cmd, Some(&format!("{}\n", env.token_pass)))
        .success();
    let report = only_report(&run);
    assert_eq!(field(&report, "digest"), env.fixtures.small.manifest.digest);
    let creds = format!("{}:{}", env.token_user, env.token_pass);
    assert_eq!(
        remote_digest(&target, Some(&creds)).as_deref(),
        Some(env.fixtures.small.manifest.digest.as_str())
    );
}

/// One flipped byte in a layer: the push fails naming the damage, and no tag is written.
/// (Pushed back to the registry it came from, the layer would be mounted from there, unread.)
#[test]
fn a_damaged_archive_writes_no_tag() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let layout = scratch.out("damaged");
    let source = format!("{}/small:latest", env.registry);
    scratch
        .pull(&[
            "-q",
            "-f",
            "oci-dir",
            "--no-cache",
            "-o",
            layout.to_str().unwrap(),
            &source,
        ])
        .success();
    let layer = &env.fixtures.small.layers[0];
    let path = layout
        .join("blobs/sha256")
        .join(layer.digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    // Another registry (one the blobs cannot be mounted from), so the layer is read and sent.
    let target = format!("{}/pushed/damaged:v1", env.token_registry);
    let mut cmd = scratch.command(&[
        "push",
        layout.to_str().unwrap(),
        &target,
        "--retries",
        "1",
        "-u",
        &env.token_user,
        "--password-stdin",
    ]);
    cmd.env_remove("DOCKER_PULL_PASSWORD");
    let run = scratch
        .run(cmd, Some(&format!("{}\n", env.token_pass)))
        .exit_code(1);
    crate::assert_error_line(&run);
    assert!(
        run.stderr.contains(&layer.digest[7..19]),
        "{}",
        run.describe()
    );
    let creds = format!("{}:{}", env.token_user, env.token_pass);
    assert_eq!(
        remote_digest(&target, Some(&creds)),
        None,
        "no tag was written"
    );
}

/// `copy`: the plain registry's image into the token registry (credentials for the target),
/// the same digest there, and the engine pulls and runs it.
#[test]
fn copy_between_real_registries() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let source = format!("{}/small:latest", env.registry);
    let target = format!("{}/copied/small:v1", env.token_registry);
    let mut cmd = scratch.command(&[
        "copy",
        &source,
        &target,
        "--json",
        "-u",
        &env.token_user,
        "--password-stdin",
    ]);
    cmd.env_remove("DOCKER_PULL_PASSWORD");
    let run = scratch
        .run(cmd, Some(&format!("{}\n", env.token_pass)))
        .success();
    let report = only_report(&run);
    let want = env.fixtures.small.manifest.digest.as_str();
    assert_eq!(field(&report, "digest"), want, "{}", run.describe());
    let creds = format!("{}:{}", env.token_user, env.token_pass);
    assert_eq!(remote_digest(&target, Some(&creds)).as_deref(), Some(want));
    // The engine logs in to the token registry and pulls what was copied.
    let mut login = std::process::Command::new(crate::run::docker_cli());
    login.args([
        "login",
        "-u",
        &env.token_user,
        "--password-stdin",
        &env.token_registry,
    ]);
    crate::run::run_command(
        login,
        Some(env.token_pass.as_bytes()),
        Duration::from_secs(60),
    )
    .success();
    docker(["pull", "-q", &target]).success();
    docker(["logout", &env.token_registry]).success();
    assert_runs(&target);
}

/// The HTTPS registry with htpasswd Basic auth: pushed with `--ca-cert` and the Basic user,
/// the digest is the original's; without credentials the push is refused.
#[test]
fn push_to_the_htpasswd_registry_over_tls() {
    let (_engine, env) = setup();
    let net = env.net();
    let scratch = Scratch::new();
    let archive = pulled(
        &scratch,
        "basic.tar",
        "docker",
        &[&format!("{}/small:latest", env.registry)],
    );
    let ca = net.tls_ca.to_str().unwrap();
    let target = format!("{}/pushed/basic:v1", net.tls_registry);
    let anonymous = push(
        &scratch,
        &archive,
        &target,
        &["--ca-cert", ca, "--retries", "1"],
    );
    anonymous.exit_code(1);
    let mut cmd = scratch.command(&[
        "push",
        archive.to_str().unwrap(),
        &target,
        "--json",
        "--ca-cert",
        ca,
        "-u",
        &net.basic_user,
        "--password-stdin",
    ]);
    cmd.env_remove("DOCKER_PULL_PASSWORD");
    let run = scratch
        .run(cmd, Some(&format!("{}\n", net.basic_pass)))
        .success();
    let want = env.fixtures.small.manifest.digest.as_str();
    assert_eq!(
        field(&only_report(&run), "digest"),
        want,
        "{}",
        run.describe()
    );
    let creds = format!("{}:{}", net.basic_user, net.basic_pass);
    assert_eq!(remote_digest(&target, Some(&creds)).as_deref(), Some(want));
}
