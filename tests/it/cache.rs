//! The blob cache: second pulls download nothing, `--no-cache` bypasses it, shared layers are
//! fetched once per run, and the cache holds verified blobs under `blobs/sha256/<hex>`.

use sha2::{Digest as _, Sha256};

use crate::common::{
    Archive, Expected, Work, assert_docker_archive, cache_blobs, default_name, files_in,
};
use crate::support::image::{Flavor, ImageBuilder, many_layers_image, random_image};
use crate::support::registry::FakeRegistry;

#[test]
fn second_pull_downloads_no_blob() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 3, 64 * 1024, 1);
    registry.push_image("cached", "v1", &image);
    let work = Work::new();
    let reference = registry.reference("cached", "v1");
    let archive_path = work
        .out()
        .join(default_name(registry.port(), "cached", "v1", "amd64"));

    let first = work.pull(&["-q", "--json", &reference]);
    first.success();
    let json = first.json();
    assert_eq!(json["cache_hits"], 0, "{json}");
    assert_eq!(json["bytes_from_cache"], 0, "{json}");
    assert_eq!(
        json["bytes_downloaded"],
        image.blob_bytes(),
        "config + layers: {json}"
    );
    assert_eq!(
        registry.blob_bytes_sent(),
        image.blob_bytes(),
        "each blob sent once"
    );
    let first_archive = std::fs::read(&archive_path).expect("first archive");
    std::fs::remove_file(&archive_path).expect("removing the first archive");

    registry.reset_log();
    let second = work.pull(&["-q", "--json", &reference]);
    second.success();
    let json = second.json();
    assert_eq!(json["layers"], 3, "{json}");
    assert_eq!(json["cache_hits"], 3, "{json}");
    assert_eq!(json["bytes_downloaded"], 0, "{json}");
    assert_eq!(json["bytes_from_cache"], image.layer_bytes(), "{json}");
    assert_eq!(
        registry.total_blob_gets(),
        0,
        "blob GETs on the second pull: {:#?}",
        registry.requests()
    );
    assert!(
        !registry.manifest_requests().is_empty(),
        "the manifest should still be fetched"
    );

    let second_archive = std::fs::read(&archive_path).expect("second archive");
    assert!(
        first_archive == second_archive,
        "the archive from cache differs from the first one"
    );
    assert_docker_archive(
        &Archive::open(&archive_path),
        &[Expected::tagged(&image, &registry.addr(), "cached", "v1")],
    );
}

#[test]
fn second_pull_reports_cache_line() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 2, 300_000, 2);
    registry.push_image("cached", "v1", &image);
    let work = Work::new();
    let reference = registry.reference("cached", "v1");

    work.pull(&["-q", &reference]).success();
    let run = work.pull(&["-q", &reference]);
    run.success();
    let saved = image.layer_bytes() as f64 / 1_000_000.0;
    let want = format!("Cache hits: 2/2 layers (100.0%), Data saved: {saved:.1} MB");
    assert_eq!(
        run.stdout.lines().last().map(str::trim),
        Some(want.as_str()),
        "stdout:\n{}",
        run.stdout
    );
}

#[test]
fn cache_holds_verified_blobs() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 2, 10_000, 3);
    registry.push_image("cached", "v1", &image);
    let work = Work::new();

    work.pull(&["-q", &registry.reference("cached", "v1")])
        .success();

    let blobs = cache_blobs(&work.cache());
    for blob in image.blobs() {
        assert!(
            blobs.iter().any(|b| b == blob.hex()),
            "{} ({}) missing from the cache: {blobs:?}",
            blob.digest,
            blob.media_type
        );
    }
    for name in &blobs {
        let data = std::fs::read(work.cache().join("blobs/sha256").join(name))
            .expect("reading a cached blob");
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            *name,
            "cached blob {name} does not match its name"
        );
    }
    // Neither partial downloads nor their lock files stay behind.
    let leftovers = files_in(&work.cache().join("ingest"));
    assert!(
        leftovers.is_empty(),
        "files left in ingest/ after a successful pull: {leftovers:?}"
    );
}

#[test]
fn no_cache_downloads_again_and_writes_no_cache() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 2, 20_000, 4);
    registry.push_image("fresh", "v1", &image);
    let work = Work::new();
    let reference = registry.reference("fresh", "v1");

    for round in 0..2 {
        registry.reset_log();
        let run = work.pull(&["-q", "--json", "--no-cache", &reference]);
        run.success();
        let json = run.json();
        assert_eq!(json["cache_hits"], 0, "round {round}: {json}");
        assert_eq!(
            json["bytes_downloaded"],
            image.blob_bytes(),
            "round {round}: {json}"
        );
        for blob in image.blobs() {
            assert_eq!(
                registry.blob_gets(&blob.digest),
                1,
                "round {round}: GETs of {}",
                blob.digest
            );
        }
    }
    assert!(
        cache_blobs(&work.cache()).is_empty(),
        "--no-cache wrote blobs to the cache: {:?}",
        cache_blobs(&work.cache())
    );
}

#[test]
fn no_cache_ignores_a_warm_cache() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 2, 20_000, 5);
    registry.push_image("fresh", "v1", &image);
    let work = Work::new();
    let reference = registry.reference("fresh", "v1");
    work.pull(&["-q", &reference]).success();
    let before = cache_blobs(&work.cache());

    registry.reset_log();
    let run = work.pull(&["-q", "--json", "--no-cache", &reference]);
    run.success();
    let json = run.json();
    assert_eq!(json["cache_hits"], 0, "{json}");
    assert_eq!(json["bytes_from_cache"], 0, "{json}");
    assert_eq!(
        registry.total_blob_gets(),
        image.blobs().len(),
        "every blob downloaded again"
    );
    assert_eq!(
        cache_blobs(&work.cache()),
        before,
        "--no-cache changed the cache"
    );
}

#[test]
fn shared_layer_is_downloaded_once_per_run() {
    let registry = FakeRegistry::anonymous();
    let base = random_image(Flavor::Docker, 1, 200_000, 6);
    let own = random_image(Flavor::Docker, 1, 1000, 7);
    let shared = &base.layers[0];
    let a = ImageBuilder::new(Flavor::Docker)
        .raw_layer(shared.clone(), base.diff_ids[0].clone())
        .raw_layer(own.layers[0].clone(), own.diff_ids[0].clone())
        .label("image", "a")
        .build();
    let b = ImageBuilder::new(Flavor::Docker)
        .raw_layer(shared.clone(), base.diff_ids[0].clone())
        .label("image", "b")
        .build();
    registry.push_image("a", "v1", &a);
    registry.push_image("b", "v1", &b);
    let work = Work::new();

    let run = work.pull(&[
        "-q",
        "--json",
        "-j",
        "4",
        &registry.reference("a", "v1"),
        &registry.reference("b", "v1"),
    ]);
    run.success();

    assert_eq!(
        registry.blob_gets(&shared.digest),
        1,
        "the shared layer was downloaded more than once"
    );
    let lines = run.json_lines();
    assert_eq!(lines.len(), 2, "stdout:\n{}", run.stdout);
    let downloaded: u64 = lines
        .iter()
        .map(|j| {
            j["bytes_downloaded"]
                .as_u64()
                .expect("bytes_downloaded is an integer")
        })
        .sum();
    let unique = a.blob_bytes() + b.config.size();
    assert_eq!(
        downloaded, unique,
        "bytes_downloaded over both images should count the shared layer once: {lines:?}"
    );
    for (image, repo) in [(&a, "a"), (&b, "b")] {
        let archive = Archive::open(&work.out().join(default_name(
            registry.port(),
            repo,
            "v1",
            "amd64",
        )));
        assert_docker_archive(
            &archive,
            &[Expected::tagged(image, &registry.addr(), repo, "v1")],
        );
    }
}

#[test]
fn cache_dir_from_environment() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 5_000, 8);
    registry.push_image("envcache", "v1", &image);
    let work = Work::new();
    let cache = work.path("env-cache");
    let out = work.out();

    work.run_with(
        &[
            "-q",
            "-o",
            out.to_str().expect("utf-8"),
            &registry.reference("envcache", "v1"),
        ],
        &[("DOCKER_PULL_CACHE", cache.to_str().expect("utf-8"))],
        None,
    )
    .success();
    assert!(
        cache_blobs(&cache)
            .iter()
            .any(|b| b == image.layers[0].hex()),
        "DOCKER_PULL_CACHE was not used: {:?}",
        cache_blobs(&cache)
    );
}

#[test]
fn two_processes_share_one_cache() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 3, 200_000, 9);
    registry.push_image("shared", "v1", &image);
    registry.throttle_blobs(Some(crate::support::registry::Throttle {
        chunk: 32 * 1024,
        delay: std::time::Duration::from_millis(10),
    }));
    let work = Work::new();
    let cache = work.cache();
    let out_a = work.path("out-a");
    let out_b = work.path("out-b");
    let reference = registry.reference("shared", "v1");

    let a = work.spawn_with(
        &[
            "-q",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
            "-o",
            out_a.to_str().expect("utf-8"),
            &reference,
        ],
        &[],
        None,
    );
    let b = work.spawn_with(
        &[
            "-q",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
            "-o",
            out_b.to_str().expect("utf-8"),
            &reference,
        ],
        &[],
        None,
    );
    a.wait().success();
    b.wait().success();

    let name = default_name(registry.port(), "shared", "v1", "amd64");
    for out in [&out_a, &out_b] {
        assert_docker_archive(
            &Archive::open(&out.join(&name)),
            &[Expected::tagged(&image, &registry.addr(), "shared", "v1")],
        );
    }
    for name in cache_blobs(&cache) {
        let data = std::fs::read(cache.join("blobs/sha256").join(&name)).expect("cached blob");
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            name,
            "cached blob {name} is damaged"
        );
    }
}

#[test]
fn an_image_of_more_layers_than_open_files_allowed_is_pulled() {
    let registry = FakeRegistry::anonymous();
    let image = many_layers_image(Flavor::Oci, 1200, 31);
    registry.push_image("many", "v1", &image);
    // Far below one open file per layer, and no way to raise it: holding the blobs in use
    // must not cost a file each.
    let work = Work::new().with_fd_limit(256, 256);
    work.pull(&["-q", &registry.reference("many", "v1")])
        .success();
    assert_docker_archive(
        &Archive::open(
            &work
                .out()
                .join(default_name(registry.port(), "many", "v1", "amd64")),
        ),
        &[Expected::tagged(&image, &registry.addr(), "many", "v1")],
    );
}

#[test]
fn blobs_are_let_go_once_their_image_is_written() {
    let registry = FakeRegistry::anonymous();
    let images: Vec<_> = (0..4)
        .map(|i| {
            let image = many_layers_image(Flavor::Docker, 120, 40 + i);
            registry.push_image(&format!("img{i}"), "v1", &image);
            image
        })
        .collect();
    let references: Vec<String> = (0..4)
        .map(|i| registry.reference(&format!("img{i}"), "v1"))
        .collect();
    // Room for one image's blobs at a time, not for all four: the limit cannot be raised.
    let work = Work::new().with_fd_limit(256, 256);
    let mut args = vec!["-q"];
    args.extend(references.iter().map(String::as_str));
    work.pull(&args).success();
    for (i, image) in images.iter().enumerate() {
        let repo = format!("img{i}");
        assert_docker_archive(
            &Archive::open(
                &work
                    .out()
                    .join(default_name(registry.port(), &repo, "v1", "amd64")),
            ),
            &[Expected::tagged(image, &registry.addr(), &repo, "v1")],
        );
    }
}

/// Each blob a pull brings in is sealed as the file it ends up as: the seal (`meta/<hex>.seal`:
/// boot, device, inode, size, mtime) matches the stored blob's metadata, for whole downloads and
/// for chunked ones, so the next pull can use every blob without hashing it again.
#[test]
fn every_blob_a_pull_brings_in_is_sealed_as_it_is() {
    use std::os::unix::fs::MetadataExt;
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 3, 300_000, 95);
    registry.push_image("sealed", "v1", &image);
    let work = Work::new();
    let run = work.pull_env(
        &["-q", &registry.reference("sealed", "v1")],
        &[
            ("DOCKER_PULL_CHUNK_THRESHOLD", "100K"),
            ("DOCKER_PULL_CHUNK_SIZE", "64K"),
        ],
        &[],
        None,
    );
    run.success();
    let Ok(boot) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
        return;
    };
    let blobs = cache_blobs(&work.cache());
    assert_eq!(blobs.len(), image.layers.len() + 1, "{blobs:?}");
    for hex in blobs {
        let m = std::fs::metadata(work.cache().join("blobs/sha256").join(&hex)).unwrap();
        let seal = std::fs::read_to_string(work.cache().join("meta").join(format!("{hex}.seal")))
            .unwrap_or_else(|e| panic!("no seal for {hex}: {e}"));
        let expected = format!(
            "seal1 {} {} {} {} {} {}\n",
            boot.trim(),
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        );
        assert_eq!(seal, expected, "the seal of {hex} is not its file's");
    }
}
