//! The `legacy` (alias `synology`) format: the layout `docker save` wrote from
//! Docker 1.10 to 24, which every old engine loads (Synology DSM ships 18.09
//! and 20.10). Per layer a directory `<v1id>/` with `VERSION`, `json` and an
//! uncompressed `layer.tar`; the registry's config as `<config-hex>.json`;
//! `manifest.json` and `repositories`.
//!
//! Layers are decompressed (gzip or zstd) on the way, so zstd images load on
//! engines that cannot read zstd, and the uncompressed digest of every layer
//! is checked against the config's `diff_ids`. Decompression is bounded
//! ([`LayerLimit`], `--max-layer-size`) and, unless lifted, stops once a
//! layer cannot fit in the free space beside the archive, so a small hostile
//! layer cannot fill the disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::Path;

use serde_json::{Map, Value, json};

use super::tar_out::TarOut;
use super::{ArchiveImage, LAYER_RATIO, LAYER_RATIO_FLOOR, LAYER_SIZE_DEFAULT, LayerLimit};
use crate::cache::Cache;
use crate::digest::{Digest, Hasher};
use crate::error::PullError;
use crate::media_type::{Compression, layer_compression};

/// A layer's place in the legacy layout.
struct V1Layer {
    id: String,
    parent: Option<String>,
}

pub fn write(
    out: &mut dyn Write,
    path: &Path,
    scratch_dir: &Path,
    images: &[ArchiveImage],
    cache: &Cache,
    limit: LayerLimit,
) -> Result<(), PullError> {
    let mut tar = TarOut::new(out, path);
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // Directories already in the archive, and where each diff_id's layer.tar is.
    let mut written_dirs: HashSet<String> = HashSet::new();
    let mut layer_files: HashMap<String, String> = HashMap::new();
    let mut written_configs: HashSet<Digest> = HashSet::new();

    for image in images {
        let image_name = image.reference.to_string();
        let config_bytes = super::read_config(cache, &image.config)?;
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(image, format!("the image config is not JSON: {e}")))?;
        let diff_ids = diff_ids(&config).map_err(|e| invalid(image, e.to_string()))?;
        if diff_ids.len() != image.layers.len() {
            return Err(invalid(
                image,
                format!(
                    "the manifest has {} layers but the config lists {} diff_ids",
                    image.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let v1 = v1_layers(&diff_ids, &image.config.digest);

        let mut layer_paths = Vec::new();
        for (i, (layer, v1l)) in image.layers.iter().zip(&v1).enumerate() {
            let dir = format!("{}/", v1l.id);
            let layer_path = format!("{}/layer.tar", v1l.id);
            layer_paths.push(layer_path.clone());
            if !written_dirs.insert(v1l.id.clone()) {
                continue;
            }
            tar.dir(&dir)?;
            tar.file(&format!("{}/VERSION", v1l.id), b"1.0")?;
            let top = i + 1 == image.layers.len();
            let json = v1_json(&config, v1l, top);
            tar.file(&format!("{}/json", v1l.id), &json)?;
            match layer_files.get(&diff_ids[i]) {
                // The target has it (`--exclude-from`): named, not held.
                _ if i < image.left_out => {}
                // The same layer again (at another place in a chain): link to
                // the first copy, as docker save does.
                Some(first) => {
                    tar.symlink(&layer_path, &format!("../{first}"))?;
                }
                None => {
                    let job = LayerJob {
                        name: &layer_path,
                        layer,
                        diff_id: &diff_ids[i],
                        image: &image_name,
                    };
                    write_layer(&mut tar, &job, cache, scratch_dir, limit)?;
                    layer_files.insert(diff_ids[i].clone(), layer_path.clone());
                }
            }
        }

        let config_name = format!("{}.json", image.config.digest.hex());
        if written_configs.insert(image.config.digest.clone()) {
            tar.file(&config_name, &config_bytes)?;
        }
        let mut entry = Map::new();
        entry.insert("Config".into(), json!(config_name));
        entry.insert(
            "RepoTags".into(),
            json!(image.repo_tag().into_iter().collect::<Vec<_>>()),
        );
        entry.insert("Layers".into(), json!(layer_paths));
        manifest.push(Value::Object(entry));

        let name = image.name_reference();
        if let (Some(tag), Some(top)) = (&name.tag, v1.last()) {
            repositories
                .entry(name.familiar_name())
                .or_default()
                .insert(tag.clone(), top.id.clone());
        }
    }
    tar.file("manifest.json", &to_json(&Value::Array(manifest)))?;
    tar.file("repositories", &to_json(&json!(repositories)))?;
    tar.finish()
}

/// The detail may quote the registry's config: it is escaped.
fn invalid(image: &ArchiveImage, detail: String) -> PullError {
    PullError::InvalidManifest {
        image: image.reference.to_string(),
        registry: image.reference.registry.clone(),
        what: "image config".into(),
        detail: crate::text::escape_untrusted(&detail),
    }
}

/// Why an image config's `rootfs.diff_ids` cannot be used.
#[derive(Debug, thiserror::Error)]
enum DiffIdError {
    #[error("the image config has no rootfs.diff_ids")]
    Missing,
    #[error("a diff_id is not a string")]
    NotAString,
    #[error("diff_id {given:?}: {source}")]
    Invalid {
        given: String,
        source: crate::digest::DigestError,
    },
}

fn diff_ids(config: &Value) -> Result<Vec<String>, DiffIdError> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or(DiffIdError::Missing)?;
    ids.iter()
        .map(|v| {
            let s = v.as_str().ok_or(DiffIdError::NotAString)?;
            let d: Digest = s.parse().map_err(|source| DiffIdError::Invalid {
                given: s.to_string(),
                source,
            })?;
            Ok(d.to_string())
        })
        .collect()
}

/// Chained, deterministic v1 ids: each one hashes the layer's chain id and
/// its parent's id; the top one also the config digest, so two images that
/// share every layer but differ in config get distinct top layers.
fn v1_layers(diff_ids: &[String], config_digest: &Digest) -> Vec<V1Layer> {
    let mut out: Vec<V1Layer> = Vec::new();
    let mut chain: Option<String> = None;
    for (i, diff) in diff_ids.iter().enumerate() {
        let chain_id = match &chain {
            None => diff.clone(),
            Some(c) => Digest::of(format!("{c} {diff}").as_bytes()).to_string(),
        };
        let parent = out.last().map(|l| l.id.clone());
        let mut seed = format!(
            "layer_id={chain_id}\nparent={}\n",
            parent.as_deref().unwrap_or("")
        );
        if i + 1 == diff_ids.len() {
            seed.push_str(&format!("config={config_digest}\n"));
        }
        out.push(V1Layer {
            id: Digest::of(seed.as_bytes()).hex().to_string(),
            parent,
        });
        chain = Some(chain_id);
    }
    out
}

/// The v1 `json` of a layer: the top one carries the image config's fields
/// (without `rootfs` and `history`), the others only what identifies them.
fn v1_json(config: &Value, layer: &V1Layer, top: bool) -> Vec<u8> {
    let mut m = Map::new();
    if top {
        if let Some(obj) = config.as_object() {
            for (k, v) in obj {
                if k != "rootfs" && k != "history" {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    } else {
        if let Some(created) = config.get("created") {
            m.insert("created".into(), created.clone());
        }
        m.insert("container_config".into(), json!({"Cmd": null}));
        for k in ["os", "architecture"] {
            if let Some(v) = config.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
    }
    m.insert("id".into(), json!(layer.id));
    if let Some(p) = &layer.parent {
        m.insert("parent".into(), json!(p));
    }
    // serde_json's map keeps keys sorted: deterministic.
    to_json(&Value::Object(m))
}

/// One layer to decompress into the archive.
struct LayerJob<'a> {
    /// Its path in the archive (`<v1id>/layer.tar`).
    name: &'a str,
    layer: &'a crate::resolve::Descriptor,
    diff_id: &'a str,
    /// The image, for messages.
    image: &'a str,
}

/// Decompresses a cached layer into a scratch file beside the archive,
/// checking the uncompressed digest against the diff_id, then appends it.
fn write_layer(
    tar: &mut TarOut<'_>,
    job: &LayerJob<'_>,
    cache: &Cache,
    scratch_dir: &Path,
    limit: LayerLimit,
) -> Result<(), PullError> {
    let free = match limit {
        LayerLimit::None => None,
        LayerLimit::Default | LayerLimit::Size(_) => free_space(scratch_dir),
    };
    let budget = budget(limit, job.layer.size, free);
    // Removed on Ctrl-C like a partial archive; otherwise when `scratch` drops.
    let scratch = super::create_tracked(
        tempfile::Builder::new().prefix(".docker-pull-layer."),
        scratch_dir,
    )
    .map_err(|e| PullError::io("creating a temporary file in", scratch_dir, e))?;
    let scratch_path = scratch.path().to_path_buf();
    let result = fill_and_append(tar, job, &scratch, cache, budget, scratch_dir);
    super::untrack(&scratch_path);
    result
}

fn fill_and_append(
    tar: &mut TarOut<'_>,
    job: &LayerJob<'_>,
    scratch: &tempfile::NamedTempFile,
    cache: &Cache,
    budget: Budget,
    scratch_dir: &Path,
) -> Result<(), PullError> {
    let layer = job.layer;
    let scratch_path = scratch.path().to_path_buf();
    let src = &cache.blob_path(&layer.digest);
    let file = cache
        .open_blob(&layer.digest)
        .map_err(|e| PullError::io("reading", src, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let compression = match layer_compression(&layer.media_type) {
        Some(c) => c,
        None => sniff(&mut reader).map_err(|e| PullError::io("reading", src, e))?,
    };
    let out = scratch
        .as_file()
        .try_clone()
        .map_err(|e| PullError::io("writing", &scratch_path, e))?;
    let mut writer = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, out),
        hasher: Hasher::new(),
        len: 0,
        max: budget.max,
    };
    let copied = match compression {
        Compression::None => io::copy(&mut reader, &mut writer),
        Compression::Gzip => io::copy(&mut flate2::read::MultiGzDecoder::new(reader), &mut writer),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(reader)
            .and_then(|mut d| io::copy(&mut d, &mut writer)),
    };
    if let Err(e) = copied {
        let over_budget = e.get_ref().is_some_and(|inner| inner.is::<OverBudget>());
        // A write error is about the scratch file; a read error about the layer.
        return Err(match e.kind() {
            _ if over_budget => PullError::Layer {
                image: job.image.to_string(),
                digest: layer.digest.clone(),
                detail: budget.exceeded(scratch_dir),
            },
            io::ErrorKind::StorageFull | io::ErrorKind::WriteZero => {
                PullError::io("writing", &scratch_path, e)
            }
            _ => PullError::Layer {
                image: job.image.to_string(),
                digest: layer.digest.clone(),
                detail: format!("cannot decompress it: {e}"),
            },
        });
    }
    writer
        .inner
        .flush()
        .map_err(|e| PullError::io("writing", &scratch_path, e))?;
    let actual = writer.hasher.finish();
    if actual.to_string() != job.diff_id {
        return Err(PullError::Layer {
            image: job.image.to_string(),
            digest: layer.digest.clone(),
            detail: format!(
                "its uncompressed content hashes to {actual}, but the image config's diff_id is {}",
                job.diff_id
            ),
        });
    }
    let size = writer.len;
    let mut f =
        File::open(&scratch_path).map_err(|e| PullError::io("reading", &scratch_path, e))?;
    tar.reader(job.name, size, &mut f)?;
    Ok(())
}

/// The most one layer may decompress to, and which bound that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Budget {
    max: u64,
    bound: Bound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// [`LAYER_RATIO`] times the compressed size (or the floor).
    Ratio { compressed: u64 },
    /// [`LAYER_SIZE_DEFAULT`].
    DefaultSize,
    /// `--max-layer-size SIZE`.
    Flag,
    /// Half the free space of the output file system.
    FreeSpace { free: u64 },
    /// `--max-layer-size none`.
    Unbounded,
}

/// What a layer of `compressed` bytes may decompress to under `limit` with
/// `free` bytes available beside the archive. The layer is written there
/// twice (decompressed, then copied into the archive), so more than half the
/// free space cannot fit.
fn budget(limit: LayerLimit, compressed: u64, free: Option<u64>) -> Budget {
    let by_limit = match limit {
        LayerLimit::Default => {
            let ratio = compressed
                .saturating_mul(LAYER_RATIO)
                .max(LAYER_RATIO_FLOOR);
            if ratio <= LAYER_SIZE_DEFAULT {
                Budget {
                    max: ratio,
                    bound: Bound::Ratio { compressed },
                }
            } else {
                Budget {
                    max: LAYER_SIZE_DEFAULT,
                    bound: Bound::DefaultSize,
                }
            }
        }
        LayerLimit::Size(max) => Budget {
            max,
            bound: Bound::Flag,
        },
        LayerLimit::None => Budget {
            max: u64::MAX,
            bound: Bound::Unbounded,
        },
    };
    match free {
        Some(free) if free / 2 < by_limit.max => Budget {
            max: free / 2,
            bound: Bound::FreeSpace { free },
        },
        _ => by_limit,
    }
}

impl Budget {
    /// Why a layer that passed the budget was refused, and what to do.
    fn exceeded(&self, dir: &Path) -> String {
        let max = iec(self.max);
        match self.bound {
            Bound::Ratio { compressed } => format!(
                "it decompresses to more than {max}, over {LAYER_RATIO} times its compressed size of {}, as a decompression bomb does; if the layer is genuine, allow it with --max-layer-size SIZE (or --max-layer-size none)",
                iec(compressed)
            ),
            Bound::DefaultSize => format!(
                "it decompresses to more than {max}, the most one layer may have unless --max-layer-size SIZE (or none) allows more"
            ),
            Bound::Flag => format!(
                "it decompresses to more than {max}, the limit set with --max-layer-size; raise it (or use --max-layer-size none)"
            ),
            Bound::FreeSpace { free } => format!(
                "it decompresses to more than {max}, but {} has only {} free and a layer needs twice its size there (decompressed, then copied into the archive); free some space or write the archive elsewhere with -o",
                dir.display(),
                iec(free)
            ),
            Bound::Unbounded => format!("it decompresses to more than {max}"),
        }
    }
}

/// The error a [`HashingWriter`] returns past its budget.
#[derive(Debug)]
struct OverBudget;

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the layer decompresses to more than its limit")
    }
}

impl std::error::Error for OverBudget {}

/// Bytes the user may write to the file system holding `dir`, if it says.
#[cfg(unix)]
#[allow(clippy::useless_conversion)] // the field types differ between platforms
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into `st`, and `path` is NUL-terminated.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let (frsize, bsize, blocks, bavail) = (
        u64::from(st.f_frsize as u64),
        u64::from(st.f_bsize as u64),
        st.f_blocks as u64,
        st.f_bavail as u64,
    );
    let block = match frsize {
        0 => bsize,
        n => n,
    };
    // A file system that reports no size at all (some FUSE ones) says nothing.
    if block == 0 || blocks == 0 {
        return None;
    }
    Some(bavail.saturating_mul(block))
}

#[cfg(not(unix))]
fn free_space(_dir: &Path) -> Option<u64> {
    None
}

/// `64.0 MiB`: sizes in the powers of 1024 that `--max-layer-size` takes.
fn iec(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Tells the compression from the first bytes (for media types that do not
/// say, such as foreign layers).
fn sniff(reader: &mut BufReader<File>) -> io::Result<Compression> {
    use std::io::BufRead;
    let head = reader.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// Writes through, hashing and counting; refuses to go past `max` bytes.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    len: u64,
    max: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len.saturating_add(buf.len() as u64) > self.max {
            return Err(io::Error::other(OverBudget));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn to_json(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).expect("archive metadata serialises");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_ids_chain_and_are_deterministic() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let cd: Digest = d('c').parse().unwrap();
        let a = v1_layers(&[d('1'), d('2'), d('1')], &cd);
        let b = v1_layers(&[d('1'), d('2'), d('1')], &cd);
        let ids: Vec<&str> = a.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, b.iter().map(|l| l.id.as_str()).collect::<Vec<_>>());
        assert_eq!(ids.len(), 3);
        assert_ne!(
            ids[0], ids[2],
            "a repeated layer sits at another place in the chain"
        );
        assert_eq!(a[0].parent, None);
        assert_eq!(a[1].parent.as_deref(), Some(ids[0]));
        assert_eq!(a[2].parent.as_deref(), Some(ids[1]));
        let other: Digest = d('e').parse().unwrap();
        let c = v1_layers(&[d('1'), d('2'), d('1')], &other);
        assert_eq!(c[1].id, a[1].id);
        assert_ne!(c[2].id, a[2].id, "the top id depends on the config");
        assert!(ids.iter().all(|i| i.len() == 64));
    }

    #[test]
    fn top_json_carries_the_config_without_rootfs_and_history() {
        let config = json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{}]
        });
        let l = V1Layer {
            id: "a".repeat(64),
            parent: Some("b".repeat(64)),
        };
        let top: Value = serde_json::from_slice(&v1_json(&config, &l, true)).unwrap();
        assert_eq!(top["config"]["Cmd"][0], "sh");
        assert_eq!(top["id"], "a".repeat(64));
        assert_eq!(top["parent"], "b".repeat(64));
        assert!(top.get("rootfs").is_none() && top.get("history").is_none());
        let lower: Value = serde_json::from_slice(&v1_json(&config, &l, false)).unwrap();
        assert!(lower.get("config").is_none());
        assert_eq!(lower["os"], "linux");
    }

    #[test]
    fn layer_budgets() {
        const MIB: u64 = 1 << 20;
        let b = |limit, compressed, free| budget(limit, compressed, free);
        // Small layers may reach the floor, larger ones 100 times their size.
        assert_eq!(b(LayerLimit::Default, 34_000, None).max, 64 * MIB);
        assert_eq!(
            b(LayerLimit::Default, 34_000, None).bound,
            Bound::Ratio { compressed: 34_000 }
        );
        assert_eq!(b(LayerLimit::Default, 10 * MIB, None).max, 1000 * MIB);
        // ... but never more than 64 GiB by default, whatever the claim.
        let huge = b(LayerLimit::Default, u64::MAX, None);
        assert_eq!((huge.max, huge.bound), (64 << 30, Bound::DefaultSize));
        // A size replaces the rule; none lifts it.
        let flag = b(LayerLimit::Size(5 << 30), 34_000, None);
        assert_eq!((flag.max, flag.bound), (5 << 30, Bound::Flag));
        assert_eq!(b(LayerLimit::None, 34_000, None).max, u64::MAX);
        // Half the free space, when that is less: the layer is written twice.
        let tight = b(LayerLimit::Size(5 << 30), 34_000, Some(2 << 30));
        assert_eq!(
            (tight.max, tight.bound),
            (1 << 30, Bound::FreeSpace { free: 2 << 30 })
        );
        assert_eq!(b(LayerLimit::Default, 34_000, Some(1 << 40)).max, 64 * MIB);
        // The messages say which bound and which flag.
        let dir = Path::new("/out");
        assert!(
            b(LayerLimit::Default, 34_000, None)
                .exceeded(dir)
                .contains("--max-layer-size SIZE")
        );
        assert!(
            flag.exceeded(dir)
                .contains("5.0 GiB, the limit set with --max-layer-size")
        );
        let msg = tight.exceeded(dir);
        assert!(msg.contains("/out has only 2.0 GiB free"), "{msg}");
    }

    #[test]
    fn the_writer_stops_at_its_budget() {
        let mut w = HashingWriter {
            inner: Vec::new(),
            hasher: Hasher::new(),
            len: 0,
            max: 10,
        };
        w.write_all(b"0123456789").unwrap();
        let e = w.write_all(b"x").unwrap_err();
        assert!(e.get_ref().is_some_and(|i| i.is::<OverBudget>()), "{e}");
        assert_eq!(w.inner.len(), 10, "nothing past the budget is written");
    }

    #[test]
    fn sizes_in_powers_of_1024() {
        assert_eq!(iec(1000), "1000 B");
        assert_eq!(iec(34_000), "33.2 KiB");
        assert_eq!(iec(64 << 20), "64.0 MiB");
        assert_eq!(iec(u64::MAX), "16.0 EiB");
    }

    #[cfg(unix)]
    #[test]
    fn free_space_is_known_here() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_space(dir.path()).is_some_and(|f| f > 0));
        assert_eq!(free_space(&dir.path().join("missing")), None);
    }

    #[test]
    fn diff_ids_are_validated() {
        assert!(diff_ids(&json!({})).is_err());
        assert!(diff_ids(&json!({"rootfs": {"diff_ids": ["sha256:zz"]}})).is_err());
        let ok = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            diff_ids(&json!({"rootfs": {"diff_ids": [ok]}}))
                .unwrap()
                .len(),
            1
        );
    }
}
