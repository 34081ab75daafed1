//! Reference → manifest → one platform's image: fetches the manifest, follows
//! an index or manifest list to the entry for the wanted platform, checks
//! digests, and returns the config and layer descriptors to download.
//!
//! What a registry may ask for is bounded here, before anything is fetched:
//! at most [`MAX_INDEX_ENTRIES`] manifests in an index (each distinct one
//! fetched once), configs of at most [`MAX_CONFIG_SIZE`], blobs of at most
//! [`MAX_BLOB_SIZE`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::PullError;
use crate::media_type::{self, ManifestKind};
use crate::platform::{self, IndexEntry, Platform};
use crate::reference::Reference;
use crate::registry::{Manifest, Registry};
use crate::text::escape_untrusted;

/// A blob to download, as a manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub urls: Vec<String>,
}

/// One platform's image, ready to fetch.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// What the reference itself resolved to: the index when the image is
    /// multi-platform, else the manifest.
    pub digest: Digest,
    /// The platform manifest, byte-for-byte.
    pub manifest: Manifest,
    /// Its media type (declared, or `Content-Type`).
    pub manifest_media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The platform as the index (or, for single images, the caller) names it;
    /// confirmed against the config by [`check_config`].
    pub platform: Platform,
    /// Whether the reference named an index (so the platform was chosen).
    pub from_index: bool,
}

#[derive(Debug, Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

/// A platform as an index entry or an image config states it.
#[derive(Debug, Deserialize)]
struct RawPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct RawIndex {
    manifests: Vec<RawDescriptor>,
}

#[derive(Deserialize)]
struct RawManifest {
    config: RawDescriptor,
    layers: Vec<RawDescriptor>,
}

/// Context for error messages.
struct Ctx<'a> {
    image: &'a str,
    registry: &'a str,
}

impl Ctx<'_> {
    /// The detail may quote the registry's documents: it is escaped.
    fn invalid(&self, what: &str, detail: impl std::fmt::Display) -> PullError {
        PullError::InvalidManifest {
            image: self.image.to_string(),
            registry: self.registry.to_string(),
            what: what.to_string(),
            detail: escape_untrusted(&detail.to_string()),
        }
    }

    fn descriptor(&self, what: &str, d: RawDescriptor) -> Result<Descriptor, PullError> {
        let digest = d
            .digest
            .parse::<Digest>()
            .map_err(|e| self.invalid(what, e))?;
        if d.size > MAX_BLOB_SIZE {
            return Err(self.invalid(
                what,
                format!(
                    "{digest} claims {} bytes, more than any registry serves",
                    d.size
                ),
            ));
        }
        Ok(Descriptor {
            media_type: d.media_type,
            digest,
            size: d.size,
            urls: d.urls,
        })
    }
}

/// How deep indexes may nest (an index pointing to an index).
const MAX_INDEX_DEPTH: usize = 2;

/// The manifest or index the reference names, checked against a pinned
/// digest.
pub async fn fetch_top(registry: &Registry, reference: &Reference) -> Result<Manifest, PullError> {
    let top = registry
        .get_manifest(&reference.repository, &reference.manifest_reference())
        .await
        .map_err(|source| PullError::Registry {
            image: reference.to_string(),
            source,
        })?;
    if let Some(pinned) = &reference.digest
        && &top.digest != pinned
    {
        return Err(PullError::DigestMismatch {
            image: reference.to_string(),
            registry: registry.name().to_string(),
            what: "the manifest".into(),
            expected: pinned.clone(),
            actual: top.digest.clone(),
        });
    }
    Ok(top)
}

/// Resolves `reference` to the image for `want`.
pub async fn resolve(
    registry: &Registry,
    reference: &Reference,
    want: &Platform,
) -> Result<Resolved, PullError> {
    let image = reference.to_string();
    let ctx = Ctx {
        image: &image,
        registry: registry.name(),
    };
    let top = fetch_top(registry, reference).await?;
    let top_digest = top.digest.clone();
    let mut current = top;
    let mut chosen_platform = None;
    for depth in 0..=MAX_INDEX_DEPTH {
        let decoded = decode(&current.bytes, current.content_type.as_deref())
            .map_err(|e| ctx.invalid(e.what, e.detail))?;
        match decoded {
            Decoded::Schema1 => return Err(PullError::Schema1 { image }),
            Decoded::Image {
                media_type,
                config,
                layers,
            } => {
                return Ok(Resolved {
                    digest: top_digest,
                    from_index: chosen_platform.is_some(),
                    platform: chosen_platform.unwrap_or_else(|| want.clone()),
                    manifest: current,
                    manifest_media_type: media_type,
                    config,
                    layers,
                });
            }
            Decoded::Index { manifests } => {
                if depth == MAX_INDEX_DEPTH {
                    return Err(ctx.invalid("index", "indexes nested too deeply"));
                }
                let entries: Vec<IndexEntry<'_>> =
                    manifests.iter().map(IndexManifest::choice_entry).collect();
                let i = platform::choose(want, &entries).map_err(no_match(&image, want))?;
                chosen_platform = entries[i].platform.clone();
                let entry = manifests
                    .into_iter()
                    .nth(i)
                    .expect("choose returns an index into entries")
                    .descriptor;
                let entry = ctx.descriptor("index entry", entry)?;
                let what = format!("the {} manifest", chosen_platform_name(&chosen_platform));
                current =
                    fetch_listed(registry, reference, &entry.digest, entry.size, what).await?;
            }
        }
    }
    Err(ctx.invalid("index", "indexes nested too deeply"))
}

/// One image of a multi-platform index, kept whole for `--platform all`.
#[derive(Debug, Clone)]
pub struct Member {
    pub manifest: Manifest,
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// As the index names it (`None` for attestations and the like).
    pub platform: Option<Platform>,
}

/// Everything a reference names: the index byte-for-byte with every image in
/// it (attestations included), or the one image when it is not an index.
#[derive(Debug, Clone)]
pub struct ResolvedAll {
    pub digest: Digest,
    /// The index and its media type, when the reference names one.
    pub index: Option<(Manifest, String)>,
    pub members: Vec<Member>,
    /// When the index was rewritten to list fewer platforms
    /// ([`keep_platforms`]): the digest of the registry's.
    pub trimmed_from: Option<Digest>,
}

/// Resolves `reference` to every image it names, for `--platform all`.
pub async fn resolve_all(
    registry: &Registry,
    reference: &Reference,
) -> Result<ResolvedAll, PullError> {
    let image = reference.to_string();
    let ctx = Ctx {
        image: &image,
        registry: registry.name(),
    };
    let top = fetch_top(registry, reference).await?;
    let digest = top.digest.clone();
    let member = |manifest: Manifest, platform: Option<Platform>| -> Result<Member, PullError> {
        match decode(&manifest.bytes, manifest.content_type.as_deref())
            .map_err(|e| ctx.invalid(e.what, e.detail))?
        {
            Decoded::Image {
                media_type,
                config,
                layers,
            } => Ok(Member {
                manifest,
                media_type,
                config,
                layers,
                platform,
            }),
            Decoded::Schema1 => Err(PullError::Schema1 {
                image: image.clone(),
            }),
            Decoded::Index { .. } => Err(ctx.invalid(
                "index",
                "an index inside an index cannot be kept with --platform all",
            )),
        }
    };
    match decode(&top.bytes, top.content_type.as_deref())
        .map_err(|e| ctx.invalid(e.what, e.detail))?
    {
        Decoded::Index { manifests } => {
            let index_media_type = index_media_type(&top);
            let mut members = Vec::new();
            // Each distinct manifest is fetched and kept once, however often
            // the index lists it (the index itself stays byte-for-byte).
            let mut sizes: HashMap<Digest, u64> = HashMap::new();
            for entry in manifests {
                let platform = entry.platform.clone();
                let d = ctx.descriptor("index entry", entry.descriptor)?;
                match sizes.entry(d.digest.clone()) {
                    Entry::Occupied(first) if *first.get() == d.size => continue,
                    Entry::Occupied(first) => {
                        return Err(ctx.invalid(
                            "index",
                            format!(
                                "it lists {} twice, as {} and as {} bytes",
                                d.digest,
                                first.get(),
                                d.size
                            ),
                        ));
                    }
                    Entry::Vacant(v) => {
                        v.insert(d.size);
                    }
                }
                let what = format!("the manifest {}", d.digest);
                let m = fetch_listed(registry, reference, &d.digest, d.size, what).await?;
                members.push(member(m, platform)?);
            }
            Ok(ResolvedAll {
                digest,
                index: Some((top, index_media_type)),
                members,
                trimmed_from: None,
            })
        }
        Decoded::Schema1 => Err(PullError::Schema1 { image }),
        Decoded::Image { .. } => Ok(ResolvedAll {
            digest,
            index: None,
            members: vec![member(top, None)?],
            trimmed_from: None,
        }),
    }
}

/// Keeps of `all` only the image that best serves each of `wanted` and
/// the attestations of those: a new index that lists only them, its other
/// fields as they were (so its digest is new, and `trimmed_from` says what
/// the registry's was). A single image is kept as it is.
pub fn keep_platforms(
    mut all: ResolvedAll,
    wanted: &[Platform],
    image: &str,
    registry: &str,
) -> Result<ResolvedAll, PullError> {
    let Some((index, media_type)) = all.index.take() else {
        return Ok(all);
    };
    let invalid = |detail: String| PullError::InvalidManifest {
        image: image.to_string(),
        registry: registry.to_string(),
        what: "index".into(),
        detail: escape_untrusted(&detail),
    };
    let Decoded::Index { manifests } =
        decode(&index.bytes, index.content_type.as_deref()).map_err(|e| invalid(e.detail))?
    else {
        return Err(invalid("it is no longer an index".into()));
    };
    let entries: Vec<IndexEntry<'_>> = manifests.iter().map(IndexManifest::choice_entry).collect();
    let mut keep = vec![false; manifests.len()];
    for want in wanted {
        let i = platform::choose(want, &entries).map_err(no_match(image, want))?;
        keep[i] = true;
    }
    let kept: Vec<String> = (0..manifests.len())
        .filter(|&i| keep[i])
        .filter_map(|i| manifests[i].digest().ok().map(|d| d.to_string()))
        .collect();
    for (i, m) in manifests.iter().enumerate() {
        let attests_kept = m.reference_type.is_some()
            && m.reference_digest
                .as_ref()
                .is_some_and(|d| kept.contains(d));
        keep[i] |= attests_kept;
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(&index.bytes).map_err(|e| invalid(e.to_string()))?;
    let listed = value
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| invalid("it has no manifests".into()))?;
    let mut i = 0;
    listed.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let kept_digests: Vec<Digest> = (0..manifests.len())
        .filter(|&i| keep[i])
        .filter_map(|i| manifests[i].digest().ok())
        .collect();
    let bytes = serde_json::to_vec_pretty(&value).map_err(|e| invalid(e.to_string()))?;
    let trimmed = Manifest {
        digest: Digest::of(&bytes),
        bytes,
        content_type: index.content_type.clone(),
    };
    all.members
        .retain(|m| kept_digests.contains(&m.manifest.digest));
    all.trimmed_from = Some(all.digest.clone());
    all.digest = trimmed.digest.clone();
    all.index = Some((trimmed, media_type));
    Ok(all)
}

/// A manifest an index lists, fetched by digest and checked against the
/// entry (digest and size); `what` names it in the error.
pub async fn fetch_listed(
    registry: &Registry,
    reference: &Reference,
    digest: &Digest,
    size: u64,
    what: String,
) -> Result<Manifest, PullError> {
    let m = registry
        .get_manifest(&reference.repository, &digest.to_string())
        .await
        .map_err(|source| PullError::Registry {
            image: reference.to_string(),
            source,
        })?;
    if &m.digest != digest || m.bytes.len() as u64 != size {
        return Err(PullError::DigestMismatch {
            image: reference.to_string(),
            registry: registry.name().to_string(),
            what,
            expected: digest.clone(),
            actual: m.digest,
        });
    }
    Ok(m)
}

/// An index's media type: the one it declares, else its `Content-Type`,
/// else OCI's.
pub fn index_media_type(index: &Manifest) -> String {
    serde_json::from_slice::<serde_json::Value>(&index.bytes)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
        .or_else(|| {
            index
                .content_type
                .as_deref()
                .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        })
        .filter(|m| m != "application/json" && !m.is_empty())
        .unwrap_or_else(|| media_type::OCI_INDEX.to_string())
}

/// The error for an index without an image for `want`, given the platforms
/// it has.
pub fn no_match<'a>(
    image: &'a str,
    want: &'a Platform,
) -> impl FnOnce(Vec<Platform>) -> PullError + 'a {
    move |available| PullError::NoMatchingPlatform {
        image: image.to_string(),
        wanted: want.clone(),
        available,
    }
}

/// What a manifest document is, decoded.
#[derive(Debug)]
pub enum Decoded {
    /// A Docker schema 1 manifest (not supported).
    Schema1,
    /// An image manifest: its media type (declared, else from
    /// `Content-Type`, else OCI), config and layers, every digest validated.
    Image {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// An index or manifest list. Entries' digests are validated only when
    /// one is chosen, so one odd entry does not spoil the others.
    Index { manifests: Vec<IndexManifest> },
}

/// One entry of an index.
#[derive(Debug)]
pub struct IndexManifest {
    pub platform: Option<Platform>,
    /// The `vnd.docker.reference.type` annotation (attestations).
    pub reference_type: Option<String>,
    /// The `vnd.docker.reference.digest` annotation: the manifest an
    /// attestation is for.
    pub reference_digest: Option<String>,
    descriptor: RawDescriptor,
}

impl IndexManifest {
    /// What platform choice looks at: the platform and the reference type.
    pub fn choice_entry(&self) -> IndexEntry<'_> {
        IndexEntry {
            platform: self.platform.clone(),
            reference_type: self.reference_type.as_deref(),
        }
    }

    /// The entry's digest, validated.
    pub fn digest(&self) -> Result<Digest, String> {
        self.descriptor
            .digest
            .parse::<Digest>()
            .map_err(|e| e.to_string())
    }

    /// The size the entry gives its manifest.
    pub fn size(&self) -> u64 {
        self.descriptor.size
    }
}

/// Why a manifest document cannot be used.
#[derive(Debug)]
pub struct DecodeError {
    /// `manifest`, `index`, `config descriptor`, `layer descriptor`.
    pub what: &'static str,
    pub detail: String,
}

fn decode_error(what: &'static str, detail: impl std::fmt::Display) -> DecodeError {
    DecodeError {
        what,
        detail: detail.to_string(),
    }
}

/// No blob is larger than this (16 TiB): a larger `size` is a broken or
/// hostile manifest, refused before it sizes anything.
pub const MAX_BLOB_SIZE: u64 = 1 << 44;

/// No image config is larger than this (64 MiB; real ones are kilobytes):
/// configs are read into memory whole, so a larger one is refused before it
/// is downloaded.
pub const MAX_CONFIG_SIZE: u64 = 64 << 20;

/// No index lists more manifests than this (real ones list a few dozen).
pub const MAX_INDEX_ENTRIES: usize = 1024;

fn decode_descriptor(what: &'static str, d: RawDescriptor) -> Result<Descriptor, DecodeError> {
    let digest = d
        .digest
        .parse::<Digest>()
        .map_err(|e| decode_error(what, e))?;
    if d.size > MAX_BLOB_SIZE {
        return Err(decode_error(
            what,
            format!(
                "blob {digest} claims {} bytes, more than any registry serves",
                d.size
            ),
        ));
    }
    Ok(Descriptor {
        media_type: d.media_type,
        digest,
        size: d.size,
        urls: d.urls,
    })
}

/// Decodes a manifest or index as served with `content_type`.
pub fn decode(bytes: &[u8], content_type: Option<&str>) -> Result<Decoded, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| decode_error("manifest", e))?;
    let kind = media_type::classify(content_type, &value)
        .map_err(|m| decode_error("manifest", format!("unknown manifest media type {:?}", m.0)))?;
    let declared_type = value
        .get("mediaType")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    match kind {
        ManifestKind::Schema1 => Ok(Decoded::Schema1),
        ManifestKind::Image => {
            let raw: RawManifest =
                serde_json::from_value(value).map_err(|e| decode_error("manifest", e))?;
            let config = decode_descriptor("config descriptor", raw.config)?;
            if config.size > MAX_CONFIG_SIZE {
                return Err(decode_error(
                    "config descriptor",
                    format!(
                        "the image config {} claims {} bytes, more than the {} bytes (64 MiB) an image config may have",
                        config.digest, config.size, MAX_CONFIG_SIZE
                    ),
                ));
            }
            let layers = raw
                .layers
                .into_iter()
                .map(|l| decode_descriptor("layer descriptor", l))
                .collect::<Result<Vec<_>, _>>()?;
            let media_type = declared_type
                .or_else(|| {
                    content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
                })
                .filter(|m| m != "application/json" && !m.is_empty())
                .unwrap_or_else(|| media_type::OCI_MANIFEST.to_string());
            Ok(Decoded::Image {
                media_type,
                config,
                layers,
            })
        }
        ManifestKind::Index => {
            let raw: RawIndex =
                serde_json::from_value(value).map_err(|e| decode_error("index", e))?;
            if raw.manifests.len() > MAX_INDEX_ENTRIES {
                return Err(decode_error(
                    "index",
                    format!(
                        "it lists {} manifests, more than the {MAX_INDEX_ENTRIES} an index may have",
                        raw.manifests.len()
                    ),
                ));
            }
            let manifests = raw
                .manifests
                .into_iter()
                .map(|mut m| IndexManifest {
                    platform: m
                        .platform
                        .as_ref()
                        .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref())),
                    reference_type: m.annotations.remove("vnd.docker.reference.type"),
                    reference_digest: m.annotations.remove("vnd.docker.reference.digest"),
                    descriptor: m,
                })
                .collect();
            Ok(Decoded::Index { manifests })
        }
    }
}

/// The platform an index names, escaped (it is the registry's text).
fn chosen_platform_name(p: &Option<Platform>) -> String {
    p.as_ref().map_or_else(
        || "chosen".to_string(),
        |p| escape_untrusted(&p.to_string()),
    )
}

/// Confirms the config describes the wanted platform and returns the
/// platform it states. A single-platform image that differs from a platform
/// the user did not ask for explicitly is accepted with a warning, as
/// `docker pull` does; otherwise a mismatch is an error.
pub fn check_config(
    image: &str,
    registry: &str,
    config: &[u8],
    resolved: &Resolved,
    want: &Platform,
    explicit: bool,
) -> Result<Platform, PullError> {
    let raw: RawPlatform =
        serde_json::from_slice(config).map_err(|e| PullError::InvalidManifest {
            image: image.to_string(),
            registry: registry.to_string(),
            what: "image config".into(),
            detail: escape_untrusted(&e.to_string()),
        })?;
    if raw.os.is_empty() || raw.architecture.is_empty() {
        // Some images (artifacts, scratch builds) omit these: trust the index.
        return Ok(resolved.platform.clone());
    }
    let variant = raw
        .variant
        .as_deref()
        .or(resolved.platform.variant.as_deref());
    let actual = Platform::new(&raw.os, &raw.architecture, variant);
    if want.match_rank(&actual).is_some() {
        return Ok(actual);
    }
    if !resolved.from_index && !explicit {
        tracing::warn!(
            "{image}: the image is {}, which does not match this machine ({want}); pulled anyway",
            escape_untrusted(&actual.to_string())
        );
        return Ok(actual);
    }
    Err(PullError::PlatformMismatch {
        image: image.to_string(),
        wanted: Box::new(want.clone()),
        actual: Box::new(actual),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn manifest_with_config_size(size: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest('c'), "size": size},
            "layers": [],
        }))
        .unwrap()
    }

    #[test]
    fn config_size_is_bounded() {
        let ok = decode(&manifest_with_config_size(MAX_CONFIG_SIZE), None).unwrap();
        assert!(matches!(ok, Decoded::Image { config, .. } if config.size == MAX_CONFIG_SIZE));
        let e = decode(&manifest_with_config_size(MAX_CONFIG_SIZE + 1), None).unwrap_err();
        assert_eq!(e.what, "config descriptor");
        assert!(e.detail.contains("67108865 bytes"), "{}", e.detail);
        assert!(e.detail.contains("64 MiB"), "{}", e.detail);
    }

    #[test]
    fn index_entries_are_bounded() {
        let index = |n: usize| {
            let entry = serde_json::json!({
                "mediaType": media_type::OCI_MANIFEST, "digest": digest('a'), "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"},
            });
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_INDEX,
                "manifests": vec![entry; n],
            }))
            .unwrap()
        };
        assert!(matches!(
            decode(&index(MAX_INDEX_ENTRIES), None),
            Ok(Decoded::Index { manifests }) if manifests.len() == MAX_INDEX_ENTRIES
        ));
        let e = decode(&index(MAX_INDEX_ENTRIES + 1), None).unwrap_err();
        assert_eq!(e.what, "index");
        assert!(e.detail.contains("1025 manifests"), "{}", e.detail);
    }
}
