//! What a transfer tells whoever watches it: one stream of events, image
//! level (an image starts, its blobs are all there, a note such as the
//! archive being written) and blob level (found in the cache, started,
//! bytes, rewound, finished; for `verify`, being checked; for `push`,
//! uploading or skipped). The pipeline sends them to an [`Observer`];
//! the terminal view in `progress` is one. Nothing here draws or decides.

use crate::digest::Digest;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An image's blobs are about to be fetched: `bytes` in `blobs` blobs.
    ImageStarted {
        image: String,
        platform: String,
        bytes: u64,
        blobs: usize,
    },
    /// Every blob of the image is in the cache (or the image failed).
    ImageDone,
    /// A line for the user about the run (`Writing out/app.tar`).
    Note(String),
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
    /// A blob of an archive is being read and checked (`verify`); its
    /// bytes follow as [`Event::Progress`], its end as [`Event::Finished`].
    Checking { digest: Digest, size: u64 },
    /// A blob was verified (and, when downloaded, stored).
    Finished { digest: Digest },
    /// An upload (`push`) started, or went on from `offset` after a break;
    /// its bytes follow as [`Event::Progress`], its end as
    /// [`Event::Finished`].
    Uploading {
        digest: Digest,
        size: u64,
        offset: u64,
    },
    /// A blob needed no upload.
    Skipped {
        digest: Digest,
        size: u64,
        why: Skip,
    },
}

/// Why a blob was not uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The registry has it in the repository.
    Present,
    /// It was mounted from another repository of the registry.
    Mounted,
    /// A layer the target already has (`--exclude-from`): not in the archive.
    LeftOut,
}

/// Receives every [`Event`] of a run.
pub trait Observer: Send + Sync {
    fn event(&self, event: Event);
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _event: Event) {}
}
