//! `inspect IMAGE`: what a reference resolves to, without downloading a
//! layer. The manifest (or index and every manifest it lists, fetched
//! concurrently), and for each chosen platform its config (through the
//! cache, so a later pull has it): created time, os/arch, the layers with
//! their media types and sizes, the download size and how much of it the
//! cache already holds. Attestations and other entries that are not images
//! to run are listed as what they are, never as platforms.
//!
//! Everything the registry sends is bounded by `resolve`'s limits and shown
//! escaped; digests and sizes of the listed manifests are checked.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::PullError;
use crate::fetch::Fetcher;
use crate::media_type::{self, Compression};
use crate::platform::{self, IndexEntry, Platform};
use crate::reference::Reference;
use crate::registry::Manifest;
use crate::report::human_bytes;
use crate::resolve::{self, Decoded, Descriptor, IndexManifest};
use crate::text::escape_untrusted;

/// Which platforms to describe in full.
#[derive(Debug, Clone)]
pub enum Choice {
    /// The one that best serves this platform (as a pull would choose).
    One(Platform),
    /// The one that best serves each of these.
    Several(Vec<Platform>),
    /// Every image of the index.
    All,
}

/// What `inspect` found.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub image: String,
    /// What the reference resolves to: the index, or the image's manifest.
    pub digest: Digest,
    pub media_type: String,
    pub multi_platform: bool,
    /// Every entry of the index (for a single image: the image itself).
    pub platforms: Vec<Entry>,
    /// The chosen platforms, described in full.
    pub images: Vec<ImageInfo>,
    /// The layers of the chosen platforms, each distinct one once.
    pub layers: Vec<Layer>,
    /// What a pull of the chosen platforms downloads: configs and layers,
    /// each distinct blob once.
    pub download_bytes: u64,
    /// How much of that the cache holds already.
    pub cached_bytes: u64,
}

/// What an index entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// An image for a platform.
    Image,
    /// An attestation (provenance, SBOM) of another entry.
    Attestation,
    /// Anything else: a nested index, an artifact, an unknown platform.
    Other,
}

/// One entry of an index.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub kind: EntryKind,
    /// `os/arch[/variant]` as the entry (or a single image's config) says.
    pub platform: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    /// For an attestation: the manifest it is about.
    pub attestation_for: Option<String>,
    /// The config and layers an image entry downloads.
    pub download_bytes: Option<u64>,
}

/// One chosen platform in full.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub platform: String,
    pub manifest: Digest,
    pub media_type: String,
    pub created: Option<String>,
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
    pub config: Blob,
    pub layers: Vec<Layer>,
    pub download_bytes: u64,
    pub cached_bytes: u64,
}

/// A config blob.
#[derive(Debug, Clone, Serialize)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub cached: bool,
}

/// A layer blob.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub digest: Digest,
    pub media_type: String,
    /// `gzip`, `zstd`, `plain`, or `unknown` for a type that is no layer.
    pub compression: &'static str,
    pub size: u64,
    pub cached: bool,
}

/// A manifest of the index, fetched and decoded.
struct Child {
    entry: Entry,
    /// Its config and layers, when it is an image manifest.
    image: Option<(String, Descriptor, Vec<Descriptor>)>,
    /// As the index names it, for choosing.
    platform: Option<Platform>,
    reference_type: Option<String>,
}

/// The fields of an image config `inspect` shows.
#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    variant: Option<String>,
}

/// Describes `reference` (as the fetcher's registry knows it) for `choice`.
pub async fn inspect(
    f: &Fetcher,
    reference: &Reference,
    choice: &Choice,
) -> Result<Inspection, PullError> {
    let top = resolve::fetch_top(&f.registry, reference).await?;
    let (media_type, decoded) = decode(f, &top)?;
    let (children, chosen, multi_platform) = match decoded {
        Decoded::Schema1 => {
            return Err(PullError::Schema1 {
                image: f.image.clone(),
            });
        }
        Decoded::Image { config, layers, .. } => {
            let child = Child {
                entry: Entry {
                    kind: EntryKind::Image,
                    platform: None,
                    digest: top.digest.clone(),
                    media_type: media_type.clone(),
                    attestation_for: None,
                    download_bytes: Some(download_size(&config, &layers)),
                },
                image: Some((media_type.clone(), config, layers)),
                platform: None,
                reference_type: None,
            };
            (vec![child], vec![0], false)
        }
        Decoded::Index { manifests } => {
            let children = children(f, reference, &manifests).await?;
            let chosen = choose(f, &children, choice)?;
            (children, chosen, true)
        }
    };
    let mut images = Vec::new();
    for &i in &chosen {
        images.push(describe(f, &children[i]).await?);
    }
    let mut platforms: Vec<Entry> = children.into_iter().map(|c| c.entry).collect();
    if !multi_platform {
        platforms[0].platform = Some(images[0].platform.clone());
    }
    Ok(totals(Inspection {
        image: f.image.clone(),
        digest: top.digest,
        media_type,
        multi_platform,
        platforms,
        images,
        layers: Vec::new(),
        download_bytes: 0,
        cached_bytes: 0,
    }))
}

/// The distinct layers of the chosen images, and what they download.
fn totals(mut ins: Inspection) -> Inspection {
    let mut seen = HashSet::new();
    let blobs: Vec<(Digest, u64, bool)> = ins.images.iter().flat_map(ImageInfo::blobs).collect();
    (ins.download_bytes, ins.cached_bytes) = sizes(&blobs, &mut seen);
    let mut listed = HashSet::new();
    for image in &ins.images {
        for layer in &image.layers {
            if listed.insert(layer.digest.clone()) {
                ins.layers.push(layer.clone());
            }
        }
    }
    ins
}

impl ImageInfo {
    /// The config and layers: digest, size, whether cached.
    fn blobs(&self) -> Vec<(Digest, u64, bool)> {
        std::iter::once((
            self.config.digest.clone(),
            self.config.size,
            self.config.cached,
        ))
        .chain(
            self.layers
                .iter()
                .map(|l| (l.digest.clone(), l.size, l.cached)),
        )
        .collect()
    }
}

/// The bytes of the blobs not `seen` yet, and how many of those are cached.
fn sizes(blobs: &[(Digest, u64, bool)], seen: &mut HashSet<Digest>) -> (u64, u64) {
    let (mut all, mut cached) = (0, 0);
    for (digest, size, in_cache) in blobs {
        if seen.insert(digest.clone()) {
            all += size;
            cached += if *in_cache { *size } else { 0 };
        }
    }
    (all, cached)
}

/// A manifest decoded, with its media type.
fn decode(f: &Fetcher, m: &Manifest) -> Result<(String, Decoded), PullError> {
    let invalid = |what: &str, detail: String| PullError::InvalidManifest {
        image: f.image.clone(),
        registry: f.registry.name().to_string(),
        what: what.to_string(),
        detail: escape_untrusted(&detail),
    };
    let decoded = resolve::decode(&m.bytes, m.content_type.as_deref())
        .map_err(|e| invalid(e.what, e.detail))?;
    let media_type = match &decoded {
        Decoded::Image { media_type, .. } => media_type.clone(),
        _ => resolve::index_media_type(m),
    };
    Ok((escape_untrusted(&media_type), decoded))
}

fn download_size(config: &Descriptor, layers: &[Descriptor]) -> u64 {
    config.size + layers.iter().map(|l| l.size).sum::<u64>()
}

/// Every manifest of the index, each distinct one fetched once, `-j` at a
/// time, in the index's order.
async fn children(
    f: &Fetcher,
    reference: &Reference,
    manifests: &[IndexManifest],
) -> Result<Vec<Child>, PullError> {
    let mut digests = Vec::with_capacity(manifests.len());
    for m in manifests {
        let digest = m.digest().map_err(|e| PullError::InvalidManifest {
            image: f.image.clone(),
            registry: f.registry.name().to_string(),
            what: "index entry".into(),
            detail: escape_untrusted(&e),
        })?;
        digests.push((digest, m.size()));
    }
    let mut unique: Vec<(Digest, u64)> = Vec::new();
    for d in &digests {
        if !unique.iter().any(|u| u.0 == d.0) {
            unique.push(d.clone());
        }
    }
    let fetched: HashMap<Digest, Manifest> = stream::iter(unique)
        .map(|(digest, size)| async move {
            let what = format!("the manifest {digest} ({size} bytes in the index)");
            let m = resolve::fetch_listed(&f.registry, reference, &digest, size, what).await?;
            Ok::<_, PullError>((digest, m))
        })
        .buffered(f.concurrency.max(1))
        .try_collect()
        .await?;
    let mut out = Vec::with_capacity(manifests.len());
    for (m, (digest, _)) in manifests.iter().zip(digests) {
        let manifest = &fetched[&digest];
        let (media_type, decoded) = decode(f, manifest)?;
        let image = match decoded {
            Decoded::Image { config, layers, .. } => Some((media_type.clone(), config, layers)),
            _ => None,
        };
        let runnable = m.choice_entry().is_runnable_image();
        let kind = match (&m.reference_type, runnable, &image) {
            (Some(_), _, _) => EntryKind::Attestation,
            (None, true, Some(_)) => EntryKind::Image,
            _ => EntryKind::Other,
        };
        out.push(Child {
            entry: Entry {
                kind,
                platform: m
                    .platform
                    .as_ref()
                    .map(|p| escape_untrusted(&p.to_string())),
                digest,
                media_type,
                attestation_for: m.reference_digest.as_deref().map(escape_untrusted),
                download_bytes: image.as_ref().map(|(_, c, l)| download_size(c, l)),
            },
            image,
            platform: m.platform.clone(),
            reference_type: m.reference_type.clone(),
        });
    }
    Ok(out)
}

/// The children to describe in full.
fn choose(f: &Fetcher, children: &[Child], choice: &Choice) -> Result<Vec<usize>, PullError> {
    let entries: Vec<IndexEntry<'_>> = children
        .iter()
        .map(|c| IndexEntry {
            platform: c.platform.clone(),
            reference_type: c.reference_type.as_deref(),
        })
        .collect();
    match choice {
        Choice::All => Ok((0..children.len())
            .filter(|&i| children[i].entry.kind == EntryKind::Image)
            .collect()),
        Choice::One(want) => one(f, children, &entries, want).map(|i| vec![i]),
        Choice::Several(wanted) => {
            let mut chosen = Vec::new();
            for want in wanted {
                let i = one(f, children, &entries, want)?;
                if !chosen.contains(&i) {
                    chosen.push(i);
                }
            }
            Ok(chosen)
        }
    }
}

/// The child that best serves `want`; it must be an image manifest.
fn one(
    f: &Fetcher,
    children: &[Child],
    entries: &[IndexEntry<'_>],
    want: &Platform,
) -> Result<usize, PullError> {
    let i = platform::choose(want, entries).map_err(resolve::no_match(&f.image, want))?;
    match children[i].image {
        Some(_) => Ok(i),
        None => Err(PullError::InvalidManifest {
            image: f.image.clone(),
            registry: f.registry.name().to_string(),
            what: "index entry".into(),
            detail: format!("{} is not an image manifest", children[i].entry.digest),
        }),
    }
}

/// One image in full: its config fetched (through the cache), its layers
/// as the manifest lists them.
async fn describe(f: &Fetcher, child: &Child) -> Result<ImageInfo, PullError> {
    let (media_type, config, layers) = child
        .image
        .as_ref()
        .expect("only image manifests are chosen");
    let config_cached = f.cache.contains(&config.digest, config.size);
    f.fetch_one(config).await?;
    let bytes = crate::archive::read_config(&f.cache, config)?;
    let raw: RawConfig = serde_json::from_slice(&bytes).unwrap_or_default();
    let shown = |s: &Option<String>| s.as_deref().map(escape_untrusted);
    let platform = match (&raw.os, &raw.architecture) {
        (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => {
            Platform::new(os, arch, raw.variant.as_deref()).to_string()
        }
        _ => child
            .platform
            .as_ref()
            .map_or_else(|| "unknown".to_string(), Platform::to_string),
    };
    let layers: Vec<Layer> = layers
        .iter()
        .map(|l| Layer {
            digest: l.digest.clone(),
            media_type: escape_untrusted(&l.media_type),
            compression: match media_type::layer_compression(&l.media_type) {
                Some(Compression::Gzip) => "gzip",
                Some(Compression::Zstd) => "zstd",
                Some(Compression::None) => "plain",
                None => "unknown",
            },
            size: l.size,
            cached: f.cache.contains(&l.digest, l.size),
        })
        .collect();
    let mut info = ImageInfo {
        platform: escape_untrusted(&platform),
        manifest: child.entry.digest.clone(),
        media_type: media_type.clone(),
        created: shown(&raw.created),
        os: shown(&raw.os),
        architecture: shown(&raw.architecture),
        variant: shown(&raw.variant),
        config: Blob {
            digest: config.digest.clone(),
            size: config.size,
            cached: config_cached,
        },
        layers,
        download_bytes: 0,
        cached_bytes: 0,
    };
    (info.download_bytes, info.cached_bytes) = sizes(&info.blobs(), &mut HashSet::new());
    Ok(info)
}

/// The human view: the reference and its digest, the platforms, then each
/// chosen image with its layers, and the totals.
pub fn write_text(out: &mut dyn Write, ins: &Inspection) -> std::io::Result<()> {
    writeln!(out, "Image:     {}", ins.image)?;
    writeln!(out, "Digest:    {}", ins.digest)?;
    writeln!(out, "Type:      {}", ins.media_type)?;
    if ins.multi_platform {
        writeln!(out, "Platforms:")?;
        for e in &ins.platforms {
            let what = match e.kind {
                EntryKind::Image => e.platform.clone().unwrap_or_else(|| "unknown".into()),
                EntryKind::Attestation => "attestation".to_string(),
                EntryKind::Other => "other".to_string(),
            };
            let size = e.download_bytes.map(human_bytes).unwrap_or_default();
            let note = match (&e.kind, &e.attestation_for) {
                (EntryKind::Attestation, Some(of)) => format!("  for {}", about(ins, of)),
                (EntryKind::Other, _) => format!("  {}", e.media_type),
                _ => String::new(),
            };
            writeln!(out, "  {what:<16} {}  {size:>9}{note}", e.digest)?;
        }
    }
    for image in &ins.images {
        write_image(out, image)?;
        if ins.images.len() > 1 {
            writeln!(
                out,
                "  Download: {}, {} of it in the cache",
                human_bytes(image.download_bytes),
                human_bytes(image.cached_bytes)
            )?;
        }
    }
    writeln!(
        out,
        "Download:  {} ({} layer{}), {} of it in the cache",
        human_bytes(ins.download_bytes),
        ins.layers.len(),
        if ins.layers.len() == 1 { "" } else { "s" },
        human_bytes(ins.cached_bytes)
    )
}

/// What an attestation is about: the platform of that manifest, if listed.
fn about(ins: &Inspection, digest: &str) -> String {
    ins.platforms
        .iter()
        .find(|e| e.kind == EntryKind::Image && e.digest.to_string() == digest)
        .and_then(|e| e.platform.clone())
        .unwrap_or_else(|| digest.to_string())
}

fn write_image(out: &mut dyn Write, image: &ImageInfo) -> std::io::Result<()> {
    writeln!(out, "{}:", image.platform)?;
    writeln!(out, "  Manifest: {}", image.manifest)?;
    if let Some(created) = &image.created {
        writeln!(out, "  Created:  {created}")?;
    }
    let cached = |c: bool| if c { "  cached" } else { "" };
    writeln!(
        out,
        "  Config:   {}  {}{}",
        image.config.digest,
        human_bytes(image.config.size),
        cached(image.config.cached)
    )?;
    writeln!(out, "  Layers:   {}", image.layers.len())?;
    for l in &image.layers {
        writeln!(
            out,
            "    {}  {:<7} {:>9}{}",
            l.digest,
            l.compression,
            human_bytes(l.size),
            cached(l.cached)
        )?;
    }
    Ok(())
}
