//! A whole run: for each image, resolve it, fetch its blobs into the cache and
//! write its archive (or, for one `.tar` output, collect every image and write
//! the bundle at the end). Returns what each image reports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::archive::{self, AllPlatforms, ArchiveImage};
use crate::cache::Cache;
use crate::cli::{Output, Settings};
use crate::credentials::{CredentialStore, Locations};
use crate::error::PullError;
use crate::fetch::{self, Fetcher};
use crate::mirror::{self, Source};
use crate::platform::Platform;
use crate::progress::View;
use crate::reference::Reference;
use crate::registry::{Credentials, Registry, transport};
use crate::report::ImageReport;
use crate::resolve::{self, Descriptor};
use tracing::{debug, warn};

/// One image fetched and ready to archive.
struct Pulled {
    archive: ArchiveImage,
    platform: Platform,
    report: ImageReport,
    /// The archive, when it was written while the image downloaded.
    written: Option<PathBuf>,
}

/// Where an image's archive goes, as far as the pull needs to know.
#[derive(Clone)]
enum Target {
    /// Into an archive written after the pull (bundles, layouts).
    Later,
    /// Into this file, holding only this image.
    File(PathBuf),
    /// Into a file of this directory named after the image and platform.
    DirOf(PathBuf),
}

impl Target {
    fn path(&self, archive: &ArchiveImage, platform: &Platform) -> Option<PathBuf> {
        match self {
            Target::Later => None,
            Target::File(path) => Some(path.clone()),
            Target::DirOf(dir) => {
                Some(dir.join(archive.name_reference().archive_file_name(platform)))
            }
        }
    }
}

/// What a run achieved: the images written, and how many failed.
pub struct RunOutcome {
    pub reports: Vec<ImageReport>,
    pub failed: usize,
}

pub struct Puller<'a> {
    settings: &'a Settings,
    cache: Arc<Cache>,
    view: Arc<View>,
    /// The client for registries without `certs.d` settings.
    http: reqwest::Client,
    /// Clients for registries with `certs.d` settings, by registry.
    tls_clients: HashMap<String, reqwest::Client>,
    store: CredentialStore,
    /// Stored credentials found, by registry and repository.
    found: HashMap<(String, String), Option<Credentials>>,
    registries: Vec<(RegistryKey, Arc<Registry>)>,
    chunking: fetch::Chunking,
    /// Connections downloading blob data at once: `-j`.
    connections: Arc<tokio::sync::Semaphore>,
}

/// What makes two registry clients the same: where they go and as whom.
#[derive(PartialEq, Eq)]
struct RegistryKey {
    host: String,
    scheme: Option<&'static str>,
    credentials: Option<Credentials>,
}

impl<'a> Puller<'a> {
    pub fn new(
        settings: &'a Settings,
        cache: Arc<Cache>,
        view: Arc<View>,
    ) -> Result<Self, PullError> {
        let http = transport::build_client(&settings.transport)
            .map_err(|e| PullError::Setup(e.to_string()))?;
        Ok(Puller {
            settings,
            cache,
            view,
            http,
            tls_clients: HashMap::new(),
            store: CredentialStore::load(&Locations::from_env()),
            found: HashMap::new(),
            registries: Vec::new(),
            chunking: fetch::Chunking::from_env(),
            connections: Arc::new(tokio::sync::Semaphore::new(settings.jobs.max(1))),
        })
    }

    /// The HTTP client for a registry: its own when Docker's `certs.d` has a
    /// directory for it, else the shared one.
    fn client_for(&mut self, source: &Source) -> Result<reqwest::Client, PullError> {
        if let Some(c) = self.tls_clients.get(&source.registry) {
            return Ok(c.clone());
        }
        let roots = transport::certs_d_roots();
        let mut tls = None;
        for name in [&source.registry, &source.host] {
            tls = transport::registry_tls(&roots, name)
                .map_err(|e| PullError::Setup(format!("registry {}: {e}", source.registry)))?;
            if tls.is_some() {
                break;
            }
        }
        let Some(tls) = tls else {
            return Ok(self.http.clone());
        };
        debug!(registry = %source.registry, ?tls, "certs.d settings");
        let client = transport::build_client_with(&self.settings.transport, Some(tls))
            .map_err(|e| PullError::Setup(format!("registry {}: {e}", source.registry)))?;
        self.tls_clients
            .insert(source.registry.clone(), client.clone());
        Ok(client)
    }

    /// The credentials for a source: those given on the command line or in
    /// the environment for the registries images name, else stored ones.
    fn credentials_for(&mut self, source: &Source) -> Option<Credentials> {
        if !source.mirror
            && let Some(c) = &self.settings.credentials
        {
            return Some(c.clone());
        }
        let key = (source.registry.clone(), source.repository.clone());
        if let Some(found) = self.found.get(&key) {
            return found.clone();
        }
        // Credential helpers are programs: keep them off the async workers.
        let found =
            tokio::task::block_in_place(|| self.store.lookup(&source.registry, &source.repository));
        if let Some(c) = &found {
            debug!(registry = %source.registry, credentials = ?c, "stored credentials");
        }
        self.found.insert(key, found.clone());
        found
    }

    fn registry(&mut self, source: &Source) -> Result<Arc<Registry>, PullError> {
        let key = RegistryKey {
            host: source.host.clone(),
            scheme: source.scheme,
            credentials: self.credentials_for(source),
        };
        if let Some((_, r)) = self.registries.iter().find(|(k, _)| *k == key) {
            return Ok(Arc::clone(r));
        }
        let http = self.client_for(source)?;
        let registry = Arc::new(
            Registry::new(
                &source.registry,
                &source.host,
                http,
                self.settings.transport.clone(),
                key.credentials.clone(),
            )
            .with_scheme(source.scheme),
        );
        self.registries.push((key, Arc::clone(&registry)));
        Ok(registry)
    }

    /// Pulls every image and writes the archives; `on_image` sees each report
    /// as soon as its archive is written. With a directory output, an image
    /// that fails is reported to `on_error` and the others still go ahead; one
    /// archive for all images is written only if every image succeeds.
    pub async fn run(
        &mut self,
        mut on_image: impl FnMut(&ImageReport),
        mut on_error: impl FnMut(&PullError),
    ) -> Result<RunOutcome, PullError> {
        let images = self.settings.images.clone();
        let mut reports = Vec::new();
        let mut failed = 0;
        match self.settings.output.clone() {
            Output::Dir(dir) | Output::Layout(dir) => {
                let layout = matches!(self.settings.output, Output::Layout(_));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| PullError::io("creating the output directory", &dir, e))?;
                for (i, (given, reference)) in images.iter().enumerate() {
                    let tag = if i == 0 {
                        self.settings.tag.clone()
                    } else {
                        None
                    };
                    let started = Instant::now();
                    let target = if layout {
                        Target::Later
                    } else {
                        Target::DirOf(dir.clone())
                    };
                    let pulled = async {
                        let mut pulled = self.pull_one(given, reference, tag, &target).await?;
                        let path = match pulled.written.clone() {
                            Some(path) => path,
                            None => {
                                // A layout goes into the directory itself.
                                let path = target
                                    .path(&pulled.archive, &pulled.platform)
                                    .unwrap_or_else(|| dir.clone());
                                self.write_archive(&path, std::slice::from_ref(&pulled.archive))
                                    .await?;
                                path
                            }
                        };
                        pulled.report.output = display_path(&path);
                        Ok::<_, PullError>(pulled)
                    }
                    .await;
                    match pulled {
                        Ok(mut pulled) => {
                            pulled.report.seconds = started.elapsed().as_secs_f64();
                            on_image(&pulled.report);
                            reports.push(pulled.report);
                        }
                        Err(e) => {
                            failed += 1;
                            on_error(&e);
                        }
                    }
                }
            }
            Output::File(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| PullError::io("creating the output directory", parent, e))?;
                }
                let started = Instant::now();
                // One image: its archive is written as it downloads.
                let target = if images.len() == 1 {
                    Target::File(path.clone())
                } else {
                    Target::Later
                };
                let mut all = Vec::new();
                for (i, (given, reference)) in images.iter().enumerate() {
                    let tag = if i == 0 {
                        self.settings.tag.clone()
                    } else {
                        None
                    };
                    all.push(self.pull_one(given, reference, tag, &target).await?);
                }
                if all.iter().any(|p| p.written.is_none()) {
                    let archives: Vec<ArchiveImage> =
                        all.iter().map(|p| p.archive.clone()).collect();
                    self.write_archive(&path, &archives).await?;
                }
                for mut p in all {
                    p.report.output = display_path(&path);
                    p.report.seconds = started.elapsed().as_secs_f64();
                    on_image(&p.report);
                    reports.push(p.report);
                }
            }
        }
        Ok(RunOutcome { reports, failed })
    }

    async fn write_archive(&self, path: &Path, images: &[ArchiveImage]) -> Result<(), PullError> {
        self.view.message(&format!("Writing {}", path.display()));
        let cache = Arc::clone(&self.cache);
        let format = self.settings.format;
        let (sync, limit) = (self.settings.sync, self.settings.max_layer_size);
        let path: PathBuf = path.to_path_buf();
        let images = images.to_vec();
        tokio::task::spawn_blocking(move || {
            archive::write(format, &path, &images, &cache, sync, limit)
        })
        .await
        .map_err(|e| PullError::io("writing", "the archive", std::io::Error::other(e)))?
    }

    /// Pulls one image from its mirrors in order, then its origin: a mirror
    /// that fails for any reason but a local one (disk, interruption) hands
    /// over to the next.
    async fn pull_one(
        &mut self,
        given: &str,
        reference: &Reference,
        rename: Option<Reference>,
        target: &Target,
    ) -> Result<Pulled, PullError> {
        let sources = mirror::sources(reference, &self.settings.mirrors);
        let mut sources = sources.iter().peekable();
        while let Some(source) = sources.next() {
            let result = self
                .pull_from(given, reference, rename.clone(), source, target)
                .await;
            match (result, sources.peek()) {
                (Err(e), Some(next)) if source.mirror && !is_local_failure(&e) => {
                    warn!(
                        "mirror {} failed for {}: {e}; trying {}",
                        source.label, reference, next.label
                    );
                }
                (result, _) => return result,
            }
        }
        unreachable!("an image always has its origin as a source")
    }

    async fn pull_from(
        &mut self,
        given: &str,
        reference: &Reference,
        rename: Option<Reference>,
        source: &Source,
        target: &Target,
    ) -> Result<Pulled, PullError> {
        let image = reference.to_string();
        let registry = self.registry(source).map_err(|e| match e {
            PullError::Setup(detail) => PullError::Setup(format!("{image}: {detail}")),
            other => other,
        })?;
        let s = self.settings;
        // The reference as this source knows it (a mirror may add a prefix).
        let remote = Reference {
            repository: source.repository.clone(),
            ..reference.clone()
        };
        if s.platform_all {
            return self
                .pull_all_from(given, reference, &remote, rename, registry, source)
                .await;
        }
        let resolved = resolve::resolve(&registry, &remote, &s.platform).await?;
        let fetcher = self.fetcher(&registry, &image, source);

        let layer_bytes: u64 = distinct(&resolved.layers).iter().map(|d| d.size).sum();
        self.view.begin_image(
            &image,
            &resolved.platform.to_string(),
            layer_bytes + resolved.config.size,
            distinct(&resolved.layers).len() + 1,
        );
        // The config first: it confirms the platform before layers are fetched.
        let fetching = async {
            let config = fetcher.fetch_one(&resolved.config).await?;
            let config_bytes = fetch::read_small_blob(&self.cache, &resolved.config)?;
            let platform = resolve::check_config(
                &image,
                registry.name(),
                &config_bytes,
                &resolved,
                &s.platform,
                s.platform_explicit,
            )?;
            let archive = ArchiveImage {
                reference: reference.clone(),
                rename,
                manifest: resolved.manifest.clone(),
                manifest_media_type: resolved.manifest_media_type.clone(),
                config: resolved.config.clone(),
                layers: resolved.layers.clone(),
                all: None,
            };
            // Where the format allows, the archive is written as blobs arrive.
            let path = target.path(&archive, &platform);
            let stream = match &path {
                Some(path) => archive::Stream::start(
                    s.format,
                    path,
                    &archive,
                    Arc::clone(&self.cache),
                    s.sync,
                )?,
                None => None,
            };
            let Some(mut stream) = stream else {
                let layers = fetcher.fetch_all(&resolved.layers).await?;
                return Ok::<_, PullError>((config, platform, layers, archive, None));
            };
            stream.ready(&resolved.config.digest);
            let fetched = {
                let notify = stream.notifier();
                let ready = move |f: &fetch::Fetched| notify(&f.digest);
                tokio::select! {
                    fetched = fetcher.fetch_all_then(&resolved.layers, &ready) => fetched,
                    e = stream.failed() => Err(e),
                }
            };
            match fetched {
                Ok(layers) => {
                    if let Some(path) = &path {
                        self.view.message(&format!("Writing {}", path.display()));
                    }
                    stream.finish().await?;
                    Ok((config, platform, layers, archive, path))
                }
                Err(e) => {
                    stream.abort().await;
                    Err(e)
                }
            }
        };
        let outcome = fetching.await;
        self.view.end_image();
        let (config_fetch, platform, fetched, archive, written) = outcome?;

        let cache_hits = fetched.iter().filter(|f| f.from_cache).count();
        let bytes_from_cache = fetched
            .iter()
            .filter(|f| f.from_cache)
            .map(|f| f.size)
            .sum();
        let bytes_downloaded =
            fetched.iter().map(|f| f.downloaded).sum::<u64>() + config_fetch.downloaded;
        let report = ImageReport {
            image: given.to_string(),
            resolved: image.clone(),
            digest: resolved.digest.to_string(),
            manifest_digest: resolved.manifest.digest.to_string(),
            image_id: resolved.config.digest.to_string(),
            platform: platform.to_string(),
            format: s.format.to_string(),
            output: String::new(),
            layers: resolved.layers.len(),
            bytes_downloaded,
            bytes_from_cache,
            cache_hits,
            seconds: 0.0,
            distinct_layers: fetched.len(),
            source: source.label.clone(),
        };
        Ok(Pulled {
            archive,
            platform,
            report,
            written,
        })
    }

    fn fetcher(&self, registry: &Arc<Registry>, image: &str, source: &Source) -> Fetcher {
        Fetcher {
            registry: Arc::clone(registry),
            cache: Arc::clone(&self.cache),
            observer: self.view.clone(),
            concurrency: self.settings.jobs,
            retries: self.settings.transport.retries,
            image: image.to_string(),
            repository: source.repository.clone(),
            chunking: self.chunking,
            connections: Arc::clone(&self.connections),
        }
    }

    /// `--platform all`: the index and every image in it.
    async fn pull_all_from(
        &self,
        given: &str,
        reference: &Reference,
        remote: &Reference,
        rename: Option<Reference>,
        registry: Arc<Registry>,
        source: &Source,
    ) -> Result<Pulled, PullError> {
        let image = reference.to_string();
        let s = self.settings;
        let resolved = resolve::resolve_all(&registry, remote).await?;
        let fetcher = self.fetcher(&registry, &image, source);
        let blobs: Vec<Descriptor> = {
            let all: Vec<Descriptor> = resolved
                .members
                .iter()
                .flat_map(|m| std::iter::once(m.config.clone()).chain(m.layers.iter().cloned()))
                .collect();
            distinct(&all).into_iter().cloned().collect()
        };
        self.view.begin_image(
            &image,
            "all platforms",
            blobs.iter().map(|d| d.size).sum(),
            blobs.len(),
        );
        let outcome = fetcher.fetch_all(&blobs).await;
        self.view.end_image();
        let fetched = outcome?;
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
        let all_platform = Platform {
            os: "all".into(),
            architecture: "all".into(),
            variant: None,
        };
        let report = ImageReport {
            image: given.to_string(),
            resolved: image.clone(),
            digest: resolved.digest.to_string(),
            manifest_digest: resolved
                .index
                .as_ref()
                .map(|(m, _)| &m.digest)
                .unwrap_or(&first.manifest.digest)
                .to_string(),
            image_id: first.config.digest.to_string(),
            platform: "all".into(),
            format: s.format.to_string(),
            output: String::new(),
            layers: resolved.members.iter().map(|m| m.layers.len()).sum(),
            bytes_downloaded: fetched.iter().map(|f| f.downloaded).sum(),
            bytes_from_cache: fetched
                .iter()
                .filter(|f| f.from_cache)
                .map(|f| f.size)
                .sum(),
            cache_hits: fetched.iter().filter(|f| f.from_cache).count(),
            seconds: 0.0,
            distinct_layers: fetched.len(),
            source: source.label.clone(),
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
            },
            platform: all_platform,
            report,
            written: None,
        })
    }
}

fn distinct(ds: &[Descriptor]) -> Vec<&Descriptor> {
    let mut seen = std::collections::HashSet::new();
    ds.iter().filter(|d| seen.insert(&d.digest)).collect()
}

fn display_path(p: &Path) -> String {
    p.display().to_string()
}

/// Failures no other registry would avoid.
fn is_local_failure(e: &PullError) -> bool {
    matches!(
        e,
        PullError::Io { .. } | PullError::Interrupted | PullError::Setup(_)
    )
}
