//! Pulls through tinyproxy (HTTP proxy, Basic proxy auth) and microsocks (SOCKS5 with
//! username/password), both on loopback. Their logs prove they carried the traffic: tinyproxy
//! logs every request (`GET http://HOST:PORT/...`, `CONNECT HOST:PORT`), microsocks every
//! connection (`connected to HOST:PORT`).
//!
//! run.rs gives every docker-pull `NO_PROXY=127.0.0.1,...`; these tests remove it (loopback is
//! not exempt by itself), except where they show that it exempts.

use std::process::Command;

use crate::env::{Network, setup};
use crate::run::Run;
use crate::{LogMark, Scratch, assert_error_line, assert_loads_and_runs, closed_port};

fn clear_no_proxy(cmd: &mut Command) {
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
}

fn http_proxy_url(net: &Network) -> String {
    format!(
        "http://{}:{}@{}",
        net.http_proxy_user, net.http_proxy_pass, net.http_proxy
    )
}

fn socks_url(net: &Network, scheme: &str) -> String {
    format!(
        "{scheme}://{}:{}@{}",
        net.socks_user, net.socks_pass, net.socks_proxy
    )
}

/// Neither proxy password appears in the run's output.
#[track_caller]
fn assert_no_proxy_password(net: &Network, run: &Run) {
    for secret in [&net.http_proxy_pass, &net.socks_pass] {
        assert!(
            !run.stdout.contains(secret.as_str()) && !run.stderr.contains(secret.as_str()),
            "a proxy password was printed\n{}",
            run.describe()
        );
    }
}

#[track_caller]
fn assert_log_mentions(log: &str, what: &str, needle: &str) {
    assert!(
        log.contains(needle),
        "the {what} log should show {needle:?}; it gained:\n{log}"
    );
}

/// `--proxy http://user:pass@tinyproxy` for a token-auth pull: the registry and the token
/// server are both reached through the proxy.
#[test]
fn http_proxy_option_carries_registry_and_token_server_traffic() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("proxied.tar");
    let reference = env.token("small");
    let mark = LogMark::new(&net.http_proxy_log);
    let mut cmd = scratch.command(&[
        "--proxy",
        &http_proxy_url(net),
        &reference,
        "-o",
        archive.to_str().unwrap(),
    ]);
    clear_no_proxy(&mut cmd);
    let run = scratch.run(cmd, None).success();
    let log = mark.added();
    assert_log_mentions(&log, "tinyproxy", &env.token_registry);
    assert_log_mentions(&log, "tinyproxy", &net.token_server);
    assert_no_proxy_password(net, &run);
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
}

/// `HTTP_PROXY`/`HTTPS_PROXY` from the environment carry the pull; with `NO_PROXY` naming the
/// registry the proxy sees nothing of it.
#[test]
fn proxy_environment_variables_and_no_proxy() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let reference = env.plain("small");
    let proxy = http_proxy_url(net);

    let archive = scratch.out("env-proxy.tar");
    let mark = LogMark::new(&net.http_proxy_log);
    let mut cmd = scratch.command(&[&reference, "-o", archive.to_str().unwrap()]);
    clear_no_proxy(&mut cmd);
    cmd.env("HTTP_PROXY", &proxy).env("HTTPS_PROXY", &proxy);
    let run = scratch.run(cmd, None).success();
    assert_log_mentions(&mark.added(), "tinyproxy", &env.registry);
    assert_no_proxy_password(net, &run);
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));

    env.reset_engine();
    let archive = scratch.out("no-proxy.tar");
    let mark = LogMark::new(&net.http_proxy_log);
    let mut cmd = scratch.command(&["--no-cache", &reference, "-o", archive.to_str().unwrap()]);
    cmd.env("HTTP_PROXY", &proxy)
        .env("HTTPS_PROXY", &proxy)
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1");
    let run = scratch.run(cmd, None).success();
    let log = mark.added();
    assert!(
        !log.contains(&env.registry),
        "NO_PROXY=127.0.0.1 should keep the pull of {reference} away from the proxy; its log \
         gained:\n{log}\n{}",
        run.describe()
    );
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
}

/// `--proxy socks5://user:pass@microsocks`: docker-pull resolves the name, the proxy connects.
#[test]
fn socks5_proxy_with_credentials() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("socks5.tar");
    let reference = env.plain("small-oci");
    let mark = LogMark::new(&net.socks_log);
    let mut cmd = scratch.command(&[
        "--proxy",
        &socks_url(net, "socks5"),
        &reference,
        "-o",
        archive.to_str().unwrap(),
    ]);
    clear_no_proxy(&mut cmd);
    let run = scratch.run(cmd, None).success();
    assert_log_mentions(
        &mark.added(),
        "microsocks",
        &format!("connected to {}", env.registry),
    );
    assert_no_proxy_password(net, &run);
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
}

/// `--proxy socks5h://...` with `localhost:PORT/...`: the proxy resolves the name (its log
/// shows `localhost`), and the image loads under that name.
#[test]
fn socks5h_proxy_resolves_the_registry_name() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("socks5h.tar");
    let port = env
        .registry
        .rsplit(':')
        .next()
        .expect("E2E_REGISTRY is HOST:PORT");
    let reference = format!("localhost:{port}/small");
    let mark = LogMark::new(&net.socks_log);
    let mut cmd = scratch.command(&[
        "--proxy",
        &socks_url(net, "socks5h"),
        &reference,
        "-o",
        archive.to_str().unwrap(),
    ]);
    clear_no_proxy(&mut cmd);
    let run = scratch.run(cmd, None).success();
    assert_log_mentions(
        &mark.added(),
        "microsocks",
        &format!("connected to localhost:{port}"),
    );
    assert_no_proxy_password(net, &run);
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
}

/// The TLS registry through the HTTP proxy: a CONNECT tunnel, TLS verified with `--ca-cert`.
#[test]
fn tls_registry_through_the_http_proxy() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("connect.tar");
    let reference = format!("{}/small", net.tls_registry);
    let mark = LogMark::new(&net.http_proxy_log);
    let mut cmd = scratch.command(&[
        "--proxy",
        &http_proxy_url(net),
        "--ca-cert",
        net.tls_ca.to_str().unwrap(),
        "-u",
        &net.basic_user,
        "--password-stdin",
        &reference,
        "-o",
        archive.to_str().unwrap(),
    ]);
    clear_no_proxy(&mut cmd);
    let run = scratch
        .run(cmd, Some(&format!("{}\n", net.basic_pass)))
        .success();
    assert_log_mentions(
        &mark.added(),
        "tinyproxy",
        &format!("CONNECT {}", net.tls_registry),
    );
    assert_no_proxy_password(net, &run);
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
}

/// A proxy that is down, one that wants credentials it did not get (407), and a SOCKS5 proxy
/// refusing the password: each is a failed pull (exit 1) whose message names the proxy and
/// never the password.
#[test]
fn proxy_failures_name_the_proxy() {
    let (_engine, env) = setup();
    let net = env.net();
    let scratch = Scratch::new();
    let reference = env.plain("small");
    let dead = format!("127.0.0.1:{}", closed_port());
    let wrong = "wrong-proxy-secret-123";
    let cases = [
        (format!("http://{dead}"), dead.clone()),
        (format!("http://{}", net.http_proxy), net.http_proxy.clone()),
        (
            format!("socks5://{}:{wrong}@{}", net.socks_user, net.socks_proxy),
            net.socks_proxy.clone(),
        ),
    ];
    for (proxy, named) in &cases {
        let archive = scratch.out("refused.tar");
        let mut cmd = scratch.command(&[
            "--retries",
            "1",
            "--proxy",
            proxy,
            &reference,
            "-o",
            archive.to_str().unwrap(),
        ]);
        clear_no_proxy(&mut cmd);
        let run = scratch.run(cmd, None).exit_code(1);
        assert_error_line(&run);
        assert!(
            run.stderr.contains(named.as_str()),
            "the error should name the proxy {named}\n{}",
            run.describe()
        );
        assert!(
            !run.stderr.contains(wrong) && !run.stdout.contains(wrong),
            "the proxy password must not be printed\n{}",
            run.describe()
        );
        assert!(!archive.exists(), "no archive after a failed pull");
    }
}

/// An invalid proxy URL is a usage error (exit 2), before anything is pulled.
#[test]
fn invalid_proxy_url_is_a_usage_error() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let archive = scratch.out("bad-proxy.tar");
    for proxy in ["ftp://127.0.0.1:21", "http://[::1", "not a url"] {
        let run = scratch
            .pull(&[
                "--proxy",
                proxy,
                &env.plain("small"),
                "-o",
                archive.to_str().unwrap(),
            ])
            .exit_code(2);
        assert_error_line(&run);
        assert!(!archive.exists(), "no archive after a usage error");
    }
}
