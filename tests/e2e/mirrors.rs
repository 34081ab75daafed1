//! Docker Hub mirrors: the plain registry has the `small` fixture as `library/<MIRRORED>` (and
//! under `mirror-prefix/`), so `docker.io/library/<MIRRORED>` pulls from it when it is given as
//! a mirror. Mirrors that are down, lack the image or want credentials are skipped with a
//! warning. None of these tests reaches the real Docker Hub: a working mirror always comes
//! before it.

use serde_json::json;

use crate::env::{Env, GHCR_REPO, MIRROR_PREFIX, MIRRORED, QUAY_REPO, setup};
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

// --- other registries' mirrors, registries.conf, daemon.json ------------------------------------

/// `--json -o <archive> --retries 1 <args>` with `vars` set.
fn pull_with(
    scratch: &Scratch,
    archive: &std::path::Path,
    args: &[&str],
    vars: &[(&str, &str)],
) -> Run {
    let mut all = vec!["--json", "--retries", "1", "-o", archive.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut cmd = scratch.command(&all);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    scratch.run(cmd, None)
}

/// Writes `text` into the scratch directory as `name`; returns the path as text.
fn write(scratch: &Scratch, name: &str, text: &str) -> String {
    let path = scratch.out(name);
    std::fs::write(&path, text).expect("writing a settings file");
    path.to_str().unwrap().to_string()
}

/// A docker config with the Basic user for `hosts` (the TLS registry wants credentials).
fn basic_auth_config(scratch: &Scratch, net: &crate::env::Network, hosts: &[&str]) {
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", net.basic_user, net.basic_pass))
    };
    let auths: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .map(|h| (h.to_string(), json!({ "auth": auth })))
        .collect();
    scratch.write_docker_config(&json!({ "auths": auths }));
}

/// `ghcr.io` does not resolve on the test machines: a mirror for it serves the image, after a
/// dead one, and the engine runs it under its ghcr.io name.
#[test]
fn a_ghcr_io_mirror_serves_after_a_dead_one() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("ghcr.tar");
    let down = format!("ghcr.io=127.0.0.1:{}", closed_port());
    let live = format!("ghcr.io=http://{}", env.registry);
    let reference = format!("ghcr.io/{GHCR_REPO}:latest");
    let run = pull_with(
        &scratch,
        &archive,
        &["--mirror", &down, "--mirror", &live, &reference],
        &[],
    )
    .success();
    assert_served_by(env, &run, &env.registry);
    assert_mirror_warning(&run, down.trim_start_matches("ghcr.io="));
    assert_loads_and_runs(&archive, &reference);
}

/// Prefix style, as public mirrors of quay.io work: `quay.io/<repo>` is requested as
/// `/v2/quay.io/<repo>/...` on the mirror.
#[test]
fn a_prefix_style_quay_io_mirror() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("quay.tar");
    let mirror = format!("quay.io={}/quay.io", env.registry);
    let reference = format!("quay.io/{QUAY_REPO}:latest");
    let run = pull_with(&scratch, &archive, &["--mirror", &mirror, &reference], &[]).success();
    assert_served_by(env, &run, &format!("{}/quay.io", env.registry));
    assert_loads_and_runs(&archive, &reference);
}

/// A registries.conf as podman users write it: ghcr.io's mirrors are a dead one and the HTTPS
/// registry marked `insecure` (its CA is given nowhere). docker-pull and skopeo, reading the
/// same file, both get the image from the mirror; without `insecure` the TLS check fails.
#[test]
fn registries_conf_mirrors_insecure_and_skopeo_agrees() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    basic_auth_config(&scratch, net, &[&net.tls_registry]);
    let dead = format!("127.0.0.1:{}", closed_port());
    let conf_text = |insecure: bool| {
        format!(
            "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nprefix = \"ghcr.io\"\nlocation = \"ghcr.io\"\n\n[[registry.mirror]]\nlocation = \"{dead}\"\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = {insecure}\n",
            net.tls_registry
        )
    };
    let conf = write(&scratch, "registries.conf", &conf_text(true));
    let reference = format!("ghcr.io/{GHCR_REPO}:latest");
    let archive = scratch.out("conf.tar");
    let vars = [("CONTAINERS_REGISTRIES_CONF", conf.as_str())];
    let run = pull_with(&scratch, &archive, &["--debug", &reference], &vars).success();
    assert_served_by(env, &run, &net.tls_registry);
    assert!(
        run.stderr.contains(&conf),
        "--debug names the file each mirror came from\n{}",
        run.describe()
    );
    assert_loads_and_runs(&archive, &reference);

    let authfile = scratch.out("skopeo-auth.json");
    std::fs::copy(scratch.docker_config_dir().join("config.json"), &authfile).unwrap();
    let mut skopeo = std::process::Command::new("skopeo");
    skopeo
        .args(["--debug", "--registries-conf", &conf, "inspect", "--raw"])
        .args(["--authfile", authfile.to_str().unwrap()])
        .arg(format!("docker://{reference}"));
    let raw = crate::run::run_command(skopeo, None, std::time::Duration::from_secs(120)).success();
    assert!(
        raw.stdout.contains("layers"),
        "skopeo reads the same file\n{}",
        raw.describe()
    );

    let strict = write(&scratch, "strict.conf", &conf_text(false));
    let run = pull_with(
        &scratch,
        &scratch.out("strict.tar"),
        &[&reference],
        &[("CONTAINERS_REGISTRIES_CONF", strict.as_str())],
    )
    .exit_code(1);
    assert!(
        run.stderr.contains("TLS verification")
            && run.stderr.contains("the mirrors tried first failed too"),
        "without insecure the mirror fails its TLS check, and the error names each source\n{}",
        run.describe()
    );
}

/// `blocked = true` refuses the pull, naming the file; skopeo refuses it too.
#[test]
fn registries_conf_blocked() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let conf = write(
        &scratch,
        "blocked.conf",
        &format!(
            "[[registry]]\nprefix = \"{}/small\"\nblocked = true\n",
            env.registry
        ),
    );
    let vars = [("CONTAINERS_REGISTRIES_CONF", conf.as_str())];
    let archive = scratch.out("blocked.tar");
    let reference = format!("{}/small:latest", env.registry);
    let run = pull_with(&scratch, &archive, &[&reference], &vars).exit_code(1);
    crate::assert_error_line(&run);
    assert!(
        run.stderr.contains("blocked") && run.stderr.contains(&conf),
        "{}",
        run.describe()
    );
    assert!(!archive.exists());
    let mut skopeo = std::process::Command::new("skopeo");
    skopeo
        .args([
            "--debug",
            "--registries-conf",
            &conf,
            "inspect",
            "--tls-verify=false",
        ])
        .args(["--raw", &format!("docker://{reference}")]);
    let refused = crate::run::run_command(skopeo, None, std::time::Duration::from_secs(120));
    assert_ne!(
        refused.code(),
        Some(0),
        "skopeo honours the same entry\n{}",
        refused.describe()
    );
    // Another repository of that registry is not blocked.
    let other = format!("{}/small-oci:latest", env.registry);
    pull_with(&scratch, &scratch.out("other.tar"), &[&other], &vars).success();
}

/// daemon.json: `registry-mirrors` serve Docker Hub (a dead one first), and
/// `insecure-registries` (by name, then by range) let the HTTPS registry be used without its CA.
#[test]
fn daemon_json_mirrors_and_insecure_registries() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let dead = format!("127.0.0.1:{}", closed_port());
    let json = write(
        &scratch,
        "daemon.json",
        &format!(
            "{{\n  \"registry-mirrors\": [\"http://{dead}\", \"http://{}\"],\n  \"insecure-registries\": [\"{}\"]\n}}\n",
            env.registry, net.tls_registry
        ),
    );
    let vars = [("DOCKER_PULL_DAEMON_JSON", json.as_str())];
    let archive = scratch.out("daemon.tar");
    let hub = format!("docker.io/library/{MIRRORED}:latest");
    let run = pull_with(&scratch, &archive, &[&hub], &vars).success();
    assert_served_by(env, &run, &env.registry);
    assert_mirror_warning(&run, &dead);
    assert_loads_and_runs(&archive, &loaded_name());

    basic_auth_config(&scratch, net, &[&net.tls_registry]);
    let tls = format!("{}/small:latest", net.tls_registry);
    let ranges = write(
        &scratch,
        "ranges.json",
        "{\"insecure-registries\": [\"127.0.0.0/8\"]}",
    );
    for file in [&json, &ranges] {
        let vars = [("DOCKER_PULL_DAEMON_JSON", file.as_str())];
        let out = scratch.out("insecure.tar");
        let run = pull_with(&scratch, &out, &[&tls], &vars).success();
        assert_served_by(env, &run, &net.tls_registry);
    }
    let run = pull_with(&scratch, &scratch.out("verified.tar"), &[&tls], &[]).exit_code(1);
    assert!(
        run.stderr.contains("TLS verification"),
        "{}",
        run.describe()
    );
}
