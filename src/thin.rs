//! Thin archives (`--exclude-from SOURCE`): what the target engine already
//! has, as layer chains, and how many bottom layers of an image that covers.
//!
//! `docker load` skips a layer only when the engine has the same chain: the
//! same diff_ids from the bottom up to that layer. So an image's layers may
//! be left out only as a bottom-up prefix shared with one of SOURCE's
//! images, never one in the middle; the archive's `manifest.json` still
//! names every layer. Every prefix of a chain the engine has is one it has.

use std::path::{Path, PathBuf};

use crate::archive::read;
use crate::digest::Digest;
use crate::reference::Reference;

/// Where the target's images come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExcludeSource {
    /// An archive (split or not, compressed or not) or a layout.
    Path(PathBuf),
    /// An image in a registry, for the platform being pulled.
    Image(Reference),
}

impl ExcludeSource {
    /// `given` is a path when something is there (a file, a directory, the
    /// parts of a split archive), else an image reference.
    pub fn classify(given: &str, default_registry: &str) -> Result<ExcludeSource, String> {
        let path = Path::new(given);
        if path.exists() || crate::archive::split::part_name(path, 0, 3).exists() {
            return Ok(ExcludeSource::Path(path.to_path_buf()));
        }
        Reference::parse(given, default_registry)
            .map(ExcludeSource::Image)
            .map_err(|e| {
                format!(
                    "{given:?} is neither a file nor a directory here, nor an image reference: {e}"
                )
            })
    }
}

/// The chains of diff_ids the target has (one per image of every source).
#[derive(Debug, Clone, Default)]
pub struct Chains(Vec<Vec<Digest>>);

impl Chains {
    pub fn add(&mut self, chain: Vec<Digest>) {
        if !chain.is_empty() && !self.0.contains(&chain) {
            self.0.push(chain);
        }
    }

    /// Takes in every chain of `other`.
    pub fn extend(&mut self, other: Chains) {
        for chain in other.0 {
            self.add(chain);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many bottom layers of an image with `diff_ids` the target has:
    /// the longest prefix some chain starts with.
    pub fn covered(&self, diff_ids: &[Digest]) -> usize {
        self.0
            .iter()
            .map(|chain| {
                chain
                    .iter()
                    .zip(diff_ids)
                    .take_while(|(a, b)| a == b)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

/// The `rootfs.diff_ids` of an image config; empty when it has none that
/// parse (then nothing of it is left out).
pub fn diff_ids(config: &[u8]) -> Vec<Digest> {
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: Rootfs,
    }
    #[derive(serde::Deserialize)]
    struct Rootfs {
        diff_ids: Vec<String>,
    }
    serde_json::from_slice::<Config>(config)
        .ok()
        .and_then(|c| {
            c.rootfs
                .diff_ids
                .iter()
                .map(|d| d.parse::<Digest>().ok())
                .collect::<Option<Vec<_>>>()
        })
        .unwrap_or_default()
}

/// The chains of every image (every platform) in the archive or layout at
/// `path`, read offline.
pub fn chains_of_archive(path: &Path, chains: &mut Chains) -> Result<(), String> {
    let source = read::Source::open(path).map_err(|e| e.to_string())?;
    let before = chains.0.len();
    for image in &source.images {
        for (config, _) in image.parts() {
            chains.add(config.diff_ids.clone());
        }
    }
    if chains.0.len() == before && source.images.iter().all(|i| i.parts().is_empty()) {
        return Err(format!("{}: no image with layers in it", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn only_a_bottom_up_prefix_is_covered() {
        let mut chains = Chains::default();
        chains.add(vec![d('a'), d('b'), d('c')]);
        chains.add(vec![d('a'), d('e')]);
        assert_eq!(chains.covered(&[d('a'), d('b'), d('7'), d('8')]), 2);
        assert_eq!(chains.covered(&[d('a'), d('e'), d('c')]), 2);
        assert_eq!(chains.covered(&[d('a'), d('b'), d('c')]), 3);
        // The same layers higher up are not the same chain.
        assert_eq!(chains.covered(&[d('7'), d('a'), d('b')]), 0);
        assert_eq!(chains.covered(&[]), 0);
        assert_eq!(Chains::default().covered(&[d('a')]), 0);
    }

    #[test]
    fn diff_ids_of_a_config() {
        let config = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            d('a'),
            d('b')
        );
        assert_eq!(diff_ids(config.as_bytes()), vec![d('a'), d('b')]);
        assert!(diff_ids(br#"{"rootfs":{"diff_ids":["nope"]}}"#).is_empty());
        assert!(diff_ids(b"[]").is_empty());
    }
}
