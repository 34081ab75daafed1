//! The `oci-dir` format: an OCI image layout directory. Blobs are hard links
//! into the cache when both are on one file system (copies otherwise), and
//! images are added to an existing layout without disturbing the others in
//! it: `index.json` keeps every entry but those that name the same image,
//! and is replaced in one rename after every blob is in place.
//!
//! A layout may sit where others can write, so nothing planted in it
//! redirects a write or a read: every file is replaced by a rename from a
//! random temporary name created exclusively beside it (a link at the name
//! is replaced, never written through), `index.json` is read without
//! following a link (one there fails the pull rather than be merged), and
//! `blobs/` and `blobs/sha256/` must be directories, not links. Writers
//! take turns: each holds an exclusive lock on the layout directory itself
//! (so no lock file appears in the layout) from its read of `index.json` to
//! the rename of the new one, so two pulls into one layout keep each
//! other's entries. Must not read blobs but through the cache.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use serde_json::{Value, json};

use super::ArchiveImage;
use super::docker::{OCI_LAYOUT, blob_name, index_entry_value, to_json};
use crate::cache::{Cache, fsx, hash_file};
use crate::digest::Digest;
use crate::error::PullError;
use crate::media_type;
use crate::resolve::Descriptor;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn write(dir: &Path, images: &[ArchiveImage], cache: &Cache) -> Result<(), PullError> {
    fs::create_dir_all(dir).map_err(|e| PullError::io("creating", dir, e))?;
    // One writer at a time: another process between our read of index.json
    // and our rename of it would lose its entries, or we ours.
    let _lock = fsx::lock_dir(dir).map_err(|e| PullError::io("locking", dir, e))?;
    for sub in ["blobs", "blobs/sha256"] {
        real_dir(&dir.join(sub))?;
    }
    let layout = dir.join("oci-layout");
    if !fs::symlink_metadata(&layout).is_ok_and(|m| m.is_file()) {
        write_atomic(&layout, OCI_LAYOUT)?;
    }
    let index_path = dir.join("index.json");
    let mut index = read_index(&index_path)?;

    let mut done = HashSet::new();
    let blobs: Vec<&Descriptor> = images
        .iter()
        .flat_map(ArchiveImage::blobs)
        .filter(|d| done.insert(d.digest.clone()))
        .collect();
    link_all(dir, cache, blobs)?;
    for image in images {
        for m in image.manifests() {
            if done.insert(m.digest.clone()) {
                let path = dir.join(blob_name(&m.digest));
                if !matches!(fsx::read_nofollow(&path), Ok(Some(b)) if b == m.bytes) {
                    write_atomic(&path, &m.bytes)?;
                }
            }
        }
    }
    merge(&mut index, images, &index_path)?;
    write_atomic(&index_path, &to_json(&index))
}

/// Creates `path` if missing; it must be a directory, not a link to one.
fn real_dir(path: &Path) -> Result<(), PullError> {
    if let Err(e) = fs::create_dir(path)
        && e.kind() != io::ErrorKind::AlreadyExists
    {
        return Err(PullError::io("creating", path, e));
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(PullError::io(
            "writing into",
            path,
            io::Error::other(
                "it is a symbolic link or a file, not a directory of the layout's own; choose an empty directory or a valid layout",
            ),
        )),
        Err(e) => Err(PullError::io("creating", path, e)),
    }
}

/// The layout's `index.json`, or a new empty index when there is none.
fn read_index(path: &Path) -> Result<Value, PullError> {
    match fsx::read_nofollow(path) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|e| {
            PullError::io(
                "reading",
                path,
                io::Error::other(format!(
                    "not an OCI index ({e}); choose an empty directory or a valid layout"
                )),
            )
        }),
        Ok(None) => Ok(json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [],
        })),
        Err(e) => Err(PullError::io("reading", path, e)),
    }
}

/// Adds an entry per image to `index`; the same name (or, unnamed, the same
/// manifest unnamed) is replaced.
fn merge(index: &mut Value, images: &[ArchiveImage], path: &Path) -> Result<(), PullError> {
    let manifests = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| {
            PullError::io(
                "reading",
                path,
                io::Error::other("the index has no manifests list"),
            )
        })?;
    for image in images {
        let entry = index_entry_value(image);
        let ref_name = |v: &Value| v.get("annotations").and_then(|a| a.get(REF_NAME)).cloned();
        let name = ref_name(&entry);
        manifests.retain(|m| match &name {
            Some(_) => ref_name(m) != name,
            None => m.get("digest") != entry.get("digest") || ref_name(m).is_some(),
        });
        manifests.push(entry);
    }
    Ok(())
}

/// Links (or copies) every blob into the layout. Checking a cached blob
/// means hashing it, which is most of what a warm layout pull costs, so the
/// blobs are shared out, largest first, among a thread per core (four at
/// most).
fn link_all(dir: &Path, cache: &Cache, mut blobs: Vec<&Descriptor>) -> Result<(), PullError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    blobs.sort_by_key(|d| std::cmp::Reverse(d.size));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(blobs.len().max(1));
    let next = AtomicUsize::new(0);
    let work = || {
        while let Some(d) = blobs.get(next.fetch_add(1, Ordering::Relaxed)) {
            link_blob(dir, cache, &d.digest, d.size)?;
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(linker_lost())))
            .collect::<Result<Vec<()>, PullError>>()
    })
    .map(drop)
}

fn linker_lost() -> PullError {
    PullError::io(
        "writing",
        "the layout",
        io::Error::other("a thread linking blobs stopped"),
    )
}

/// Puts a cached blob into the layout: a hard link when possible, else a
/// copy. The cached blob is checked first (hashed, unless this process
/// verified it); a damaged one is evicted and fails the layout. A blob
/// already in the layout with the right size is kept if it is the cache's
/// own file or hashes right, and replaced otherwise.
fn link_blob(dir: &Path, cache: &Cache, digest: &Digest, size: u64) -> Result<(), PullError> {
    let target = dir.join(blob_name(digest));
    let src = cache.blob_path(digest);
    let present = fs::symlink_metadata(&target)
        .ok()
        .filter(|m| m.is_file() && m.len() == size);
    let cache_file = fs::symlink_metadata(&src).ok();
    if let Some(m) = &present
        && !cache_file.as_ref().is_some_and(|c| same_inode(m, c))
        && hashes_to(&target, digest)
    {
        return Ok(());
    }
    let file = cache
        .open_verified(digest, size)
        .map_err(|e| PullError::io("reading", &src, e))?;
    let verified = file
        .metadata()
        .map_err(|e| PullError::io("reading", &src, e))?;
    if present.as_ref().is_some_and(|m| same_inode(m, &verified)) {
        return Ok(());
    }
    place_blob(&target, &src, &file, &verified)
}

/// Gives `target` the content of the verified cache blob `file` (at `src`):
/// a hard link under a random name, if it is the very file verified, else a
/// copy from the verified handle; then one rename.
fn place_blob(
    target: &Path,
    src: &Path,
    file: &fs::File,
    verified: &fs::Metadata,
) -> Result<(), PullError> {
    let dir = fsx::parent(target);
    let prefix = format!(
        ".{}.",
        target.file_name().unwrap_or_default().to_string_lossy()
    );
    let linked = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".partial")
        .make_in(dir, |temp| fs::hard_link(src, temp));
    if let Ok(temp) = linked
        && fs::symlink_metadata(temp.path()).is_ok_and(|m| same_inode(&m, verified))
    {
        return temp
            .persist(target)
            .map_err(|e| PullError::io("writing", target, e.error));
    }
    let mut temp = fsx::temp_in(dir, &prefix, ".partial", true)
        .map_err(|e| PullError::io("creating a temporary file in", dir, e))?;
    let copied = io::copy(&mut &*file, temp.as_file_mut())
        .map_err(|e| PullError::io("writing", temp.path(), e))?;
    if copied != verified.len() {
        return Err(PullError::io(
            "reading",
            src,
            io::Error::other(format!(
                "the cached blob changed while it was copied ({copied} bytes, expected {})",
                verified.len()
            )),
        ));
    }
    temp.persist(target)
        .map(drop)
        .map_err(|e| PullError::io("writing", target, e.error))
}

fn same_inode(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// Whether the file at `path` (not followed if a link) hashes to `digest`.
fn hashes_to(path: &Path, digest: &Digest) -> bool {
    fsx::open_nofollow_read(path)
        .and_then(|f| hash_file(&f))
        .is_ok_and(|(actual, _)| &actual == digest)
}

/// Replaces `path` with `bytes`, on disk before the rename, readable as the
/// user's other files (see [`fsx::write_atomic`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PullError> {
    let how = fsx::Atomic {
        suffix: ".partial",
        shared: true,
        sync: true,
    };
    fsx::write_atomic(path, bytes, how).map_err(|e| PullError::io("writing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_files_are_written_through_random_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"victim").unwrap();
        let index = dir.path().join("index.json");
        // The name earlier versions wrote index.json through.
        let predictable = dir
            .path()
            .join(format!(".index.json.{}.partial", std::process::id()));
        std::os::unix::fs::symlink(&victim, &predictable).unwrap();
        write_atomic(&index, b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"victim");
        assert_eq!(fs::read(&index).unwrap(), b"{}");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            3,
            "no temporary file left"
        );
    }
}
