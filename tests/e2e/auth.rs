//! Pulls from the registry behind Bearer token auth (tests/e2e/tokenserver.py): anonymous pull
//! of a public repository, `-u/-p` for a private one, rejected credentials.

use serde_json::Value;

use crate::env::{Env, setup};
use crate::run::run_command;
use crate::{Scratch, assert_loaded, assert_runs, docker_load, field, inspect};

/// The token server's request counters (`GET /_stats`), when its address is known.
fn token_stats(env: &Env) -> Option<Value> {
    let server = env.token_server.as_ref()?;
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sf", "--noproxy", "*", &format!("http://{server}/_stats")]);
    let run = run_command(cmd, None, std::time::Duration::from_secs(20)).success();
    Some(serde_json::from_str(&run.stdout).expect("token server stats are JSON"))
}

fn count(stats: &Option<Value>, path: &[&str]) -> u64 {
    let mut v = match stats {
        Some(v) => v,
        None => return 0,
    };
    for key in path {
        v = match v.get(key) {
            Some(next) => next,
            None => return 0,
        };
    }
    v.as_u64().unwrap_or(0)
}

#[test]
fn token_registry_anonymous_pull_loads_and_runs() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("token-anon.tar");
    let reference = env.token("small");
    let before = token_stats(env);

    let (run, objects) = scratch.pull_json(&[&reference, "-o", archive.to_str().unwrap()], 1);
    assert_eq!(
        field(&objects[0], "digest"),
        env.fixtures.small.manifest.digest,
        "{}",
        run.describe()
    );
    let after = token_stats(env);
    if env.token_server.is_some() {
        assert!(
            count(&after, &["anonymous"]) > count(&before, &["anonymous"]),
            "docker-pull got no anonymous token from the token server: {after:?}"
        );
    }

    let name = format!("{reference}:latest");
    assert_loaded(&docker_load(&archive), &name);
    assert_runs(&name);
}

#[test]
fn token_registry_private_repository_needs_credentials() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let reference = env.token("private/small");

    // Anonymous: the token carries no access, the registry says 401.
    let archive = scratch.out("private-anon.tar");
    let run = scratch
        .pull(&[&reference, "-o", archive.to_str().unwrap()])
        .exit_code(1);
    assert!(
        run.stderr.lines().any(|l| l.starts_with("error:")),
        "an `error:` line on stderr\n{}",
        run.describe()
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    assert!(!archive.exists(), "no archive after a failed pull");

    // With -u/-p: pulls, loads, runs.
    let archive = scratch.out("private-user.tar");
    let before = token_stats(env);
    let (run, objects) = scratch.pull_json(
        &[
            &reference,
            "-u",
            &env.token_user,
            "-p",
            &env.token_pass,
            "-o",
            archive.to_str().unwrap(),
        ],
        1,
    );
    assert_eq!(
        field(&objects[0], "image_id"),
        env.fixtures.small.config.digest,
        "{}",
        run.describe()
    );
    assert!(
        !run.stdout.contains(&env.token_pass) && !run.stderr.contains(&env.token_pass),
        "the password must never be printed\n{}",
        run.describe()
    );
    let after = token_stats(env);
    if env.token_server.is_some() {
        assert!(
            count(&after, &["authenticated", &env.token_user])
                > count(&before, &["authenticated", &env.token_user]),
            "docker-pull did not present the credentials to the token server: {after:?}"
        );
    }
    let name = format!("{reference}:latest");
    assert_loaded(&docker_load(&archive), &name);
    assert_eq!(inspect(&name, "{{.Id}}"), env.fixtures.small.config.digest);
    assert_runs(&name);
}

#[test]
fn token_registry_password_from_stdin_and_env() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let reference = env.token("private/small");

    let archive = scratch.out("stdin.tar");
    let mut cmd = crate::run::docker_pull_command(
        [
            "--json",
            "--cache-dir",
            scratch.cache().to_str().unwrap(),
            &reference,
            "-u",
            &env.token_user,
            "--password-stdin",
            "-o",
            archive.to_str().unwrap(),
        ],
        scratch.path(),
    );
    cmd.current_dir(scratch.path());
    let input = format!("{}\n", env.token_pass);
    let run = run_command(
        cmd,
        Some(input.as_bytes()),
        std::time::Duration::from_secs(120),
    )
    .success();
    assert!(archive.is_file(), "{}", run.describe());

    let archive = scratch.out("env.tar");
    let mut cmd = crate::run::docker_pull_command(
        ["--no-cache", &reference, "-o", archive.to_str().unwrap()],
        scratch.path(),
    );
    cmd.env("DOCKER_PULL_USERNAME", &env.token_user)
        .env("DOCKER_PULL_PASSWORD", &env.token_pass);
    let run = run_command(cmd, None, std::time::Duration::from_secs(120)).success();
    assert!(
        !run.stdout.contains(&env.token_pass) && !run.stderr.contains(&env.token_pass),
        "the password must never be printed\n{}",
        run.describe()
    );
    let name = format!("{reference}:latest");
    assert_loaded(&docker_load(&archive), &name);
    assert_runs(&name);
}

#[test]
fn token_registry_rejects_a_wrong_password() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let archive = scratch.out("wrong.tar");
    let wrong = "definitely-not-the-password";
    let run = scratch
        .pull(&[
            &env.token("private/small"),
            "-u",
            &env.token_user,
            "-p",
            wrong,
            "-o",
            archive.to_str().unwrap(),
        ])
        .exit_code(1);
    assert!(
        run.stderr.lines().any(|l| l.starts_with("error:")),
        "an `error:` line on stderr\n{}",
        run.describe()
    );
    assert!(
        !run.stderr.contains(wrong) && !run.stdout.contains(wrong),
        "the password must never be printed\n{}",
        run.describe()
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    assert!(!archive.exists(), "no archive after a failed pull");
}
