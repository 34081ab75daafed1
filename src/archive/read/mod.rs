//! The one archive reader: what an archive or layout holds, whoever wrote
//! it, and its blobs read so that they check themselves. `verify` is built
//! on it, and so will `push` be (it needs the registry's manifests
//! byte-for-byte where a source has them).
//!
//! # Sources
//!
//! The container is told by what is there, never by the name:
//! - a directory is an OCI image layout (`-f oci-dir`, `skopeo copy oci:`);
//! - a file starting with the gzip (`1f 8b`) or zstd (`28 b5 2f fd`) magic is
//!   a compressed tar (`.tar.gz`, `.tar.zst`, `--compress`);
//! - any other file is a tar.
//!
//! Inside, the layout is told by its documents:
//! - `index.json` (with `oci-layout`): an OCI image layout
//!   ([`Layout::Oci`]: `-f oci`, `skopeo copy oci-archive:`); each entry is an
//!   image or, with `--platform all`, an index with its children. Names come
//!   from the `io.containerd.image.name` and
//!   `org.opencontainers.image.ref.name` annotations.
//! - `index.json` and `manifest.json` ([`Layout::OciDocker`]: `-f docker`,
//!   `docker save` of Docker 25 and later): the same, and `manifest.json`'s
//!   entries are matched to the images by their config; their `RepoTags`
//!   add names, and their `Layers` must be the manifest's.
//! - `manifest.json` alone ([`Layout::Docker`]: `-f legacy`, `docker save`
//!   up to Docker 24, `skopeo copy docker-archive:`): no registry manifest;
//!   a config (`<hex>.json`) and layer files (`<v1id>/layer.tar`, `<hex>.tar`),
//!   uncompressed as a rule, each checked through the config's `diff_ids`.
//!
//! # Reading
//!
//! An uncompressed tar's headers are read once into an index of names,
//! offsets and sizes, and every entry is then read in place. A compressed
//! tar cannot be read in place, so it is read front to back twice: the first
//! pass indexes it and keeps the small JSON documents in memory (manifests,
//! configs, `index.json`, `manifest.json`: at most 256 MiB in all); the
//! second pass ([`Source::visit`]) hands over the blobs wanted as they come.
//! [`Source::open_blob`] on a compressed tar decompresses up to the blob
//! each time: right for one blob, slow for many.
//!
//! Every input is bounded: entry count and name length, documents (4 MiB
//! for manifests and indexes, 64 MiB for configs, 512 MiB for all of them),
//! index entries, and no entry name may leave the archive (`..`, absolute
//! names, links that lead outside); a name appears once. A split archive
//! (`.part-000`, …) is not read yet: its parts laid end to end would be one
//! more [`store::ReadAt`].

mod blob;
mod layout;
mod store;
mod tar_index;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use blob::{BlobError, BlobReader, LayerError, Uncompressed, sniff, uncompressed_digest};
pub use tar_index::{Found, Lookup};

use crate::digest::Digest;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::text::escape_untrusted;

/// Compression of a whole archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WholeCompression {
    Gzip,
    Zstd,
}

impl WholeCompression {
    /// The compression the first bytes of a file show, if any.
    pub fn sniff(head: &[u8]) -> Option<WholeCompression> {
        match blob::sniff(head) {
            crate::media_type::Compression::Gzip => Some(WholeCompression::Gzip),
            crate::media_type::Compression::Zstd => Some(WholeCompression::Zstd),
            crate::media_type::Compression::None => None,
        }
    }
}

/// What holds the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Directory,
    Tar,
    CompressedTar(WholeCompression),
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Container::Directory => "directory",
            Container::Tar => "tar",
            Container::CompressedTar(WholeCompression::Gzip) => "gzip-compressed tar",
            Container::CompressedTar(WholeCompression::Zstd) => "zstd-compressed tar",
        })
    }
}

/// How the images are described (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Oci,
    OciDocker,
    Docker,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Oci => "OCI layout",
            Layout::OciDocker => "OCI layout with manifest.json",
            Layout::Docker => "Docker archive",
        })
    }
}

/// Why a source cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: not a tar, a gzip- or zstd-compressed tar, or a layout directory: {detail}",
        .path.display()
    )]
    NotAnArchive { path: PathBuf, detail: String },
    #[error("{}: the archive is truncated: {detail}", .path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("{}: {detail}", .path.display())]
    Malformed { path: PathBuf, detail: String },
    #[error(
        "{}: neither index.json nor manifest.json: not an image archive or layout",
        .path.display()
    )]
    NoImages { path: PathBuf },
    #[error("reading {name}: {source}")]
    Entry {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which part of an image a [`Problem`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Index,
    Manifest,
    Config,
    Layer,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Index => "index",
            Part::Manifest => "manifest",
            Part::Config => "config",
            Part::Layer => "layer",
        })
    }
}

/// Something wrong with one image of a source. Entry names and details
/// are the source's text, escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{part} {entry} is missing{}", why(.detail))]
    Missing {
        part: Part,
        entry: String,
        detail: String,
    },
    #[error("{part} {entry}: {detail}")]
    Invalid {
        part: Part,
        entry: String,
        detail: String,
    },
    #[error("{part} {entry}: expected {expected}, found {found}")]
    Digest {
        part: Part,
        entry: String,
        expected: Digest,
        found: Digest,
    },
    #[error("{part} {entry}: expected {expected} bytes, found {found}")]
    Size {
        part: Part,
        entry: String,
        expected: u64,
        found: u64,
    },
    #[error(
        "layer {entry}: its uncompressed content is {found}, but the config's diff_id is {expected}"
    )]
    DiffId {
        entry: String,
        expected: Digest,
        found: Digest,
    },
    #[error("the image has {layers} layers but its config lists {diff_ids} diff_ids")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("name {name:?} does not parse: {detail}")]
    Name { name: String, detail: String },
    #[error("{0}")]
    Layout(String),
}

fn why(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl Problem {
    /// `entry` (the source's text) escaped, with the digest it should have.
    fn entry_name(entry: &str) -> String {
        escape_untrusted(entry)
    }

    pub fn invalid(part: Part, entry: &str, detail: impl std::fmt::Display) -> Problem {
        Problem::Invalid {
            part,
            entry: Problem::entry_name(entry),
            detail: escape_untrusted(&detail.to_string()),
        }
    }

    /// A lookup of `entry` that failed: missing, or not a file of the source.
    pub fn lookup(part: Part, entry: &str, e: &Lookup) -> Problem {
        match e {
            Lookup::Missing => Problem::Missing {
                part,
                entry: Problem::entry_name(entry),
                detail: String::new(),
            },
            other => Problem::invalid(part, entry, other),
        }
    }

    /// A blob that read wrongly (the [`BlobError`] of a [`BlobReader`]).
    pub fn blob(part: Part, entry: &str, e: &BlobError) -> Problem {
        let entry = Problem::entry_name(entry);
        match e.clone() {
            BlobError::Size { expected, found } => Problem::Size {
                part,
                entry,
                expected,
                found,
            },
            BlobError::Digest { expected, found } => Problem::Digest {
                part,
                entry,
                expected,
                found,
            },
            e @ BlobError::TooLong { .. } => Problem::Invalid {
                part,
                entry,
                detail: e.to_string(),
            },
        }
    }
}

/// A blob of the source, with what it must be where that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its name in the source (`blobs/sha256/<hex>`, `<v1id>/layer.tar`).
    pub entry: String,
    pub digest: Option<Digest>,
    pub size: Option<u64>,
}

impl Blob {
    /// `blobs/sha256/<hex>` of a descriptor.
    pub fn oci(digest: &Digest, size: u64) -> Blob {
        Blob {
            entry: format!("blobs/sha256/{}", digest.hex()),
            digest: Some(digest.clone()),
            size: Some(size),
        }
    }
}

/// A JSON document of the source (manifest, index), verified and in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub blob: Blob,
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// An image config: in memory when it could be read and is what its
/// descriptor (or its file name) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub blob: Blob,
    pub bytes: Option<Vec<u8>>,
    pub diff_ids: Vec<Digest>,
    pub platform: Option<Platform>,
}

/// A layer: a blob a manifest describes (digest, size, media type), or a
/// file `manifest.json` names (`<v1id>/layer.tar`, uncompressed as a rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub blob: Blob,
    pub media_type: Option<String>,
    /// The config's diff_id at the layer's place.
    pub diff_id: Option<Digest>,
}

/// An image with its registry manifest byte-for-byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifested {
    pub manifest: Document,
    pub config: Config,
    pub layers: Vec<Layer>,
    /// The config's platform, else the index entry's.
    pub platform: Option<Platform>,
}

/// One entry of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub blob: Blob,
    pub media_type: String,
    pub platform: Option<Platform>,
    /// The `vnd.docker.reference.type` annotation (attestations).
    pub reference_type: Option<String>,
    /// `None` when the source does not hold it, or it cannot be read.
    pub image: Option<Manifested>,
}

/// What an image of the source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Manifest(Box<Manifested>),
    /// A multi-platform index and the images it lists.
    Index {
        index: Document,
        children: Vec<Child>,
    },
    /// No registry manifest: a config and layer files (`manifest.json` alone).
    Loose {
        config: Config,
        layers: Vec<Layer>,
    },
    /// The manifest or index an entry points at cannot be read.
    Unreadable {
        blob: Blob,
    },
}

/// One name of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// As the source gives it (`nginx:1.27`, a full reference, a tag alone).
    pub given: String,
    /// Parsed and normalised, when it is a reference.
    pub reference: Option<Reference>,
}

/// One image of a source (an `index.json` or `manifest.json` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub names: Vec<Name>,
    pub content: Content,
    /// What is wrong with its description, found while reading it.
    pub problems: Vec<Problem>,
}

impl Image {
    /// The name to show: the first that is a reference, in full
    /// (`docker.io/library/nginx:1.27`), else the first given, escaped.
    pub fn display_name(&self) -> Option<String> {
        self.names
            .iter()
            .find_map(|n| n.reference.as_ref().map(Reference::to_string))
            .or_else(|| self.names.first().map(|n| escape_untrusted(&n.given)))
    }

    /// The digest that names the image: its index's or manifest's, or for
    /// an image without a manifest its config's (the image ID).
    pub fn digest(&self) -> Option<&Digest> {
        match &self.content {
            Content::Manifest(m) => Some(&m.manifest.digest),
            Content::Index { index, .. } => Some(&index.digest),
            Content::Loose { config, .. } => config.blob.digest.as_ref(),
            Content::Unreadable { blob } => blob.digest.as_ref(),
        }
    }

    /// Every image with its config and layers (an index's children that
    /// are present, or the image itself).
    pub fn parts(&self) -> Vec<(&Config, &[Layer])> {
        match &self.content {
            Content::Manifest(m) => vec![(&m.config, &m.layers)],
            Content::Index { children, .. } => children
                .iter()
                .filter_map(|c| c.image.as_ref())
                .map(|m| (&m.config, m.layers.as_slice()))
                .collect(),
            Content::Loose { config, layers } => vec![(config, layers)],
            Content::Unreadable { .. } => Vec::new(),
        }
    }

    /// `linux/amd64`; an index's platforms that the source holds,
    /// comma-separated (attestations left out); `unknown` when nothing says.
    pub fn platform(&self) -> String {
        let shown = |p: &Option<Platform>| {
            p.as_ref().map_or_else(
                || "unknown".to_string(),
                |p| escape_untrusted(&p.to_string()),
            )
        };
        match &self.content {
            Content::Manifest(m) => shown(&m.platform),
            Content::Loose { config, .. } => shown(&config.platform),
            Content::Index { children, .. } => {
                let all: Vec<String> = children
                    .iter()
                    // The platforms the source holds (a partial index
                    // lists more).
                    .filter(|c| c.reference_type.is_none() && c.image.is_some())
                    .map(|c| {
                        shown(
                            &c.image
                                .as_ref()
                                .and_then(|m| m.platform.clone())
                                .or(c.platform.clone()),
                        )
                    })
                    .collect();
                if all.is_empty() {
                    "unknown".into()
                } else {
                    all.join(",")
                }
            }
            Content::Unreadable { .. } => "unknown".into(),
        }
    }
}

/// An archive or layout, opened: its images, and its blobs on demand.
pub struct Source {
    pub path: PathBuf,
    pub container: Container,
    pub layout: Layout,
    pub images: Vec<Image>,
    /// What is wrong with the source as a whole (not with one image).
    pub problems: Vec<Problem>,
    store: std::sync::Arc<store::Store>,
}

impl Source {
    /// Opens `path` and reads what it holds: the index, every manifest and
    /// config (verified), and where each layer is. Layers are not read.
    pub fn open(path: &Path) -> Result<Source, ReadError> {
        let store = store::Store::open(path)?;
        let container = match &store {
            store::Store::Dir(_) => Container::Directory,
            store::Store::Tar { .. } => Container::Tar,
            store::Store::Compressed { compression, .. } => Container::CompressedTar(*compression),
        };
        let read = layout::read(&store, path)?;
        let store = std::sync::Arc::new(store);
        Ok(Source {
            path: path.to_path_buf(),
            container,
            layout: read.layout,
            images: read.images,
            problems: read.problems,
            store,
        })
    }

    /// The file of the source `blob` names (links inside an archive
    /// followed): its own name and size.
    pub fn locate(&self, blob: &Blob) -> Result<Found, Lookup> {
        self.store.locate(&blob.entry)
    }

    /// A reader of `blob` that fails unless the blob has the size and
    /// digest expected (see [`BlobReader`]).
    pub fn open_blob(&self, blob: &Blob) -> Result<BlobReader<Box<dyn Read + '_>>, ReadError> {
        self.checked(blob, |found| self.store.open_entry(found))
    }

    /// [`open_blob`](Self::open_blob) for a reader that owns what it
    /// reads from (it may go to another thread). Not for compressed
    /// archives: see [`decompress_into`](Self::decompress_into).
    pub fn open_blob_owned(
        &self,
        blob: &Blob,
    ) -> Result<BlobReader<Box<dyn Read + Send>>, ReadError> {
        self.checked(blob, |found| self.store.open_entry_owned(found, 0))
    }

    /// The raw bytes of `blob` from `offset` on, for a reader that owns
    /// what it reads from, with no check of their size or digest: for a
    /// caller that checks them itself (an upload hashes what it sends, and
    /// resumes without reading the prefix again). Not for compressed
    /// archives.
    pub fn open_blob_unchecked_at(
        &self,
        blob: &Blob,
        offset: u64,
    ) -> Result<Box<dyn Read + Send>, ReadError> {
        let found = self.find(blob)?;
        (self.store.open_entry_owned(&found, offset)).map_err(|e| entry_error(blob, e))
    }

    /// [`locate`](Self::locate), failing as a read of `blob` does.
    fn find(&self, blob: &Blob) -> Result<Found, ReadError> {
        self.locate(blob).map_err(|e| {
            let e = std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string());
            entry_error(blob, e)
        })
    }

    /// `blob` located and opened with `open`, behind a [`BlobReader`].
    fn checked<R: Read>(
        &self,
        blob: &Blob,
        open: impl FnOnce(&Found) -> std::io::Result<R>,
    ) -> Result<BlobReader<R>, ReadError> {
        let found = self.find(blob)?;
        let reader = open(&found).map_err(|e| entry_error(blob, e))?;
        Ok(BlobReader::new(
            reader,
            blob.digest.clone(),
            blob.size.or(Some(found.size)),
        ))
    }

    /// For a compressed archive: its tar, decompressed, written to `out`
    /// (`None` for any other source).
    pub fn decompress_into(&self, out: &mut dyn std::io::Write) -> std::io::Result<Option<u64>> {
        self.store.decompress_into(out)
    }

    /// Hands each of `entries` (names as [`locate`](Self::locate) gives
    /// them) to `f` once, in the order cheapest for the source: in one
    /// pass for a compressed archive. Entries not there are skipped.
    pub fn visit(
        &self,
        entries: &[String],
        f: &mut dyn FnMut(&str, &mut dyn Read) -> std::io::Result<()>,
    ) -> Result<(), ReadError> {
        self.store.visit(entries, f)
    }
}

/// A failure to read `blob` of a source.
fn entry_error(blob: &Blob, source: std::io::Error) -> ReadError {
    ReadError::Entry {
        name: escape_untrusted(&blob.entry),
        source,
    }
}

#[cfg(test)]
mod tests;
