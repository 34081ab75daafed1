//! The `oci-dir` format: an OCI image layout directory. Blobs are hard links
//! into the cache when both are on one file system (copies otherwise), and
//! images are added to an existing layout without disturbing the others in
//! it: `index.json` keeps every entry but those that name the same image,
//! and is replaced in one rename after every blob is in place.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::ArchiveImage;
use super::docker::{OCI_LAYOUT, blob_name, index_entry_value, to_json};
use crate::cache::{Cache, fsx, hash_file};
use crate::digest::Digest;
use crate::error::PullError;
use crate::media_type;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn write(dir: &Path, images: &[ArchiveImage], cache: &Cache) -> Result<(), PullError> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| PullError::io("creating", &blobs, e))?;
    let layout = dir.join("oci-layout");
    match fs::read(&layout) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_atomic(&layout, OCI_LAYOUT)?;
        }
        Err(e) => return Err(PullError::io("reading", &layout, e)),
    }
    let index_path = dir.join("index.json");
    let mut index: Value = match fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            PullError::io(
                "reading",
                &index_path,
                io::Error::other(format!(
                    "not an OCI index ({e}); choose an empty directory or a valid layout"
                )),
            )
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [],
        }),
        Err(e) => return Err(PullError::io("reading", &index_path, e)),
    };

    let mut done = HashSet::new();
    for image in images {
        for d in image.blobs() {
            if done.insert(d.digest.clone()) {
                link_blob(dir, cache, &d.digest, d.size)?;
            }
        }
        for m in image.manifests() {
            if done.insert(m.digest.clone()) {
                let path = dir.join(blob_name(&m.digest));
                if !matches!(fsx::read_nofollow(&path), Ok(Some(b)) if b == m.bytes) {
                    write_atomic(&path, &m.bytes)?;
                }
            }
        }
    }

    let manifests = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| {
            PullError::io(
                "reading",
                &index_path,
                io::Error::other("the index has no manifests list"),
            )
        })?;
    for image in images {
        let entry = index_entry_value(image);
        let ref_name = |v: &Value| v.get("annotations").and_then(|a| a.get(REF_NAME)).cloned();
        let name = ref_name(&entry);
        // The same name (or, unnamed, the same manifest unnamed) is replaced.
        manifests.retain(|m| match &name {
            Some(_) => ref_name(m) != name,
            None => m.get("digest") != entry.get("digest") || ref_name(m).is_some(),
        });
        manifests.push(entry);
    }
    write_atomic(&index_path, &to_json(&index))
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
    let temp = temp_name(&target);
    let _ = fs::remove_file(&temp);
    if fs::hard_link(&src, &temp).is_err() {
        fs::copy(&src, &temp).map_err(|e| PullError::io("writing", &temp, e))?;
    }
    fs::rename(&temp, &target).map_err(|e| {
        let _ = fs::remove_file(&temp);
        PullError::io("writing", &target, e)
    })
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

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PullError> {
    let temp = temp_name(path);
    fs::write(&temp, bytes)
        .and_then(|()| fs::File::open(&temp)?.sync_all())
        .map_err(|e| {
            let _ = fs::remove_file(&temp);
            PullError::io("writing", &temp, e)
        })?;
    fs::rename(&temp, path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        PullError::io("writing", path, e)
    })
}
