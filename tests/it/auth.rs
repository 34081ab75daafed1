//! Authentication: Bearer tokens (anonymous and with credentials), Basic, and the ways
//! credentials reach the binary (flags, environment, stdin, docker config). Secrets never leak.

use base64::Engine as _;

use crate::common::{Work, assert_default_archive};
use crate::support::image::{Flavor, small_image};
use axum::http::Method;

use crate::support::registry::{Auth, Config, FakeRegistry, Fault};

const USER: &str = "alice";
const PASS: &str = "s3cr3t-Pa55w0rd";

fn registry_with(auth: Auth) -> (FakeRegistry, crate::support::image::Image) {
    let registry = FakeRegistry::start(Config::with_auth(auth));
    let image = small_image(Flavor::Docker, "guarded");
    registry.push_image("private/app", "v1", &image);
    (registry, image)
}

#[track_caller]
fn assert_archive_ok(work: &Work, registry: &FakeRegistry, image: &crate::support::image::Image) {
    assert_default_archive(work, registry, image, "private/app", "v1");
}

/// Every blob and manifest request that succeeded carried this Authorization scheme.
#[track_caller]
fn assert_served_with(registry: &FakeRegistry, scheme: &str) {
    let served: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| {
            (r.path.contains("/blobs/") || r.path.contains("/manifests/")) && r.status < 300
        })
        .collect();
    assert!(
        !served.is_empty(),
        "no manifest or blob was served: {:#?}",
        registry.requests()
    );
    for r in &served {
        assert_eq!(
            r.auth_scheme.as_deref(),
            Some(scheme),
            "request {} {} authorised with",
            r.method,
            r.path
        );
    }
}

#[test]
fn bearer_anonymous_token() {
    let (registry, image) = registry_with(Auth::bearer_anonymous());
    let work = Work::new();

    work.pull(&["-q", &registry.reference("private/app", "v1")])
        .success();

    assert_archive_ok(&work, &registry, &image);
    assert!(registry.token_requests() >= 1, "no token was requested");
    assert_served_with(&registry, "Bearer");
    let token_requests: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path == "/token")
        .collect();
    for r in &token_requests {
        let query = r.query.clone().unwrap_or_default();
        assert!(
            query.contains("service=fake-registry"),
            "token request without service: {query}"
        );
        assert!(
            query.contains("scope=repository%3Aprivate%2Fapp%3Apull")
                || query.contains("scope=repository:private/app:pull"),
            "token request without the pull scope: {query}"
        );
    }
}

#[test]
fn bearer_with_username_and_password() {
    let (registry, image) = registry_with(Auth::bearer(USER, PASS));
    let work = Work::new();

    let run = work.pull(&[
        "-q",
        "-u",
        USER,
        "-p",
        PASS,
        &registry.reference("private/app", "v1"),
    ]);
    run.success();
    run.assert_not_leaked(PASS);

    assert_archive_ok(&work, &registry, &image);
    assert_served_with(&registry, "Bearer");
    let token_auth: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path == "/token" && r.status == 200)
        .map(|r| r.auth_scheme)
        .collect();
    assert!(
        !token_auth.is_empty() && token_auth.iter().all(|s| s.as_deref() == Some("Basic")),
        "the token endpoint should be called with Basic credentials: {token_auth:?}"
    );
}

#[test]
fn bearer_with_wrong_password_is_rejected() {
    let (registry, _) = registry_with(Auth::bearer(USER, PASS));
    let work = Work::new();
    let wrong = "Wr0ng-Pa55-xyz";

    let run = work.pull(&[
        "-q",
        "-u",
        USER,
        "-p",
        wrong,
        &registry.reference("private/app", "v1"),
    ]);
    run.expect_code(1);
    run.assert_not_leaked(wrong);
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("credential")
            || lower.contains("401")
            || lower.contains("unauthorized")
            || lower.contains("authentication"),
        "the message should say the credentials were rejected: {}",
        run.stderr
    );
    work.assert_no_output();
    assert_eq!(
        registry.total_blob_gets(),
        0,
        "no blob may be fetched without a token"
    );
}

#[test]
fn bearer_without_credentials_asks_for_them() {
    let (registry, _) = registry_with(Auth::bearer(USER, PASS));
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("private/app", "v1")]);
    run.expect_code(1);
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("credential")
            || lower.contains("log in")
            || lower.contains("login")
            || lower.contains("--username")
            || lower.contains("-u"),
        "the message should ask for credentials: {}",
        run.stderr
    );
}

#[test]
fn basic_with_username_and_password() {
    let (registry, image) = registry_with(Auth::basic(USER, PASS));
    let work = Work::new();

    let run = work.pull(&[
        "-q",
        "--plain-http",
        "-u",
        USER,
        "-p",
        PASS,
        &registry.reference("private/app", "v1"),
    ]);
    run.success();
    run.assert_not_leaked(PASS);

    assert_archive_ok(&work, &registry, &image);
    assert_served_with(&registry, "Basic");
}

#[test]
fn basic_with_wrong_password_is_rejected() {
    let (registry, _) = registry_with(Auth::basic(USER, PASS));
    let work = Work::new();
    let wrong = "Wr0ng-Pa55-xyz";

    let run = work.pull(&[
        "-q",
        "-u",
        USER,
        "-p",
        wrong,
        &registry.reference("private/app", "v1"),
    ]);
    run.expect_code(1);
    run.assert_not_leaked(wrong);
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("credential") || lower.contains("401") || lower.contains("unauthorized"),
        "the message should say the credentials were rejected: {}",
        run.stderr
    );
    assert!(
        lower.contains(&registry.addr()) || lower.contains("private/app"),
        "the message should name the registry or image: {}",
        run.stderr
    );
}

#[test]
fn credentials_from_environment() {
    let (registry, image) = registry_with(Auth::bearer(USER, PASS));
    let work = Work::new();
    let cache = work.cache();
    let out = work.out();

    let run = work.run_with(
        &[
            "-q",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
            &registry.reference("private/app", "v1"),
        ],
        &[
            ("DOCKER_PULL_USERNAME", USER),
            ("DOCKER_PULL_PASSWORD", PASS),
        ],
        None,
    );
    run.success();
    run.assert_not_leaked(PASS);
    assert_archive_ok(&work, &registry, &image);
}

#[test]
fn password_from_stdin() {
    let (registry, image) = registry_with(Auth::basic(USER, PASS));
    let work = Work::new();
    let cache = work.cache();
    let out = work.out();

    let run = work.run_with(
        &[
            "-q",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
            "-u",
            USER,
            "--password-stdin",
            &registry.reference("private/app", "v1"),
        ],
        &[],
        Some(&format!("{PASS}\n")),
    );
    run.success();
    run.assert_not_leaked(PASS);
    assert_archive_ok(&work, &registry, &image);
}

#[test]
fn debug_log_never_shows_secrets() {
    let (registry, image) = registry_with(Auth::bearer(USER, PASS));
    let work = Work::new();
    let log = work.path("pull.log");

    let run = work.pull(&[
        "--debug",
        "--log-file",
        log.to_str().expect("utf-8"),
        "-u",
        USER,
        "-p",
        PASS,
        &registry.reference("private/app", "v1"),
    ]);
    run.success();
    assert_archive_ok(&work, &registry, &image);

    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!log_text.is_empty(), "--log-file wrote nothing");
    for secret in [PASS, basic.as_str(), "faketoken-"] {
        run.assert_not_leaked(secret);
        assert!(
            !log_text.contains(secret),
            "the log file contains the secret {secret:?}"
        );
    }
}

#[test]
fn one_token_serves_the_whole_pull() {
    let registry = FakeRegistry::start(Config::with_auth(Auth::bearer_anonymous()));
    let image = crate::support::image::random_image(Flavor::Docker, 5, 1_000, 71);
    registry.push_image("private/app", "v1", &image);
    let work = Work::new();

    work.pull(&["-q", &registry.reference("private/app", "v1")])
        .success();

    assert!(
        registry.token_requests() <= 2,
        "{} token requests for one image: tokens should be reused",
        registry.token_requests()
    );
}

#[test]
fn token_is_renewed_when_the_registry_rejects_it() {
    let registry = FakeRegistry::start(Config::with_auth(Auth::bearer(USER, PASS)));
    let image = crate::support::image::random_image(Flavor::Docker, 2, 1_000, 72);
    registry.push_image("private/app", "v1", &image);
    let layer = &image.layers[1];
    let challenge = format!(
        "Bearer realm=\"http://{}/token\",service=\"fake-registry\",scope=\"repository:private/app:pull\",error=\"invalid_token\"",
        registry.addr()
    );
    registry.inject(
        Fault::status(&layer.digest, 401)
            .method(Method::GET)
            .header("WWW-Authenticate", &challenge),
    );
    let work = Work::new();

    let run = work.pull(&[
        "-q",
        "-u",
        USER,
        "-p",
        PASS,
        &registry.reference("private/app", "v1"),
    ]);
    run.success();
    assert!(
        registry.token_requests() >= 2,
        "the token was not renewed after a 401"
    );
    assert_eq!(
        registry.blob_gets(&layer.digest),
        2,
        "the rejected blob request should be retried once"
    );
}

#[track_caller]
fn assert_redirect_gets_no_credentials(auth: Auth) {
    let registry = FakeRegistry::start(Config::with_auth(auth));
    let image = crate::support::image::random_image(Flavor::Oci, 2, 10_000, 73);
    registry.push_image("private/app", "v1", &image);
    registry.redirect_blobs("localhost");
    let work = Work::new();

    work.pull(&[
        "-q",
        "-u",
        USER,
        "-p",
        PASS,
        &registry.reference("private/app", "v1"),
    ])
    .success();

    let cdn: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/cdn/"))
        .collect();
    assert_eq!(
        cdn.len(),
        image.blobs().len(),
        "every blob should come from the redirect target: {cdn:#?}"
    );
    for r in &cdn {
        assert_eq!(
            r.auth_scheme, None,
            "credentials sent to the redirect target {}",
            r.path
        );
    }
    assert_default_archive(&work, &registry, &image, "private/app", "v1");
}

#[test]
fn bearer_token_is_not_sent_to_a_redirected_host() {
    assert_redirect_gets_no_credentials(Auth::bearer(USER, PASS));
}

#[test]
fn basic_credentials_are_not_sent_to_a_redirected_host() {
    assert_redirect_gets_no_credentials(Auth::basic(USER, PASS));
}

// --- messages and redirects from the registry/network contract --------------------------------

#[test]
fn missing_credentials_message_says_how_to_log_in() {
    let (registry, _) = registry_with(Auth::bearer(USER, PASS));
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("private/app", "v1")]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("asks for credentials to pull private/app (401)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("-u USER --password-stdin"),
        "the message should show how to log in: {}",
        run.stderr
    );
}

#[test]
fn rejected_flag_credentials_name_their_source() {
    let (registry, _) = registry_with(Auth::bearer(USER, PASS));
    let work = Work::new();
    let wrong = "Wr0ng-Pa55-xyz";

    let run = work.pull(&[
        "-q",
        "-u",
        USER,
        "-p",
        wrong,
        &registry.reference("private/app", "v1"),
    ]);
    run.expect_code(1);
    run.assert_not_leaked(wrong);
    let wanted = format!(
        "{} rejected the credentials (from -u/-p) for private/app (401)",
        registry.addr()
    );
    assert!(
        run.stderr.contains(&wanted),
        "expected {wanted:?} in: {}",
        run.stderr
    );
}

#[test]
fn rejected_environment_credentials_name_their_source() {
    let (registry, _) = registry_with(Auth::basic(USER, PASS));
    let work = Work::new();
    let wrong = "Wr0ng-Pa55-xyz";

    let run = work.pull_env(
        &["-q", &registry.reference("private/app", "v1")],
        &[
            ("DOCKER_PULL_USERNAME", USER),
            ("DOCKER_PULL_PASSWORD", wrong),
        ],
        &[],
        None,
    );
    run.expect_code(1);
    run.assert_not_leaked(wrong);
    assert!(
        run.stderr.contains(
            "rejected the credentials (from DOCKER_PULL_USERNAME/DOCKER_PULL_PASSWORD) for private/app (401)"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn forbidden_message_names_repository_and_registry() {
    let (registry, _) = registry_with(Auth::None);
    registry.inject(Fault::status("/manifests/v1", 403).times(usize::MAX).body(
        r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
    ));
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("private/app", "v1")]);
    run.expect_code(1);
    let wanted = format!(
        "access to private/app on {} is denied (403)",
        registry.addr()
    );
    assert!(
        run.stderr.contains(&wanted),
        "expected {wanted:?} in: {}",
        run.stderr
    );
}

#[test]
fn not_found_messages_name_the_tag_or_the_repository() {
    let (registry, _) = registry_with(Auth::None);
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("private/app", "nope")]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("tag nope of repository private/app"),
        "{}",
        run.stderr
    );

    let run = work.pull(&["-q", &registry.reference("private/missing", "v1")]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("repository private/missing"),
        "{}",
        run.stderr
    );
}

#[test]
fn same_host_redirect_keeps_the_token() {
    let registry = FakeRegistry::start(Config::with_auth(Auth::bearer(USER, PASS)));
    let image = crate::support::image::random_image(Flavor::Oci, 2, 10_000, 74);
    registry.push_image("private/app", "v1", &image);
    // Same scheme, host and port as the registry: not a different origin.
    registry.redirect_blobs("127.0.0.1");
    let work = Work::new();

    work.pull_env(
        &[
            "-q",
            "-u",
            USER,
            "--password-stdin",
            &registry.reference("private/app", "v1"),
        ],
        &[],
        &[],
        Some(PASS),
    )
    .success();

    let cdn: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/cdn/"))
        .collect();
    assert_eq!(cdn.len(), image.blobs().len(), "{cdn:#?}");
    for r in &cdn {
        assert_eq!(
            r.auth_scheme.as_deref(),
            Some("Bearer"),
            "a same-host redirect should keep the Authorization header: {}",
            r.path
        );
    }
    assert_default_archive(&work, &registry, &image, "private/app", "v1");
}
