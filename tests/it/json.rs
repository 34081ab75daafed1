//! `--json`: one object per image per line, with the contract's fields and types, and nothing else
//! on stdout.

use crate::common::Work;
use crate::support::image::{Flavor, ImageBuilder, index, random_image};
use crate::support::registry::FakeRegistry;

#[test]
fn fields_and_types() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 2, 12_345, 31);
    registry.push_image("json/app", "v9", &image);
    let work = Work::new();
    let reference = registry.reference("json/app", "v9");

    let run = work.pull(&["--json", &reference]);
    run.success();
    let json = run.json();

    let object = json
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {json}"));
    for key in [
        "image",
        "resolved",
        "digest",
        "manifest_digest",
        "image_id",
        "platform",
        "format",
        "output",
        "layers",
        "bytes_downloaded",
        "bytes_from_cache",
        "cache_hits",
        "seconds",
    ] {
        assert!(object.contains_key(key), "missing {key}: {json}");
    }
    assert_eq!(json["image"], reference.as_str(), "{json}");
    assert_eq!(json["resolved"], reference.as_str(), "{json}");
    assert_eq!(json["digest"], image.manifest.digest.as_str(), "{json}");
    assert_eq!(
        json["manifest_digest"],
        image.manifest.digest.as_str(),
        "{json}"
    );
    assert_eq!(json["image_id"], image.config.digest.as_str(), "{json}");
    assert_eq!(json["platform"], "linux/amd64", "{json}");
    assert_eq!(json["format"], "docker", "{json}");
    assert_eq!(json["layers"], 2, "{json}");
    assert!(json["layers"].is_u64(), "layers must be an integer: {json}");
    assert_eq!(json["bytes_downloaded"], image.blob_bytes(), "{json}");
    assert!(json["bytes_downloaded"].is_u64(), "{json}");
    assert_eq!(json["bytes_from_cache"], 0, "{json}");
    assert_eq!(json["cache_hits"], 0, "{json}");
    let seconds = json["seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("seconds must be a number: {json}"));
    assert!(json["seconds"].is_f64(), "seconds must be a float: {json}");
    assert!(
        (0.0..120.0).contains(&seconds),
        "seconds out of range: {json}"
    );
    let output = json["output"]
        .as_str()
        .unwrap_or_else(|| panic!("output must be a string: {json}"));
    let path = work.dir.path().join(output);
    assert!(path.is_file(), "output {output} is not a file");
    assert!(
        output.ends_with(&format!(
            "127.0.0.1_{}_json_app_v9_amd64.tar",
            registry.port()
        )),
        "output: {output}"
    );
}

#[test]
fn user_spelling_is_kept_in_image() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 100, 32);
    registry.push_image("app", "latest", &image);
    let work = Work::new();
    let written = format!("{}/app", registry.addr());

    let run = work.pull(&["--json", &written]);
    run.success();
    let json = run.json();
    assert_eq!(json["image"], written.as_str(), "{json}");
    assert_eq!(
        json["resolved"],
        registry.reference("app", "latest"),
        "{json}"
    );
}

#[test]
fn one_line_per_image_in_order() {
    let registry = FakeRegistry::anonymous();
    let a = random_image(Flavor::Docker, 1, 100, 33);
    let b = random_image(Flavor::Oci, 2, 100, 34);
    registry.push_image("a", "v1", &a);
    registry.push_image("b", "v1", &b);
    let work = Work::new();

    let run = work.pull(&[
        "--json",
        "-q",
        &registry.reference("a", "v1"),
        &registry.reference("b", "v1"),
    ]);
    run.success();
    let lines = run.json_lines();
    assert_eq!(lines.len(), 2, "stdout:\n{}", run.stdout);
    assert_eq!(
        lines[0]["manifest_digest"],
        a.manifest.digest.as_str(),
        "{}",
        lines[0]
    );
    assert_eq!(lines[0]["layers"], 1, "{}", lines[0]);
    assert_eq!(
        lines[1]["manifest_digest"],
        b.manifest.digest.as_str(),
        "{}",
        lines[1]
    );
    assert_eq!(lines[1]["layers"], 2, "{}", lines[1]);
}

#[test]
fn index_digest_and_platform_manifest_digest() {
    let registry = FakeRegistry::anonymous();
    let amd64 = random_image(Flavor::Oci, 1, 100, 35);
    let arm64_layer = random_image(Flavor::Oci, 1, 100, 36);
    let arm64 = ImageBuilder::new(Flavor::Oci)
        .platform("linux", "arm64", Some("v8"))
        .raw_layer(
            arm64_layer.layers[0].clone(),
            arm64_layer.diff_ids[0].clone(),
        )
        .build();
    let idx = index(Flavor::Oci, vec![amd64.clone(), arm64.clone()], true);
    registry.push_index("multi", "v1", &idx);
    let work = Work::new();

    let run = work.pull(&[
        "--json",
        "--platform",
        "linux/arm64/v8",
        &registry.reference("multi", "v1"),
    ]);
    run.success();
    let json = run.json();
    assert_eq!(json["digest"], idx.index.digest.as_str(), "{json}");
    assert_eq!(
        json["manifest_digest"],
        arm64.manifest.digest.as_str(),
        "{json}"
    );
    assert_eq!(json["image_id"], arm64.config.digest.as_str(), "{json}");
    assert_eq!(json["platform"], "linux/arm64/v8", "{json}");
}

#[test]
fn failed_image_in_a_batch_still_reports_the_good_one() {
    let registry = FakeRegistry::anonymous();
    let good = random_image(Flavor::Docker, 1, 100, 37);
    registry.push_image("good", "v1", &good);
    let work = Work::new();

    let run = work.pull(&[
        "--json",
        &registry.reference("missing", "v1"),
        &registry.reference("good", "v1"),
    ]);
    run.expect_code(1);
    let lines = run.json_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["manifest_digest"] == good.manifest.digest.as_str()),
        "the good image's JSON line is missing: {}",
        run.stdout
    );
}
