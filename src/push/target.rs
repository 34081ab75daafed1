//! Where `push` puts each image: `TARGET` is `REGISTRY[:PORT]/REPOSITORY[:TAG]`
//! for one image (the tag defaults to the image's own) or
//! `REGISTRY[:PORT][/PREFIX]` for several (each image goes to
//! `PREFIX/<its repository path>:<its tag>`). Pure.

use crate::reference::{
    DOCKER_HUB, DOCKER_HUB_API, Reference, is_valid_registry, normalise_registry, valid_tag,
};

/// `TARGET` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// The repository (one image) or prefix (several), when given.
    pub path: Option<String>,
    /// The tag, when given.
    pub tag: Option<String>,
}

/// Why a target cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("invalid push target {given:?}: {why}")]
    Invalid { given: String, why: &'static str },
    #[error(
        "{image} has no name to push it under: give the target as REGISTRY/REPOSITORY:TAG (one image at a time, with --image)"
    )]
    Unnamed { image: String },
    #[error(
        "push target {given:?} names a tag, but {count} images are pushed: give REGISTRY[/PREFIX] (each image keeps its own name and tag), or pick one with --image"
    )]
    TagForMany { given: String, count: usize },
}

/// One place an image goes: a repository of the target registry, and the
/// tags to give it there (none: by digest only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub repository: String,
    pub tags: Vec<String>,
}

impl Target {
    /// Parses `REGISTRY[:PORT][/PATH][:TAG]`; a registry is always named.
    pub fn parse(given: &str) -> Result<Target, TargetError> {
        let bad = |why| TargetError::Invalid {
            given: given.to_string(),
            why,
        };
        if given.contains('@') {
            return Err(bad("a digest cannot be pushed to: give a tag, or none"));
        }
        let (registry, rest) = match given.split_once('/') {
            Some((r, rest)) => (r, Some(rest)),
            None => (given, None),
        };
        let registry = registry.to_ascii_lowercase();
        if !is_valid_registry(&registry)
            || !(registry.contains('.') || registry.contains(':') || registry == "localhost")
        {
            return Err(bad(
                "it must start with a registry, such as registry.example.com or 127.0.0.1:5000",
            ));
        }
        let (path, tag) = match rest.map(|r| r.trim_end_matches('/')) {
            None | Some("") => (None, None),
            Some(r) => match r.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (Some(p.to_string()), Some(t.to_string())),
                _ => (Some(r.to_string()), None),
            },
        };
        if let Some(p) = &path
            && !crate::mirror::is_repository_path(p)
        {
            return Err(bad("the repository must be lower-case path components"));
        }
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(bad("not a valid tag"));
        }
        if path.is_none() && tag.is_some() {
            return Err(bad("a tag needs a repository"));
        }
        Ok(Target {
            registry: normalise_registry(&registry),
            path,
            tag,
        })
    }

    /// Where the API of the registry lives.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The destinations of an image with `names`, when `count` images are
    /// pushed in all (`shown` names it in errors).
    pub fn destinations(
        &self,
        names: &[Reference],
        count: usize,
        shown: &str,
    ) -> Result<Vec<Destination>, TargetError> {
        if count > 1 && self.tag.is_some() {
            return Err(TargetError::TagForMany {
                given: self.to_string(),
                count,
            });
        }
        let unnamed = || TargetError::Unnamed {
            image: shown.to_string(),
        };
        if count == 1
            && let Some(repository) = &self.path
        {
            let tags = match &self.tag {
                Some(t) => vec![t.clone()],
                None => tags_of(names.iter()),
            };
            return Ok(vec![Destination {
                repository: repository.clone(),
                tags,
            }]);
        }
        if names.is_empty() {
            return Err(unnamed());
        }
        let mut out: Vec<Destination> = Vec::new();
        for name in names {
            let repository = match &self.path {
                Some(prefix) => format!("{prefix}/{}", name.repository),
                None => name.repository.clone(),
            };
            let tags = tags_of(std::iter::once(name));
            match out.iter_mut().find(|d| d.repository == repository) {
                Some(d) => {
                    for t in tags {
                        if !d.tags.contains(&t) {
                            d.tags.push(t);
                        }
                    }
                }
                None => out.push(Destination { repository, tags }),
            }
        }
        Ok(out)
    }
}

/// The distinct tags of `names`, in order.
fn tags_of<'a>(names: impl Iterator<Item = &'a Reference>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for t in names.filter_map(|n| n.tag.clone()) {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.registry)?;
        if let Some(p) = &self.path {
            write!(f, "/{p}")?;
        }
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s, DOCKER_HUB).unwrap()
    }

    #[test]
    fn parses_targets() {
        let t = Target::parse("127.0.0.1:5000/team/app:v2").unwrap();
        assert_eq!(
            (t.registry.as_str(), t.path.as_deref(), t.tag.as_deref()),
            ("127.0.0.1:5000", Some("team/app"), Some("v2"))
        );
        let t = Target::parse("harbor.internal/mirror/").unwrap();
        assert_eq!((t.path.as_deref(), t.tag), (Some("mirror"), None));
        let t = Target::parse("localhost:5000").unwrap();
        assert_eq!((t.path, t.tag), (None, None));
        assert_eq!(
            Target::parse("index.docker.io/me/app").unwrap().api_host(),
            DOCKER_HUB_API
        );
        for bad in [
            "app:v1",
            "nginx",
            "r.io/App",
            "r.io/a:bad tag",
            "r.io/a@sha256:00",
            "r.io/:v1",
            "bad host!/x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_image_goes_to_the_repository_named() {
        let names = [r("nginx:1.27"), r("nginx:stable")];
        let t = Target::parse("r.io/web/nginx").unwrap();
        let d = t.destinations(&names, 1, "nginx").unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].repository, "web/nginx");
        assert_eq!(d[0].tags, ["1.27", "stable"]);
        let t = Target::parse("r.io/web/nginx:prod").unwrap();
        assert_eq!(
            t.destinations(&names, 1, "nginx").unwrap()[0].tags,
            ["prod"]
        );
        // Unnamed, no tag given: pushed by digest only.
        let d = Target::parse("r.io/x")
            .unwrap()
            .destinations(&[], 1, "img")
            .unwrap();
        assert!(d[0].tags.is_empty());
    }

    #[test]
    fn several_images_keep_their_names_under_the_prefix() {
        let t = Target::parse("harbor.internal/mirror").unwrap();
        let d = t
            .destinations(&[r("docker.io/library/nginx:1.27")], 2, "nginx")
            .unwrap();
        assert_eq!(d[0].repository, "mirror/library/nginx");
        assert_eq!(d[0].tags, ["1.27"]);
        let t = Target::parse("harbor.internal").unwrap();
        let d = t
            .destinations(&[r("ghcr.io/o/app:v1"), r("o/app:v2")], 2, "app")
            .unwrap();
        assert_eq!(d.len(), 1, "same repository path: one destination");
        assert_eq!(d[0].tags, ["v1", "v2"]);
        assert!(matches!(
            t.destinations(&[], 2, "x"),
            Err(TargetError::Unnamed { .. })
        ));
        let tagged = Target::parse("harbor.internal/p/app:v1").unwrap();
        assert!(matches!(
            tagged.destinations(&[r("a:1")], 2, "a"),
            Err(TargetError::TagForMany { .. })
        ));
        // One image, a registry alone: its own repository.
        let d = t.destinations(&[r("a/b:1")], 1, "a/b").unwrap();
        assert_eq!(
            (d[0].repository.as_str(), d[0].tags.clone()),
            ("a/b", vec!["1".to_string()])
        );
    }
}
