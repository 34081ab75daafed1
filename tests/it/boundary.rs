//! The registry boundary against a hostile server: challenges from another origin are not
//! answered, token requests do not carry secrets to another origin, and bodies that drip are
//! abandoned under the same retry policy as blobs.

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;

use crate::common::Work;
use crate::support::image::{Flavor, random_image};
use crate::support::registry::{Auth, Config, FakeRegistry, Fault};

const USER: &str = "boundary-user";
const PASS: &str = "boundary-pass-5c1e";
const IDENTITY: &str = "idt-boundary-refresh-77";

#[test]
fn a_storage_host_challenge_is_not_answered_with_the_registry_credentials() {
    let registry = FakeRegistry::start(Config::with_auth(Auth::basic(USER, PASS)));
    let image = random_image(Flavor::Oci, 1, 10_000, 91);
    registry.push_image("private/app", "v1", &image);
    registry.redirect_blobs("localhost");
    // Whoever the storage host names as its token server must hear nothing from us.
    let elsewhere = FakeRegistry::anonymous();
    let layer = &image.layers[0];
    registry.inject(
        Fault::status(&format!("/cdn/private/app/{}", layer.digest), 401)
            .times(usize::MAX)
            .header(
                "WWW-Authenticate",
                &format!(
                    "Bearer realm=\"http://{}/token\",service=\"storage\"",
                    elsewhere.addr()
                ),
            ),
    );
    let work = Work::new().with_timeout(Duration::from_secs(60));

    let run = work.pull(&[
        "-q",
        "--retries",
        "2",
        "-u",
        USER,
        "-p",
        PASS,
        &registry.reference("private/app", "v1"),
    ]);
    run.expect_code(1);
    run.assert_no_panic();
    assert!(
        elsewhere.requests().is_empty(),
        "the storage host's realm was contacted: {:#?}",
        elsewhere.requests()
    );
    assert!(
        run.stderr.contains("redirected") && run.stderr.contains(&layer.digest),
        "the message should say the redirected blob was refused: {}",
        run.stderr
    );
    run.assert_not_leaked(PASS);
}

#[test]
fn a_token_request_redirected_to_another_origin_keeps_its_refresh_token() {
    let registry =
        FakeRegistry::start(Config::with_auth(Auth::bearer(USER, PASS)).refresh_token(IDENTITY));
    let image = random_image(Flavor::Oci, 1, 5_000, 92);
    registry.push_image("team/app", "v1", &image);
    let elsewhere = FakeRegistry::anonymous();
    registry.inject(
        Fault::status("/token", 307)
            .method(Method::POST)
            .times(usize::MAX)
            .header("Location", &format!("http://{}/token", elsewhere.addr())),
    );
    let work = Work::new().with_timeout(Duration::from_secs(60));
    work.write_json(
        &work.docker_config(),
        &json!({ "auths": { registry.addr(): { "username": USER, "identitytoken": IDENTITY } } }),
    );

    let run = work.pull(&["-q", &registry.reference("team/app", "v1")]);
    run.expect_code(1);
    run.assert_no_panic();
    assert!(
        elsewhere.requests().is_empty(),
        "the refresh token followed the redirect: {:#?}",
        elsewhere.requests()
    );
    assert!(
        run.stderr.contains("another host"),
        "the message should say why the token request stopped: {}",
        run.stderr
    );
    run.assert_not_leaked(IDENTITY);
}

#[test]
fn a_manifest_that_drips_is_abandoned_within_the_retry_budget() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 2, 1_000, 93);
    registry.push_image("drip", "v1", &image);
    // Five bytes a second: never silent long enough for a read timeout, far below 1 KiB per
    // two seconds.
    registry.drip_manifests(Some(Duration::from_millis(200)));
    let work = Work::new().with_timeout(Duration::from_secs(90));

    let started = Instant::now();
    let run = work.pull(&[
        "-q",
        "--timeout",
        "2",
        "--retries",
        "1",
        &registry.reference("drip", "v1"),
    ]);
    let took = started.elapsed();
    run.expect_code(1);
    assert!(
        run.stderr.contains("slower than"),
        "the message should say the manifest arrived too slowly: {}",
        run.stderr
    );
    // One attempt of a two-second window, with generous slack for a loaded machine; a client
    // without the guard reads the whole manifest at five bytes a second (minutes).
    assert!(took < Duration::from_secs(30), "took {took:?}");
    work.assert_no_output();
}
