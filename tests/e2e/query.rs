//! `tags` and `inspect` against the real distribution registry: a tag list whatever page size
//! is asked for, behind Bearer tokens too, and the multi-platform fixture described as the
//! registry serves it, no layer downloaded.

use serde_json::Value;

use crate::Scratch;
use crate::env::setup;
use crate::support::push::Pusher;

#[test]
fn tags_of_the_real_registry() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let repo = "e2e-tags/paged";
    let pusher = Pusher::new(&env.registry).expect("a pusher for the plain registry");
    let mut tags: Vec<String> = (0..7).map(|i| format!("v1.{i}")).collect();
    for tag in &tags {
        pusher
            .push_image(repo, Some(tag), &env.fixtures.small)
            .expect("pushing a tag");
    }
    tags.sort();
    let reference = env.plain(repo);

    // Distribution 2.8 (Debian's) answers with every tag whatever `n` asks, in its own order,
    // and no `Link`: the list is complete after one page. (Paginating registries are in the
    // integration tests, against the fake registry that answers as distribution 3 does.)
    let run = scratch
        .pull(&["--debug", "tags", "--page-size", "2", &reference])
        .success();
    let mut listed: Vec<&str> = run.stdout.lines().collect();
    listed.sort();
    assert_eq!(listed, tags, "{}", run.describe());
    let pages = run
        .stderr
        .lines()
        .filter(|l| l.contains("request") && l.contains("/tags/list?"))
        .count();
    assert_eq!(pages, 1, "one page\n{}", run.describe());
    let run = scratch
        .pull(&["tags", "--json", "--page-size", "3", &reference])
        .success();
    let listed: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON array");
    let mut listed: Vec<String> = serde_json::from_value(listed).expect("an array of strings");
    listed.sort();
    assert_eq!(listed, tags, "{}", run.describe());
    // The registry's own page size.
    let run = scratch.pull(&["tags", &reference]).success();
    assert_eq!(run.stdout.lines().count(), tags.len(), "{}", run.describe());
}

#[test]
fn tags_behind_bearer_tokens() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let reference = env.token("private/small");
    let cmd = scratch.command(&[
        "tags",
        "--page-size",
        "1",
        &reference,
        "-u",
        &env.token_user,
        "--password-stdin",
    ]);
    let run = scratch
        .run(cmd, Some(&format!("{}\n", env.token_pass)))
        .success();
    assert_eq!(run.stdout.trim(), "latest", "{}", run.describe());
}

#[test]
fn inspect_the_multi_platform_fixture() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let idx = &env.fixtures.multi;
    let run = scratch
        .pull(&[
            "inspect",
            "--json",
            "--platform",
            "all",
            &env.plain("multi"),
        ])
        .success();
    let json: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    assert_eq!(json["digest"], idx.index.digest.as_str(), "{json}");
    let platforms = json["platforms"].as_array().expect("platforms");
    let images: Vec<&Value> = platforms.iter().filter(|p| p["kind"] == "image").collect();
    let shown: Vec<&str> = images
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(shown, idx.platforms(), "{json}");
    for (entry, image) in images.iter().zip(&idx.images) {
        assert_eq!(entry["digest"], image.manifest.digest.as_str(), "{json}");
        assert_eq!(entry["download_bytes"], image.blob_bytes(), "{json}");
    }
    let attestations = platforms
        .iter()
        .filter(|p| p["kind"] == "attestation")
        .count();
    assert_eq!(attestations, idx.extra_manifests.len(), "{json}");
    assert_eq!(
        json["images"].as_array().map(Vec::len),
        Some(idx.images.len()),
        "{json}"
    );
    // Only the configs reached the cache: no layer was downloaded.
    for image in &idx.images {
        assert!(
            scratch
                .cache()
                .join("blobs/sha256")
                .join(&image.config.digest[7..])
                .is_file()
        );
        for layer in &image.layers {
            let path = scratch
                .cache()
                .join("blobs/sha256")
                .join(&layer.digest[7..]);
            assert!(!path.exists(), "layer {} was downloaded", layer.digest);
        }
    }
}
