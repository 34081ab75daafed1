//! Credentials from files and helpers, against the token registry's private repository
//! (`private/small`: anonymous pull denied) and the Basic-auth TLS registry: Docker's
//! `credHelpers` and `credsStore` (tests/e2e/credential_helper.py installed as
//! `docker-credential-test`), `auths` with `auth` and with `identitytoken` (the token server's
//! OAuth2 refresh-token grant), `$REGISTRY_AUTH_FILE`, and rejected credentials.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::env::{Env, setup};
use crate::run::Run;
use crate::{Scratch, TokenLog, assert_error_line, assert_loads_and_runs, get_json};

const PRIVATE: &str = "private/small";

fn basic_auth(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Installs the test credential helper as `<scratch>/bin/docker-credential-test` with `store`
/// (server address -> `{"Username", "Secret"}` or `{"fail"}`); returns the directory.
pub fn install_helper(scratch: &Scratch, store: &Value) -> PathBuf {
    let bin = scratch.out("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-test");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/credential_helper.py");
    std::fs::copy(&source, &helper)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", source.display(), helper.display()));
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(bin.join("store.json"), serde_json::to_vec(store).unwrap()).unwrap();
    bin
}

/// Puts `bin` first on the command's PATH.
pub fn with_helper(cmd: &mut Command, bin: &Path) {
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", bin.display()));
}

/// The server addresses the helper in `bin` was asked for (`get` calls), in order.
fn helper_asked(bin: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(bin.join("calls.log")).unwrap_or_default();
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("helper log lines are JSON"))
        .filter(|c| c["action"] == "get")
        .map(|c| c["server"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Counters of the main token server.
fn token_stats(env: &Env) -> Value {
    get_json(&env.net().token_server, "/_stats")
}

fn stat(stats: &Value, path: &[&str]) -> u64 {
    let mut v = stats;
    for key in path {
        match v.get(key) {
            Some(next) => v = next,
            None => return 0,
        }
    }
    v.as_u64().unwrap_or(0)
}

/// Pulls the private repository of the token registry into `archive`, `configure` adjusting
/// the command (no credentials on the command line).
fn pull_private(
    scratch: &Scratch,
    env: &Env,
    archive: &Path,
    configure: impl FnOnce(&mut Command),
) -> Run {
    let reference = env.token(PRIVATE);
    let mut cmd = scratch.command(&["--no-cache", &reference, "-o", archive.to_str().unwrap()]);
    configure(&mut cmd);
    scratch.run(cmd, None)
}

fn private_name(env: &Env) -> String {
    format!("{}:latest", env.token(PRIVATE))
}

/// Asserts the pull succeeded with the token user's password (a token server `basic` grant).
#[track_caller]
fn assert_password_used(env: &Env, before: &Value, run: Run) -> Run {
    let run = run.success();
    let after = token_stats(env);
    assert!(
        stat(&after, &["grants", "basic"]) > stat(before, &["grants", "basic"]),
        "the token server saw no request with the user's password: {after}\n{}",
        run.describe()
    );
    run
}

/// Asserts the pull succeeded with an identity token (a `refresh_token` grant), and the token
/// server issued a refresh token again.
#[track_caller]
fn assert_identity_token_used(env: &Env, before: &Value, tokens: &TokenLog, run: Run) -> Run {
    let run = run.success();
    let after = token_stats(env);
    assert!(
        stat(&after, &["grants", "refresh_token"]) > stat(before, &["grants", "refresh_token"]),
        "the token server saw no refresh_token grant: {after}\n{}",
        run.describe()
    );
    let issued = tokens.issued();
    assert!(
        issued
            .iter()
            .any(|t| t["kind"] == "access" && t["user"] == env.token_user.as_str()),
        "no access token for {} was issued: {issued:?}",
        env.token_user
    );
    run
}

/// `credHelpers: {"HOST:PORT": "test"}`: the helper is asked for exactly `HOST:PORT` and its
/// username/password pull the private repository.
#[test]
fn cred_helpers_entry_supplies_the_password() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let bin = install_helper(
        &scratch,
        &json!({ env.token_registry.as_str(): {
            "Username": env.token_user, "Secret": env.token_pass } }),
    );
    scratch.write_docker_config(&json!({ "credHelpers": { env.token_registry.as_str(): "test" } }));
    let before = token_stats(env);
    let archive = scratch.out("cred-helpers.tar");
    let run = pull_private(&scratch, env, &archive, |cmd| with_helper(cmd, &bin));
    let run = assert_password_used(env, &before, run);
    let asked = helper_asked(&bin);
    assert!(
        !asked.is_empty() && asked.iter().all(|s| s == &env.token_registry),
        "the helper should be asked for {:?} (as the reference names it), was asked {asked:?}\n{}",
        env.token_registry,
        run.describe()
    );
    assert_loads_and_runs(&archive, &private_name(env));
}

/// `credsStore: "test"` whose answer is `<token>` + an identity token: docker-pull exchanges it
/// with the OAuth2 refresh-token grant.
#[test]
fn creds_store_supplies_an_identity_token() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let bin = install_helper(
        &scratch,
        &json!({ env.token_registry.as_str(): {
            "Username": "<token>", "Secret": net.token_helper_identity } }),
    );
    scratch.write_docker_config(&json!({ "credsStore": "test" }));
    let before = token_stats(env);
    let tokens = TokenLog::start(&net.token_server);
    let archive = scratch.out("creds-store.tar");
    let run = pull_private(&scratch, env, &archive, |cmd| with_helper(cmd, &bin));
    let run = assert_identity_token_used(env, &before, &tokens, run);
    let asked = helper_asked(&bin);
    assert!(
        asked.contains(&env.token_registry),
        "the credsStore helper should be asked for {:?}, was asked {asked:?}\n{}",
        env.token_registry,
        run.describe()
    );
    assert_loads_and_runs(&archive, &private_name(env));
}

/// A helper that breaks (exit 2, not "credentials not found") gives a `warning:` and the pull
/// goes on without credentials: a public repository still pulls.
#[test]
fn broken_helper_warns_and_pulls_anonymously() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let bin = install_helper(
        &scratch,
        &json!({ env.token_registry.as_str(): { "fail": "keychain is locked" } }),
    );
    scratch.write_docker_config(&json!({ "credHelpers": { env.token_registry.as_str(): "test" } }));
    let reference = env.token("small");
    let archive = scratch.out("broken-helper.tar");
    let mut cmd = scratch.command(&[&reference, "-o", archive.to_str().unwrap()]);
    with_helper(&mut cmd, &bin);
    let run = scratch.run(cmd, None).success();
    assert!(
        run.stderr.lines().any(|l| l.starts_with("warning:")),
        "a failing credential helper gives a warning\n{}",
        run.describe()
    );
    assert_eq!(helper_asked(&bin), vec![env.token_registry.clone()]);
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
}

/// `auths` entries with base64 `auth`, under `HOST:PORT` and under `https://HOST:PORT/v1/`.
#[test]
fn auths_with_base64_auth_in_two_key_forms() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let auth = basic_auth(&env.token_user, &env.token_pass);
    let keys = [
        env.token_registry.clone(),
        format!("https://{}/v1/", env.token_registry),
    ];
    let mut last = None;
    for (i, key) in keys.iter().enumerate() {
        scratch.write_docker_config(&json!({ "auths": { key.as_str(): { "auth": auth } } }));
        let before = token_stats(env);
        let archive = scratch.out(&format!("auths-{i}.tar"));
        let run = pull_private(&scratch, env, &archive, |_| {});
        assert_password_used(env, &before, run);
        last = Some(archive);
    }
    assert_loads_and_runs(&last.unwrap(), &private_name(env));
}

/// `auths` with an `identitytoken`: the refresh-token grant, answered with a new refresh token.
#[test]
fn auths_identity_token_uses_the_refresh_token_grant() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    scratch.write_docker_config(&json!({ "auths": { env.token_registry.as_str(): {
        "identitytoken": net.token_identity } } }));
    let before = token_stats(env);
    let tokens = TokenLog::start(&net.token_server);
    let archive = scratch.out("identity-token.tar");
    let run = pull_private(&scratch, env, &archive, |_| {});
    assert_identity_token_used(env, &before, &tokens, run);
    assert_loads_and_runs(&archive, &private_name(env));
}

/// `$REGISTRY_AUTH_FILE` (containers auth.json) with an empty docker config.
#[test]
fn registry_auth_file_supplies_credentials() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let auth_file = scratch.out("auth.json");
    std::fs::write(
        &auth_file,
        serde_json::to_vec(&json!({ "auths": { env.token_registry.as_str(): {
            "auth": basic_auth(&env.token_user, &env.token_pass) } } }))
        .unwrap(),
    )
    .unwrap();
    let before = token_stats(env);
    let archive = scratch.out("auth-file.tar");
    let run = pull_private(&scratch, env, &archive, |cmd| {
        cmd.env("REGISTRY_AUTH_FILE", &auth_file);
    });
    assert_password_used(env, &before, run);
    assert_loads_and_runs(&archive, &private_name(env));
}

/// A Basic-auth registry (TLS) with `username`/`password` from the docker config.
#[test]
fn basic_registry_with_config_credentials() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    scratch.write_docker_config(&json!({ "auths": { net.tls_registry.as_str(): {
        "username": net.basic_user, "password": net.basic_pass } } }));
    let reference = format!("{}/small", net.tls_registry);
    let archive = scratch.out("basic-config.tar");
    let run = scratch
        .pull(&[
            "--ca-cert",
            net.tls_ca.to_str().unwrap(),
            &reference,
            "-o",
            archive.to_str().unwrap(),
        ])
        .success();
    assert!(archive.is_file(), "{}", run.describe());
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
}

/// Wrong credentials from the docker config: exit 1, the message says they were rejected and
/// where they came from, and never shows them. For the token registry and the Basic one.
#[test]
fn wrong_config_credentials_are_rejected() {
    let (_engine, env) = setup();
    let net = env.net();
    let scratch = Scratch::new();
    let wrong = "wrong-config-secret-456";
    let config = scratch.write_docker_config(&json!({ "auths": {
        env.token_registry.as_str(): { "auth": basic_auth(&env.token_user, wrong) },
        net.tls_registry.as_str(): { "auth": basic_auth(&net.basic_user, wrong) },
    } }));
    let tls_reference = format!("{}/small", net.tls_registry);
    let token_reference = env.token(PRIVATE);
    let ca = net.tls_ca.to_str().unwrap();
    let cases: [(&str, &str, Vec<&str>); 2] = [
        (
            &env.token_registry,
            &env.token_user,
            vec![token_reference.as_str()],
        ),
        (
            &net.tls_registry,
            &net.basic_user,
            vec!["--ca-cert", ca, tls_reference.as_str()],
        ),
    ];
    for (registry, user, args) in cases {
        let archive = scratch.out("rejected.tar");
        let mut all = vec!["--no-cache", "-o", archive.to_str().unwrap()];
        all.extend(args);
        let run = scratch.pull(&all).exit_code(1);
        assert_error_line(&run);
        let want = format!("rejected the credentials (from {})", config.display());
        assert!(
            run.stderr.contains(&want) && run.stderr.contains(registry),
            "the error should name {registry} and say {want:?}\n{}",
            run.describe()
        );
        let encoded = basic_auth(user, wrong);
        for secret in [wrong, encoded.as_str()] {
            assert!(
                !run.stderr.contains(secret) && !run.stdout.contains(secret),
                "the rejected credentials must not be printed ({secret})\n{}",
                run.describe()
            );
        }
        assert!(!archive.exists(), "no archive after a failed pull");
    }
}
