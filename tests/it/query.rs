//! `inspect` and `tags`: questions answered from manifests and tag lists, never a layer.

use serde_json::Value;

use crate::common::Work;
use crate::support::image::{
    Flavor, Image, ImageBuilder, Index, LayerBuilder, index, random_image,
};
use crate::support::registry::{Action, Config, FakeRegistry, Fault, Match};

fn platform_image(os: &str, arch: &str, variant: Option<&str>, seed: u8) -> Image {
    ImageBuilder::new(Flavor::Oci)
        .platform(os, arch, variant)
        .layer(LayerBuilder::new().file("a.txt", vec![seed; 3000], 0o644))
        .layer(LayerBuilder::new().file("b.txt", vec![seed + 1; 5000], 0o644))
        .build()
}

/// amd64 and arm64/v8, with an attestation for amd64.
fn multi() -> Index {
    index(
        Flavor::Oci,
        vec![
            platform_image("linux", "amd64", None, 1),
            platform_image("linux", "arm64", Some("v8"), 3),
        ],
        true,
    )
}

/// No blob but configs was requested: no layer bytes went out.
#[track_caller]
fn assert_no_layer_requested(registry: &FakeRegistry, idx: &Index) {
    for image in idx.images.iter().chain(&idx.extra_manifests) {
        for layer in &image.layers {
            assert_eq!(
                registry.blob_gets(&layer.digest),
                0,
                "layer {} was requested",
                layer.digest
            );
        }
    }
}

fn layer_digests(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("an array of layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("a digest").to_string())
        .collect()
}

fn digests(image: &Image) -> Vec<String> {
    image.layers.iter().map(|l| l.digest.clone()).collect()
}

/// `inspect --json --platform PLATFORM` of [`multi`] on a fresh registry and cache.
fn inspected(platform: &str) -> (FakeRegistry, Index, Value) {
    let registry = FakeRegistry::anonymous();
    let idx = multi();
    registry.push_index("multi", "v1", &idx);
    let work = Work::new();
    let image = registry.reference("multi", "v1");
    let run = work.pull_to(&["inspect", "--json", "--platform", platform, &image]);
    run.success();
    let json = run.json();
    (registry, idx, json)
}

#[test]
fn inspect_lists_platforms_and_attestations_without_fetching_layers() {
    let (registry, idx, json) = inspected("linux/amd64");
    let (amd64, arm64) = (&idx.images[0], &idx.images[1]);
    assert_eq!(json["digest"], idx.index.digest.as_str(), "{json}");
    assert_eq!(json["multi_platform"], true, "{json}");
    let platforms = json["platforms"].as_array().expect("platforms");
    assert_eq!(platforms.len(), 3, "{json}");
    assert_eq!(platforms[0]["platform"], "linux/amd64", "{json}");
    assert_eq!(platforms[0]["kind"], "image", "{json}");
    assert_eq!(
        platforms[0]["digest"],
        amd64.manifest.digest.as_str(),
        "{json}"
    );
    assert_eq!(platforms[0]["download_bytes"], amd64.blob_bytes(), "{json}");
    assert_eq!(platforms[1]["platform"], "linux/arm64/v8", "{json}");
    assert_eq!(platforms[1]["download_bytes"], arm64.blob_bytes(), "{json}");
    assert_eq!(platforms[2]["kind"], "attestation", "{json}");
    assert_eq!(
        platforms[2]["attestation_for"],
        amd64.manifest.digest.as_str(),
        "{json}"
    );
    let images = json["images"].as_array().expect("images");
    assert_eq!(images.len(), 1, "{json}");
    assert_eq!(images[0]["platform"], "linux/amd64", "{json}");
    assert_eq!(
        images[0]["manifest"],
        amd64.manifest.digest.as_str(),
        "{json}"
    );
    assert_eq!(
        images[0]["config"]["digest"],
        amd64.config.digest.as_str(),
        "{json}"
    );
    assert!(
        images[0]["created"]
            .as_str()
            .is_some_and(|c| c.starts_with("20")),
        "{json}"
    );
    assert_eq!(layer_digests(&json["layers"]), digests(amd64), "{json}");
    assert_eq!(json["layers"][0]["compression"], "gzip", "{json}");
    assert_eq!(json["layers"][0]["size"], amd64.layers[0].size(), "{json}");
    assert_eq!(json["download_bytes"], amd64.blob_bytes(), "{json}");
    assert_eq!(json["cached_bytes"], 0, "{json}");
    assert_no_layer_requested(&registry, &idx);
    assert_eq!(
        registry.total_blob_gets(),
        1,
        "only the config: {:?}",
        registry.requests()
    );
}

#[test]
fn inspect_says_what_the_cache_already_holds() {
    let registry = FakeRegistry::anonymous();
    let idx = multi();
    registry.push_index("multi", "v1", &idx);
    let work = Work::new();
    let image = registry.reference("multi", "v1");
    work.pull(&["--platform", "linux/arm64", &image]).success();
    registry.reset_log();
    let run = work.pull_to(&["inspect", "--json", "--platform", "linux/arm64", &image]);
    run.success();
    let json = run.json();
    let arm64 = &idx.images[1];
    assert_eq!(json["download_bytes"], arm64.blob_bytes(), "{json}");
    assert_eq!(json["cached_bytes"], arm64.blob_bytes(), "{json}");
    assert_eq!(json["layers"][1]["cached"], true, "{json}");
    assert_eq!(
        registry.total_blob_gets(),
        0,
        "everything came from the cache"
    );
    // The text view says the same.
    let run = work.pull_to(&["inspect", "--platform", "linux/amd64", &image]);
    run.success();
    let amd64 = &idx.images[0];
    assert!(
        run.stdout
            .contains(&format!("Digest:    {}", idx.index.digest)),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("linux/arm64/v8"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "attestation      {}",
            idx.extra_manifests[0].manifest.digest
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("for linux/amd64\n"), "{}", run.stdout);
    for layer in &amd64.layers {
        assert!(run.stdout.contains(&layer.digest), "{}", run.stdout);
    }
    assert!(
        run.stdout.contains("0 B of it in the cache"),
        "{}",
        run.stdout
    );
    assert_no_layer_requested(&registry, &idx);
}

#[test]
fn inspect_all_describes_every_platform_and_never_an_attestation() {
    let (registry, idx, json) = inspected("all");
    let images = json["images"].as_array().expect("images");
    let shown: Vec<&str> = images
        .iter()
        .map(|i| i["platform"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["linux/amd64", "linux/arm64/v8"], "{json}");
    let mut all = digests(&idx.images[0]);
    all.extend(digests(&idx.images[1]));
    assert_eq!(layer_digests(&json["layers"]), all, "{json}");
    assert_eq!(
        json["download_bytes"],
        idx.images[0].blob_bytes() + idx.images[1].blob_bytes(),
        "{json}"
    );
    assert_no_layer_requested(&registry, &idx);
    assert_eq!(registry.total_blob_gets(), 2, "the two configs only");
}

#[test]
fn inspect_a_single_image_and_a_missing_platform() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 2, 1000, 5);
    registry.push_image("one", "v1", &image);
    let work = Work::new();
    let run = work.pull_to(&["inspect", "--json", &registry.reference("one", "v1")]);
    run.success();
    let json = run.json();
    assert_eq!(json["multi_platform"], false, "{json}");
    assert_eq!(json["digest"], image.manifest.digest.as_str(), "{json}");
    assert_eq!(
        json["platforms"][0]["platform"],
        image.platform_string(),
        "{json}"
    );
    assert_eq!(layer_digests(&json["layers"]), digests(&image), "{json}");
    for layer in &image.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 0);
    }

    let idx = multi();
    registry.push_index("multi", "v1", &idx);
    let run = work.pull_to(&[
        "inspect",
        "--platform",
        "linux/s390x",
        &registry.reference("multi", "v1"),
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("linux/arm64/v8"),
        "the platforms there are named: {}",
        run.stderr
    );
    assert_no_layer_requested(&registry, &idx);
}

#[test]
fn inspect_refuses_a_listed_manifest_that_is_not_what_the_index_says() {
    let registry = FakeRegistry::anonymous();
    let idx = multi();
    registry.push_index("multi", "v1", &idx);
    let arm64 = &idx.images[1].manifest;
    registry.add_fault(
        Fault::new(
            Match::path(&format!("/manifests/{}", arm64.digest)),
            Action::Respond {
                status: 200,
                headers: vec![("Content-Type".into(), arm64.media_type.clone())],
                body: String::from_utf8(idx.images[0].manifest.data.clone()).unwrap(),
            },
        )
        .always(),
    );
    let work = Work::new();
    let run = work.pull_to(&["inspect", &registry.reference("multi", "v1")]);
    run.expect_code(1);
    assert!(run.stderr.contains(&arm64.digest), "{}", run.stderr);
    run.assert_no_panic();
}

/// A repository with `n` tags `t00`, `t01`, ...
fn tagged(registry: &FakeRegistry, n: usize) -> Vec<String> {
    let image = random_image(Flavor::Oci, 1, 100, 9);
    let tags: Vec<String> = (0..n).map(|i| format!("t{i:02}")).collect();
    for t in &tags {
        registry.push_image("app", t, &image);
    }
    tags
}

fn tag_pages(registry: &FakeRegistry) -> Vec<Option<String>> {
    registry
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/tags/list"))
        .map(|r| r.query)
        .collect()
}

#[test]
fn tags_follow_every_page() {
    let registry = FakeRegistry::start(Config::default().tags_page(3));
    let tags = tagged(&registry, 8);
    let work = Work::new();
    let repo = format!("{}/app", registry.addr());
    let run = work.run(&["tags", &repo]);
    run.success();
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        tags,
        "{}",
        run.stdout
    );
    assert_eq!(tag_pages(&registry).len(), 3, "8 tags in pages of 3");

    registry.reset_log();
    let run = work.run(&["tags", "--json", "--page-size", "2", &repo]);
    run.success();
    assert_eq!(run.json(), serde_json::json!(tags));
    let pages = tag_pages(&registry);
    assert_eq!(pages.len(), 4, "{pages:?}");
    assert_eq!(pages[0].as_deref(), Some("n=2"), "{pages:?}");
    assert_eq!(pages[3].as_deref(), Some("last=t05&n=2"), "{pages:?}");
}

#[test]
fn tags_refuse_hostile_pagination_and_names() {
    let registry = FakeRegistry::anonymous();
    tagged(&registry, 2);
    let elsewhere = FakeRegistry::anonymous();
    tagged(&elsewhere, 2);
    let work = Work::new();
    let repo = format!("{}/app", registry.addr());
    let page = |link: &str, body: &str| {
        Fault::new(
            Match::path("/tags/list"),
            Action::Respond {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Link".into(), link.into()),
                ],
                body: body.into(),
            },
        )
        .always()
    };
    let body = r#"{"name":"app","tags":["a"]}"#;

    // A next page on another origin is not followed (credentials stay home).
    let other = format!(
        "<http://{}/v2/app/tags/list?last=a>; rel=\"next\"",
        elsewhere.addr()
    );
    registry.add_fault(page(&other, body));
    let run = work.run(&["tags", &repo]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("not this registry's tags list"),
        "{}",
        run.stderr
    );
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );

    // A page that links to itself would never end.
    let registry = FakeRegistry::anonymous();
    tagged(&registry, 1);
    let repo = format!("{}/app", registry.addr());
    registry.add_fault(page("</v2/app/tags/list>; rel=\"next\"", body));
    let run = work.run(&["tags", &repo]);
    run.expect_code(1);
    assert!(run.stderr.contains("never end"), "{}", run.stderr);
    assert_eq!(tag_pages(&registry).len(), 1);

    // A tag that is no tag name (a terminal escape) is refused, shown escaped.
    let registry = FakeRegistry::anonymous();
    tagged(&registry, 1);
    let repo = format!("{}/app", registry.addr());
    registry.add_fault(page("", "{\"tags\":[\"ok\",\"\\u001b[2Jx\"]}"));
    let run = work.run(&["tags", &repo]);
    run.expect_code(1);
    assert!(run.stderr.contains("is not a tag name"), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    // A tag or digest in the repository is a usage error.
    let run = work.run(&["tags", &format!("{repo}:v1")]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(&format!("such as {repo}")),
        "{}",
        run.stderr
    );
}

#[test]
fn tags_of_a_missing_repository_fail_clearly() {
    let registry = FakeRegistry::anonymous();
    let work = Work::new();
    let run = work.run(&["tags", &format!("{}/nothing", registry.addr())]);
    run.expect_code(1);
    assert!(run.stderr.contains("nothing"), "{}", run.stderr);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
}

#[test]
fn inspect_a_list_of_platforms() {
    let (registry, idx, json) = inspected("linux/arm64,linux/amd64,linux/arm64/v8");
    let shown: Vec<&str> = json["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["platform"].as_str().unwrap())
        .collect();
    assert_eq!(
        shown,
        ["linux/arm64/v8", "linux/amd64"],
        "each chosen once: {json}"
    );
    assert_no_layer_requested(&registry, &idx);
}
