//! The reader and `verify` on archives built here: docker-pull's own
//! formats (written by the real writers), synthetic `docker save` (Docker
//! 20.10 and 25) and skopeo archives, whole-archive compression, an index
//! with children, and hostile inputs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;
use crate::archive::{self, AllPlatforms, ArchiveImage, Format, LayerLimit};
use crate::cache::Cache;
use crate::events::Silent;
use crate::media_type;
use crate::reference::{DOCKER_HUB, Reference};
use crate::registry::Manifest;
use crate::resolve::{Descriptor, Member};
use crate::verify::{Checked, verify};

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A layer: its tar, and its blob (gzip-compressed unless `plain`).
struct TestLayer {
    tar: Vec<u8>,
    blob: Vec<u8>,
    media_type: &'static str,
}

fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(file).unwrap();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, content).unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn layer(n: u8, plain: bool) -> TestLayer {
    let tar = layer_tar(&format!("file{n}"), &vec![n; 3000 + n as usize]);
    let (blob, media_type) = if plain {
        (tar.clone(), TAR_LAYER)
    } else {
        (gzip(&tar), GZIP_LAYER)
    };
    TestLayer {
        tar,
        blob,
        media_type,
    }
}

/// An image: config, layers and its OCI manifest.
struct TestImage {
    config: Vec<u8>,
    layers: Vec<TestLayer>,
    manifest: Vec<u8>,
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": Digest::of(data).to_string(), "size": data.len()})
}

fn test_image(arch: &str, layers: Vec<TestLayer>) -> TestImage {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| Digest::of(&l.tar).to_string())
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": descriptor(media_type::OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(l.media_type, &l.blob)).collect::<Vec<_>>(),
    }))
    .unwrap();
    TestImage {
        config,
        layers,
        manifest,
    }
}

fn simple_image() -> TestImage {
    test_image("amd64", vec![layer(1, false), layer(2, false)])
}

/// One tar entry to write.
enum E {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

/// A tar of `entries`, names written as given (`..` and all).
fn tar_of(entries: &[(String, E)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, e) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        match e {
            E::File(data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.append(&h, data.as_slice()).unwrap();
            }
            E::Dir => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Directory);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            E::Symlink(target) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(target).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn blob_entry(data: &[u8]) -> (String, E) {
    (
        format!("blobs/sha256/{}", Digest::of(data).hex()),
        E::File(data.to_vec()),
    )
}

/// The entries of an OCI layout holding `images` (one index.json entry
/// each, named `names[i]` in both annotations).
fn oci_entries(images: &[&TestImage], names: &[&str]) -> Vec<(String, E)> {
    let mut out = vec![
        (
            "oci-layout".to_string(),
            E::File(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ),
        ("blobs/".to_string(), E::Dir),
        ("blobs/sha256/".to_string(), E::Dir),
    ];
    let mut seen = std::collections::HashSet::new();
    let mut manifests = Vec::new();
    for (image, name) in images.iter().zip(names) {
        for data in image
            .layers
            .iter()
            .map(|l| &l.blob)
            .chain([&image.config, &image.manifest])
        {
            if seen.insert(Digest::of(data)) {
                out.push(blob_entry(data));
            }
        }
        let mut d = descriptor(media_type::OCI_MANIFEST, &image.manifest);
        d["annotations"] = json!({
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name,
        });
        manifests.push(d);
    }
    let index =
        json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": manifests});
    out.push((
        "index.json".into(),
        E::File(serde_json::to_vec(&index).unwrap()),
    ));
    out
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        path
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn checks(path: &Path) -> Vec<Checked> {
    verify(path, &Silent).unwrap()
}

#[track_caller]
fn assert_sound(path: &Path) -> Vec<Checked> {
    let c = checks(path);
    for image in &c {
        assert!(image.ok(), "{}: {:?}", path.display(), image.problems);
    }
    c
}

#[track_caller]
fn problems(path: &Path) -> String {
    let all: Vec<String> = checks(path).into_iter().flat_map(|c| c.problems).collect();
    assert!(!all.is_empty(), "{} verified", path.display());
    all.join("\n")
}

// ------------------------------------------------------------------------------------------
// docker-pull's own formats, from the real writers

fn put(cache: &Cache, media_type: &str, data: &[u8]) -> Descriptor {
    let digest = Digest::of(data);
    std::fs::write(cache.blob_path(&digest), data).unwrap();
    Descriptor {
        media_type: media_type.into(),
        digest,
        size: data.len() as u64,
        urls: vec![],
    }
}

fn manifest(bytes: &[u8]) -> Manifest {
    Manifest {
        bytes: bytes.to_vec(),
        content_type: None,
        digest: Digest::of(bytes),
    }
}

fn archive_image(cache: &Cache, image: &TestImage, reference: &str) -> ArchiveImage {
    ArchiveImage {
        reference: Reference::parse(reference, DOCKER_HUB).unwrap(),
        rename: None,
        manifest: manifest(&image.manifest),
        manifest_media_type: media_type::OCI_MANIFEST.into(),
        config: put(cache, media_type::OCI_CONFIG, &image.config),
        layers: image
            .layers
            .iter()
            .map(|l| put(cache, l.media_type, &l.blob))
            .collect(),
        all: None,
        left_out: 0,
    }
}

#[test]
fn every_format_docker_pull_writes_verifies() {
    let dir = Dir::new();
    let cache = Cache::open(&dir.path("cache")).unwrap();
    let a = archive_image(&cache, &simple_image(), "nginx:1.27");
    let zstd_layer = {
        let tar = layer_tar("z", b"zstd layer");
        TestLayer {
            blob: zstd::encode_all(&tar[..], 3).unwrap(),
            tar,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    };
    let b = archive_image(
        &cache,
        &test_image("arm64", vec![layer(1, false), zstd_layer, layer(3, true)]),
        "127.0.0.1:5000/app:v2",
    );
    for format in [Format::Docker, Format::Oci, Format::Legacy, Format::OciDir] {
        let out = dir.path(&format!("{format}.tar"));
        let images = [a.clone(), b.clone()];
        archive::write(
            format,
            &archive::Delivery::file(&out, false),
            &images,
            &cache,
            LayerLimit::Default,
        )
        .unwrap();
        let source = Source::open(&out).unwrap();
        assert_eq!(source.images.len(), 2, "{format}");
        let expected_layout = match format {
            Format::Docker => Layout::OciDocker,
            Format::Oci | Format::OciDir => Layout::Oci,
            Format::Legacy => Layout::Docker,
        };
        assert_eq!(source.layout, expected_layout, "{format}");
        let c = assert_sound(&out);
        assert_eq!(
            c[0].name.as_deref(),
            Some("docker.io/library/nginx:1.27"),
            "{format}"
        );
        assert_eq!(c[1].name.as_deref(), Some("127.0.0.1:5000/app:v2"));
        assert_eq!(c[1].platform, "linux/arm64", "{format}");
        assert_eq!(c[1].layers, 3);
        let digest = match format {
            Format::Legacy => Digest::of(&simple_image().config),
            _ => Digest::of(&simple_image().manifest),
        };
        assert_eq!(c[0].digest, Some(digest.to_string()), "{format}");
    }
}

#[test]
fn a_platform_all_layout_verifies_with_its_children() {
    let dir = Dir::new();
    let cache = Cache::open(&dir.path("cache")).unwrap();
    let amd64 = simple_image();
    let arm64 = test_image("arm64", vec![layer(7, false)]);
    let member = |i: &TestImage, arch: &str| {
        let a = archive_image(&cache, i, "x");
        Member {
            manifest: a.manifest,
            media_type: media_type::OCI_MANIFEST.into(),
            config: a.config,
            layers: a.layers,
            platform: Some(crate::platform::Platform::new("linux", arch, None)),
        }
    };
    let members = vec![member(&amd64, "amd64"), member(&arm64, "arm64")];
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": media_type::OCI_INDEX,
        "manifests": [
            {"mediaType": media_type::OCI_MANIFEST, "digest": Digest::of(&amd64.manifest).to_string(),
             "size": amd64.manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media_type::OCI_MANIFEST, "digest": Digest::of(&arm64.manifest).to_string(),
             "size": arm64.manifest.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))
    .unwrap();
    let mut image = archive_image(&cache, &amd64, "multi:v1");
    image.all = Some(AllPlatforms {
        index: manifest(&index),
        index_media_type: media_type::OCI_INDEX.into(),
        members,
    });
    for format in [Format::OciDir, Format::Oci] {
        let out = dir.path(&format!("all-{format}"));
        archive::write(
            format,
            &archive::Delivery::file(&out, false),
            &[image.clone()],
            &cache,
            LayerLimit::Default,
        )
        .unwrap();
        let source = Source::open(&out).unwrap();
        let Content::Index { children, .. } = &source.images[0].content else {
            panic!("{format}: not an index: {:?}", source.images[0].content);
        };
        assert_eq!(children.len(), 2);
        assert!(children.iter().all(|c| c.image.is_some()));
        let c = assert_sound(&out);
        assert_eq!(c[0].platform, "linux/amd64,linux/arm64");
        assert_eq!(c[0].digest, Some(Digest::of(&index).to_string()));
        assert_eq!(c[0].layers, 3);
    }
    // A child missing from the layout: a partial index, as an engine with the containerd
    // image store saves one; the platforms there still verify.
    let out = dir.path("all-oci-dir");
    std::fs::remove_file(out.join(Blob::oci(&Digest::of(&arm64.manifest), 0).entry)).unwrap();
    let c = assert_sound(&out);
    assert_eq!(c[0].platform, "linux/amd64");
    let source = Source::open(&out).unwrap();
    let Content::Index { children, .. } = &source.images[0].content else {
        panic!("not an index");
    };
    assert_eq!(children.iter().filter(|c| c.image.is_some()).count(), 1);
    // None of them there: named.
    for child in children {
        let _ = std::fs::remove_file(out.join(&child.blob.entry));
    }
    let p = problems(&out);
    assert!(
        p.contains("none of the images it lists is in the source"),
        "{p}"
    );
}

// ------------------------------------------------------------------------------------------
// Other writers, synthetic

/// `docker save` of Docker 25: an OCI layout plus manifest.json whose
/// layers are uncompressed blobs under blobs/sha256/.
#[test]
fn docker_25_save_layout_verifies() {
    let dir = Dir::new();
    let image = test_image("amd64", vec![layer(1, true), layer(2, true)]);
    let mut entries = oci_entries(&[&image], &["docker.io/library/busybox:latest"]);
    if let Some((_, E::File(index))) = entries.iter_mut().find(|(n, _)| n == "index.json") {
        // Docker 25 writes the tag alone in ref.name.
        *index = String::from_utf8(index.clone())
            .unwrap()
            .replace(
                r#""org.opencontainers.image.ref.name":"docker.io/library/busybox:latest""#,
                r#""org.opencontainers.image.ref.name":"latest""#,
            )
            .into_bytes();
    }
    let manifest_json = json!([{
        "Config": format!("blobs/sha256/{}", Digest::of(&image.config).hex()),
        "RepoTags": ["busybox:latest"],
        "Layers": image.layers.iter().map(|l| format!("blobs/sha256/{}", Digest::of(&l.blob).hex())).collect::<Vec<_>>(),
    }]);
    entries.push((
        "manifest.json".into(),
        E::File(serde_json::to_vec(&manifest_json).unwrap()),
    ));
    let path = dir.write("docker25.tar", &tar_of(&entries));
    let source = Source::open(&path).unwrap();
    assert_eq!(source.layout, Layout::OciDocker);
    assert_eq!(
        source.images.len(),
        1,
        "manifest.json's entry is the same image"
    );
    let given: Vec<&str> = source.images[0]
        .names
        .iter()
        .map(|n| n.given.as_str())
        .collect();
    // RepoTags' busybox:latest is the same name: not listed twice.
    assert_eq!(given, ["docker.io/library/busybox:latest"]);
    let c = assert_sound(&path);
    assert_eq!(
        c[0].name.as_deref(),
        Some("docker.io/library/busybox:latest")
    );

    // manifest.json naming other layers than the manifest is a problem.
    let other = json!([{
        "Config": format!("blobs/sha256/{}", Digest::of(&image.config).hex()),
        "RepoTags": ["busybox:latest"],
        "Layers": [format!("blobs/sha256/{}", Digest::of(&image.layers[0].blob).hex())],
    }]);
    let last = entries.len() - 1;
    entries[last].1 = E::File(serde_json::to_vec(&other).unwrap());
    let path = dir.write("docker25-other.tar", &tar_of(&entries));
    assert!(problems(&path).contains("manifest.json lists other layers"));
}

/// `docker save` up to Docker 24: `<v1id>/layer.tar` (a repeated layer as
/// a link to the first), `<config-hex>.json`, manifest.json, repositories.
fn docker_save_20_entries(image: &TestImage, tags: Value) -> Vec<(String, E)> {
    let config_name = format!("{}.json", Digest::of(&image.config).hex());
    let mut entries = vec![(config_name.clone(), E::File(image.config.clone()))];
    let mut layers = Vec::new();
    for (i, l) in image.layers.iter().enumerate() {
        let id = Digest::of(format!("v1 {i}").as_bytes()).hex().to_string();
        entries.push((format!("{id}/"), E::Dir));
        entries.push((format!("{id}/VERSION"), E::File(b"1.0".to_vec())));
        entries.push((format!("{id}/json"), E::File(b"{}".to_vec())));
        entries.push((format!("{id}/layer.tar"), E::File(l.tar.clone())));
        layers.push(format!("{id}/layer.tar"));
    }
    // The first layer again, higher in the chain: a link, as docker save writes it.
    let id = Digest::of(b"v1 again").hex().to_string();
    entries.push((format!("{id}/"), E::Dir));
    entries.push((
        format!("{id}/layer.tar"),
        E::Symlink(format!("../{}", layers[0])),
    ));
    layers.push(format!("{id}/layer.tar"));
    let manifest = json!([{"Config": config_name, "RepoTags": tags, "Layers": layers}]);
    entries.push((
        "manifest.json".into(),
        E::File(serde_json::to_vec(&manifest).unwrap()),
    ));
    entries.push(("repositories".into(), E::File(b"{}".to_vec())));
    entries
}

fn three_layers_with_a_repeat() -> TestImage {
    let mut image = test_image(
        "amd64",
        vec![layer(1, true), layer(2, true), layer(1, true)],
    );
    image.layers.pop();
    image
}

#[test]
fn docker_save_20_10_archive_verifies() {
    let dir = Dir::new();
    let image = three_layers_with_a_repeat();
    let path = dir.write(
        "saved.tar",
        &tar_of(&docker_save_20_entries(&image, json!(["busybox:latest"]))),
    );
    let source = Source::open(&path).unwrap();
    assert_eq!(source.layout, Layout::Docker);
    let Content::Loose { config, layers } = &source.images[0].content else {
        panic!("not loose: {:?}", source.images[0].content);
    };
    assert_eq!(config.blob.digest, Some(Digest::of(&image.config)));
    assert_eq!(layers.len(), 3);
    let c = assert_sound(&path);
    assert_eq!(
        c[0].name.as_deref(),
        Some("docker.io/library/busybox:latest")
    );
    assert_eq!(c[0].digest, Some(Digest::of(&image.config).to_string()));

    // Untagged (RepoTags null), as docker save writes an image saved by ID.
    let path = dir.write(
        "untagged.tar",
        &tar_of(&docker_save_20_entries(&image, Value::Null)),
    );
    assert_eq!(assert_sound(&path)[0].name, None);
}

/// skopeo `docker-archive:`: `<diff-id-hex>.tar` layers, `<hex>.json`, and
/// `<v1id>/layer.tar` links to them.
#[test]
fn skopeo_docker_archive_verifies() {
    let dir = Dir::new();
    let image = test_image("amd64", vec![layer(1, true), layer(2, true)]);
    let config_name = format!("{}.json", Digest::of(&image.config).hex());
    let mut entries = vec![];
    let mut names = vec![];
    for l in &image.layers {
        let name = format!("{}.tar", Digest::of(&l.tar).hex());
        entries.push((name.clone(), E::File(l.tar.clone())));
        entries.push((
            format!("{}/layer.tar", Digest::of(name.as_bytes()).hex()),
            E::Symlink(format!("../{name}")),
        ));
        names.push(name);
    }
    entries.push((config_name.clone(), E::File(image.config.clone())));
    let manifest =
        json!([{"Config": config_name, "RepoTags": ["example.com/foo:bar"], "Layers": names}]);
    entries.push((
        "manifest.json".into(),
        E::File(serde_json::to_vec(&manifest).unwrap()),
    ));
    let path = dir.write("skopeo.tar", &tar_of(&entries));
    let c = assert_sound(&path);
    assert_eq!(c[0].name.as_deref(), Some("example.com/foo:bar"));
    // A layer whose bytes are not what its name says.
    let bad_name = format!("{}.tar", Digest::of(b"other").hex());
    let mut broken = entries;
    broken[0].0 = bad_name.clone();
    if let Some((_, E::File(m))) = broken.iter_mut().find(|(n, _)| n == "manifest.json") {
        *m = String::from_utf8(m.clone())
            .unwrap()
            .replace(&names[0], &bad_name)
            .into_bytes();
    }
    broken.retain(|(n, _)| !n.ends_with("/layer.tar"));
    let path = dir.write("skopeo-bad.tar", &tar_of(&broken));
    let p = problems(&path);
    assert!(
        p.contains(&format!(
            "layer {bad_name}: expected {}",
            Digest::of(b"other")
        )),
        "{p}"
    );
}

#[test]
fn whole_archive_compression_is_read_as_is() {
    let dir = Dir::new();
    let image = simple_image();
    let oci = tar_of(&oci_entries(&[&image], &["app:v1"]));
    let legacy = tar_of(&docker_save_20_entries(
        &three_layers_with_a_repeat(),
        json!(["app:v1"]),
    ));
    for (name, tar) in [("oci", &oci), ("legacy", &legacy)] {
        for (ext, data, compression) in [
            ("tar.gz", gzip(tar), WholeCompression::Gzip),
            (
                "tar.zst",
                zstd::encode_all(&tar[..], 3).unwrap(),
                WholeCompression::Zstd,
            ),
            // The name says nothing: the bytes do.
            ("tar", gzip(tar), WholeCompression::Gzip),
        ] {
            let path = dir.write(&format!("{name}.{ext}"), &data);
            let source = Source::open(&path).unwrap();
            assert_eq!(source.container, Container::CompressedTar(compression));
            assert_sound(&path);
            // Any blob opens verified, even without the second pass.
            let layer = &source.images[0].parts()[0].1[0];
            let mut out = Vec::new();
            source
                .open_blob(&layer.blob)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
        }
    }
    // A damaged compressed archive: a layer's byte, after decompression.
    let mut damaged = oci.clone();
    let at = find(&damaged, &image.layers[0].blob) + 100;
    damaged[at] ^= 0xff;
    let path = dir.write("damaged.tar.gz", &gzip(&damaged));
    let p = problems(&path);
    assert!(
        p.contains(&Digest::of(&image.layers[0].blob).to_string()),
        "{p}"
    );
    // A truncated compressed archive.
    let gz = gzip(&oci);
    let path = dir.write("cut.tar.gz", &gz[..gz.len() / 2]);
    let e = Source::open(&path)
        .err()
        .expect("a truncated archive opens");
    assert!(
        matches!(
            e,
            ReadError::Truncated { .. } | ReadError::NotAnArchive { .. }
        ),
        "{e}"
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the blob is in the archive")
}

// ------------------------------------------------------------------------------------------
// Hostile and damaged inputs

#[test]
fn a_damaged_layer_is_named_with_expected_and_found() {
    let dir = Dir::new();
    let image = simple_image();
    let mut tar = tar_of(&oci_entries(&[&image], &["app:v1"]));
    let blob = &image.layers[1].blob;
    let at = find(&tar, blob) + 10;
    tar[at] ^= 0x01;
    let path = dir.write("bad.tar", &tar);
    let mut damaged = blob.clone();
    damaged[10] ^= 0x01;
    let p = problems(&path);
    assert!(
        p.contains(&format!(
            "layer blobs/sha256/{}: expected {}, found {}",
            Digest::of(blob).hex(),
            Digest::of(blob),
            Digest::of(&damaged)
        )),
        "{p}"
    );
    // open_blob fails the read the same way.
    let source = Source::open(&path).unwrap();
    let mut reader = source
        .open_blob(&Blob::oci(&Digest::of(blob), blob.len() as u64))
        .unwrap();
    let e = reader.read_to_end(&mut Vec::new()).unwrap_err();
    assert!(
        matches!(BlobError::from_io(&e), Some(BlobError::Digest { .. })),
        "{e}"
    );
}

#[test]
fn a_layer_whose_diff_id_lies_is_named() {
    let dir = Dir::new();
    let mut image = simple_image();
    let mut config: Value = serde_json::from_slice(&image.config).unwrap();
    let liar = Digest::of(b"not the content");
    config["rootfs"]["diff_ids"][1] = json!(liar.to_string());
    image.config = serde_json::to_vec(&config).unwrap();
    let layers: Vec<TestLayer> = std::mem::take(&mut image.layers);
    let mut rebuilt = test_image("amd64", layers);
    rebuilt.config = image.config;
    let mut m: Value = serde_json::from_slice(&rebuilt.manifest).unwrap();
    m["config"] = descriptor(media_type::OCI_CONFIG, &rebuilt.config);
    rebuilt.manifest = serde_json::to_vec(&m).unwrap();
    let path = dir.write("liar.tar", &tar_of(&oci_entries(&[&rebuilt], &["app:v1"])));
    let p = problems(&path);
    assert!(
        p.contains(&format!(
            "its uncompressed content is {}, but the config's diff_id is {liar}",
            Digest::of(&rebuilt.layers[1].tar)
        )),
        "{p}"
    );
}

#[test]
fn truncated_tars_are_refused() {
    let dir = Dir::new();
    let tar = tar_of(&oci_entries(&[&simple_image()], &["app:v1"]));
    for (name, cut) in [
        ("mid-blob.tar", 3000),
        ("no-end.tar", tar.len() - 1024),
        ("mid-header.tar", 700),
        ("empty.tar", 0),
    ] {
        let path = dir.write(name, &tar[..cut]);
        let e = Source::open(&path)
            .err()
            .unwrap_or_else(|| panic!("{name} opened"));
        assert!(matches!(e, ReadError::Truncated { .. }), "{name}: {e}");
    }
}

#[test]
fn a_huge_declared_size_is_refused_before_anything_is_read() {
    let dir = Dir::new();
    let mut h = tar::Header::new_gnu();
    h.set_path("blobs/sha256/x").unwrap();
    h.set_size(1 << 40);
    h.set_cksum();
    let mut data = h.as_bytes().to_vec();
    data.extend(vec![0u8; 4096]);
    let path = dir.write("huge.tar", &data);
    let e = Source::open(&path).err().unwrap();
    assert!(matches!(e, ReadError::Truncated { .. }), "{e}");
    h.set_size(1 << 50);
    h.set_cksum();
    let path = dir.write("huger.tar", h.as_bytes());
    assert!(Source::open(&path).is_err());

    // A descriptor claiming more than any blob: a problem of its image.
    let image = simple_image();
    let mut m: Value = serde_json::from_slice(&image.manifest).unwrap();
    m["layers"][0]["size"] = json!(1u64 << 50);
    let mut bad = test_image("amd64", vec![]);
    bad.config = image.config.clone();
    bad.layers = image.layers;
    bad.manifest = serde_json::to_vec(&m).unwrap();
    let path = dir.write("claim.tar", &tar_of(&oci_entries(&[&bad], &["app:v1"])));
    assert!(problems(&path).contains("more than any registry serves"));
}

#[test]
fn names_that_leave_the_archive_and_duplicates_are_refused() {
    let dir = Dir::new();
    let ok = oci_entries(&[&simple_image()], &["app:v1"]);
    let mut traversal = tar_of(&[("../x".into(), E::File(b"x".to_vec()))]);
    let path = dir.write("traversal.tar", &traversal);
    let e = Source::open(&path).err().unwrap().to_string();
    assert!(e.contains("`..`"), "{e}");
    traversal = tar_of(&[("/etc/x".into(), E::File(b"x".to_vec()))]);
    let path = dir.write("absolute.tar", &traversal);
    assert!(
        Source::open(&path)
            .err()
            .unwrap()
            .to_string()
            .contains("absolute")
    );

    let mut dup = ok;
    dup.push(("index.json".into(), E::File(b"{}".to_vec())));
    let path = dir.write("dup.tar", &tar_of(&dup));
    let e = Source::open(&path).err().unwrap().to_string();
    assert!(e.contains("appears twice"), "{e}");
}

#[test]
fn manifest_json_pointing_outside_or_nowhere_is_named() {
    let dir = Dir::new();
    let image = three_layers_with_a_repeat();
    let mut entries = docker_save_20_entries(&image, json!(["app:v1"]));
    let manifest = json!([{
        "Config": "../../etc/passwd",
        "RepoTags": ["app:v1", "Not A Name"],
        "Layers": ["missing/layer.tar", "/etc/shadow"],
    }]);
    if let Some((_, E::File(m))) = entries.iter_mut().find(|(n, _)| n == "manifest.json") {
        *m = serde_json::to_vec(&manifest).unwrap();
    }
    let path = dir.write("outside.tar", &tar_of(&entries));
    let p = problems(&path);
    for want in [
        "config ../../etc/passwd: its name is not allowed: a name with `..`",
        "layer missing/layer.tar is missing",
        "layer /etc/shadow: its name is not allowed: an absolute name",
        "name \"Not A Name\" does not parse",
    ] {
        assert!(p.contains(want), "{want:?} not in\n{p}");
    }
}

#[test]
fn links_named_like_blobs_lead_nowhere_outside() {
    let dir = Dir::new();
    let image = simple_image();
    let layer = Digest::of(&image.layers[0].blob);
    let mut entries = oci_entries(&[&image], &["app:v1"]);
    let at = entries
        .iter()
        .position(|(n, _)| n.ends_with(layer.hex()))
        .unwrap();
    entries[at].1 = E::Symlink("../../../../etc/passwd".into());
    let path = dir.write("link.tar", &tar_of(&entries));
    let p = problems(&path);
    assert!(p.contains("a link that leads outside the archive"), "{p}");
    // Inside the archive, a link to other bytes is a digest mismatch.
    entries[at].1 = E::Symlink("../../index.json".into());
    let path = dir.write("link-inside.tar", &tar_of(&entries));
    let p = problems(&path);
    assert!(
        p.contains(&format!("layer blobs/sha256/{}: expected", layer.hex())),
        "{p}"
    );
    // A link in a layout directory is not followed at all.
    let cache = Cache::open(&dir.path("cache")).unwrap();
    let layout = dir.path("layout");
    archive::write(
        Format::OciDir,
        &archive::Delivery::file(&layout, false),
        &[archive_image(&cache, &image, "app:v1")],
        &cache,
        LayerLimit::Default,
    )
    .unwrap();
    let blob = layout.join(format!("blobs/sha256/{}", layer.hex()));
    let copy = dir.write("copy", &std::fs::read(&blob).unwrap());
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&copy, &blob).unwrap();
    let p = problems(&layout);
    assert!(p.contains("symbolic link"), "{p}");
}

#[test]
fn an_index_with_100k_entries_is_refused() {
    let dir = Dir::new();
    let entry = json!({"mediaType": media_type::OCI_MANIFEST, "digest": Digest::of(b"m").to_string(), "size": 1});
    let index = json!({"schemaVersion": 2, "manifests": vec![entry; 100_000]});
    let entries = vec![
        ("oci-layout".to_string(), E::File(b"{}".to_vec())),
        (
            "index.json".to_string(),
            E::File(serde_json::to_vec(&index).unwrap()),
        ),
    ];
    let path = dir.write("many.tar", &tar_of(&entries));
    let e = Source::open(&path).err().unwrap().to_string();
    assert!(e.contains("index.json"), "{e}");
    // Within the size limit, the count limit.
    let small = json!({"digest": "sha256:0", "size": 1});
    let index = json!({"manifests": vec![small; 5000]});
    let entries = vec![
        ("oci-layout".to_string(), E::File(b"{}".to_vec())),
        (
            "index.json".to_string(),
            E::File(serde_json::to_vec(&index).unwrap()),
        ),
    ];
    let path = dir.write("many-small.tar", &tar_of(&entries));
    let e = Source::open(&path).err().unwrap().to_string();
    assert!(e.contains("5000 manifests"), "{e}");
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    let dir = Dir::new();
    let mut seed = 7u64;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect()
    };
    let tar = tar_of(&oci_entries(&[&simple_image()], &["app:v1"]));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random", bytes(10_000)),
        ("gzip-magic", [&[0x1f, 0x8b][..], &bytes(500)].concat()),
        (
            "zstd-magic",
            [&[0x28, 0xb5, 0x2f, 0xfd][..], &bytes(500)].concat(),
        ),
        ("no-images", tar_of(&[("x".into(), E::File(b"x".to_vec()))])),
        (
            "bad-index",
            tar_of(&[("index.json".into(), E::File(b"[1, 2]".to_vec()))]),
        ),
    ];
    for (name, data) in cases {
        let path = dir.write(name, &data);
        assert!(verify(&path, &Silent).is_err(), "{name}");
    }
    // Every byte of a small archive flipped in turn (headers and documents).
    for at in (0..tar.len().min(8192)).step_by(97) {
        let mut t = tar.clone();
        t[at] ^= 0x55;
        let path = dir.write("flipped.tar", &t);
        let _ = verify(&path, &Silent);
    }
}
