//! Parallel ranged downloads of large blobs (`DOCKER_PULL_CHUNK_THRESHOLD`,
//! `DOCKER_PULL_CHUNK_SIZE` make "large" small enough for tests).

use crate::common::{Archive, Expected, Work, assert_docker_archive, default_name};
use crate::support::image::{Flavor, Image, random_image};
use crate::support::registry::{FakeRegistry, Fault};

const CHUNK: u64 = 64 * 1024;

fn chunk_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("DOCKER_PULL_CHUNK_THRESHOLD", "100K"),
        ("DOCKER_PULL_CHUNK_SIZE", "64K"),
    ]
}

/// One layer of 300 KiB (more than the threshold), so it goes in five chunks.
fn big_layer_image(seed: u64) -> Image {
    random_image(Flavor::Docker, 1, 300 * 1024, seed)
}

fn pull(work: &Work, registry: &FakeRegistry, extra: &[&str]) -> crate::common::Run {
    let reference = registry.reference("big", "v1");
    let mut args = vec!["-q", "--retries", "3"];
    args.extend_from_slice(extra);
    args.push(&reference);
    work.pull_env(&args, &chunk_env(), &[], None)
}

fn assert_archive(work: &Work, registry: &FakeRegistry, image: &Image) {
    let path = work
        .out()
        .join(default_name(registry.port(), "big", "v1", "amd64"));
    assert_docker_archive(
        &Archive::open(&path),
        &[Expected::tagged(image, &registry.addr(), "big", "v1")],
    );
}

fn layer_ranges(registry: &FakeRegistry, hex: &str) -> Vec<String> {
    registry
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(hex) && r.method == "GET")
        .filter_map(|r| r.range)
        .collect()
}

#[test]
fn a_large_blob_comes_in_bounded_ranges() {
    let registry = FakeRegistry::anonymous();
    let image = big_layer_image(31);
    registry.push_image("big", "v1", &image);
    let work = Work::new();
    pull(&work, &registry, &["-j", "3"]).success();
    assert_archive(&work, &registry, &image);

    let layer = &image.layers[0];
    let size = layer.data.len() as u64;
    let mut ranges = layer_ranges(&registry, layer.hex());
    ranges.sort_by_key(|r| {
        r.trim_start_matches("bytes=")
            .split('-')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    let mut expected = Vec::new();
    let mut at = 0;
    while at < size {
        let end = (at + CHUNK).min(size);
        expected.push(format!("bytes={at}-{}", end - 1));
        at = end;
    }
    assert_eq!(ranges, expected, "chunk boundaries");
    assert_eq!(
        registry.blob_bytes_sent(),
        image.blob_bytes(),
        "every byte sent once"
    );
}

#[test]
fn a_failing_chunk_is_retried_alone() {
    let registry = FakeRegistry::anonymous();
    let image = big_layer_image(32);
    registry.push_image("big", "v1", &image);
    let layer = &image.layers[0];
    registry.inject(Fault::status(layer.hex(), 503).times(2));
    let work = Work::new();
    pull(&work, &registry, &[]).success();
    assert_archive(&work, &registry, &image);
    let failed: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(layer.hex()) && r.status == 503)
        .collect();
    assert_eq!(failed.len(), 2, "the injected failures were hit");
    assert_eq!(
        registry.blob_bytes_sent(),
        image.blob_bytes(),
        "no chunk was sent twice"
    );
}

#[test]
fn a_registry_without_ranges_gets_one_stream() {
    let registry = FakeRegistry::anonymous();
    let image = big_layer_image(33);
    registry.push_image("big", "v1", &image);
    registry.ignore_ranges(true);
    let work = Work::new();
    pull(&work, &registry, &[]).success();
    assert_archive(&work, &registry, &image);
    let layer = &image.layers[0];
    let gets = registry.blob_gets(&layer.digest);
    assert!(
        (1..=4).contains(&gets),
        "ranged requests stop once the registry shows it ignores ranges: {gets} GETs"
    );
    assert!(
        registry.blob_bytes_sent() <= image.blob_bytes() + layer.data.len() as u64 * 3,
        "bounded re-sending: {}",
        registry.blob_bytes_sent()
    );
}

#[test]
fn chunking_can_be_turned_off() {
    let registry = FakeRegistry::anonymous();
    let image = big_layer_image(34);
    registry.push_image("big", "v1", &image);
    let work = Work::new();
    let reference = registry.reference("big", "v1");
    work.pull_env(
        &["-q", &reference],
        &[("DOCKER_PULL_CHUNK_THRESHOLD", "0")],
        &[],
        None,
    )
    .success();
    let layer = &image.layers[0];
    assert!(layer_ranges(&registry, layer.hex()).is_empty());
    assert_eq!(registry.blob_gets(&layer.digest), 1);
}

#[test]
fn an_interrupted_chunked_download_resumes_from_its_verified_prefix() {
    let registry = FakeRegistry::anonymous();
    let image = big_layer_image(35);
    registry.push_image("big", "v1", &image);
    let layer = &image.layers[0];
    let work = Work::new();
    // What a killed run leaves: the first two chunks verified and recorded, and
    // a third chunk written beyond them with garbage before it was verified.
    let ingest = work.cache().join("ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    std::fs::create_dir_all(work.cache().join("blobs/sha256")).unwrap();
    let data_path = ingest.join(format!("{}.data", layer.hex()));
    let mut partial = layer.data[..(2 * CHUNK) as usize].to_vec();
    partial.extend(std::iter::repeat_n(0xAAu8, CHUNK as usize));
    std::fs::write(&data_path, &partial).unwrap();
    std::fs::write(
        ingest.join(format!("{}.prefix", layer.hex())),
        (2 * CHUNK).to_string(),
    )
    .unwrap();

    pull(&work, &registry, &[]).success();
    assert_archive(&work, &registry, &image);
    let sent_for_layer =
        registry.blob_bytes_sent() - (image.blob_bytes() - layer.data.len() as u64);
    assert_eq!(
        sent_for_layer,
        layer.data.len() as u64 - 2 * CHUNK,
        "only what was not verified is fetched again"
    );
    assert!(!ingest.join(format!("{}.prefix", layer.hex())).exists());
}

#[test]
fn a_slow_large_blob_gets_parallel_chunks_a_fast_one_a_single_stream() {
    // Fast (loopback, unthrottled): one connection, chunk after chunk, nothing read back.
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 640 * 1024, 35);
    registry.push_image("big", "v1", &image);
    let work = Work::new();
    pull(&work, &registry, &["-j", "4"]).success();
    assert_archive(&work, &registry, &image);
    assert!(layer_ranges(&registry, image.layers[0].hex()).len() >= 10);
    assert_eq!(
        registry.max_blobs_in_flight(),
        1,
        "a blob arriving fast gets one stream"
    );

    // Slow per connection (about 1 MB/s each): more streams join once it shows.
    let registry = FakeRegistry::anonymous();
    registry.push_image("big", "v1", &image);
    registry.throttle_blobs(Some(crate::support::registry::Throttle {
        chunk: 8 * 1024,
        delay: std::time::Duration::from_millis(8),
    }));
    let work = Work::new();
    pull(&work, &registry, &["-j", "4"]).success();
    assert_archive(&work, &registry, &image);
    assert!(
        registry.max_blobs_in_flight() >= 2,
        "a slow blob should get parallel chunks: {} at most",
        registry.max_blobs_in_flight()
    );
    assert_eq!(
        registry.blob_bytes_sent(),
        image.blob_bytes(),
        "every byte sent once"
    );
}

#[test]
fn a_chunked_download_killed_before_its_first_chunk_keeps_the_earlier_prefix() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 640 * 1024, 41);
    registry.push_image("big", "v1", &image);
    let layer = &image.layers[0];
    let size = layer.data.len() as u64;
    let kept = 128 * 1024;
    let work = Work::new();
    // An earlier run left the first 128 KiB, verified.
    let ingest = work.cache().join("ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    std::fs::write(
        ingest.join(format!("{}.data", layer.hex())),
        &layer.data[..kept],
    )
    .unwrap();
    // This run: the chunk at the prefix goes silent after 1000 bytes while the other streams
    // fetch every chunk beyond it; then the process is killed.
    registry.stall_blob(&layer.digest, 1000, 1);
    let cache = work.cache();
    let out = work.out();
    let reference = registry.reference("big", "v1");
    let args = [
        "--cache-dir",
        cache.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        &reference,
    ];
    let running = work.spawn_env(&args, &chunk_env(), &[], None);
    let beyond = 1000 + (size - kept as u64 - CHUNK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while registry.blob_bytes_sent() < beyond {
        assert!(
            std::time::Instant::now() < deadline,
            "the other streams did not fetch the chunks beyond the prefix ({} bytes sent)",
            registry.blob_bytes_sent()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = std::process::Command::new("kill")
        .args(["-KILL", &running.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = running.wait();

    registry.reset_log();
    pull(&work, &registry, &[]).success();
    assert_archive(&work, &registry, &image);
    assert_eq!(
        registry.blob_bytes_sent(),
        size - kept as u64,
        "the next run should fetch only what the first 128 KiB did not cover"
    );
}
