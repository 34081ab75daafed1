//! One blob's download into the cache: take the blob's lock, continue any
//! partial download left by an earlier run (re-hashing what is there), take
//! the rest from the registry's resumable body (in ranged chunks when large)
//! hashed while written on a thread of its own ([`super::sink`]), into the
//! cache, the blob's place in the archive, or both; verify size and digest,
//! and commit by rename.
//!
//! It never sees a status code or a header: resuming, retrying and the stall
//! guard are the registry layer's.

use std::path::Path;
use std::sync::Arc;

use tracing::{debug, warn};

use super::sink::{Hash, Sink, Target};
use super::{Event, Fetched, Fetcher};
use crate::cache::IngestLock;
use crate::digest::Hasher;
use crate::error::PullError;
use crate::registry::{Piece, Span};
use crate::resolve::Descriptor;

pub(super) async fn download(f: &Fetcher, d: &Descriptor) -> Result<Fetched, PullError> {
    let cache = Arc::clone(&f.cache);
    let digest = d.digest.clone();
    let lock = tokio::task::spawn_blocking(move || cache.lock_ingest(&digest))
        .await
        .map_err(|e| PullError::io("locking", f.cache.root(), std::io::Error::other(e)))?
        .map_err(|e| PullError::io("locking a download in", f.cache.root(), e))?;
    // Another process may have finished it while we waited.
    if f.cache.contains(&d.digest, d.size) {
        return Ok(f.cached(d));
    }
    let mut integrity_retry_left = true;
    loop {
        match download_locked(f, d, &lock).await {
            Err(PullError::Integrity { detail, .. }) if integrity_retry_left => {
                warn!(
                    "{}: blob {} was damaged in transit ({detail}); downloading it again",
                    f.image, d.digest
                );
                integrity_retry_left = false;
                let _ = std::fs::remove_file(f.cache.ingest_path(&d.digest));
            }
            other => return other,
        }
    }
}

/// The partial download left in the cache by an earlier run: trimmed to
/// its recorded prefix and hashed (created empty if missing). A partial
/// longer than the blob is emptied.
fn open_partial(path: &Path, size: u64) -> Result<Hasher, PullError> {
    crate::cache::ingest::trim_to_recorded_prefix(path)
        .map_err(|e| PullError::io("reading", path, e))?;
    let io = |e| PullError::io("reading", path, e);
    let mut file =
        crate::cache::open_nofollow_rw(path).map_err(|e| PullError::io("opening", path, e))?;
    let len = file.metadata().map_err(io)?.len();
    let mut hasher = Hasher::new();
    if len > size {
        file.set_len(0).map_err(io)?;
    } else if len > 0 {
        hasher.update_from(&mut file).map_err(io)?;
    }
    Ok(hasher)
}

/// Where `d`'s bytes go: the cache's partial file, its place in the archive
/// when it has one, or both; and the hash of what the cache already holds.
fn target_of(f: &Fetcher, d: &Descriptor) -> Result<(Target, Hasher), PullError> {
    let path = f.cache.ingest_path(&d.digest);
    let place = f
        .placement
        .as_ref()
        .and_then(|p| p.slot(&d.digest, d.size).map(|at| (Arc::clone(p), at)));
    let mut target = Target::of(path.clone(), place);
    let hasher = match target.cached() {
        true => open_partial(&path, d.size)?,
        false => Hasher::new(),
    };
    if !hasher.is_empty() {
        // Bytes from an earlier run are only in the cache: the archive's
        // writer copies the blob from there once it is complete.
        target.place = None;
    }
    if let Some((p, _)) = &target.place {
        p.unmark(&d.digest);
    }
    Ok((target, hasher))
}

async fn download_locked(
    f: &Fetcher,
    d: &Descriptor,
    lock: &IngestLock,
) -> Result<Fetched, PullError> {
    let (target, mut hasher) = target_of(f, d)?;
    let resumed_from = hasher.len();
    f.observer.event(Event::Started {
        digest: d.digest.clone(),
        size: d.size,
        offset: resumed_from,
    });
    let mut downloaded = 0u64;
    // A large rest goes in ranged chunks; the single stream below takes
    // over when the registry ignores ranges.
    if d.size - hasher.len() > f.chunking.threshold {
        let start = hasher.len();
        match super::chunked::download(f, d, &target, start, &mut hasher).await? {
            super::chunked::Outcome::Done { downloaded: n } => downloaded = n,
            super::chunked::Outcome::NoRanges => {
                debug!(digest = %d.digest, "no Range support; one stream");
            }
        }
    }
    // An empty blob needs no request: its digest alone is checked below.
    if hasher.len() < d.size {
        // One connection permit for the single stream.
        let _permit = f.connections.acquire().await.ok();
        let (n, h) = stream_rest(f, d, &target, hasher).await?;
        downloaded += n;
        hasher = h;
    }
    let actual = hasher.finish();
    if actual != d.digest {
        let _ = std::fs::remove_file(f.cache.ingest_path(&d.digest));
        return Err(f.integrity(d, format!("its content hashes to {actual}")));
    }
    // No fsync: a blob that a crash leaves damaged is caught when a later
    // run reads it and downloaded again (the commit seals the blob, but a
    // seal counts only in the boot that made it, so after a crash cache
    // hits are hashed on their way into an archive), so waiting for the
    // disk would buy nothing.
    if target.cached() {
        f.cache
            .commit(&d.digest, lock)
            .map_err(|e| PullError::io("storing a blob in", f.cache.root(), e))?;
        debug!(digest = %d.digest, downloaded, "blob in the cache");
    }
    if let Some((p, _)) = &target.place {
        p.mark_placed(&d.digest);
        debug!(digest = %d.digest, "blob written into its place in the archive");
    }
    if resumed_from > 0 {
        debug!(digest = %d.digest, resumed_from, "resumed a partial download");
    }
    f.observer.event(Event::Finished {
        digest: d.digest.clone(),
    });
    Ok(Fetched {
        digest: d.digest.clone(),
        size: d.size,
        from_cache: false,
        downloaded,
    })
}

/// Streams the rest of the blob (after the bytes `hasher` holds) to its
/// target through a writing thread; returns the bytes received and the hash
/// of the whole.
async fn stream_rest(
    f: &Fetcher,
    d: &Descriptor,
    target: &Target,
    hasher: Hasher,
) -> Result<(u64, Hasher), PullError> {
    let from = hasher.len();
    let mut sink = Sink::start(target.writer(from, Hash::Own(hasher))?);
    let span = Span::Rest { from, size: d.size };
    let mut body = f
        .registry
        .blob_body(&f.repository, &d.digest, &d.urls, span);
    let mut downloaded = 0u64;
    let received = async {
        while let Some(piece) = body.next().await.map_err(|e| f.registry_error(d, e))? {
            match piece {
                Piece::Data(bytes) => {
                    let n = bytes.len() as u64;
                    sink.write(bytes).await?;
                    downloaded += n;
                    f.observer.event(Event::Progress {
                        digest: d.digest.clone(),
                        bytes: n,
                    });
                }
                Piece::Restart => {
                    sink.restart().await?;
                    f.observer.event(Event::Rewound {
                        digest: d.digest.clone(),
                        offset: 0,
                    });
                }
            }
        }
        Ok::<_, PullError>(())
    }
    .await;
    // The thread ends either way; a failure of the body comes first.
    let written = sink.finish().await;
    received?;
    let hasher = written?.into_hasher().ok_or_else(|| {
        PullError::io("writing", f.cache.root(), std::io::Error::other("no hash"))
    })?;
    Ok((downloaded, hasher))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn a_partial_is_rehashed_kept_or_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.data");
        std::fs::write(&p, b"hello").unwrap();
        let h = open_partial(&p, 11).unwrap();
        assert_eq!(h.len(), 5);
        assert_eq!(h.finish(), Digest::of(b"hello"));
        assert_eq!(
            open_partial(&p, 3).unwrap().len(),
            0,
            "longer than the blob"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"", "emptied");
        let missing = dir.path().join("y.data");
        assert_eq!(open_partial(&missing, 3).unwrap().len(), 0);
        assert!(missing.exists(), "created for the writer");
    }
}
