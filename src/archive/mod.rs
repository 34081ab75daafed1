//! Writing archives from the cache. Writers never touch the network: they read
//! verified blobs from the [`Cache`] and the manifests resolved earlier.
//!
//! Every archive is written to a temporary name beside its target and renamed
//! when complete, so a failed or interrupted pull never leaves a truncated
//! archive under the final name nor destroys an existing one.

mod docker;
mod legacy;
mod oci_dir;
mod tar_out;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cache::Cache;
use crate::error::PullError;
use crate::reference::Reference;
use crate::registry::Manifest;
use crate::resolve::Descriptor;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `docker load` of every engine since 1.10, and an OCI image layout too.
    Docker,
    /// The Docker 1.10-era layout with uncompressed layers, for old engines
    /// (Synology DSM's Docker 18.09 and 20.10).
    #[value(alias = "synology")]
    Legacy,
    /// An OCI image layout in a tar (oci-archive).
    Oci,
    /// An OCI image layout directory (-o DIR); blobs hard-linked from the cache.
    OciDir,
}

impl Format {
    /// Whether the output is a directory rather than a tar.
    pub fn is_dir(self) -> bool {
        self == Format::OciDir
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Docker => "docker",
            Format::Legacy => "legacy",
            Format::Oci => "oci",
            Format::OciDir => "oci-dir",
        })
    }
}

/// One image to put in an archive.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// The reference as resolved (for the image's names).
    pub reference: Reference,
    /// `--tag`, if given: the name to give the image instead.
    pub rename: Option<Reference>,
    /// The platform manifest, byte-for-byte.
    pub manifest: Manifest,
    pub manifest_media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// With `--platform all`: the index and every image in it, which the OCI
    /// formats keep whole (then the fields above describe the first image).
    pub all: Option<AllPlatforms>,
}

/// An index kept whole, with every image it lists.
#[derive(Debug, Clone)]
pub struct AllPlatforms {
    pub index: Manifest,
    pub index_media_type: String,
    pub members: Vec<crate::resolve::Member>,
}

impl ArchiveImage {
    /// The manifest that the layout's `index.json` points at: the index
    /// with `--platform all`, else the platform manifest.
    pub fn top(&self) -> (&Manifest, &str) {
        match &self.all {
            Some(a) => (&a.index, &a.index_media_type),
            None => (&self.manifest, &self.manifest_media_type),
        }
    }

    /// Every manifest to store as a blob.
    pub fn manifests(&self) -> Vec<&Manifest> {
        match &self.all {
            Some(a) => std::iter::once(&a.index)
                .chain(a.members.iter().map(|m| &m.manifest))
                .collect(),
            None => vec![&self.manifest],
        }
    }

    /// Every config and layer to store, each once, in a fixed order.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut seen = std::collections::HashSet::new();
        let all: Vec<&Descriptor> = match &self.all {
            Some(a) => a
                .members
                .iter()
                .flat_map(|m| std::iter::once(&m.config).chain(&m.layers))
                .collect(),
            None => std::iter::once(&self.config).chain(&self.layers).collect(),
        };
        all.into_iter().filter(|d| seen.insert(&d.digest)).collect()
    }

    /// The reference that names the image in the archive.
    pub fn name_reference(&self) -> &Reference {
        self.rename.as_ref().unwrap_or(&self.reference)
    }

    /// The `RepoTags` entry (`nginx:latest`), if the image has a tag.
    pub fn repo_tag(&self) -> Option<String> {
        self.name_reference().familiar_tagged()
    }
}

/// Writes `images` into one archive at `path` in `format` (for `oci-dir`,
/// into the layout directory `path`).
pub fn write(
    format: Format,
    path: &Path,
    images: &[ArchiveImage],
    cache: &Cache,
) -> Result<(), PullError> {
    if format == Format::OciDir {
        return oci_dir::write(path, images, cache);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| PullError::io("creating a temporary file in", &dir, e))?;
    let temp_path = temp.path().to_path_buf();
    track(&temp_path);
    let result = (|| {
        let file = temp
            .as_file()
            .try_clone()
            .map_err(|e| PullError::io("writing", &temp_path, e))?;
        match format {
            Format::Docker => docker::write(file, &temp_path, images, cache, true)?,
            Format::Oci => docker::write(file, &temp_path, images, cache, false)?,
            Format::Legacy => legacy::write(file, &temp_path, images, cache)?,
            Format::OciDir => unreachable!("written above"),
        }
        temp.persist(path)
            .map_err(|e| PullError::io("renaming the finished archive to", path, e.error))?;
        Ok(())
    })();
    untrack(&temp_path);
    result
}

/// Notes a temporary file being written (a partial archive, a decompressed
/// layer) for [`remove_partial_archives`]; [`untrack`] when it is gone.
pub(crate) fn track(path: &Path) {
    PARTIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
}

pub(crate) fn untrack(path: &Path) {
    PARTIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| p != path);
}

/// Temporary files being written, removed by [`remove_partial_archives`]
/// when the process is interrupted.
static PARTIAL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every archive still being written (on Ctrl-C, before exiting).
pub fn remove_partial_archives() {
    let paths = std::mem::take(&mut *PARTIAL.lock().unwrap_or_else(|e| e.into_inner()));
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}
