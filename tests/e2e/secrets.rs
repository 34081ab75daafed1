//! No secret in any output: pulls with every kind of secret (a Basic password given with `-p`,
//! a token-server password on stdin, an identity token from the docker config, an identity
//! token from a credential helper, HTTP and SOCKS5 proxy passwords), each with `--debug` and
//! `--log-file`; then none of those secrets, none of their `user:password` base64 forms and
//! none of the tokens the token server issued meanwhile may appear in stdout, stderr or the
//! log file.

use std::process::Command;

use base64::Engine as _;
use serde_json::json;

use crate::credentials::{install_helper, with_helper};
use crate::env::setup;
use crate::{Scratch, TokenLog};

const P_WARNING: &str = "warning: a password given with -p is visible to other users of this \
                         machine; use --password-stdin";

/// What one pull wrote: stdout, stderr and its `--log-file`.
struct Capture {
    label: &'static str,
    outputs: Vec<(&'static str, String)>,
}

/// Runs docker-pull `args` with `--debug --log-file <label>.log -o <label>.tar`, expecting
/// success and a non-empty log file.
fn capture(
    scratch: &Scratch,
    label: &'static str,
    args: &[&str],
    input: Option<&str>,
    configure: impl FnOnce(&mut Command),
) -> Capture {
    let log = scratch.out(&format!("{label}.log"));
    let archive = scratch.out(&format!("{label}.tar"));
    let mut all = vec![
        "--no-cache",
        "--debug",
        "--log-file",
        log.to_str().unwrap(),
        "-o",
        archive.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let mut cmd = scratch.command(&all);
    configure(&mut cmd);
    let run = scratch.run(cmd, input).success();
    assert!(archive.is_file(), "{label}: no archive\n{}", run.describe());
    let logged = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("{label}: reading --log-file {}: {e}", log.display()));
    assert!(
        !logged.trim().is_empty(),
        "{label}: the --debug --log-file is empty\n{}",
        run.describe()
    );
    if label == "basic-with-p" {
        assert!(
            run.stderr.contains(P_WARNING),
            "-p prints its warning\n{}",
            run.describe()
        );
    }
    Capture {
        label,
        outputs: vec![
            ("stdout", run.stdout),
            ("stderr", run.stderr),
            ("log file", logged),
        ],
    }
}

#[test]
fn no_secret_appears_in_output_or_logs() {
    let (_engine, env) = setup();
    let net = env.net();
    let scratch = Scratch::new();
    let tokens = TokenLog::start(&net.token_server);
    let tls_small = format!("{}/small", net.tls_registry);
    let private = env.token("private/small");
    let mut captures = Vec::new();

    captures.push(capture(
        &scratch,
        "basic-with-p",
        &[
            "--ca-cert",
            net.tls_ca.to_str().unwrap(),
            "-u",
            &net.basic_user,
            "-p",
            &net.basic_pass,
            &tls_small,
        ],
        None,
        |_| {},
    ));
    captures.push(capture(
        &scratch,
        "password-stdin",
        &["-u", &env.token_user, "--password-stdin", &private],
        Some(&format!("{}\n", env.token_pass)),
        |_| {},
    ));

    scratch.write_docker_config(&json!({ "auths": { env.token_registry.as_str(): {
        "identitytoken": net.token_identity } } }));
    captures.push(capture(
        &scratch,
        "config-identity-token",
        &[&private],
        None,
        |_| {},
    ));

    let bin = install_helper(
        &scratch,
        &json!({ env.token_registry.as_str(): {
            "Username": "<token>", "Secret": net.token_helper_identity } }),
    );
    scratch.write_docker_config(&json!({ "credHelpers": { env.token_registry.as_str(): "test" } }));
    captures.push(capture(
        &scratch,
        "helper-secret",
        &[&private],
        None,
        |cmd| with_helper(cmd, &bin),
    ));
    scratch.write_docker_config(&json!({}));

    let http_proxy = format!(
        "http://{}:{}@{}",
        net.http_proxy_user, net.http_proxy_pass, net.http_proxy
    );
    captures.push(capture(
        &scratch,
        "http-proxy",
        &["--proxy", &http_proxy, &env.token("small")],
        None,
        |cmd| {
            cmd.env_remove("NO_PROXY").env_remove("no_proxy");
        },
    ));
    let socks_proxy = format!(
        "socks5h://{}:{}@{}",
        net.socks_user, net.socks_pass, net.socks_proxy
    );
    captures.push(capture(
        &scratch,
        "socks-proxy",
        &["--proxy", &socks_proxy, &env.plain("small")],
        None,
        |cmd| {
            cmd.env_remove("NO_PROXY").env_remove("no_proxy");
        },
    ));

    let b64 = |user: &str, password: &str| {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!("{user}:{password}"))
    };
    let mut secrets: Vec<(String, String)> = vec![
        ("Basic password".into(), net.basic_pass.clone()),
        ("token user's password".into(), env.token_pass.clone()),
        ("config identity token".into(), net.token_identity.clone()),
        (
            "helper identity token".into(),
            net.token_helper_identity.clone(),
        ),
        ("HTTP proxy password".into(), net.http_proxy_pass.clone()),
        ("SOCKS5 proxy password".into(), net.socks_pass.clone()),
        (
            "base64 Basic user:password".into(),
            b64(&net.basic_user, &net.basic_pass),
        ),
        (
            "base64 token user:password".into(),
            b64(&env.token_user, &env.token_pass),
        ),
        (
            "base64 proxy user:password".into(),
            b64(&net.http_proxy_user, &net.http_proxy_pass),
        ),
        (
            "base64 user:identity token".into(),
            b64(&env.token_user, &net.token_identity),
        ),
        (
            "base64 <token>:identity token".into(),
            b64("<token>", &net.token_helper_identity),
        ),
    ];
    let issued = tokens.issued();
    assert!(
        issued.iter().filter(|t| t["kind"] == "access").count() >= 4,
        "the pulls above get tokens from the token server (password, identity token twice, \
         anonymous through the proxy); it issued: {issued:?}"
    );
    for (i, token) in issued.iter().enumerate() {
        let value = token["token"].as_str().expect("issued tokens are strings");
        let kind = token["kind"].as_str().unwrap_or("?");
        secrets.push((format!("issued {kind} token #{i}"), value.to_string()));
        if let Some(signature) = value.rsplit('.').next().filter(|_| value.contains('.')) {
            secrets.push((
                format!("signature of issued {kind} token #{i}"),
                signature.into(),
            ));
        }
    }

    let mut leaks = Vec::new();
    for capture in &captures {
        for (stream, text) in &capture.outputs {
            for (name, secret) in &secrets {
                if text.contains(secret.as_str()) {
                    leaks.push(format!(
                        "{name} in the {stream} of the {} pull",
                        capture.label
                    ));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets appeared in docker-pull's output:\n  {}",
        leaks.join("\n  ")
    );
}
