//! Resuming downloads: a body cut part-way is continued with `Range` in the same run, servers
//! that answer a `Range` wrongly never yield a corrupt blob, and a partial download left in
//! `ingest/` by an earlier (killed) run is continued next time, or discarded when it is garbage.

use std::time::{Duration, Instant};

use crate::common::{
    Work, assert_cache_sound, assert_default_archive, cache_blobs, files_in, ingest_partials, tree,
};
use crate::support::image::{Flavor, Image, random_image};
use crate::support::registry::{BodyFault, FakeRegistry, Fault, Throttle};

/// The largest number of bytes a broken response can have sent that the client did not keep.
const CHUNK: u64 = 64 * 1024;

/// A registry serving a one-layer image of `size` bytes as `<repo>:v1`.
fn serve(repo: &str, size: usize, seed: u64) -> (FakeRegistry, Image) {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, size, seed);
    registry.push_image(repo, "v1", &image);
    (registry, image)
}

/// `(range, status)` of every GET of `digest`.
fn gets(registry: &FakeRegistry, digest: &str) -> Vec<(Option<String>, u16)> {
    registry
        .blob_requests(digest)
        .into_iter()
        .map(|r| (r.range, r.status))
        .collect()
}

/// A body that breaks after `after` bytes (reset or early end) is resumed from exactly there.
fn broken_body_resumes_with_range(fault: BodyFault, after: usize, seed: u64) {
    let (registry, image) = serve("cut", 300_000, seed);
    let layer = &image.layers[0];
    registry.blob_fault(&layer.digest, fault, 1);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    work.pull(&["-q", "--retries", "2", &registry.reference("cut", "v1")])
        .success();

    let want_range = format!("bytes={after}-");
    assert_eq!(
        gets(&registry, &layer.digest),
        [(None, 200), (Some(want_range), 206)],
        "the broken body should be resumed from byte {after}"
    );
    assert!(
        registry.blob_bytes_sent() <= image.blob_bytes() + CHUNK,
        "{} bytes sent for {} bytes of blobs",
        registry.blob_bytes_sent(),
        image.blob_bytes()
    );
    assert_default_archive(&work, &registry, &image, "cut", "v1");
    assert_cache_sound(&work.cache());
}

#[test]
fn connection_reset_mid_body_resumes_with_range() {
    broken_body_resumes_with_range(BodyFault::Reset { after: 131_072 }, 131_072, 80);
}

#[test]
fn truncated_body_with_full_content_length_resumes_with_range() {
    broken_body_resumes_with_range(BodyFault::Truncate { after: 131_072 }, 131_072, 81);
}

/// Checks a run that met a misbehaving server: either it succeeded with the right archive, or
/// it failed naming the blob with nothing written and nothing bad cached.
fn right_archive_or_clean_failure(
    work: &Work,
    registry: &FakeRegistry,
    image: &Image,
    repo: &str,
    run: &crate::common::Run,
) {
    let layer = &image.layers[0];
    if run.code == Some(0) {
        assert_default_archive(work, registry, image, repo, "v1");
    } else {
        run.expect_code(1);
        assert!(
            run.stderr.contains(&layer.digest),
            "the message should name the blob: {}",
            run.stderr
        );
        work.assert_no_output();
        assert!(!cache_blobs(&work.cache()).iter().any(|b| b == layer.hex()));
    }
    assert_cache_sound(&work.cache());
}

#[test]
fn partial_content_with_wrong_content_range_is_not_accepted() {
    let (registry, image) = serve("badrange", 300_000, 82);
    let layer = &image.layers[0];
    registry.blob_fault(&layer.digest, BodyFault::Reset { after: 131_072 }, 1);
    registry.blob_fault(&layer.digest, BodyFault::WrongContentRange, 1);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    let run = work.pull(&[
        "-q",
        "--retries",
        "3",
        &registry.reference("badrange", "v1"),
    ]);
    right_archive_or_clean_failure(&work, &registry, &image, "badrange", &run);
    let seen = gets(&registry, &layer.digest);
    assert_eq!(
        seen.get(1),
        Some(&(Some("bytes=131072-".to_string()), 206)),
        "{seen:?}"
    );
}

#[test]
fn a_resume_answered_with_the_wrong_content_range_is_fetched_again_from_zero() {
    let (registry, image) = serve("badrange2", 300_000, 85);
    let layer = &image.layers[0];
    registry.blob_fault(&layer.digest, BodyFault::Reset { after: 131_072 }, 1);
    registry.blob_fault(&layer.digest, BodyFault::WrongContentRange, 1);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    let run = work.pull(&[
        "-q",
        "--retries",
        "3",
        &registry.reference("badrange2", "v1"),
    ]);
    run.success();
    assert_default_archive(&work, &registry, &image, "badrange2", "v1");
    let seen = gets(&registry, &layer.digest);
    assert_eq!(
        seen,
        [
            (None, 200),
            (Some("bytes=131072-".to_string()), 206),
            (None, 200)
        ],
        "after a 206 that starts elsewhere the blob comes again whole, without Range"
    );
}

#[test]
fn partial_content_shifted_under_a_right_content_range_is_caught_by_the_digest() {
    let (registry, image) = serve("liar", 300_000, 83);
    let layer = &image.layers[0];
    registry.blob_fault(&layer.digest, BodyFault::Reset { after: 131_072 }, 1);
    registry.blob_fault(&layer.digest, BodyFault::ShiftedRange { shift: 1000 }, 1);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    let run = work.pull(&["-q", "--retries", "3", &registry.reference("liar", "v1")]);
    right_archive_or_clean_failure(&work, &registry, &image, "liar", &run);
    run.success();
    let seen = gets(&registry, &layer.digest);
    assert_eq!(
        seen.last(),
        Some(&(None, 200)),
        "after the digest check failed the blob should be fetched again from zero: {seen:?}"
    );
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let (registry, image) = serve("norange2", 300_000, 84);
    let layer = &image.layers[0];
    registry.blob_fault(&layer.digest, BodyFault::Reset { after: 131_072 }, 1);
    registry.ignore_ranges(true);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    work.pull(&[
        "-q",
        "--retries",
        "2",
        &registry.reference("norange2", "v1"),
    ])
    .success();

    let seen = gets(&registry, &layer.digest);
    assert_eq!(
        seen,
        [(None, 200), (Some("bytes=131072-".to_string()), 200)],
        "the client should ask to resume and accept the whole blob instead"
    );
    assert_default_archive(&work, &registry, &image, "norange2", "v1");
    assert_cache_sound(&work.cache());
}

#[test]
fn range_not_satisfiable_restarts_from_zero() {
    let (registry, image) = serve("r416", 300_000, 85);
    let layer = &image.layers[0];
    registry.blob_fault(&layer.digest, BodyFault::Reset { after: 131_072 }, 1);
    registry.blob_fault(&layer.digest, BodyFault::RangeNotSatisfiable, 1);
    let work = Work::new().with_timeout(Duration::from_secs(60));

    work.pull(&["-q", "--retries", "3", &registry.reference("r416", "v1")])
        .success();

    assert_eq!(
        gets(&registry, &layer.digest),
        [
            (None, 200),
            (Some("bytes=131072-".to_string()), 416),
            (None, 200)
        ],
        "a 416 on the resume should start the blob over"
    );
    assert_default_archive(&work, &registry, &image, "r416", "v1");
    assert_cache_sound(&work.cache());
}

// --- Across runs -----------------------------------------------------------------------------

/// Leaves `data` as the partial download of `hex`, as a killed process would (with its lock
/// file, unlocked).
fn leave_partial(work: &Work, hex: &str, data: &[u8]) {
    let ingest = work.cache().join("ingest");
    std::fs::create_dir_all(&ingest).expect("creating ingest/");
    std::fs::write(ingest.join(format!("{hex}.data")), data).expect("writing a partial");
    std::fs::write(ingest.join(format!("{hex}.lock")), b"").expect("writing a lock file");
}

#[test]
fn partial_from_a_killed_run_is_continued() {
    let (registry, image) = serve("killed", 300_000, 86);
    let layer = &image.layers[0];
    let half = layer.data.len() / 2;
    let work = Work::new();
    leave_partial(&work, layer.hex(), &layer.data[..half]);

    work.pull(&["-q", &registry.reference("killed", "v1")])
        .success();

    assert_eq!(
        gets(&registry, &layer.digest),
        [(Some(format!("bytes={half}-")), 206)],
        "the partial should be continued from byte {half}"
    );
    assert_eq!(
        registry.blob_bytes_sent(),
        image.config.size() + (layer.data.len() - half) as u64,
        "only the config and the rest of the layer should be sent"
    );
    assert_default_archive(&work, &registry, &image, "killed", "v1");
    assert_cache_sound(&work.cache());
    assert!(
        files_in(&work.cache().join("ingest")).is_empty(),
        "ingest/ not cleaned up: {:?}",
        files_in(&work.cache().join("ingest"))
    );
}

#[test]
fn garbage_partial_is_detected_discarded_and_downloaded_again() {
    let (registry, image) = serve("garbage", 300_000, 87);
    let layer = &image.layers[0];
    let half = layer.data.len() / 2;
    let work = Work::new();
    leave_partial(&work, layer.hex(), &vec![0xa5; half]);

    let run = work.pull(&["-q", &registry.reference("garbage", "v1")]);
    run.success();

    let seen = gets(&registry, &layer.digest);
    assert_eq!(
        seen.last(),
        Some(&(None, 200)),
        "the garbage partial should be discarded and the blob fetched from zero: {seen:?}"
    );
    assert!(seen.len() <= 2, "{seen:?}");
    assert_default_archive(&work, &registry, &image, "garbage", "v1");
    assert_cache_sound(&work.cache());
    assert!(ingest_partials(&work.cache()).is_empty());
}

#[test]
fn partial_longer_than_the_blob_is_discarded() {
    let (registry, image) = serve("toolong", 50_000, 88);
    let layer = &image.layers[0];
    let work = Work::new();
    let mut data = layer.data.clone();
    data.extend_from_slice(&[0u8; 5000]);
    leave_partial(&work, layer.hex(), &data);

    work.pull(&["-q", &registry.reference("toolong", "v1")])
        .success();
    assert_eq!(gets(&registry, &layer.digest), [(None, 200)]);
    assert_default_archive(&work, &registry, &image, "toolong", "v1");
    assert_cache_sound(&work.cache());
}

/// `--no-cache` with `TMPDIR` pointed into the scratch area: after the run, it is empty again.
fn no_cache_run(work: &Work, tmp: &std::path::Path, args: &[&str]) -> crate::common::Run {
    std::fs::create_dir_all(tmp).expect("creating TMPDIR");
    let mut all = vec!["--no-cache"];
    all.extend_from_slice(args);
    work.pull_env(&all, &[("TMPDIR", tmp.to_str().expect("utf-8"))], &[], None)
}

#[test]
fn no_cache_leaves_no_temporary_directory() {
    let (registry, image) = serve("nocache", 50_000, 89);
    let work = Work::new();
    let tmp = work.path("tmp");

    no_cache_run(&work, &tmp, &["-q", &registry.reference("nocache", "v1")]).success();
    assert_default_archive(&work, &registry, &image, "nocache", "v1");
    assert!(tree(&tmp).is_empty(), "left in TMPDIR: {:?}", tree(&tmp));

    // And after a failure.
    let layer = &image.layers[0];
    registry.inject(Fault::status(&layer.digest, 404).times(usize::MAX));
    let out = work.out();
    std::fs::remove_dir_all(&out).expect("clearing the output");
    let run = no_cache_run(&work, &tmp, &["-q", &registry.reference("nocache", "v1")]);
    run.expect_code(1);
    assert!(
        tree(&tmp).is_empty(),
        "left in TMPDIR after a failure: {:?}",
        tree(&tmp)
    );
    assert!(
        tree(&work.cache()).is_empty(),
        "--no-cache wrote to --cache-dir"
    );
}

#[test]
fn no_cache_interrupted_leaves_no_temporary_directory() {
    let (registry, image) = serve("nocache-int", 1_000_000, 90);
    registry.throttle_blobs(Some(Throttle {
        chunk: 32 * 1024,
        delay: Duration::from_millis(60),
    }));
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let tmp = work.path("tmp");
    std::fs::create_dir_all(&tmp).expect("creating TMPDIR");
    let reference = registry.reference("nocache-int", "v1");
    let cache = work.cache();
    let out = work.out();
    let running = work.spawn_env(
        &[
            "-q",
            "--no-cache",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
            &reference,
        ],
        &[("TMPDIR", tmp.to_str().expect("utf-8"))],
        &[],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry.blob_bytes_sent() < 200_000 {
        assert!(Instant::now() < deadline, "the download never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    running.interrupt();
    running.wait().expect_code(130);
    assert!(tree(&tmp).is_empty(), "left in TMPDIR: {:?}", tree(&tmp));
    work.assert_no_output();
    let _ = image;
}
