//! Writing archives from the cache. Writers never touch the network: they read
//! verified blobs from the [`Cache`] and the manifests resolved earlier.
//!
//! Every archive is written to a temporary name beside its target and renamed
//! when complete, so a failed or interrupted pull never leaves a truncated
//! archive under the final name nor destroys an existing one. A compressed
//! archive, or one for stdout, is written front to back (`sink.rs`).

mod docker;
mod legacy;
mod oci_dir;
pub mod read;
mod sink;
pub mod split;
mod tar_out;

pub use sink::{Packing, Place};
pub use split::Parts;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cache::Cache;
use crate::digest::Digest;
use crate::error::PullError;
use crate::place::{Keep, Placement};
use crate::reference::Reference;
use crate::registry::Manifest;
use crate::resolve::Descriptor;

/// An image's config from the cache, checked against its descriptor; read
/// into memory whole, so no larger than resolve's [`MAX_CONFIG_SIZE`] allows
/// (to check the platform, and for the `legacy` format's layer metadata).
///
/// [`MAX_CONFIG_SIZE`]: crate::resolve::MAX_CONFIG_SIZE
pub fn read_config(cache: &Cache, config: &Descriptor) -> Result<Vec<u8>, PullError> {
    cache
        .read_verified(&config.digest, config.size, crate::resolve::MAX_CONFIG_SIZE)
        .map_err(|e| PullError::io("reading", cache.blob_path(&config.digest), e))
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `docker load` of every engine since 1.10, and an OCI image layout too.
    Docker,
    /// The Docker 1.10-era layout with uncompressed layers, for old engines
    /// (Synology DSM's Docker 18.09 and 20.10).
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

/// How far `-f legacy` lets one layer decompress (`--max-layer-size`): a
/// bound against decompression bombs, small layers that would fill the disk.
/// Unless the limit is lifted (`None`), a layer also stops once it cannot fit
/// in the free space of the output file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerLimit {
    /// [`LAYER_RATIO`] times the compressed size, at least
    /// [`LAYER_RATIO_FLOOR`], at most [`LAYER_SIZE_DEFAULT`].
    #[default]
    Default,
    /// At most this many bytes, whatever the ratio.
    Size(u64),
    /// No limit at all, not even the free space: a layer that does not fit
    /// ends with the file system's own error.
    None,
}

/// By default a layer may decompress to this many times its compressed size...
pub const LAYER_RATIO: u64 = 100;
/// ...or to this much, whichever is larger (64 MiB)...
pub const LAYER_RATIO_FLOOR: u64 = 64 << 20;
/// ...but never to more than this (64 GiB).
pub const LAYER_SIZE_DEFAULT: u64 = 64 << 30;

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
    /// `--exclude-from`: how many bottom layers the target already has.
    /// The archive names them but does not hold them.
    pub left_out: usize,
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

    /// Every config and layer to store, each once, in a fixed order (the
    /// layers left out are not stored, unless they are also kept higher up).
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut seen = std::collections::HashSet::new();
        let all: Vec<&Descriptor> = match &self.all {
            Some(a) => a
                .members
                .iter()
                .flat_map(|m| std::iter::once(&m.config).chain(&m.layers))
                .collect(),
            None => std::iter::once(&self.config)
                .chain(self.kept_layers())
                .collect(),
        };
        all.into_iter().filter(|d| seen.insert(&d.digest)).collect()
    }

    /// The layers the archive holds: all but the bottom ones left out.
    pub fn kept_layers(&self) -> &[Descriptor] {
        &self.layers[self.left_out.min(self.layers.len())..]
    }

    /// The bottom layers left out (`--exclude-from`).
    pub fn left_out_layers(&self) -> &[Descriptor] {
        &self.layers[..self.left_out.min(self.layers.len())]
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

/// Where and how one archive is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub place: Place,
    pub packing: Packing,
    /// Wait until a file is on disk before it gets its name (`--sync`).
    pub sync: bool,
    /// `--split SIZE`: a file is cut into parts of at most this many bytes.
    pub split: Option<u64>,
}

impl Delivery {
    /// A plain archive file.
    pub fn file(path: &Path, sync: bool) -> Delivery {
        Delivery {
            place: Place::File(path.to_path_buf()),
            packing: Packing::None,
            sync,
            split: None,
        }
    }

    /// A plain archive file, written in place.
    fn in_place(&self) -> Option<&Path> {
        match (&self.place, self.packing) {
            (Place::File(path), Packing::None) => Some(path),
            _ => None,
        }
    }
}

/// Writes `images` into one archive in `format` where `to` says (for
/// `oci-dir`, into the layout directory it names); the parts, when `to`
/// splits it. `layer_limit` bounds the decompression of `legacy` layers.
pub fn write(
    format: Format,
    to: &Delivery,
    images: &[ArchiveImage],
    cache: &Cache,
    layer_limit: LayerLimit,
) -> Result<Option<Parts>, PullError> {
    if format == Format::OciDir {
        return match &to.place {
            Place::File(dir) => oci_dir::write(dir, images, cache).map(|()| None),
            Place::Stdout => Err(PullError::Setup(
                "-f oci-dir writes a directory, not a stream".into(),
            )),
        };
    }
    let Some(path) = to.in_place() else {
        return write_streamed(format, to, images, cache, layer_limit);
    };
    let temp = Temp::create(path)?;
    let result = (|| {
        let mut file = temp.file()?;
        match format {
            Format::Docker => docker::write(file, &temp.path, images, cache, true)?,
            Format::Oci => docker::write(file, &temp.path, images, cache, false)?,
            Format::Legacy => {
                let scratch = scratch_dir(&to.place, cache);
                legacy::write(&mut file, &temp.path, &scratch, images, cache, layer_limit)?
            }
            Format::OciDir => unreachable!("written above"),
        }
        Ok(())
    })();
    result.and_then(|()| temp.land(path, to))
}

/// [`write`] front to back, compressed as asked, into a file or stdout.
fn write_streamed(
    format: Format,
    to: &Delivery,
    images: &[ArchiveImage],
    cache: &Cache,
    layer_limit: LayerLimit,
) -> Result<Option<Parts>, PullError> {
    let mut opened = Opened::open(to)?;
    let label = to.place.label().to_path_buf();
    let out: &mut dyn std::io::Write = &mut opened.out;
    let result = match format {
        Format::Docker => docker::write_stream(out, &label, images, cache, true),
        Format::Oci => docker::write_stream(out, &label, images, cache, false),
        Format::Legacy => {
            let scratch = scratch_dir(&to.place, cache);
            legacy::write(out, &label, &scratch, images, cache, layer_limit)
        }
        Format::OciDir => unreachable!("a directory is not streamed"),
    };
    result.and_then(|()| opened.finish(to))
}

/// Where `-f legacy` decompresses a layer before it goes into the tar:
/// beside the archive, or in the cache for stdout.
fn scratch_dir(place: &Place, cache: &Cache) -> PathBuf {
    match place {
        Place::File(path) => match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
        Place::Stdout => cache.root().to_path_buf(),
    }
}

/// A streamed archive being written: the compressed stream over the
/// temporary file (or stdout).
struct Opened {
    out: sink::Packed,
    temp: Option<Temp>,
}

impl Opened {
    fn open(to: &Delivery) -> Result<Opened, PullError> {
        let (base, temp) = match &to.place {
            Place::File(path) => {
                let temp = Temp::create(path)?;
                (sink::Base::File(temp.file()?), Some(temp))
            }
            Place::Stdout => (sink::Base::Stdout(std::io::stdout()), None),
        };
        let out = sink::Packed::new(base, to.packing)
            .map_err(|e| PullError::io("writing", to.place.label(), e))?;
        Ok(Opened { out, temp })
    }

    /// Ends the stream and gives a file its name (or its parts theirs).
    fn finish(self, to: &Delivery) -> Result<Option<Parts>, PullError> {
        let label = to.place.label();
        self.out
            .finish()
            .map_err(|e| PullError::io("writing", label, e))?;
        match (self.temp, &to.place) {
            (Some(temp), Place::File(path)) => temp.land(path, to),
            _ => Ok(None),
        }
    }
}

/// A temporary file beside the target, removed unless persisted (and by
/// [`remove_partial_archives`] on Ctrl-C).
struct Temp {
    /// `None` once persisted.
    file: Option<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl Temp {
    fn create(target: &Path) -> Result<Temp, PullError> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "archive".into());
        let prefix = format!(".{file_name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        // Readable as any file the user creates (the umask applies), not
        // only by its owner as temporary files are.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let file = create_tracked(&builder, &dir)
            .map_err(|e| PullError::io("creating a temporary file in", &dir, e))?;
        let path = file.path().to_path_buf();
        Ok(Temp {
            file: Some(file),
            path,
        })
    }

    fn file(&self) -> Result<File, PullError> {
        self.file
            .as_ref()
            .expect("not yet persisted")
            .as_file()
            .try_clone()
            .map_err(|e| PullError::io("writing", &self.path, e))
    }

    /// Gives the finished archive its name, or cuts it into the parts
    /// `to` asks for and names those.
    fn land(mut self, target: &Path, to: &Delivery) -> Result<Option<Parts>, PullError> {
        let Some(size) = to.split else {
            return self.persist(target, to.sync).map(|()| None);
        };
        let file = self.file.take().expect("landed once");
        let parts = split::split(file, target, size, to.sync)?;
        if to.sync {
            sync_parent(target)?;
        }
        Ok(Some(parts))
    }

    /// Gives the finished archive its name, replacing any file there. With
    /// `sync`, its data and then the rename are flushed to disk first.
    fn persist(mut self, target: &Path, sync: bool) -> Result<(), PullError> {
        let file = self.file.take().expect("persisted once");
        if sync {
            file.as_file()
                .sync_all()
                .map_err(|e| PullError::io("writing", &self.path, e))?;
        }
        file.persist(target)
            .map_err(|e| PullError::io("renaming the finished archive to", target, e.error))?;
        if sync {
            sync_parent(target)?;
        }
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        untrack(&self.path);
    }
}

/// Flushes a directory entry (the rename of a finished archive) to disk.
fn sync_parent(target: &Path) -> Result<(), PullError> {
    #[cfg(unix)]
    {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| PullError::io("writing", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = target;
    Ok(())
}

/// An archive written while its image downloads: each blob is copied to its
/// place as soon as it is in the cache ([`Stream::ready`]), or written there
/// while it downloads ([`Stream::placement`]), so when the last download
/// ends only the rename is left. Only the `docker` and `oci` formats stream;
/// the others are written afterwards with [`write`].
pub struct Stream {
    tx: std::sync::mpsc::Sender<Digest>,
    /// The writer: ends with an error, or after [`Stream::finish`] closes
    /// the channel with every blob in.
    writer: Option<tokio::task::JoinHandle<Result<Written, PullError>>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    placement: Option<std::sync::Arc<Placement>>,
}

/// A complete archive under its temporary name.
enum Written {
    InPlace(Temp),
    Streamed(Box<Opened>),
}

impl Stream {
    /// Starts writing `image` in `format` beside where `to` says (the name
    /// is given at [`finish`](Self::finish)), or returns `None` when the
    /// format is written only after the downloads. An uncompressed file
    /// offers its blobs' places to the downloads, which `keep` says whether
    /// the cache gets too.
    pub fn start(
        format: Format,
        to: &Delivery,
        image: &ArchiveImage,
        cache: std::sync::Arc<Cache>,
        keep: Keep,
    ) -> Result<Option<Stream>, PullError> {
        let docker_metadata = match format {
            Format::Docker => true,
            Format::Oci => false,
            Format::Legacy | Format::OciDir => return Ok(None),
        };
        let layout = docker::layout(std::slice::from_ref(image), docker_metadata);
        let (tx, rx) = std::sync::mpsc::channel::<Digest>();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finished = std::sync::Arc::clone(&done);
        // The channel closes with a finished pull, or an abandoned one.
        let complete = move || match finished.load(std::sync::atomic::Ordering::SeqCst) {
            true => Ok(()),
            false => Err(PullError::Interrupted),
        };
        let (writer, placement) = match to.in_place() {
            Some(path) => {
                let temp = Temp::create(path)?;
                let placement = std::sync::Arc::new(places(&temp, &layout, image, keep)?);
                let placed = Some(std::sync::Arc::clone(&placement));
                let writer = tokio::task::spawn_blocking(move || {
                    let mut writer =
                        docker::LayoutWriter::create(temp.file()?, &temp.path, &layout)?
                            .with_placement(placed);
                    for digest in rx {
                        writer.blob(&cache, &digest)?;
                    }
                    complete()?;
                    writer.finish()?;
                    Ok(Written::InPlace(temp))
                });
                (writer, Some(placement))
            }
            None => {
                let (mut opened, to) = (Opened::open(to)?, to.clone());
                let writer = tokio::task::spawn_blocking(move || {
                    let label = to.place.label();
                    let mut writer = docker::StreamWriter::new(&mut opened.out, label, &layout);
                    for digest in rx {
                        writer.blob(&cache, &digest)?;
                    }
                    complete()?;
                    writer.finish(&cache)?;
                    Ok(Written::Streamed(Box::new(opened)))
                });
                (writer, None)
            }
        };
        Ok(Some(Stream {
            tx,
            writer: Some(writer),
            done,
            placement,
        }))
    }

    /// Where downloads may write the blobs straight into the archive.
    pub fn placement(&self) -> Option<std::sync::Arc<Placement>> {
        self.placement.clone()
    }

    /// A blob is in the cache (or in its place): copy it in.
    pub fn ready(&self, digest: &Digest) {
        // A writer that stopped has its error waiting in `failed`/`finish`.
        let _ = self.tx.send(digest.clone());
    }

    /// What [`ready`](Self::ready) does, for callers that cannot borrow the
    /// stream; drop it before [`finish`](Self::finish).
    pub fn notifier(&self) -> impl Fn(&Digest) + Send + Sync + use<> {
        let tx = self.tx.clone();
        move |digest: &Digest| {
            let _ = tx.send(digest.clone());
        }
    }

    /// Resolves only when the writer stops early, with its error.
    pub async fn failed(&mut self) -> PullError {
        let Some(writer) = self.writer.as_mut() else {
            return std::future::pending().await;
        };
        let result = writer.await;
        self.writer = None;
        match result {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => stopped_early(),
            Err(e) => writer_lost(e),
        }
    }

    /// Every blob was reported: completes the archive and gives it the name
    /// `to` says (or its parts theirs).
    pub async fn finish(mut self, to: &Delivery) -> Result<Option<Parts>, PullError> {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        let Stream { tx, writer, .. } = &mut self;
        drop(std::mem::replace(tx, std::sync::mpsc::channel().0));
        let Some(writer) = writer.take() else {
            return Err(stopped_early());
        };
        let written = writer.await.map_err(writer_lost)??;
        let to = to.clone();
        let landed = tokio::task::spawn_blocking(move || match written {
            Written::InPlace(temp) => match to.in_place() {
                Some(path) => temp.land(path, &to),
                None => Err(stopped_early()),
            },
            Written::Streamed(opened) => opened.finish(&to),
        });
        landed.await.map_err(writer_lost)?
    }

    /// Gives up: the writer stops and removes its temporary file.
    pub async fn abort(mut self) {
        let Stream { tx, writer, .. } = &mut self;
        drop(std::mem::replace(tx, std::sync::mpsc::channel().0));
        if let Some(writer) = writer.take() {
            let _ = writer.await;
        }
    }
}

/// The places of `image`'s layers in the archive `temp` holds, laid out as
/// `layout` says; the file gets its full length first, so the downloads'
/// positional writes and the writer's headers never meet. The config is
/// not among them: it is read from the cache.
fn places(
    temp: &Temp,
    layout: &docker::Layout,
    image: &ArchiveImage,
    keep: Keep,
) -> Result<Placement, PullError> {
    let file = temp.file()?;
    file.set_len(layout.size())
        .map_err(|e| PullError::io("writing", &temp.path, e))?;
    let mut slots = layout.slots();
    slots.remove(&image.config.digest);
    Ok(Placement::new(file, &temp.path, slots, keep))
}

fn stopped_early() -> PullError {
    PullError::io(
        "writing",
        "the archive",
        std::io::Error::other("the archive writer stopped early"),
    )
}

fn writer_lost(e: tokio::task::JoinError) -> PullError {
    PullError::io("writing", "the archive", std::io::Error::other(e))
}

/// Creates a temporary file (a partial archive, a decompressed layer) in
/// `dir` and notes it for [`remove_partial_archives`] in one step, so an
/// interruption never falls between the two; once interrupted, none is
/// created. [`untrack`] it when it is gone.
pub(crate) fn create_tracked(
    builder: &tempfile::Builder<'_, '_>,
    dir: &Path,
) -> std::io::Result<tempfile::NamedTempFile> {
    let mut partial = PARTIAL.lock().unwrap_or_else(|e| e.into_inner());
    if STOPPED.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted",
        ));
    }
    let file = builder.tempfile_in(dir)?;
    partial.push(file.path().to_path_buf());
    Ok(file)
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

/// Set once interrupted: no temporary file is created after that.
static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Removes every archive still being written (on Ctrl-C, before exiting).
pub fn remove_partial_archives() {
    let paths = {
        let mut partial = PARTIAL.lock().unwrap_or_else(|e| e.into_inner());
        STOPPED.store(true, std::sync::atomic::Ordering::SeqCst);
        std::mem::take(&mut *partial)
    };
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}
