//! Hostile registries: malformed, oversized and lying manifests, descriptors whose digests try
//! unknown algorithms or path traversal, impossible sizes, redirect loops, odd indexes (nested,
//! huge, one manifest listed over and over), oversized configs, decompression bombs, text that
//! tries to rewrite the terminal, and references that try to escape. Every case ends in a clear
//! error (exit 1, or 2 for a bad command line) with nothing written outside the cache and the
//! output directory, or in a correct archive.

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{Value, json};

use crate::common::{
    Archive, Expected, Run, Work, assert_cache_sound, assert_default_archive,
    assert_docker_archive, default_name, tree,
};
use crate::support::image::{
    Blob, Flavor, ImageBuilder, OCI_CONFIG, OCI_INDEX, OCI_LAYER_ZSTD, OCI_MANIFEST, random_image,
    sha256_digest, small_image, zstd,
};
use crate::support::registry::FakeRegistry;

/// Asserts exit 1, a message containing every needle, no output, a sound cache and no file
/// outside `cache/`, `out/` and the fake `home/` of the scratch area.
#[track_caller]
fn assert_clean_failure(work: &Work, run: &Run, needles: &[&str]) {
    run.expect_code(1);
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "the message should mention {needle:?}:\n{}",
            run.stderr
        );
    }
    work.assert_no_output();
    assert_cache_sound(&work.cache());
    assert_contained(work);
}

/// Asserts that the scratch area holds nothing but `cache/`, `out/`, `home/` (and `tmp/`), and
/// that the cache holds nothing but its layout (`blobs/sha256/<hex>`, `ingest/<hex>.*`,
/// `meta/<hex>.json`, `leases/gate.lock`: no lease outlives its process).
#[track_caller]
fn assert_contained(work: &Work) {
    let all = tree(work.dir.path());
    let stray: Vec<&String> = all
        .iter()
        .filter(|p| {
            let top = p.split('/').next().unwrap_or("");
            !matches!(top, "cache" | "out" | "home" | "tmp")
        })
        .collect();
    assert!(stray.is_empty(), "files outside cache/out: {stray:?}");
    let cache: Vec<String> = tree(&work.cache())
        .into_iter()
        .filter(|p| {
            !(p == "blobs"
                || p == "ingest"
                || p == "leases"
                || p == "leases/gate.lock"
                || p == "blobs/sha256"
                || p == "meta"
                || p.strip_prefix("meta/").is_some_and(|m| {
                    let record = m.strip_suffix(".json").or_else(|| m.strip_suffix(".seal"));
                    record.is_some_and(|hex| {
                        hex.len() == 64
                            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    })
                })
                || p.starts_with("ingest/")
                || p.strip_prefix("blobs/sha256/").is_some_and(|hex| {
                    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                }))
        })
        .collect();
    assert!(
        cache.is_empty(),
        "unexpected entries in the cache: {cache:?}"
    );
    for p in tree(&work.cache().join("ingest")) {
        let stem = p
            .strip_suffix(".data")
            .or_else(|| p.strip_suffix(".lock"))
            .unwrap_or("");
        assert!(
            stem.len() == 64 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "unexpected file in ingest/: {p}"
        );
    }
}

/// Serves `manifest` (JSON) as `<repo>:v1` with `media_type`; returns its bytes.
fn serve_manifest(registry: &FakeRegistry, repo: &str, media_type: &str, manifest: &Value) {
    let bytes = serde_json::to_vec(manifest).expect("serialising a manifest");
    registry.put_manifest(repo, "v1", media_type, &bytes);
}

fn pull_v1(work: &Work, registry: &FakeRegistry, repo: &str) -> Run {
    work.pull(&["-q", "--retries", "2", &registry.reference(repo, "v1")])
}

#[test]
fn invalid_json_manifest() {
    let registry = FakeRegistry::anonymous();
    registry.put_manifest(
        "bad",
        "v1",
        OCI_MANIFEST,
        b"{\"schemaVersion\": 2, \"config\": ",
    );
    let work = Work::new();
    let run = pull_v1(&work, &registry, "bad");
    assert_clean_failure(&work, &run, &["bad:v1", &registry.addr(), "manifest"]);
}

#[test]
fn manifest_over_4_mib_is_refused() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "big manifest");
    for blob in image.blobs() {
        registry.put_blob("huge", blob);
    }
    let mut manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
    manifest["annotations"] = json!({ "padding": "x".repeat(5 * 1024 * 1024) });
    serve_manifest(&registry, "huge", OCI_MANIFEST, &manifest);
    let work = Work::new().with_timeout(Duration::from_secs(30));
    let run = pull_v1(&work, &registry, "huge");
    assert_clean_failure(&work, &run, &["huge:v1", &registry.addr()]);
}

#[test]
fn streamed_manifest_over_4_mib_is_refused() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "big streamed manifest");
    for blob in image.blobs() {
        registry.put_blob("huge", blob);
    }
    let mut manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
    manifest["annotations"] = json!({ "padding": "x".repeat(6 * 1024 * 1024) });
    serve_manifest(&registry, "huge", OCI_MANIFEST, &manifest);
    registry.stream_manifests(true);
    let work = Work::new().with_timeout(Duration::from_secs(30));
    let run = pull_v1(&work, &registry, "huge");
    assert_clean_failure(&work, &run, &["huge:v1", &registry.addr()]);
}

#[test]
fn streamed_manifest_under_the_limit_is_fine() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Docker, "streamed manifest");
    registry.push_image("streamed", "v1", &image);
    registry.stream_manifests(true);
    let work = Work::new();
    pull_v1(&work, &registry, "streamed").success();
    assert_default_archive(&work, &registry, &image, "streamed", "v1");
}

/// Digests that must never be used, least of all as file names.
fn hostile_digests() -> Vec<String> {
    vec![
        format!("sha512:{}", "ab".repeat(64)),
        format!("md5:{}", "cd".repeat(16)),
        format!("sha256:{}", "zz".repeat(32)),
        format!("sha256:{}", "AB".repeat(32)),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        "sha256:../../etc/passwd".to_string(),
        "sha256:../../../../../../tmp/docker-pull-escape".to_string(),
        "sha256:..%2f..%2fetc%2fpasswd".to_string(),
        "sha256:..%2F..%2Fescape".to_string(),
        format!("sha256:{}/../../x", "a".repeat(64)),
        "../../../etc/passwd".to_string(),
    ]
}

/// A manifest whose layer (or config) descriptor carries `digest`, with a blob stored under
/// that name so that a client which asked for it would get bytes.
fn hostile_descriptor_run(digest: &str, in_config: bool) {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "hostile digest");
    for blob in image.blobs() {
        registry.put_blob("evil", blob);
    }
    registry.put_blob_bytes("evil", digest, b"root:x:0:0::/root:/bin/sh\n".to_vec());
    let mut manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
    let slot = if in_config {
        &mut manifest["config"]
    } else {
        &mut manifest["layers"][0]
    };
    slot["digest"] = json!(digest);
    serve_manifest(&registry, "evil", OCI_MANIFEST, &manifest);
    let work = Work::new().with_timeout(Duration::from_secs(30));

    let run = pull_v1(&work, &registry, "evil");
    assert_clean_failure(&work, &run, &["evil:v1"]);
    let asked: Vec<String> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/") && !r.path.ends_with(&image.config.digest))
        .map(|r| r.path)
        .collect();
    assert!(
        asked.is_empty(),
        "the client asked for a blob under a hostile digest {digest:?}: {asked:?}"
    );
    assert!(
        !std::path::Path::new("/tmp/docker-pull-escape").exists(),
        "a file was written through the digest {digest:?}"
    );
}

#[test]
fn hostile_layer_digests_are_refused() {
    for digest in hostile_digests() {
        hostile_descriptor_run(&digest, false);
    }
}

#[test]
fn hostile_config_digests_are_refused() {
    for digest in hostile_digests() {
        hostile_descriptor_run(&digest, true);
    }
}

#[test]
fn references_that_try_to_escape_are_usage_errors() {
    let registry = FakeRegistry::anonymous();
    registry.push_image("ok", "v1", &small_image(Flavor::Oci, "ok"));
    let addr = registry.addr();
    let work = Work::new();
    for reference in [
        format!("{addr}/../../etc:v1"),
        format!("{addr}/a/../../b:v1"),
        format!("{addr}/./ok:v1"),
        format!("{addr}/ok:../../x"),
        format!("{addr}/ok:..%2f..%2fx"),
        format!("{addr}/%2e%2e/%2e%2e/ok:v1"),
        format!("{addr}/ok@sha256:../../etc/passwd"),
        format!("{addr}/ok@sha256:..%2f..%2fetc%2fpasswd"),
        format!("{addr}/ok\\..\\..\\x:v1"),
        format!("{addr}//ok:v1"),
        format!("{addr}/ok/:v1"),
    ] {
        let run = work.pull(&["-q", &reference]);
        run.expect_code(2);
        assert!(
            !run.stderr.trim().is_empty(),
            "{reference}: exit 2 without a message"
        );
    }
    for tag in ["../../evil:v1", "ok:../x", "/abs/path:v1", "a/../../b:v1"] {
        let run = work.pull(&["-q", "--tag", tag, &registry.reference("ok", "v1")]);
        run.expect_code(2);
    }
    assert!(
        registry.requests().is_empty(),
        "a bad reference reached the registry: {:#?}",
        registry.requests()
    );
    work.assert_no_output();
    assert_contained(&work);
}

#[test]
fn unknown_manifest_media_type() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "odd type");
    for blob in image.blobs() {
        registry.put_blob("odd", blob);
    }
    let mut manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
    manifest["mediaType"] = json!("application/vnd.example.not-a-manifest+json");
    serve_manifest(
        &registry,
        "odd",
        "application/vnd.example.not-a-manifest+json",
        &manifest,
    );
    let work = Work::new();
    let run = pull_v1(&work, &registry, "odd");
    assert_clean_failure(
        &work,
        &run,
        &["odd:v1", "application/vnd.example.not-a-manifest+json"],
    );
}

#[test]
fn manifest_not_matching_the_pinned_digest() {
    let registry = FakeRegistry::anonymous();
    let real = small_image(Flavor::Oci, "real");
    let fake = small_image(Flavor::Oci, "fake");
    for blob in fake.blobs() {
        registry.put_blob("pinned", blob);
    }
    // Asked for the real manifest's digest, the registry serves another manifest.
    registry.put_manifest(
        "pinned",
        &real.manifest.digest,
        OCI_MANIFEST,
        &fake.manifest.data,
    );
    let work = Work::new();
    let run = work.pull(&[
        "-q",
        &registry.digest_reference("pinned", &real.manifest.digest),
    ]);
    assert_clean_failure(
        &work,
        &run,
        &[
            &real.manifest.digest,
            &fake.manifest.digest,
            "does not match",
        ],
    );
    assert_eq!(
        registry.total_blob_gets(),
        0,
        "blobs of an unverified manifest were fetched"
    );
}

#[test]
fn index_entry_not_matching_its_manifest() {
    let registry = FakeRegistry::anonymous();
    let good = small_image(Flavor::Oci, "listed");
    let other = small_image(Flavor::Oci, "served instead");
    let idx = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [good.index_entry()],
    });
    serve_manifest(&registry, "swap", OCI_INDEX, &idx);
    for blob in other.blobs() {
        registry.put_blob("swap", blob);
    }
    registry.put_manifest(
        "swap",
        &good.manifest.digest,
        OCI_MANIFEST,
        &other.manifest.data,
    );
    let work = Work::new();
    let run = work.pull(&[
        "-q",
        "--platform",
        "linux/amd64",
        &registry.reference("swap", "v1"),
    ]);
    assert_clean_failure(&work, &run, &["swap:v1", &good.manifest.digest]);
    assert_eq!(registry.total_blob_gets(), 0);
}

#[test]
fn config_that_is_not_json() {
    let registry = FakeRegistry::anonymous();
    let config = Blob::new(OCI_CONFIG, b"\x00\x01 this is not JSON \xff".to_vec());
    let layer = small_image(Flavor::Oci, "x").layers[0].clone();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    registry.put_blob("notjson", &config);
    registry.put_blob("notjson", &layer);
    serve_manifest(&registry, "notjson", OCI_MANIFEST, &manifest);
    let work = Work::new();
    let run = pull_v1(&work, &registry, "notjson");
    assert_clean_failure(&work, &run, &["notjson:v1", "config"]);
}

#[test]
fn redirect_loop_on_a_blob_ends() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 10_000, 100);
    registry.push_image("loop", "v1", &image);
    let layer = &image.layers[0];
    let url = format!("http://{}/v2/loop/blobs/{}", registry.addr(), layer.digest);
    registry.inject(
        crate::support::registry::Fault::status(&layer.digest, 307)
            .method(Method::GET)
            .header("Location", &url)
            .times(usize::MAX),
    );
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let started = Instant::now();
    let run = pull_v1(&work, &registry, "loop");
    assert_clean_failure(&work, &run, &["loop:v1", &layer.digest]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a redirect loop took {:?}",
        started.elapsed()
    );
    assert!(
        registry.blob_gets(&layer.digest) <= 100,
        "{} requests in a redirect loop",
        registry.blob_gets(&layer.digest)
    );
}

/// An index whose one entry (linux/amd64) is `inner`, an index or a manifest.
fn index_of(inner: &Blob) -> Blob {
    Blob::json(
        OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": inner.media_type,
                "digest": inner.digest,
                "size": inner.size(),
                "platform": { "os": "linux", "architecture": "amd64" },
            }],
        }),
    )
}

#[test]
fn index_nested_three_deep_is_refused() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "deep");
    registry.push_image("deep", &image.manifest.digest, &image);
    let mut top = image.manifest.clone();
    for _ in 0..3 {
        let idx = index_of(&top);
        registry.put_manifest("deep", &idx.digest, OCI_INDEX, &idx.data);
        top = idx;
    }
    registry.put_manifest("deep", "v1", OCI_INDEX, &top.data);
    let work = Work::new();
    let run = work.pull(&[
        "-q",
        "--platform",
        "linux/amd64",
        &registry.reference("deep", "v1"),
    ]);
    assert_clean_failure(&work, &run, &["deep:v1", "nested"]);
}

#[test]
fn index_nested_two_deep_is_followed() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "two deep");
    registry.push_image("deep2", &image.manifest.digest, &image);
    let inner = index_of(&image.manifest);
    registry.put_manifest("deep2", &inner.digest, OCI_INDEX, &inner.data);
    let outer = index_of(&inner);
    registry.put_manifest("deep2", "v1", OCI_INDEX, &outer.data);
    let work = Work::new();
    work.pull(&[
        "-q",
        "--platform",
        "linux/amd64",
        &registry.reference("deep2", "v1"),
    ])
    .success();
    let archive = Archive::open(&work.out().join(default_name(
        registry.port(),
        "deep2",
        "v1",
        "amd64",
    )));
    assert_docker_archive(
        &archive,
        &[Expected::tagged(&image, &registry.addr(), "deep2", "v1")],
    );
}

#[test]
fn index_with_no_manifests() {
    let registry = FakeRegistry::anonymous();
    let idx = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] });
    serve_manifest(&registry, "empty", OCI_INDEX, &idx);
    let work = Work::new();
    let run = work.pull(&[
        "-q",
        "--platform",
        "linux/amd64",
        &registry.reference("empty", "v1"),
    ]);
    assert_clean_failure(&work, &run, &["empty:v1", "linux/amd64"]);
}

#[test]
fn manifest_with_no_layers_is_a_valid_image() {
    let registry = FakeRegistry::anonymous();
    let image = ImageBuilder::new(Flavor::Oci)
        .label("layers", "none")
        .build();
    assert!(image.layers.is_empty());
    registry.push_image("nolayers", "v1", &image);
    let work = Work::new();
    pull_v1(&work, &registry, "nolayers").success();
    assert_default_archive(&work, &registry, &image, "nolayers", "v1");
}

/// A manifest whose `slot` (`config` or `layers.0`) claims `size` bytes.
fn huge_size_run(slot: &str, size: u64) {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "huge size");
    for blob in image.blobs() {
        registry.put_blob("huge", blob);
    }
    let mut manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
    let descriptor = match slot {
        "config" => &mut manifest["config"],
        _ => &mut manifest["layers"][0],
    };
    descriptor["size"] = json!(size);
    serve_manifest(&registry, "huge", OCI_MANIFEST, &manifest);
    let work = Work::new().with_timeout(Duration::from_secs(30));
    let started = Instant::now();
    let run = pull_v1(&work, &registry, "huge");
    assert_clean_failure(&work, &run, &["huge:v1"]);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn layer_size_u64_max_is_refused() {
    huge_size_run("layer", u64::MAX);
}

#[test]
fn config_size_u64_max_is_refused() {
    huge_size_run("config", u64::MAX);
}

#[test]
fn layer_size_larger_than_any_disk_is_refused() {
    huge_size_run("layer", 1 << 60);
}

#[test]
fn index_entry_size_u64_max_is_refused() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "entry size");
    registry.push_image("entry", &image.manifest.digest, &image);
    let mut entry = image.index_entry();
    entry["size"] = json!(u64::MAX);
    let idx = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] });
    serve_manifest(&registry, "entry", OCI_INDEX, &idx);
    let work = Work::new();
    let run = work.pull(&[
        "-q",
        "--platform",
        "linux/amd64",
        &registry.reference("entry", "v1"),
    ]);
    assert_clean_failure(&work, &run, &["entry:v1"]);
}

/// `count` entries, all naming `image` for linux/amd64.
fn index_repeating(image: &crate::support::image::Image, count: usize) -> Blob {
    let entries: Vec<Value> = (0..count).map(|_| image.index_entry()).collect();
    Blob::json(
        OCI_INDEX,
        &json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries }),
    )
}

/// GETs of the manifest `digest` the registry saw.
fn manifest_gets(registry: &FakeRegistry, digest: &str) -> usize {
    registry
        .manifest_requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/manifests/{digest}")))
        .count()
}

#[test]
fn index_listing_one_big_manifest_150_times_fetches_it_once() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "listed 150 times");
    for blob in image.blobs() {
        registry.put_blob("repeat", blob);
    }
    // A manifest just under the 4 MiB a manifest may have.
    let mut manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
    manifest["annotations"] = json!({ "padding": "x".repeat(4_000_000) });
    let manifest = Blob::json(OCI_MANIFEST, &manifest);
    let image = crate::support::image::Image {
        manifest: manifest.clone(),
        ..image
    };
    registry.put_manifest("repeat", &manifest.digest, OCI_MANIFEST, &manifest.data);
    let index = index_repeating(&image, 150);
    registry.put_manifest("repeat", "v1", OCI_INDEX, &index.data);
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let target = work.out().join("repeat.tar");

    let run = work.pull_to(&[
        "-q",
        "--platform",
        "all",
        "-f",
        "oci",
        "-o",
        target.to_str().unwrap(),
        &registry.reference("repeat", "v1"),
    ]);
    run.success();
    assert_eq!(
        manifest_gets(&registry, &manifest.digest),
        1,
        "a manifest listed 150 times should be fetched once"
    );
    let archive = Archive::open(&target);
    assert_eq!(
        archive.blob(&index.digest),
        &index.data[..],
        "the index changed"
    );
    assert_eq!(archive.blob(&manifest.digest), &manifest.data[..]);
    assert_eq!(archive.blob(&image.config.digest), &image.config.data[..]);
}

#[test]
fn index_of_more_than_1024_manifests_is_refused() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "listed 1025 times");
    registry.push_image("wide", &image.manifest.digest, &image);
    let index = index_repeating(&image, 1025);
    registry.put_manifest("wide", "v1", OCI_INDEX, &index.data);
    let work = Work::new();
    for args in [
        vec!["-q", "--platform", "linux/amd64"],
        vec!["-q", "--platform", "all", "-f", "oci"],
    ] {
        let reference = registry.reference("wide", "v1");
        let mut args = args.clone();
        args.push(&reference);
        let run = work.pull(&args);
        assert_clean_failure(
            &work,
            &run,
            &["wide:v1", "invalid index", "1025 manifests", "1024"],
        );
    }
    assert_eq!(manifest_gets(&registry, &image.manifest.digest), 0);
    assert_eq!(registry.total_blob_gets(), 0);
}

#[test]
fn config_over_64_mib_is_refused_before_it_is_downloaded() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "huge config");
    for blob in image.blobs() {
        registry.put_blob("bigconfig", blob);
    }
    let mut manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
    manifest["config"]["size"] = json!(300_000_000u64);
    serve_manifest(&registry, "bigconfig", OCI_MANIFEST, &manifest);
    let work = Work::new();
    let run = pull_v1(&work, &registry, "bigconfig");
    assert_clean_failure(
        &work,
        &run,
        &[
            "bigconfig:v1",
            "config",
            &image.config.digest,
            "300000000 bytes",
            "64 MiB",
        ],
    );
    assert_eq!(
        registry.blob_gets(&image.config.digest),
        0,
        "the oversized config was downloaded"
    );
}

/// `frames` copies of one zstd frame of `frame_size` zero bytes: a layer of a few kilobytes
/// that inflates to `frames * frame_size` bytes (a decoder reads on past the end of a frame, as
/// it must for real layers).
fn zstd_bomb(frame_size: usize, frames: usize) -> Blob {
    Blob::new(OCI_LAYER_ZSTD, zstd(&vec![0u8; frame_size]).repeat(frames))
}

/// `-f legacy` of an image whose one layer is a zstd bomb of about 34 KB that inflates to
/// 1 GiB: it must stop at the 64 MiB floor of the default ratio rule, long before the bomb is
/// spent, naming the layer and the flag that lifts the limit, with nothing left behind.
#[test]
fn legacy_zstd_bomb_stops_early() {
    let layer = zstd_bomb(64 << 20, 16);
    assert!(layer.size() < 64 * 1024, "{} bytes", layer.size());
    let registry = FakeRegistry::anonymous();
    let image = ImageBuilder::new(Flavor::Oci)
        .raw_layer(layer.clone(), sha256_digest(b"whatever the bomb claims"))
        .build();
    registry.push_image("bomb", "v1", &image);
    let work = Work::new().with_timeout(Duration::from_secs(90));
    let started = Instant::now();
    let run = work.pull(&["-q", "-f", "legacy", &registry.reference("bomb", "v1")]);
    run.assert_no_panic();
    assert_clean_failure(
        &work,
        &run,
        &[
            "bomb:v1",
            &format!("layer {}", layer.digest),
            "more than 64.0 MiB",
            "decompression bomb",
            "--max-layer-size",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the bomb took {:?} to stop",
        started.elapsed()
    );
}

/// Asserts that stderr holds no raw carriage return, escape or bidi override, and shows each
/// needle (the escaped text).
#[track_caller]
fn assert_escaped(run: &Run, needles: &[&str]) {
    run.expect_code(1);
    let raw: Vec<char> = run
        .stderr
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
        .collect();
    assert!(
        raw.is_empty(),
        "raw control characters {raw:?} reached the terminal: {:?}",
        run.stderr
    );
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "stderr lacks {needle:?}: {:?}",
            run.stderr
        );
    }
    assert!(!run.stdout.contains("Pulled"), "{}", run.stdout);
}

#[test]
fn registry_text_cannot_rewrite_the_terminal() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "denied");
    registry.push_image("evil", "v1", &image);
    // CR, then "erase the line", then a fake success.
    let body =
        r#"{"errors":[{"code":"DENIED","message":"x\r\u001b[2KPulled evil \u202egpj.exe"}]}"#;
    registry.inject(
        crate::support::registry::Fault::status("/v2/evil/manifests/v1", 403)
            .body(body)
            .times(usize::MAX),
    );
    let reference = registry.reference("evil", "v1");
    let work = Work::new();
    let shown = "DENIED x\\r\\x1b[2KPulled evil \\u{202e}gpj.exe";

    // Into a directory: the line reported for the failed image.
    let run = work.pull(&["-q", &reference]);
    assert_escaped(&run, &["evil:v1", "denied (403)", shown]);
    // Into one archive: the final error line.
    let target = work.out().join("evil.tar");
    let run = work.pull_to(&["-q", "-o", target.to_str().unwrap(), &reference]);
    assert_escaped(&run, &["evil:v1", "denied (403)", shown]);
    work.assert_no_output();

    // Platforms an index names, listed when none matches.
    let mut entry = image.index_entry();
    entry["platform"] = json!({ "os": "linux\u{1b}[2K", "architecture": "amd64\r" });
    let idx = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] });
    serve_manifest(&registry, "evil-index", OCI_INDEX, &idx);
    let run = work.pull(&[
        "-q",
        "--platform",
        "linux/s390x",
        &registry.reference("evil-index", "v1"),
    ]);
    assert_escaped(
        &run,
        &[
            "evil-index:v1",
            "available platforms: linux\\x1b[2k/amd64\\r",
        ],
    );
}
