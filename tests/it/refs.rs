//! Image references: bad ones are usage errors (exit 2, one `error:` line, no network), digests
//! pin the manifest, `name:tag@digest` keeps the tag.

use crate::common::{Archive, Expected, Work, assert_docker_archive, files_in};
use crate::support::image::{Flavor, small_image};
use crate::support::registry::FakeRegistry;

#[track_caller]
fn assert_bad_reference(reference: &str) {
    let registry = FakeRegistry::anonymous();
    let reference = reference.replace("ADDR", &registry.addr());
    let work = Work::new();
    let run = work.pull(&["-q", &reference]);
    run.expect_code(2);
    let stderr = run.stderr.trim_end();
    assert!(
        stderr.starts_with("error:"),
        "{reference:?}: stderr should start with `error:`: {stderr:?}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{reference:?}: expected one line on stderr: {stderr:?}"
    );
    assert!(
        run.stdout.trim().is_empty(),
        "{reference:?}: nothing on stdout expected: {:?}",
        run.stdout
    );
    assert!(
        registry.requests().is_empty(),
        "{reference:?}: the registry was contacted: {:?}",
        registry.requests()
    );
    work.assert_no_output();
}

#[test]
fn uppercase_repository_is_rejected() {
    assert_bad_reference("ADDR/MyApp:latest");
}

#[test]
fn empty_reference_is_rejected() {
    assert_bad_reference("");
}

#[test]
fn two_colons_are_rejected() {
    assert_bad_reference("a:b:c");
}

#[test]
fn malformed_digest_is_rejected() {
    assert_bad_reference("ADDR/app@sha256:xyz");
}

#[test]
fn short_digest_is_rejected() {
    assert_bad_reference("ADDR/app@sha256:0123456789abcdef");
}

#[test]
fn bad_tag_is_rejected() {
    assert_bad_reference("ADDR/app:-leading-dash");
}

#[test]
fn bad_reference_in_a_batch_stops_before_any_download() {
    let registry = FakeRegistry::anonymous();
    registry.push_image("good", "v1", &small_image(Flavor::Docker, "good"));
    let work = Work::new();
    let run = work.pull(&["-q", &registry.reference("good", "v1"), "Bad//Ref"]);
    run.expect_code(2);
    assert!(
        run.stderr.trim_start().starts_with("error:"),
        "stderr: {}",
        run.stderr
    );
    assert_eq!(
        registry.total_blob_gets(),
        0,
        "references must be validated before pulling"
    );
}

#[test]
fn no_image_is_a_usage_error() {
    let work = Work::new();
    let run = work.pull(&["-q"]);
    run.expect_code(2);
    assert!(
        run.stderr.trim_start().starts_with("error:"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let work = Work::new();
    let run = work.pull(&["--no-such-flag", "127.0.0.1:1/x:y"]);
    run.expect_code(2);
    assert!(
        run.stderr.trim_start().starts_with("error:"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn tag_and_digest_pull_by_digest_and_keep_the_tag() {
    let registry = FakeRegistry::anonymous();
    let pinned = small_image(Flavor::Docker, "pinned");
    let moved = small_image(Flavor::Docker, "tag moved on");
    registry.push_image("app", &pinned.manifest.digest, &pinned);
    registry.push_image("app", "v1", &moved);
    let work = Work::new();
    let reference = format!("{}/app:v1@{}", registry.addr(), pinned.manifest.digest);

    let run = work.pull(&["-q", "--json", &reference]);
    run.success();

    let json = run.json();
    assert_eq!(json["digest"], pinned.manifest.digest.as_str(), "{json}");
    assert_eq!(json["image"], reference.as_str(), "{json}");
    let manifest_paths: Vec<String> = registry
        .manifest_requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(
        manifest_paths
            .iter()
            .all(|p| p.ends_with(&pinned.manifest.digest)),
        "the manifest must be fetched by digest only: {manifest_paths:?}"
    );
    let name = format!("127.0.0.1_{}_app_v1_amd64.tar", registry.port());
    assert_eq!(files_in(&work.out()), vec![name.clone()]);
    assert_docker_archive(
        &Archive::open(&work.out().join(name)),
        &[Expected::tagged(&pinned, &registry.addr(), "app", "v1")],
    );
    assert_eq!(
        registry.blob_gets(&moved.layers[0].digest),
        0,
        "the tag's current image was downloaded"
    );
}

#[test]
fn digest_only_reference() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "by digest");
    registry.push_image("app", &image.manifest.digest, &image);
    let work = Work::new();
    let reference = registry.digest_reference("app", &image.manifest.digest);

    let run = work.pull(&["-q", "--json", &reference]);
    run.success();
    let json = run.json();
    assert_eq!(json["resolved"], reference.as_str(), "{json}");

    let name = format!(
        "127.0.0.1_{}_app_sha256-{}_amd64.tar",
        registry.port(),
        &image.manifest.hex()[..12]
    );
    assert_eq!(files_in(&work.out()), vec![name.clone()]);
    assert_docker_archive(
        &Archive::open(&work.out().join(name)),
        &[Expected::digest_only(&image)],
    );
}

#[test]
fn pinned_digest_mismatch_fails() {
    let registry = FakeRegistry::anonymous();
    let wanted = small_image(Flavor::Docker, "wanted");
    let served = small_image(Flavor::Docker, "served instead");
    registry.push_image("app", "v1", &served);
    // The registry answers the wanted digest with other bytes.
    registry.put_manifest(
        "app",
        &wanted.manifest.digest,
        &served.manifest.media_type,
        &served.manifest.data,
    );
    let work = Work::new();

    let run = work.pull(&[
        "-q",
        &registry.digest_reference("app", &wanted.manifest.digest),
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.to_lowercase().contains("digest"),
        "the message should mention the digest: {}",
        run.stderr
    );
    work.assert_no_output();
    assert_eq!(
        registry.total_blob_gets(),
        0,
        "nothing may be downloaded for an unverified manifest"
    );
}
