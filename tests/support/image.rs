//! Deterministic test images: layers, configs, manifests and indexes built in memory.
//!
//! Everything here is reproducible byte-for-byte: tar entries have mtime 0, uid/gid 0 and fixed
//! modes, gzip uses a fixed level and header, and JSON is serialised with sorted keys. The same
//! builder calls therefore always yield the same digests, which lets tests compare an archive
//! against the blobs they pushed. This module never talks to a registry; see `registry` (the
//! in-process fake) and `push` (a real registry) for that.

use std::io::Write;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Docker schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker schema 1 signed manifest (unsupported by docker-pull).
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker foreign (non-distributable) gzip layer: its blob lives at the descriptor's `urls`.
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// OCI non-distributable gzip layer.
pub const OCI_NONDISTRIBUTABLE_LAYER: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// In-toto attestation statement (BuildKit attestation manifests carry these as layers).
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// The fixed creation time written into every config and history entry.
pub const CREATED: &str = "2024-01-01T00:00:00Z";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A content-addressed blob: a manifest, an index, a config or a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The media type a descriptor pointing at this blob carries.
    pub media_type: String,
    /// `sha256:<64 hex>` of `data`.
    pub digest: String,
    /// The exact bytes a registry serves.
    pub data: Vec<u8>,
}

impl Blob {
    /// A blob of `data`, its digest computed.
    pub fn new(media_type: impl Into<String>, data: Vec<u8>) -> Self {
        let digest = sha256_digest(&data);
        Self {
            media_type: media_type.into(),
            digest,
            data,
        }
    }

    /// A blob holding `value` serialised compactly (keys sorted, so deterministic).
    pub fn json(media_type: impl Into<String>, value: &Value) -> Self {
        let data = serde_json::to_vec(value).expect("serialising a serde_json::Value cannot fail");
        Self::new(media_type, data)
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The digest's hex part (the file name under `blobs/sha256/`).
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }

    /// An OCI descriptor `{mediaType, digest, size}` for this blob.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size(),
        })
    }
}

/// Which family of media types an image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Docker schema 2 manifest, Docker config, `rootfs.diff.tar.gzip` layers, manifest lists.
    Docker,
    /// OCI manifest, OCI config, `tar+gzip` layers, OCI indexes.
    Oci,
}

impl Flavor {
    /// Media type of a single-platform manifest.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Flavor::Docker => DOCKER_MANIFEST,
            Flavor::Oci => OCI_MANIFEST,
        }
    }

    /// Media type of a multi-platform index / manifest list.
    pub fn index_media_type(self) -> &'static str {
        match self {
            Flavor::Docker => DOCKER_MANIFEST_LIST,
            Flavor::Oci => OCI_INDEX,
        }
    }

    /// Media type of the image config.
    pub fn config_media_type(self) -> &'static str {
        match self {
            Flavor::Docker => DOCKER_CONFIG,
            Flavor::Oci => OCI_CONFIG,
        }
    }

    /// Media type of a gzip-compressed layer.
    pub fn layer_gzip_media_type(self) -> &'static str {
        match self {
            Flavor::Docker => DOCKER_LAYER_GZIP,
            Flavor::Oci => OCI_LAYER_GZIP,
        }
    }

    /// Media type of an uncompressed layer.
    pub fn layer_tar_media_type(self) -> &'static str {
        match self {
            Flavor::Docker => DOCKER_LAYER_TAR,
            Flavor::Oci => OCI_LAYER_TAR,
        }
    }
}

#[derive(Clone, Debug)]
enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// Builds one filesystem layer as a deterministic tar (optionally gzip-compressed).
///
/// Paths are written relative (a leading `/` is stripped), in the order they were added.
#[derive(Clone, Debug, Default)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
}

fn rel(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory with permission bits `mode` (e.g. `0o755`).
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.entries.push(Entry::Dir {
            path: rel(path),
            mode,
        });
        self
    }

    /// Adds a regular file holding `data` with permission bits `mode`.
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.entries.push(Entry::File {
            path: rel(path),
            data: data.into(),
            mode,
        });
        self
    }

    /// Adds a symbolic link `path -> target` (target kept as given).
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink {
            path: rel(path),
            target: target.to_string(),
        });
        self
    }

    /// The uncompressed tar bytes.
    pub fn build_tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            let result = match entry {
                Entry::Dir { path, mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    let path = if path.ends_with('/') {
                        path.clone()
                    } else {
                        format!("{path}/")
                    };
                    builder.append_data(&mut header, path, std::io::empty())
                }
                Entry::File { path, data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, data.as_slice())
                }
                Entry::Symlink { path, target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)
                }
            };
            result.expect("writing a tar entry to memory");
        }
        builder.into_inner().expect("finishing an in-memory tar")
    }

    /// The layer gzip-compressed (level 6, no name, mtime 0), with its diff ID (digest of the tar).
    pub fn build_gzip(&self, flavor: Flavor) -> (Blob, String) {
        let tar = self.build_tar();
        let diff_id = sha256_digest(&tar);
        (
            Blob::new(flavor.layer_gzip_media_type(), gzip(&tar)),
            diff_id,
        )
    }

    /// The layer zstd-compressed (level 3, deterministic), with its diff ID. The media type is
    /// OCI's `tar+zstd` for both flavors (Docker has no zstd layer type of its own).
    pub fn build_zstd(&self) -> (Blob, String) {
        let tar = self.build_tar();
        let diff_id = sha256_digest(&tar);
        (Blob::new(OCI_LAYER_ZSTD, zstd(&tar)), diff_id)
    }

    /// The layer as an uncompressed tar, with its diff ID (equal to the blob digest).
    pub fn build_uncompressed(&self, flavor: Flavor) -> (Blob, String) {
        let blob = Blob::new(flavor.layer_tar_media_type(), self.build_tar());
        let diff_id = blob.digest.clone();
        (blob, diff_id)
    }
}

/// Deterministic gzip: fixed level, mtime 0, no file name.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("finish gzip into memory")
}

/// Deterministic zstd: level 3, no dictionary, content size in the frame header.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).expect("zstd into memory")
}

/// Decompresses zstd `data` (panics with a clear message if it is not zstd).
pub fn unzstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(data).expect("layer is not valid zstd")
}

/// Decompresses gzip `data` (panics with a clear message if it is not gzip).
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out)
        .expect("layer is not valid gzip");
    out
}

/// An image platform: `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch` or `os/arch/variant`.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// `linux/amd64`, `linux/arm/v7`, ...
    pub fn to_path(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// The `platform` object of an index entry.
    pub fn to_json(&self) -> Value {
        let mut value = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(v) = &self.variant {
            value["variant"] = json!(v);
        }
        value
    }
}

/// Builds a single-platform image: layers, config and manifest.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    flavor: Flavor,
    platform: Platform,
    layers: Vec<(Blob, String)>,
    /// `urls` for the layer descriptors at these positions (foreign layers).
    urls: Vec<(usize, Vec<String>)>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Vec<String>,
    labels: Vec<(String, String)>,
}

impl ImageBuilder {
    /// An image of the given flavor for linux/amd64, with no layers and `PATH` set.
    pub fn new(flavor: Flavor) -> Self {
        Self {
            flavor,
            platform: Platform::new("linux", "amd64", None),
            layers: Vec::new(),
            urls: Vec::new(),
            cmd: None,
            entrypoint: None,
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ],
            labels: Vec::new(),
        }
    }

    /// Sets the platform written into the config (and into index entries).
    pub fn platform(mut self, os: &str, arch: &str, variant: Option<&str>) -> Self {
        self.platform = Platform::new(os, arch, variant);
        self
    }

    /// Appends a gzip layer built from `layer`.
    pub fn layer(mut self, layer: LayerBuilder) -> Self {
        self.layers.push(layer.build_gzip(self.flavor));
        self
    }

    /// Appends a prebuilt layer blob and its diff ID (e.g. a layer shared with another image).
    pub fn raw_layer(mut self, blob: Blob, diff_id: impl Into<String>) -> Self {
        self.layers.push((blob, diff_id.into()));
        self
    }

    /// Appends a zstd layer built from `layer`.
    pub fn zstd_layer(mut self, layer: LayerBuilder) -> Self {
        self.layers.push(layer.build_zstd());
        self
    }

    /// Appends an uncompressed (`.tar` media type) layer built from `layer`.
    pub fn uncompressed_layer(mut self, layer: LayerBuilder) -> Self {
        self.layers.push(layer.build_uncompressed(self.flavor));
        self
    }

    /// Appends an empty layer (a tar with no entries, gzip-compressed), as `ENV` or `WORKDIR`
    /// steps of old builders made.
    pub fn empty_layer(self) -> Self {
        self.layer(LayerBuilder::new())
    }

    /// Appends the layer at position `index` again (the same blob listed twice).
    pub fn repeat_layer(mut self, index: usize) -> Self {
        let layer = self.layers[index].clone();
        self.layers.push(layer);
        self
    }

    /// Appends a foreign (non-distributable) gzip layer built from `layer` whose descriptor
    /// carries `urls`. The blob is part of the image; a test that wants the registry to lack it
    /// deletes it after pushing.
    pub fn foreign_layer(mut self, layer: LayerBuilder, urls: &[&str]) -> Self {
        let tar = layer.build_tar();
        let diff_id = sha256_digest(&tar);
        let media_type = match self.flavor {
            Flavor::Docker => DOCKER_FOREIGN_LAYER,
            Flavor::Oci => OCI_NONDISTRIBUTABLE_LAYER,
        };
        self.urls.push((
            self.layers.len(),
            urls.iter().map(|u| u.to_string()).collect(),
        ));
        self.layers
            .push((Blob::new(media_type, gzip(&tar)), diff_id));
        self
    }

    /// Sets the config's `Cmd`.
    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = Some(cmd.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Sets the config's `Entrypoint`.
    pub fn entrypoint(mut self, entrypoint: &[&str]) -> Self {
        self.entrypoint = Some(entrypoint.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Appends `KEY=VALUE` to the config's `Env`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Adds a label to the config (handy to make otherwise identical images distinct).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    /// Builds the config and manifest.
    pub fn build(self) -> Image {
        let diff_ids: Vec<String> = self.layers.iter().map(|(_, d)| d.clone()).collect();
        let mut container_config = json!({ "Env": self.env });
        if let Some(cmd) = &self.cmd {
            container_config["Cmd"] = json!(cmd);
        }
        if let Some(entrypoint) = &self.entrypoint {
            container_config["Entrypoint"] = json!(entrypoint);
        }
        if !self.labels.is_empty() {
            let labels: serde_json::Map<String, Value> = self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            container_config["Labels"] = Value::Object(labels);
        }
        let history: Vec<Value> = (0..self.layers.len())
            .map(|i| {
                json!({
                    "created": CREATED,
                    "created_by": format!("docker-pull test layer {i}"),
                })
            })
            .collect();
        let mut config = json!({
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "created": CREATED,
            "config": container_config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        if let Some(v) = &self.platform.variant {
            config["variant"] = json!(v);
        }
        let config = Blob::json(self.flavor.config_media_type(), &config);
        let layers: Vec<Blob> = self.layers.into_iter().map(|(b, _)| b).collect();
        let descriptors: Vec<Value> = layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let mut d = layer.descriptor();
                if let Some((_, urls)) = self.urls.iter().find(|(at, _)| *at == i) {
                    d["urls"] = json!(urls);
                }
                d
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": self.flavor.manifest_media_type(),
            "config": config.descriptor(),
            "layers": descriptors,
        });
        Image {
            manifest: Blob::json(self.flavor.manifest_media_type(), &manifest),
            config,
            layers,
            diff_ids,
            platform: self.platform,
            flavor: self.flavor,
        }
    }
}

/// A single-platform image as a registry stores it.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest (its `media_type` is what the registry serves as Content-Type).
    pub manifest: Blob,
    /// The config blob.
    pub config: Blob,
    /// Layer blobs in order.
    pub layers: Vec<Blob>,
    /// Uncompressed digests of the layers, as in the config's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
    /// Platform written into the config.
    pub platform: Platform,
    /// Media type family.
    pub flavor: Flavor,
}

impl Image {
    /// Config followed by the layers: every blob (not manifest) a pull downloads.
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }

    /// `os/arch[/variant]`.
    pub fn platform_string(&self) -> String {
        self.platform.to_path()
    }

    /// Total bytes of config and layers.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs().iter().map(|b| b.size()).sum()
    }

    /// Total bytes of the layers only.
    pub fn layer_bytes(&self) -> u64 {
        self.layers.iter().map(Blob::size).sum()
    }

    /// An index entry for this image: its manifest's descriptor plus its platform.
    pub fn index_entry(&self) -> Value {
        let mut entry = self.manifest.descriptor();
        entry["platform"] = self.platform.to_json();
        entry
    }
}

/// SplitMix64: a tiny deterministic PRNG for reproducible incompressible data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// An image of `layers` gzip layers, each holding one file of `layer_size` pseudo-random
/// (incompressible) bytes. Deterministic per `seed`; different seeds share no layer.
pub fn random_image(flavor: Flavor, layers: usize, layer_size: usize, seed: u64) -> Image {
    let mut builder = ImageBuilder::new(flavor).label("seed", &seed.to_string());
    for i in 0..layers {
        let mut rng = SplitMix64::new(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
        builder = builder.layer(LayerBuilder::new().dir("data", 0o755).file(
            &format!("data/seed-{seed}-layer-{i}.bin"),
            rng.bytes(layer_size),
            0o644,
        ));
    }
    builder.cmd(&["/bin/true"]).build()
}

/// An image of `count` small gzip layers, each adding one file `layers/<i>` (distinct
/// per `seed`): for layer-count limits and long v1 id chains.
pub fn many_layers_image(flavor: Flavor, count: usize, seed: u64) -> Image {
    let mut builder = ImageBuilder::new(flavor).label("seed", &seed.to_string());
    for i in 0..count {
        builder = builder.layer(LayerBuilder::new().dir("layers", 0o755).file(
            &format!("layers/{i}"),
            format!("seed {seed} layer {i}\n").into_bytes(),
            0o644,
        ));
    }
    builder.cmd(&["/bin/true"]).build()
}

/// An image whose config is padded with a label of `bytes` pseudo-random hex characters, so
/// the config blob is larger than any buffer a writer might assume.
pub fn large_config_image(flavor: Flavor, bytes: usize, seed: u64) -> Image {
    let padding = hex::encode(SplitMix64::new(seed).bytes(bytes.div_ceil(2)));
    ImageBuilder::new(flavor)
        .layer(LayerBuilder::new().dir("etc", 0o755).file(
            "etc/large-config",
            b"yes\n".to_vec(),
            0o644,
        ))
        .label("padding", &padding[..bytes])
        .cmd(&["/bin/true"])
        .build()
}

/// A one-layer image whose single file holds `text` (small, readable, distinct per text).
pub fn small_image(flavor: Flavor, text: &str) -> Image {
    ImageBuilder::new(flavor)
        .layer(LayerBuilder::new().dir("etc", 0o755).file(
            "etc/message",
            text.as_bytes().to_vec(),
            0o644,
        ))
        .cmd(&["/bin/cat", "/etc/message"])
        .build()
}

/// The layer of a runnable busybox image: `/bin/busybox` plus applet symlinks.
pub fn busybox_layer(busybox: &[u8]) -> LayerBuilder {
    let mut layer = LayerBuilder::new()
        .dir("bin", 0o755)
        .dir("etc", 0o755)
        .dir("tmp", 0o1777)
        .file("bin/busybox", busybox.to_vec(), 0o755);
    for applet in ["sh", "echo", "cat", "ls", "true", "false", "sleep", "env"] {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        0o644,
    )
}

/// A builder for a runnable busybox image (linux/amd64 unless `.platform(..)` changes it),
/// with `Cmd ["/bin/sh","-c","echo hello from docker-pull"]`.
pub fn busybox_image_builder(flavor: Flavor, busybox: &[u8]) -> ImageBuilder {
    ImageBuilder::new(flavor)
        .layer(busybox_layer(busybox))
        .cmd(&["/bin/sh", "-c", "echo hello from docker-pull"])
}

/// A runnable linux/amd64 busybox image; see [`busybox_image_builder`] to change the platform.
pub fn busybox_image(flavor: Flavor, busybox: &[u8]) -> Image {
    busybox_image_builder(flavor, busybox).build()
}

/// A multi-platform image: the index/manifest list plus the manifests it points to.
#[derive(Clone, Debug)]
pub struct Index {
    /// The index (OCI) or manifest list (Docker).
    pub index: Blob,
    /// The platform images, in index order.
    pub images: Vec<Image>,
    /// Further manifests the index points to that are not platform images (attestations).
    pub extra_manifests: Vec<Image>,
}

impl Index {
    /// The image for `os/arch[/variant]`, if any.
    pub fn image_for(&self, platform: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.platform_string() == platform)
    }

    /// Platforms of the real images, e.g. `["linux/amd64", "linux/arm64/v8"]`.
    pub fn platforms(&self) -> Vec<String> {
        self.images.iter().map(Image::platform_string).collect()
    }
}

/// A BuildKit-style attestation manifest for `subject`: an OCI manifest whose config says
/// `unknown/unknown` and whose one layer is an in-toto statement.
pub fn attestation_for(subject: &Image) -> Image {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{
            "name": "pkg:docker/test",
            "digest": { "sha256": subject.manifest.digest.trim_start_matches("sha256:") },
        }],
        "predicate": { "spdxVersion": "SPDX-2.3" },
    });
    let layer = Blob::json(IN_TOTO, &statement);
    let config = Blob::json(
        OCI_CONFIG,
        &json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
        }),
    );
    let mut layer_descriptor = layer.descriptor();
    layer_descriptor["annotations"] =
        json!({ "in-toto.io/predicate-type": "https://spdx.dev/Document" });
    let manifest = Blob::json(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer_descriptor],
        }),
    );
    Image {
        manifest,
        config,
        diff_ids: vec![layer.digest.clone()],
        layers: vec![layer],
        platform: Platform::new("unknown", "unknown", None),
        flavor: Flavor::Oci,
    }
}

/// An OCI index (`Flavor::Oci`) or Docker manifest list (`Flavor::Docker`) of `images`, each entry
/// carrying its image's platform. With `with_attestation`, an attestation manifest for the first
/// image is appended (platform `unknown/unknown`, BuildKit's `vnd.docker.reference.*` annotations).
pub fn index(flavor: Flavor, images: Vec<Image>, with_attestation: bool) -> Index {
    let mut manifests: Vec<Value> = images.iter().map(Image::index_entry).collect();
    let mut extra_manifests = Vec::new();
    if with_attestation {
        let subject = images
            .first()
            .expect("an attestation needs at least one image to refer to");
        let attestation = attestation_for(subject);
        let mut entry = attestation.index_entry();
        entry["annotations"] = json!({
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": subject.manifest.digest,
        });
        manifests.push(entry);
        extra_manifests.push(attestation);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": flavor.index_media_type(),
        "manifests": manifests,
    });
    Index {
        index: Blob::json(flavor.index_media_type(), &index),
        images,
        extra_manifests,
    }
}

/// A schema 1 signed manifest (docker-pull must refuse it).
pub fn schema1_manifest(name: &str, tag: &str) -> Blob {
    let value = json!({
        "schemaVersion": 1,
        "name": name,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": [{ "blobSum": sha256_digest(b"") }],
        "history": [{ "v1Compatibility": "{\"id\":\"0000000000000000000000000000000000000000000000000000000000000000\"}" }],
        "signatures": [],
    });
    Blob::json(DOCKER_SCHEMA1_SIGNED, &value)
}
