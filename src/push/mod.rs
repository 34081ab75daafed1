//! `push SOURCE TARGET`: every image of an archive or layout (or the one
//! `--image` names) into a registry, through the one archive reader.
//!
//! Where the source holds the registry's manifests they go up byte for
//! byte, so the digests do not change; where it holds none (`build.rs`) a
//! manifest is made and the report says the digest is new. For each image:
//! its blobs first (`-j` at once; each skipped when the registry has it,
//! mounted from another repository of the registry where this push put it,
//! else uploaded, resumably, by the registry layer), then child manifests
//! by digest, then the manifest or index under each tag. A blob that is not
//! what the source says fails its upload, so no manifest or tag of that
//! image is written.

pub mod body;
pub mod build;
pub mod target;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt, stream};

use crate::archive::read::{self, Blob, Content, Image, Manifested, Source};
use crate::credentials::{GivenCredentials, Locations};
use crate::digest::Digest;
use crate::events::{Event, Observer, Skip};
use crate::mirror::{self, Origin};
use crate::registry::{BlobPushed, Registry, RegistryError, TransportOptions, Trust};
use crate::session::Session;
use crate::text::escape_untrusted;
use body::{Body, From};
use target::{Destination, Target, TargetError};

/// Blobs larger than this go up in chunks of this size.
pub const CHUNK: u64 = 16 * 1024 * 1024;

/// What a push is told.
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub source: PathBuf,
    pub target: Target,
    /// `--image NAME`: only this image of the source.
    pub image: Option<String>,
    pub jobs: usize,
    pub transport: TransportOptions,
    /// `-u`: for the target registry.
    pub credentials: Option<GivenCredentials>,
    pub credential_locations: Locations,
    /// Where the push may write files of its own (compressed layers, a
    /// decompressed archive); else the system's temporary directory.
    pub scratch: Option<PathBuf>,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error("{image}: the source is damaged: {detail}; no manifest or tag was written")]
    Damaged { image: String, detail: String },
    #[error("{archive} holds no image named {wanted:?}; it holds: {available}")]
    NoImage {
        archive: String,
        wanted: String,
        available: String,
    },
    #[error("{archive} holds no image")]
    Empty { archive: String },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

impl PushError {
    /// 2 for what the user must write differently, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            PushError::Target(_) | PushError::NoImage { .. } => 2,
            _ => 1,
        }
    }
}

/// What was sent for one image to one repository.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    pub image: String,
    /// `registry/repository[:tag,...]`.
    pub target: String,
    pub digest: String,
    /// Config and layers (of every child, for an index).
    pub blobs: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    pub bytes_uploaded: u64,
    pub seconds: f64,
    /// The manifest had to be made (the source holds none).
    pub digest_changed: bool,
    /// Why, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How many images were pushed and how many failed.
pub struct PushOutcome {
    pub reports: Vec<PushReport>,
    pub failed: usize,
}

/// One blob to make sure of.
struct Wanted {
    digest: Digest,
    size: u64,
    from: From,
}

/// The manifests of an image, put once its blobs are in.
struct Manifests {
    top: Vec<u8>,
    media_type: String,
    /// An index's children the source holds.
    children: Vec<read::Document>,
}

/// The blobs of the run, by digest: the repositories of the target
/// registry that hold each (so later images mount instead of uploading).
type Placed = Arc<Mutex<HashMap<Digest, Vec<String>>>>;

/// Where one image goes, and what is known of where its blobs are.
struct At<'a> {
    dest: &'a Destination,
    /// The image's name in messages.
    shown: &'a str,
    /// Repositories of the target registry the image was pulled from.
    known: &'a [String],
}

/// A push, set up.
struct Pusher<'a> {
    settings: &'a PushSettings,
    source: Arc<Source>,
    observer: Arc<dyn Observer>,
    scratch: tempfile::TempDir,
    placed: Placed,
}

/// Pushes the images of the source; `on_image` sees each report as it is
/// done, `on_error` each image that failed (the others still go).
pub async fn run(
    settings: &PushSettings,
    observer: Arc<dyn Observer>,
    mut on_image: impl FnMut(&PushReport),
    mut on_error: impl FnMut(&PushError),
) -> Result<PushOutcome, PushError> {
    let scratch = scratch_dir(settings.scratch.as_deref())?;
    let source = open_source(&settings.source, scratch.path()).await?;
    let images = select(&source, settings.image.as_deref())?;
    // Counted as the source lists them: a bundle of two names is two images.
    let count = images.len();
    let mut session = Session::new(
        settings.transport.clone(),
        settings.credentials.clone(),
        &settings.credential_locations,
        mirror::daemon::Insecure::default(),
    )
    .map_err(|e| PushError::Setup(e.to_string()))?;
    let pusher = Pusher {
        settings,
        source: Arc::clone(&source),
        observer,
        scratch,
        placed: Arc::default(),
    };
    let mut outcome = PushOutcome {
        reports: Vec::new(),
        failed: 0,
    };
    for (image, names) in merged(images) {
        match pusher.image(&mut session, image, &names, count).await {
            Ok(reports) => {
                for r in reports {
                    on_image(&r);
                    outcome.reports.push(r);
                }
            }
            Err(e) => {
                outcome.failed += 1;
                on_error(&e);
            }
        }
    }
    Ok(outcome)
}

/// A private directory for the push's own files, removed at the end.
fn scratch_dir(under: Option<&Path>) -> Result<tempfile::TempDir, PushError> {
    let io = |path: &Path, source| PushError::Io {
        action: "creating a scratch directory in",
        path: path.to_path_buf(),
        source,
    };
    match under {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            tempfile::Builder::new()
                .prefix(".push-")
                .tempdir_in(dir)
                .map_err(|e| io(dir, e))
        }
        None => tempfile::Builder::new()
            .prefix("docker-pull-push-")
            .tempdir()
            .map_err(|e| io(&std::env::temp_dir(), e)),
    }
}

/// Opens the source; a compressed archive is decompressed into `scratch`
/// first (it is read front to back, and uploads need to re-open blobs).
async fn open_source(path: &Path, scratch: &Path) -> Result<Arc<Source>, PushError> {
    let path = path.to_path_buf();
    let scratch = scratch.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || -> Result<Source, PushError> {
        let source = Source::open(&path)?;
        if !matches!(source.container, read::Container::CompressedTar(_)) {
            return Ok(source);
        }
        let plain = scratch.join("source.tar");
        let io = |source| PushError::Io {
            action: "decompressing the archive into",
            path: plain.clone(),
            source,
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create_new(&plain).map_err(io)?);
        source.decompress_into(&mut out).map_err(io)?;
        std::io::Write::flush(&mut out).map_err(io)?;
        drop(out);
        Ok(Source::open(&plain)?)
    })
    .await
    .map_err(|e| PushError::Setup(format!("reading the source: {e}")))??;
    Ok(Arc::new(opened))
}

/// The images with their names; entries of the source that are the same
/// image (the same digest, listed once per name) are pushed once, under
/// every name.
fn merged(images: Vec<&Image>) -> Vec<(&Image, Vec<crate::reference::Reference>)> {
    let mut out: Vec<(&Image, Vec<crate::reference::Reference>)> = Vec::new();
    for image in images {
        let names = image.names.iter().filter_map(|n| n.reference.clone());
        let same = out
            .iter_mut()
            .find(|(i, _)| i.digest().is_some() && i.digest() == image.digest());
        match same {
            Some((_, known)) => {
                for n in names {
                    if !known.contains(&n) {
                        known.push(n);
                    }
                }
            }
            None => out.push((image, names.collect())),
        }
    }
    out
}

/// The images to push: all, or the one `--image` names (by a name, in
/// full or as written, or by digest).
fn select<'s>(source: &'s Source, wanted: Option<&str>) -> Result<Vec<&'s Image>, PushError> {
    let shown = || escape_untrusted(&source.path.display().to_string());
    if source.images.is_empty() {
        return Err(PushError::Empty { archive: shown() });
    }
    let Some(wanted) = wanted else {
        return Ok(source.images.iter().collect());
    };
    let normalised = crate::reference::Reference::parse(wanted, crate::reference::DOCKER_HUB)
        .ok()
        .map(|r| r.to_string());
    let hit = |image: &&Image| {
        image.names.iter().any(|n| {
            n.given == wanted
                || n.reference.as_ref().map(ToString::to_string) == normalised
                    && normalised.is_some()
        }) || image
            .digest()
            .is_some_and(|d| wanted.len() >= 12 && d.to_string().contains(wanted))
    };
    let found: Vec<&Image> = source.images.iter().filter(hit).collect();
    if found.is_empty() {
        let available: Vec<String> = source
            .images
            .iter()
            .map(|i| i.display_name().unwrap_or_else(|| "(unnamed)".into()))
            .collect();
        return Err(PushError::NoImage {
            archive: shown(),
            wanted: wanted.to_string(),
            available: available.join(", "),
        });
    }
    Ok(found)
}

impl Pusher<'_> {
    /// One image to every destination its names give it.
    async fn image(
        &self,
        session: &mut Session,
        image: &Image,
        names: &[crate::reference::Reference],
        count: usize,
    ) -> Result<Vec<PushReport>, PushError> {
        let shown = image
            .display_name()
            .or_else(|| image.digest().map(ToString::to_string))
            .unwrap_or_else(|| "(unnamed)".into());
        let problems: Vec<String> = (self.source.problems.iter())
            .chain(&image.problems)
            .map(ToString::to_string)
            .collect();
        if !problems.is_empty() {
            return Err(PushError::Damaged {
                image: shown,
                detail: problems.join("; "),
            });
        }
        let destinations = self.settings.target.destinations(names, count, &shown)?;
        let mut reports = Vec::new();
        // Where the image came from, when that is the target registry: its
        // blobs can be mounted from there.
        let known: Vec<String> = (names.iter())
            .filter(|n| n.registry == self.settings.target.registry)
            .map(|n| n.repository.clone())
            .collect();
        for dest in destinations {
            let started = Instant::now();
            let registry = self.registry(session, &dest.repository).await?;
            let at = At {
                dest: &dest,
                shown: &shown,
                known: &known,
            };
            let mut report = self.to(&registry, image, &at).await?;
            report.seconds = started.elapsed().as_secs_f64();
            reports.push(report);
        }
        Ok(reports)
    }

    async fn registry(
        &self,
        session: &mut Session,
        repository: &str,
    ) -> Result<Arc<Registry>, PushError> {
        let target = &self.settings.target;
        let source = mirror::Source {
            registry: target.registry.clone(),
            host: target.api_host().to_string(),
            scheme: None,
            repository: repository.to_string(),
            mirror: false,
            label: target.api_host().to_string(),
            trust: Trust::Verified,
            from: Origin::Default,
        };
        session
            .registry(&source)
            .await
            .map_err(|e| PushError::Setup(e.to_string()))
    }

    /// The image into one repository.
    async fn to(
        &self,
        registry: &Arc<Registry>,
        image: &Image,
        at: &At<'_>,
    ) -> Result<PushReport, PushError> {
        let mut report = PushReport {
            image: at.shown.to_string(),
            target: target_name(&self.settings.target, at.dest),
            digest: String::new(),
            blobs: 0,
            blobs_skipped: 0,
            blobs_mounted: 0,
            bytes_uploaded: 0,
            seconds: 0.0,
            digest_changed: false,
            note: None,
        };
        let manifests = self.content(registry, image, at, &mut report).await?;
        report.digest = self.manifests(registry, at, manifests).await?.to_string();
        Ok(report)
    }

    /// Every blob of the image into the repository; returns the manifests
    /// to put after them.
    async fn content(
        &self,
        registry: &Arc<Registry>,
        image: &Image,
        at: &At<'_>,
        report: &mut PushReport,
    ) -> Result<Manifests, PushError> {
        match &image.content {
            Content::Manifest(m) => {
                let wanted = manifested_blobs(&self.source, m);
                self.blobs(registry, at, image, wanted, report).await?;
                Ok(Manifests {
                    top: m.manifest.bytes.clone(),
                    media_type: m.manifest.media_type.clone(),
                    children: Vec::new(),
                })
            }
            Content::Index { index, children } => {
                let mut wanted = Vec::new();
                let mut docs = Vec::new();
                for child in children {
                    match &child.image {
                        Some(m) => {
                            wanted.extend(manifested_blobs(&self.source, m));
                            docs.push(m.manifest.clone());
                        }
                        None => self.child_present(registry, at, &child.blob).await?,
                    }
                }
                self.blobs(registry, at, image, wanted, report).await?;
                Ok(Manifests {
                    top: index.bytes.clone(),
                    media_type: index.media_type.clone(),
                    children: docs,
                })
            }
            Content::Loose { config, layers } => {
                let (manifest, wanted) = self.build(at.shown, config, layers)?;
                self.blobs(registry, at, image, wanted, report).await?;
                report.digest_changed = true;
                report.note = Some(
                    "new digest: the source holds no registry manifest, so one was made (layers compressed with gzip where they were not)".into(),
                );
                Ok(Manifests {
                    top: manifest,
                    media_type: crate::media_type::DOCKER_MANIFEST.to_string(),
                    children: Vec::new(),
                })
            }
            Content::Unreadable { blob } => Err(PushError::Damaged {
                image: at.shown.to_string(),
                detail: format!("{} cannot be read", escape_untrusted(&blob.entry)),
            }),
        }
    }

    /// Child manifests by digest, then the manifest or index under each tag
    /// (by digest when there is none); returns its digest.
    async fn manifests(
        &self,
        registry: &Registry,
        at: &At<'_>,
        m: Manifests,
    ) -> Result<Digest, PushError> {
        let err = |source| PushError::Registry {
            image: at.shown.to_string(),
            source,
        };
        let repo = &at.dest.repository;
        for child in &m.children {
            let digest = child.digest.to_string();
            (registry.put_manifest(repo, &digest, &child.media_type, &child.bytes))
                .await
                .map_err(err)?;
        }
        let digest = Digest::of(&m.top);
        let references: Vec<String> = if at.dest.tags.is_empty() {
            vec![digest.to_string()]
        } else {
            at.dest.tags.clone()
        };
        for reference in &references {
            (registry.put_manifest(repo, reference, &m.media_type, &m.top))
                .await
                .map_err(err)?;
        }
        Ok(digest)
    }

    /// A child manifest the source does not hold must be in the registry.
    async fn child_present(
        &self,
        registry: &Registry,
        at: &At<'_>,
        blob: &Blob,
    ) -> Result<(), PushError> {
        let (dest, shown) = (at.dest, at.shown);
        let Some(digest) = &blob.digest else {
            return Err(PushError::Damaged {
                image: shown.to_string(),
                detail: "an index entry has no digest".into(),
            });
        };
        let present = registry
            .has_manifest(&dest.repository, digest)
            .await
            .map_err(|source| PushError::Registry {
                image: shown.to_string(),
                source,
            })?;
        if present {
            return Ok(());
        }
        Err(PushError::Damaged {
            image: shown.to_string(),
            detail: format!(
                "the index lists {digest}, which neither the source nor {} holds; push a source with every platform (pulled with --platform all)",
                dest.repository
            ),
        })
    }

    /// A manifest for an image without one, and the blobs it names.
    fn build(
        &self,
        shown: &str,
        config: &read::Config,
        layers: &[read::Layer],
    ) -> Result<(Vec<u8>, Vec<Wanted>), PushError> {
        let built = tokio::task::block_in_place(|| {
            build::build(
                &self.source,
                shown,
                config,
                layers,
                self.scratch.path(),
                self.settings.jobs,
            )
        })?;
        let config_bytes = Arc::new(config.bytes.clone().unwrap_or_default());
        let mut wanted = vec![Wanted {
            digest: Digest::of(&config_bytes),
            size: config_bytes.len() as u64,
            from: From::Memory(config_bytes),
        }];
        for layer in built.layers {
            wanted.push(Wanted {
                digest: layer.digest,
                size: layer.size,
                from: match layer.from {
                    build::LayerFrom::Source(blob) => From::Source {
                        source: Arc::clone(&self.source),
                        blob,
                    },
                    build::LayerFrom::File(path) => From::File(path),
                },
            });
        }
        Ok((built.manifest, wanted))
    }

    /// Makes sure every blob of `wanted` is in the destination repository,
    /// `-j` at once.
    async fn blobs(
        &self,
        registry: &Arc<Registry>,
        at: &At<'_>,
        image: &Image,
        wanted: Vec<Wanted>,
        report: &mut PushReport,
    ) -> Result<(), PushError> {
        let mut seen = std::collections::HashSet::new();
        let wanted: Vec<Wanted> = wanted
            .into_iter()
            .filter(|w| seen.insert(w.digest.clone()))
            .collect();
        self.observer.event(Event::ImageStarted {
            image: at.shown.to_string(),
            platform: image.platform(),
            bytes: wanted.iter().map(|w| w.size).sum(),
            blobs: wanted.len(),
        });
        let results = stream::iter(wanted)
            .map(|w| self.blob(registry, at, w))
            .buffer_unordered(self.settings.jobs.max(1))
            .try_collect::<Vec<BlobPushed>>()
            .await;
        self.observer.event(Event::ImageDone);
        for pushed in results? {
            report.blobs += 1;
            match pushed {
                BlobPushed::Present => report.blobs_skipped += 1,
                BlobPushed::Mounted => report.blobs_mounted += 1,
                BlobPushed::Uploaded { bytes_sent } => report.bytes_uploaded += bytes_sent,
            }
        }
        Ok(())
    }

    async fn blob(
        &self,
        registry: &Arc<Registry>,
        at: &At<'_>,
        w: Wanted,
    ) -> Result<BlobPushed, PushError> {
        let (dest, shown) = (at.dest, at.shown);
        let placed = (self.placed.lock())
            .map(|p| p.get(&w.digest).cloned().unwrap_or_default())
            .unwrap_or_default();
        let mut mount_from: Vec<String> = Vec::new();
        for repo in placed.into_iter().chain(at.known.iter().cloned()) {
            if repo != dest.repository && !mount_from.contains(&repo) {
                mount_from.push(repo);
            }
        }
        let body = Arc::new(Body {
            from: w.from,
            digest: w.digest.clone(),
            size: w.size,
            observer: Arc::clone(&self.observer),
        });
        let pushed = registry
            .push_blob(
                &dest.repository,
                &w.digest,
                w.size,
                &mount_from,
                body,
                CHUNK,
            )
            .await
            .map_err(|source| PushError::Registry {
                image: shown.to_string(),
                source,
            })?;
        let digest = w.digest.clone();
        self.observer.event(match pushed {
            BlobPushed::Uploaded { .. } => Event::Finished { digest },
            BlobPushed::Present => Event::Skipped {
                digest,
                size: w.size,
                why: Skip::Present,
            },
            BlobPushed::Mounted => Event::Skipped {
                digest,
                size: w.size,
                why: Skip::Mounted,
            },
        });
        if let Ok(mut placed) = self.placed.lock() {
            let repos = placed.entry(w.digest).or_default();
            if !repos.contains(&dest.repository) {
                repos.push(dest.repository.clone());
            }
        }
        Ok(pushed)
    }
}

/// The config and layers of an image with a registry manifest.
fn manifested_blobs(source: &Arc<Source>, m: &Manifested) -> Vec<Wanted> {
    std::iter::once(&m.config.blob)
        .chain(m.layers.iter().map(|l| &l.blob))
        .filter_map(|blob| {
            Some(Wanted {
                digest: blob.digest.clone()?,
                size: blob.size?,
                from: From::Source {
                    source: Arc::clone(source),
                    blob: blob.clone(),
                },
            })
        })
        .collect()
}

/// `registry/repository:tag1,tag2`, or `@digest` for none.
fn target_name(target: &Target, dest: &Destination) -> String {
    let base = format!("{}/{}", target.registry, dest.repository);
    if dest.tags.is_empty() {
        base
    } else {
        format!("{base}:{}", dest.tags.join(","))
    }
}

/// The line (or `--json` object) for one pushed image.
pub fn print_report(
    out: &mut dyn std::io::Write,
    r: &PushReport,
    json: bool,
) -> std::io::Result<()> {
    if json {
        let line = serde_json::to_string(r).map_err(std::io::Error::other)?;
        return writeln!(out, "{line}");
    }
    writeln!(out, "Pushed {} to {}", r.image, r.target)?;
    writeln!(out, "  Digest: {}", r.digest)?;
    writeln!(
        out,
        "  Blobs: {} ({} already there, {} mounted), {} uploaded",
        r.blobs,
        r.blobs_skipped,
        r.blobs_mounted,
        crate::report::human_bytes(r.bytes_uploaded)
    )?;
    if let Some(note) = &r.note {
        writeln!(out, "  Note: {note}")?;
    }
    Ok(())
}
