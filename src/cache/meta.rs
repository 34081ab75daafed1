//! What is known of a stored blob's use, `meta/<hex>.json`: how often pulls
//! found it in the cache and which images used it. Best effort throughout: a
//! missing or unreadable record reads as empty, and a failed write never
//! fails a pull. Owns the record's format; must not touch the blobs.

use std::fs;
use std::path::Path;

/// What is known of a stored blob's use (`meta/<hex>.json`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct BlobMeta {
    /// Pulls that found it in the cache.
    #[serde(default)]
    pub hits: u64,
    /// Images that used it.
    #[serde(default)]
    pub images: Vec<String>,
}

/// The record at `path`, empty when there is none or it cannot be read.
pub(super) fn read(path: &Path) -> BlobMeta {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Notes that `image` used the blob (`hit`: found in the cache).
pub(super) fn note_use(path: &Path, image: &str, hit: bool) {
    let mut meta = read(path);
    if hit {
        meta.hits += 1;
    }
    if !meta.images.iter().any(|i| i == image) {
        meta.images.push(image.to_string());
        meta.images.sort();
        // Bounded: a base layer used by very many images keeps the first.
        meta.images.truncate(64);
    }
    if let Ok(bytes) = serde_json::to_vec(&meta) {
        let temp = path.with_extension(format!("{}.tmp", std::process::id()));
        if fs::write(&temp, bytes).is_ok() && fs::rename(&temp, path).is_err() {
            let _ = fs::remove_file(&temp);
        }
    }
}
