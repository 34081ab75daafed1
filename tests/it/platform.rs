//! Platform selection from OCI indexes and Docker manifest lists.

use serde_json::json;

use crate::common::{Archive, Expected, Work, assert_docker_archive, files_in};
use crate::support::image::{
    Blob, Flavor, Image, ImageBuilder, Index, LayerBuilder, attestation_for, index,
};
use crate::support::registry::FakeRegistry;

fn platform_image(flavor: Flavor, os: &str, arch: &str, variant: Option<&str>) -> Image {
    let label = format!("{os}/{arch}/{}", variant.unwrap_or("-"));
    ImageBuilder::new(flavor)
        .platform(os, arch, variant)
        .layer(LayerBuilder::new().file("platform.txt", label.clone().into_bytes(), 0o644))
        .label("platform", &label)
        .build()
}

/// amd64, arm/v6 (before v7, so "the first arm" is wrong), arm/v7, arm64/v8, plus an attestation.
fn multi(flavor: Flavor) -> Index {
    index(
        flavor,
        vec![
            platform_image(flavor, "linux", "amd64", None),
            platform_image(flavor, "linux", "arm", Some("v6")),
            platform_image(flavor, "linux", "arm", Some("v7")),
            platform_image(flavor, "linux", "arm64", Some("v8")),
        ],
        flavor == Flavor::Oci,
    )
}

/// Pulls `repo:multi` with `args`, returns the JSON line and checks the archive holds exactly `want`.
#[track_caller]
fn pull_expect(
    registry: &FakeRegistry,
    idx: &Index,
    args: &[&str],
    want: &str,
    file_suffix: &str,
) -> serde_json::Value {
    let work = Work::new();
    let mut all = vec!["-q", "--json"];
    all.extend_from_slice(args);
    let reference = registry.reference("multi", "v1");
    all.push(&reference);
    let run = work.pull(&all);
    run.success();
    let image = idx
        .image_for(want)
        .unwrap_or_else(|| panic!("test index has no {want}"));
    let json = run.json();
    assert_eq!(json["platform"], want, "chosen platform: {json}");
    assert_eq!(
        json["digest"],
        idx.index.digest.as_str(),
        "digest must be the index digest: {json}"
    );
    assert_eq!(
        json["manifest_digest"],
        image.manifest.digest.as_str(),
        "manifest_digest: {json}"
    );
    assert_eq!(
        json["image_id"],
        image.config.digest.as_str(),
        "image_id: {json}"
    );

    let name = format!("127.0.0.1_{}_multi_v1_{file_suffix}.tar", registry.port());
    assert_eq!(
        files_in(&work.out()),
        vec![name.clone()],
        "archive name for {want}"
    );
    let archive = Archive::open(&work.out().join(&name));
    assert_docker_archive(
        &archive,
        &[Expected::tagged(image, &registry.addr(), "multi", "v1").allow(&idx.index)],
    );
    json
}

fn serve(idx: &Index) -> FakeRegistry {
    let registry = FakeRegistry::anonymous();
    registry.push_index("multi", "v1", idx);
    registry
}

#[test]
fn oci_index_defaults_to_linux_amd64() {
    let idx = multi(Flavor::Oci);
    let registry = serve(&idx);
    pull_expect(&registry, &idx, &[], "linux/amd64", "amd64");
}

#[test]
fn docker_manifest_list_defaults_to_linux_amd64() {
    let idx = multi(Flavor::Docker);
    let registry = serve(&idx);
    pull_expect(&registry, &idx, &[], "linux/amd64", "amd64");
}

#[test]
fn platform_linux_arm64() {
    let idx = multi(Flavor::Oci);
    let registry = serve(&idx);
    pull_expect(
        &registry,
        &idx,
        &["--platform", "linux/arm64"],
        "linux/arm64/v8",
        "arm64_v8",
    );
}

#[test]
fn arch_aarch64_is_arm64() {
    let idx = multi(Flavor::Docker);
    let registry = serve(&idx);
    pull_expect(
        &registry,
        &idx,
        &["-a", "aarch64"],
        "linux/arm64/v8",
        "arm64_v8",
    );
}

#[test]
fn arch_x86_64_is_amd64() {
    let idx = multi(Flavor::Oci);
    let registry = serve(&idx);
    pull_expect(
        &registry,
        &idx,
        &["--arch", "x86_64"],
        "linux/amd64",
        "amd64",
    );
}

#[test]
fn platform_linux_arm_is_v7() {
    let idx = multi(Flavor::Oci);
    let registry = serve(&idx);
    pull_expect(
        &registry,
        &idx,
        &["--platform", "linux/arm"],
        "linux/arm/v7",
        "arm_v7",
    );
}

#[test]
fn explicit_variant_v6() {
    let idx = multi(Flavor::Docker);
    let registry = serve(&idx);
    pull_expect(
        &registry,
        &idx,
        &["--platform", "linux/arm/v6"],
        "linux/arm/v6",
        "arm_v6",
    );
}

#[test]
fn only_the_chosen_platform_is_downloaded() {
    let idx = multi(Flavor::Oci);
    let registry = serve(&idx);
    pull_expect(
        &registry,
        &idx,
        &["--platform", "linux/arm/v7"],
        "linux/arm/v7",
        "arm_v7",
    );
    let chosen = idx.image_for("linux/arm/v7").expect("arm/v7");
    for image in idx.images.iter().chain(&idx.extra_manifests) {
        for blob in image.blobs() {
            let gets = registry.blob_gets(&blob.digest);
            if std::ptr::eq(image, chosen) {
                assert_eq!(
                    gets, 1,
                    "blob {} of the chosen image fetched {gets} times",
                    blob.digest
                );
            } else {
                assert_eq!(
                    gets,
                    0,
                    "blob {} of {} fetched",
                    blob.digest,
                    image.platform_string()
                );
            }
        }
    }
}

/// An index whose *first* entry is an attestation (platform unknown/unknown) for amd64.
fn attestation_first() -> Index {
    let amd64 = platform_image(Flavor::Oci, "linux", "amd64", None);
    let arm64 = platform_image(Flavor::Oci, "linux", "arm64", Some("v8"));
    let attestation = attestation_for(&amd64);
    let mut att_entry = attestation.index_entry();
    att_entry["annotations"] = json!({
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": amd64.manifest.digest,
    });
    let value = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [att_entry, arm64.index_entry(), amd64.index_entry()],
    });
    Index {
        index: Blob::json("application/vnd.oci.image.index.v1+json", &value),
        images: vec![amd64, arm64],
        extra_manifests: vec![attestation],
    }
}

#[test]
fn attestation_entry_is_never_chosen() {
    let idx = attestation_first();
    let registry = serve(&idx);
    pull_expect(&registry, &idx, &[], "linux/amd64", "amd64");
    let attestation = &idx.extra_manifests[0];
    let touched: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| {
            r.path.ends_with(&attestation.manifest.digest)
                || attestation
                    .blobs()
                    .iter()
                    .any(|b| r.path.ends_with(&b.digest))
        })
        .collect();
    assert!(
        touched.is_empty(),
        "the attestation was fetched: {touched:#?}"
    );
}

#[test]
fn unknown_platform_is_not_selectable() {
    let idx = attestation_first();
    let registry = serve(&idx);
    let work = Work::new();
    let run = work.pull(&[
        "-q",
        "--platform",
        "unknown/unknown",
        &registry.reference("multi", "v1"),
    ]);
    assert_ne!(
        run.code,
        Some(0),
        "unknown/unknown must not select the attestation:\n{}",
        run.stdout
    );
    work.assert_no_output();
}

#[test]
fn no_match_lists_available_platforms() {
    let idx = multi(Flavor::Oci);
    let registry = serve(&idx);
    let work = Work::new();

    let run = work.pull(&[
        "-q",
        "--platform",
        "linux/s390x",
        &registry.reference("multi", "v1"),
    ]);
    run.expect_code(1);

    assert!(
        run.stderr.contains("linux/s390x"),
        "the message should name the wanted platform: {}",
        run.stderr
    );
    for platform in [
        "linux/amd64",
        "linux/arm/v6",
        "linux/arm/v7",
        "linux/arm64/v8",
    ] {
        assert!(
            run.stderr.contains(platform),
            "the message should list {platform}: {}",
            run.stderr
        );
    }
    assert!(
        !run.stderr.contains("unknown/unknown"),
        "attestations are not platforms: {}",
        run.stderr
    );
    work.assert_no_output();
    assert_eq!(
        registry.total_blob_gets(),
        0,
        "nothing should be downloaded"
    );
}

#[test]
fn windows_entries_are_not_linux() {
    let flavor = Flavor::Docker;
    let windows = platform_image(flavor, "windows", "amd64", None);
    let linux = platform_image(flavor, "linux", "amd64", None);
    // Windows first: a matcher that ignores the OS picks the wrong image.
    let idx = index(flavor, vec![windows, linux], false);
    let registry = serve(&idx);
    pull_expect(&registry, &idx, &[], "linux/amd64", "amd64");
}

#[test]
fn malformed_platform_is_a_usage_error() {
    let idx = multi(Flavor::Oci);
    let registry = serve(&idx);
    for platform in ["linux/amd64/v3/extra", "all"] {
        let work = Work::new();
        let run = work.pull(&[
            "-q",
            "--platform",
            platform,
            &registry.reference("multi", "v1"),
        ]);
        run.expect_code(2);
        assert!(
            run.stderr.trim_start().starts_with("error:"),
            "--platform {platform}: {}",
            run.stderr
        );
    }
    assert_eq!(
        registry.total_blob_gets(),
        0,
        "nothing should be downloaded on a usage error"
    );
}

#[test]
fn index_pinned_by_digest() {
    let idx = multi(Flavor::Oci);
    let registry = serve(&idx);
    let work = Work::new();
    let reference = registry.digest_reference("multi", &idx.index.digest);

    let run = work.pull(&["-q", "--json", "--platform", "linux/arm/v7", &reference]);
    run.success();

    let json = run.json();
    let image = idx.image_for("linux/arm/v7").expect("arm/v7");
    assert_eq!(json["digest"], idx.index.digest.as_str(), "{json}");
    assert_eq!(
        json["manifest_digest"],
        image.manifest.digest.as_str(),
        "{json}"
    );
    let name = format!(
        "127.0.0.1_{}_multi_sha256-{}_arm_v7.tar",
        registry.port(),
        &idx.index.hex()[..12]
    );
    assert_eq!(files_in(&work.out()), vec![name.clone()]);
    assert_docker_archive(
        &Archive::open(&work.out().join(name)),
        &[Expected::digest_only(image).allow(&idx.index)],
    );
}

/// `--platform A,B` keeps those platforms (and the attestation of a kept one) in a new index;
/// the report gives the new digest and the registry's; nothing of the others is downloaded.
#[test]
fn a_platform_list_keeps_those_in_a_new_index() {
    let idx = multi(Flavor::Oci);
    let registry = serve(&idx);
    let work = Work::new();
    let layout = work.path("layout");
    let run = work.pull_to(&[
        "--json",
        "-f",
        "oci-dir",
        "--platform",
        "linux/amd64, linux/arm64",
        "-o",
        layout.to_str().unwrap(),
        &registry.reference("multi", "v1"),
    ]);
    run.success();
    let json = run.json();
    assert_eq!(json["registry_digest"], idx.index.digest.as_str(), "{json}");
    let digest = json["digest"].as_str().unwrap().to_string();
    assert_ne!(digest, idx.index.digest, "{json}");
    assert_eq!(json["platform"], "linux/amd64,linux/arm64", "{json}");
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"][0]["digest"], digest.as_str(), "{top}");
    let blob = std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap();
    assert_eq!(
        crate::support::image::sha256_digest(&blob),
        digest,
        "the index blob is what the report names"
    );
    let index: serde_json::Value = serde_json::from_slice(&blob).unwrap();
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    let amd64 = idx.image_for("linux/amd64").unwrap();
    let arm64 = idx.image_for("linux/arm64/v8").unwrap();
    let attestation = &idx.extra_manifests[0];
    assert_eq!(
        listed,
        [
            &amd64.manifest.digest,
            &arm64.manifest.digest,
            &attestation.manifest.digest
        ],
        "{index}"
    );
    for left in [
        idx.image_for("linux/arm/v6").unwrap(),
        idx.image_for("linux/arm/v7").unwrap(),
    ] {
        for blob in std::iter::once(&left.config).chain(&left.layers) {
            assert_eq!(
                registry.blob_gets(&blob.digest),
                0,
                "{} was downloaded",
                blob.digest
            );
        }
    }
    // The text report says the index is new.
    let run = work.pull_to(&[
        "-f",
        "oci",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        "list.tar",
        &registry.reference("multi", "v1"),
    ]);
    run.success();
    assert!(
        run.stdout
            .contains(&format!("the registry's is {}", idx.index.digest)),
        "{}",
        run.stdout
    );

    // One platform the index lacks fails the pull, naming those it has; -f docker holds one.
    let run = work.pull_to(&[
        "-f",
        "oci",
        "--platform",
        "linux/amd64,linux/s390x",
        "-o",
        "x.tar",
        &registry.reference("multi", "v1"),
    ]);
    run.expect_code(1);
    assert!(run.stderr.contains("linux/arm64/v8"), "{}", run.stderr);
    let run = work.pull_to(&[
        "--platform",
        "linux/amd64,linux/arm64",
        &registry.reference("multi", "v1"),
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("only -f oci and -f oci-dir"),
        "{}",
        run.stderr
    );
}
