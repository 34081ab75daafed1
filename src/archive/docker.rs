//! The `docker` format: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/*` byte-for-byte) that also carries Docker's `manifest.json`
//! and `repositories`, so every `docker load` since 1.10 accepts it, as do
//! Podman, containerd and skopeo. Several images share their blobs.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::Path;

use serde::Serialize;

use super::ArchiveImage;
use super::tar_out::TarOut;
use crate::cache::Cache;
use crate::error::PullError;
use crate::media_type;

#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Serialize)]
struct IndexDescriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<IndexDescriptor>,
}

pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

pub fn blob_name(d: &crate::digest::Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Writes the `docker` format, or with `docker_metadata` false the plain
/// OCI layout of the `oci` format (whose `ref.name` is the full reference,
/// so several images with one tag stay apart).
pub fn write(
    file: File,
    path: &Path,
    images: &[ArchiveImage],
    cache: &Cache,
    docker_metadata: bool,
) -> Result<(), PullError> {
    let mut tar = TarOut::new(file, path);
    tar.file("oci-layout", OCI_LAYOUT)?;
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;

    let mut written = HashSet::new();
    for image in images {
        for d in image.blobs() {
            if written.insert(d.digest.clone()) {
                tar.blob(&blob_name(&d.digest), cache, &d.digest, d.size)?;
            }
        }
        for m in image.manifests() {
            if written.insert(m.digest.clone()) {
                tar.file(&blob_name(&m.digest), &m.bytes)?;
            }
        }
    }

    tar.file("index.json", &to_json(&index(images, !docker_metadata)))?;
    if !docker_metadata {
        return tar.finish();
    }

    let manifest: Vec<DockerManifestEntry> = images
        .iter()
        .map(|image| DockerManifestEntry {
            config: blob_name(&image.config.digest),
            repo_tags: image.repo_tag().into_iter().collect(),
            layers: image.layers.iter().map(|l| blob_name(&l.digest)).collect(),
        })
        .collect();
    tar.file("manifest.json", &to_json(&manifest))?;

    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for image in images {
        let name = image.name_reference();
        if let Some(tag) = &name.tag {
            repositories
                .entry(name.familiar_name())
                .or_default()
                .insert(tag.clone(), image.config.digest.hex().to_string());
        }
    }
    tar.file("repositories", &to_json(&repositories))?;
    tar.finish()
}

/// The `index.json` of a layout holding `images`. The image name goes into
/// `io.containerd.image.name`, and into `org.opencontainers.image.ref.name`
/// as the tag alone (`docker` format, as `docker save` writes it) or as the
/// full reference (`full_ref_name`).
pub fn index(images: &[ArchiveImage], full_ref_name: bool) -> impl Serialize {
    Index {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests: images
            .iter()
            .map(|i| index_entry(i, full_ref_name))
            .collect(),
    }
}

fn index_entry(image: &ArchiveImage, full_ref_name: bool) -> IndexDescriptor {
    let name = image.name_reference();
    let mut annotations = BTreeMap::new();
    if let Some(tag) = &name.tag {
        let full = format!("{}:{tag}", name.full_name());
        annotations.insert("io.containerd.image.name", full.clone());
        annotations.insert(
            "org.opencontainers.image.ref.name",
            if full_ref_name { full } else { tag.clone() },
        );
    }
    let (top, media_type) = image.top();
    IndexDescriptor {
        media_type: media_type.to_string(),
        digest: top.digest.to_string(),
        size: top.bytes.len() as u64,
        annotations,
    }
}

/// One `index.json` entry as JSON, for merging into an existing layout.
pub fn index_entry_value(image: &ArchiveImage) -> serde_json::Value {
    serde_json::to_value(index_entry(image, true)).expect("index entries serialise")
}

pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).expect("archive metadata serialises");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use super::*;
    use crate::archive::{self, ArchiveImage, Format};
    use crate::digest::Digest;
    use crate::reference::{DOCKER_HUB, Reference};
    use crate::registry::Manifest;
    use crate::resolve::Descriptor;

    fn put(cache: &Cache, data: &[u8]) -> Descriptor {
        let digest = Digest::of(data);
        std::fs::write(cache.blob_path(&digest), data).unwrap();
        Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest,
            size: data.len() as u64,
            urls: vec![],
        }
    }

    fn image(cache: &Cache, reference: &str, layers: &[&[u8]]) -> ArchiveImage {
        let config = put(
            cache,
            format!("{{\"config-of\":\"{reference}\"}}").as_bytes(),
        );
        let layers: Vec<Descriptor> = layers.iter().map(|l| put(cache, l)).collect();
        let manifest = format!("{{\"manifest-of\":\"{reference}\"}}").into_bytes();
        ArchiveImage {
            reference: Reference::parse(reference, DOCKER_HUB).unwrap(),
            rename: None,
            manifest: Manifest {
                digest: Digest::of(&manifest),
                bytes: manifest,
                content_type: None,
            },
            manifest_media_type: media_type::OCI_MANIFEST.into(),
            config,
            layers,
            all: None,
        }
    }

    fn entries(path: &std::path::Path) -> BTreeMap<String, (Vec<u8>, tar::Header)> {
        let mut out = BTreeMap::new();
        let mut order = Vec::new();
        let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            order.push(name.clone());
            out.insert(name, (data, e.header().clone()));
        }
        assert_eq!(order[0], "oci-layout");
        assert_eq!(
            &order[order.len() - 3..],
            ["index.json", "manifest.json", "repositories"]
        );
        out
    }

    #[test]
    fn bundle_layout_names_and_shared_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let shared: &[u8] = b"shared base layer";
        let a = image(&cache, "nginx:1.27", &[shared, b"nginx layer"]);
        let mut b = image(&cache, "127.0.0.1:5000/small", &[shared]);
        b.rename = Some(Reference::parse("mine/app:v2", DOCKER_HUB).unwrap());
        let out = dir.path().join("bundle.tar");
        archive::write(Format::Docker, &out, &[a.clone(), b.clone()], &cache).unwrap();

        let e = entries(&out);
        assert_eq!(e["oci-layout"].0, OCI_LAYOUT);
        for (name, (data, h)) in &e {
            assert_eq!(h.mtime().unwrap(), 0, "{name}");
            assert_eq!(h.uid().unwrap(), 0, "{name}");
            if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(Digest::of(data).hex(), hex, "blob {name} is byte-for-byte");
            }
        }
        let blobs = e
            .keys()
            .filter(|k| k.len() > "blobs/sha256/".len() && k.starts_with("blobs/sha256/"))
            .count();
        // 2 configs + 2 distinct layers + 2 manifests: the shared layer once.
        assert_eq!(blobs, 6);

        let manifest: serde_json::Value = serde_json::from_slice(&e["manifest.json"].0).unwrap();
        assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["nginx:1.27"]));
        assert_eq!(manifest[1]["RepoTags"], serde_json::json!(["mine/app:v2"]));
        assert_eq!(
            manifest[0]["Config"],
            format!("blobs/sha256/{}", a.config.digest.hex())
        );
        assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 2);

        let index: serde_json::Value = serde_json::from_slice(&e["index.json"].0).unwrap();
        let m = &index["manifests"];
        assert_eq!(m[0]["digest"], a.manifest.digest.to_string());
        assert_eq!(
            m[0]["annotations"]["io.containerd.image.name"],
            "docker.io/library/nginx:1.27"
        );
        assert_eq!(
            m[0]["annotations"]["org.opencontainers.image.ref.name"],
            "1.27"
        );
        assert_eq!(
            m[1]["annotations"]["io.containerd.image.name"],
            "docker.io/mine/app:v2"
        );

        let repos: serde_json::Value = serde_json::from_slice(&e["repositories"].0).unwrap();
        assert_eq!(repos["nginx"]["1.27"], a.config.digest.hex());
        assert_eq!(repos["mine/app"]["v2"], b.config.digest.hex());
        // Nothing but the archive is left in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn digest_only_images_are_untagged() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut img = image(&cache, "nginx", &[b"l"]);
        img.reference =
            Reference::parse(&format!("nginx@{}", img.manifest.digest), DOCKER_HUB).unwrap();
        let out = dir.path().join("x.tar");
        archive::write(Format::Docker, &out, &[img], &cache).unwrap();
        let e = entries(&out);
        let manifest: serde_json::Value = serde_json::from_slice(&e["manifest.json"].0).unwrap();
        assert_eq!(manifest[0]["RepoTags"], serde_json::json!([]));
        let index: serde_json::Value = serde_json::from_slice(&e["index.json"].0).unwrap();
        assert!(index["manifests"][0].get("annotations").is_none());
        assert_eq!(e["repositories"].0, b"{}\n");
    }

    #[test]
    fn damaged_cache_blob_fails_without_touching_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let img = image(&cache, "nginx", &[b"good layer"]);
        let out = dir.path().join("x.tar");
        std::fs::write(&out, b"previous archive").unwrap();
        std::fs::write(cache.blob_path(&img.layers[0].digest), b"bad! layer").unwrap();
        let err =
            archive::write(Format::Docker, &out, std::slice::from_ref(&img), &cache).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"previous archive");
        assert!(
            !cache.contains(&img.layers[0].digest, img.layers[0].size),
            "evicted"
        );
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary archive is left");
    }

    #[test]
    fn identical_input_gives_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let img = image(&cache, "nginx", &[b"a", b"b"]);
        let (x, y) = (dir.path().join("x.tar"), dir.path().join("y.tar"));
        archive::write(Format::Docker, &x, std::slice::from_ref(&img), &cache).unwrap();
        archive::write(Format::Docker, &y, &[img], &cache).unwrap();
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    }
}
