//! A whole run: every image through the pipeline with one [`Session`]
//! (several images at once, [`IMAGES_AT_ONCE`], their downloads within the
//! one `-j` budget; reports in the order given), into
//! the output the settings name: a directory receiving one archive per image
//! (an image that fails is reported and the others go ahead), an OCI layout
//! directory, or one archive holding every image (written only when every
//! image is in), in a file or on stdout. Returns what each image reports.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::archive::{self, ArchiveImage, Delivery, Place};
use crate::cache::Cache;
use crate::cli::{Output, Settings};
use crate::error::PullError;
use crate::events::{Event, Observer};
use crate::mirror;
use crate::pipeline::{Pipeline, Pulled, Target};
use crate::reference::Reference;
use crate::report::ImageReport;
use crate::session::Session;

/// What a run achieved: the images written, and how many failed.
pub struct RunOutcome {
    pub reports: Vec<ImageReport>,
    pub failed: usize,
}

pub struct Puller<'a> {
    settings: &'a Settings,
    /// Shared by the images pulled at once (locked only to find a client).
    session: tokio::sync::Mutex<Session>,
    pipeline: Pipeline<'a>,
}

/// The session a run over `settings` talks to registries with, and the
/// mirror configuration (registries.conf, daemon.json), read once.
pub fn open_session(settings: &Settings) -> Result<(Session, mirror::Config), PullError> {
    let mut warnings = Vec::new();
    let config = mirror::Config::load(&settings.source_files, &mut warnings)
        .map_err(|e| PullError::Setup(e.to_string()))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let session = Session::new(
        settings.transport.clone(),
        settings.credentials.clone(),
        &settings.credential_locations,
        config.daemon.insecure.clone(),
    )?;
    Ok((session, config))
}

/// At most this many images of a run are resolved and downloaded at once
/// (their blob downloads share the one `-j` budget).
pub const IMAGES_AT_ONCE: usize = 8;

impl<'a> Puller<'a> {
    pub fn new(
        settings: &'a Settings,
        cache: Arc<Cache>,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, PullError> {
        let (session, config) = open_session(settings)?;
        Ok(Puller {
            settings,
            session: tokio::sync::Mutex::new(session),
            pipeline: Pipeline {
                settings,
                cache,
                observer,
                config: Arc::new(config),
                connections: Arc::new(tokio::sync::Semaphore::new(settings.jobs.max(1))),
                exclude: Arc::default(),
            },
        })
    }

    /// Pulls every image and writes the archives; `on_image` sees each report
    /// as soon as its archive is written. With a directory output, an image
    /// that fails is reported to `on_error` and the others still go ahead; one
    /// archive for all images is written only if every image succeeds.
    pub async fn run(
        &mut self,
        on_image: impl FnMut(&ImageReport),
        on_error: impl FnMut(&PullError),
    ) -> Result<RunOutcome, PullError> {
        if !self.settings.exclude_from.is_empty() {
            let chains = self.pipeline.exclusions(&self.session).await?;
            self.pipeline.exclude = Arc::new(chains);
        }
        match self.settings.output.clone() {
            Output::Dir(dir) => self.write_dir(&dir, false, on_image, on_error).await,
            Output::Layout(dir) => self.write_dir(&dir, true, on_image, on_error).await,
            Output::File(path) => self.write_one(Place::File(path), on_image).await,
            Output::Stdout => self.write_one(Place::Stdout, on_image).await,
        }
    }

    /// The `--tag` rename applies to the first image only.
    fn rename(&self, i: usize) -> Option<Reference> {
        if i == 0 {
            self.settings.tag.clone()
        } else {
            None
        }
    }

    /// One archive per image in `dir`, or every image into the layout `dir`.
    /// Images go [`IMAGES_AT_ONCE`] at a time; reports come in the order
    /// the images were given.
    async fn write_dir(
        &self,
        dir: &Path,
        layout: bool,
        mut on_image: impl FnMut(&ImageReport),
        mut on_error: impl FnMut(&PullError),
    ) -> Result<RunOutcome, PullError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| PullError::io("creating the output directory", dir, e))?;
        let target = if layout {
            Target::Later
        } else {
            Target::DirOf(dir.to_path_buf(), self.settings.packing)
        };
        let mut outcome = RunOutcome {
            reports: Vec::new(),
            failed: 0,
        };
        let target = &target;
        let mut pulls = stream::iter(self.settings.images.iter().enumerate())
            .map(|(i, (given, reference))| async move {
                let started = Instant::now();
                let pulled = self.image_into(dir, given, reference, i, target).await;
                (started, pulled)
            })
            .buffered(IMAGES_AT_ONCE);
        while let Some((started, pulled)) = pulls.next().await {
            match pulled {
                Ok(mut pulled) => {
                    pulled.report.seconds = started.elapsed().as_secs_f64();
                    on_image(&pulled.report);
                    outcome.reports.push(pulled.report);
                }
                Err(e) => {
                    outcome.failed += 1;
                    on_error(&e);
                }
            }
        }
        Ok(outcome)
    }

    /// One image into its own archive in `dir` (or into the layout `dir`).
    async fn image_into(
        &self,
        dir: &Path,
        given: &str,
        reference: &Reference,
        i: usize,
        target: &Target,
    ) -> Result<Pulled, PullError> {
        let rename = self.rename(i);
        let mut pulled = self
            .pipeline
            .pull(&self.session, given, reference, rename, target)
            .await?;
        let (place, parts) = match pulled.written.clone() {
            Some(place) => (place, pulled.parts.take()),
            None => {
                // A layout goes into the directory itself.
                let place = target
                    .place(&pulled.archive, &pulled.platform)
                    .unwrap_or_else(|| Place::File(dir.to_path_buf()));
                let parts = self
                    .write_archive(&place, std::slice::from_ref(&pulled.archive))
                    .await?;
                (place, parts)
            }
        };
        pulled.report.output = place.display();
        pulled.report.set_parts(parts.as_ref());
        self.pipeline
            .cache
            .release(pulled.archive.blobs().iter().map(|d| &d.digest));
        Ok(pulled)
    }

    /// Every image into the one archive `place` (a file, or stdout): written
    /// as it downloads for a single image, else once every image is in.
    async fn write_one(
        &self,
        place: Place,
        mut on_image: impl FnMut(&ImageReport),
    ) -> Result<RunOutcome, PullError> {
        if let Place::File(path) = &place
            && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| PullError::io("creating the output directory", parent, e))?;
        }
        let started = Instant::now();
        let images = self.settings.images.clone();
        let target = if images.len() == 1 {
            Target::One(place.clone())
        } else {
            Target::Later
        };
        let target = &target;
        let mut all: Vec<Pulled> = stream::iter(images.iter().enumerate())
            .map(|(i, (given, reference))| {
                let rename = self.rename(i);
                self.pipeline
                    .pull(&self.session, given, reference, rename, target)
            })
            .buffered(IMAGES_AT_ONCE)
            .try_collect()
            .await?;
        let mut parts = all.iter_mut().find_map(|p| p.parts.take());
        if all.iter().any(|p| p.written.is_none()) {
            let archives: Vec<ArchiveImage> = all.iter().map(|p| p.archive.clone()).collect();
            parts = self.write_archive(&place, &archives).await?;
        }
        for p in &all {
            self.pipeline
                .cache
                .release(p.archive.blobs().iter().map(|d| &d.digest));
        }
        let mut reports = Vec::new();
        for mut p in all {
            p.report.output = place.display();
            p.report.set_parts(parts.as_ref());
            p.report.seconds = started.elapsed().as_secs_f64();
            on_image(&p.report);
            reports.push(p.report);
        }
        Ok(RunOutcome { reports, failed: 0 })
    }

    /// Writes `images` into the archive at `place`; its parts, if split.
    async fn write_archive(
        &self,
        place: &Place,
        images: &[ArchiveImage],
    ) -> Result<Option<archive::Parts>, PullError> {
        self.pipeline
            .observer
            .event(Event::Note(format!("Writing {}", place.display())));
        let cache = Arc::clone(&self.pipeline.cache);
        let format = self.settings.format;
        let to = Delivery {
            place: place.clone(),
            packing: self.settings.packing,
            sync: self.settings.sync,
            split: self.settings.split,
        };
        let limit = self.settings.max_layer_size;
        let images = images.to_vec();
        tokio::task::spawn_blocking(move || archive::write(format, &to, &images, &cache, limit))
            .await
            .map_err(|e| PullError::io("writing", "the archive", std::io::Error::other(e)))?
    }
}
