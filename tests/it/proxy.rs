//! Proxies: `--proxy` (HTTP, with credentials, SOCKS5 with and without remote name resolution
//! and credentials), the `*_PROXY` environment variables, `NO_PROXY`, and failures. The
//! in-process proxies record where every connection went, which proves the traffic passed
//! through them (or did not).
//!
//! Most pulls use `--plain-http` so the loopback registry is reached with plain HTTP requests
//! (absolute-form through an HTTP proxy) instead of first trying HTTPS.

use crate::common::{
    Archive, Expected, Run, Work, assert_default_archive, assert_docker_archive, closed_port,
};
use crate::support::image::{Flavor, Image, small_image};
use crate::support::proxy::{AddressType, HttpProxy, SocksProxy};
use crate::support::registry::FakeRegistry;

const REPO: &str = "team/app";
const TAG: &str = "v1";
const PROXY_USER: &str = "pxuser";
const PROXY_PASS: &str = "Pr0xy-Pa55-q7";

fn registry() -> (FakeRegistry, Image) {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Docker, "through a proxy");
    registry.push_image(REPO, TAG, &image);
    (registry, image)
}

/// `-q --retries 1 <args> <registry>/team/app:v1` into the output directory, with `env`.
fn pull(work: &Work, registry: &FakeRegistry, args: &[&str], env: &[(&str, &str)]) -> Run {
    let reference = registry.reference(REPO, TAG);
    let mut all = vec!["-q", "--retries", "1"];
    all.extend_from_slice(args);
    all.push(&reference);
    work.pull_env(&all, env, &[], None)
}

/// The pull worked and every request the registry saw came through `proxy`, as plain HTTP
/// requests for the registry's address.
#[track_caller]
fn assert_all_through(
    run: &Run,
    work: &Work,
    registry: &FakeRegistry,
    image: &Image,
    proxy: &HttpProxy,
) {
    run.success();
    assert_default_archive(work, registry, image, REPO, TAG);
    let proxied: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method != "CONNECT")
        .collect();
    assert!(!proxied.is_empty(), "nothing went through the proxy");
    for r in &proxied {
        assert_eq!(r.target, registry.addr(), "proxied request {r:?}");
    }
    assert_eq!(
        proxied.len(),
        registry.requests().len(),
        "some registry requests bypassed the proxy: proxy saw {proxied:#?}, registry saw {:#?}",
        registry.requests()
    );
    for blob in image.blobs() {
        assert!(
            proxied.iter().any(|r| r.uri.ends_with(&blob.digest)),
            "blob {} was not fetched through the proxy",
            blob.digest
        );
    }
}

#[test]
fn proxy_flag_sends_registry_traffic_through_an_http_proxy() {
    let (registry, image) = registry();
    let proxy = HttpProxy::start();
    let work = Work::new();

    let run = pull(
        &work,
        &registry,
        &["--plain-http", "--proxy", &proxy.url()],
        &[],
    );
    assert_all_through(&run, &work, &registry, &image, &proxy);
}

#[test]
fn proxy_credentials_from_the_url() {
    let (registry, image) = registry();
    let proxy = HttpProxy::with_auth(PROXY_USER, PROXY_PASS);
    let work = Work::new();

    let run = pull(
        &work,
        &registry,
        &[
            "--plain-http",
            "--proxy",
            &proxy.url_with(PROXY_USER, PROXY_PASS),
        ],
        &[],
    );
    assert_all_through(&run, &work, &registry, &image, &proxy);
    assert!(
        proxy.requests().iter().all(|r| r.authorized),
        "{:#?}",
        proxy.requests()
    );
    run.assert_not_leaked(PROXY_PASS);
}

#[test]
fn a_wrong_proxy_password_fails_without_showing_it() {
    let (registry, _) = registry();
    let proxy = HttpProxy::with_auth(PROXY_USER, PROXY_PASS);
    let work = Work::new();
    let wrong = "Wr0ng-Pr0xy-k2";

    let run = pull(
        &work,
        &registry,
        &[
            "--plain-http",
            "--proxy",
            &proxy.url_with(PROXY_USER, wrong),
        ],
        &[],
    );
    run.expect_code(1);
    run.assert_not_leaked(wrong);
    assert!(
        run.stderr.contains(&proxy.addr()),
        "the message should name the proxy {}: {}",
        proxy.addr(),
        run.stderr
    );
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.sent_credentials && !r.authorized),
        "{:#?}",
        proxy.requests()
    );
    assert!(
        registry.requests().is_empty(),
        "the proxy let nothing through"
    );
    work.assert_no_output();
}

#[test]
fn a_proxy_that_is_down_fails_the_pull() {
    let (registry, _) = registry();
    let down = format!("127.0.0.1:{}", closed_port());
    let work = Work::new();

    let run = pull(
        &work,
        &registry,
        &["--plain-http", "--proxy", &format!("http://{down}")],
        &[],
    );
    run.expect_code(1);
    assert!(
        run.stderr.contains(&down),
        "the message should name the proxy {down}: {}",
        run.stderr
    );
    assert!(
        registry.requests().is_empty(),
        "the registry was reached directly"
    );
}

/// `var=<proxy url>` in the environment (NO_PROXY is not set) routes the pull through it.
#[track_caller]
fn assert_env_proxy_used(var: &str) {
    let (registry, image) = registry();
    let proxy = HttpProxy::start();
    let work = Work::new();

    let run = pull(&work, &registry, &["--plain-http"], &[(var, &proxy.url())]);
    assert_all_through(&run, &work, &registry, &image, &proxy);
}

#[test]
fn http_proxy_variable() {
    assert_env_proxy_used("HTTP_PROXY");
}

#[test]
fn lowercase_http_proxy_variable() {
    assert_env_proxy_used("http_proxy");
}

#[test]
fn all_proxy_variable() {
    assert_env_proxy_used("ALL_PROXY");
}

#[test]
fn https_proxy_variable_is_for_https_requests() {
    // Without --plain-http the loopback registry is tried with HTTPS first (through the proxy,
    // as a CONNECT tunnel), then with plain HTTP (direct: HTTP_PROXY is not set).
    let (registry, image) = registry();
    let proxy = HttpProxy::start();
    let work = Work::new();

    let run = pull(&work, &registry, &[], &[("HTTPS_PROXY", &proxy.url())]);
    run.success();
    assert_default_archive(&work, &registry, &image, REPO, TAG);
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "CONNECT" && r.target == registry.addr()),
        "the HTTPS attempt did not go through HTTPS_PROXY: {requests:#?}"
    );
    assert!(
        requests.iter().all(|r| r.method == "CONNECT"),
        "plain HTTP went through HTTPS_PROXY: {requests:#?}"
    );
}

#[test]
fn no_proxy_excludes_a_host_from_the_environment_proxy() {
    let (registry, image) = registry();
    let proxy = HttpProxy::start();
    let work = Work::new();

    let run = pull(
        &work,
        &registry,
        &["--plain-http"],
        &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", "127.0.0.1")],
    );
    run.success();
    assert_default_archive(&work, &registry, &image, REPO, TAG);
    assert_eq!(proxy.connections(), 0, "{:#?}", proxy.requests());
}

#[test]
fn no_proxy_excludes_a_host_from_the_proxy_flag() {
    let (registry, image) = registry();
    let proxy = HttpProxy::start();
    let work = Work::new();

    let run = pull(
        &work,
        &registry,
        &["--plain-http", "--proxy", &proxy.url()],
        &[("no_proxy", "example.com,127.0.0.1")],
    );
    run.success();
    assert_default_archive(&work, &registry, &image, REPO, TAG);
    assert_eq!(proxy.connections(), 0, "{:#?}", proxy.requests());
}

#[test]
fn socks5_proxy() {
    let (registry, image) = registry();
    let proxy = SocksProxy::start();
    let work = Work::new();

    let run = pull(
        &work,
        &registry,
        &["--plain-http", "--proxy", &proxy.url("socks5")],
        &[],
    );
    run.success();
    assert_default_archive(&work, &registry, &image, REPO, TAG);
    let connects = proxy.connects();
    assert!(!connects.is_empty(), "nothing went through the SOCKS proxy");
    for c in &connects {
        assert_eq!(c.target, registry.addr(), "{c:?}");
        assert_eq!(
            c.address_type,
            AddressType::Ipv4,
            "socks5:// resolves names locally: {c:?}"
        );
        assert_eq!(c.user, None);
    }
    assert!(!registry.requests().is_empty());
}

#[test]
fn socks5h_proxy_resolves_the_name() {
    let (registry, image) = registry();
    let proxy = SocksProxy::start();
    let work = Work::new();
    let out = work.path("app.tar");
    let cache = work.cache();
    let reference = format!("localhost:{}/{REPO}:{TAG}", registry.port());

    let run = work.run(&[
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
        "-q",
        "--retries",
        "1",
        "--plain-http",
        "--proxy",
        &proxy.url("socks5h"),
        &reference,
    ]);
    run.success();
    assert_docker_archive(
        &Archive::open(&out),
        &[Expected::tagged(
            &image,
            &format!("localhost:{}", registry.port()),
            REPO,
            TAG,
        )],
    );
    let connects = proxy.connects();
    assert!(!connects.is_empty(), "nothing went through the SOCKS proxy");
    for c in &connects {
        assert_eq!(c.target, format!("localhost:{}", registry.port()), "{c:?}");
        assert_eq!(
            c.address_type,
            AddressType::Domain,
            "socks5h:// leaves name resolution to the proxy: {c:?}"
        );
    }
}

#[test]
fn socks5_proxy_with_credentials() {
    let (registry, image) = registry();
    let proxy = SocksProxy::with_auth(PROXY_USER, PROXY_PASS);
    let work = Work::new();

    let run = pull(
        &work,
        &registry,
        &[
            "--plain-http",
            "--proxy",
            &proxy.url_with("socks5", PROXY_USER, PROXY_PASS),
        ],
        &[],
    );
    run.success();
    run.assert_not_leaked(PROXY_PASS);
    assert_default_archive(&work, &registry, &image, REPO, TAG);
    let connects = proxy.connects();
    assert!(!connects.is_empty());
    for c in &connects {
        assert_eq!(c.user.as_deref(), Some(PROXY_USER), "{c:?}");
        assert_eq!(c.target, registry.addr());
    }
    assert_eq!(proxy.auth_failures(), 0);
}

#[test]
fn socks5_wrong_password_fails_without_showing_it() {
    let (registry, _) = registry();
    let proxy = SocksProxy::with_auth(PROXY_USER, PROXY_PASS);
    let work = Work::new();
    let wrong = "Wr0ng-S0cks-m4";

    let run = pull(
        &work,
        &registry,
        &[
            "--plain-http",
            "--proxy",
            &proxy.url_with("socks5", PROXY_USER, wrong),
        ],
        &[],
    );
    run.expect_code(1);
    run.assert_not_leaked(wrong);
    assert!(
        run.stderr.contains(&proxy.addr()),
        "the message should name the proxy {}: {}",
        proxy.addr(),
        run.stderr
    );
    assert!(proxy.auth_failures() >= 1);
    assert!(proxy.connects().is_empty());
    assert!(registry.requests().is_empty());
}

#[test]
fn an_invalid_proxy_url_is_a_usage_error() {
    let (registry, _) = registry();
    let work = Work::new();
    for bad in [
        "ftp://127.0.0.1:3128",
        "http://[::1:3128",
        "http://127.0.0.1:notaport",
    ] {
        let run = pull(&work, &registry, &["--proxy", bad], &[]);
        run.expect_code(2);
        assert!(
            run.stderr.to_lowercase().contains("proxy"),
            "the usage error for {bad:?} should mention the proxy: {}",
            run.stderr
        );
    }
    assert!(registry.requests().is_empty());
}

#[test]
fn an_empty_upper_case_variable_does_not_hide_the_lower_case_one() {
    // What messages said and where connections went used to differ here: the messages
    // skipped the empty HTTP_PROXY, the HTTP client stopped at it and went direct.
    let (registry, image) = registry();
    let proxy = HttpProxy::start();
    let work = Work::new();

    let run = pull(
        &work,
        &registry,
        &["--plain-http"],
        &[("HTTP_PROXY", ""), ("http_proxy", &proxy.url())],
    );
    assert_all_through(&run, &work, &registry, &image, &proxy);
}

#[test]
fn the_proxy_flag_beats_the_environment() {
    let (registry, image) = registry();
    let flag = HttpProxy::start();
    let env = HttpProxy::start();
    let work = Work::new();

    let run = pull(
        &work,
        &registry,
        &["--plain-http", "--proxy", &flag.url()],
        &[("HTTP_PROXY", &env.url()), ("ALL_PROXY", &env.url())],
    );
    assert_all_through(&run, &work, &registry, &image, &flag);
    assert_eq!(env.connections(), 0, "{:#?}", env.requests());
}

#[test]
fn an_unusable_proxy_variable_is_ignored_with_a_warning() {
    // Desktop proxy settings export values such as `socks://host:port/`, which the HTTP client
    // cannot use: the pull goes direct, and says so instead of naming the proxy in messages.
    let (registry, image) = registry();
    let work = Work::new();
    let reference = registry.reference(REPO, TAG);
    let unusable = format!(
        "socks://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{}/",
        closed_port()
    );

    let run = work.pull_env(
        &["--retries", "1", "--plain-http", &reference],
        &[("all_proxy", &unusable)],
        &[],
        None,
    );
    run.success();
    run.assert_not_leaked(PROXY_PASS);
    assert_default_archive(&work, &registry, &image, REPO, TAG);
    assert!(
        run.stderr.contains("warning: all_proxy is ignored"),
        "the unusable all_proxy should be reported: {}",
        run.stderr
    );
}
