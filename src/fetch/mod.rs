//! Downloading the blobs of an image: at most `-j` at once, each digest once,
//! cached blobs not at all. Reports what happens as [`Event`]s to an
//! [`Observer`] (the progress view); knows nothing of output formats, and
//! nothing of HTTP: the registry layer hands it bytes and typed errors.

mod blob;
pub mod chunked;
mod sink;

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::cache::Cache;
use crate::digest::Digest;
use crate::error::PullError;
use crate::registry::{Registry, RegistryError};
use crate::resolve::Descriptor;

pub use crate::events::{Event, Observer, Silent};
pub use chunked::Chunking;

/// How one blob was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub digest: Digest,
    pub size: u64,
    /// Already in the cache before this download.
    pub from_cache: bool,
    /// Bytes that came over the network for it.
    pub downloaded: u64,
}

#[derive(Clone)]
pub struct Fetcher {
    pub registry: Arc<Registry>,
    pub cache: Arc<Cache>,
    pub observer: Arc<dyn Observer>,
    pub concurrency: usize,
    /// The image being pulled, for messages.
    pub image: String,
    pub repository: String,
    /// When to fetch a blob in parallel ranged chunks.
    pub chunking: Chunking,
    /// One permit per connection downloading blob data (`-j` in all).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// The places in the archive being written that blobs go straight into.
    pub placement: Option<Arc<crate::place::Placement>>,
}

impl Fetcher {
    /// Makes sure every blob is in the cache; returns one [`Fetched`] per
    /// distinct digest, in the order first given.
    pub async fn fetch_all(&self, blobs: &[Descriptor]) -> Result<Vec<Fetched>, PullError> {
        self.fetch_all_then(blobs, &|_| {}).await
    }

    /// [`fetch_all`](Self::fetch_all), calling `ready` with each blob as
    /// soon as it is in the cache.
    pub async fn fetch_all_then(
        &self,
        blobs: &[Descriptor],
        ready: &(dyn Fn(&Fetched) + Sync),
    ) -> Result<Vec<Fetched>, PullError> {
        let mut seen = HashSet::new();
        let unique: Vec<&Descriptor> = blobs
            .iter()
            .filter(|d| seen.insert(d.digest.clone()))
            .collect();
        let mut results: Vec<(usize, Fetched)> = stream::iter(unique.into_iter().enumerate())
            .map(|(i, d)| async move {
                let f = self.fetch_one(d).await?;
                ready(&f);
                Ok::<_, PullError>((i, f))
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        results.sort_by_key(|(i, _)| *i);
        Ok(results.into_iter().map(|(_, f)| f).collect())
    }

    /// Makes sure one blob is in the cache.
    pub async fn fetch_one(&self, d: &Descriptor) -> Result<Fetched, PullError> {
        // Held first, so that a blob found is one no prune removes.
        self.cache.hold(&d.digest);
        if self.cache.contains(&d.digest, d.size) {
            self.cache.record_use(&d.digest, &self.image, true);
            return Ok(self.cached(d));
        }
        let fetched = blob::download(self, d).await?;
        // A blob written only into the archive has no use to record.
        if fetched.from_cache || self.cache.contains(&d.digest, d.size) {
            self.cache
                .record_use(&d.digest, &self.image, fetched.from_cache);
        }
        Ok(fetched)
    }

    /// A failure of the registry while fetching `d`, as the user sees it:
    /// bytes that do not fit the descriptor are damage (the blob is fetched
    /// once more), anything else names the image and the registry.
    pub(crate) fn registry_error(&self, d: &Descriptor, e: RegistryError) -> PullError {
        match e {
            RegistryError::Mismatch { detail, .. } => self.integrity(d, detail),
            source => PullError::Registry {
                image: self.image.clone(),
                source,
            },
        }
    }

    /// A blob whose bytes do not match its descriptor.
    pub(crate) fn integrity(&self, d: &Descriptor, detail: String) -> PullError {
        PullError::Integrity {
            image: self.image.clone(),
            registry: self.registry.name().to_string(),
            digest: d.digest.clone(),
            detail,
        }
    }

    /// Reports a blob found in the cache.
    fn cached(&self, d: &Descriptor) -> Fetched {
        self.observer.event(Event::Cached {
            digest: d.digest.clone(),
            size: d.size,
        });
        Fetched {
            digest: d.digest.clone(),
            size: d.size,
            from_cache: true,
            downloaded: 0,
        }
    }
}
