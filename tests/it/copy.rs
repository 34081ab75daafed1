//! `copy IMAGE TARGET` and `copy -i FILE`: registry to registry through the cache, the manifest
//! byte for byte; a second copy downloads and uploads nothing; `--platform all` copies the
//! index whole; bad lines and targets are usage errors.

use crate::common::{Run, Work};
use crate::support::image::{Flavor, ImageBuilder, index, random_image, small_image};
use crate::support::registry::FakeRegistry;

fn copy(work: &Work, args: &[&str]) -> Run {
    let cache = work.cache();
    let mut all = vec!["copy", "--json", "--cache-dir", cache.to_str().unwrap()];
    all.extend_from_slice(args);
    work.run(&all)
}

#[test]
fn an_image_goes_registry_to_registry_byte_for_byte() {
    let image = small_image(Flavor::Docker, "copied");
    let from = FakeRegistry::anonymous();
    from.push_image("team/app", "v1", &image);
    let to = FakeRegistry::anonymous();
    let work = Work::new();
    let target = format!("{}/mirror/app", to.addr());
    let run = copy(&work, &[&from.reference("team/app", "v1"), &target]);
    run.success();
    let reports = run.json_lines();
    assert_eq!(reports.len(), 1, "{}", run.stdout);
    assert_eq!(reports[0]["digest"], image.manifest.digest);
    assert_eq!(
        to.manifest("mirror/app", "v1").unwrap().1,
        image.manifest.data
    );

    // Again: the cache serves the pull, the registry has every blob.
    let gets = from.total_blob_gets();
    let sent = to.upload_bytes();
    let again = copy(&work, &[&from.reference("team/app", "v1"), &target]);
    again.success();
    assert_eq!(from.total_blob_gets(), gets, "no blob downloaded again");
    assert_eq!(to.upload_bytes(), sent, "no blob uploaded again");
    assert_eq!(
        again.json_lines()[0]["blobs_skipped"],
        again.json_lines()[0]["blobs"]
    );
}

#[test]
fn a_list_of_pairs_and_a_whole_multi_platform_image() {
    let amd64 = random_image(Flavor::Oci, 1, 3_000, 931);
    let arm = random_image(Flavor::Oci, 1, 3_000, 932);
    let arm64 = ImageBuilder::new(Flavor::Oci)
        .platform("linux", "arm64", Some("v8"))
        .raw_layer(arm.layers[0].clone(), arm.diff_ids[0].clone())
        .build();
    let multi = index(Flavor::Oci, vec![amd64, arm64], false);
    let single = small_image(Flavor::Oci, "single");
    let from = FakeRegistry::anonymous();
    from.push_index("multi", "v1", &multi);
    from.push_image("single", "v2", &single);
    let to = FakeRegistry::anonymous();
    let work = Work::new();
    let list = work.path("pairs.txt");
    work.write_file(
        &list,
        &format!(
            "# image target\n{} {}/copies/multi\n\n{} {}/copies/single:renamed\n",
            from.reference("multi", "v1"),
            to.addr(),
            from.reference("single", "v2"),
            to.addr()
        ),
    );
    let run = copy(&work, &["--platform", "all", "-i", list.to_str().unwrap()]);
    run.success();
    assert_eq!(run.json_lines().len(), 2, "{}", run.stdout);
    assert_eq!(
        to.manifest("copies/multi", "v1").unwrap().1,
        multi.index.data
    );
    assert_eq!(
        to.manifest("copies/single", "renamed").unwrap().1,
        single.manifest.data
    );
}

#[test]
fn bad_pairs_are_usage_errors() {
    let work = Work::new();
    let list = work.path("bad.txt");
    work.write_file(&list, "only-one-word\n");
    copy(&work, &["-i", list.to_str().unwrap()]).expect_code(2);
    copy(&work, &["nginx", "not-a-registry"]).expect_code(2);
    copy(&work, &["nginx"]).expect_code(2);
}
