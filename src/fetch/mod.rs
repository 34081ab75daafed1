//! Downloading the blobs of an image: at most `-j` at once, each digest once,
//! cached blobs not at all. Reports what happens as [`Event`]s to an
//! [`Observer`] (the progress view); knows nothing of output formats.

mod blob;
pub mod chunked;

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::cache::Cache;
use crate::digest::Digest;
use crate::error::PullError;
use crate::registry::Registry;
use crate::resolve::Descriptor;

pub use chunked::Chunking;

/// What the fetcher tells the progress view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A blob was found in the cache.
    Cached { digest: Digest, size: u64 },
    /// A download started (or resumed from `offset`).
    Started {
        digest: Digest,
        size: u64,
        offset: u64,
    },
    /// `bytes` more arrived.
    Progress { digest: Digest, bytes: u64 },
    /// A download went back to `offset` (retry without resume).
    Rewound { digest: Digest, offset: u64 },
    /// A blob was verified and stored.
    Finished { digest: Digest },
}

pub trait Observer: Send + Sync {
    fn event(&self, event: Event);
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _event: Event) {}
}

/// A body that brings fewer bytes than this in a whole `--timeout` window is
/// treated as stalled (a trickle that never goes silent would otherwise hold
/// a pull for hours).
pub const LOW_SPEED_BYTES: u64 = 1024;

/// Watches a body's speed over windows of `--timeout` seconds.
pub(crate) struct SpeedWatch {
    window: std::time::Duration,
    start: std::time::Instant,
    bytes: u64,
}

impl SpeedWatch {
    pub(crate) fn new(window: std::time::Duration) -> SpeedWatch {
        SpeedWatch {
            window,
            start: std::time::Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` bytes; true when the window that just ended brought fewer
    /// than [`LOW_SPEED_BYTES`].
    pub(crate) fn record(&mut self, n: u64) -> bool {
        self.bytes += n;
        if self.start.elapsed() < self.window {
            return false;
        }
        let slow = self.bytes < LOW_SPEED_BYTES;
        self.start = std::time::Instant::now();
        self.bytes = 0;
        slow
    }
}

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

pub struct Fetcher {
    pub registry: Arc<Registry>,
    pub cache: Arc<Cache>,
    pub observer: Arc<dyn Observer>,
    pub concurrency: usize,
    /// Attempts without progress before a download gives up.
    pub retries: u32,
    /// The image being pulled, for messages.
    pub image: String,
    pub repository: String,
    /// When to fetch a blob in parallel ranged chunks.
    pub chunking: Chunking,
    /// One permit per connection downloading blob data (`-j` in all).
    pub connections: Arc<tokio::sync::Semaphore>,
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
                Ok((i, f))
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        results.sort_by_key(|(i, _)| *i);
        Ok(results.into_iter().map(|(_, f)| f).collect())
    }

    /// Makes sure one blob is in the cache.
    pub async fn fetch_one(&self, d: &Descriptor) -> Result<Fetched, PullError> {
        if self.cache.contains(&d.digest, d.size) {
            self.cache.record_use(&d.digest, &self.image, true);
            return Ok(self.cached(d));
        }
        let fetched = blob::download(self, d).await?;
        self.cache
            .record_use(&d.digest, &self.image, fetched.from_cache);
        Ok(fetched)
    }

    /// A download that cannot go on (no progress, too slow), as the user
    /// sees it: the image, the registry and what happened.
    pub(crate) fn connect_error(&self, detail: String) -> PullError {
        PullError::Registry {
            image: self.image.clone(),
            source: crate::registry::RegistryError::Connect {
                registry: self.registry.name().to_string(),
                detail,
            },
        }
    }

    /// A registry answer that breaks the protocol.
    pub(crate) fn protocol_error(&self, detail: String) -> PullError {
        PullError::Registry {
            image: self.image.clone(),
            source: crate::registry::RegistryError::Protocol {
                registry: self.registry.name().to_string(),
                detail,
            },
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
