//! Platforms (`os/arch[/variant]`): parsing, normalising like containerd, and
//! choosing the right entry of a multi-platform index.
//!
//! Attestation manifests and `unknown/unknown` entries are never chosen.

use std::fmt;

use serde::Serialize;

/// A normalised platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm/v7")]
pub struct PlatformError(pub String);

const KNOWN_OS: [&str; 9] = [
    "linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos", "aix",
];

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = match os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            other => other.to_string(),
        };
        let (architecture, variant) = normalise_arch(
            &architecture.to_ascii_lowercase(),
            variant.map(|v| v.to_ascii_lowercase()).as_deref(),
        );
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// Parses `os/arch[/variant]`, or a lone architecture (`arm64`) meaning
    /// `linux/<arch>`.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !parts.iter().all(|p| ok(p)) {
            return Err(PlatformError(s.to_string()));
        }
        match parts.as_slice() {
            [one] if KNOWN_OS.contains(&one.to_ascii_lowercase().as_str()) => {
                Ok(Platform::new(one, &Platform::host().architecture, None))
            }
            [arch] => Ok(Platform::new("linux", arch, None)),
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(PlatformError(s.to_string())),
        }
    }

    /// `linux/<this machine's architecture>`.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new("linux", arch, None)
    }

    /// How well `self` (what the user asked for) is served by `candidate`:
    /// `None` if it cannot run it, else a rank where lower is better.
    pub fn match_rank(&self, candidate: &Platform) -> Option<u32> {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return None;
        }
        let want = self.effective_variant();
        let have = candidate.effective_variant();
        if want == have {
            return Some(0);
        }
        match (self.architecture.as_str(), want, have) {
            // An armv7 machine runs armv6 and armv5 code: prefer the closest.
            ("arm", Some(w), Some(h)) => {
                let (w, h) = (arm_level(w)?, arm_level(h)?);
                (h < w).then(|| w - h)
            }
            // Asking for no variant takes whatever variant is offered.
            (_, None, Some(_)) => Some(10),
            _ => None,
        }
    }

    /// The variant for comparison: `arm64` without a variant is `v8`.
    fn effective_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }
}

fn arm_level(v: &str) -> Option<u32> {
    v.strip_prefix('v')?.parse().ok()
}

fn normalise_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let v = variant.filter(|v| !v.is_empty());
    let (a, v): (&str, Option<String>) = match arch {
        "x86_64" | "x86-64" | "amd64" => ("amd64", v.filter(|v| *v != "v1").map(str::to_string)),
        "i386" | "i486" | "i586" | "i686" | "386" | "x86" => ("386", None),
        "aarch64" | "arm64" | "armv8" | "armv8l" => (
            "arm64",
            match v {
                Some("8" | "v8" | "v8.0") => Some("v8".into()),
                Some("9" | "v9" | "9.0" | "v9.0") => Some("v9".into()),
                other => other.map(str::to_string),
            },
        ),
        "armhf" | "armv7" | "armv7l" => ("arm", Some("v7".into())),
        "armel" | "armv6" | "armv6l" => ("arm", Some("v6".into())),
        "armv5" | "armv5l" | "armv5tel" => ("arm", Some("v5".into())),
        "arm" => (
            "arm",
            Some(match v {
                None | Some("7") => "v7".into(),
                Some(n @ ("5" | "6" | "8")) => format!("v{n}"),
                Some(other) => other.to_string(),
            }),
        ),
        other => (other, v.map(str::to_string)),
    };
    (a.to_string(), v)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One entry of an image index, as far as platform selection cares.
#[derive(Debug, Clone)]
pub struct IndexEntry<'a> {
    pub platform: Option<Platform>,
    /// `vnd.docker.reference.type` annotation, if any.
    pub reference_type: Option<&'a str>,
}

impl IndexEntry<'_> {
    /// Attestations, signatures and `unknown/unknown` entries are not images to run.
    pub fn is_runnable_image(&self) -> bool {
        if self.reference_type.is_some() {
            return false;
        }
        match &self.platform {
            Some(p) => p.os != "unknown" && p.architecture != "unknown",
            None => true,
        }
    }
}

/// Picks the entry that best serves `want`; on failure returns the platforms
/// the index offers (images only) for the error message.
pub fn choose(want: &Platform, entries: &[IndexEntry<'_>]) -> Result<usize, Vec<Platform>> {
    let best = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_runnable_image())
        .filter_map(|(i, e)| Some((want.match_rank(e.platform.as_ref()?)?, i)))
        .min();
    match best {
        Some((_, i)) => Ok(i),
        None => Err(entries
            .iter()
            .filter(|e| e.is_runnable_image())
            .filter_map(|e| e.platform.clone())
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn normalises_like_containerd() {
        for (input, want) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/8", "linux/arm64/v8"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/arm/5", "linux/arm/v5"),
            ("linux/i386", "linux/386"),
            ("Linux/ARM64", "linux/arm64"),
            ("arm64", "linux/arm64"),
            ("x86_64", "linux/amd64"),
            ("windows/amd64", "windows/amd64"),
            ("linux/s390x", "linux/s390x"),
            ("linux/ppc64le", "linux/ppc64le"),
        ] {
            assert_eq!(p(input).to_string(), want, "{input}");
        }
        for bad in [
            "",
            "/",
            "linux/",
            "linux//v7",
            "a/b/c/d",
            "linux/amd 64",
            "linux/a$b",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_is_linux() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(!h.architecture.is_empty());
    }

    fn entry(s: &str) -> IndexEntry<'static> {
        IndexEntry {
            platform: Some(p(s)),
            reference_type: None,
        }
    }

    #[test]
    fn arm64_matches_v8_and_no_variant() {
        assert_eq!(p("linux/arm64").match_rank(&p("linux/arm64/v8")), Some(0));
        assert_eq!(p("linux/aarch64").match_rank(&p("linux/arm64")), Some(0));
        assert_eq!(p("linux/arm64/v8").match_rank(&p("linux/arm64")), Some(0));
        assert_eq!(p("linux/arm64").match_rank(&p("linux/arm/v7")), None);
        assert_eq!(p("linux/amd64").match_rank(&p("linux/arm64")), None);
        assert_eq!(p("linux/amd64").match_rank(&p("windows/amd64")), None);
    }

    #[test]
    fn arm_prefers_exact_then_closest_older_variant() {
        let entries = [
            entry("linux/arm/v5"),
            entry("linux/arm/v6"),
            entry("linux/arm64"),
        ];
        assert_eq!(choose(&p("linux/arm/v7"), &entries), Ok(1));
        let entries = [entry("linux/arm/v6"), entry("linux/arm/v7")];
        assert_eq!(choose(&p("linux/arm"), &entries), Ok(1));
        assert_eq!(choose(&p("linux/armhf"), &entries), Ok(1));
        assert!(choose(&p("linux/arm/v5"), &entries).is_err());
    }

    #[test]
    fn never_chooses_attestations_or_unknown() {
        let entries = [
            IndexEntry {
                platform: Some(p("linux/amd64")),
                reference_type: Some("attestation-manifest"),
            },
            IndexEntry {
                platform: Some(Platform::new("unknown", "unknown", None)),
                reference_type: None,
            },
            entry("linux/arm64/v8"),
            entry("linux/amd64"),
        ];
        assert_eq!(choose(&p("linux/amd64"), &entries), Ok(3));
        assert_eq!(choose(&p("linux/aarch64"), &entries), Ok(2));
        let offered = choose(&p("linux/s390x"), &entries).unwrap_err();
        let offered: Vec<String> = offered.iter().map(|p| p.to_string()).collect();
        assert_eq!(offered, ["linux/arm64/v8", "linux/amd64"]);
    }

    #[test]
    fn prefers_plain_amd64_over_variants() {
        let entries = [entry("linux/amd64/v3"), entry("linux/amd64")];
        assert_eq!(choose(&p("linux/amd64"), &entries), Ok(1));
        let entries = [entry("linux/amd64/v3")];
        assert_eq!(choose(&p("linux/amd64"), &entries), Ok(0));
        assert!(choose(&p("linux/amd64/v2"), &entries).is_err());
    }
}
