//! `-j N`: at most N blobs are downloaded at once, and N are when there are enough.

use std::time::Duration;

use crate::common::{Work, assert_default_archive};
use crate::support::image::{Flavor, random_image};
use crate::support::registry::{FakeRegistry, Throttle};

#[test]
fn max_concurrent_downloads_is_honoured() {
    let image = random_image(Flavor::Oci, 6, 120_000, 61);
    for workers in [1usize, 2, 4] {
        let registry = FakeRegistry::anonymous();
        registry.push_image("par", "v1", &image);
        registry.throttle_blobs(Some(Throttle {
            chunk: 16 * 1024,
            delay: Duration::from_millis(25),
        }));
        let work = Work::new();
        work.pull(&[
            "-q",
            "-j",
            &workers.to_string(),
            &registry.reference("par", "v1"),
        ])
        .success();
        assert_eq!(
            registry.max_blobs_in_flight(),
            workers,
            "-j {workers}: most blobs downloaded at once"
        );
        assert_default_archive(&work, &registry, &image, "par", "v1");
    }
}

#[test]
fn workers_alias() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 3, 50_000, 62);
    registry.push_image("par", "v1", &image);
    registry.throttle_blobs(Some(Throttle {
        chunk: 16 * 1024,
        delay: Duration::from_millis(20),
    }));
    let work = Work::new();
    work.pull(&["-q", "--workers", "1", &registry.reference("par", "v1")])
        .success();
    assert_eq!(registry.max_blobs_in_flight(), 1, "--workers 1");
}
