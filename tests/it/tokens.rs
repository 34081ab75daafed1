//! The Bearer token lifecycle: one token per scope for a whole pull, renewal before expiry
//! (`expires_in`, its 60 s default, `issued_at`), renewal after a `401` in the middle of a pull,
//! the scope a `401` challenge asks for, and claims that must not break the client (an
//! `expires_in` past the end of the clock, an `issued_at` after multibyte white space).
//!
//! Slow pulls use throttled blobs and `-j 1` so that requests are spread over a few seconds; the
//! fake registry's `token_validity` makes it reject tokens that are really too old, so "renewed
//! before expiry" shows as "no request was ever rejected".

use std::time::Duration;

use axum::http::Method;

use crate::common::{Run, Work, assert_default_archive};
use crate::support::image::{Flavor, Image, random_image};
use crate::support::registry::{
    Auth, Config, FakeRegistry, Fault, IssuedAt, Request, SERVICE, Throttle,
};

const REPO: &str = "private/app";
const PULL_SCOPE: &str = "repository:private/app:pull";

/// A registry serving a `layers`-layer image, every layer taking about 0.8 s to send.
fn slow_registry(config: Config, layers: usize, seed: u64) -> (FakeRegistry, Image) {
    let registry = FakeRegistry::start(config);
    let image = random_image(Flavor::Docker, layers, 8_000, seed);
    registry.push_image(REPO, "v1", &image);
    registry.throttle_blobs(Some(Throttle {
        chunk: 2 * 1024,
        delay: Duration::from_millis(200),
    }));
    (registry, image)
}

/// Pulls `private/app:v1` one blob at a time.
fn pull_one_by_one(work: &Work, registry: &FakeRegistry) -> Run {
    work.pull(&["-q", "-j", "1", &registry.reference(REPO, "v1")])
}

/// Tokens issued for the pull scope.
fn pull_tokens(registry: &FakeRegistry) -> usize {
    registry
        .token_log()
        .iter()
        .filter(|r| r.ok() && r.has_scope(PULL_SCOPE))
        .count()
}

/// Registry requests that carried a Bearer token and were turned away with 401.
fn rejected_tokens(registry: &FakeRegistry) -> Vec<Request> {
    registry
        .requests()
        .into_iter()
        .filter(|r| r.status == 401 && r.auth_scheme.as_deref() == Some("Bearer"))
        .collect()
}

#[track_caller]
fn assert_pulled(run: &Run, work: &Work, registry: &FakeRegistry, image: &Image) {
    run.success();
    assert_default_archive(work, registry, image, REPO, "v1");
}

#[test]
fn one_token_per_scope_for_a_whole_pull() {
    let registry = FakeRegistry::start(Config::with_auth(Auth::bearer_anonymous()));
    let image = random_image(Flavor::Docker, 6, 2_000, 81);
    registry.push_image(REPO, "v1", &image);
    let work = Work::new();

    let run = work.pull(&["-q", "-j", "3", &registry.reference(REPO, "v1")]);
    assert_pulled(&run, &work, &registry, &image);
    assert_eq!(
        pull_tokens(&registry),
        1,
        "the token should be cached for the scope: {:#?}",
        registry.token_log()
    );
    assert!(rejected_tokens(&registry).is_empty());
}

#[test]
fn short_expires_in_is_renewed_before_it_runs_out() {
    let (registry, image) = slow_registry(
        Config::with_auth(Auth::bearer_anonymous())
            .expires_in(Some(2))
            .token_validity(Duration::from_secs(2)),
        4,
        82,
    );
    let work = Work::new();

    let run = pull_one_by_one(&work, &registry);
    assert_pulled(&run, &work, &registry, &image);
    assert!(
        pull_tokens(&registry) >= 2,
        "a 2 s token was used for a pull of several seconds: {:#?}",
        registry.token_log()
    );
    let rejected = rejected_tokens(&registry);
    assert!(
        rejected.is_empty(),
        "a token was sent after it expired instead of being renewed before: {rejected:#?}"
    );
}

#[test]
fn a_token_without_expires_in_is_reused() {
    let (registry, image) = slow_registry(
        Config::with_auth(Auth::bearer_anonymous())
            .expires_in(None)
            .issued_at(IssuedAt::Absent),
        3,
        83,
    );
    let work = Work::new();

    let run = pull_one_by_one(&work, &registry);
    assert_pulled(&run, &work, &registry, &image);
    assert_eq!(
        pull_tokens(&registry),
        1,
        "without expires_in a token lasts 60 s; it was renewed during a pull of seconds: {:#?}",
        registry.token_log()
    );
}

#[test]
fn missing_expires_in_means_sixty_seconds() {
    // Issued 57 s ago with the default lifetime of 60 s: 3 s are left, so the token must be
    // renewed during a pull of several seconds, before the registry stops accepting it.
    let (registry, image) = slow_registry(
        Config::with_auth(Auth::bearer_anonymous())
            .expires_in(None)
            .issued_at(IssuedAt::Ago(Duration::from_secs(57)))
            .token_validity(Duration::from_secs(3)),
        4,
        84,
    );
    let work = Work::new();

    let run = pull_one_by_one(&work, &registry);
    assert_pulled(&run, &work, &registry, &image);
    assert!(pull_tokens(&registry) >= 2, "{:#?}", registry.token_log());
    let rejected = rejected_tokens(&registry);
    assert!(
        rejected.is_empty(),
        "a token was used after its 60 s default lifetime (counted from issued_at): {rejected:#?}"
    );
}

#[test]
fn issued_at_in_the_past_shortens_the_lifetime() {
    // expires_in 60 but issued 57 s ago: 3 s are left.
    let (registry, image) = slow_registry(
        Config::with_auth(Auth::bearer_anonymous())
            .expires_in(Some(60))
            .issued_at(IssuedAt::Ago(Duration::from_secs(57)))
            .token_validity(Duration::from_secs(3)),
        4,
        85,
    );
    let work = Work::new();

    let run = pull_one_by_one(&work, &registry);
    assert_pulled(&run, &work, &registry, &image);
    assert!(pull_tokens(&registry) >= 2, "{:#?}", registry.token_log());
    let rejected = rejected_tokens(&registry);
    assert!(
        rejected.is_empty(),
        "issued_at was ignored: a stale token was sent: {rejected:#?}"
    );
}

#[test]
fn a_token_rejected_mid_pull_is_renewed() {
    // The registry claims 300 s but really accepts a token for 1 s only.
    let (registry, image) = slow_registry(
        Config::with_auth(Auth::bearer_anonymous())
            .expires_in(Some(300))
            .token_validity(Duration::from_secs(1)),
        4,
        86,
    );
    let work = Work::new();

    let run = pull_one_by_one(&work, &registry);
    assert_pulled(&run, &work, &registry, &image);
    let rejected = rejected_tokens(&registry);
    assert!(
        !rejected.is_empty(),
        "the test setup should make the registry reject an old token: {:#?}",
        registry.requests()
    );
    assert!(pull_tokens(&registry) >= 2, "{:#?}", registry.token_log());
    let requests = registry.requests();
    for r in &rejected {
        assert!(
            requests.iter().any(|later| later.path == r.path
                && later.method == r.method
                && later.status < 300),
            "{} {} was rejected and never retried with a new token",
            r.method,
            r.path
        );
    }
}

#[test]
fn the_scope_of_a_401_challenge_is_requested_too() {
    let registry = FakeRegistry::start(Config::with_auth(Auth::bearer_anonymous()));
    let image = random_image(Flavor::Docker, 2, 1_000, 87);
    registry.push_image(REPO, "v1", &image);
    let layer = &image.layers[1];
    let extra = "repository:shared/base:pull";
    let challenge = format!(
        "Bearer realm=\"http://{}/token\",service=\"{SERVICE}\",scope=\"{extra}\",error=\"insufficient_scope\"",
        registry.addr()
    );
    registry.inject(
        Fault::status(&layer.digest, 401)
            .method(Method::GET)
            .header("WWW-Authenticate", &challenge),
    );
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference(REPO, "v1")]);
    assert_pulled(&run, &work, &registry, &image);
    let log = registry.token_log();
    assert!(
        log.iter()
            .any(|r| r.ok() && r.has_scope(extra) && r.has_scope(PULL_SCOPE)),
        "after the 401 a token for {extra} together with {PULL_SCOPE} should be asked for: {log:#?}"
    );
    assert_eq!(
        registry.blob_gets(&layer.digest),
        2,
        "the rejected blob request should be retried once"
    );
}

#[test]
fn an_expires_in_of_u64_max_is_clamped() {
    // 18446744073709551615 seconds would overflow the clock; the token is trusted for a day at
    // most, and the pull goes on with it.
    let registry = FakeRegistry::start(
        Config::with_auth(Auth::bearer_anonymous())
            .expires_in(Some(u64::MAX))
            .issued_at(IssuedAt::Absent),
    );
    let image = random_image(Flavor::Docker, 2, 1_000, 88);
    registry.push_image(REPO, "v1", &image);
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference(REPO, "v1")]);
    run.assert_no_panic();
    assert_pulled(&run, &work, &registry, &image);
    assert_eq!(pull_tokens(&registry), 1, "{:#?}", registry.token_log());
}

#[test]
fn issued_at_after_wide_spaces_is_read() {
    // Seven ideographic spaces (3 bytes each) before a timestamp with fractional seconds: the
    // digits must be read from the trimmed text. Issued 57 s ago with 60 s to live, so the token
    // must be renewed during the pull.
    let (registry, image) = slow_registry(
        Config::with_auth(Auth::bearer_anonymous())
            .expires_in(Some(60))
            .issued_at(IssuedAt::AgoPadded {
                ago: Duration::from_secs(57),
                prefix: "\u{3000}".repeat(7),
            })
            .token_validity(Duration::from_secs(3)),
        4,
        89,
    );
    let work = Work::new();

    let run = pull_one_by_one(&work, &registry);
    run.assert_no_panic();
    assert_pulled(&run, &work, &registry, &image);
    assert!(pull_tokens(&registry) >= 2, "{:#?}", registry.token_log());
    let rejected = rejected_tokens(&registry);
    assert!(
        rejected.is_empty(),
        "issued_at after white space was ignored: a stale token was sent: {rejected:#?}"
    );
}
