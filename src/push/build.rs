//! A registry manifest for an image whose source holds none (`-f legacy`,
//! `docker save` before Docker 25, skopeo's `docker-archive:`): each
//! uncompressed layer is compressed with gzip into a file of the push's
//! scratch directory (checked against the config's `diff_ids` while it is
//! read), layers already compressed are sent as they are, and a Docker
//! schema 2 manifest names the config (unchanged, so the image ID stays)
//! and the layers. Its digest is new: no registry ever served it.

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::PushError;
use crate::archive::read::{Blob, Config, Layer, Source};
use crate::digest::{Digest, Hasher};
use crate::media_type::{self, Compression};

const GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const ZSTD_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";

/// A layer ready to upload.
#[derive(Debug)]
pub struct BuiltLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: &'static str,
    /// Where its bytes are: the source's blob as it is, or a file written here.
    pub from: LayerFrom,
}

#[derive(Debug)]
pub enum LayerFrom {
    Source(Blob),
    File(PathBuf),
}

/// The manifest built, and the layers it names.
#[derive(Debug)]
pub struct Built {
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub layers: Vec<BuiltLayer>,
}

/// Builds the manifest of `config` and `layers`, compressing with up to
/// `jobs` threads into `scratch`. `image` names the image in errors.
pub fn build(
    source: &Arc<Source>,
    image: &str,
    config: &Config,
    layers: &[Layer],
    scratch: &Path,
    jobs: usize,
) -> Result<Built, PushError> {
    let config_bytes = config.bytes.as_ref().ok_or_else(|| PushError::Damaged {
        image: image.to_string(),
        detail: "its config cannot be read".into(),
    })?;
    let next = AtomicUsize::new(0);
    let results: Vec<(usize, Result<BuiltLayer, PushError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.clamp(1, layers.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(layer) = layers.get(i) else {
                            return done;
                        };
                        done.push((i, prepare(source, image, layer, scratch)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut results = results;
    results.sort_by_key(|(i, _)| *i);
    let built: Vec<BuiltLayer> = results
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Result<_, _>>()?;
    if built.len() != layers.len() {
        return Err(PushError::Damaged {
            image: image.to_string(),
            detail: "a layer could not be prepared".into(),
        });
    }
    let manifest = manifest_json(&Digest::of(config_bytes), config_bytes.len() as u64, &built);
    Ok(Built {
        digest: Digest::of(&manifest),
        manifest,
        layers: built,
    })
}

/// The Docker schema 2 manifest (compact JSON, as registries store it).
fn manifest_json(config: &Digest, config_size: u64, layers: &[BuiltLayer]) -> Vec<u8> {
    let value = json!({
        "schemaVersion": 2,
        "mediaType": media_type::DOCKER_MANIFEST,
        "config": {
            "mediaType": media_type::DOCKER_CONFIG,
            "size": config_size,
            "digest": config.to_string(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type,
            "size": l.size,
            "digest": l.digest.to_string(),
        })).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// One layer: sent as it is when already compressed, else gzip-compressed
/// into `scratch`; either way checked against its diff_id.
fn prepare(
    source: &Source,
    image: &str,
    layer: &Layer,
    scratch: &Path,
) -> Result<BuiltLayer, PushError> {
    let damaged = |detail: String| PushError::Damaged {
        image: image.to_string(),
        detail: format!(
            "layer {}: {detail}",
            crate::text::escape_untrusted(&layer.blob.entry)
        ),
    };
    let mut reader = source
        .open_blob_owned(&layer.blob)
        .map_err(|e| damaged(e.to_string()))?;
    let mut head = [0u8; 4];
    let got = read_head(&mut reader, &mut head).map_err(|e| damaged(e.to_string()))?;
    let head = &head[..got];
    let compression = crate::archive::read::sniff(head);
    if compression != Compression::None {
        // Already compressed: hash it whole (the diff_id needs decompressing).
        let mut hasher = Hasher::new();
        hasher.update(head);
        hasher
            .update_from(&mut reader)
            .map_err(|e| damaged(e.to_string()))?;
        let size = hasher.len();
        return Ok(BuiltLayer {
            digest: hasher.finish(),
            size,
            media_type: if compression == Compression::Gzip {
                GZIP_LAYER
            } else {
                ZSTD_LAYER
            },
            from: LayerFrom::Source(layer.blob.clone()),
        });
    }
    let (path, digest, size, diff_id) =
        gzip_into(scratch, head, reader).map_err(|e| damaged(e.to_string()))?;
    if let Some(expected) = &layer.diff_id
        && *expected != diff_id
    {
        let _ = std::fs::remove_file(&path);
        return Err(damaged(format!(
            "its content is {diff_id}, but the config's diff_id is {expected}"
        )));
    }
    Ok(BuiltLayer {
        digest,
        size,
        media_type: GZIP_LAYER,
        from: LayerFrom::File(path),
    })
}

fn read_head(reader: &mut impl Read, head: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Compresses `head` then `rest` into a new file of `dir`; returns it with
/// the compressed digest and size and the uncompressed digest.
fn gzip_into(
    dir: &Path,
    head: &[u8],
    rest: impl Read,
) -> io::Result<(PathBuf, Digest, u64, Digest)> {
    let file = tempfile::Builder::new()
        .prefix(".push-layer-")
        .suffix(".gz")
        .tempfile_in(dir)?;
    let (file, path) = file.keep().map_err(|e| e.error)?;
    let result = (|| {
        let out = HashingWriter {
            inner: io::BufWriter::with_capacity(1 << 20, file),
            hasher: Hasher::new(),
        };
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        let mut plain = Hasher::new();
        plain.update(head);
        gz.write_all(head)?;
        let mut rest = BufReader::with_capacity(1 << 20, rest);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = rest.read(&mut buf)?;
            if n == 0 {
                break;
            }
            plain.update(&buf[..n]);
            gz.write_all(&buf[..n])?;
        }
        let mut out = gz.finish()?;
        out.inner.flush()?;
        let size = out.hasher.len();
        Ok((out.hasher.finish(), size, plain.finish()))
    })();
    match result {
        Ok((digest, size, diff_id)) => Ok((path, digest, size, diff_id)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// A writer that hashes what it writes.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trip_and_digests() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 300_000];
        let (path, digest, size, diff_id) = gzip_into(dir.path(), &data[..4], &data[4..]).unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written.len() as u64, size);
        assert_eq!(Digest::of(&written), digest);
        assert_eq!(diff_id, Digest::of(&data));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&written[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn the_manifest_is_docker_schema_2() {
        let layer = BuiltLayer {
            digest: Digest::of(b"l"),
            size: 1,
            media_type: GZIP_LAYER,
            from: LayerFrom::File(PathBuf::from("x")),
        };
        let m: serde_json::Value =
            serde_json::from_slice(&manifest_json(&Digest::of(b"c"), 1, &[layer])).unwrap();
        assert_eq!(m["mediaType"], media_type::DOCKER_MANIFEST);
        assert_eq!(m["config"]["mediaType"], media_type::DOCKER_CONFIG);
        assert_eq!(m["layers"][0]["mediaType"], GZIP_LAYER);
        assert_eq!(m["layers"][0]["digest"], Digest::of(b"l").to_string());
    }
}
