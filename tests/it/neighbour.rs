//! A hostile neighbour on a shared machine: symbolic links planted in the cache or at the log
//! file never redirect a write or a read, and the cache's directories belong to the user who runs
//! the pull and are private (links planted in an `oci-dir` layout: `layout.rs`).

use std::os::unix::fs::symlink;

use crate::common::{Work, assert_cache_sound, assert_default_archive};
use crate::support::image::{Flavor, random_image};
use crate::support::registry::FakeRegistry;

const VICTIM: &[u8] = b"a file the neighbour wants overwritten\n";

/// A file outside the cache that a planted link points at.
fn victim(work: &Work) -> std::path::PathBuf {
    let path = work.path("victim");
    std::fs::write(&path, VICTIM).expect("writing the victim file");
    path
}

#[track_caller]
fn assert_untouched(victim: &std::path::Path) {
    assert_eq!(
        std::fs::read(victim).expect("reading the victim file"),
        VICTIM,
        "{} was written through a planted link",
        victim.display()
    );
}

#[track_caller]
fn assert_no_link_in_blobs(work: &Work) {
    let dir = work.cache().join("blobs/sha256");
    for entry in std::fs::read_dir(&dir).expect("listing the cache") {
        let entry = entry.expect("a cache entry");
        let kind = entry.file_type().expect("its type");
        assert!(
            kind.is_file(),
            "{} is not a regular file ({kind:?})",
            entry.path().display()
        );
    }
}

#[test]
fn a_link_planted_at_a_partial_download_is_not_written_through() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 20_000, 301);
    registry.push_image("app", "v1", &image);
    let work = Work::new();
    let victim = victim(&work);
    let ingest = work.cache().join("ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    let planted = ingest.join(format!("{}.data", image.layers[0].hex()));
    symlink(&victim, &planted).unwrap();

    let run = work.pull(&["-q", &registry.reference("app", "v1")]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&planted.display().to_string()) && run.stderr.contains("symbolic link"),
        "the message names the link: {}",
        run.stderr
    );
    assert_untouched(&victim);
    assert_no_link_in_blobs(&work);

    // `cache clear` removes the link; the next pull is complete.
    work.run(&[
        "cache",
        "clear",
        "--cache-dir",
        work.cache().to_str().unwrap(),
    ])
    .success();
    work.pull(&["-q", &registry.reference("app", "v1")])
        .success();
    assert_default_archive(&work, &registry, &image, "app", "v1");
    assert_untouched(&victim);
    assert_no_link_in_blobs(&work);
    assert_cache_sound(&work.cache());
}

#[test]
fn a_link_planted_at_a_stored_blob_is_not_taken_for_the_blob() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 20_000, 302);
    registry.push_image("app", "v1", &image);
    let work = Work::new();
    // The link points at a file with the blob's content, which its owner can change at will.
    let layer = &image.layers[0];
    let theirs = work.path("theirs");
    std::fs::write(&theirs, &layer.data).unwrap();
    let blobs = work.cache().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    symlink(&theirs, blobs.join(layer.hex())).unwrap();

    work.pull(&["-q", &registry.reference("app", "v1")])
        .success();
    assert_default_archive(&work, &registry, &image, "app", "v1");
    assert_eq!(
        registry.blob_gets(&layer.digest),
        1,
        "the layer behind the link is downloaded"
    );
    assert_no_link_in_blobs(&work);
    assert_eq!(std::fs::read(&theirs).unwrap(), layer.data);
}

/// A directory that belongs to another user: made with `chown` when the tests run as root,
/// else `/` (root's).
fn foreign_dir(work: &Work) -> std::path::PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return "/".into();
    }
    let dir = work.cache();
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(4242), Some(4242)).unwrap();
    dir
}

#[test]
fn a_cache_directory_of_another_user_is_refused() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 5_000, 303);
    registry.push_image("app", "v1", &image);
    let work = Work::new();
    let theirs = foreign_dir(&work);
    let theirs = theirs.to_str().unwrap();
    let out = work.out();
    let pull = work.run(&[
        "-q",
        "--cache-dir",
        theirs,
        "-o",
        out.to_str().unwrap(),
        &registry.reference("app", "v1"),
    ]);
    let stats = work.run(&["cache", "stats", "--cache-dir", theirs]);
    for run in [pull, stats] {
        run.expect_code(1);
        assert!(
            run.stderr
                .contains(&format!("{theirs} belongs to another user"))
                && run.stderr.contains("--cache-dir"),
            "the message names the directory and the way out: {}",
            run.stderr
        );
    }
    assert_eq!(registry.total_blob_gets(), 0);
    work.assert_no_output();
}

#[test]
fn cache_directories_are_private_and_an_earlier_open_cache_is_tightened() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 5_000, 304);
    registry.push_image("app", "v1", &image);
    let work = Work::new();
    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o777;
    // A cache as earlier versions left it: readable by everyone.
    std::fs::create_dir_all(work.cache().join("blobs/sha256")).unwrap();
    for dir in ["", "blobs", "blobs/sha256"] {
        std::fs::set_permissions(
            work.cache().join(dir),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    work.pull(&["-q", &registry.reference("app", "v1")])
        .success();
    for dir in ["", "blobs", "blobs/sha256", "meta", "ingest"] {
        assert_eq!(mode(&work.cache().join(dir)), 0o700, "cache/{dir}");
    }
    for dir in ["blobs/sha256", "meta"] {
        for entry in std::fs::read_dir(work.cache().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert_default_archive(&work, &registry, &image, "app", "v1");
}

#[test]
fn the_log_file_is_private_and_never_written_through_a_link() {
    use std::os::unix::fs::MetadataExt;
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 5_000, 305);
    registry.push_image("app", "v1", &image);
    let reference = registry.reference("app", "v1");
    let work = Work::new();
    let victim = victim(&work);
    let planted = work.path("pull.log");
    symlink(&victim, &planted).unwrap();
    let run = work.pull(&["-q", "--log-file", planted.to_str().unwrap(), &reference]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(&planted.display().to_string()) && run.stderr.contains("symbolic link"),
        "{}",
        run.stderr
    );
    assert_untouched(&victim);
    assert_eq!(registry.total_blob_gets(), 0, "nothing is pulled");

    let log = work.path("own.log");
    work.pull(&["-q", "--log-file", log.to_str().unwrap(), &reference])
        .success();
    let meta = std::fs::symlink_metadata(&log).unwrap();
    assert!(meta.len() > 0, "the log holds the run");
    assert_eq!(meta.mode() & 0o777, 0o600, "readable by its owner only");
}
