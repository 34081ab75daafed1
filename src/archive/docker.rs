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

fn blob_name(d: &crate::digest::Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

pub fn write(
    file: File,
    path: &Path,
    images: &[ArchiveImage],
    cache: &Cache,
) -> Result<(), PullError> {
    let mut tar = TarOut::new(file, path);
    tar.file("oci-layout", OCI_LAYOUT)?;
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;

    let mut written = HashSet::new();
    for image in images {
        for d in std::iter::once(&image.config).chain(&image.layers) {
            if written.insert(d.digest.clone()) {
                tar.blob(&blob_name(&d.digest), cache, &d.digest, d.size)?;
            }
        }
        if written.insert(image.manifest.digest.clone()) {
            tar.file(&blob_name(&image.manifest.digest), &image.manifest.bytes)?;
        }
    }

    let index = Index {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests: images
            .iter()
            .map(|image| {
                let name = image.name_reference();
                let mut annotations = BTreeMap::new();
                if let Some(tag) = &name.tag {
                    annotations.insert(
                        "io.containerd.image.name",
                        format!("{}:{tag}", name.full_name()),
                    );
                    annotations.insert("org.opencontainers.image.ref.name", tag.clone());
                }
                IndexDescriptor {
                    media_type: image.manifest_media_type.clone(),
                    digest: image.manifest.digest.to_string(),
                    size: image.manifest.bytes.len() as u64,
                    annotations,
                }
            })
            .collect(),
    };
    tar.file("index.json", &to_json(&index))?;

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

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).expect("archive metadata serialises");
    out.push(b'\n');
    out
}
