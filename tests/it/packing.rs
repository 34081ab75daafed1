//! Archives as they travel: `-o -` (one tar on stdout, messages on stderr) and `--compress
//! gzip|zstd` (or a `.tar.gz`/`.tgz`/`.tar.zst` name), for every tar format and bundles. The
//! stream and the compressed file hold exactly the bytes of the plain archive.

use std::path::Path;

use crate::common::{Run, Work};
use crate::support::image::{Flavor, gunzip, random_image, small_image, unzstd};
use crate::support::registry::FakeRegistry;

fn setup() -> (FakeRegistry, Work, String, String) {
    let registry = FakeRegistry::anonymous();
    registry.push_image("app", "v1", &random_image(Flavor::Docker, 3, 70_000, 11));
    registry.push_image("tool", "v2", &small_image(Flavor::Oci, "tool"));
    let (a, b) = (
        registry.reference("app", "v1"),
        registry.reference("tool", "v2"),
    );
    (registry, Work::new(), a, b)
}

/// `docker-pull --cache-dir <cache> -o - ARGS`: its run and stdout's bytes.
fn to_stdout(work: &Work, args: &[&str]) -> (Run, Vec<u8>) {
    let cache = work.cache();
    let mut all = vec!["--cache-dir", cache.to_str().unwrap(), "-o", "-"];
    all.extend_from_slice(args);
    work.spawn_with(&all, &[], None).wait_raw()
}

fn pulled(work: &Work, name: &str, args: &[&str]) -> Vec<u8> {
    let path = work.path(name);
    let mut all = vec!["-q", "-o", path.to_str().unwrap()];
    all.extend_from_slice(args);
    work.pull_to(&all).success();
    std::fs::read(&path).unwrap()
}

#[test]
fn stdout_carries_the_archive_byte_for_byte_and_the_report_goes_to_stderr() {
    let (_registry, work, a, b) = setup();
    for format in ["docker", "oci", "legacy"] {
        let plain = pulled(&work, &format!("{format}.tar"), &["-f", format, &a]);
        let (run, bytes) = to_stdout(&work, &["-f", format, &a]);
        run.success();
        assert!(
            bytes == plain,
            "-f {format}: the stream differs from the file"
        );
        assert!(run.stderr.contains("Pulled"), "{}", run.stderr);
    }
    // Several images: one bundle on stdout, the bytes of the bundle file.
    let bundle = pulled(&work, "bundle.tar", &[&a, &b]);
    let (run, bytes) = to_stdout(&work, &["-q", &a, &b]);
    run.success();
    assert!(
        bytes == bundle,
        "the bundle on stdout differs from the file"
    );
}

#[test]
fn compressed_archives_hold_the_plain_bytes() {
    let (_registry, work, a, _b) = setup();
    for format in ["docker", "legacy"] {
        let plain = pulled(&work, &format!("p-{format}.tar"), &["-f", format, &a]);
        let gz = pulled(
            &work,
            &format!("{format}.tar.gz"),
            &["-f", format, "--compress", "gzip", &a],
        );
        assert!(gunzip(&gz) == plain, "-f {format} gzip");
        let zst = pulled(&work, &format!("{format}.tar.zst"), &["-f", format, &a]);
        assert!(unzstd(&zst) == plain, "-f {format} zstd from the name");
        let tgz = pulled(&work, &format!("{format}.tgz"), &["-f", format, &a]);
        assert!(gunzip(&tgz) == plain, "-f {format} .tgz");
        let (run, bytes) = to_stdout(&work, &["-q", "-f", format, "--compress", "zstd", &a]);
        run.success();
        assert!(unzstd(&bytes) == plain, "-f {format} zstd on stdout");
    }
    // The reader takes them back: verify accepts a compressed archive.
    let path = work.path("docker.tar.gz");
    work.run(&["verify", path.to_str().unwrap()]).success();
}

#[test]
fn a_directory_gets_default_names_ending_as_the_compression_says() {
    let (_registry, work, a, b) = setup();
    let dir = work.path("out");
    work.pull_to(&[
        "-q",
        "-o",
        dir.to_str().unwrap(),
        "--compress",
        "zstd",
        &a,
        &b,
    ])
    .success();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    for name in &names {
        assert!(name.ends_with(".tar.zst"), "{names:?}");
        let bytes = std::fs::read(Path::new(&dir).join(name)).unwrap();
        let tar = unzstd(&bytes);
        assert!(
            tar.len() > 1024 && tar.len().is_multiple_of(512),
            "{name}: a whole tar"
        );
    }
}

#[test]
fn stream_and_compression_misuse_are_usage_errors() {
    let (registry, work, a, _b) = setup();
    let (run, bytes) = to_stdout(&work, &["--json", &a]);
    run.expect_code(2);
    assert!(run.stderr.contains("--json"), "{}", run.stderr);
    assert!(bytes.is_empty());
    let x = work.path("x.tar.gz");
    let run = work.pull_to(&["-o", x.to_str().unwrap(), "--compress", "zstd", &a]);
    run.expect_code(2);
    assert!(run.stderr.contains("does not match"), "{}", run.stderr);
    let dir = work.path("layout");
    let run = work.pull_to(&[
        "-f",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        "--compress",
        "gzip",
        &a,
    ]);
    run.expect_code(2);
    let (run, _) = to_stdout(&work, &["-f", "oci-dir", &a]);
    run.expect_code(2);
    assert_eq!(registry.total_blob_gets(), 0, "nothing was downloaded");
}
