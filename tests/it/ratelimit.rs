//! `--limit-rate` and `DOCKER_PULL_LIMIT_RATE`: one cap on the total rate of a run, shared by
//! every connection (parallel blobs, the ranged chunks of a large blob). Achieved rates are
//! checked from above only: a slow machine makes a pull slower, never faster.

use std::time::{Duration, Instant};

use crate::common::{Archive, Expected, Run, Work, assert_docker_archive, default_name};
use crate::support::image::{Flavor, Image, random_image};
use crate::support::registry::{FakeRegistry, Throttle};

const MIB: f64 = (1 << 20) as f64;

/// Chunking forced on: blobs over 100 KiB come in 256 KiB ranges, several connections at once.
const CHUNKED: [(&str, &str); 2] = [
    ("DOCKER_PULL_CHUNK_THRESHOLD", "100K"),
    ("DOCKER_PULL_CHUNK_SIZE", "256K"),
];

/// Runs a pull of `capped:v1`; returns the run and the achieved rate: the image's blob bytes
/// (manifest not counted) over the wall time of the whole process.
fn timed_pull(
    work: &Work,
    registry: &FakeRegistry,
    image: &Image,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Run, f64) {
    let reference = registry.reference("capped", "v1");
    let mut all = vec!["-q"];
    all.extend_from_slice(args);
    all.push(&reference);
    let start = Instant::now();
    let run = work.pull_env(&all, env, &[], None);
    let secs = start.elapsed().as_secs_f64();
    run.success();
    let rate = image.blob_bytes() as f64 / secs;
    eprintln!(
        "{} bytes in {secs:.2} s: {:.0} B/s ({:.3} MiB/s)",
        image.blob_bytes(),
        rate,
        rate / MIB
    );
    (run, rate)
}

fn assert_archive(work: &Work, registry: &FakeRegistry, image: &Image) {
    let path = work
        .out()
        .join(default_name(registry.port(), "capped", "v1", "amd64"));
    assert_docker_archive(
        &Archive::open(&path),
        &[Expected::tagged(image, &registry.addr(), "capped", "v1")],
    );
}

#[test]
fn one_cap_holds_across_parallel_chunks() {
    let registry = FakeRegistry::anonymous();
    // 3 MiB in one layer: twelve ranged chunks, taken by up to four connections. The registry
    // sends each at about 700 KB/s, so one connection stays below the cap and four together
    // would be well above it.
    let image = random_image(Flavor::Docker, 1, 3 << 20, 81);
    registry.push_image("capped", "v1", &image);
    registry.throttle_blobs(Some(Throttle {
        chunk: 8 << 10,
        delay: Duration::from_millis(10),
    }));
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let (_, rate) = timed_pull(
        &work,
        &registry,
        &image,
        &["--limit-rate", "1M", "-j", "4"],
        &CHUNKED,
    );
    assert!(
        rate <= 1.1 * MIB,
        "--limit-rate 1M: {rate:.0} B/s is more than 10% over the cap"
    );
    assert_archive(&work, &registry, &image);
    let ranged = registry
        .blob_requests(&image.layers[0].digest)
        .iter()
        .filter(|r| r.range.is_some())
        .count();
    assert!(ranged >= 12, "the layer came in ranged chunks: {ranged}");
    assert!(
        registry.max_blobs_in_flight() >= 2,
        "several connections shared the cap: {} at most",
        registry.max_blobs_in_flight()
    );
}

#[test]
fn the_environment_sets_the_cap() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 2, 1 << 20, 82);
    registry.push_image("capped", "v1", &image);
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let mut env = CHUNKED.to_vec();
    env.push(("DOCKER_PULL_LIMIT_RATE", "512K"));
    let (_, rate) = timed_pull(&work, &registry, &image, &["-j", "4"], &env);
    assert!(
        rate <= 1.1 * 512.0 * 1024.0,
        "DOCKER_PULL_LIMIT_RATE=512K: {rate:.0} B/s is more than 10% over the cap"
    );
    assert_archive(&work, &registry, &image);
}

#[test]
fn the_flag_wins_over_the_environment() {
    let registry = FakeRegistry::anonymous();
    // At the environment's 1 KiB/s this would take over four minutes: the run is killed first.
    let image = random_image(Flavor::Docker, 1, 256 << 10, 83);
    registry.push_image("capped", "v1", &image);
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let env = [("DOCKER_PULL_LIMIT_RATE", "1K")];
    timed_pull(&work, &registry, &image, &["--limit-rate", "64M"], &env);
    assert_archive(&work, &registry, &image);
}

#[test]
fn holding_data_back_is_neither_silence_nor_a_trickle() {
    // 6 KiB pieces 50 ms apart, let through at 2 KiB/s: each piece waits about 3 s on the cap,
    // well beyond --timeout 1, and the cap is below 1024 bytes per --timeout window for each
    // of the blobs. With one attempt per request, any reconnection would show.
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 12 << 10, 84);
    registry.push_image("capped", "v1", &image);
    registry.throttle_blobs(Some(Throttle {
        chunk: 6 << 10,
        delay: Duration::from_millis(50),
    }));
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let args = ["--limit-rate", "2K", "--timeout", "1", "--retries", "1"];
    let (run, rate) = timed_pull(&work, &registry, &image, &args, &[]);
    assert!(
        rate <= 1.1 * 2048.0,
        "--limit-rate 2K: {rate:.0} B/s is more than 10% over the cap"
    );
    assert_archive(&work, &registry, &image);
    for blob in image.blobs() {
        assert_eq!(
            registry.blob_gets(&blob.digest),
            1,
            "{} was fetched in one request\n{}",
            blob.digest,
            run.stderr
        );
    }
}

#[test]
fn a_rate_that_is_not_one_is_a_usage_error() {
    let registry = FakeRegistry::anonymous();
    let reference = registry.reference("capped", "v1");
    let work = Work::new();
    for value in ["0", "lots", "2X", "-1M"] {
        let flag = format!("--limit-rate={value}");
        let run = work.pull(&[&flag, &reference]);
        run.expect_code(2);
        assert!(
            run.stderr.contains("--limit-rate"),
            "the message names the flag: {}",
            run.stderr
        );
        let run = work.pull_env(
            &[&reference],
            &[("DOCKER_PULL_LIMIT_RATE", value)],
            &[],
            None,
        );
        run.expect_code(2);
        assert!(
            run.stderr.contains("DOCKER_PULL_LIMIT_RATE") && run.stderr.contains(value),
            "the message names the variable and its value: {}",
            run.stderr
        );
        run.assert_no_panic();
    }
    assert!(
        registry.requests().is_empty(),
        "nothing was sent with a bad rate"
    );
}
