//! One image's pipeline: its sources in order (mirrors, then the origin),
//! resolve the reference to the wanted platform (or every platform), fetch
//! the config (which confirms the platform) and the layers together,
//! writing the archive while they arrive where the format allows; and the
//! image's report. Events go to the run's observer.
//!
//! It writes only the streamed archive of a single image; bundles and
//! layouts are the run's (`pull.rs`) to write once every image is in.

use std::path::PathBuf;
use std::sync::Arc;

use crate::archive::{self, AllPlatforms, ArchiveImage, Delivery, Packing, Place};
use crate::cache::Cache;
use crate::cli::Settings;
use crate::error::PullError;
use crate::events::{Event, Observer};
use crate::fetch::{Fetched, Fetcher};
use crate::mirror::{self, Source};
use crate::place::Keep;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::Registry;
use crate::report::ImageReport;
use crate::resolve::{self, Descriptor, Resolved};
use crate::session::Session;
use crate::thin::{self, Chains, ExcludeSource};

/// One image fetched and ready to archive.
pub struct Pulled {
    pub archive: ArchiveImage,
    pub platform: Platform,
    pub report: ImageReport,
    /// The archive, when it was written while the image downloaded.
    pub written: Option<Place>,
    /// Its parts, when it was split.
    pub parts: Option<archive::Parts>,
}

/// Where an image's archive goes, as far as the pipeline needs to know.
#[derive(Clone)]
pub enum Target {
    /// Into an archive written after the pull (bundles, layouts).
    Later,
    /// Into this file (or stdout), holding only this image.
    One(Place),
    /// Into a file of this directory named after the image and platform,
    /// ending as the packing says.
    DirOf(PathBuf, Packing),
}

impl Target {
    pub fn place(&self, archive: &ArchiveImage, platform: &Platform) -> Option<Place> {
        match self {
            Target::Later => None,
            Target::One(place) => Some(place.clone()),
            Target::DirOf(dir, packing) => {
                let name = archive.name_reference().archive_file_name(platform);
                let stem = name.strip_suffix(".tar").unwrap_or(&name);
                Some(Place::File(
                    dir.join(format!("{stem}{}", packing.extension())),
                ))
            }
        }
    }
}

/// What one image is pulled with.
pub struct Pipeline<'a> {
    pub settings: &'a Settings,
    pub cache: Arc<Cache>,
    pub observer: Arc<dyn Observer>,
    /// registries.conf and daemon.json, read once for the run.
    pub config: Arc<mirror::Config>,
    /// Connections downloading blob data at once, across images: `-j`.
    pub connections: Arc<tokio::sync::Semaphore>,
    /// `--exclude-from`: the layer chains the target already has.
    pub exclude: Arc<Chains>,
}

/// The blobs fetched for one image, and where its archive went.
struct Fetch {
    config: Fetched,
    layers: Vec<Fetched>,
    platform: Platform,
    archive: ArchiveImage,
    written: Option<Place>,
    parts: Option<archive::Parts>,
}

impl Pipeline<'_> {
    /// Pulls one image from its mirrors in order, then its origin, as
    /// [`Session::in_turn`] hands over between them.
    pub async fn pull(
        &self,
        session: &tokio::sync::Mutex<Session>,
        given: &str,
        reference: &Reference,
        rename: Option<Reference>,
        target: &Target,
    ) -> Result<Pulled, PullError> {
        let sources = mirror::sources(reference, &self.settings.mirrors, &self.config)?;
        let image = reference.to_string();
        Session::in_turn(session, &image, &sources, |registry, source| {
            let rename = rename.clone();
            async move {
                self.pull_from(&registry, given, reference, rename, &source, target)
                    .await
            }
        })
        .await
    }

    async fn pull_from(
        &self,
        registry: &Arc<Registry>,
        given: &str,
        reference: &Reference,
        rename: Option<Reference>,
        source: &Source,
        target: &Target,
    ) -> Result<Pulled, PullError> {
        let s = self.settings;
        // The reference as this source knows it (a mirror may add a prefix).
        let remote = Reference {
            repository: source.repository.clone(),
            ..reference.clone()
        };
        if s.platform_all || !s.platform_list.is_empty() {
            return self
                .pull_all_from(registry, given, reference, &remote, rename, source)
                .await;
        }
        let image = reference.to_string();
        let resolved = resolve::resolve(registry, &remote, &s.platform).await?;
        let fetcher = self.fetcher(registry, &image, source);
        let layers = distinct(&resolved.layers);
        self.observer.event(Event::ImageStarted {
            image: image.clone(),
            platform: resolved.platform.to_string(),
            bytes: layers.iter().map(|d| d.size).sum::<u64>() + resolved.config.size,
            blobs: layers.len() + 1,
        });
        let outcome = self
            .fetch_image(&fetcher, &resolved, reference, rename, target)
            .await;
        self.observer.event(Event::ImageDone);
        let fetch = outcome.inspect_err(|_| {
            // No archive will need them: let go of what was held.
            let blobs = std::iter::once(&resolved.config).chain(&resolved.layers);
            self.cache.release(blobs.map(|d| &d.digest));
        })?;
        let layers = self.report(given, &image, source, &fetch.layers);
        let report = ImageReport {
            digest: resolved.digest.to_string(),
            manifest_digest: resolved.manifest.digest.to_string(),
            image_id: resolved.config.digest.to_string(),
            platform: fetch.platform.to_string(),
            layers: resolved.layers.len(),
            bytes_downloaded: layers.bytes_downloaded + fetch.config.downloaded,
            layers_left_out: (!self.exclude.is_empty()).then_some(fetch.archive.left_out),
            bytes_left_out: (!self.exclude.is_empty())
                .then(|| fetch.archive.left_out_layers().iter().map(|l| l.size).sum()),
            ..layers
        };
        Ok(Pulled {
            archive: fetch.archive,
            platform: fetch.platform,
            report,
            written: fetch.written,
            parts: fetch.parts,
        })
    }

    /// The config and the layers together (the layers into their places in
    /// the archive, the cache or both; each handed to the archive's writer
    /// as it comes in); for a thin archive the config first, whose diff_ids
    /// say which layers are wanted. The config confirms the platform: when
    /// it does not, the layers stop. The archive gets its name (which may
    /// hold the platform) once the config is in.
    async fn fetch_image(
        &self,
        fetcher: &Fetcher,
        resolved: &Resolved,
        reference: &Reference,
        rename: Option<Reference>,
        target: &Target,
    ) -> Result<Fetch, PullError> {
        let mut archive = ArchiveImage {
            reference: reference.clone(),
            rename,
            manifest: resolved.manifest.clone(),
            manifest_media_type: resolved.manifest_media_type.clone(),
            config: resolved.config.clone(),
            layers: resolved.layers.clone(),
            all: None,
            left_out: 0,
        };
        let mut config = None;
        if !self.exclude.is_empty() {
            let (fetched, bytes, platform) = self.config_of(fetcher, resolved).await?;
            archive.left_out = self.exclude.covered(&crate::thin::diff_ids(&bytes));
            for l in archive.left_out_layers() {
                self.observer.event(Event::Skipped {
                    digest: l.digest.clone(),
                    size: l.size,
                    why: crate::events::Skip::LeftOut,
                });
            }
            config = Some((fetched, platform));
        }
        // Laid out under a name for the platform the index states; named
        // for the config's once it is in.
        let guess = config.as_ref().map_or(&resolved.platform, |(_, p)| p);
        let mut stream = match target.place(&archive, guess) {
            Some(place) => archive::Stream::start(
                self.settings.format,
                &self.delivery(place),
                &archive,
                Arc::clone(&self.cache),
                self.keep(),
            )?,
            None => None,
        };
        let fetcher = Fetcher {
            placement: stream.as_ref().and_then(|s| s.placement()),
            ..fetcher.clone()
        };
        let wanted = archive.kept_layers().to_vec();
        let got = self
            .download(&fetcher, resolved, &wanted, config, &mut stream)
            .await;
        let ((config, platform), layers) = match got {
            Ok(got) => got,
            Err(e) => {
                if let Some(stream) = stream {
                    stream.abort().await;
                }
                return Err(e);
            }
        };
        let place = target.place(&archive, &platform);
        let (written, parts) = match (stream, place) {
            (Some(stream), Some(place)) => {
                self.observer
                    .event(Event::Note(format!("Writing {}", place.display())));
                let parts = stream.finish(&self.delivery(place.clone())).await?;
                (Some(place), parts)
            }
            _ => (None, None),
        };
        Ok(Fetch {
            config,
            layers,
            platform,
            archive,
            written,
            parts,
        })
    }

    /// `layers` downloaded, and the config unless it is `given`; each handed
    /// to the archive's writer as it comes in. Cut short when the config
    /// fails (a wrong platform) or the writer does.
    async fn download(
        &self,
        fetcher: &Fetcher,
        resolved: &Resolved,
        layers: &[Descriptor],
        given: Option<(Fetched, Platform)>,
        stream: &mut Option<archive::Stream>,
    ) -> Result<((Fetched, Platform), Vec<Fetched>), PullError> {
        // Dropped on return, so the writer's channel can close.
        let notify = stream.as_ref().map(|s| s.notifier());
        let ready = |digest: &crate::digest::Digest| {
            if let Some(notify) = &notify {
                notify(digest);
            }
        };
        let config = async {
            let got = match given {
                Some(got) => got,
                None => {
                    let (fetched, _, platform) = self.config_of(fetcher, resolved).await?;
                    (fetched, platform)
                }
            };
            ready(&resolved.config.digest);
            Ok::<_, PullError>(got)
        };
        let each = |f: &Fetched| ready(&f.digest);
        let layers = fetcher.fetch_all_then(layers, &each);
        let both = async { tokio::try_join!(config, layers) };
        match stream {
            Some(stream) => tokio::select! {
                got = both => got,
                e = stream.failed() => Err(e),
            },
            None => both.await,
        }
    }

    /// The config fetched, read and checked: its bytes and its platform.
    async fn config_of(
        &self,
        fetcher: &Fetcher,
        resolved: &Resolved,
    ) -> Result<(Fetched, Vec<u8>, Platform), PullError> {
        let s = self.settings;
        let config = fetcher.fetch_one(&resolved.config).await?;
        let bytes = archive::read_config(&self.cache, &resolved.config)?;
        let platform = resolve::check_config(
            &fetcher.image,
            fetcher.registry.name(),
            &bytes,
            resolved,
            &s.platform,
            s.platform_explicit,
        )?;
        Ok((config, bytes, platform))
    }

    fn delivery(&self, place: Place) -> Delivery {
        let s = self.settings;
        Delivery {
            place,
            packing: s.packing,
            sync: s.sync,
            split: s.split,
        }
    }

    /// Whether blobs written into an archive go into the cache too: not
    /// with `--no-cache` for a single image, where nothing else reads them.
    fn keep(&self) -> Keep {
        match (&self.settings.cache_dir, self.settings.images.len()) {
            (None, 1) => Keep::ArchiveOnly,
            _ => Keep::CacheAndArchive,
        }
    }

    /// The chains of `--exclude-from`'s sources: archives and layouts read
    /// offline, images resolved for the platform pulled (their configs
    /// fetched through the cache).
    pub async fn exclusions(
        &self,
        session: &tokio::sync::Mutex<Session>,
    ) -> Result<Chains, PullError> {
        let mut chains = Chains::default();
        for source in &self.settings.exclude_from {
            match source {
                ExcludeSource::Path(path) => {
                    let path = path.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        let mut found = Chains::default();
                        thin::chains_of_archive(&path, &mut found)
                            .map(|()| found)
                            .map_err(|e| PullError::Setup(format!("--exclude-from {e}")))
                    });
                    let found = read.await.map_err(|e| {
                        PullError::io("reading", "--exclude-from", std::io::Error::other(e))
                    })??;
                    chains.extend(found);
                }
                ExcludeSource::Image(reference) => {
                    chains.add(self.diff_ids_of(session, reference).await?);
                }
            }
        }
        Ok(chains)
    }

    /// The diff_ids of `reference`'s image for the platform pulled.
    async fn diff_ids_of(
        &self,
        session: &tokio::sync::Mutex<Session>,
        reference: &Reference,
    ) -> Result<Vec<crate::digest::Digest>, PullError> {
        let sources = mirror::sources(reference, &self.settings.mirrors, &self.config)?;
        let image = reference.to_string();
        Session::in_turn(session, &image, &sources, |registry, source| {
            let image = image.clone();
            async move {
                let remote = Reference {
                    repository: source.repository.clone(),
                    ..reference.clone()
                };
                let resolved =
                    resolve::resolve(&registry, &remote, &self.settings.platform).await?;
                let fetcher = Fetcher {
                    observer: Arc::new(crate::events::Silent),
                    ..self.fetcher(&registry, &image, &source)
                };
                fetcher.fetch_one(&resolved.config).await?;
                let config = archive::read_config(&self.cache, &resolved.config)?;
                self.cache.release(std::iter::once(&resolved.config.digest));
                Ok(thin::diff_ids(&config))
            }
        })
        .await
    }

    fn fetcher(&self, registry: &Arc<Registry>, image: &str, source: &Source) -> Fetcher {
        Fetcher {
            registry: Arc::clone(registry),
            cache: Arc::clone(&self.cache),
            observer: Arc::clone(&self.observer),
            concurrency: self.settings.jobs,
            image: image.to_string(),
            repository: source.repository.clone(),
            chunking: self.settings.chunking,
            connections: Arc::clone(&self.connections),
            placement: None,
        }
    }

    /// The report's fields that come from the blobs fetched; the caller
    /// fills in what the manifests say.
    fn report(
        &self,
        given: &str,
        image: &str,
        source: &Source,
        fetched: &[Fetched],
    ) -> ImageReport {
        let from_cache = fetched.iter().filter(|f| f.from_cache);
        ImageReport {
            image: given.to_string(),
            resolved: image.to_string(),
            digest: String::new(),
            manifest_digest: String::new(),
            image_id: String::new(),
            platform: String::new(),
            format: self.settings.format.to_string(),
            output: String::new(),
            parts: Vec::new(),
            checksums: None,
            layers_left_out: None,
            bytes_left_out: None,
            registry_digest: None,
            layers: 0,
            bytes_downloaded: fetched.iter().map(|f| f.downloaded).sum(),
            bytes_from_cache: from_cache.clone().map(|f| f.size).sum(),
            cache_hits: from_cache.count(),
            seconds: 0.0,
            distinct_layers: fetched.len(),
            source: source.label.clone(),
        }
    }

    /// `--platform all`: the index and every image in it.
    async fn pull_all_from(
        &self,
        registry: &Arc<Registry>,
        given: &str,
        reference: &Reference,
        remote: &Reference,
        rename: Option<Reference>,
        source: &Source,
    ) -> Result<Pulled, PullError> {
        let image = reference.to_string();
        let mut resolved = resolve::resolve_all(registry, remote).await?;
        let list = &self.settings.platform_list;
        if !list.is_empty() {
            resolved = resolve::keep_platforms(resolved, list, &image, registry.name())?;
        }
        let fetcher = self.fetcher(registry, &image, source);
        let all: Vec<Descriptor> = resolved
            .members
            .iter()
            .flat_map(|m| std::iter::once(m.config.clone()).chain(m.layers.iter().cloned()))
            .collect();
        let blobs: Vec<Descriptor> = distinct(&all).into_iter().cloned().collect();
        self.observer.event(Event::ImageStarted {
            image: image.clone(),
            platform: "all platforms".into(),
            bytes: blobs.iter().map(|d| d.size).sum(),
            blobs: blobs.len(),
        });
        let outcome = fetcher.fetch_all(&blobs).await;
        self.observer.event(Event::ImageDone);
        let fetched =
            outcome.inspect_err(|_| self.cache.release(blobs.iter().map(|d| &d.digest)))?;
        let first =
            resolved
                .members
                .first()
                .cloned()
                .ok_or_else(|| PullError::InvalidManifest {
                    image: image.clone(),
                    registry: registry.name().to_string(),
                    what: "index".into(),
                    detail: "it lists no image".into(),
                })?;
        let report = ImageReport {
            digest: resolved.digest.to_string(),
            manifest_digest: resolved
                .index
                .as_ref()
                .map(|(m, _)| &m.digest)
                .unwrap_or(&first.manifest.digest)
                .to_string(),
            image_id: first.config.digest.to_string(),
            platform: match list.is_empty() {
                true => "all".into(),
                false => list
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            },
            layers: resolved.members.iter().map(|m| m.layers.len()).sum(),
            registry_digest: resolved.trimmed_from.as_ref().map(|d| d.to_string()),
            ..self.report(given, &image, source, &fetched)
        };
        let members = resolved.members;
        let all = resolved
            .index
            .map(|(index, index_media_type)| AllPlatforms {
                index,
                index_media_type,
                members,
            });
        Ok(Pulled {
            archive: ArchiveImage {
                reference: reference.clone(),
                rename,
                manifest: first.manifest,
                manifest_media_type: first.media_type,
                config: first.config,
                layers: first.layers,
                all,
                left_out: 0,
            },
            platform: Platform {
                os: "all".into(),
                architecture: "all".into(),
                variant: None,
            },
            report,
            written: None,
            parts: None,
        })
    }
}

fn distinct(ds: &[Descriptor]) -> Vec<&Descriptor> {
    let mut seen = std::collections::HashSet::new();
    ds.iter().filter(|d| seen.insert(&d.digest)).collect()
}
