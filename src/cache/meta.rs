//! What is known of a stored blob's use, `meta/<hex>.json`: how often pulls
//! found it in the cache and which images used it; the record's mtime is
//! when a pull last used it. Best effort throughout: a missing or unreadable
//! record reads as empty, and a failed write never fails a pull. Owns the record's format; must not touch the blobs.

use std::path::Path;

use super::fsx;

/// How records are written: a random `.<hex>.json.XXXXXX.tmp` beside the
/// record, renamed over it.
pub(super) const TEMP: fsx::Atomic = fsx::Atomic {
    suffix: ".tmp",
    shared: false,
    sync: false,
};

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
    fsx::read_nofollow(path)
        .ok()
        .flatten()
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
        let _ = fsx::write_atomic(path, &bytes, TEMP);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn records_are_replaced_through_random_temporary_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{}.json", "a".repeat(64)));
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        // The names a neighbour could predict: the record itself and the
        // temporary name earlier versions used.
        let predictable = path.with_extension(format!("{}.tmp", std::process::id()));
        symlink(&victim, &predictable).unwrap();
        symlink(&victim, &path).unwrap();
        assert_eq!(read(&path).hits, 0, "not read through the link");
        note_use(&path, "r/a:1", true);
        note_use(&path, "r/a:1", true);
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        let meta = read(&path);
        assert_eq!((meta.hits, meta.images), (2, vec!["r/a:1".to_string()]));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 3, "no temporary file is left: {names:?}");
    }
}
