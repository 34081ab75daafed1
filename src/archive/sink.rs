//! Archives written front to back into a stream: compressed as a whole
//! (`--compress gzip|zstd`, `.tar.gz`, `.tar.zst`) into a file, or to stdout
//! (`-o -`), compressed or not. A plain `.tar` file is written in place
//! instead (see `docker.rs`), where blobs may land in any order.
//!
//! [`Packed`] is the stream: the encoder over a buffered file or stdout;
//! [`finish`](Packed::finish) ends the compressed stream. A file cut short
//! (an error, Ctrl-C) is removed; a stream to stdout cut short lacks the
//! tar's end and its `manifest.json` and `index.json`, which come last, so
//! `docker load` refuses it rather than loading part of an image.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::digest::{Digest, Hasher};
use crate::error::PullError;

/// How an archive as a whole is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Packing {
    /// A plain tar.
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Packing {
    /// The file name ending of an archive packed so.
    pub fn extension(self) -> &'static str {
        match self {
            Packing::None => ".tar",
            Packing::Gzip => ".tar.gz",
            Packing::Zstd => ".tar.zst",
        }
    }
}

/// Where one archive goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A file, given its name once complete.
    File(PathBuf),
    /// Standard output (`-o -`).
    Stdout,
}

impl Place {
    /// How the place is named in messages and reports.
    pub fn display(&self) -> String {
        match self {
            Place::File(path) => path.display().to_string(),
            Place::Stdout => "standard output".to_string(),
        }
    }

    /// The name errors give it.
    pub fn label(&self) -> &Path {
        match self {
            Place::File(path) => path,
            Place::Stdout => Path::new("standard output"),
        }
    }
}

const BUFFER: usize = 1 << 20;

/// zstd's level for archives: its default, fast enough to keep up with a
/// download on one core.
const ZSTD_LEVEL: i32 = 3;

/// The underlying output: the archive's temporary file, or stdout.
pub(super) enum Base {
    File(File),
    Stdout(io::Stdout),
}

impl Write for Base {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Base::File(f) => f.write(buf),
            Base::Stdout(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Base::File(f) => f.flush(),
            Base::Stdout(s) => s.flush(),
        }
    }
}

/// The archive's bytes on their way out, compressed as asked.
pub(super) enum Packed {
    Plain(BufWriter<Base>),
    Gzip(flate2::write::GzEncoder<BufWriter<Base>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<Base>>),
}

impl Packed {
    pub(super) fn new(base: Base, packing: Packing) -> io::Result<Packed> {
        let out = BufWriter::with_capacity(BUFFER, base);
        Ok(match packing {
            Packing::None => Packed::Plain(out),
            Packing::Gzip => Packed::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            Packing::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                // Compression on other threads where the library has them.
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
                let _ = encoder.multithread(u32::try_from(workers).unwrap_or(1));
                Packed::Zstd(encoder)
            }
        })
    }

    /// Ends the stream (the compressed format's trailer) and flushes it.
    pub(super) fn finish(self) -> io::Result<()> {
        let mut out = match self {
            Packed::Plain(out) => out,
            Packed::Gzip(gz) => gz.finish()?,
            Packed::Zstd(z) => z.finish()?,
        };
        out.flush()
    }
}

impl Write for Packed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Packed::Plain(w) => w.write(buf),
            Packed::Gzip(w) => w.write(buf),
            Packed::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Packed::Plain(w) => w.flush(),
            Packed::Gzip(w) => w.flush(),
            Packed::Zstd(w) => w.flush(),
        }
    }
}

/// Copies a cached blob of `size` bytes into `out`, checking its size and,
/// unless the cache trusts it ([`Cache::trusts`]), its digest (hashed as it
/// is copied): a blob found right is sealed, a damaged one is evicted from
/// the cache and reported. `label` names `out` in errors.
pub(super) fn copy_blob_into(
    out: &mut dyn Write,
    label: &Path,
    cache: &Cache,
    digest: &Digest,
    size: u64,
) -> Result<(), PullError> {
    let src = cache.blob_path(digest);
    let damaged = |detail: String| PullError::io("reading", &src, cache.damaged(digest, &detail));
    let file = cache
        .open_blob(digest)
        .map_err(|e| PullError::io("reading", &src, e))?;
    let before = file
        .metadata()
        .map_err(|e| PullError::io("reading", &src, e))?;
    let mut hasher = (!cache.trusts(digest, &before)).then(Hasher::new);
    let mut reader = BufReader::with_capacity(BUFFER, file).take(size + 1);
    let mut buf = vec![0u8; BUFFER];
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PullError::io("reading", &src, e)),
        };
        copied += n as u64;
        if copied > size {
            return Err(damaged(format!("more than the {size} bytes expected")));
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        out.write_all(&buf[..n])
            .map_err(|e| PullError::io("writing", label, e))?;
    }
    if copied != size {
        return Err(damaged(format!("{copied} bytes, expected {size}")));
    }
    match hasher.map(Hasher::finish) {
        Some(actual) if &actual != digest => {
            Err(damaged(format!("its content hashes to {actual}")))
        }
        Some(_) => {
            if let Ok(now) = reader.get_ref().get_ref().metadata() {
                cache.seal(digest, &before, &now);
            }
            Ok(())
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_and_zstd_streams_end_properly() {
        let dir = tempfile::tempdir().unwrap();
        for packing in [Packing::None, Packing::Gzip, Packing::Zstd] {
            let path = dir.path().join(format!("a{}", packing.extension()));
            let file = File::create(&path).unwrap();
            let mut out = Packed::new(Base::File(file), packing).unwrap();
            out.write_all(&[7u8; 100_000]).unwrap();
            out.finish().unwrap();
            let raw = std::fs::read(&path).unwrap();
            let back = match packing {
                Packing::None => raw,
                Packing::Gzip => {
                    let mut v = Vec::new();
                    flate2::read::GzDecoder::new(&raw[..])
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
                Packing::Zstd => zstd::decode_all(&raw[..]).unwrap(),
            };
            assert_eq!(back, vec![7u8; 100_000], "{packing:?}");
        }
    }
}
