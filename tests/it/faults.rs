//! Registry faults: transient errors are retried, rate limits are honoured, corrupted blobs are
//! rejected and never cached.

use std::time::{Duration, Instant};

use axum::http::Method;

use crate::common::{Work, assert_default_archive, cache_blobs};
use crate::support::image::{Flavor, random_image};
use crate::support::registry::{FakeRegistry, Fault};

#[test]
fn transient_blob_errors_are_retried() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 2, 30_000, 41);
    registry.push_image("flaky", "v1", &image);
    let layer = &image.layers[1];
    registry.inject(
        Fault::status(&layer.digest, 500)
            .method(Method::GET)
            .times(2),
    );
    let work = Work::new();

    work.pull(&["-q", "--retries", "5", &registry.reference("flaky", "v1")])
        .success();

    assert_eq!(
        registry.blob_gets(&layer.digest),
        3,
        "two failures then one success"
    );
    assert_default_archive(&work, &registry, &image, "flaky", "v1");
}

#[test]
fn persistent_errors_give_up_after_retries() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 1_000, 42);
    registry.push_image("broken", "v1", &image);
    let layer = &image.layers[0];
    registry.inject(
        Fault::status(&layer.digest, 503)
            .method(Method::GET)
            .times(usize::MAX),
    );
    let work = Work::new();

    let run = work.pull(&["-q", "--retries", "2", &registry.reference("broken", "v1")]);
    run.expect_code(1);
    assert_eq!(
        registry.blob_gets(&layer.digest),
        2,
        "--retries 2 means two attempts"
    );
    work.assert_no_output();
}

#[test]
fn rate_limit_waits_for_retry_after() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 1_000, 43);
    registry.push_image("limited", "v1", &image);
    registry.inject(
        Fault::status("/manifests/v1", 429)
            .header("Retry-After", "2")
            .body(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#),
    );
    let work = Work::new();

    let started = Instant::now();
    work.pull(&["-q", &registry.reference("limited", "v1")])
        .success();
    let elapsed = started.elapsed();

    assert!(
        elapsed.as_secs_f64() >= 1.8,
        "Retry-After: 2 was not honoured (took {elapsed:?})"
    );
    let statuses: Vec<u16> = registry
        .manifest_requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/manifests/v1"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses.first(), Some(&429), "statuses: {statuses:?}");
    assert!(statuses.contains(&200), "no successful retry: {statuses:?}");
}

#[test]
fn corrupted_blob_is_rejected_and_not_cached() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 2, 20_000, 44);
    registry.push_image("corrupt", "v1", &image);
    let bad = &image.layers[0];
    let mut data = bad.data.clone();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    registry.corrupt_blob(&bad.digest, data);
    let work = Work::new();

    let run = work.pull(&["-q", "--retries", "2", &registry.reference("corrupt", "v1")]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&bad.digest),
        "the message should name the damaged blob {}: {}",
        bad.digest,
        run.stderr
    );
    work.assert_no_output();
    assert!(
        !cache_blobs(&work.cache()).iter().any(|b| b == bad.hex()),
        "the corrupted blob was committed to the cache"
    );
}

#[test]
fn truncated_blob_is_rejected() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 20_000, 45);
    registry.push_image("short", "v1", &image);
    let layer = &image.layers[0];
    registry.corrupt_blob(&layer.digest, layer.data[..layer.data.len() - 100].to_vec());
    let work = Work::new().with_timeout(Duration::from_secs(30));

    let run = work.pull(&["-q", "--retries", "2", &registry.reference("short", "v1")]);
    let gets: Vec<String> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&layer.digest))
        .map(|r| format!("{} {:?} -> {}", r.method, r.range, r.status))
        .collect();
    assert!(
        gets.len() <= 10,
        "{} requests for the short blob in {}; first: {:?}",
        gets.len(),
        if run.timed_out {
            "30 s (killed)"
        } else {
            "one run"
        },
        &gets[..10]
    );
    run.expect_code(1);
    work.assert_no_output();
}

#[test]
fn stalled_blob_is_abandoned_and_resumed() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 300_000, 46);
    let layer = &image.layers[0];
    registry.push_image("stall", "v1", &image);
    registry.stall_blob(&layer.digest, 150_000, 1);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    work.pull(&["-q", "--timeout", "2", &registry.reference("stall", "v1")])
        .success();

    let gets: Vec<Option<String>> = registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&layer.digest))
        .map(|r| r.range)
        .collect();
    assert!(
        gets.len() >= 2,
        "the stalled response was not abandoned and retried: {gets:?}"
    );
    let resumed = gets[1..].iter().flatten().any(|range| {
        range
            .strip_prefix("bytes=")
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    assert!(
        resumed,
        "the retry did not resume from the bytes already received: {gets:?}"
    );
    assert!(
        registry.blob_bytes_sent() < image.blob_bytes() + 150_000,
        "resuming should not download the first half again ({} bytes sent)",
        registry.blob_bytes_sent()
    );
    assert_default_archive(&work, &registry, &image, "stall", "v1");
}

#[test]
fn forbidden_says_access_is_denied() {
    let registry = FakeRegistry::anonymous();
    registry.push_image("secret", "v1", &random_image(Flavor::Oci, 1, 100, 47));
    registry.inject(Fault::status("/manifests/v1", 403).times(usize::MAX).body(
        r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
    ));
    let work = Work::new();

    let run = work.pull(&["-q", "--retries", "2", &registry.reference("secret", "v1")]);
    run.expect_code(1);
    assert!(
        run.stderr.to_lowercase().contains("denied"),
        "a 403 should say access is denied: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("secret"),
        "the message should name the image: {}",
        run.stderr
    );
}

#[test]
fn rate_limit_exhausted_says_so() {
    let registry = FakeRegistry::anonymous();
    registry.push_image("busy", "v1", &random_image(Flavor::Oci, 1, 100, 48));
    registry.inject(
        Fault::status("/manifests/v1", 429)
            .times(usize::MAX)
            .header("Retry-After", "1")
            .body(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#),
    );
    let work = Work::new().with_timeout(Duration::from_secs(60));

    let run = work.pull(&["-q", "--retries", "2", &registry.reference("busy", "v1")]);
    run.expect_code(1);
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("rate"),
        "a 429 should say the registry is rate-limiting: {}",
        run.stderr
    );
    let attempts = registry
        .manifest_requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(attempts, 2, "--retries 2 means two attempts");
}

#[test]
fn oversized_blob_is_rejected() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 20_000, 49);
    registry.push_image("long", "v1", &image);
    let layer = &image.layers[0];
    let mut data = layer.data.clone();
    data.extend_from_slice(&[0u8; 100]);
    registry.corrupt_blob(&layer.digest, data);
    let work = Work::new().with_timeout(Duration::from_secs(30));

    let run = work.pull(&["-q", "--retries", "2", &registry.reference("long", "v1")]);
    let gets = registry
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(&layer.digest))
        .count();
    assert!(gets <= 10, "{gets} requests for the oversized blob");
    run.expect_code(1);
    work.assert_no_output();
    assert!(
        !cache_blobs(&work.cache()).iter().any(|b| b == layer.hex()),
        "the oversized blob was committed to the cache"
    );
}

#[test]
fn resume_against_a_server_without_ranges_starts_over() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 300_000, 50);
    let layer = &image.layers[0];
    registry.push_image("norange", "v1", &image);
    registry.stall_blob(&layer.digest, 100_000, 1);
    registry.ignore_ranges(true);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    work.pull(&["-q", "--timeout", "2", &registry.reference("norange", "v1")])
        .success();

    assert!(
        registry.blob_gets(&layer.digest) >= 2,
        "the stalled response was not retried"
    );
    assert_default_archive(&work, &registry, &image, "norange", "v1");
    assert!(
        cache_blobs(&work.cache()).iter().any(|b| b == layer.hex()),
        "the layer should be cached after a successful restart"
    );
}
