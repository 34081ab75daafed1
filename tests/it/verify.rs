//! `docker-pull verify SOURCE...` on what the pulls write: every `-f` format, a bundle and a
//! `--platform all` layout verify; a flipped byte in a layer, a lying layer.tar and a truncated
//! archive fail with the blob named; `--json` has one object per image.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Run, Work};
use crate::support::image::{Flavor, Image, gzip, index, random_image, zstd};
use crate::support::registry::FakeRegistry;

/// `docker-pull -q -f FORMAT -o <work>/NAME REFS...`, expecting success.
#[track_caller]
fn pull(work: &Work, format: &str, name: &str, refs: &[&str]) -> PathBuf {
    let path = work.path(name);
    let mut args = vec!["-q", "-f", format, "-o", path.to_str().expect("utf-8")];
    args.extend_from_slice(refs);
    work.pull_to(&args).success();
    path
}

fn verify(work: &Work, extra: &[&str], sources: &[&Path]) -> Run {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    args.extend(sources.iter().map(|p| p.to_str().expect("utf-8")));
    work.run(&args)
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the bytes are in the archive")
}

/// Flips one byte of `blob` where it sits inside the file at `path`.
fn flip_inside(path: &Path, blob: &[u8]) {
    let mut data = std::fs::read(path).unwrap();
    let at = find(&data, blob) + blob.len() / 2;
    data[at] ^= 0x01;
    std::fs::write(path, data).unwrap();
}

fn setup() -> (FakeRegistry, Image, Image) {
    let registry = FakeRegistry::anonymous();
    let a = random_image(Flavor::Docker, 2, 20_000, 901);
    let b = random_image(Flavor::Oci, 3, 5_000, 902);
    registry.push_image("verify/a", "v1", &a);
    registry.push_image("verify/b", "v2", &b);
    (registry, a, b)
}

#[test]
fn every_format_a_bundle_and_a_layout_verify() {
    let (registry, a, b) = setup();
    let work = Work::new();
    let (ra, rb) = (
        registry.reference("verify/a", "v1"),
        registry.reference("verify/b", "v2"),
    );
    let mut sources = Vec::new();
    for format in ["docker", "legacy", "oci"] {
        sources.push(pull(&work, format, &format!("{format}.tar"), &[&ra]));
    }
    sources.push(pull(&work, "oci-dir", "layout", &[&ra]));
    sources.push(pull(&work, "docker", "bundle.tar", &[&ra, &rb]));
    sources.push(pull(&work, "legacy", "bundle-legacy.tar", &[&ra, &rb]));
    // Compressed whole, read as they are.
    let tar = std::fs::read(&sources[0]).unwrap();
    let gz = work.path("docker.tar.gz");
    std::fs::write(&gz, gzip(&tar)).unwrap();
    let zst = work.path("docker.tar.zst");
    std::fs::write(&zst, zstd(&tar)).unwrap();
    sources.extend([gz, zst]);

    let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let run = verify(&work, &["-q"], &refs);
    run.success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 10, "one line per image\n{}", run.stdout);
    for line in &lines {
        assert!(line.starts_with("ok  "), "{line}\n{}", run.stderr);
    }
    assert!(lines[0].contains(&ra), "{}", lines[0]);
    assert!(lines[0].contains("linux/amd64  2 layers"), "{}", lines[0]);
    assert!(lines[0].contains(&a.manifest.digest), "{}", lines[0]);
    // legacy: no manifest, the config digest names the image.
    assert!(lines[1].contains(&a.config.digest), "{}", lines[1]);
    assert!(lines[5].contains(&b.manifest.digest), "{}", lines[5]);
}

#[test]
fn a_platform_all_layout_verifies() {
    let registry = FakeRegistry::anonymous();
    let amd64 = random_image(Flavor::Oci, 1, 3_000, 911);
    let mut arm64 = random_image(Flavor::Oci, 1, 3_000, 912);
    arm64 = crate::support::image::ImageBuilder::new(Flavor::Oci)
        .platform("linux", "arm64", Some("v8"))
        .raw_layer(arm64.layers[0].clone(), arm64.diff_ids[0].clone())
        .build();
    let multi = index(Flavor::Oci, vec![amd64, arm64], true);
    registry.push_index("verify/multi", "v1", &multi);
    let work = Work::new();
    let reference = registry.reference("verify/multi", "v1");
    let dir = work.path("layout");
    work.pull_to(&[
        "-q",
        "--platform",
        "all",
        "-f",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        &reference,
    ])
    .success();
    let run = verify(&work, &["--json"], &[&dir]);
    let report = run.success().json();
    assert_eq!(report["digest"], multi.index.digest, "{report}");
    assert_eq!(report["platform"], "linux/amd64,linux/arm64/v8", "{report}");
    // Two images of one layer each, and the attestation's statement.
    assert_eq!(report["layers"], 3, "{report}");
}

#[test]
fn a_flipped_byte_in_a_layer_fails_naming_the_blob() {
    let (registry, a, _) = setup();
    let work = Work::new();
    let reference = registry.reference("verify/a", "v1");
    let layer = &a.layers[1];
    for format in ["docker", "oci"] {
        let path = pull(&work, format, &format!("{format}.tar"), &[&reference]);
        flip_inside(&path, &layer.data);
        let run = verify(&work, &["-q"], &[&path]);
        run.expect_code(1);
        assert!(run.stdout.starts_with("FAILED  "), "{}", run.stdout);
        let want = format!(
            "layer blobs/sha256/{}: expected {}, found sha256:",
            layer.hex(),
            layer.digest
        );
        assert!(
            run.stderr.contains(&want),
            "-f {format}: {want:?} in\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&reference),
            "the image is named\n{}",
            run.stderr
        );
    }
    // A layout: one byte of the layer file.
    let dir = pull(&work, "oci-dir", "layout", &[&reference]);
    let file = dir.join("blobs/sha256").join(layer.hex());
    let mut data = std::fs::read(&file).unwrap();
    data[7] ^= 0x01;
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, data).unwrap();
    let run = verify(&work, &["-q"], &[&dir]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&layer.digest.to_string()),
        "{}",
        run.stderr
    );
}

#[test]
fn a_legacy_layer_that_is_not_its_diff_id_fails() {
    let (registry, a, _) = setup();
    let work = Work::new();
    let reference = registry.reference("verify/a", "v1");
    let path = pull(&work, "legacy", "legacy.tar", &[&reference]);
    // The uncompressed layer.tar holds the layer's tar: change a byte of its first file.
    let mut data = std::fs::read(&path).unwrap();
    let tar = crate::support::image::gunzip(&a.layers[0].data);
    let at = find(&data, &tar[512..1024]) + 100;
    data[at] ^= 0x01;
    std::fs::write(&path, data).unwrap();
    let run = verify(&work, &["-q"], &[&path]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains(&format!("but the config's diff_id is {}", a.diff_ids[0])),
        "{}",
        run.stderr
    );
}

#[test]
fn a_truncated_archive_fails() {
    let (registry, _, _) = setup();
    let work = Work::new();
    let reference = registry.reference("verify/a", "v1");
    for format in ["docker", "legacy"] {
        let path = pull(&work, format, &format!("{format}.tar"), &[&reference]);
        let data = std::fs::read(&path).unwrap();
        std::fs::write(&path, &data[..data.len() / 2]).unwrap();
        let run = verify(&work, &[], &[&path]);
        run.expect_code(1);
        assert!(
            run.stderr.contains("truncated"),
            "-f {format}: {}",
            run.stderr
        );
        let gz = work.path(&format!("{format}-cut.tar.gz"));
        std::fs::write(&gz, gzip(&data[..data.len() / 2])).unwrap();
        verify(&work, &["-q"], &[&gz]).expect_code(1);
    }
}

#[test]
fn json_has_an_object_per_image_with_its_problems() {
    let (registry, a, b) = setup();
    let work = Work::new();
    let (ra, rb) = (
        registry.reference("verify/a", "v1"),
        registry.reference("verify/b", "v2"),
    );
    let bundle = pull(&work, "docker", "bundle.tar", &[&ra, &rb]);
    let run = verify(&work, &["--json"], &[&bundle]);
    let objects = run.success().json_lines();
    assert_eq!(objects.len(), 2);
    for (object, (reference, image)) in objects.iter().zip([(&ra, &a), (&rb, &b)]) {
        for key in [
            "source", "name", "names", "platform", "digest", "layers", "bytes", "problems",
        ] {
            assert!(object.get(key).is_some(), "{key} missing: {object}");
        }
        assert_eq!(object["name"], reference.as_str());
        assert_eq!(object["platform"], "linux/amd64");
        assert_eq!(object["digest"], image.manifest.digest);
        assert_eq!(object["layers"], image.layers.len());
        assert_eq!(object["problems"], Value::Array(vec![]));
        let bytes = image.manifest.size() + image.blob_bytes();
        assert_eq!(object["bytes"], bytes, "{object}");
    }
    flip_inside(&bundle, &b.layers[0].data);
    let run = verify(&work, &["--json"], &[&bundle, &work.path("missing.tar")]);
    run.expect_code(1);
    let objects = run.json_lines();
    assert_eq!(objects.len(), 3, "{}", run.stdout);
    assert_eq!(objects[0]["problems"], Value::Array(vec![]));
    let problems = objects[1]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].as_str().unwrap().contains(&b.layers[0].digest));
    assert_eq!(objects[2]["name"], Value::Null);
    assert_eq!(objects[2]["problems"].as_array().unwrap().len(), 1);
}

#[test]
fn verify_without_a_source_is_a_usage_error() {
    let work = Work::new();
    work.run(&["verify"]).expect_code(2);
    work.run(&["verify", "--no-such-flag", "x.tar"])
        .expect_code(2);
}
