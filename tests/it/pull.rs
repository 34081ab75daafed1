//! Pulling one image anonymously: the archive layout, file names, `-o`, `--tag`, stdout.

use crate::common::{
    Ann, Archive, Expected, Work, assert_default_archive, assert_docker_archive, default_name,
    files_in,
};
use crate::support::image::{Flavor, ImageBuilder, LayerBuilder, random_image, small_image};
use crate::support::registry::FakeRegistry;

fn two_layer_image(flavor: Flavor) -> crate::support::image::Image {
    ImageBuilder::new(flavor)
        .layer(LayerBuilder::new().dir("etc", 0o755).file(
            "etc/os-release",
            b"NAME=test\n".to_vec(),
            0o644,
        ))
        .layer(
            LayerBuilder::new()
                .dir("app", 0o755)
                .file("app/run.sh", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
                .symlink("app/latest", "run.sh"),
        )
        .cmd(&["/app/run.sh"])
        .env("MODE", "test")
        .build()
}

#[test]
fn docker_image_archive_matches_contract() {
    let registry = FakeRegistry::anonymous();
    let image = two_layer_image(Flavor::Docker);
    registry.push_image("small", "latest", &image);
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("small", "latest")]);
    run.success();

    let name = default_name(registry.port(), "small", "latest", "amd64");
    assert_eq!(
        files_in(&work.out()),
        vec![name.clone()],
        "output directory holds exactly the archive"
    );
    let archive = Archive::open(&work.out().join(&name));
    assert_docker_archive(
        &archive,
        &[Expected::tagged(
            &image,
            &registry.addr(),
            "small",
            "latest",
        )],
    );
}

#[test]
fn oci_image_in_nested_repository() {
    let registry = FakeRegistry::anonymous();
    let image = two_layer_image(Flavor::Oci);
    registry.push_image("team/app/web", "v1.2", &image);
    let work = Work::new();

    work.pull(&["-q", &registry.reference("team/app/web", "v1.2")])
        .success();

    let name = default_name(registry.port(), "team/app/web", "v1.2", "amd64");
    assert_eq!(files_in(&work.out()), vec![name.clone()]);
    let archive = Archive::open(&work.out().join(&name));
    assert_docker_archive(
        &archive,
        &[Expected::tagged(
            &image,
            &registry.addr(),
            "team/app/web",
            "v1.2",
        )],
    );
}

#[test]
fn uncompressed_layers_are_kept_byte_for_byte() {
    let registry = FakeRegistry::anonymous();
    let (layer, diff_id) = LayerBuilder::new()
        .file("plain.txt", b"not compressed".to_vec(), 0o644)
        .build_uncompressed(Flavor::Oci);
    let image = ImageBuilder::new(Flavor::Oci)
        .raw_layer(layer, diff_id)
        .build();
    registry.push_image("plain", "v1", &image);
    let work = Work::new();

    work.pull(&["-q", &registry.reference("plain", "v1")])
        .success();

    assert_default_archive(&work, &registry, &image, "plain", "v1");
}

#[test]
fn tag_defaults_to_latest() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Docker, "latest please");
    registry.push_image("app", "latest", &image);
    let work = Work::new();

    work.pull(&["-q", &format!("{}/app", registry.addr())])
        .success();

    assert_default_archive(&work, &registry, &image, "app", "latest");
}

#[test]
fn output_path_ending_in_tar_is_the_archive() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "to a file");
    registry.push_image("app", "v1", &image);
    let work = Work::new();
    let target = work.path("sub/dir/x.tar");
    std::fs::create_dir_all(work.path("sub/dir")).expect("mkdir");

    work.pull_to(&[
        "-q",
        "-o",
        target.to_str().expect("utf-8"),
        &registry.reference("app", "v1"),
    ])
    .success();

    assert_eq!(files_in(&work.path("sub/dir")), vec!["x.tar".to_string()]);
    let archive = Archive::open(&target);
    assert_docker_archive(
        &archive,
        &[Expected::tagged(&image, &registry.addr(), "app", "v1")],
    );
}

#[test]
fn output_directory_is_created() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "new dir");
    registry.push_image("app", "v1", &image);
    let work = Work::new();
    let dir = work.path("not/yet/there");

    work.pull_to(&[
        "-q",
        "-o",
        dir.to_str().expect("utf-8"),
        &registry.reference("app", "v1"),
    ])
    .success();

    assert_eq!(
        files_in(&dir),
        vec![default_name(registry.port(), "app", "v1", "amd64")]
    );
}

#[test]
fn default_output_is_the_working_directory() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Docker, "cwd");
    registry.push_image("app", "v1", &image);
    let work = Work::new();
    let cache = work.cache();

    work.run(&[
        "-q",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        &registry.reference("app", "v1"),
    ])
    .success();

    let name = default_name(registry.port(), "app", "v1", "amd64");
    assert!(
        work.path(&name).is_file(),
        "{name} not written to the working directory: {:?}",
        files_in(work.dir.path())
    );
}

#[test]
fn tag_flag_renames_the_image() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Docker, "renamed");
    registry.push_image("app", "v1", &image);
    let work = Work::new();

    work.pull(&["-q", "--tag", "myapp:dev", &registry.reference("app", "v1")])
        .success();

    let files = files_in(&work.out());
    assert_eq!(files.len(), 1, "one archive expected: {files:?}");
    let archive = Archive::open(&work.out().join(&files[0]));
    let mut expected = Expected::tagged(&image, &registry.addr(), "app", "v1");
    expected.repo_tags = vec!["myapp:dev".to_string()];
    expected.full_name = Ann::Any;
    expected.ref_name = Ann::Any;
    assert_docker_archive(&archive, &[expected]);
}

#[test]
fn tag_flag_with_two_images_is_a_usage_error() {
    let registry = FakeRegistry::anonymous();
    registry.push_image("a", "v1", &small_image(Flavor::Docker, "a"));
    registry.push_image("b", "v1", &small_image(Flavor::Docker, "b"));
    let work = Work::new();

    let run = work.pull(&[
        "-q",
        "--tag",
        "x:y",
        &registry.reference("a", "v1"),
        &registry.reference("b", "v1"),
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.trim_start().starts_with("error:"),
        "stderr: {}",
        run.stderr
    );
    assert_eq!(
        registry.total_blob_gets(),
        0,
        "nothing should be downloaded on a usage error"
    );
}

#[test]
fn human_output_names_archive_digest_and_cache() {
    let registry = FakeRegistry::anonymous();
    let image = two_layer_image(Flavor::Docker);
    registry.push_image("small", "latest", &image);
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("small", "latest")]);
    run.success();

    let archive = work
        .out()
        .join(default_name(registry.port(), "small", "latest", "amd64"));
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(
            format!(
                "Pulled {} (linux/amd64)",
                registry.reference("small", "latest")
            )
            .as_str()
        ),
        "stdout:\n{}",
        run.stdout
    );
    let archive_line = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("Archive: "))
        .unwrap_or_else(|| panic!("no Archive: line in stdout:\n{}", run.stdout));
    assert_eq!(
        std::fs::canonicalize(work.dir.path().join(archive_line)).ok(),
        std::fs::canonicalize(&archive).ok(),
        "Archive: line names {archive_line}, expected {}",
        archive.display()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == format!("Digest: {}", image.manifest.digest)),
        "no `Digest: {}` line in stdout:\n{}",
        image.manifest.digest,
        run.stdout
    );
    assert_eq!(
        lines.last().map(|l| l.trim()),
        Some("Cache hits: 0/2 layers (0.0%), Data saved: 0.0 MB"),
        "stdout:\n{}",
        run.stdout
    );
}

#[test]
fn images_file_lists_references() {
    let registry = FakeRegistry::anonymous();
    let a = small_image(Flavor::Docker, "a");
    let b = small_image(Flavor::Oci, "b");
    registry.push_image("a", "v1", &a);
    registry.push_image("b", "v2", &b);
    let work = Work::new();
    let list = work.path("images.txt");
    std::fs::write(
        &list,
        format!(
            "# images to pull\n{}\n\n   \n{}\n",
            registry.reference("a", "v1"),
            registry.reference("b", "v2")
        ),
    )
    .expect("writing the images file");

    work.pull(&["-q", "-i", list.to_str().expect("utf-8")])
        .success();

    let mut want = vec![
        default_name(registry.port(), "a", "v1", "amd64"),
        default_name(registry.port(), "b", "v2", "amd64"),
    ];
    want.sort();
    assert_eq!(files_in(&work.out()), want);
}

#[test]
fn registry_flag_supplies_the_registry() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Docker, "via -r");
    registry.push_image("tools/app", "v3", &image);
    let work = Work::new();

    let run = work.pull(&["-q", "--json", "-r", &registry.addr(), "tools/app:v3"]);
    run.success();

    let json = run.json();
    assert_eq!(
        json["resolved"],
        registry.reference("tools/app", "v3"),
        "{json}"
    );
    assert_default_archive(&work, &registry, &image, "tools/app", "v3");
}

#[test]
fn localhost_names_a_registry() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Docker, "localhost");
    registry.push_image("small", "latest", &image);
    let work = Work::new();
    let reference = format!("localhost:{}/small:latest", registry.port());

    work.pull(&["-q", &reference]).success();

    let name = format!("localhost_{}_small_latest_amd64.tar", registry.port());
    let archive = Archive::open(&work.out().join(&name));
    assert_docker_archive(
        &archive,
        &[Expected {
            image: &image,
            full_name: Ann::Is(reference.clone()),
            ref_name: Ann::Is("latest".into()),
            repo_tags: vec![reference.clone()],
            optional_blobs: vec![],
        }],
    );
}

#[test]
fn many_layers_with_one_or_many_workers() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 7, 40_000, 11);
    registry.push_image("many", "v1", &image);
    for workers in ["1", "5"] {
        let work = Work::new();
        work.pull(&["-q", "-j", workers, &registry.reference("many", "v1")])
            .success();
        assert_default_archive(&work, &registry, &image, "many", "v1");
    }
}

#[test]
fn missing_tag_fails_without_an_archive() {
    let registry = FakeRegistry::anonymous();
    registry.push_image("app", "v1", &small_image(Flavor::Docker, "x"));
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("app", "nope")]);
    run.expect_code(1);
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("nope")
            && (lower.contains("not found") || lower.contains("unknown") || lower.contains("404")),
        "the message should say the tag is missing: {}",
        run.stderr
    );
    work.assert_no_output();
}

#[test]
fn missing_repository_fails() {
    let registry = FakeRegistry::anonymous();
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("ghost/repo", "v1")]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("ghost/repo"),
        "the message should name the repository: {}",
        run.stderr
    );
    work.assert_no_output();
}

#[test]
fn failed_pull_keeps_an_existing_archive() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Docker, "broken");
    registry.push_image("app", "v1", &image);
    registry.delete_blob("app", &image.layers[0].digest);
    let work = Work::new();
    let target = work.path("keep.tar");
    std::fs::write(&target, b"previous archive").expect("writing the old archive");

    let run = work.pull_to(&[
        "-q",
        "--retries",
        "1",
        "-o",
        target.to_str().expect("utf-8"),
        &registry.reference("app", "v1"),
    ]);
    run.expect_code(1);

    assert_eq!(
        std::fs::read(&target).expect("old archive"),
        b"previous archive",
        "the old archive was touched"
    );
    assert_eq!(
        files_in(work.dir.path())
            .into_iter()
            .filter(|n| n != "cache" && n != "home")
            .collect::<Vec<_>>(),
        vec!["keep.tar".to_string()],
        "a temporary file was left beside the target"
    );
}

#[test]
fn unwritable_output_fails_with_exit_1() {
    let registry = FakeRegistry::anonymous();
    registry.push_image("app", "v1", &small_image(Flavor::Docker, "disk"));
    let work = Work::new();
    let blocker = work.path("a-file");
    std::fs::write(&blocker, b"not a directory").expect("writing a file");
    let target = blocker.join("x.tar");

    let run = work.pull_to(&[
        "-q",
        "-o",
        target.to_str().expect("utf-8"),
        &registry.reference("app", "v1"),
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.trim_start().starts_with("error:"),
        "stderr: {}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(&blocker).expect("the file in the way"),
        b"not a directory"
    );
}

#[test]
fn quiet_prints_nothing_on_stderr_when_all_is_well() {
    let registry = FakeRegistry::anonymous();
    registry.push_image("app", "v1", &random_image(Flavor::Docker, 2, 5_000, 12));
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("app", "v1")]);
    run.success();
    assert!(
        run.stderr.trim().is_empty(),
        "-q should print no progress:\n{}",
        run.stderr
    );
}

#[test]
fn progress_goes_to_stderr_only() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 2, 5_000, 13);
    registry.push_image("app", "v1", &image);
    let work = Work::new();

    let run = work.pull(&[&registry.reference("app", "v1")]);
    run.success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "stdout should hold only the result:\n{}",
        run.stdout
    );
    assert!(lines[0].starts_with("Pulled "), "{}", run.stdout);
    assert!(
        lines[1].trim_start().starts_with("Archive: "),
        "{}",
        run.stdout
    );
    assert!(
        lines[2].trim_start().starts_with("Digest: "),
        "{}",
        run.stdout
    );
    assert!(lines[3].starts_with("Cache hits: "), "{}", run.stdout);
    assert!(
        !run.stderr.trim().is_empty(),
        "without -q, progress lines are expected on stderr"
    );
}
