//! A `docker` or `oci` archive of one image is written while the image downloads: each blob
//! goes to its place in the (temporary) archive as soon as it is verified, so a slow layer
//! does not hold up the others, and a failure on either side stops the whole pull at once.

use std::time::{Duration, Instant};

use crate::common::{
    Archive, Expected, Work, assert_cache_sound, assert_default_archive, assert_docker_archive,
    cache_blobs, default_name, files_in,
};
use crate::support::image::{Flavor, ImageBuilder, LayerBuilder, SplitMix64};
use crate::support::registry::{BodyFault, FakeRegistry};

/// A layer of `size` incompressible bytes, distinct per `seed`.
fn big_layer(seed: u64, size: usize) -> LayerBuilder {
    LayerBuilder::new().file(
        &format!("big-{seed}.bin"),
        SplitMix64::new(seed).bytes(size),
        0o644,
    )
}

/// A layer of a few hundred bytes.
fn small_layer(text: &str) -> LayerBuilder {
    LayerBuilder::new().file("small.txt", text.repeat(20).into_bytes(), 0o644)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn finished_layers_are_in_the_archive_while_a_slow_one_still_downloads() {
    let registry = FakeRegistry::anonymous();
    let image = ImageBuilder::new(Flavor::Docker)
        .layer(big_layer(61, 300_000))
        .layer(small_layer("slow layer\n"))
        .cmd(&["/bin/true"])
        .build();
    let (fast, slow) = (&image.layers[0], &image.layers[1]);
    registry.push_image("stream", "v1", &image);
    // The small layer trickles in over several seconds (well above --timeout's low-speed
    // floor, so it is never abandoned).
    registry.blob_fault(
        &slow.digest,
        BodyFault::Drip {
            every: Duration::from_millis(4_000 / slow.data.len() as u64 + 1),
        },
        1,
    );
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let mut running = work.spawn_pull(&["-q", &registry.reference("stream", "v1")]);

    // The temporary archive beside the target holds the fast layer before the pull ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen_while_running = loop {
        let partial = files_in(&work.out())
            .into_iter()
            .find(|n| n.ends_with(".partial"))
            .and_then(|n| std::fs::read(work.out().join(n)).ok());
        if partial.is_some_and(|bytes| contains(&bytes, &fast.data)) {
            break !running.finished();
        }
        if running.finished() || Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = running.wait();
    run.success();
    assert!(
        seen_while_running,
        "the finished layer was not in the temporary archive while the slow one downloaded"
    );
    assert_default_archive(&work, &registry, &image, "stream", "v1");
    let name = default_name(registry.port(), "stream", "v1", "amd64");
    assert_eq!(files_in(&work.out()), [name], "only the archive is left");
}

#[test]
fn a_damaged_cached_layer_stops_the_pull_without_waiting_for_the_others() {
    let registry = FakeRegistry::anonymous();
    let shared = big_layer(62, 50_000);
    let first = ImageBuilder::new(Flavor::Oci)
        .label("image", "first")
        .layer(shared.clone())
        .build();
    let second = ImageBuilder::new(Flavor::Oci)
        .label("image", "second")
        .layer(shared)
        .layer(small_layer("never finishes\n"))
        .build();
    let cached = &first.layers[0];
    assert_eq!(cached.digest, second.layers[0].digest);
    registry.push_image("first", "v1", &first);
    registry.push_image("second", "v1", &second);
    let work = Work::new().with_timeout(Duration::from_secs(120));
    work.pull(&["-q", &registry.reference("first", "v1")])
        .success();
    std::fs::remove_dir_all(work.out()).unwrap();

    // The cached copy of the shared layer rots (same size, other bytes).
    let path = work.cache().join("blobs/sha256").join(cached.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    // The other layer would take a minute.
    let slow = &second.layers[1];
    registry.blob_fault(
        &slow.digest,
        BodyFault::Drip {
            every: Duration::from_millis(60_000 / slow.data.len() as u64 + 1),
        },
        1,
    );

    let started = Instant::now();
    let run = work.pull(&["-q", "-f", "oci", &registry.reference("second", "v1")]);
    let took = started.elapsed();
    run.expect_code(1);
    assert!(
        run.stderr.contains("damaged") && run.stderr.contains(cached.hex()),
        "{}",
        run.stderr
    );
    assert!(
        took < Duration::from_secs(30),
        "the pull went on downloading for {took:?} after the archive could not be written"
    );
    work.assert_no_output();
    assert!(
        !cache_blobs(&work.cache()).iter().any(|b| b == cached.hex()),
        "the damaged blob was evicted"
    );
    assert_cache_sound(&work.cache());
}

#[test]
fn a_failed_layer_leaves_no_archive_and_no_temporary_file() {
    let registry = FakeRegistry::anonymous();
    let image = ImageBuilder::new(Flavor::Docker)
        .layer(big_layer(63, 100_000))
        .layer(small_layer("missing\n"))
        .build();
    registry.push_image("gone", "v1", &image);
    registry.delete_blob("gone", &image.layers[1].digest);
    let work = Work::new();
    let target = work.out().join("gone.tar");
    std::fs::create_dir_all(work.out()).unwrap();
    let run = work.run(&[
        "--cache-dir",
        work.cache().to_str().unwrap(),
        "-q",
        "-o",
        target.to_str().unwrap(),
        &registry.reference("gone", "v1"),
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&image.layers[1].digest),
        "{}",
        run.stderr
    );
    work.assert_no_output();
    assert_cache_sound(&work.cache());
}

#[test]
fn sync_writes_the_same_archives_streamed_or_not() {
    let registry = FakeRegistry::anonymous();
    let a = ImageBuilder::new(Flavor::Docker)
        .label("image", "a")
        .layer(big_layer(64, 20_000))
        .build();
    let b = ImageBuilder::new(Flavor::Oci)
        .label("image", "b")
        .layer(small_layer("b\n"))
        .build();
    registry.push_image("a", "v1", &a);
    registry.push_image("b", "v1", &b);
    let work = Work::new();
    let (ra, rb) = (registry.reference("a", "v1"), registry.reference("b", "v1"));
    let cache = work.cache();
    let cache = cache.to_str().unwrap();
    let pull = |args: &[&str]| {
        let mut all = vec!["--cache-dir", cache, "-q"];
        all.extend_from_slice(args);
        work.run(&all).success();
    };
    let single = work.path("single.tar");
    let synced = work.path("synced.tar");
    let bundle = work.path("bundle.tar");
    // One image: written while it downloads; with --sync too; a bundle: written afterwards.
    pull(&["-o", single.to_str().unwrap(), &ra]);
    pull(&["--sync", "-o", synced.to_str().unwrap(), &ra]);
    pull(&["--sync", "-o", bundle.to_str().unwrap(), &ra, &rb]);
    assert!(std::fs::read(&single).unwrap() == std::fs::read(&synced).unwrap());
    let expected = Expected::tagged(&a, &registry.addr(), "a", "v1");
    assert_docker_archive(&Archive::open(&synced), std::slice::from_ref(&expected));
    assert_docker_archive(
        &Archive::open(&bundle),
        &[expected, Expected::tagged(&b, &registry.addr(), "b", "v1")],
    );
    assert_eq!(
        files_in(&work.path("")),
        ["bundle.tar", "cache", "home", "single.tar", "synced.tar"],
        "no temporary file is left"
    );
}
