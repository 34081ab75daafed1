//! The `docker` format: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/*` byte-for-byte) that also carries Docker's `manifest.json`
//! and `repositories`, so every `docker load` since 1.10 accepts it, as do
//! Podman, containerd and skopeo. Several images share their blobs.
//!
//! Every entry's name and size is known from the manifests, so the whole
//! layout is laid out first ([`layout`]) and each blob is copied to its place
//! as soon as it is in the cache ([`LayoutWriter`]): the archive is written
//! while the rest of the image downloads. A stream (compressed, or stdout)
//! cannot seek: [`StreamWriter`] writes the same bytes front to back, each
//! blob once every entry before it is out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::ArchiveImage;
use super::tar_out::{TarOut, copy_blob_at};
use crate::cache::Cache;
use crate::digest::Digest;
use crate::error::PullError;
use crate::media_type;
use crate::place::Placement;

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

/// Where an entry's data comes from.
enum Data {
    Directory,
    Bytes(Vec<u8>),
    /// A blob in the cache, copied in when [`LayoutWriter::blob`] is called.
    Blob(Digest),
}

struct Entry {
    name: String,
    size: u64,
    data: Data,
    /// Where its header starts; the data follows the 512-byte header.
    offset: u64,
}

/// Every entry of a `docker` or `oci` archive with its place in the file.
/// The manifests give every name and size in advance, so the whole layout is
/// known before a single blob is downloaded.
pub struct Layout {
    entries: Vec<Entry>,
    /// The archive's length, the two zero blocks that end a tar included.
    len: u64,
}

const BLOCK: u64 = 512;

/// The `docker` format, or with `docker_metadata` false the plain OCI layout
/// of the `oci` format (whose `ref.name` is the full reference, so several
/// images with one tag stay apart): `oci-layout`, the blobs (configs and
/// layers of each image in order, then its manifests), `index.json`, and for
/// `docker` `manifest.json` and `repositories`.
pub fn layout(images: &[ArchiveImage], docker_metadata: bool) -> Layout {
    let mut entries = Vec::new();
    let mut add = |name: String, size: u64, data: Data| {
        entries.push(Entry {
            name,
            size,
            data,
            offset: 0,
        })
    };
    let bytes = |add: &mut dyn FnMut(String, u64, Data), name: &str, b: Vec<u8>| {
        add(name.to_string(), b.len() as u64, Data::Bytes(b))
    };
    bytes(&mut add, "oci-layout", OCI_LAYOUT.to_vec());
    add("blobs/".into(), 0, Data::Directory);
    add("blobs/sha256/".into(), 0, Data::Directory);

    let mut written = HashSet::new();
    for image in images {
        for d in image.blobs() {
            if written.insert(d.digest.clone()) {
                add(blob_name(&d.digest), d.size, Data::Blob(d.digest.clone()));
            }
        }
        for m in image.manifests() {
            if written.insert(m.digest.clone()) {
                bytes(&mut add, &blob_name(&m.digest), m.bytes.clone());
            }
        }
    }
    bytes(
        &mut add,
        "index.json",
        to_json(&index(images, !docker_metadata)),
    );
    if docker_metadata {
        let manifest: Vec<DockerManifestEntry> = images
            .iter()
            .map(|image| DockerManifestEntry {
                config: blob_name(&image.config.digest),
                repo_tags: image.repo_tag().into_iter().collect(),
                layers: image.layers.iter().map(|l| blob_name(&l.digest)).collect(),
            })
            .collect();
        bytes(&mut add, "manifest.json", to_json(&manifest));

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
        bytes(&mut add, "repositories", to_json(&repositories));
    }

    let mut at = 0;
    for e in &mut entries {
        e.offset = at;
        at += BLOCK + e.size.div_ceil(BLOCK) * BLOCK;
    }
    Layout {
        entries,
        len: at + 2 * BLOCK,
    }
}

impl Layout {
    /// The archive's length in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Where each blob's data goes in the archive, and its size, by digest.
    pub fn slots(&self) -> HashMap<Digest, (u64, u64)> {
        self.entries
            .iter()
            .filter_map(|e| match &e.data {
                Data::Blob(d) => Some((d.clone(), (e.offset + BLOCK, e.size))),
                _ => None,
            })
            .collect()
    }

    /// The blobs to copy in, each once, in archive order.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.entries.iter().filter_map(|e| match &e.data {
            Data::Blob(d) => Some(d),
            _ => None,
        })
    }
}

/// Writes a [`Layout`] into a file: every header and small file at once,
/// then each blob at its own place whenever [`blob`](Self::blob) is called,
/// in any order. The bytes are the same whatever the order, and the same as
/// a tar written front to back (the gaps are zeros, as tar padding is).
pub struct LayoutWriter<'a> {
    file: File,
    path: &'a Path,
    /// Data offset, size and whether it is written, by digest.
    blobs: HashMap<Digest, (u64, u64, bool)>,
    /// Blobs written into their place while they downloaded.
    placement: Option<Arc<Placement>>,
}

impl<'a> LayoutWriter<'a> {
    pub fn create(mut file: File, path: &'a Path, layout: &Layout) -> Result<Self, PullError> {
        let err = |e| PullError::io("writing", path, e);
        file.set_len(layout.len).map_err(err)?;
        let mut blobs = HashMap::new();
        // Headers and small files in one buffered pass; blobs leave gaps.
        let mut out = BufWriter::with_capacity(1 << 16, &mut file);
        let mut at = 0;
        for e in &layout.entries {
            let (mode, kind) = match e.data {
                Data::Directory => (0o755, tar::EntryType::Directory),
                _ => (0o644, tar::EntryType::Regular),
            };
            let header = TarOut::header(&e.name, e.size, mode, kind).map_err(err)?;
            if at != e.offset {
                out.seek(SeekFrom::Start(e.offset)).map_err(err)?;
            }
            out.write_all(header.as_bytes()).map_err(err)?;
            at = e.offset + BLOCK;
            match &e.data {
                Data::Directory => {}
                Data::Bytes(b) => {
                    out.write_all(b).map_err(err)?;
                    at += b.len() as u64;
                }
                Data::Blob(d) => {
                    blobs.insert(d.clone(), (e.offset + BLOCK, e.size, false));
                }
            }
        }
        out.flush().map_err(err)?;
        drop(out);
        Ok(LayoutWriter {
            file,
            path,
            blobs,
            placement: None,
        })
    }

    /// Blobs that `placement` says are in their place are not copied.
    pub fn with_placement(mut self, placement: Option<Arc<Placement>>) -> Self {
        self.placement = placement;
        self
    }

    /// Copies a blob from the cache to its place, checking it on the way
    /// (see [`copy_blob_at`]). Digests the layout does not hold, and blobs
    /// already written, are ignored.
    pub fn blob(&mut self, cache: &Cache, digest: &Digest) -> Result<(), PullError> {
        let Some((at, size, done)) = self.blobs.get_mut(digest) else {
            return Ok(());
        };
        if *done {
            return Ok(());
        }
        if self.placement.as_ref().is_some_and(|p| p.is_placed(digest)) {
            *done = true;
            return Ok(());
        }
        copy_blob_at(&mut self.file, *at, self.path, cache, digest, *size)?;
        *done = true;
        Ok(())
    }

    /// Checks that every blob is in; the archive is then complete.
    pub fn finish(self) -> Result<File, PullError> {
        if let Some(missing) = self.blobs.iter().find(|(_, (_, _, done))| !done) {
            return Err(PullError::io(
                "writing",
                self.path,
                std::io::Error::other(format!("blob {} was never written", missing.0)),
            ));
        }
        Ok(self.file)
    }
}

/// Writes a [`Layout`] front to back into a stream, the same bytes as
/// [`LayoutWriter`] gives: blobs may be reported in any order, and each goes
/// out once every entry before it is written.
pub struct StreamWriter<'a> {
    out: &'a mut dyn Write,
    label: &'a Path,
    layout: &'a Layout,
    /// The first entry not yet written.
    next: usize,
    ready: HashSet<Digest>,
}

impl<'a> StreamWriter<'a> {
    pub fn new(out: &'a mut dyn Write, label: &'a Path, layout: &'a Layout) -> Self {
        StreamWriter {
            out,
            label,
            layout,
            next: 0,
            ready: HashSet::new(),
        }
    }

    /// A blob is in the cache: writes what can be written now.
    pub fn blob(&mut self, cache: &Cache, digest: &Digest) -> Result<(), PullError> {
        self.ready.insert(digest.clone());
        self.advance(cache)
    }

    /// Writes entries in order until one waits for a blob not yet in.
    fn advance(&mut self, cache: &Cache) -> Result<(), PullError> {
        let err = |e| PullError::io("writing", self.label, e);
        while let Some(e) = self.layout.entries.get(self.next) {
            if let Data::Blob(d) = &e.data
                && !self.ready.contains(d)
            {
                return Ok(());
            }
            let (mode, kind) = match e.data {
                Data::Directory => (0o755, tar::EntryType::Directory),
                _ => (0o644, tar::EntryType::Regular),
            };
            let header = TarOut::header(&e.name, e.size, mode, kind).map_err(err)?;
            self.out.write_all(header.as_bytes()).map_err(err)?;
            match &e.data {
                Data::Directory => {}
                Data::Bytes(b) => self.out.write_all(b).map_err(err)?,
                Data::Blob(d) => {
                    super::sink::copy_blob_into(self.out, self.label, cache, d, e.size)?
                }
            }
            let pad = (e.size.div_ceil(BLOCK) * BLOCK - e.size) as usize;
            self.out
                .write_all(&[0u8; BLOCK as usize][..pad])
                .map_err(err)?;
            self.next += 1;
        }
        Ok(())
    }

    /// Every blob was reported: writes the tar's end.
    pub fn finish(mut self, cache: &Cache) -> Result<(), PullError> {
        self.advance(cache)?;
        if let Some(e) = self.layout.entries.get(self.next) {
            return Err(PullError::io(
                "writing",
                self.label,
                std::io::Error::other(format!("{} was never written", e.name)),
            ));
        }
        (self.out.write_all(&[0u8; 2 * BLOCK as usize]))
            .map_err(|e| PullError::io("writing", self.label, e))
    }
}

/// Writes a whole `docker` or `oci` archive front to back into a stream,
/// from blobs already in the cache.
pub fn write_stream(
    out: &mut dyn Write,
    label: &Path,
    images: &[ArchiveImage],
    cache: &Cache,
    docker_metadata: bool,
) -> Result<(), PullError> {
    let layout = layout(images, docker_metadata);
    let mut writer = StreamWriter::new(out, label, &layout);
    for d in layout.blobs() {
        writer.blob(cache, d)?;
    }
    writer.finish(cache)
}

/// Writes a whole `docker` or `oci` archive from blobs already in the cache.
pub fn write(
    file: File,
    path: &Path,
    images: &[ArchiveImage],
    cache: &Cache,
    docker_metadata: bool,
) -> Result<(), PullError> {
    let layout = layout(images, docker_metadata);
    let mut writer = LayoutWriter::create(file, path, &layout)?;
    for d in layout.blobs() {
        writer.blob(cache, d)?;
    }
    writer.finish().map(drop)
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
            left_out: 0,
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

    /// A `docker` archive of `images` at `out` (`sync` as `--sync`).
    fn write_docker(
        out: &std::path::Path,
        images: &[ArchiveImage],
        cache: &Cache,
        sync: bool,
    ) -> Result<(), PullError> {
        archive::write(
            Format::Docker,
            &archive::Delivery::file(out, sync),
            images,
            cache,
            archive::LayerLimit::Default,
        )
        .map(drop)
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
        write_docker(&out, &[a.clone(), b.clone()], &cache, true).unwrap();

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
        write_docker(&out, &[img], &cache, false).unwrap();
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
        let err = write_docker(&out, std::slice::from_ref(&img), &cache, false).unwrap_err();
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
    fn a_link_in_place_of_a_cached_blob_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let img = image(&cache, "nginx", &[b"layer"]);
        // A file with the right bytes elsewhere, which its owner can change at will.
        let theirs = dir.path().join("theirs");
        std::fs::write(&theirs, b"layer").unwrap();
        let blob = cache.blob_path(&img.layers[0].digest);
        std::fs::remove_file(&blob).unwrap();
        std::os::unix::fs::symlink(&theirs, &blob).unwrap();
        let out = dir.path().join("x.tar");
        let err = write_docker(&out, &[img], &cache, false).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn identical_input_gives_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let img = image(&cache, "nginx", &[b"a", b"b"]);
        let (x, y) = (dir.path().join("x.tar"), dir.path().join("y.tar"));
        write_docker(&x, std::slice::from_ref(&img), &cache, false).unwrap();
        write_docker(&y, &[img], &cache, false).unwrap();
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    }

    /// The same archive, front to back with the `tar` crate's own writer.
    fn reference_tar(images: &[ArchiveImage], cache: &Cache, docker_metadata: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &layout(images, docker_metadata).entries {
            let (mode, kind) = match e.data {
                Data::Directory => (0o755, tar::EntryType::Directory),
                _ => (0o644, tar::EntryType::Regular),
            };
            let h = TarOut::header(&e.name, e.size, mode, kind).unwrap();
            let data = match &e.data {
                Data::Directory => Vec::new(),
                Data::Bytes(b) => b.clone(),
                Data::Blob(d) => std::fs::read(cache.blob_path(d)).unwrap(),
            };
            b.append(&h, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn blobs_in_any_order_give_the_bytes_of_a_tar_written_front_to_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        // Sizes around the 512-byte block: padding and gaps must be zeros.
        let l1 = vec![7u8; 511];
        let l2 = vec![8u8; 512];
        let l3 = vec![9u8; 1025];
        let img = image(&cache, "nginx:1.27", &[&l1, &l2, &l3, b""]);
        for docker_metadata in [true, false] {
            let expected = reference_tar(std::slice::from_ref(&img), &cache, docker_metadata);
            let layout = layout(std::slice::from_ref(&img), docker_metadata);
            assert_eq!(layout.len, expected.len() as u64);
            let path = dir.path().join(format!("rev-{docker_metadata}.tar"));
            let file = File::create(&path).unwrap();
            let mut w = LayoutWriter::create(file, &path, &layout).unwrap();
            let mut blobs: Vec<&Digest> = layout.blobs().collect();
            blobs.reverse();
            for d in blobs {
                w.blob(&cache, d).unwrap();
                // A second report of the same blob changes nothing.
                w.blob(&cache, d).unwrap();
            }
            w.finish().unwrap();
            assert!(
                std::fs::read(&path).unwrap() == expected,
                "{docker_metadata}"
            );
        }
    }

    #[test]
    fn a_stream_gives_the_same_bytes_whatever_order_blobs_come_in() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let (l1, l2) = (vec![7u8; 511], vec![9u8; 1025]);
        let img = image(&cache, "nginx:1.27", &[&l1, &l2, b""]);
        for docker_metadata in [true, false] {
            let expected = reference_tar(std::slice::from_ref(&img), &cache, docker_metadata);
            let layout = layout(std::slice::from_ref(&img), docker_metadata);
            let mut out = Vec::new();
            let mut w = StreamWriter::new(&mut out, Path::new("out"), &layout);
            let mut blobs: Vec<&Digest> = layout.blobs().collect();
            blobs.reverse();
            for d in blobs {
                w.blob(&cache, d).unwrap();
                w.blob(&cache, d).unwrap();
            }
            w.finish(&cache).unwrap();
            assert!(out == expected, "{docker_metadata}");
        }
        // A blob never reported: the stream does not end as a whole tar.
        let layout = layout(std::slice::from_ref(&img), true);
        let mut out = Vec::new();
        let mut w = StreamWriter::new(&mut out, Path::new("out"), &layout);
        w.blob(&cache, &img.config.digest).unwrap();
        let err = w.finish(&cache).unwrap_err().to_string();
        assert!(err.contains("never written"), "{err}");
    }

    #[test]
    fn a_layout_with_a_blob_missing_is_not_finished() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let img = image(&cache, "nginx", &[b"one", b"two"]);
        let layout = layout(std::slice::from_ref(&img), true);
        let path = dir.path().join("x.tar");
        let mut w = LayoutWriter::create(File::create(&path).unwrap(), &path, &layout).unwrap();
        w.blob(&cache, &img.config.digest).unwrap();
        w.blob(&cache, &img.layers[1].digest).unwrap();
        // Not part of this layout: ignored.
        w.blob(&cache, &Digest::of(b"elsewhere")).unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains(&img.layers[0].digest.to_string()), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn archives_are_readable_like_other_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let img = image(&cache, "nginx", &[b"l"]);
        let out = dir.path().join("x.tar");
        write_docker(&out, &[img], &cache, false).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        // The process umask decides the rest; the owner can always read and write.
        assert_eq!(mode & 0o600, 0o600);
        let umask = std::process::Command::new("sh")
            .args(["-c", "umask"])
            .output()
            .unwrap();
        let umask = u32::from_str_radix(String::from_utf8_lossy(&umask.stdout).trim(), 8).unwrap();
        assert_eq!(mode & 0o777, 0o666 & !umask);
    }
}
