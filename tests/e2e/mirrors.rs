//! Docker Hub mirrors: the plain registry has the `small` fixture as `library/<MIRRORED>` (and
//! under `mirror-prefix/`), so `docker.io/library/<MIRRORED>` pulls from it when it is given as
//! a mirror. Mirrors that are down, lack the image or want credentials are skipped with a
//! warning. None of these tests reaches the real Docker Hub: a working mirror always comes
//! before it.

use serde_json::json;

use crate::env::{Env, MIRROR_PREFIX, MIRRORED, setup};
use crate::run::Run;
use crate::{Scratch, assert_loads_and_runs, closed_port, field, json_objects};

/// The name `docker load` gives the mirrored image (as the user wrote it: Docker Hub official).
fn loaded_name() -> String {
    format!("{MIRRORED}:latest")
}

/// Asserts a `warning: mirror HOST failed for ...; trying ...` line for `host`.
#[track_caller]
fn assert_mirror_warning(run: &Run, host: &str) {
    let start = format!("warning: mirror {host} failed for ");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with(&start) && l.contains("; trying ")),
        "expected a line starting {start:?} and saying what is tried next\n{}",
        run.describe()
    );
}

/// Checks the one `--json` object: the fixture, served by `source`.
#[track_caller]
fn assert_served_by(env: &Env, run: &Run, source: &str) {
    let objects = json_objects(run, 1);
    assert_eq!(
        field(&objects[0], "digest"),
        env.fixtures.small.manifest.digest,
        "{}",
        run.describe()
    );
    assert_eq!(
        field(&objects[0], "source"),
        source,
        "--json source names the mirror that served the image\n{}",
        run.describe()
    );
}

/// `--mirror 127.0.0.1:<closed> --mirror <plain registry>`: the first is down, the second
/// serves; the archive names the image as written.
#[test]
fn first_mirror_down_second_serves() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("mirrored.tar");
    let down = format!("127.0.0.1:{}", closed_port());
    let reference = format!("docker.io/library/{MIRRORED}:latest");
    let run = scratch
        .pull(&[
            "--json",
            "--retries",
            "1",
            "--mirror",
            &down,
            "--mirror",
            &env.registry,
            &reference,
            "-o",
            archive.to_str().unwrap(),
        ])
        .success();
    assert_served_by(env, &run, &env.registry);
    assert_mirror_warning(&run, &down);
    assert_loads_and_runs(&archive, &loaded_name());
}

/// `DOCKER_PULL_MIRRORS` (comma-separated) when no `--mirror` is given, with a path prefix on
/// the second mirror: `library/<MIRRORED>` comes from `mirror-prefix/library/<MIRRORED>`.
#[test]
fn mirrors_from_the_environment_with_a_path_prefix() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("env-mirror.tar");
    let down = format!("127.0.0.1:{}", closed_port());
    let prefixed = format!("{}/{MIRROR_PREFIX}", env.registry);
    let reference = format!("docker.io/library/{MIRRORED}");
    let mut cmd = scratch.command(&[
        "--json",
        "--retries",
        "1",
        &reference,
        "-o",
        archive.to_str().unwrap(),
    ]);
    cmd.env("DOCKER_PULL_MIRRORS", format!("{down},{prefixed}"));
    let run = scratch.run(cmd, None).success();
    assert_served_by(env, &run, &prefixed);
    assert_mirror_warning(&run, &down);
    assert_loads_and_runs(&archive, &loaded_name());
}

/// A mirror that lacks the image (the token registry: 404) is skipped; the short name
/// `<MIRRORED>` is Docker Hub's too.
#[test]
fn mirror_without_the_image_falls_through() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("fallthrough.tar");
    let run = scratch
        .pull(&[
            "--json",
            "--mirror",
            &env.token_registry,
            "--mirror",
            &env.registry,
            MIRRORED,
            "-o",
            archive.to_str().unwrap(),
        ])
        .success();
    assert_served_by(env, &run, &env.registry);
    assert_mirror_warning(&run, &env.token_registry);
    assert_loads_and_runs(&archive, &loaded_name());
}

/// Explicit credentials (`-u`/`--password-stdin`, meant for Docker Hub) never go to a mirror:
/// the redirect registry (Basic auth, same storage) fails as a mirror and the plain one serves.
/// Credentials in the docker config for the mirror's own host do make it serve.
#[test]
fn mirrors_get_credentials_only_from_the_config_for_their_host() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let reference = format!("docker.io/library/{MIRRORED}");

    let archive = scratch.out("explicit.tar");
    let cmd = scratch.command(&[
        "--json",
        "--mirror",
        &net.redirect_registry,
        "--mirror",
        &env.registry,
        "-u",
        &net.basic_user,
        "--password-stdin",
        &reference,
        "-o",
        archive.to_str().unwrap(),
    ]);
    let run = scratch
        .run(cmd, Some(&format!("{}\n", net.basic_pass)))
        .success();
    assert_served_by(env, &run, &env.registry);
    assert_mirror_warning(&run, &net.redirect_registry);

    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", net.basic_user, net.basic_pass))
    };
    scratch.write_docker_config(&json!({
        "auths": { net.redirect_registry.as_str(): { "auth": auth } }
    }));
    let archive = scratch.out("config.tar");
    let run = scratch
        .pull(&[
            "--json",
            "--no-cache",
            "--mirror",
            &net.redirect_registry,
            "--mirror",
            &env.registry,
            &reference,
            "-o",
            archive.to_str().unwrap(),
        ])
        .success();
    assert_served_by(env, &run, &net.redirect_registry);
    assert_loads_and_runs(&archive, &loaded_name());
}

/// A malformed `--mirror` is a usage error (exit 2).
#[test]
fn bad_mirror_is_a_usage_error() {
    let (_engine, _env) = setup();
    let scratch = Scratch::new();
    let archive = scratch.out("bad-mirror.tar");
    for mirror in ["ftp://127.0.0.1:5000", "127.0.0.1:notaport", "http://"] {
        let run = scratch
            .pull(&[
                "--mirror",
                mirror,
                MIRRORED,
                "-o",
                archive.to_str().unwrap(),
            ])
            .exit_code(2);
        crate::assert_error_line(&run);
        assert!(!archive.exists(), "no archive after a usage error");
    }
}
