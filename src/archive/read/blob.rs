//! Reading a blob so that it checks itself: [`BlobReader`] hashes and counts
//! what passes through it and, at the end, fails the read if the size or the
//! sha256 is not what was expected (or the data ran short). And
//! [`uncompressed_digest`]: a layer's content hashed through gzip, zstd or
//! nothing, for the config's `diff_ids`.

use std::io::{self, BufRead, BufReader, Read};

use crate::digest::{Digest, Hasher};
use crate::media_type::{Compression, layer_compression};

/// What a blob turned out to be, when that was not what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("expected {expected} bytes, found {found}")]
    Size { expected: u64, found: u64 },
    #[error("more than the {expected} bytes expected")]
    TooLong { expected: u64 },
    #[error("expected {expected}, found {found}")]
    Digest { expected: Digest, found: Digest },
}

impl BlobError {
    /// The [`BlobError`] inside an I/O error from a [`BlobReader`], if any.
    pub fn from_io(e: &io::Error) -> Option<&BlobError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<BlobError>())
    }
}

/// A reader that verifies the blob it reads: at the end of the data the
/// size and the digest must be what was expected (either may be unknown),
/// else the last read fails with a [`BlobError`]. What it found is there
/// afterwards ([`digest`](Self::digest), [`len`](Self::len)).
pub struct BlobReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    len: u64,
    digest: Option<Digest>,
    expected_digest: Option<Digest>,
    expected_size: Option<u64>,
}

impl<R: Read> BlobReader<R> {
    pub fn new(inner: R, expected_digest: Option<Digest>, expected_size: Option<u64>) -> Self {
        BlobReader {
            inner,
            hasher: Some(Hasher::new()),
            len: 0,
            digest: None,
            expected_digest,
            expected_size,
        }
    }

    /// The sha256 of the whole blob, once it was read to the end.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(hasher) = self.hasher.take() else {
            return Ok(());
        };
        let found = hasher.finish();
        self.digest = Some(found.clone());
        if let Some(expected) = self.expected_size
            && expected != self.len
        {
            return Err(invalid(BlobError::Size {
                expected,
                found: self.len,
            }));
        }
        if let Some(expected) = &self.expected_digest
            && *expected != found
        {
            return Err(invalid(BlobError::Digest {
                expected: expected.clone(),
                found,
            }));
        }
        Ok(())
    }
}

fn invalid(e: BlobError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<R: Read> Read for BlobReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.len += n as u64;
        if let Some(expected) = self.expected_size
            && self.len > expected
        {
            self.hasher = None;
            return Err(invalid(BlobError::TooLong { expected }));
        }
        Ok(n)
    }
}

/// A layer's uncompressed content: its digest and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncompressed {
    pub digest: Digest,
    pub len: u64,
    pub compression: Compression,
}

/// Why a layer's content could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The blob itself could not be read or is not what was expected.
    #[error("{0}")]
    Read(io::Error),
    #[error("cannot decompress it ({compression:?}): {source}")]
    Decompress {
        compression: Compression,
        source: io::Error,
    },
    #[error("it decompresses to more than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// Hashes the uncompressed content of a layer read from `raw`, which is
/// read to its end (so a [`BlobReader`] underneath checks the whole blob).
/// The compression is the media type's, or else sniffed from the first
/// bytes. At most `limit` uncompressed bytes are hashed (nothing is kept,
/// but a decompression bomb would take forever).
pub fn uncompressed_digest(
    raw: &mut dyn Read,
    media_type: Option<&str>,
    limit: u64,
) -> Result<Uncompressed, LayerError> {
    let mut reader = BufReader::with_capacity(1 << 20, raw);
    let compression = match media_type.and_then(layer_compression) {
        Some(c) => c,
        None => sniff(reader.fill_buf().map_err(LayerError::Read)?),
    };
    let mut hasher = Hasher::new();
    let hashed = {
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut reader),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut reader)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(&mut reader).map_err(|source| {
                    LayerError::Decompress {
                        compression,
                        source,
                    }
                })?,
            ),
        };
        hasher.update_from(decoder.take(limit.saturating_add(1)))
    };
    if let Err(e) = hashed {
        return Err(match BlobError::from_io(&e) {
            Some(_) => LayerError::Read(e),
            None if compression == Compression::None => LayerError::Read(e),
            None => LayerError::Decompress {
                compression,
                source: e,
            },
        });
    }
    if hasher.len() > limit {
        return Err(LayerError::TooLarge { limit });
    }
    // Whatever follows the compressed stream is still part of the blob.
    io::copy(&mut reader, &mut io::sink()).map_err(LayerError::Read)?;
    let len = hasher.len();
    Ok(Uncompressed {
        digest: hasher.finish(),
        len,
        compression,
    })
}

/// The compression the first bytes of a blob show.
pub fn sniff(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &mut dyn Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_blob_that_is_what_it_claims_reads_through() {
        let data = b"hello blob".to_vec();
        let mut r = BlobReader::new(&data[..], Some(Digest::of(&data)), Some(10));
        assert_eq!(read_all(&mut r).unwrap(), data);
        assert_eq!(r.digest(), Some(&Digest::of(&data)));
    }

    #[test]
    fn wrong_bytes_short_data_and_long_data_fail_the_read() {
        let data = b"hello blob";
        let other = Digest::of(b"other");
        let mut r = BlobReader::new(&data[..], Some(other.clone()), Some(10));
        let e = read_all(&mut r).unwrap_err();
        assert_eq!(
            BlobError::from_io(&e),
            Some(&BlobError::Digest {
                expected: other,
                found: Digest::of(data)
            })
        );
        let mut r = BlobReader::new(&data[..], None, Some(11));
        let e = read_all(&mut r).unwrap_err();
        assert_eq!(
            BlobError::from_io(&e),
            Some(&BlobError::Size {
                expected: 11,
                found: 10
            })
        );
        let mut r = BlobReader::new(&data[..], None, Some(4));
        let e = read_all(&mut r).unwrap_err();
        assert_eq!(
            BlobError::from_io(&e),
            Some(&BlobError::TooLong { expected: 4 })
        );
    }

    #[test]
    fn uncompressed_digests_through_each_compression() {
        let plain = b"layer content ".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        for (blob, c) in [
            (plain.clone(), Compression::None),
            (gz, Compression::Gzip),
            (zst, Compression::Zstd),
        ] {
            let u = uncompressed_digest(&mut &blob[..], None, 1 << 30).unwrap();
            assert_eq!(u.digest, Digest::of(&plain));
            assert_eq!(u.compression, c);
            assert_eq!(u.len, plain.len() as u64);
        }
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        let e = uncompressed_digest(&mut &zst[..], None, 100).unwrap_err();
        assert!(matches!(e, LayerError::TooLarge { limit: 100 }), "{e}");
        let e = uncompressed_digest(&mut &b"\x1f\x8bnot gzip"[..], None, 100).unwrap_err();
        assert!(matches!(e, LayerError::Decompress { .. }), "{e}");
    }
}
