//! `push SOURCE TARGET` against the fake registry: archives and layouts go back byte for
//! byte, a second push sends nothing, another repository gets mounts, an archive without
//! registry manifests gets one made, damaged and truncated sources write no manifest, targets
//! and `--image` are checked, and pushes need the push scope.

use crate::common::{Run, Work};
use crate::support::image::{Flavor, Image, gzip, small_image};
use crate::support::registry::{Auth, Config, FakeRegistry, Mounts, PushGrant};

const USER: &str = "pusher";
const PASS: &str = "pu5h-Pa55";

/// An origin with `image` at `app:v1`, pulled into `<work>/<name>` as `format`.
fn pulled(work: &Work, image: &Image, format: &str, name: &str) -> std::path::PathBuf {
    let origin = FakeRegistry::anonymous();
    origin.push_image("app", "v1", image);
    let out = work.path(name);
    let cache = work.cache();
    work.run(&[
        "--cache-dir",
        cache.to_str().unwrap(),
        "-q",
        "-f",
        format,
        "-o",
        out.to_str().unwrap(),
        &origin.reference("app", "v1"),
    ])
    .success();
    out
}

fn push(work: &Work, source: &std::path::Path, target: &str, args: &[&str]) -> Run {
    let cache = work.cache();
    let mut all = vec![
        "push",
        source.to_str().unwrap(),
        target,
        "--json",
        "--retries",
        "2",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    work.run(&all)
}

#[track_caller]
fn report(run: &Run) -> serde_json::Value {
    let lines = run.json_lines();
    assert_eq!(lines.len(), 1, "one report:\n{}", run.stdout);
    lines[0].clone()
}

#[test]
fn docker_and_oci_archives_and_layouts_go_back_byte_for_byte() {
    for (format, name) in [
        ("docker", "a.tar"),
        ("oci", "a-oci.tar"),
        ("oci-dir", "layout"),
    ] {
        let image = small_image(Flavor::Docker, format);
        let work = Work::new();
        let source = pulled(&work, &image, format, name);
        let target = FakeRegistry::anonymous();
        let run = push(
            &work,
            &source,
            &format!("{}/team/app:v2", target.addr()),
            &[],
        );
        run.success();
        let r = report(&run);
        assert_eq!(r["digest"], image.manifest.digest, "{format}");
        assert_eq!(r["digest_changed"], false);
        assert_eq!(r["blobs"], image.layers.len() as u64 + 1);
        let (media_type, bytes) = target.manifest("team/app", "v2").expect("tagged");
        assert_eq!(
            bytes, image.manifest.data,
            "{format}: the manifest byte for byte"
        );
        assert_eq!(media_type, image.manifest.media_type);
        for blob in image.blobs() {
            assert_eq!(
                target.blob("team/app", &blob.digest),
                Some(blob.data.clone())
            );
        }
        let sent = target.upload_bytes();
        let again = push(
            &work,
            &source,
            &format!("{}/team/app:v2", target.addr()),
            &[],
        );
        again.success();
        let r = report(&again);
        assert_eq!(
            r["blobs_skipped"], r["blobs"],
            "{format}: every blob is there"
        );
        assert_eq!(r["bytes_uploaded"], 0);
        assert_eq!(target.upload_bytes(), sent, "nothing was sent again");
    }
}

#[test]
fn another_repository_of_the_registry_gets_mounts_where_it_can() {
    let image = small_image(Flavor::Oci, "mounted");
    let work = Work::new();
    let bundle = {
        let origin = FakeRegistry::anonymous();
        origin.push_image("one", "v1", &image);
        origin.push_image("two", "v1", &image);
        let out = work.path("bundle.tar");
        let cache = work.cache();
        work.run(&[
            "--cache-dir",
            cache.to_str().unwrap(),
            "-q",
            "-o",
            out.to_str().unwrap(),
            &origin.reference("one", "v1"),
            &origin.reference("two", "v1"),
        ])
        .success();
        out
    };
    for (mounts, mounted) in [(Mounts::Allowed, true), (Mounts::Refused, false)] {
        let target = FakeRegistry::start(Config::default().mounts(mounts));
        let run = push(
            &work,
            &bundle,
            &format!("{}/mirror", target.addr()),
            &["-j", "1"],
        );
        run.success();
        let reports = run.json_lines();
        assert_eq!(reports.len(), 2, "{}", run.stdout);
        let second = &reports[1];
        let first_repo = reports[0]["target"].as_str().unwrap().to_string();
        assert!(first_repo.contains("/mirror/"), "{first_repo}");
        if mounted {
            assert_eq!(second["blobs_mounted"], second["blobs"], "{second}");
            assert_eq!(second["bytes_uploaded"], 0);
        } else {
            assert_eq!(second["blobs_mounted"], 0, "{second}");
            assert!(second["bytes_uploaded"].as_u64().unwrap() > 0);
        }
        for repo in ["mirror/one", "mirror/two"] {
            let (_, bytes) = target.manifest(repo, "v1").expect(repo);
            assert_eq!(bytes, image.manifest.data);
        }
    }
}

#[test]
fn a_legacy_archive_gets_a_manifest_made_for_it() {
    let image = small_image(Flavor::Docker, "legacy");
    let work = Work::new();
    let source = pulled(&work, &image, "legacy", "legacy.tar");
    let target = FakeRegistry::anonymous();
    let run = push(
        &work,
        &source,
        &format!("{}/old/app:v1", target.addr()),
        &[],
    );
    run.success();
    let r = report(&run);
    assert_eq!(r["digest_changed"], true);
    assert!(r["note"].as_str().unwrap().contains("new digest"), "{r}");
    let (media_type, bytes) = target.manifest("old/app", "v1").expect("tagged");
    assert_eq!(
        media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(r["digest"], crate::support::image::sha256_digest(&bytes));
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        manifest["config"]["digest"], image.config.digest,
        "the image ID is kept"
    );
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let data = target.blob("old/app", d).expect("layer uploaded");
        assert_eq!(&data[..2], &[0x1f, 0x8b], "gzip-compressed");
    }
}

#[test]
fn a_compressed_archive_is_pushed_as_is() {
    let image = small_image(Flavor::Docker, "compressed");
    let work = Work::new();
    let plain = pulled(&work, &image, "docker", "plain.tar");
    let gz = work.path("plain.tar.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&plain).unwrap())).unwrap();
    let target = FakeRegistry::anonymous();
    let run = push(&work, &gz, &format!("{}/gz/app", target.addr()), &[]);
    run.success();
    assert_eq!(report(&run)["digest"], image.manifest.digest);
    // No tag given: the image's own (v1).
    assert!(target.manifest("gz/app", "v1").is_some());
}

#[test]
fn a_damaged_layout_writes_no_manifest() {
    let image = small_image(Flavor::Docker, "damaged");
    let work = Work::new();
    let layout = pulled(&work, &image, "oci-dir", "layout");
    let layer = &image.layers[0];
    let path = layout.join("blobs/sha256").join(layer.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let target = FakeRegistry::anonymous();
    let run = push(
        &work,
        &layout,
        &format!("{}/bad/app:v1", target.addr()),
        &[],
    );
    run.expect_code(1);
    run.assert_no_panic();
    assert!(
        run.stderr.contains(&layer.hex()[..12]),
        "names the blob: {}",
        run.stderr
    );
    assert!(target.manifest("bad/app", "v1").is_none(), "no tag written");
    assert!(
        target.blob("bad/app", &layer.digest).is_none(),
        "the damaged blob was not committed"
    );
}

#[test]
fn a_truncated_archive_is_refused() {
    let image = small_image(Flavor::Docker, "truncated");
    let work = Work::new();
    let archive = pulled(&work, &image, "docker", "t.tar");
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    let target = FakeRegistry::anonymous();
    let run = push(&work, &archive, &format!("{}/t/app:v1", target.addr()), &[]);
    run.expect_code(1);
    run.assert_no_panic();
    assert!(target.manifest("t/app", "v1").is_none());
}

#[test]
fn targets_and_image_choice_are_checked() {
    let image = small_image(Flavor::Docker, "usage");
    let work = Work::new();
    let archive = pulled(&work, &image, "docker", "u.tar");
    for bad in ["app:v1", "127.0.0.1:5000/App", "127.0.0.1:5000/a@sha256:00"] {
        push(&work, &archive, bad, &[]).expect_code(2);
    }
    let target = FakeRegistry::anonymous();
    let run = push(
        &work,
        &archive,
        &format!("{}/x", target.addr()),
        &["--image", "nope:1"],
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("holds no image named"),
        "{}",
        run.stderr
    );
    let missing = work.path("missing.tar");
    push(&work, &missing, &format!("{}/x", target.addr()), &[]).expect_code(1);
}

#[test]
fn pushing_needs_credentials_with_the_push_scope() {
    let image = small_image(Flavor::Docker, "scoped");
    let work = Work::new();
    let archive = pulled(&work, &image, "docker", "s.tar");
    let target = FakeRegistry::start(Config::with_auth(Auth::bearer(USER, PASS)));
    let dest = format!("{}/private/app:v1", target.addr());
    let anonymous = push(&work, &archive, &dest, &[]);
    anonymous.expect_code(1);
    assert!(
        anonymous.stderr.contains("-u") || anonymous.stderr.contains("log in"),
        "says to log in: {}",
        anonymous.stderr
    );
    let cache = work.cache();
    let args = [
        "push",
        archive.to_str().unwrap(),
        &dest,
        "--json",
        "--cache-dir",
        cache.to_str().unwrap(),
        "-u",
        USER,
        "--password-stdin",
    ];
    let run = work.run_with(&args, &[], Some(&format!("{PASS}\n")));
    run.success();
    run.assert_not_leaked(PASS);
    assert_eq!(
        target.manifest("private/app", "v1").unwrap().1,
        image.manifest.data
    );

    let pull_only =
        FakeRegistry::start(Config::with_auth(Auth::bearer(USER, PASS)).push(PushGrant::Nobody));
    let dest = format!("{}/private/app:v1", pull_only.addr());
    let args = [
        "push",
        archive.to_str().unwrap(),
        &dest,
        "--cache-dir",
        cache.to_str().unwrap(),
        "-u",
        USER,
        "--password-stdin",
    ];
    let run = work.run_with(&args, &[], Some(&format!("{PASS}\n")));
    run.expect_code(1);
    assert!(run.stderr.contains("pull but not push"), "{}", run.stderr);
}

/// Two images with the same config and layers but other manifests (Docker and OCI media types)
/// in one bundle: each name goes with its own image.
#[test]
fn look_alike_images_keep_their_own_names() {
    let docker = small_image(Flavor::Docker, "look-alike");
    // The same config and layer under an OCI manifest.
    let mut manifest: serde_json::Value = serde_json::from_slice(&docker.manifest.data).unwrap();
    manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    manifest["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    for layer in manifest["layers"].as_array_mut().unwrap() {
        layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
    }
    let mut oci = docker.clone();
    oci.manifest =
        crate::support::image::Blob::json("application/vnd.oci.image.manifest.v1+json", &manifest);
    assert_ne!(docker.manifest.digest, oci.manifest.digest);
    let origin = FakeRegistry::anonymous();
    origin.push_image("as-docker", "v1", &docker);
    origin.push_image("as-oci", "v1", &oci);
    let work = Work::new();
    let bundle = work.path("look-alike.tar");
    let cache = work.cache();
    work.run(&[
        "--cache-dir",
        cache.to_str().unwrap(),
        "-q",
        "-o",
        bundle.to_str().unwrap(),
        &origin.reference("as-docker", "v1"),
        &origin.reference("as-oci", "v1"),
    ])
    .success();
    let target = FakeRegistry::anonymous();
    let run = push(&work, &bundle, &format!("{}/m", target.addr()), &[]);
    run.success();
    let targets: Vec<String> = (run.json_lines().iter())
        .map(|r| format!("{} {}", r["target"], r["digest"]))
        .collect();
    assert_eq!(targets.len(), 2, "one push per image: {targets:#?}");
    assert_eq!(
        target.manifest("m/as-docker", "v1").unwrap().1,
        docker.manifest.data
    );
    assert_eq!(
        target.manifest("m/as-oci", "v1").unwrap().1,
        oci.manifest.data
    );
}

/// An archive pulled from the target registry itself, pushed to another repository there:
/// its blobs are mounted from where it came from, not uploaded.
#[test]
fn blobs_are_mounted_from_the_repository_the_image_came_from() {
    let image = small_image(Flavor::Docker, "came from here");
    let registry = FakeRegistry::anonymous();
    registry.push_image("origin/app", "v1", &image);
    let work = Work::new();
    let archive = work.path("here.tar");
    let cache = work.cache();
    work.run(&[
        "--cache-dir",
        cache.to_str().unwrap(),
        "-q",
        "-o",
        archive.to_str().unwrap(),
        &registry.reference("origin/app", "v1"),
    ])
    .success();
    let run = push(
        &work,
        &archive,
        &format!("{}/copy/app:v1", registry.addr()),
        &[],
    );
    run.success();
    let r = report(&run);
    assert_eq!(r["blobs_mounted"], r["blobs"], "{r}");
    assert_eq!(r["bytes_uploaded"], 0);
}
