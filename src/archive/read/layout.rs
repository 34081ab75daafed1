//! What a source holds, from its documents: `index.json` (an OCI layout),
//! `manifest.json` (Docker's), or both, into [`Image`]s. Every manifest and
//! config is read here (bounded, and checked against its descriptor); what
//! does not fit is a [`Problem`] of its image, so one bad image does not hide
//! the others. Only a source whose `index.json` or `manifest.json` cannot be
//! read at all is an error.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::store::Store;
use super::tar_index::normalise;
use super::{
    Blob, Child, Config, Content, Document, Image, Layer, Layout, Manifested, Name, Part, Problem,
    ReadError,
};
use crate::digest::Digest;
use crate::media_type::{self, ManifestKind};
use crate::platform::Platform;
use crate::reference::{DOCKER_HUB, Reference, valid_tag};
use crate::resolve::{Decoded, MAX_CONFIG_SIZE, MAX_INDEX_ENTRIES};
use crate::text::escape_untrusted;

/// Manifests, indexes, `index.json` and `manifest.json`: at most this big.
pub const MAX_DOCUMENT: u64 = crate::registry::client::MAX_MANIFEST_BYTES as u64;
/// Every document and config of a source read into memory: at most this much.
pub const MAX_DOCUMENTS: u64 = 512 << 20;

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What [`read`] found.
pub struct Read {
    pub layout: Layout,
    pub images: Vec<Image>,
    pub problems: Vec<Problem>,
}

#[derive(Deserialize)]
struct RawIndex {
    manifests: Vec<RawEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl RawPlatform {
    fn platform(&self) -> Option<Platform> {
        (!self.os.is_empty() && !self.architecture.is_empty())
            .then(|| Platform::new(&self.os, &self.architecture, self.variant.as_deref()))
    }
}

/// One entry of Docker's `manifest.json`.
#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

struct Ctx<'a> {
    store: &'a Store,
    path: &'a Path,
    /// Bytes of documents and configs read so far.
    used: Cell<u64>,
}

/// Reads the images `store` holds (`path` names it in errors).
pub fn read(store: &Store, path: &Path) -> Result<Read, ReadError> {
    let ctx = Ctx {
        store,
        path,
        used: Cell::new(0),
    };
    let docker = if store.contains("manifest.json") {
        Some(docker_entries(&ctx)?)
    } else {
        None
    };
    let mut problems = Vec::new();
    let (layout, mut images) = match (store.contains("index.json"), &docker) {
        (true, _) => {
            if !store.contains("oci-layout") {
                problems.push(Problem::Layout(
                    "the layout has index.json but no oci-layout file".into(),
                ));
            }
            let layout = match docker {
                Some(_) => Layout::OciDocker,
                None => Layout::Oci,
            };
            (layout, oci_images(&ctx)?)
        }
        (false, Some(_)) => (Layout::Docker, Vec::new()),
        (false, None) => {
            return Err(ReadError::NoImages {
                path: path.to_path_buf(),
            });
        }
    };
    if let Some(entries) = docker {
        for entry in entries {
            merge_docker(&ctx, &mut images, entry);
        }
    }
    Ok(Read {
        layout,
        images,
        problems,
    })
}

impl Ctx<'_> {
    fn malformed(&self, detail: String) -> ReadError {
        ReadError::Malformed {
            path: self.path.to_path_buf(),
            detail,
        }
    }

    /// `index.json` or `manifest.json`, whole; any failure is the source's.
    fn metadata(&self, name: &str) -> Result<Vec<u8>, ReadError> {
        let found = self
            .store
            .locate(name)
            .map_err(|e| self.malformed(format!("{name}: {e}")))?;
        if found.size > MAX_DOCUMENT {
            return Err(self.malformed(format!(
                "{name} has {} bytes, more than the {MAX_DOCUMENT} it may have",
                found.size
            )));
        }
        self.used.set(self.used.get() + found.size);
        self.store
            .read_small(&found)
            .map_err(|e| self.malformed(format!("{name}: {e}")))
    }

    /// A blob read whole (at most `limit` bytes), checked against what
    /// `blob` expects; what was not known (a loose config's digest, a
    /// size) is filled in.
    fn read_blob(&self, part: Part, blob: &mut Blob, limit: u64) -> Result<Vec<u8>, Problem> {
        let found = self
            .store
            .locate(&blob.entry)
            .map_err(|e| Problem::lookup(part, &blob.entry, &e))?;
        if let Some(size) = blob.size
            && size != found.size
        {
            return Err(Problem::blob(
                part,
                &blob.entry,
                &super::BlobError::Size {
                    expected: size,
                    found: found.size,
                },
            ));
        }
        if found.size > limit {
            return Err(Problem::invalid(
                part,
                &blob.entry,
                format!(
                    "it has {} bytes, more than the {limit} a {part} may have",
                    found.size
                ),
            ));
        }
        let used = self.used.get() + found.size;
        if used > MAX_DOCUMENTS {
            return Err(Problem::invalid(
                part,
                &blob.entry,
                format!("the source's manifests and configs exceed {MAX_DOCUMENTS} bytes in all"),
            ));
        }
        self.used.set(used);
        let bytes = self
            .store
            .read_small(&found)
            .map_err(|e| Problem::invalid(part, &blob.entry, e))?;
        let digest = Digest::of(&bytes);
        match &blob.digest {
            Some(expected) if *expected != digest => {
                return Err(Problem::blob(
                    part,
                    &blob.entry,
                    &super::BlobError::Digest {
                        expected: expected.clone(),
                        found: digest,
                    },
                ));
            }
            Some(_) => {}
            None => blob.digest = Some(digest),
        }
        blob.size = Some(found.size);
        Ok(bytes)
    }

    /// A manifest or index, read and checked.
    fn document(&self, part: Part, mut blob: Blob, media_type: &str) -> Result<Document, Problem> {
        let bytes = self.read_blob(part, &mut blob, MAX_DOCUMENT)?;
        let declared = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string));
        Ok(Document {
            digest: blob.digest.clone().unwrap_or_else(|| Digest::of(&bytes)),
            blob,
            media_type: declared.unwrap_or_else(|| media_type.to_string()),
            bytes,
        })
    }

    /// A config: read, checked and parsed; on any problem, without bytes.
    fn config(&self, mut blob: Blob, problems: &mut Vec<Problem>) -> Config {
        let mut config = Config {
            blob: blob.clone(),
            bytes: None,
            diff_ids: Vec::new(),
            platform: None,
        };
        let bytes = match self.read_blob(Part::Config, &mut blob, MAX_CONFIG_SIZE) {
            Ok(b) => b,
            Err(p) => {
                problems.push(p);
                return config;
            }
        };
        config.blob = blob;
        let value: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                problems.push(Problem::invalid(
                    Part::Config,
                    &config.blob.entry,
                    format!("not JSON: {e}"),
                ));
                return config;
            }
        };
        match diff_ids(&value) {
            Ok(ids) => config.diff_ids = ids,
            Err(e) => problems.push(Problem::invalid(Part::Config, &config.blob.entry, e)),
        }
        config.platform = serde_json::from_value::<RawPlatform>(value)
            .ok()
            .and_then(|p| p.platform());
        config.bytes = Some(bytes);
        config
    }
}

/// The config's `rootfs.diff_ids`, every one a valid digest.
fn diff_ids(config: &Value) -> Result<Vec<Digest>, String> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or("it has no rootfs.diff_ids")?;
    ids.iter()
        .map(|v| {
            let s = v.as_str().ok_or("a diff_id is not a string")?;
            s.parse::<Digest>()
                .map_err(|e| format!("diff_id {}: {e}", escape_untrusted(s)))
        })
        .collect()
}

/// The images of `index.json`.
fn oci_images(ctx: &Ctx<'_>) -> Result<Vec<Image>, ReadError> {
    let bytes = ctx.metadata("index.json")?;
    let index: RawIndex = serde_json::from_slice(&bytes).map_err(|e| {
        ctx.malformed(format!(
            "index.json is not an OCI index: {}",
            escape_untrusted(&e.to_string())
        ))
    })?;
    if index.manifests.len() > MAX_INDEX_ENTRIES {
        return Err(ctx.malformed(format!(
            "index.json lists {} manifests, more than the {MAX_INDEX_ENTRIES} an index may have",
            index.manifests.len()
        )));
    }
    Ok(index
        .manifests
        .into_iter()
        .map(|e| top_image(ctx, e))
        .collect())
}

/// The blob an index entry points at.
fn entry_blob(part: Part, e: &RawEntry) -> Result<Blob, Problem> {
    let digest = e
        .digest
        .parse::<Digest>()
        .map_err(|err| Problem::invalid(part, &e.digest, format!("not a usable digest: {err}")))?;
    if e.size > MAX_DOCUMENT {
        return Err(Problem::invalid(
            part,
            &e.digest,
            format!(
                "the index says it has {} bytes, more than the {MAX_DOCUMENT} a manifest may have",
                e.size
            ),
        ));
    }
    Ok(Blob::oci(&digest, e.size))
}

fn part_of(media_type: &str) -> Part {
    match media_type {
        media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => Part::Index,
        _ => Part::Manifest,
    }
}

/// One `index.json` entry: its names, and the image or index it points at.
fn top_image(ctx: &Ctx<'_>, e: RawEntry) -> Image {
    let mut problems = Vec::new();
    let names = oci_names(&e.annotations, &mut problems);
    let part = part_of(&e.media_type);
    let platform = e.platform.as_ref().and_then(RawPlatform::platform);
    let content = match entry_blob(part, &e) {
        Err(p) => {
            problems.push(p);
            Content::Unreadable {
                blob: Blob {
                    entry: e.digest.clone(),
                    digest: None,
                    size: None,
                },
            }
        }
        Ok(blob) => match ctx.document(part, blob.clone(), &e.media_type) {
            Err(p) => {
                problems.push(p);
                Content::Unreadable { blob }
            }
            Ok(doc) => content_of(ctx, doc, platform, &mut problems),
        },
    };
    Image {
        names,
        content,
        problems,
    }
}

/// What a document is: an image, or an index with its children.
fn content_of(
    ctx: &Ctx<'_>,
    doc: Document,
    platform: Option<Platform>,
    problems: &mut Vec<Problem>,
) -> Content {
    let kind = serde_json::from_slice::<Value>(&doc.bytes)
        .map_err(|e| format!("not JSON: {e}"))
        .and_then(|v| {
            media_type::classify(Some(&doc.media_type), &v)
                .map_err(|e| format!("not an image manifest or index: {e}"))
        });
    match kind {
        Ok(ManifestKind::Index) => {
            let children = children(ctx, &doc, problems);
            Content::Index {
                index: doc,
                children,
            }
        }
        Ok(ManifestKind::Image) => match manifested(ctx, doc.clone(), platform, problems) {
            Some(m) => Content::Manifest(Box::new(m)),
            None => Content::Unreadable { blob: doc.blob },
        },
        Ok(ManifestKind::Schema1) => {
            problems.push(Problem::invalid(
                Part::Manifest,
                &doc.blob.entry,
                "a Docker schema 1 manifest, which is not supported",
            ));
            Content::Unreadable { blob: doc.blob }
        }
        Err(detail) => {
            problems.push(Problem::invalid(Part::Manifest, &doc.blob.entry, detail));
            Content::Unreadable { blob: doc.blob }
        }
    }
}

/// Every entry of an index, with its image when the source holds it.
fn children(ctx: &Ctx<'_>, index: &Document, problems: &mut Vec<Problem>) -> Vec<Child> {
    let raw: RawIndex = match serde_json::from_slice(&index.bytes) {
        Ok(r) => r,
        Err(e) => {
            problems.push(Problem::invalid(Part::Index, &index.blob.entry, e));
            return Vec::new();
        }
    };
    if raw.manifests.len() > MAX_INDEX_ENTRIES {
        problems.push(Problem::invalid(
            Part::Index,
            &index.blob.entry,
            format!(
                "it lists {} manifests, more than the {MAX_INDEX_ENTRIES} an index may have",
                raw.manifests.len()
            ),
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for mut e in raw.manifests {
        let blob = match entry_blob(Part::Manifest, &e) {
            Ok(b) => b,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        let platform = e.platform.as_ref().and_then(RawPlatform::platform);
        let reference_type = e.annotations.remove("vnd.docker.reference.type");
        let image = if !ctx.store.contains(&blob.entry) {
            // A partial index, as an engine with the containerd image store
            // saves one: only some platforms' images are there.
            None
        } else if part_of(&e.media_type) == Part::Index {
            problems.push(Problem::invalid(
                Part::Index,
                &blob.entry,
                "an index inside an index is not supported",
            ));
            None
        } else {
            match ctx.document(Part::Manifest, blob.clone(), &e.media_type) {
                Ok(doc) => manifested(ctx, doc, platform.clone(), problems),
                Err(p) => {
                    problems.push(p);
                    None
                }
            }
        };
        out.push(Child {
            blob,
            media_type: e.media_type,
            platform,
            reference_type,
            image,
        });
    }
    if !out.is_empty() && out.iter().all(|c| !ctx.store.contains(&c.blob.entry)) {
        problems.push(Problem::invalid(
            Part::Index,
            &index.blob.entry,
            "none of the images it lists is in the source",
        ));
    }
    out
}

/// An image manifest with its config and layers.
fn manifested(
    ctx: &Ctx<'_>,
    doc: Document,
    platform: Option<Platform>,
    problems: &mut Vec<Problem>,
) -> Option<Manifested> {
    let (config, layers) = match crate::resolve::decode(&doc.bytes, Some(&doc.media_type)) {
        Ok(Decoded::Image { config, layers, .. }) => (config, layers),
        Ok(_) => {
            problems.push(Problem::invalid(
                Part::Manifest,
                &doc.blob.entry,
                "not an image manifest",
            ));
            return None;
        }
        Err(e) => {
            problems.push(Problem::invalid(
                Part::Manifest,
                &doc.blob.entry,
                format!("{}: {}", e.what, e.detail),
            ));
            return None;
        }
    };
    let config = ctx.config(Blob::oci(&config.digest, config.size), problems);
    let layers: Vec<Layer> = layers
        .iter()
        .enumerate()
        .map(|(i, d)| Layer {
            blob: Blob::oci(&d.digest, d.size),
            media_type: Some(d.media_type.clone()),
            diff_id: config.diff_ids.get(i).cloned(),
        })
        .collect();
    check_layer_count(&config, layers.len(), problems);
    Some(Manifested {
        manifest: doc,
        platform: config.platform.clone().or(platform),
        config,
        layers,
    })
}

fn check_layer_count(config: &Config, layers: usize, problems: &mut Vec<Problem>) {
    if config.bytes.is_some() && config.diff_ids.len() != layers {
        problems.push(Problem::LayerCount {
            layers,
            diff_ids: config.diff_ids.len(),
        });
    }
}

/// The names an index entry's annotations give: the containerd name (a
/// full reference) and `ref.name` (a full reference, or a tag alone).
fn oci_names(annotations: &HashMap<String, String>, problems: &mut Vec<Problem>) -> Vec<Name> {
    let mut names = Vec::new();
    if let Some(full) = annotations.get(CONTAINERD_NAME) {
        add_reference(&mut names, full, problems);
    }
    if let Some(given) = annotations.get(REF_NAME) {
        let is_tag = !given.contains(['/', ':', '@']);
        if !is_tag {
            add_reference(&mut names, given, problems);
        } else if !valid_tag(given) {
            problems.push(Problem::Name {
                name: escape_untrusted(given),
                detail: "neither a reference nor a tag".into(),
            });
        } else if !names
            .iter()
            .any(|n| n.reference.as_ref().and_then(|r| r.tag.as_deref()) == Some(given))
        {
            names.push(Name {
                given: given.clone(),
                reference: None,
            });
        }
    }
    names
}

/// Adds `given` as a reference, unless it is there already; a name that
/// does not parse is a problem.
fn add_reference(names: &mut Vec<Name>, given: &str, problems: &mut Vec<Problem>) {
    match Reference::parse(given, DOCKER_HUB) {
        Ok(r) => {
            if !names.iter().any(|n| n.reference.as_ref() == Some(&r)) {
                names.push(Name {
                    given: given.to_string(),
                    reference: Some(r),
                });
            }
        }
        Err(e) => problems.push(Problem::Name {
            name: escape_untrusted(given),
            detail: escape_untrusted(&e.to_string()),
        }),
    }
}

/// `manifest.json`'s entries.
fn docker_entries(ctx: &Ctx<'_>) -> Result<Vec<DockerEntry>, ReadError> {
    let bytes = ctx.metadata("manifest.json")?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(&bytes).map_err(|e| {
        ctx.malformed(format!(
            "manifest.json is not Docker's list of images: {}",
            escape_untrusted(&e.to_string())
        ))
    })?;
    if entries.len() > MAX_INDEX_ENTRIES {
        return Err(ctx.malformed(format!(
            "manifest.json lists {} images, more than the {MAX_INDEX_ENTRIES} it may",
            entries.len()
        )));
    }
    Ok(entries)
}

/// The digest a file's name promises: `blobs/sha256/<hex>`, or `<hex>.json`
/// and `<hex>.tar` at the top (configs and skopeo's layers).
fn digest_from_name(entry: &str) -> Option<Digest> {
    let hex = entry.strip_prefix("blobs/sha256/").or_else(|| {
        entry
            .strip_suffix(".json")
            .or_else(|| entry.strip_suffix(".tar"))
            .filter(|h| !h.contains('/'))
    })?;
    format!("sha256:{hex}").parse().ok()
}

/// Adds a `manifest.json` entry: to the OCI image with the same config
/// (its names, and its layers must agree), or as an image of its own.
fn merge_docker(ctx: &Ctx<'_>, images: &mut Vec<Image>, entry: DockerEntry) {
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for tag in entry.repo_tags.iter().flatten() {
        add_reference(&mut names, tag, &mut problems);
    }
    let config_entry = normalise(&entry.config).unwrap_or_else(|_| entry.config.clone());
    let layer_entries: Vec<String> = entry
        .layers
        .iter()
        .map(|l| normalise(l).unwrap_or_else(|_| l.clone()))
        .collect();
    let layers_of = |image: &Image| -> Option<Vec<String>> {
        image
            .parts()
            .into_iter()
            .find(|(c, _)| c.blob.entry == config_entry)
            .map(|(_, layers)| layers.iter().map(|l| l.blob.entry.clone()).collect())
    };
    // Images with the same config and layers (one pushed with Docker and with
    // OCI media types, say) are told apart by the names they already have.
    let candidates: Vec<usize> = (0..images.len())
        .filter(|&i| layers_of(&images[i]).is_some())
        .collect();
    let shares_a_name = |i: &&usize| {
        (images[**i].names.iter()).any(|m| names.iter().any(|n: &Name| n.reference == m.reference))
    };
    let picked = match candidates.as_slice() {
        [] => None,
        [one] => Some(*one),
        many => many
            .iter()
            .find(shares_a_name)
            .or_else(|| many.iter().find(|i| images[**i].names.is_empty()))
            .or(many.first())
            .copied(),
    };
    if let Some(i) = picked {
        let layers = layers_of(&images[i]).unwrap_or_default();
        let image = &mut images[i];
        if layers != layer_entries {
            image.problems.push(Problem::Layout(format!(
                "manifest.json lists other layers for config {} than its manifest does",
                escape_untrusted(&config_entry)
            )));
        }
        for n in names {
            if !image.names.iter().any(|m| m.reference == n.reference) {
                image.names.push(n);
            }
        }
        image.problems.extend(problems);
        return;
    }
    images.push(loose(ctx, names, problems, &config_entry, layer_entries));
}

/// An image `manifest.json` describes alone: a config and layer files.
fn loose(
    ctx: &Ctx<'_>,
    names: Vec<Name>,
    mut problems: Vec<Problem>,
    config_entry: &str,
    layer_entries: Vec<String>,
) -> Image {
    let config = ctx.config(
        Blob {
            entry: config_entry.to_string(),
            digest: digest_from_name(config_entry),
            size: None,
        },
        &mut problems,
    );
    let layers: Vec<Layer> = layer_entries
        .into_iter()
        .enumerate()
        .map(|(i, l)| Layer {
            blob: Blob {
                digest: digest_from_name(&l),
                entry: l,
                size: None,
            },
            media_type: None,
            diff_id: config.diff_ids.get(i).cloned(),
        })
        .collect();
    check_layer_count(&config, layers.len(), &mut problems);
    Image {
        names,
        content: Content::Loose { config, layers },
        problems,
    }
}
