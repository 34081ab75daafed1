//! `--exclude-from SOURCE`: thin `docker` and `legacy` archives that name every layer but hold
//! only those above the chain the target already has (from an archive, a layout or an image
//! in a registry); a shared layer in the middle of the chain is kept; left-out layers are not
//! downloaded; the report counts them.

use serde_json::Value;

use crate::common::{Archive, Work};
use crate::support::image::{Flavor, Image, ImageBuilder, LayerBuilder};
use crate::support::registry::FakeRegistry;

/// `base` (2 layers); `app` on top of it (its 2 layers and one more); `odd`, whose bottom layer
/// is its own and whose second is base's second (the same layer, another chain).
fn images() -> (Image, Image, Image) {
    let base = ImageBuilder::new(Flavor::Docker)
        .layer(LayerBuilder::new().file("etc/os", vec![b'o'; 40_000], 0o644))
        .layer(LayerBuilder::new().file("usr/lib/x", vec![b'l'; 30_000], 0o644))
        .build();
    let on =
        |b: ImageBuilder, i: usize| b.raw_layer(base.layers[i].clone(), base.diff_ids[i].clone());
    let app = on(on(ImageBuilder::new(Flavor::Docker), 0), 1)
        .layer(LayerBuilder::new().file("app/bin", vec![b'a'; 20_000], 0o755))
        .build();
    let odd = on(
        ImageBuilder::new(Flavor::Docker).layer(LayerBuilder::new().file(
            "other",
            vec![b'z'; 10],
            0o644,
        )),
        1,
    )
    .build();
    (base, app, odd)
}

fn serve() -> (FakeRegistry, Image, Image, Image) {
    let registry = FakeRegistry::anonymous();
    let (base, app, odd) = images();
    registry.push_image("base", "v1", &base);
    registry.push_image("app", "v1", &app);
    registry.push_image("odd", "v1", &odd);
    (registry, base, app, odd)
}

/// Pulls with a cache of its own (so nothing comes from an earlier pull's cache).
fn pull_json(work: &Work, cache: &str, args: &[&str]) -> Value {
    let cache = work.path(cache);
    let mut all = vec!["--cache-dir", cache.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let run = work.run(&all);
    run.success();
    run.json()
}

fn blob_entry(digest: &str) -> String {
    format!("blobs/sha256/{}", &digest[7..])
}

#[test]
fn a_thin_docker_archive_holds_only_the_layers_above_the_base() {
    let (registry, base, app, _) = serve();
    let work = Work::new();
    let base_tar = work.path("base.tar");
    let ignored = pull_json(
        &work,
        "c1",
        &[
            "-o",
            base_tar.to_str().unwrap(),
            &registry.reference("base", "v1"),
        ],
    );
    assert!(
        ignored.get("layers_left_out").is_none(),
        "only thin archives say it: {ignored}"
    );
    registry.reset_log();

    let thin = work.path("app.tar");
    let json = pull_json(
        &work,
        "c2",
        &[
            "--exclude-from",
            base_tar.to_str().unwrap(),
            "-o",
            thin.to_str().unwrap(),
            &registry.reference("app", "v1"),
        ],
    );
    assert_eq!(json["layers_left_out"], 2, "{json}");
    assert_eq!(
        json["bytes_left_out"],
        base.layers[0].size() + base.layers[1].size(),
        "{json}"
    );
    assert_eq!(json["layers"], 3, "{json}");
    for layer in &base.layers {
        assert_eq!(
            registry.blob_gets(&layer.digest),
            0,
            "a left-out layer was downloaded"
        );
    }
    let archive = Archive::open(&thin);
    let manifest: Value =
        serde_json::from_slice(&archive.entry("manifest.json").unwrap().data).unwrap();
    let named: Vec<String> = app.layers.iter().map(|l| blob_entry(&l.digest)).collect();
    assert_eq!(
        manifest[0]["Layers"],
        serde_json::json!(named),
        "manifest.json names every layer"
    );
    assert!(archive.entry(&named[0]).is_none() && archive.entry(&named[1]).is_none());
    assert_eq!(
        archive.entry(&named[2]).map(|e| e.data.clone()),
        Some(app.layers[2].data.clone())
    );
    assert!(archive.entry(&blob_entry(&app.config.digest)).is_some());

    // The text report says it too.
    let run = work.pull_to(&[
        "--exclude-from",
        base_tar.to_str().unwrap(),
        "-o",
        "app2.tar",
        &registry.reference("app", "v1"),
    ]);
    run.success();
    assert!(
        run.stdout.contains("Left out: 2 of 3 layers"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_image_reference_as_the_source_and_a_shared_layer_in_the_middle() {
    let (registry, base, _, odd) = serve();
    let work = Work::new();
    let out = work.path("odd.tar");
    let json = pull_json(
        &work,
        "c",
        &[
            "--exclude-from",
            &registry.reference("base", "v1"),
            "-o",
            out.to_str().unwrap(),
            &registry.reference("odd", "v1"),
        ],
    );
    // odd's second layer is base's, but on another chain: docker load would not skip it.
    assert_eq!(json["layers_left_out"], 0, "{json}");
    assert_eq!(json["bytes_left_out"], 0, "{json}");
    let archive = Archive::open(&out);
    for layer in &odd.layers {
        assert!(
            archive.entry(&blob_entry(&layer.digest)).is_some(),
            "{} is held",
            layer.digest
        );
    }
    // The reference's config was read, never a layer of it that odd does not hold.
    assert_eq!(registry.blob_gets(&base.layers[0].digest), 0);
    assert_eq!(
        registry.blob_gets(&base.layers[1].digest),
        1,
        "odd holds it"
    );
    assert_eq!(registry.blob_gets(&base.config.digest), 1);
}

#[test]
fn a_thin_legacy_archive_names_the_layers_it_does_not_hold() {
    let (registry, _, app, _) = serve();
    let work = Work::new();
    let json = pull_json(
        &work,
        "c",
        &[
            "-f",
            "legacy",
            "--exclude-from",
            &registry.reference("base", "v1"),
            "-o",
            "app.tar",
            &registry.reference("app", "v1"),
        ],
    );
    assert_eq!(json["layers_left_out"], 2, "{json}");
    let archive = Archive::open(&work.path("app.tar"));
    let manifest: Value =
        serde_json::from_slice(&archive.entry("manifest.json").unwrap().data).unwrap();
    let layers: Vec<&str> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), app.layers.len());
    assert!(archive.entry(layers[0]).is_none() && archive.entry(layers[1]).is_none());
    assert!(archive.entry(layers[2]).is_some_and(|e| !e.data.is_empty()));
    let json_of = |l: &str| l.replace("layer.tar", "json");
    assert!(
        layers.iter().all(|l| archive.entry(&json_of(l)).is_some()),
        "every layer's json is there"
    );
}

#[test]
fn exclude_from_is_checked() {
    let (registry, _, _, _) = serve();
    let work = Work::new();
    let app = registry.reference("app", "v1");
    let run = work.pull_to(&[
        "-f",
        "oci",
        "--exclude-from",
        &registry.reference("base", "v1"),
        &app,
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("-f docker or -f legacy"),
        "{}",
        run.stderr
    );
    let run = work.pull_to(&["--exclude-from", "./Not An Image.tar", &app]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("neither a file nor a directory"),
        "{}",
        run.stderr
    );
    let bad = work.path("bad.tar");
    std::fs::write(&bad, b"not a tar at all").unwrap();
    let run = work.pull_to(&["--exclude-from", bad.to_str().unwrap(), "-o", "x.tar", &app]);
    run.expect_code(1);
    assert!(run.stderr.contains("bad.tar"), "{}", run.stderr);
    assert!(!work.path("x.tar").exists());
}
