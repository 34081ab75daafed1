//! The archive formats against the fake registry: `-f docker` (the default), `-f legacy` (alias
//! `synology`), `-f oci` and `-f oci-dir`, with odd images (gzip, zstd and uncompressed layers,
//! empty and repeated layers, many layers, a large config, foreign layers), bundles, names,
//! `--platform all`, usage errors and byte-for-byte determinism.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use crate::common::{
    Ann, Archive, Expected, Run, Work, assert_docker_archive, closed_port, files_in, tree,
};
use crate::support::image::{
    Blob, DOCKER_MANIFEST_LIST, Flavor, Image, ImageBuilder, LayerBuilder, OCI_INDEX, gunzip,
    index, large_config_image, many_layers_image, random_image, sha256_digest, unzstd,
};
use crate::support::registry::{Auth, Config, FakeRegistry};

// ---------------------------------------------------------------------------------------------
// Images

/// Every kind of layer a legacy writer must turn into a plain `layer.tar`, plus the oddities:
/// gzip, zstd, uncompressed (`.tar` media type), an empty layer, the first layer listed again
/// and the empty layer listed again (both at other places in the chain).
fn odd_image(flavor: Flavor) -> Image {
    ImageBuilder::new(flavor)
        .layer(LayerBuilder::new().dir("etc", 0o755).file(
            "etc/gzip-layer",
            b"from a gzip layer\n".to_vec(),
            0o644,
        ))
        .zstd_layer(
            LayerBuilder::new()
                .dir("opt", 0o755)
                .file("opt/zstd-layer", b"from a zstd layer\n".repeat(300), 0o644)
                .symlink("opt/link", "zstd-layer"),
        )
        .uncompressed_layer(LayerBuilder::new().dir("srv", 0o755).file(
            "srv/plain-layer",
            b"from an uncompressed layer\n".to_vec(),
            0o600,
        ))
        .empty_layer()
        .repeat_layer(0)
        .empty_layer()
        .cmd(&["/bin/cat", "/etc/gzip-layer"])
        .label("image", &format!("odd-{flavor:?}"))
        .build()
}

/// The manifest, the config and the layers: every blob a single-platform layout holds.
fn image_blobs(image: &Image) -> Vec<&Blob> {
    std::iter::once(&image.manifest)
        .chain(image.blobs())
        .collect()
}

/// A layer's uncompressed tar, by its media type.
fn uncompressed(layer: &Blob) -> Vec<u8> {
    if layer.media_type.ends_with("zstd") {
        unzstd(&layer.data)
    } else if layer.media_type.ends_with("gzip") {
        gunzip(&layer.data)
    } else {
        layer.data.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Running

/// `docker-pull -q -f FORMAT -o <work>/NAME ARGS` with the work's cache; returns the run and
/// the archive path.
fn pull_as(work: &Work, format: &str, name: &str, args: &[&str]) -> (Run, PathBuf) {
    let path = work.path(name);
    let mut all = vec![
        "-q",
        "-f",
        format,
        "-o",
        path.to_str().expect("utf-8 temp path"),
    ];
    all.extend_from_slice(args);
    (work.pull_to(&all), path)
}

/// Like [`pull_as`], expecting success and an archive at the path.
#[track_caller]
fn pull_ok(work: &Work, format: &str, name: &str, args: &[&str]) -> PathBuf {
    let (run, path) = pull_as(work, format, name, args);
    run.success();
    assert!(
        path.exists(),
        "{} was not written\n{}",
        path.display(),
        run.stderr
    );
    path
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Every tar entry: mtime 0, uid/gid 0, a non-empty relative name without `..`, and no name
/// twice.
#[track_caller]
fn assert_tar_hygiene(archive: &Archive) {
    let where_ = archive.path.display();
    let mut seen = BTreeSet::new();
    for e in &archive.entries {
        assert!(
            !e.path.trim_end_matches('/').is_empty(),
            "{where_}: an entry has an empty name"
        );
        assert!(
            !e.path.starts_with('/'),
            "{where_}: absolute entry name {}",
            e.path
        );
        assert!(
            Path::new(&e.path)
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "{where_}: entry name {} is not a plain relative path",
            e.path
        );
        assert_eq!(e.mtime, 0, "{where_}: {} mtime", e.path);
        assert_eq!((e.uid, e.gid), (0, 0), "{where_}: {} uid/gid", e.path);
        assert!(
            seen.insert(e.path.trim_end_matches('/').to_string()),
            "{where_}: {} appears twice",
            e.path
        );
    }
}

/// Symbolic links in a tar: entry name → link target.
fn symlinks(path: &Path) -> BTreeMap<String, String> {
    let file = std::fs::File::open(path).expect("opening the archive");
    let mut archive = tar::Archive::new(file);
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("reading the archive") {
        let entry = entry.expect("a tar entry");
        if entry.header().entry_type().is_symlink() {
            let name = entry
                .path()
                .expect("entry path")
                .to_string_lossy()
                .into_owned();
            let target = entry
                .link_name()
                .expect("link name")
                .expect("a symlink has a target")
                .to_string_lossy()
                .into_owned();
            out.insert(name, target);
        }
    }
    out
}

fn is_v1_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What one image of a legacy archive must look like.
struct Legacy<'a> {
    image: &'a Image,
    repo_tags: Vec<String>,
}

impl<'a> Legacy<'a> {
    fn tagged(image: &'a Image, name: &str) -> Self {
        Self {
            image,
            repo_tags: vec![name.to_string()],
        }
    }
}

/// The bytes of a legacy `<v1id>/layer.tar`, following a symlink `../<v1id>/layer.tar` to a
/// regular file.
#[track_caller]
fn legacy_layer<'a>(
    archive: &'a Archive,
    links: &BTreeMap<String, String>,
    path: &str,
) -> &'a [u8] {
    let where_ = archive.path.display();
    let entry = archive
        .entry(path)
        .unwrap_or_else(|| panic!("{where_}: no {path}; entries {:?}", archive.names()));
    if entry.kind.is_symlink() {
        let target = &links[path];
        let rel = target.strip_prefix("../").unwrap_or_else(|| {
            panic!("{where_}: {path} links to {target}, not to ../<v1id>/layer.tar")
        });
        let (id, file) = rel
            .split_once('/')
            .unwrap_or_else(|| panic!("{where_}: {path} links to {target}"));
        assert!(
            is_v1_id(id) && file == "layer.tar",
            "{where_}: {path} links to {target}, not to ../<v1id>/layer.tar"
        );
        let first = archive
            .entry(rel)
            .unwrap_or_else(|| panic!("{where_}: {path} links to the missing {target}"));
        assert!(
            first.kind.is_file(),
            "{where_}: {path} links to {target}, which is not a regular file"
        );
        &first.data
    } else {
        assert!(
            entry.kind.is_file(),
            "{where_}: {path} is a {:?}",
            entry.kind
        );
        &entry.data
    }
}

/// Checks a `-f legacy` archive: per layer `<v1id>/` with `VERSION`, `json` (chained through
/// `parent`) and an uncompressed `layer.tar` whose digest is the diff_id; the registry's config
/// as `<hex>.json` byte-for-byte; `manifest.json`; `repositories`; nothing else. Returns the v1
/// ids of each image.
#[track_caller]
fn assert_legacy_archive(archive: &Archive, expected: &[Legacy<'_>]) -> Vec<Vec<String>> {
    assert_tar_hygiene(archive);
    let where_ = archive.path.display();
    let links = symlinks(&archive.path);
    let manifest = archive.json("manifest.json");
    let items = manifest
        .as_array()
        .unwrap_or_else(|| panic!("{where_}: manifest.json is not an array: {manifest}"));
    assert_eq!(
        items.len(),
        expected.len(),
        "{where_}: manifest.json: {manifest}"
    );
    let mut allowed: BTreeSet<String> = ["manifest.json", "repositories"]
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut want_repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut all_ids = Vec::new();
    for (item, e) in items.iter().zip(expected) {
        let config_name = format!("{}.json", e.image.config.hex());
        assert_eq!(item["Config"], config_name, "{where_}: Config of {item}");
        assert!(
            archive.file(&config_name) == e.image.config.data.as_slice(),
            "{where_}: {config_name} is not the registry's config byte-for-byte"
        );
        allowed.insert(config_name);
        assert_eq!(
            item["RepoTags"],
            json!(e.repo_tags),
            "{where_}: RepoTags of {item}"
        );
        let layers = item["Layers"]
            .as_array()
            .unwrap_or_else(|| panic!("{where_}: Layers of {item}"));
        assert_eq!(
            layers.len(),
            e.image.layers.len(),
            "{where_}: Layers of {item}"
        );
        let config: Value = serde_json::from_slice(&e.image.config.data).expect("config JSON");
        let mut ids: Vec<String> = Vec::new();
        for (i, layer_path) in layers.iter().enumerate() {
            let layer_path = layer_path.as_str().expect("a Layers entry is a string");
            let id = layer_path
                .strip_suffix("/layer.tar")
                .unwrap_or_else(|| panic!("{where_}: layer path {layer_path}"));
            assert!(is_v1_id(id), "{where_}: v1 id {id:?} is not 64 hex");
            assert!(
                archive.entry(id).is_some_and(|d| d.kind.is_dir()),
                "{where_}: no directory entry {id}/"
            );
            assert_eq!(
                archive.file(&format!("{id}/VERSION")),
                b"1.0",
                "{where_}: {id}/VERSION"
            );
            let v1 = archive.json(&format!("{id}/json"));
            assert_eq!(v1["id"], id, "{where_}: {id}/json: {v1}");
            match ids.last() {
                None => assert!(
                    v1.get("parent").is_none(),
                    "{where_}: the bottom layer has a parent: {v1}"
                ),
                Some(parent) => assert_eq!(
                    v1["parent"],
                    parent.as_str(),
                    "{where_}: {id}/json parent: {v1}"
                ),
            }
            if i + 1 == layers.len() {
                assert_eq!(v1["config"], config["config"], "{where_}: top json {v1}");
                assert_eq!(v1["os"], config["os"], "{where_}: top json {v1}");
                assert_eq!(
                    v1["architecture"], config["architecture"],
                    "{where_}: top json {v1}"
                );
            }
            let data = legacy_layer(archive, &links, layer_path);
            let want = uncompressed(&e.image.layers[i]);
            assert!(
                data == want.as_slice(),
                "{where_}: {layer_path} ({} bytes) is not layer {i} uncompressed ({} bytes, {})",
                data.len(),
                want.len(),
                e.image.layers[i].media_type
            );
            assert_eq!(
                sha256_digest(data),
                e.image.diff_ids[i],
                "{where_}: {layer_path} does not hash to the diff_id"
            );
            for name in ["", "/VERSION", "/json", "/layer.tar"] {
                allowed.insert(format!("{id}{name}"));
            }
            ids.push(id.to_string());
        }
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "{where_}: v1 ids repeat in one image: {ids:?}"
        );
        for tag in &e.repo_tags {
            let (repo, t) = tag.rsplit_once(':').expect("NAME:TAG");
            want_repos
                .entry(repo.to_string())
                .or_default()
                .insert(t.to_string(), ids.last().cloned().unwrap_or_default());
        }
        all_ids.push(ids);
    }
    assert_eq!(
        archive.json("repositories"),
        json!(want_repos),
        "{where_}: repositories"
    );
    for name in archive.names() {
        assert!(allowed.contains(&name), "{where_}: unexpected entry {name}");
    }
    all_ids
}

/// One `index.json` entry of an OCI layout: what it points at and the name it carries.
struct Oci<'a> {
    top: &'a Blob,
    /// `org.opencontainers.image.ref.name` and `io.containerd.image.name` (the full reference);
    /// `None`: no name annotations.
    name: Option<String>,
}

impl<'a> Oci<'a> {
    fn named(top: &'a Blob, name: &str) -> Self {
        Self {
            top,
            name: Some(name.to_string()),
        }
    }
}

/// Checks an OCI image layout given as its files (`oci-layout`, `index.json`,
/// `blobs/sha256/<hex>`): exactly `blobs`, each byte-for-byte, and an index of `expected`.
#[track_caller]
fn assert_oci_layout(
    where_: &str,
    ordered: bool,
    files: &BTreeMap<String, Vec<u8>>,
    expected: &[Oci<'_>],
    blobs: &[&Blob],
) {
    let json_file = |name: &str| -> Value {
        let data = files
            .get(name)
            .unwrap_or_else(|| panic!("{where_}: no {name}; files {:?}", files.keys()));
        serde_json::from_slice(data).unwrap_or_else(|e| panic!("{where_}: {name}: {e}"))
    };
    assert_eq!(
        json_file("oci-layout"),
        json!({"imageLayoutVersion": "1.0.0"}),
        "{where_}: oci-layout"
    );
    let mut want: BTreeMap<&str, &Blob> = BTreeMap::new();
    for blob in blobs {
        want.insert(blob.hex(), blob);
    }
    let have: BTreeSet<&str> = files
        .keys()
        .filter_map(|k| k.strip_prefix("blobs/sha256/"))
        .collect();
    assert_eq!(
        have,
        want.keys().copied().collect::<BTreeSet<_>>(),
        "{where_}: the set of blobs"
    );
    for (hex, blob) in &want {
        assert!(
            files[&format!("blobs/sha256/{hex}")] == blob.data,
            "{where_}: blob {} ({}) differs from what the registry served",
            blob.digest,
            blob.media_type
        );
    }
    let others: Vec<&String> = files
        .keys()
        .filter(|k| !k.starts_with("blobs/sha256/") && *k != "oci-layout" && *k != "index.json")
        .collect();
    assert!(others.is_empty(), "{where_}: unexpected files {others:?}");

    let index = json_file("index.json");
    assert_eq!(index["schemaVersion"], 2, "{where_}: index.json {index}");
    assert_eq!(
        index["mediaType"], OCI_INDEX,
        "{where_}: index.json {index}"
    );
    let entries = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{where_}: index.json {index}"));
    assert_eq!(
        entries.len(),
        expected.len(),
        "{where_}: index.json {index}"
    );
    let ref_name = |v: &Value| {
        v.get("annotations")
            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let pairs: Vec<(&Value, &Oci<'_>)> = if ordered {
        entries.iter().zip(expected).collect()
    } else {
        // A layout directory is a set of entries: match each by its name (or digest).
        expected
            .iter()
            .map(|e| {
                let found: Vec<&Value> = entries
                    .iter()
                    .filter(|entry| {
                        ref_name(entry) == e.name
                            && (e.name.is_some() || entry["digest"] == e.top.digest)
                    })
                    .collect();
                assert_eq!(
                    found.len(),
                    1,
                    "{where_}: one index.json entry for {:?} ({}): {index}",
                    e.name,
                    e.top.digest
                );
                (found[0], e)
            })
            .collect()
    };
    for (entry, e) in pairs {
        assert_eq!(entry["mediaType"], e.top.media_type, "{where_}: {entry}");
        assert_eq!(entry["digest"], e.top.digest, "{where_}: {entry}");
        assert_eq!(entry["size"], e.top.size(), "{where_}: {entry}");
        let annotations = entry.get("annotations").cloned().unwrap_or(json!({}));
        match &e.name {
            Some(name) => {
                assert_eq!(
                    annotations["org.opencontainers.image.ref.name"],
                    name.as_str(),
                    "{where_}: {entry}"
                );
                assert_eq!(
                    annotations["io.containerd.image.name"],
                    name.as_str(),
                    "{where_}: {entry}"
                );
            }
            None => {
                for key in [
                    "org.opencontainers.image.ref.name",
                    "io.containerd.image.name",
                ] {
                    assert!(
                        annotations.get(key).is_none(),
                        "{where_}: an unnamed image has {key}: {entry}"
                    );
                }
            }
        }
    }
}

/// Checks a `-f oci` archive: tar hygiene, `oci-layout` first, `index.json` last, only files
/// and directories, no Docker metadata, then the layout (see [`assert_oci_layout`]).
#[track_caller]
fn assert_oci_archive(archive: &Archive, expected: &[Oci<'_>], blobs: &[&Blob]) {
    assert_tar_hygiene(archive);
    let where_ = archive.path.display().to_string();
    let names = archive.names();
    assert_eq!(
        names.first().map(String::as_str),
        Some("oci-layout"),
        "{where_}: {names:?}"
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("index.json"),
        "{where_}: {names:?}"
    );
    for name in ["manifest.json", "repositories"] {
        assert!(
            archive.entry(name).is_none(),
            "{where_}: an OCI archive has no {name}"
        );
    }
    let mut files = BTreeMap::new();
    for e in &archive.entries {
        if e.kind.is_dir() {
            assert!(
                ["blobs", "blobs/sha256"].contains(&e.path.trim_end_matches('/')),
                "{where_}: unexpected directory {}",
                e.path
            );
            continue;
        }
        assert!(e.kind.is_file(), "{where_}: {} is a {:?}", e.path, e.kind);
        files.insert(e.path.clone(), e.data.clone());
    }
    assert_oci_layout(&where_, true, &files, expected, blobs);
}

/// The files of a layout directory (hidden temporaries included, so they fail the check).
fn dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(dir)
        .into_iter()
        .filter(|rel| dir.join(rel).is_file())
        .map(|rel| {
            let data = std::fs::read(dir.join(&rel)).expect("reading a layout file");
            (rel, data)
        })
        .collect()
}

#[track_caller]
fn assert_oci_dir(dir: &Path, expected: &[Oci<'_>], blobs: &[&Blob]) {
    assert_oci_layout(
        &dir.display().to_string(),
        false,
        &dir_files(dir),
        expected,
        blobs,
    );
}

fn index_entries(dir: &Path) -> Vec<Value> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    index["manifests"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// docker (default)

#[test]
fn docker_format_holds_odd_layers_byte_for_byte() {
    let registry = FakeRegistry::anonymous();
    let work = Work::new();
    for (repo, flavor) in [("odd-docker", Flavor::Docker), ("odd-oci", Flavor::Oci)] {
        let image = odd_image(flavor);
        registry.push_image(repo, "v1", &image);
        let reference = registry.reference(repo, "v1");
        let default = pull_ok(
            &work,
            "docker",
            &format!("{repo}-default.tar"),
            &[&reference],
        );
        let archive = Archive::open(&default);
        assert_tar_hygiene(&archive);
        assert_docker_archive(
            &archive,
            &[Expected::tagged(&image, &registry.addr(), repo, "v1")],
        );
        let manifest = archive.json("manifest.json");
        assert_eq!(
            manifest[0]["Layers"][4], manifest[0]["Layers"][0],
            "the repeated layer is listed twice, stored once: {manifest}"
        );
        // `-f docker` is the default: same bytes without the flag.
        let path = work.path(&format!("{repo}-implicit.tar"));
        work.pull_to(&["-q", "-o", path.to_str().unwrap(), &reference])
            .success();
        assert!(
            std::fs::read(&path).unwrap() == std::fs::read(&default).unwrap(),
            "-f docker is the default"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// legacy / synology

#[test]
fn legacy_decompresses_gzip_zstd_and_plain_layers() {
    let registry = FakeRegistry::anonymous();
    let work = Work::new();
    for (repo, flavor) in [("odd-docker", Flavor::Docker), ("odd-oci", Flavor::Oci)] {
        let image = odd_image(flavor);
        registry.push_image(repo, "v1", &image);
        let reference = registry.reference(repo, "v1");
        let path = pull_ok(
            &work,
            "legacy",
            &format!("{repo}-legacy.tar"),
            &[&reference],
        );
        let archive = Archive::open(&path);
        let ids = assert_legacy_archive(&archive, &[Legacy::tagged(&image, &reference)]);
        let ids = &ids[0];

        // The repeated layers are symlinks to their first copy, in dirs of their own.
        let links = symlinks(&path);
        let want_links: BTreeMap<String, String> = [
            (
                format!("{}/layer.tar", ids[4]),
                format!("../{}/layer.tar", ids[0]),
            ),
            (
                format!("{}/layer.tar", ids[5]),
                format!("../{}/layer.tar", ids[3]),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(links, want_links, "{}: symlinks", path.display());
        // The empty layer is a tar of two zero blocks.
        assert_eq!(
            legacy_layer(&archive, &links, &format!("{}/layer.tar", ids[3])),
            vec![0u8; 1024].as_slice()
        );

        // `-f synology` is the same format, byte for byte.
        let synology = pull_ok(
            &work,
            "synology",
            &format!("{repo}-synology.tar"),
            &[&reference],
        );
        assert!(
            std::fs::read(&synology).unwrap() == std::fs::read(&path).unwrap(),
            "-f synology differs from -f legacy"
        );
        // No scratch file is left beside the archives.
        let stray: Vec<String> = files_in(work.dir.path())
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "temporary files left: {stray:?}");
    }
}

#[test]
fn legacy_v1_ids_are_deterministic_and_chained_over_many_layers() {
    let registry = FakeRegistry::anonymous();
    let image = many_layers_image(Flavor::Oci, 45, 7);
    registry.push_image("many", "v45", &image);
    let reference = registry.reference("many", "v45");
    let (one, two) = (Work::new(), Work::new());
    let a = pull_ok(&one, "legacy", "a.tar", &[&reference]);
    let b = pull_ok(&two, "legacy", "b.tar", &[&reference]);
    let ids = assert_legacy_archive(&Archive::open(&a), &[Legacy::tagged(&image, &reference)]);
    assert_eq!(ids[0].len(), 45);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two pulls with separate caches differ"
    );

    let docker = pull_ok(&one, "docker", "many.tar", &[&reference]);
    assert_docker_archive(
        &Archive::open(&docker),
        &[Expected::tagged(&image, &registry.addr(), "many", "v45")],
    );
    let oci = pull_ok(&one, "oci", "many-oci.tar", &[&reference]);
    assert_oci_archive(
        &Archive::open(&oci),
        &[Oci::named(&image.manifest, &reference)],
        &image_blobs(&image),
    );
}

#[test]
fn large_config_is_kept_byte_for_byte_in_every_format() {
    let registry = FakeRegistry::anonymous();
    let image = large_config_image(Flavor::Docker, 3 * 1024 * 1024 + 17, 5);
    assert!(image.config.size() > 3 * 1024 * 1024);
    registry.push_image("big-config", "v1", &image);
    let reference = registry.reference("big-config", "v1");
    let work = Work::new();
    let docker = pull_ok(&work, "docker", "d.tar", &[&reference]);
    assert_docker_archive(
        &Archive::open(&docker),
        &[Expected::tagged(
            &image,
            &registry.addr(),
            "big-config",
            "v1",
        )],
    );
    let legacy = pull_ok(&work, "legacy", "l.tar", &[&reference]);
    let archive = Archive::open(&legacy);
    assert_legacy_archive(&archive, &[Legacy::tagged(&image, &reference)]);
    let oci = pull_ok(&work, "oci", "o.tar", &[&reference]);
    assert_oci_archive(
        &Archive::open(&oci),
        &[Oci::named(&image.manifest, &reference)],
        &image_blobs(&image),
    );
    let dir = work.path("layout");
    pull_ok(&work, "oci-dir", "layout", &[&reference]);
    assert_oci_dir(
        &dir,
        &[Oci::named(&image.manifest, &reference)],
        &image_blobs(&image),
    );
}

#[test]
fn legacy_refuses_a_config_whose_diff_id_lies() {
    let registry = FakeRegistry::anonymous();
    let good =
        LayerBuilder::new()
            .dir("etc", 0o755)
            .file("etc/real", b"real content\n".to_vec(), 0o644);
    let (blob, real_diff_id) = good.build_gzip(Flavor::Oci);
    let lie = sha256_digest(b"not the layer");
    let (first, first_diff) = LayerBuilder::new()
        .file("first", b"honest\n".to_vec(), 0o644)
        .build_gzip(Flavor::Oci);
    let image = ImageBuilder::new(Flavor::Oci)
        .raw_layer(first, first_diff)
        .raw_layer(blob.clone(), lie.clone())
        .cmd(&["/bin/true"])
        .build();
    registry.push_image("liar", "v1", &image);
    let reference = registry.reference("liar", "v1");
    let work = Work::new();
    std::fs::create_dir_all(work.out()).unwrap();

    let want = format!(
        "layer {}: its uncompressed content hashes to {real_diff_id}, but the image config's diff_id is {lie}; nothing was written",
        blob.digest
    );
    // Into a named archive, where an older archive is left alone.
    let target = work.out().join("liar.tar");
    std::fs::write(&target, b"an older archive").unwrap();
    let run = work.pull_to(&["-f", "legacy", "-o", target.to_str().unwrap(), &reference]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&want),
        "stderr lacks {want:?}:\n{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"an older archive");
    assert_eq!(files_in(&work.out()), vec!["liar.tar".to_string()]);

    // Into a directory (default name): nothing at all.
    std::fs::remove_file(&target).unwrap();
    let run = work.pull(&["-f", "synology", &reference]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&want),
        "stderr lacks {want:?}:\n{}",
        run.stderr
    );
    work.assert_no_output();
    let stray: Vec<String> = files_in(work.dir.path())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

/// A genuine layer that inflates more than 100 times (72 MiB of zeros): refused by default
/// like a decompression bomb, written with `--max-layer-size none`. (A SIZE and the messages of
/// each bound are checked by the unit tests of the legacy writer.)
#[test]
fn legacy_layer_past_the_default_ratio_needs_max_layer_size() {
    let registry = FakeRegistry::anonymous();
    let image = ImageBuilder::new(Flavor::Oci)
        .zstd_layer(LayerBuilder::new().file("zeros", vec![0u8; 72 << 20], 0o644))
        .build();
    registry.push_image("sparse", "v1", &image);
    let reference = registry.reference("sparse", "v1");
    let work = Work::new();

    let (run, path) = pull_as(&work, "legacy", "default.tar", &[&reference]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&format!(
            "layer {}: it decompresses to more than 64.0 MiB",
            image.layers[0].digest
        )) && run.stderr.contains("--max-layer-size"),
        "{}",
        run.stderr
    );
    assert!(!path.exists());

    let path = pull_ok(
        &work,
        "legacy",
        "none.tar",
        &["--max-layer-size", "none", &reference],
    );
    assert_legacy_archive(&Archive::open(&path), &[Legacy::tagged(&image, &reference)]);

    for bad in ["0", "lots", "-1G"] {
        let (run, _) = pull_as(
            &work,
            "legacy",
            "bad.tar",
            &["--max-layer-size", bad, &reference],
        );
        run.expect_code(2);
    }
}

// ---------------------------------------------------------------------------------------------
// oci

#[test]
fn oci_archive_is_a_plain_layout_named_by_full_reference() {
    let registry = FakeRegistry::anonymous();
    let image = odd_image(Flavor::Oci);
    registry.push_image("team/odd", "v2", &image);
    let reference = registry.reference("team/odd", "v2");
    let work = Work::new();
    let path = pull_ok(&work, "oci", "odd.tar", &[&reference]);
    assert_oci_archive(
        &Archive::open(&path),
        &[Oci::named(&image.manifest, &reference)],
        &image_blobs(&image),
    );
}

// ---------------------------------------------------------------------------------------------
// oci-dir

#[test]
fn oci_dir_hard_links_blobs_from_the_cache() {
    let registry = FakeRegistry::anonymous();
    let image = odd_image(Flavor::Docker);
    registry.push_image("odd", "v1", &image);
    let reference = registry.reference("odd", "v1");
    let work = Work::new();
    let dir = work.path("layout");
    let run = work
        .pull_to(&[
            "--json",
            "-f",
            "oci-dir",
            "-o",
            dir.to_str().unwrap(),
            &reference,
        ])
        .success()
        .json();
    assert_eq!(run["format"], "oci-dir", "{run}");
    assert_eq!(run["output"], dir.to_str().unwrap(), "{run}");
    assert_oci_dir(
        &dir,
        &[Oci::named(&image.manifest, &reference)],
        &image_blobs(&image),
    );
    for blob in image.blobs() {
        let in_layout = std::fs::metadata(dir.join("blobs/sha256").join(blob.hex())).unwrap();
        let in_cache =
            std::fs::metadata(work.cache().join("blobs/sha256").join(blob.hex())).unwrap();
        assert!(
            in_layout.nlink() >= 2,
            "{} is not a hard link (link count {})",
            blob.digest,
            in_layout.nlink()
        );
        assert_eq!(
            (in_layout.dev(), in_layout.ino()),
            (in_cache.dev(), in_cache.ino()),
            "{} is not the cache's file",
            blob.digest
        );
    }
}

#[test]
fn oci_dir_copies_blobs_across_file_systems() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 2, 20_000, 41);
    registry.push_image("copied", "v1", &image);
    let reference = registry.reference("copied", "v1");
    // The cache on the memory file system, the layout on the temp dir's.
    let shm = tempfile::Builder::new()
        .prefix("docker-pull-it-")
        .tempdir_in("/dev/shm")
        .expect("a temp dir in /dev/shm");
    let work = Work::new();
    let dir = work.path("layout");
    std::fs::create_dir_all(&dir).unwrap();
    assert_ne!(
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(&dir).unwrap().dev(),
        "this test needs /dev/shm on another file system than {}",
        dir.display()
    );
    let cache = shm.path().join("cache");
    work.run(&[
        "-q",
        "--cache-dir",
        cache.to_str().unwrap(),
        "-f",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        &reference,
    ])
    .success();
    assert_oci_dir(
        &dir,
        &[Oci::named(&image.manifest, &reference)],
        &image_blobs(&image),
    );
    for blob in image.blobs() {
        let meta = std::fs::metadata(dir.join("blobs/sha256").join(blob.hex())).unwrap();
        assert_eq!(meta.nlink(), 1, "{} should be a copy", blob.digest);
    }
}

#[test]
fn oci_dir_adds_images_and_replaces_a_name() {
    let registry = FakeRegistry::anonymous();
    let a1 = random_image(Flavor::Oci, 1, 5_000, 51);
    let b = random_image(Flavor::Docker, 1, 5_000, 52);
    let a2 = random_image(Flavor::Oci, 1, 5_000, 53);
    registry.push_image("a", "v1", &a1);
    registry.push_image("b", "v2", &b);
    let (ref_a, ref_b) = (registry.reference("a", "v1"), registry.reference("b", "v2"));
    let work = Work::new();
    let dir = work.path("layout");
    let into = |reference: &str| {
        work.pull_to(&[
            "-q",
            "-f",
            "oci-dir",
            "-o",
            dir.to_str().unwrap(),
            reference,
        ])
        .success();
    };

    into(&ref_a);
    assert_oci_dir(&dir, &[Oci::named(&a1.manifest, &ref_a)], &image_blobs(&a1));
    into(&ref_b);
    let mut blobs = image_blobs(&a1);
    blobs.extend(image_blobs(&b));
    assert_oci_dir(
        &dir,
        &[
            Oci::named(&a1.manifest, &ref_a),
            Oci::named(&b.manifest, &ref_b),
        ],
        &blobs,
    );
    let entry_of = |name: &str| {
        index_entries(&dir)
            .into_iter()
            .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == name)
            .unwrap_or_else(|| panic!("no index.json entry named {name}"))
    };
    let b_entry = entry_of(&ref_b);

    // a:v1 now names another image: its entry is replaced, b's kept as it was.
    registry.push_image("a", "v1", &a2);
    into(&ref_a);
    blobs.extend(image_blobs(&a2));
    assert_oci_dir(
        &dir,
        &[
            Oci::named(&b.manifest, &ref_b),
            Oci::named(&a2.manifest, &ref_a),
        ],
        &blobs,
    );
    assert_eq!(entry_of(&ref_b), b_entry, "b's entry is kept unchanged");

    // Two images in one run go into the same layout as well.
    let c = random_image(Flavor::Oci, 1, 5_000, 54);
    registry.push_image("c", "v3", &c);
    let ref_c = registry.reference("c", "v3");
    work.pull_to(&[
        "-q",
        "-f",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        &ref_c,
        &ref_b,
    ])
    .success();
    blobs.extend(image_blobs(&c));
    assert_oci_dir(
        &dir,
        &[
            Oci::named(&a2.manifest, &ref_a),
            Oci::named(&c.manifest, &ref_c),
            Oci::named(&b.manifest, &ref_b),
        ],
        &blobs,
    );
}

// ---------------------------------------------------------------------------------------------
// --platform all

/// An OCI index (or Docker manifest list) of linux/amd64 and linux/arm64/v8 images, with an
/// attestation for the first.
fn two_platforms(flavor: Flavor, with_attestation: bool) -> crate::support::image::Index {
    let amd64 = random_image(flavor, 2, 3_000, 61);
    let arm64 = ImageBuilder::new(flavor)
        .platform("linux", "arm64", Some("v8"))
        .layer(LayerBuilder::new().file("arm64", b"arm64 layer\n".to_vec(), 0o644))
        .zstd_layer(LayerBuilder::new().file("arm64-zstd", b"zstd\n".to_vec(), 0o644))
        .build();
    index(flavor, vec![amd64, arm64], with_attestation)
}

fn all_blobs(index: &crate::support::image::Index) -> Vec<&Blob> {
    let mut blobs = vec![&index.index];
    for image in index.images.iter().chain(&index.extra_manifests) {
        blobs.extend(image_blobs(image));
    }
    blobs
}

#[test]
fn platform_all_keeps_the_whole_index() {
    let registry = FakeRegistry::anonymous();
    let oci = two_platforms(Flavor::Oci, true);
    let docker = two_platforms(Flavor::Docker, false);
    registry.push_index("multi", "v1", &oci);
    registry.push_index("multi-docker", "v1", &docker);
    let work = Work::new();

    for (repo, index, media_type) in [
        ("multi", &oci, OCI_INDEX),
        ("multi-docker", &docker, DOCKER_MANIFEST_LIST),
    ] {
        assert_eq!(index.index.media_type, media_type);
        let reference = registry.reference(repo, "v1");
        let dir = work.path(&format!("{repo}-layout"));
        let report = work
            .pull_to(&[
                "--json",
                "--platform",
                "all",
                "-f",
                "oci-dir",
                "-o",
                dir.to_str().unwrap(),
                &reference,
            ])
            .success()
            .json();
        assert_eq!(report["platform"], "all", "{report}");
        assert_eq!(report["digest"], index.index.digest, "{report}");
        assert_oci_dir(
            &dir,
            &[Oci::named(&index.index, &reference)],
            &all_blobs(index),
        );

        let path = work.path(&format!("{repo}.tar"));
        let report = work
            .pull_to(&[
                "--json",
                "--platform",
                "all",
                "-f",
                "oci",
                "-o",
                path.to_str().unwrap(),
                &reference,
            ])
            .success()
            .json();
        assert_eq!(report["platform"], "all", "{report}");
        assert_oci_archive(
            &Archive::open(&path),
            &[Oci::named(&index.index, &reference)],
            &all_blobs(index),
        );
    }
    assert_eq!(
        oci.extra_manifests.len(),
        1,
        "the attestation is part of the test"
    );
}

// ---------------------------------------------------------------------------------------------
// Usage errors

#[test]
fn format_usage_errors_exit_2_before_any_request() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 1_000, 71);
    registry.push_image("app", "v1", &image);
    let reference = registry.reference("app", "v1");
    let work = Work::new();
    let tar = work.path("x.tar");
    let tar = tar.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["-f", "oci-dir", &reference],
        vec!["-f", "oci-dir", "-o", tar, &reference],
        vec!["--platform", "all", "-o", tar, &reference],
        vec!["-f", "docker", "--platform", "all", "-o", tar, &reference],
        vec!["-f", "legacy", "--platform", "all", "-o", tar, &reference],
        vec!["-f", "synology", "--platform", "all", "-o", tar, &reference],
        vec!["-f", "tarball", "-o", tar, &reference],
    ];
    for args in cases {
        let run = work.pull_to(&args);
        run.expect_code(2);
        assert!(
            !run.stderr.trim().is_empty(),
            "`{}` says nothing about why",
            run.command
        );
        let left: Vec<String> = files_in(work.dir.path())
            .into_iter()
            .filter(|n| !["cache", "home"].contains(&n.as_str()))
            .collect();
        assert!(left.is_empty(), "`{}` wrote {left:?}", run.command);
    }
    assert!(
        registry.requests().is_empty(),
        "usage errors must not reach the registry: {:?}",
        registry.requests()
    );
}

// ---------------------------------------------------------------------------------------------
// Bundles

/// Three images sharing a base layer; the third consists of the base layer alone.
fn three_sharing() -> (Image, Image, Image) {
    let base = LayerBuilder::new()
        .dir("base", 0o755)
        .file("base/os", b"shared base\n".repeat(500), 0o644)
        .build_gzip(Flavor::Oci);
    let a = ImageBuilder::new(Flavor::Oci)
        .raw_layer(base.0.clone(), base.1.clone())
        .layer(LayerBuilder::new().file("a", b"a\n".to_vec(), 0o644))
        .label("image", "a")
        .build();
    let b = ImageBuilder::new(Flavor::Oci)
        .raw_layer(base.0.clone(), base.1.clone())
        .zstd_layer(LayerBuilder::new().file("b", b"b\n".to_vec(), 0o644))
        .label("image", "b")
        .build();
    let c = ImageBuilder::new(Flavor::Docker)
        .raw_layer(base.0.clone(), base.1.clone())
        .label("image", "c")
        .build();
    (a, b, c)
}

#[test]
fn bundles_store_shared_blobs_once_and_name_every_image() {
    let registry = FakeRegistry::anonymous();
    let (a, b, c) = three_sharing();
    registry.push_image("a", "v1", &a);
    registry.push_image("team/b", "v2", &b);
    registry.push_image("c", "v3", &c);
    let refs = [
        registry.reference("a", "v1"),
        registry.reference("team/b", "v2"),
        registry.reference("c", "v3"),
    ];
    let args: Vec<&str> = refs.iter().map(String::as_str).collect();
    let work = Work::new();

    let docker = pull_ok(&work, "docker", "bundle-docker.tar", &args);
    let archive = Archive::open(&docker);
    assert_tar_hygiene(&archive);
    assert_docker_archive(
        &archive,
        &[
            Expected::tagged(&a, &registry.addr(), "a", "v1"),
            Expected::tagged(&b, &registry.addr(), "team/b", "v2"),
            Expected::tagged(&c, &registry.addr(), "c", "v3"),
        ],
    );

    let legacy = pull_ok(&work, "legacy", "bundle-legacy.tar", &args);
    let archive = Archive::open(&legacy);
    let ids = assert_legacy_archive(
        &archive,
        &[
            Legacy::tagged(&a, &refs[0]),
            Legacy::tagged(&b, &refs[1]),
            Legacy::tagged(&c, &refs[2]),
        ],
    );
    assert_eq!(ids[0][0], ids[1][0], "the shared base layer has one v1 id");
    assert_ne!(ids[2][0], ids[0][0], "c's top layer carries c's config");
    let base = uncompressed(&a.layers[0]);
    let copies = archive
        .entries
        .iter()
        .filter(|e| e.kind.is_file() && e.data == base)
        .count();
    assert_eq!(copies, 1, "the shared layer is stored {copies} times");

    let oci = pull_ok(&work, "oci", "bundle-oci.tar", &args);
    let mut blobs = image_blobs(&a);
    blobs.extend(image_blobs(&b));
    blobs.extend(image_blobs(&c));
    assert_oci_archive(
        &Archive::open(&oci),
        &[
            Oci::named(&a.manifest, &refs[0]),
            Oci::named(&b.manifest, &refs[1]),
            Oci::named(&c.manifest, &refs[2]),
        ],
        &blobs,
    );
    assert_eq!(
        registry.blob_gets(&a.layers[0].digest),
        1,
        "the shared layer was downloaded more than once"
    );
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn names_digest_only_tag_at_digest_and_rename_in_every_format() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 2, 2_000, 81);
    registry.push_image("named", "v1", &image);
    let by_digest = registry.digest_reference("named", &image.manifest.digest);
    let tag_at_digest = format!(
        "{}@{}",
        registry.reference("named", "v1"),
        image.manifest.digest
    );
    let tagged = registry.reference("named", "v1");
    let work = Work::new();

    // Digest only: untagged everywhere.
    let docker = pull_ok(&work, "docker", "digest-docker.tar", &[&by_digest]);
    let archive = Archive::open(&docker);
    assert_docker_archive(&archive, &[Expected::digest_only(&image)]);
    assert_eq!(archive.json("repositories"), json!({}));
    let legacy = pull_ok(&work, "legacy", "digest-legacy.tar", &[&by_digest]);
    assert_legacy_archive(
        &Archive::open(&legacy),
        &[Legacy {
            image: &image,
            repo_tags: vec![],
        }],
    );
    let oci = pull_ok(&work, "oci", "digest-oci.tar", &[&by_digest]);
    assert_oci_archive(
        &Archive::open(&oci),
        &[Oci {
            top: &image.manifest,
            name: None,
        }],
        &image_blobs(&image),
    );

    // name:tag@digest keeps the tag.
    let docker = pull_ok(&work, "docker", "pinned-docker.tar", &[&tag_at_digest]);
    assert_docker_archive(
        &Archive::open(&docker),
        &[Expected::tagged(&image, &registry.addr(), "named", "v1")],
    );
    let legacy = pull_ok(&work, "legacy", "pinned-legacy.tar", &[&tag_at_digest]);
    assert_legacy_archive(&Archive::open(&legacy), &[Legacy::tagged(&image, &tagged)]);
    let oci = pull_ok(&work, "oci", "pinned-oci.tar", &[&tag_at_digest]);
    assert_oci_archive(
        &Archive::open(&oci),
        &[Oci::named(&image.manifest, &tagged)],
        &image_blobs(&image),
    );

    // --tag renames.
    let docker = pull_ok(
        &work,
        "docker",
        "renamed-docker.tar",
        &["--tag", "mine/app:v9", &tagged],
    );
    assert_docker_archive(
        &Archive::open(&docker),
        &[Expected {
            image: &image,
            full_name: Ann::Is("docker.io/mine/app:v9".into()),
            ref_name: Ann::Is("v9".into()),
            repo_tags: vec!["mine/app:v9".into()],
            optional_blobs: vec![],
        }],
    );
    let legacy = pull_ok(
        &work,
        "legacy",
        "renamed-legacy.tar",
        &["--tag", "mine/app:v9", &tagged],
    );
    assert_legacy_archive(
        &Archive::open(&legacy),
        &[Legacy::tagged(&image, "mine/app:v9")],
    );
    let oci = pull_ok(
        &work,
        "oci",
        "renamed-oci.tar",
        &["--tag", "mine/app:v9", &tagged],
    );
    assert_oci_archive(
        &Archive::open(&oci),
        &[Oci::named(&image.manifest, "docker.io/mine/app:v9")],
        &image_blobs(&image),
    );
}

// ---------------------------------------------------------------------------------------------
// Determinism

#[test]
fn every_tar_format_is_byte_identical_across_caches() {
    let registry = FakeRegistry::anonymous();
    let image = odd_image(Flavor::Oci);
    let other = random_image(Flavor::Docker, 2, 30_000, 91);
    registry.push_image("odd", "v1", &image);
    registry.push_image("other", "v1", &other);
    let refs = [
        registry.reference("odd", "v1"),
        registry.reference("other", "v1"),
    ];
    let (first, second) = (Work::new(), Work::new());
    for format in ["docker", "legacy", "oci"] {
        for args in [
            vec![refs[0].as_str()],
            vec![refs[0].as_str(), refs[1].as_str()],
        ] {
            let name = format!("{format}-{}.tar", args.len());
            let a = pull_ok(&first, format, &name, &args);
            let b = pull_ok(&second, format, &name, &args);
            // Again with the first cache warm.
            let again = pull_ok(&first, format, &format!("again-{name}"), &args);
            let bytes = std::fs::read(&a).unwrap();
            assert!(
                bytes == std::fs::read(&b).unwrap(),
                "-f {format} {args:?}: two caches give different archives"
            );
            assert!(
                bytes == std::fs::read(&again).unwrap(),
                "-f {format} {args:?}: a warm cache gives another archive"
            );
            assert_tar_hygiene(&Archive::open(&a));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Foreign layers

/// A foreign layer the registry lacks comes from its URLs: the first that works, without the
/// registry's credentials.
#[test]
fn foreign_layer_comes_from_its_urls_without_credentials() {
    let registry = FakeRegistry::start(Config::with_auth(Auth::basic("puller", "s3cret-pw")));
    let cdn = FakeRegistry::anonymous();
    let foreign = LayerBuilder::new().dir("Windows", 0o755).file(
        "Windows/foreign",
        b"served from elsewhere\n".to_vec(),
        0o644,
    );
    let (blob, _) = foreign.build_gzip(Flavor::Docker);
    let missing = sha256_digest(b"not there");
    let urls = [
        format!("http://127.0.0.1:{}/refused/{}", closed_port(), blob.digest),
        format!("http://{}/v2/cdn/blobs/{missing}", cdn.addr()),
        format!("http://{}/v2/cdn/blobs/{}", cdn.addr(), blob.digest),
        format!("http://{}/v2/never/blobs/{}", cdn.addr(), blob.digest),
    ];
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    for flavor in [Flavor::Docker, Flavor::Oci] {
        let image = ImageBuilder::new(flavor)
            .layer(LayerBuilder::new().file("base", b"base\n".to_vec(), 0o644))
            .foreign_layer(foreign.clone(), &url_refs)
            .build();
        let manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
        assert_eq!(manifest["layers"][1]["urls"], json!(urls));
        let repo = format!("foreign-{flavor:?}").to_lowercase();
        registry.push_image(&repo, "v1", &image);
        registry.delete_blob(&repo, &image.layers[1].digest);
        cdn.put_blob("cdn", &image.layers[1]);
        cdn.put_blob("never", &image.layers[1]);
        cdn.reset_log();
        registry.reset_log();
        let reference = registry.reference(&repo, "v1");
        let work = Work::new();
        let docker = work.path("foreign.tar");
        let run = work.run_with(
            &[
                "-q",
                "--cache-dir",
                work.cache().to_str().unwrap(),
                "-u",
                "puller",
                "--password-stdin",
                "-o",
                docker.to_str().unwrap(),
                &reference,
            ],
            &[],
            Some("s3cret-pw\n"),
        );
        run.success();
        run.assert_not_leaked("s3cret-pw");
        assert_docker_archive(
            &Archive::open(&docker),
            &[Expected::tagged(&image, &registry.addr(), &repo, "v1")],
        );

        // The registry was asked first, with credentials, and said 404.
        let asked: Vec<_> = registry.blob_requests(&image.layers[1].digest);
        assert!(
            asked
                .iter()
                .any(|r| r.status == 404 && r.auth_scheme.as_deref() == Some("Basic")),
            "the registry was not asked for the foreign layer with credentials: {asked:?}"
        );
        // The CDN: the 404 URL, then the good one; never the fourth; never credentials.
        let cdn_log = cdn.requests();
        let paths: Vec<&str> = cdn_log.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                format!("/v2/cdn/blobs/{missing}"),
                format!("/v2/cdn/blobs/{}", blob.digest)
            ],
            "URLs tried in order, stopping at the first that works: {cdn_log:?}"
        );
        assert!(
            cdn_log.iter().all(|r| r.auth_scheme.is_none()),
            "credentials were sent to a layer URL: {cdn_log:?}"
        );

        // From the cache now, into the legacy format.
        let legacy = work.path("foreign-legacy.tar");
        work.run_with(
            &[
                "-q",
                "--cache-dir",
                work.cache().to_str().unwrap(),
                "-u",
                "puller",
                "--password-stdin",
                "-f",
                "legacy",
                "-o",
                legacy.to_str().unwrap(),
                &reference,
            ],
            &[],
            Some("s3cret-pw\n"),
        )
        .success();
        assert_legacy_archive(
            &Archive::open(&legacy),
            &[Legacy::tagged(&image, &reference)],
        );
    }
}

/// A foreign layer the registry does have comes from the registry: its URLs are not used.
#[test]
fn foreign_layer_the_registry_has_ignores_its_urls() {
    let registry = FakeRegistry::anonymous();
    let cdn = FakeRegistry::anonymous();
    let foreign = LayerBuilder::new().file("foreign", b"mirrored\n".to_vec(), 0o644);
    let (blob, _) = foreign.build_gzip(Flavor::Oci);
    let url = format!("http://{}/v2/cdn/blobs/{}", cdn.addr(), blob.digest);
    let image = ImageBuilder::new(Flavor::Oci)
        .foreign_layer(foreign, &[&url])
        .build();
    registry.push_image("has-foreign", "v1", &image);
    cdn.put_blob("cdn", &image.layers[0]);
    let work = Work::new();
    let reference = registry.reference("has-foreign", "v1");
    let path = pull_ok(&work, "oci", "x.tar", &[&reference]);
    assert_oci_archive(
        &Archive::open(&path),
        &[Oci::named(&image.manifest, &reference)],
        &image_blobs(&image),
    );
    assert!(cdn.requests().is_empty(), "{:?}", cdn.requests());
    assert_eq!(registry.blob_gets(&image.layers[0].digest), 1);
}

#[test]
fn legacy_bundle_of_one_image_under_two_tags() {
    let registry = FakeRegistry::anonymous();
    let image = odd_image(Flavor::Docker);
    registry.push_image("app", "v1", &image);
    registry.push_image("app", "stable", &image);
    let refs = [
        registry.reference("app", "v1"),
        registry.reference("app", "stable"),
    ];
    let work = Work::new();
    let path = pull_ok(&work, "legacy", "two-tags.tar", &[&refs[0], &refs[1]]);
    let ids = assert_legacy_archive(
        &Archive::open(&path),
        &[
            Legacy::tagged(&image, &refs[0]),
            Legacy::tagged(&image, &refs[1]),
        ],
    );
    assert_eq!(ids[0], ids[1], "one image, one chain of v1 ids");
}

/// Ctrl-C while the legacy writer decompresses a layer: exit 130, and neither the archive nor
/// the scratch file of the decompressed layer is left.
#[test]
fn ctrl_c_while_writing_a_legacy_archive_leaves_nothing() {
    let registry = FakeRegistry::anonymous();
    let image = ImageBuilder::new(Flavor::Oci)
        .layer(LayerBuilder::new().file("zeros", vec![0u8; 24 << 20], 0o644))
        .build();
    registry.push_image("zeros", "v1", &image);
    let work = Work::new().with_timeout(std::time::Duration::from_secs(120));
    let out = work.out();
    std::fs::create_dir_all(&out).unwrap();
    let target = out.join("zeros.tar");
    let cache = work.cache();
    let reference = registry.reference("zeros", "v1");
    let mut running = work.spawn_with(
        &[
            "-q",
            "--cache-dir",
            cache.to_str().unwrap(),
            "-f",
            "legacy",
            "-o",
            target.to_str().unwrap(),
            &reference,
        ],
        &[],
        None,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !files_in(&out)
        .iter()
        .any(|n| n.starts_with(".docker-pull-layer."))
    {
        assert!(
            !running.finished(),
            "the pull ended before it could be interrupted"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the legacy writer never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    running.interrupt();
    let run = running.wait();
    run.expect_code(130);
    assert_eq!(
        files_in(&out),
        Vec::<String>::new(),
        "left in the output directory"
    );
}

/// An existing layout written by another tool: its entries (with fields docker-pull does not
/// write) and the index's own annotations stay as they were.
#[test]
fn oci_dir_keeps_entries_written_by_other_tools() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Oci, 1, 1_000, 3);
    registry.push_image("single", "v1", &image);
    let reference = registry.reference("single", "v1");
    let work = Work::new();
    let dir = work.path("layout");
    std::fs::create_dir_all(&dir).unwrap();
    let other = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", "0".repeat(64)),
        "size": 1,
        "platform": {"os": "linux", "architecture": "s390x"},
        "annotations": {"org.opencontainers.image.ref.name": "other:v1", "x": "y"},
    });
    let before = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [other],
        "annotations": {"keep": "me"},
    });
    std::fs::write(dir.join("index.json"), before.to_string()).unwrap();
    work.pull_to(&[
        "-q",
        "-f",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        &reference,
    ])
    .success();
    let after: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(after["annotations"], json!({"keep": "me"}), "{after}");
    let entries = after["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 2, "{after}");
    assert!(
        entries.contains(&other),
        "the other tool's entry changed: {after}"
    );
    assert!(
        entries.iter().any(|e| e["digest"] == image.manifest.digest
            && e["annotations"]["org.opencontainers.image.ref.name"] == reference),
        "{after}"
    );
}
