//! Registry faults: transient errors are retried, rate limits are honoured, corrupted blobs are
//! rejected and never cached.

use std::time::{Duration, Instant};

use axum::http::Method;

use crate::common::{
    Work, assert_cache_sound, assert_default_archive, cache_blobs, default_name, ingest_partials,
    range_start,
};
use crate::support::image::{Flavor, random_image};
use crate::support::registry::{BodyFault, FakeRegistry, Fault};

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

// --- Retries -------------------------------------------------------------------------------------

#[test]
fn server_errors_500_502_503_are_retried_then_succeed() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 3, 20_000, 60);
    registry.push_image("flaky5xx", "v1", &image);
    for (layer, status) in image.layers.iter().zip([500, 502, 503]) {
        registry.inject(Fault::status(&layer.digest, status).method(Method::GET));
    }
    let work = Work::new().with_timeout(Duration::from_secs(60));

    work.pull(&[
        "-q",
        "-j",
        "3",
        "--retries",
        "3",
        &registry.reference("flaky5xx", "v1"),
    ])
    .success();

    for (layer, status) in image.layers.iter().zip([500, 502, 503]) {
        let statuses: Vec<u16> = registry
            .blob_requests(&layer.digest)
            .iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [status, 200], "requests for {}", layer.digest);
    }
    assert_default_archive(&work, &registry, &image, "flaky5xx", "v1");
    assert_cache_sound(&work.cache());
}

/// A blob answered `status` with `Retry-After: 3` once: the retry waits about 3 s (the backoff
/// alone would be 1 s) and then succeeds.
fn blob_retry_after_is_honoured(status: u16, seed: u64) {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 10_000, seed);
    registry.push_image("later", "v1", &image);
    let layer = &image.layers[0];
    registry.inject(
        Fault::status(&layer.digest, status)
            .method(Method::GET)
            .header("Retry-After", "3")
            .body(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#),
    );
    let work = Work::new().with_timeout(Duration::from_secs(60));

    let started = Instant::now();
    work.pull(&["-q", &registry.reference("later", "v1")])
        .success();
    let elapsed = started.elapsed();

    assert!(
        elapsed >= Duration::from_millis(2_800),
        "Retry-After: 3 on a {status} was not honoured (the pull took {elapsed:?})"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "the pull took {elapsed:?} after one {status} with Retry-After: 3"
    );
    let statuses: Vec<u16> = registry
        .blob_requests(&layer.digest)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [status, 200]);
    assert_default_archive(&work, &registry, &image, "later", "v1");
}

#[test]
fn blob_503_with_retry_after_waits() {
    blob_retry_after_is_honoured(503, 61);
}

#[test]
fn blob_429_with_retry_after_waits() {
    blob_retry_after_is_honoured(429, 62);
}

/// A client error on a blob is final: one request, exit 1 naming the blob, nothing written.
fn blob_client_error_is_not_retried(status: u16, seed: u64) {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 10_000, seed);
    registry.push_image("final", "v1", &image);
    let layer = &image.layers[0];
    registry.inject(
        Fault::status(&layer.digest, status)
            .method(Method::GET)
            .times(usize::MAX)
            .body(r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#),
    );
    let work = Work::new().with_timeout(Duration::from_secs(60));

    let run = work.pull(&["-q", "--retries", "5", &registry.reference("final", "v1")]);
    run.expect_code(1);
    assert_eq!(
        registry.blob_gets(&layer.digest),
        1,
        "a {status} on a blob must not be retried: {:#?}",
        registry.blob_requests(&layer.digest)
    );
    assert!(
        run.stderr.contains(&layer.digest) && run.stderr.contains("final"),
        "the message should name the image and the blob {}: {}",
        layer.digest,
        run.stderr
    );
    work.assert_no_output();
    assert!(!cache_blobs(&work.cache()).iter().any(|b| b == layer.hex()));
}

#[test]
fn blob_400_is_not_retried() {
    blob_client_error_is_not_retried(400, 63);
}

#[test]
fn blob_404_is_not_retried() {
    blob_client_error_is_not_retried(404, 64);
}

#[test]
fn drops_after_progress_do_not_use_up_the_retries() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 400_000, 65);
    let layer = &image.layers[0];
    registry.push_image("droppy", "v1", &image);
    // Every response breaks after 50 kB: six breaks, each after progress, then one whole rest.
    registry.blob_fault(&layer.digest, BodyFault::Reset { after: 50_000 }, 6);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    let started = Instant::now();
    work.pull(&["-q", "--retries", "2", &registry.reference("droppy", "v1")])
        .success();

    let gets = registry.blob_requests(&layer.digest);
    assert_eq!(
        gets.len(),
        7,
        "six broken responses and one whole one: {gets:#?}"
    );
    let starts: Vec<u64> = gets
        .iter()
        .map(|r| range_start(&r.range).unwrap_or(0))
        .collect();
    assert_eq!(
        starts,
        (0..7u64).map(|i| i * 50_000).collect::<Vec<_>>(),
        "each retry should resume where the last one broke: {gets:#?}"
    );
    assert!(
        registry.blob_bytes_sent() <= image.blob_bytes() + 64 * 1024,
        "{} bytes sent for {} bytes of blobs",
        registry.blob_bytes_sent(),
        image.blob_bytes()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "drops with progress should not back off for long ({:?})",
        started.elapsed()
    );
    assert_default_archive(&work, &registry, &image, "droppy", "v1");
}

// --- Stalls ----------------------------------------------------------------------------------

#[test]
fn slow_drip_ends_in_bounded_time() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 200_000, 66);
    let layer = &image.layers[0];
    registry.push_image("drip", "v1", &image);
    // One byte every 300 ms: never silent for --timeout 2, yet the layer would take 17 hours.
    registry.blob_fault(
        &layer.digest,
        BodyFault::Drip {
            every: Duration::from_millis(300),
        },
        usize::MAX,
    );
    let work = Work::new().with_timeout(Duration::from_secs(30));

    let started = Instant::now();
    let run = work.pull(&[
        "-q",
        "--timeout",
        "2",
        "--retries",
        "2",
        &registry.reference("drip", "v1"),
    ]);
    let elapsed = started.elapsed();
    assert!(
        !run.timed_out,
        "a blob dripping one byte every 300 ms kept the pull busy for {elapsed:?} (killed); \
         with --timeout 2 it should give up in bounded time. stderr:\n{}",
        run.stderr
    );
    run.expect_code(1);
    assert!(
        run.stderr.contains(&layer.digest),
        "the message should name the slow blob: {}",
        run.stderr
    );
    work.assert_no_output();
    assert!(!cache_blobs(&work.cache()).iter().any(|b| b == layer.hex()));
}

// --- Integrity -------------------------------------------------------------------------------

#[test]
fn damaged_blob_is_retried_once_from_zero_then_reported() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 50_000, 67);
    registry.push_image("damaged", "v1", &image);
    let bad = &image.layers[0];
    let mut data = bad.data.clone();
    data[100] ^= 0x01;
    registry.corrupt_blob(&bad.digest, data);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    let run = work.pull(&["-q", "--retries", "3", &registry.reference("damaged", "v1")]);
    run.expect_code(1);
    let gets = registry.blob_requests(&bad.digest);
    assert_eq!(
        gets.len(),
        2,
        "one download and one retry of the damaged blob: {gets:#?}"
    );
    assert!(
        gets.iter().all(|r| r.range.is_none()),
        "the retry must start from zero: {gets:#?}"
    );
    for (what, needle) in [
        ("image", "damaged:v1"),
        ("blob", bad.digest.as_str()),
        ("registry", registry.addr().as_str()),
    ] {
        assert!(
            run.stderr.contains(needle),
            "the message should name the {what} ({needle}): {}",
            run.stderr
        );
    }
    work.assert_no_output();
    assert!(!cache_blobs(&work.cache()).iter().any(|b| b == bad.hex()));
    // The config, requested together with the layer, may still have been on its way when the
    // pull stopped: its partial download stays to be resumed. The damaged bytes do not.
    let partials = ingest_partials(&work.cache());
    assert!(
        !partials.iter().any(|(name, _)| name.starts_with(bad.hex())),
        "the damaged bytes stayed in ingest/: {partials:?}"
    );
    assert_cache_sound(&work.cache());
}

#[test]
fn endless_blob_is_cut_off() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 20_000, 68);
    registry.push_image("endless", "v1", &image);
    let layer = &image.layers[0];
    registry.blob_fault(&layer.digest, BodyFault::Endless, usize::MAX);
    let work = Work::new().with_timeout(Duration::from_secs(30));

    let started = Instant::now();
    let run = work.pull(&["-q", "--retries", "2", &registry.reference("endless", "v1")]);
    run.expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "rejecting a body without end took {:?}",
        started.elapsed()
    );
    assert!(
        registry.blob_bytes_sent() < 64 * 1024 * 1024,
        "{} bytes accepted for a {}-byte blob",
        registry.blob_bytes_sent(),
        layer.size()
    );
    assert!(
        run.stderr.contains(&layer.digest),
        "the message should name the blob: {}",
        run.stderr
    );
    work.assert_no_output();
    assert!(!cache_blobs(&work.cache()).iter().any(|b| b == layer.hex()));
    assert!(
        ingest_partials(&work.cache())
            .iter()
            .all(|(_, len)| *len <= layer.size())
    );
}

/// Overwrites a cached blob with garbage of the same size (what the size check cannot see).
fn damage_cached(work: &Work, hex: &str) {
    let path = work.cache().join("blobs/sha256").join(hex);
    let len = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{} not cached: {e}", path.display()))
        .len();
    std::fs::write(&path, vec![0x5a; len as usize]).expect("damaging a cached blob");
}

#[test]
fn damaged_cached_layer_is_evicted_and_downloaded_again() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 2, 30_000, 69);
    registry.push_image("rot", "v1", &image);
    let work = Work::new();
    let reference = registry.reference("rot", "v1");
    work.pull(&["-q", &reference]).success();
    let archive = work
        .out()
        .join(default_name(registry.port(), "rot", "v1", "amd64"));
    std::fs::remove_file(&archive).expect("removing the first archive");
    let layer = &image.layers[1];
    damage_cached(&work, layer.hex());

    registry.reset_log();
    let run = work.pull(&["-q", &reference]);
    if run.code == Some(0) {
        // Re-downloaded in the same run: it must have fetched the layer again.
        assert_eq!(
            registry.blob_gets(&layer.digest),
            1,
            "{:#?}",
            registry.requests()
        );
    } else {
        run.expect_code(1);
        assert!(
            run.stderr.contains(layer.hex()) && run.stderr.contains("damaged"),
            "the message should say which cached blob is damaged: {}",
            run.stderr
        );
        work.assert_no_output();
        assert!(
            !cache_blobs(&work.cache()).iter().any(|b| b == layer.hex()),
            "the damaged blob was not evicted"
        );
        registry.reset_log();
        work.pull(&["-q", &reference]).success();
        assert_eq!(registry.blob_gets(&layer.digest), 1, "downloaded again");
    }
    assert_default_archive(&work, &registry, &image, "rot", "v1");
    assert_cache_sound(&work.cache());
}

#[test]
fn damaged_cached_config_is_evicted_and_downloaded_again() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 10_000, 70);
    registry.push_image("rotcfg", "v1", &image);
    let work = Work::new();
    let reference = registry.reference("rotcfg", "v1");
    work.pull(&["-q", &reference]).success();
    std::fs::remove_file(
        work.out()
            .join(default_name(registry.port(), "rotcfg", "v1", "amd64")),
    )
    .expect("removing the first archive");
    damage_cached(&work, image.config.hex());

    registry.reset_log();
    let run = work.pull(&["-q", &reference]);
    if run.code != Some(0) {
        run.expect_code(1);
        assert!(
            run.stderr.contains(image.config.hex()),
            "the message should name the damaged config: {}",
            run.stderr
        );
        work.assert_no_output();
        assert!(
            !cache_blobs(&work.cache())
                .iter()
                .any(|b| b == image.config.hex())
        );
        work.pull(&["-q", &reference]).success();
    }
    assert!(
        registry.blob_gets(&image.config.digest) >= 1,
        "config downloaded again"
    );
    assert_default_archive(&work, &registry, &image, "rotcfg", "v1");
    assert_cache_sound(&work.cache());
}

#[test]
fn truncated_cached_layer_is_downloaded_again_in_the_same_run() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 30_000, 71);
    registry.push_image("short-cache", "v1", &image);
    let work = Work::new();
    let reference = registry.reference("short-cache", "v1");
    work.pull(&["-q", &reference]).success();
    std::fs::remove_file(work.out().join(default_name(
        registry.port(),
        "short-cache",
        "v1",
        "amd64",
    )))
    .expect("removing the first archive");
    let layer = &image.layers[0];
    let path = work.cache().join("blobs/sha256").join(layer.hex());
    std::fs::write(&path, &layer.data[..1000]).expect("truncating a cached blob");

    registry.reset_log();
    work.pull(&["-q", &reference]).success();
    assert_eq!(
        registry.blob_gets(&layer.digest),
        1,
        "{:#?}",
        registry.requests()
    );
    assert_default_archive(&work, &registry, &image, "short-cache", "v1");
    assert_cache_sound(&work.cache());
}
