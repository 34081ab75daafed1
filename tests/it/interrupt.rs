//! Ctrl-C: exit code 130, no archive, the partial download stays in the cache and the next run
//! resumes it with a Range request instead of starting over.

use std::time::{Duration, Instant};

use crate::common::{Work, assert_default_archive, cache_blobs};
use crate::support::image::{Flavor, random_image};
use crate::support::registry::{FakeRegistry, Throttle};

#[test]
fn ctrl_c_exits_130_and_the_next_run_resumes() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 2_000_000, 51);
    let layer = &image.layers[0];
    registry.push_image("slow", "v1", &image);
    // About 60 chunks 60 ms apart: several seconds for the layer.
    registry.throttle_blobs(Some(Throttle {
        chunk: 32 * 1024,
        delay: Duration::from_millis(60),
    }));
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let reference = registry.reference("slow", "v1");

    let mut running = work.spawn_pull(&["-q", &reference]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry.blob_bytes_sent() < 400_000 {
        assert!(
            !running.finished(),
            "the pull ended before it could be interrupted"
        );
        assert!(
            Instant::now() < deadline,
            "the layer download never got going: {:#?}",
            registry.requests()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running.interrupt();
    let run = running.wait();
    run.expect_code(130);

    work.assert_no_output();
    assert!(
        !cache_blobs(&work.cache()).iter().any(|b| b == layer.hex()),
        "an incomplete layer was committed"
    );
    let partial: u64 = std::fs::read_dir(work.cache().join("ingest"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    assert!(
        partial > 0,
        "no partial download kept under {}/ingest",
        work.cache().display()
    );

    registry.throttle_blobs(None);
    registry.reset_log();
    work.pull(&["-q", &reference]).success();

    let resumed_from: Vec<u64> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&layer.digest) && r.method == "GET")
        .filter_map(|r| r.range)
        .filter_map(|range| {
            range
                .strip_prefix("bytes=")?
                .split('-')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        resumed_from.iter().any(|&offset| offset > 0),
        "the second run did not resume the layer with a Range request: {:#?}",
        registry.requests()
    );
    assert!(
        registry.blob_bytes_sent() < layer.size(),
        "the second run downloaded {} bytes, the whole layer is {}",
        registry.blob_bytes_sent(),
        layer.size()
    );
    assert_default_archive(&work, &registry, &image, "slow", "v1");
}
