//! Where a source's entries live and how their bytes are reached: a layout
//! directory (files opened without following links), an uncompressed tar
//! (its headers indexed once, then every entry read at its offset), or a
//! gzip- or zstd-compressed tar (read front to back; see [`Store::visit`]).
//!
//! A tar's bytes come through [`ReadAt`], reads at an offset, so that one
//! file and the parts of a split archive laid end to end serve alike.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::tar_index::{self, Found, IndexError, Lookup, TarIndex};
use super::{ReadError, WholeCompression};

/// Bytes at any offset of an archive.
pub trait ReadAt: Send + Sync {
    /// Reads into `buf` from `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// The archive's length.
    fn len(&self) -> u64;
}

/// One file.
struct OneFile {
    file: File,
    len: u64,
}

impl ReadAt for OneFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
    }
    fn len(&self) -> u64 {
        self.len
    }
}

/// The parts of a split archive, laid end to end.
struct PartFiles {
    /// Each part: where it starts in the archive, the file, its length.
    parts: Vec<(u64, File, u64)>,
    len: u64,
}

impl PartFiles {
    fn open(paths: &[PathBuf]) -> io::Result<PartFiles> {
        let mut parts = Vec::with_capacity(paths.len());
        let mut len = 0u64;
        for path in paths {
            let file = File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let part_len = file.metadata()?.len();
            parts.push((len, file, part_len));
            len = len
                .checked_add(part_len)
                .ok_or_else(|| io::Error::other("the parts are too large together"))?;
        }
        Ok(PartFiles { parts, len })
    }
}

impl ReadAt for PartFiles {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let i = self
            .parts
            .partition_point(|(start, _, len)| start + len <= offset);
        let (start, file, len) = &self.parts[i];
        let within = offset - start;
        let want = buf
            .len()
            .min(usize::try_from(len - within).unwrap_or(usize::MAX));
        std::os::unix::fs::FileExt::read_at(file, &mut buf[..want], within)
    }
    fn len(&self) -> u64 {
        self.len
    }
}

/// A [`ReadAt`] read front to back (and seekable), counting where it is.
struct Cursor<'a> {
    input: &'a dyn ReadAt,
    pos: u64,
    /// Shared with whoever needs to know how far the reading went.
    seen: Arc<AtomicU64>,
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read_at(buf, self.pos)?;
        self.pos += n as u64;
        self.seen.store(self.pos, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for Cursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.input.len().checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::other("seek before the start"))?;
        self.seen.store(self.pos, Ordering::Relaxed);
        Ok(self.pos)
    }
}

/// A stream that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    seen: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One entry's data in an uncompressed tar, holding the store.
struct OwnedSection {
    store: Arc<Store>,
    pos: u64,
    end: u64,
}

impl Read for OwnedSection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Store::Tar { input, .. } = &*self.store else {
            return Err(io::Error::other("not an uncompressed tar"));
        };
        let mut section = Section {
            input: input.as_ref(),
            pos: self.pos,
            end: self.end,
        };
        let n = section.read(buf)?;
        self.pos = section.pos;
        Ok(n)
    }
}

/// One entry's data in an uncompressed tar.
struct Section<'a> {
    input: &'a dyn ReadAt,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.input.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside this entry",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Small entries of a compressed tar kept from the indexing pass, at most
/// this much in all (they are the documents: JSON, kilobytes each).
const KEEP_BUDGET: u64 = 256 << 20;
/// The first byte of a JSON document: `{` or `[`.
const JSON_START: &[u8] = b"{[";
/// Only entries up to this size are kept.
const KEEP_MAX: u64 = crate::resolve::MAX_CONFIG_SIZE;

pub enum Store {
    Dir(PathBuf),
    Tar {
        input: Box<dyn ReadAt>,
        index: TarIndex,
    },
    Compressed {
        input: Box<dyn ReadAt>,
        compression: WholeCompression,
        index: TarIndex,
        kept: HashMap<String, Vec<u8>>,
    },
}

/// What opening found: the store, and the container kind.
impl Store {
    /// Opens `path`: a directory, a split archive (named by any of its
    /// parts, its `.sha256` file, or the joined name its parts have), or a
    /// file whose first bytes say whether it is gzip, zstd or a plain tar.
    pub fn open(path: &Path) -> Result<Store, ReadError> {
        let io_err = |source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            other => Some(other.map_err(io_err)?),
        };
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Ok(Store::Dir(path.to_path_buf()));
        }
        let parts = match &meta {
            // A missing archive may be there in parts.
            None => crate::archive::split::find(&crate::archive::split::part_name(path, 0, 3)),
            Some(_) => crate::archive::split::find(path),
        }
        .map_err(io_err)?;
        let input: Box<dyn ReadAt> = match (parts, meta) {
            (Some(parts), _) => Box::new(PartFiles::open(&parts).map_err(io_err)?),
            (None, Some(meta)) => Box::new(OneFile {
                file: File::open(path).map_err(io_err)?,
                len: meta.len(),
            }),
            (None, None) => {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no such file or directory",
                )));
            }
        };
        let mut magic = [0u8; 4];
        let n = read_full_at(input.as_ref(), &mut magic, 0).map_err(io_err)?;
        match WholeCompression::sniff(&magic[..n]) {
            None => {
                let index = index_tar(path, input.as_ref())?;
                Ok(Store::Tar { input, index })
            }
            Some(compression) => {
                let (index, kept) = index_compressed(path, input.as_ref(), compression)?;
                Ok(Store::Compressed {
                    input,
                    compression,
                    index,
                    kept,
                })
            }
        }
    }

    /// The file `name` leads to: its own name (links followed) and size.
    pub fn locate(&self, name: &str) -> Result<Found, Lookup> {
        match self {
            Store::Dir(root) => locate_in_dir(root, name),
            Store::Tar { index, .. } | Store::Compressed { index, .. } => index.resolve(name),
        }
    }

    /// Whether `name` is there at all.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Store::Dir(root) => tar_index::normalise(name)
                .is_ok_and(|n| std::fs::symlink_metadata(root.join(n)).is_ok()),
            Store::Tar { index, .. } | Store::Compressed { index, .. } => index.contains(name),
        }
    }

    /// A reader of the file `found` names (as [`locate`](Self::locate)
    /// gave it). On a compressed tar this decompresses everything before
    /// it (or takes the copy kept from the first pass).
    pub fn open_entry(&self, found: &Found) -> io::Result<Box<dyn Read + '_>> {
        match self {
            Store::Dir(root) => Ok(Box::new(open_in_dir(root, &found.name)?)),
            Store::Tar { input, .. } => Ok(Box::new(Section {
                input: input.as_ref(),
                pos: found.offset,
                end: found.offset + found.size,
            })),
            Store::Compressed {
                input,
                compression,
                kept,
                ..
            } => {
                if let Some(bytes) = kept.get(&found.name) {
                    return Ok(Box::new(io::Cursor::new(bytes.as_slice())));
                }
                let mut stream = decompressed(input.as_ref(), *compression)?;
                let skipped = io::copy(&mut (&mut stream).take(found.offset), &mut io::sink())?;
                if skipped != found.offset {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the archive ends before this entry",
                    ));
                }
                Ok(Box::new(stream.take(found.size)))
            }
        }
    }

    /// A reader of the file `found` names that holds the store, so it can
    /// outlive a borrow (an upload re-opens blobs from other threads). A
    /// compressed tar has none: decompress it whole first
    /// ([`decompress_into`](Self::decompress_into)).
    /// It starts `at` bytes into the file (its end when `at` is past it).
    pub fn open_entry_owned(
        self: &Arc<Self>,
        found: &Found,
        at: u64,
    ) -> io::Result<Box<dyn Read + Send>> {
        let at = at.min(found.size);
        match &**self {
            Store::Dir(root) => {
                let mut file = open_in_dir(root, &found.name)?;
                file.seek(SeekFrom::Start(at))?;
                Ok(Box::new(file))
            }
            Store::Tar { .. } => Ok(Box::new(OwnedSection {
                store: Arc::clone(self),
                pos: found.offset + at,
                end: found.offset + found.size,
            })),
            Store::Compressed { .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a compressed archive is read front to back; decompress it first",
            )),
        }
    }

    /// Writes a compressed tar's tar, decompressed, into `out`; `None` when
    /// the store is not a compressed tar.
    pub fn decompress_into(&self, out: &mut dyn Write) -> io::Result<Option<u64>> {
        match self {
            Store::Compressed {
                input, compression, ..
            } => Ok(Some(io::copy(
                &mut decompressed(input.as_ref(), *compression)?,
                out,
            )?)),
            _ => Ok(None),
        }
    }

    /// Reads the file `found` names whole (the caller checked its size).
    pub fn read_small(&self, found: &Found) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(found.size).unwrap_or(0).min(1 << 20));
        self.open_entry(found)?
            .take(found.size)
            .read_to_end(&mut out)?;
        if out.len() as u64 != found.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the entry is shorter than its header says",
            ));
        }
        Ok(out)
    }

    /// Hands each of `names` (as [`locate`](Self::locate) gives them) to
    /// `f` with a reader of its data, each once, in the order cheapest for
    /// the store: by offset in a tar, in one pass over a compressed one (the
    /// second pass over it, after the index). A name not found is skipped.
    pub fn visit(
        &self,
        names: &[String],
        f: &mut dyn FnMut(&str, &mut dyn Read) -> io::Result<()>,
    ) -> Result<(), ReadError> {
        let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
        match self {
            Store::Dir(root) => {
                for name in dedup(names) {
                    let mut file = open_in_dir(root, name).map_err(|source| ReadError::Io {
                        path: root.join(name),
                        source,
                    })?;
                    f(name, &mut file).map_err(|source| ReadError::Io {
                        path: root.join(name),
                        source,
                    })?;
                }
                Ok(())
            }
            Store::Tar { input, index } => {
                let mut found: Vec<Found> =
                    dedup(names).filter_map(|n| index.resolve(n).ok()).collect();
                found.sort_by_key(|f| f.offset);
                for e in found {
                    let mut section = Section {
                        input: input.as_ref(),
                        pos: e.offset,
                        end: e.offset + e.size,
                    };
                    f(&e.name, &mut section).map_err(|source| ReadError::Entry {
                        name: e.name.clone(),
                        source,
                    })?;
                }
                Ok(())
            }
            Store::Compressed {
                input, compression, ..
            } => pass(input.as_ref(), *compression, &wanted, f),
        }
    }
}

fn dedup(names: &[String]) -> impl Iterator<Item = &str> {
    let mut seen = HashSet::new();
    names
        .iter()
        .map(String::as_str)
        .filter(move |n| seen.insert(*n))
}

/// Fills `buf` from `offset` as far as the input goes.
fn read_full_at(input: &dyn ReadAt, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

fn index_error(path: &Path, e: IndexError) -> ReadError {
    match e {
        IndexError::Truncated(detail) => ReadError::Truncated {
            path: path.to_path_buf(),
            detail,
        },
        // The tar crate's words may quote the file's bytes: not shown.
        IndexError::NotTar(e) => ReadError::NotAnArchive {
            path: path.to_path_buf(),
            detail: match e.kind() {
                io::ErrorKind::InvalidData | io::ErrorKind::Other => {
                    "a block that should be a tar header is not one".into()
                }
                _ => e.to_string(),
            },
        },
        other => ReadError::Malformed {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

fn no_end_marker(path: &Path) -> ReadError {
    ReadError::Truncated {
        path: path.to_path_buf(),
        detail: "it ends without the end-of-archive blocks".into(),
    }
}

/// The headers of an uncompressed tar, skipping over the data.
fn index_tar(path: &Path, input: &dyn ReadAt) -> Result<TarIndex, ReadError> {
    let seen = Arc::new(AtomicU64::new(0));
    let cursor = Cursor {
        input,
        pos: 0,
        seen: Arc::clone(&seen),
    };
    let mut archive = tar::Archive::new(cursor);
    let entries = archive
        .entries_with_seek()
        .map_err(|e| index_error(path, IndexError::NotTar(e)))?;
    let (index, data_end) = TarIndex::build(entries, Some(input.len()), &mut |_, _, _| Ok(()))
        .map_err(|e| index_error(path, e))?;
    if !tar_index::has_end_marker(seen.load(Ordering::Relaxed), data_end) {
        return Err(no_end_marker(path));
    }
    Ok(index)
}

/// A decompressing reader over the whole input, front to back.
fn decompressed<'a>(
    input: &'a dyn ReadAt,
    compression: WholeCompression,
) -> io::Result<Box<dyn Read + 'a>> {
    let cursor = Cursor {
        input,
        pos: 0,
        seen: Arc::new(AtomicU64::new(0)),
    };
    let reader = BufReader::with_capacity(1 << 20, cursor);
    Ok(match compression {
        WholeCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        WholeCompression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    })
}

/// The first pass over a compressed tar: the index, and every small entry
/// that looks like a JSON document kept in memory (within [`KEEP_BUDGET`]).
fn index_compressed(
    path: &Path,
    input: &dyn ReadAt,
    compression: WholeCompression,
) -> Result<(TarIndex, HashMap<String, Vec<u8>>), ReadError> {
    let io_err = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let seen = Arc::new(AtomicU64::new(0));
    let stream = Counting {
        inner: decompressed(input, compression).map_err(io_err)?,
        seen: Arc::clone(&seen),
    };
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|e| index_error(path, IndexError::NotTar(e)))?;
    let mut kept = HashMap::new();
    let mut budget = KEEP_BUDGET;
    let (index, data_end) = TarIndex::build(entries, None, &mut |name, size, data| {
        if size > KEEP_MAX || size > budget {
            return Ok(());
        }
        // Documents start with `{` or `[`; layers never do (tar, gzip, zstd).
        let mut bytes = vec![0u8];
        if data.read(&mut bytes)? == 0 || !JSON_START.contains(&bytes[0]) {
            return Ok(());
        }
        data.take(size - 1).read_to_end(&mut bytes)?;
        budget -= bytes.len() as u64;
        kept.insert(name.to_string(), bytes);
        Ok(())
    })
    .map_err(|e| match e {
        IndexError::NotTar(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            index_error(path, IndexError::Truncated(io.to_string()))
        }
        other => index_error(path, other),
    })?;
    if !tar_index::has_end_marker(seen.load(Ordering::Relaxed), data_end) {
        return Err(no_end_marker(path));
    }
    Ok((index, kept))
}

/// One pass over a compressed tar, handing `f` each wanted file.
fn pass(
    input: &dyn ReadAt,
    compression: WholeCompression,
    wanted: &HashSet<&str>,
    f: &mut dyn FnMut(&str, &mut dyn Read) -> io::Result<()>,
) -> Result<(), ReadError> {
    let archive_err = |source: io::Error| ReadError::Entry {
        name: "(the compressed archive)".into(),
        source,
    };
    let mut archive = tar::Archive::new(decompressed(input, compression).map_err(archive_err)?);
    let mut left = wanted.len();
    for entry in archive.entries().map_err(archive_err)? {
        if left == 0 {
            break;
        }
        let mut entry = entry.map_err(archive_err)?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Ok(name) = tar_index::normalise(&raw) else {
            continue;
        };
        if wanted.contains(name.as_str()) {
            left -= 1;
            f(&name, &mut entry).map_err(|source| ReadError::Entry {
                name: name.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// `name` under `root`, every directory on the way a real directory (not a
/// link) and the file itself a regular file.
fn locate_in_dir(root: &Path, name: &str) -> Result<Found, Lookup> {
    let name = tar_index::normalise(name).map_err(Lookup::BadName)?;
    if name.is_empty() {
        return Err(Lookup::Directory);
    }
    let mut path = root.to_path_buf();
    let parts: Vec<&str> = name.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let meta = std::fs::symlink_metadata(&path).map_err(|_| Lookup::Missing)?;
        let last = i + 1 == parts.len();
        if meta.file_type().is_symlink() {
            return Err(Lookup::SymbolicLink);
        }
        if !last && !meta.is_dir() {
            return Err(Lookup::Missing);
        }
        if last {
            if meta.is_dir() {
                return Err(Lookup::Directory);
            }
            if !meta.is_file() {
                return Err(Lookup::Special);
            }
            return Ok(Found {
                name,
                offset: 0,
                size: meta.len(),
            });
        }
    }
    Err(Lookup::Missing)
}

/// Opens a file [`locate_in_dir`] found, never through a link.
fn open_in_dir(root: &Path, name: &str) -> io::Result<File> {
    crate::cache::fsx::open_nofollow_read(&root.join(name))
}
