//! Disk full: a pull whose cache or output lives on a small tmpfs fails with exit 1 and a
//! message naming the path and "No space left on device", leaves no archive (final or
//! temporary) and no damaged blob in the cache. Needs root (scripts/test.sh runs the suite as
//! root) to mount the tmpfs; without it the tests fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::Scratch;
use crate::env::setup;
use crate::run::{Run, docker_pull};
use crate::support::image::{Flavor, Image, random_image};
use crate::support::push::Pusher;

/// A tmpfs of a few MiB mounted on a directory for as long as it lives.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `8m`) on `dir` (created).
    fn mount(dir: &Path, size: &str) -> Self {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .expect("running id -u");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "the disk-full tests mount a tmpfs and must run as root (scripts/test.sh does)"
        );
        std::fs::create_dir_all(dir).expect("creating the tmpfs mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a child still has a file open): detach it so the temp dir can go.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Three incompressible 4 MiB layers (12 MiB): more than the 8 MiB tmpfs holds.
fn big_image() -> Image {
    random_image(Flavor::Docker, 3, 4 * 1024 * 1024, 0xd15c_f011)
}

/// Pushes the big image to the plain registry once; returns `REGISTRY/diskfull:v1`.
fn pushed(registry: &str) -> (String, Image) {
    let image = big_image();
    Pusher::new(registry)
        .and_then(|p| p.push_image("diskfull", Some("v1"), &image))
        .unwrap_or_else(|e| panic!("pushing the disk-full fixture to {registry}: {e:#}"));
    (format!("{registry}/diskfull:v1"), image)
}

/// Every regular file below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(read) = std::fs::read_dir(dir) {
        for entry in read.filter_map(Result::ok) {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(files_below(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Every file under `<cache>/blobs/sha256` hashes to its name.
#[track_caller]
fn assert_cache_sound(cache: &Path) {
    for path in files_below(&cache.join("blobs").join("sha256")) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            name,
            "damaged blob committed to the cache: {}",
            path.display()
        );
    }
}

/// Exit 1, a message naming `path` and the disk being full.
#[track_caller]
fn assert_disk_full(run: &Run, path: &Path) {
    assert_eq!(run.code(), Some(1), "expected exit 1\n{}", run.describe());
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("no space left on device") || lower.contains("disk full"),
        "the message should say the disk is full\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains(&path.display().to_string()),
        "the message should name {}\n{}",
        path.display(),
        run.describe()
    );
    assert!(
        !run.stderr.contains("panicked"),
        "docker-pull panicked\n{}",
        run.describe()
    );
}

#[test]
fn cache_on_a_full_disk() {
    let (_engine, env) = setup();
    let (reference, _image) = pushed(&env.registry);
    let scratch = Scratch::new();
    let tmpfs = Tmpfs::mount(&scratch.path().join("small-disk"), "8m");
    let cache = tmpfs.path("cache");
    let out = scratch.out("out");

    let run = docker_pull(
        [
            "-q",
            "--platform",
            "linux/amd64",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
            &reference,
        ],
        scratch.path(),
    );
    assert_disk_full(&run, &cache);
    let written = files_below(&out);
    assert!(written.is_empty(), "files in the output: {written:?}");
    assert_cache_sound(&cache);
    drop(tmpfs);
}

#[test]
fn output_on_a_full_disk() {
    let (_engine, env) = setup();
    let (reference, image) = pushed(&env.registry);
    let scratch = Scratch::new();
    let tmpfs = Tmpfs::mount(&scratch.path().join("small-disk"), "8m");
    let out = tmpfs.path("out");
    let cache = scratch.cache();

    let run = scratch.pull(&[
        "-q",
        "--platform",
        "linux/amd64",
        "-o",
        out.to_str().expect("utf-8"),
        &reference,
    ]);
    assert_disk_full(&run, &out);
    let written = files_below(&out);
    assert!(
        written.is_empty(),
        "an archive (final or temporary) was left on the full disk: {written:?}"
    );
    // The archive is written while layers download, so the pull stopped at the first failed
    // write; what it had downloaded is in the cache, verified, and the next run with room
    // for the archive finishes from there.
    assert_cache_sound(&cache);
    let roomy = scratch.path().join("roomy");
    scratch
        .pull(&[
            "-q",
            "--platform",
            "linux/amd64",
            "-o",
            roomy.to_str().expect("utf-8"),
            &reference,
        ])
        .success();
    for blob in image.blobs() {
        assert!(
            cache.join("blobs/sha256").join(blob.hex()).is_file(),
            "{} missing from the cache",
            blob.digest
        );
    }
    assert_eq!(
        files_below(&roomy).len(),
        1,
        "one archive: {:?}",
        files_below(&roomy)
    );
    drop(tmpfs);
}
