//! `-f oci-dir` layouts that are shared or tampered with: a damaged cache blob never reaches
//! the layout, a damaged blob in the layout is replaced, links planted in the layout redirect
//! nothing, and pulls writing one layout at once keep every image's entry in `index.json`.

use std::os::unix::fs::symlink;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::common::{Run, Work};
use crate::support::image::{Flavor, random_image};
use crate::support::registry::FakeRegistry;

fn into_layout(work: &Work, dir: &Path, references: &[&str]) -> Run {
    let mut args = vec!["-q", "-f", "oci-dir", "-o", dir.to_str().unwrap()];
    args.extend_from_slice(references);
    work.pull_to(&args)
}

/// Asserts that every blob of the layout is a regular file that hashes to its name.
#[track_caller]
fn assert_blobs_sound(dir: &Path) {
    for entry in std::fs::read_dir(dir.join("blobs/sha256")).expect("the layout's blobs") {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            entry.file_type().unwrap().is_file(),
            "blobs/sha256/{name} is not a regular file"
        );
        let data = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            name,
            "blobs/sha256/{name} is damaged"
        );
    }
}

/// The `org.opencontainers.image.ref.name` of every `index.json` entry.
fn ref_names(dir: &Path) -> Vec<String> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .expect("a manifests list")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect()
}

#[test]
fn a_damaged_cache_blob_is_not_linked_into_a_layout() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 2, 10_000, 401);
    registry.push_image("app", "v1", &image);
    let reference = registry.reference("app", "v1");
    let work = Work::new();
    into_layout(&work, &work.path("first"), &[&reference]).success();

    // Same size, other bytes: only a hash tells.
    let layer = &image.layers[1];
    let cached = work.cache().join("blobs/sha256").join(layer.hex());
    let mut bad = layer.data.clone();
    bad[100] ^= 0xff;
    std::fs::remove_file(&cached).unwrap();
    std::fs::write(&cached, &bad).unwrap();

    let second = work.path("second");
    let run = into_layout(&work, &second, &[&reference]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("damaged") && run.stderr.contains("run the pull again"),
        "{}",
        run.stderr
    );
    assert!(!cached.exists(), "the damaged blob is evicted");
    assert!(!second.join("blobs/sha256").join(layer.hex()).exists());

    into_layout(&work, &second, &[&reference]).success();
    assert_blobs_sound(&second);
    assert_eq!(ref_names(&second), [reference]);
}

/// A layout's blobs are hard links to the cache's: bytes changed in place through the layout
/// change the cached blob too. The blob's seal no longer matches, so the next pull hashes it,
/// finds the damage and downloads the blob again.
#[test]
fn a_blob_changed_in_place_through_a_layout_is_caught_by_the_next_pull() {
    use std::io::{Seek, SeekFrom, Write};
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 2, 10_000, 404);
    registry.push_image("app", "v1", &image);
    let reference = registry.reference("app", "v1");
    let work = Work::new();
    let first = work.path("first");
    into_layout(&work, &first, &[&reference]).success();
    // Each blob is sealed as it comes in, and a warm pull keeps to the seal.
    let layer = &image.layers[0];
    let seal = work
        .cache()
        .join("meta")
        .join(format!("{}.seal", layer.hex()));
    assert!(seal.is_file(), "the layer is sealed");
    into_layout(&work, &work.path("second"), &[&reference]).success();
    assert!(seal.is_file(), "the layer is still sealed");

    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(first.join("blobs/sha256").join(layer.hex()))
        .unwrap();
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(&[!layer.data[100]]).unwrap();
    drop(f);

    let third = work.path("third");
    let run = into_layout(&work, &third, &[&reference]);
    run.expect_code(1);
    assert!(run.stderr.contains("damaged"), "{}", run.stderr);
    assert!(!seal.exists(), "the seal goes with the evicted blob");
    registry.reset_log();
    into_layout(&work, &third, &[&reference]).success();
    assert_eq!(registry.blob_gets(&layer.digest), 1, "downloaded again");
    assert_blobs_sound(&third);
}

#[test]
fn a_damaged_blob_in_the_layout_is_replaced() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 2, 10_000, 402);
    registry.push_image("app", "v1", &image);
    let reference = registry.reference("app", "v1");
    let work = Work::new();
    let dir = work.path("layout");
    into_layout(&work, &dir, &[&reference]).success();

    // A file of the right size that is not the cache's, with other bytes.
    let layer = &image.layers[0];
    let in_layout = dir.join("blobs/sha256").join(layer.hex());
    let mut bad = layer.data.clone();
    bad[10] ^= 0xff;
    std::fs::remove_file(&in_layout).unwrap();
    std::fs::write(&in_layout, &bad).unwrap();
    let manifest = dir.join("blobs/sha256").join(image.manifest.hex());
    let mut bad = image.manifest.data.clone();
    bad[0] = b' ';
    std::fs::write(&manifest, &bad).unwrap();

    into_layout(&work, &dir, &[&reference]).success();
    assert_blobs_sound(&dir);
}

const VICTIM: &[u8] = b"a file the neighbour wants overwritten\n";

#[test]
fn links_planted_in_a_layout_redirect_nothing() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 10_000, 403);
    registry.push_image("app", "v1", &image);
    let reference = registry.reference("app", "v1");
    let work = Work::new();
    let dir = work.path("layout");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let victim = work.path("victim");
    std::fs::write(&victim, VICTIM).unwrap();
    // A file with the layer's bytes, which its owner can change at will.
    let theirs = work.path("theirs");
    std::fs::write(&theirs, &image.layers[0].data).unwrap();
    symlink(&victim, dir.join("oci-layout")).unwrap();
    let planted_blob = dir.join("blobs/sha256").join(image.layers[0].hex());
    symlink(&theirs, &planted_blob).unwrap();

    into_layout(&work, &dir, &[&reference]).success();
    assert_eq!(std::fs::read(&victim).unwrap(), VICTIM);
    assert_eq!(std::fs::read(&theirs).unwrap(), image.layers[0].data);
    for path in [dir.join("oci-layout"), planted_blob] {
        assert!(
            std::fs::symlink_metadata(&path).unwrap().is_file(),
            "{} is still a link",
            path.display()
        );
    }
    assert_blobs_sound(&dir);
    assert_eq!(ref_names(&dir), [reference]);
}

#[test]
fn a_link_at_index_json_is_not_read_through() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 10_000, 404);
    registry.push_image("app", "v1", &image);
    let work = Work::new();
    let dir = work.path("layout");
    std::fs::create_dir_all(&dir).unwrap();
    let theirs = work.path("their-index.json");
    let index = br#"{"schemaVersion":2,"manifests":[]}"#;
    std::fs::write(&theirs, index).unwrap();
    symlink(&theirs, dir.join("index.json")).unwrap();

    let run = into_layout(&work, &dir, &[&registry.reference("app", "v1")]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("index.json") && run.stderr.contains("symbolic link"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&theirs).unwrap(), index);
}

#[test]
fn a_link_in_place_of_the_blobs_directory_is_refused() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 10_000, 405);
    registry.push_image("app", "v1", &image);
    let work = Work::new();
    let dir = work.path("layout");
    std::fs::create_dir_all(&dir).unwrap();
    let elsewhere = work.path("elsewhere");
    std::fs::create_dir_all(elsewhere.join("sha256")).unwrap();
    symlink(&elsewhere, dir.join("blobs")).unwrap();

    let run = into_layout(&work, &dir, &[&registry.reference("app", "v1")]);
    run.expect_code(1);
    assert!(run.stderr.contains("blobs"), "{}", run.stderr);
    let written: Vec<_> = std::fs::read_dir(elsewhere.join("sha256"))
        .unwrap()
        .collect();
    assert!(
        written.is_empty(),
        "blobs written through the link: {written:?}"
    );
}

#[test]
fn pulls_writing_one_layout_at_once_keep_every_entry() {
    const ROUNDS: usize = 10;
    const PER_PULL: usize = 3;
    let registry = FakeRegistry::anonymous();
    let mut expected = Vec::new();
    let mut seed = 500;
    let mut next = |side: &str, round: usize| -> Vec<String> {
        (0..PER_PULL)
            .map(|i| {
                seed += 1;
                let tag = format!("{side}{round}-{i}");
                registry.push_image("app", &tag, &random_image(Flavor::Oci, 1, 2_000, seed));
                registry.reference("app", &tag)
            })
            .collect()
    };
    let work = Work::new();
    let dir = work.path("layout");
    for round in 0..ROUNDS {
        let pulls: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|side| {
                let references = next(side, round);
                expected.extend(references.iter().cloned());
                let mut args = vec![
                    "-q".to_string(),
                    "--cache-dir".into(),
                    work.cache().to_str().unwrap().into(),
                    "-f".into(),
                    "oci-dir".into(),
                    "-o".into(),
                    dir.to_str().unwrap().into(),
                ];
                args.extend(references);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                work.spawn_with(&args, &[], None)
            })
            .collect();
        for pull in pulls {
            pull.wait().success();
        }
    }
    let names = ref_names(&dir);
    let lost: Vec<&String> = expected.iter().filter(|r| !names.contains(r)).collect();
    assert!(
        lost.is_empty(),
        "index.json lost {} of {} entries: {lost:?}",
        lost.len(),
        expected.len()
    );
    assert_eq!(names.len(), expected.len(), "{names:?}");
    assert_blobs_sound(&dir);
}
