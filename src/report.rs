//! The result of a run as the user sees it on stdout: per image the archive
//! and digest, then the cache line; or, with `--json`, one object per image.

use std::io::Write;

use serde::Serialize;

/// What one pulled image reports.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// The reference as the user wrote it.
    pub image: String,
    /// Fully qualified: `docker.io/library/nginx:latest`.
    pub resolved: String,
    /// What the reference resolved to (the index for multi-platform images),
    /// or the new index that lists only the platforms asked for.
    pub digest: String,
    /// With a list of platforms: the digest of the registry's index, which
    /// lists them all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_digest: Option<String>,
    /// The platform manifest written to the archive.
    pub manifest_digest: String,
    /// The config digest, which engines show as the image ID.
    pub image_id: String,
    pub platform: String,
    pub format: String,
    /// The archive (joined, for a split one), or the directory or stream.
    pub output: String,
    /// `--split`: the parts, in order, and the checksum file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksums: Option<String>,
    /// `--exclude-from`: the bottom layers the archive names but does not
    /// hold, and their size as the registry serves them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers_left_out: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_left_out: Option<u64>,
    pub layers: usize,
    pub bytes_downloaded: u64,
    pub bytes_from_cache: u64,
    pub cache_hits: usize,
    pub seconds: f64,
    /// The registry that served the image (`host[:port][/prefix]`): a mirror
    /// or the origin.
    pub source: String,
    /// Distinct layers, for the cache line.
    #[serde(skip)]
    pub distinct_layers: usize,
}

impl ImageReport {
    /// Notes the parts of a split archive.
    pub fn set_parts(&mut self, parts: Option<&crate::archive::Parts>) {
        if let Some(p) = parts {
            self.parts = p.parts.iter().map(|p| p.display().to_string()).collect();
            self.checksums = Some(p.checksums.display().to_string());
        }
    }
}

/// `Cache hits: 3/4 layers (75.0%), Data saved: 45.2 MB`
pub fn cache_line(reports: &[ImageReport]) -> String {
    let hits: usize = reports.iter().map(|r| r.cache_hits).sum();
    let total: usize = reports.iter().map(|r| r.distinct_layers).sum();
    let saved: u64 = reports.iter().map(|r| r.bytes_from_cache).sum();
    let pct = if total == 0 {
        0.0
    } else {
        hits as f64 * 100.0 / total as f64
    };
    format!(
        "Cache hits: {hits}/{total} layers ({pct:.1}%), Data saved: {:.1} MB",
        saved as f64 / 1e6
    )
}

/// Prints one image's result.
pub fn print_image(out: &mut dyn Write, r: &ImageReport, json: bool) -> std::io::Result<()> {
    if json {
        let line = serde_json::to_string(r).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")
    } else {
        writeln!(out, "Pulled {} ({})", r.resolved, r.platform)?;
        match (r.parts.first(), r.parts.last(), &r.checksums) {
            (Some(first), Some(last), Some(sums)) => writeln!(
                out,
                "  Archive: {} in {} part{}: {first}{}, checksums in {sums}",
                r.output,
                r.parts.len(),
                if r.parts.len() == 1 { "" } else { "s" },
                if r.parts.len() > 1 {
                    format!(" … {last}")
                } else {
                    String::new()
                },
            )?,
            _ => writeln!(out, "  Archive: {}", r.output)?,
        }
        match &r.registry_digest {
            Some(theirs) => writeln!(
                out,
                "  Digest: {} (a new index listing only {}; the registry's is {theirs})",
                r.digest, r.platform
            )?,
            None => writeln!(out, "  Digest: {}", r.digest)?,
        }
        if let (Some(n), Some(bytes)) = (r.layers_left_out, r.bytes_left_out) {
            writeln!(
                out,
                "  Left out: {n} of {} layers ({}), which the target has (--exclude-from)",
                r.layers,
                human_bytes(bytes)
            )?;
        }
        Ok(())
    }
}

/// `12.3 MB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(hits: usize, layers: usize, saved: u64) -> ImageReport {
        ImageReport {
            image: "nginx".into(),
            resolved: "docker.io/library/nginx:latest".into(),
            digest: "sha256:aa".into(),
            manifest_digest: "sha256:bb".into(),
            image_id: "sha256:cc".into(),
            platform: "linux/amd64".into(),
            format: "docker".into(),
            output: "library_nginx_latest_amd64.tar".into(),
            parts: Vec::new(),
            checksums: None,
            layers_left_out: None,
            bytes_left_out: None,
            registry_digest: None,
            layers,
            bytes_downloaded: 10,
            bytes_from_cache: saved,
            cache_hits: hits,
            seconds: 1.5,
            source: "registry-1.docker.io".into(),
            distinct_layers: layers,
        }
    }

    #[test]
    fn cache_line_format() {
        assert_eq!(
            cache_line(&[report(3, 4, 45_200_000)]),
            "Cache hits: 3/4 layers (75.0%), Data saved: 45.2 MB"
        );
        assert_eq!(
            cache_line(&[report(0, 0, 0)]),
            "Cache hits: 0/0 layers (0.0%), Data saved: 0.0 MB"
        );
        assert_eq!(
            cache_line(&[report(1, 2, 1_000_000), report(2, 2, 2_000_000)]),
            "Cache hits: 3/4 layers (75.0%), Data saved: 3.0 MB"
        );
    }

    #[test]
    fn json_has_the_contract_fields() {
        let mut out = Vec::new();
        print_image(&mut out, &report(1, 2, 3), true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for k in [
            "image",
            "resolved",
            "digest",
            "platform",
            "format",
            "output",
            "layers",
            "bytes_downloaded",
            "bytes_from_cache",
            "cache_hits",
            "seconds",
        ] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
        assert!(v.get("distinct_layers").is_none());
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(45_200_000), "45.2 MB");
        assert_eq!(human_bytes(1_500), "1.5 kB");
    }
}
