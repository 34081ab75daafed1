//! Several images in one run: one bundle archive (`-o x.tar`) or one archive each (`-o DIR`).

use crate::common::{Archive, Expected, Work, assert_docker_archive, default_name, files_in};
use crate::support::image::{Flavor, Image, ImageBuilder, random_image};
use crate::support::registry::FakeRegistry;

/// Two images sharing their first layer.
fn two_images() -> (Image, Image) {
    let base = random_image(Flavor::Docker, 1, 50_000, 21);
    let extra = random_image(Flavor::Oci, 1, 3_000, 22);
    let a = ImageBuilder::new(Flavor::Docker)
        .raw_layer(base.layers[0].clone(), base.diff_ids[0].clone())
        .label("image", "a")
        .build();
    let b = ImageBuilder::new(Flavor::Oci)
        .raw_layer(base.layers[0].clone(), base.diff_ids[0].clone())
        .raw_layer(extra.layers[0].clone(), extra.diff_ids[0].clone())
        .label("image", "b")
        .build();
    (a, b)
}

#[test]
fn two_images_into_one_bundle() {
    let registry = FakeRegistry::anonymous();
    let (a, b) = two_images();
    registry.push_image("first", "v1", &a);
    registry.push_image("second/app", "v2", &b);
    let work = Work::new();
    let bundle = work.path("bundle.tar");

    work.pull_to(&[
        "-q",
        "-o",
        bundle.to_str().expect("utf-8"),
        &registry.reference("first", "v1"),
        &registry.reference("second/app", "v2"),
    ])
    .success();

    let archive = Archive::open(&bundle);
    assert_docker_archive(
        &archive,
        &[
            Expected::tagged(&a, &registry.addr(), "first", "v1"),
            Expected::tagged(&b, &registry.addr(), "second/app", "v2"),
        ],
    );
    let shared = a.layers[0].hex();
    let copies = archive
        .blob_names()
        .iter()
        .filter(|n| n.as_str() == shared)
        .count();
    assert_eq!(copies, 1, "the shared layer is stored {copies} times");
    assert_eq!(
        registry.blob_gets(&a.layers[0].digest),
        1,
        "the shared layer was downloaded more than once"
    );
    let leftovers: Vec<String> = files_in(work.dir.path())
        .into_iter()
        .filter(|n| !["bundle.tar", "cache", "home"].contains(&n.as_str()))
        .collect();
    assert!(
        leftovers.is_empty(),
        "stray files beside the bundle: {leftovers:?}"
    );
}

#[test]
fn two_images_into_a_directory() {
    let registry = FakeRegistry::anonymous();
    let (a, b) = two_images();
    registry.push_image("first", "v1", &a);
    registry.push_image("second/app", "v2", &b);
    let work = Work::new();

    work.pull(&[
        "-q",
        &registry.reference("first", "v1"),
        &registry.reference("second/app", "v2"),
    ])
    .success();

    let name_a = default_name(registry.port(), "first", "v1", "amd64");
    let name_b = default_name(registry.port(), "second/app", "v2", "amd64");
    let mut want = vec![name_a.clone(), name_b.clone()];
    want.sort();
    assert_eq!(files_in(&work.out()), want);
    assert_docker_archive(
        &Archive::open(&work.out().join(name_a)),
        &[Expected::tagged(&a, &registry.addr(), "first", "v1")],
    );
    assert_docker_archive(
        &Archive::open(&work.out().join(name_b)),
        &[Expected::tagged(&b, &registry.addr(), "second/app", "v2")],
    );
}

#[test]
fn same_image_under_two_tags_in_a_bundle() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 4_000, 23);
    registry.push_image("app", "v1", &image);
    registry.push_image("app", "stable", &image);
    let work = Work::new();
    let bundle = work.path("bundle.tar");

    work.pull_to(&[
        "-q",
        "-o",
        bundle.to_str().expect("utf-8"),
        &registry.reference("app", "v1"),
        &registry.reference("app", "stable"),
    ])
    .success();

    let archive = Archive::open(&bundle);
    assert_docker_archive(
        &archive,
        &[
            Expected::tagged(&image, &registry.addr(), "app", "v1"),
            Expected::tagged(&image, &registry.addr(), "app", "stable"),
        ],
    );
}

#[test]
fn bundle_with_a_failed_image_exits_1_and_leaves_no_temp_file() {
    let registry = FakeRegistry::anonymous();
    let (a, _) = two_images();
    registry.push_image("first", "v1", &a);
    let work = Work::new();
    let bundle = work.path("bundle.tar");

    let run = work.pull_to(&[
        "-q",
        "-o",
        bundle.to_str().expect("utf-8"),
        &registry.reference("first", "v1"),
        &registry.reference("missing", "v1"),
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("missing"),
        "the message should name the failed image: {}",
        run.stderr
    );
    // The contract does not say whether the good image still goes into the bundle; if a
    // bundle is written it must be complete and valid, and no temporary file may remain.
    if bundle.exists() {
        assert_docker_archive(
            &Archive::open(&bundle),
            &[Expected::tagged(&a, &registry.addr(), "first", "v1")],
        );
    }
    let leftovers: Vec<String> = files_in(work.dir.path())
        .into_iter()
        .filter(|n| !["cache", "home", "bundle.tar"].contains(&n.as_str()))
        .collect();
    assert!(
        leftovers.is_empty(),
        "a failed bundle left files behind: {leftovers:?}"
    );
}

#[test]
fn directory_output_keeps_going_past_a_failed_image() {
    let registry = FakeRegistry::anonymous();
    let (a, _) = two_images();
    registry.push_image("first", "v1", &a);
    let work = Work::new();

    let run = work.pull(&[
        "-q",
        &registry.reference("missing", "v1"),
        &registry.reference("first", "v1"),
    ]);
    run.expect_code(1);
    assert_eq!(
        files_in(&work.out()),
        vec![default_name(registry.port(), "first", "v1", "amd64")]
    );
}
