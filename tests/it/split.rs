//! `--split SIZE`: archives in parts of at most SIZE plus a `sha256sum` file, for every tar
//! format, compressed or not, one file or one per image; the parts joined are the unsplit
//! archive byte for byte; `verify` and `push` read the parts as they are.

use std::path::{Path, PathBuf};

use crate::common::Work;
use crate::support::image::{Flavor, random_image, sha256_digest, small_image};
use crate::support::registry::FakeRegistry;

const PART: u64 = 64 << 10;

fn setup() -> (FakeRegistry, Work, String, String) {
    let registry = FakeRegistry::anonymous();
    registry.push_image("app", "v1", &random_image(Flavor::Docker, 3, 90_000, 21));
    registry.push_image("tool", "v2", &small_image(Flavor::Oci, "tool"));
    let (a, b) = (
        registry.reference("app", "v1"),
        registry.reference("tool", "v2"),
    );
    (registry, Work::new(), a, b)
}

fn pull(work: &Work, out: &Path, args: &[&str]) {
    let mut all = vec!["-q", "-o", out.to_str().unwrap()];
    all.extend_from_slice(args);
    work.pull_to(&all).success();
}

/// The parts of `target` in order (`NAME.part-000`, …), checked against `NAME.sha256`: each
/// at most [`PART`] bytes, every line's checksum right. Returns the joined bytes.
#[track_caller]
fn joined(target: &Path) -> Vec<u8> {
    let dir = target.parent().unwrap();
    let name = target.file_name().unwrap().to_str().unwrap();
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with(&format!("{name}.part-"))
        })
        .collect();
    parts.sort();
    assert!(
        parts.len() > 1,
        "{target:?} split into {} parts",
        parts.len()
    );
    let sums = std::fs::read_to_string(dir.join(format!("{name}.sha256"))).unwrap();
    let lines: Vec<&str> = sums.lines().collect();
    assert_eq!(lines.len(), parts.len() + 1, "{sums}");
    let mut all = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let bytes = std::fs::read(part).unwrap();
        assert!(
            bytes.len() as u64 <= PART,
            "{part:?} holds {} bytes",
            bytes.len()
        );
        if i + 1 < parts.len() {
            assert_eq!(
                bytes.len() as u64,
                PART,
                "{part:?}: only the last part is short"
            );
        }
        let part_name = part.file_name().unwrap().to_str().unwrap();
        let hex = sha256_digest(&bytes)[7..].to_string();
        assert_eq!(lines[i + 1], format!("{hex}  {part_name}"), "{sums}");
        all.extend(bytes);
    }
    let hex = sha256_digest(&all)[7..].to_string();
    assert_eq!(lines[0], format!("{hex}  {name}"), "{sums}");
    assert!(
        !target.exists(),
        "no joined archive is left beside the parts"
    );
    all
}

#[test]
fn parts_join_to_the_unsplit_archive_in_every_format() {
    let (_registry, work, a, b) = setup();
    for (format, name) in [
        ("docker", "d.tar"),
        ("oci", "o.tar"),
        ("legacy", "l.tar"),
        ("docker", "d.tar.gz"),
        ("legacy", "l.tar.zst"),
    ] {
        let whole = work.path(&format!("whole-{name}"));
        pull(&work, &whole, &["-f", format, &a]);
        let split = work.path(name);
        pull(&work, &split, &["-f", format, "--split", "64K", &a]);
        assert!(
            joined(&split) == std::fs::read(&whole).unwrap(),
            "-f {format} {name}: the joined parts differ from the unsplit archive"
        );
    }
    // A bundle of two images.
    let whole = work.path("whole-bundle.tar");
    pull(&work, &whole, &[&a, &b]);
    let split = work.path("bundle.tar");
    pull(&work, &split, &["--split", "64K", &a, &b]);
    assert!(joined(&split) == std::fs::read(&whole).unwrap());
}

#[test]
fn the_report_names_the_parts_and_a_directory_gets_parts_per_archive() {
    let (registry, work, a, _) = setup();
    let out = work.path("out");
    let cache = work.cache();
    let run = work.run(&[
        "--cache-dir",
        cache.to_str().unwrap(),
        "--json",
        "--split",
        "64K",
        "-o",
        out.to_str().unwrap(),
        &a,
    ]);
    run.success();
    let json = run.json();
    let name = format!("127.0.0.1_{}_app_v1_amd64.tar", registry.port());
    let target = out.join(&name);
    let parts = json["parts"].as_array().expect("parts in the report");
    assert_eq!(
        parts[0],
        target.with_extension("tar.part-000").to_str().unwrap(),
        "{json}"
    );
    assert_eq!(
        json["checksums"],
        format!("{}.sha256", target.display()),
        "{json}"
    );
    assert_eq!(json["output"], target.to_str().unwrap(), "{json}");
    let bytes = joined(&target);
    assert_eq!(parts.len() as u64, (bytes.len() as u64).div_ceil(PART));

    // A second, smaller split of the same name leaves no stale part behind.
    let run = work.pull_to(&["--split", "1M", "-o", out.to_str().unwrap(), &a]);
    run.success();
    assert!(run.stdout.contains("in 1 part: "), "{}", run.stdout);
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part-"))
        .collect();
    assert_eq!(left, [format!("{name}.part-000")]);
}

#[test]
fn verify_and_push_read_the_parts() {
    let (_registry, work, a, _) = setup();
    let split = work.path("app.tar");
    pull(&work, &split, &["--split", "64K", &a]);
    let part = |i: usize| work.path(&format!("app.tar.part-{i:03}"));
    for named in [split.clone(), part(1), work.path("app.tar.sha256")] {
        let run = work.run(&["verify", "-q", named.to_str().unwrap()]);
        run.success();
        assert!(run.stdout.starts_with("ok  "), "{named:?}: {}", run.stdout);
    }
    let target = FakeRegistry::anonymous();
    let cache = work.cache();
    let run = work.run(&[
        "push",
        "--cache-dir",
        cache.to_str().unwrap(),
        part(0).to_str().unwrap(),
        &format!("{}/copied:v1", target.addr()),
    ]);
    run.success();
    let (_, original) = _registry
        .manifest("app", "v1")
        .expect("the origin's manifest");
    let (_, pushed) = target
        .manifest("copied", "v1")
        .expect("the pushed manifest");
    assert!(pushed == original, "the manifest goes back byte for byte");

    // A missing part is named.
    std::fs::remove_file(part(2)).unwrap();
    let run = work.run(&["verify", split.to_str().unwrap()]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("app.tar.part-002 is missing"),
        "{}",
        run.stderr
    );
}

#[test]
fn split_is_refused_where_it_cannot_apply() {
    let (_registry, work, a, _) = setup();
    let run = work.pull_to(&["--split", "1K", "-o", "x.tar", &a]);
    run.expect_code(2);
    assert!(run.stderr.contains("at least 64K"), "{}", run.stderr);
    let run = work.pull_to(&["--split", "1M", "-f", "oci-dir", "-o", "layout", &a]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("--split is for archives"),
        "{}",
        run.stderr
    );
    let run = work.pull_to(&["--split", "1M", "-o", "-", &a]);
    run.expect_code(2);
    assert!(run.stderr.contains("standard output"), "{}", run.stderr);
    for name in ["x.tar", "x.tar.part-000", "x.tar.sha256", "layout"] {
        assert!(!work.path(name).exists(), "{name} was written");
    }
}
