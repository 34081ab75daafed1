//! `verify SOURCE...`: an archive or layout checked without any network,
//! through the one archive reader ([`crate::archive::read`]). The reader
//! has checked every manifest and config against its descriptor (or its
//! file name) and the names; here every layer is read once, in the order
//! the source serves best, its size and sha256 checked against the manifest
//! and its uncompressed sha256 against the config's `diff_ids`. The result
//! is one [`Checked`] per image, with every problem named.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::Path;

use serde::Serialize;

use crate::archive::LAYER_SIZE_DEFAULT;
use crate::archive::read::{
    BlobError, BlobReader, Image, Layer, LayerError, Part, Problem, ReadError, Source,
    uncompressed_digest,
};
use crate::digest::Digest;
use crate::events::{Event, Observer};
use crate::report::human_bytes;
use crate::text::escape_untrusted;

/// What verifying one image of a source found.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// The source as given on the command line.
    pub source: String,
    /// The image's name (`docker.io/library/nginx:1.27`), if it has one.
    pub name: Option<String>,
    /// Every name the source gives it.
    pub names: Vec<String>,
    pub platform: String,
    /// The index's or manifest's digest; the config's (the image ID) for
    /// an image without a manifest.
    pub digest: Option<String>,
    pub layers: usize,
    /// Every blob of the image (manifests, configs, layers), each once.
    pub bytes: u64,
    /// What holds it and how: `tar, OCI layout with manifest.json`.
    pub kind: String,
    pub problems: Vec<String>,
    /// The source could not be read at all (its one problem says why).
    #[serde(skip)]
    pub unreadable: bool,
}

impl Checked {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// No layer is hashed past this many uncompressed bytes (64 GiB).
const LAYER_LIMIT: u64 = LAYER_SIZE_DEFAULT;

/// One layer file of the source and every image place that uses it.
struct Use<'a> {
    image: usize,
    layer: &'a Layer,
}

/// Verifies the source at `path`; progress goes to `observer`. An error
/// is a source that cannot be read at all.
pub fn verify(path: &Path, observer: &dyn Observer) -> Result<Vec<Checked>, ReadError> {
    let source = Source::open(path)?;
    let given = path.display().to_string();
    let mut problems: Vec<Vec<Problem>> =
        source.images.iter().map(|i| i.problems.clone()).collect();
    let mut sizes: Vec<HashMap<String, u64>> = vec![HashMap::new(); source.images.len()];
    let mut uses: HashMap<String, Vec<Use<'_>>> = HashMap::new();
    let mut order = Vec::new();
    for (i, image) in source.images.iter().enumerate() {
        for (_, layers) in image.parts() {
            for layer in layers {
                match source.locate(&layer.blob) {
                    Ok(found) => {
                        sizes[i].insert(found.name.clone(), found.size);
                        let list = uses.entry(found.name.clone()).or_default();
                        if list.is_empty() {
                            order.push(found.name);
                        }
                        list.push(Use { image: i, layer });
                    }
                    Err(e) => problems[i].push(Problem::lookup(Part::Layer, &layer.blob.entry, &e)),
                }
            }
        }
    }
    let total: u64 = order
        .iter()
        .filter_map(|n| sizes.iter().find_map(|s| s.get(n)))
        .sum();
    observer.event(Event::ImageStarted {
        image: escape_untrusted(&given),
        platform: format!("{}, {}", source.container, source.layout),
        bytes: total,
        blobs: order.len(),
    });
    let mut seen = HashSet::new();
    let visited = source.visit(&order, &mut |name, reader| {
        seen.insert(name.to_string());
        let list = uses.get(name).map(Vec::as_slice).unwrap_or_default();
        let size = sizes.iter().find_map(|s| s.get(name)).copied().unwrap_or(0);
        for (image, problem) in check_layer(name, size, reader, list, observer) {
            problems[image].push(problem);
        }
        Ok(())
    });
    observer.event(Event::ImageDone);
    let mut source_problems = source.problems.clone();
    if let Err(e) = visited {
        source_problems.push(Problem::Layout(escape_untrusted(&e.to_string())));
    }
    for name in order.iter().filter(|n| !seen.contains(*n)) {
        for u in &uses[name] {
            problems[u.image].push(Problem::Missing {
                part: Part::Layer,
                entry: escape_untrusted(&u.layer.blob.entry),
                detail: "the source ended before it".into(),
            });
        }
    }
    Ok(reports(&source, &given, problems, &sizes, &source_problems))
}

/// A progress id for a layer: its digest, else its diff_id, else one made
/// from its name.
fn id_of(name: &str, layer: Option<&Layer>) -> Digest {
    layer
        .and_then(|l| l.blob.digest.clone().or_else(|| l.diff_id.clone()))
        .unwrap_or_else(|| Digest::of(name.as_bytes()))
}

/// Reads one layer file and checks it for every place that uses it:
/// returns the problems, by image.
fn check_layer(
    name: &str,
    size: u64,
    reader: &mut dyn Read,
    uses: &[Use<'_>],
    observer: &dyn Observer,
) -> Vec<(usize, Problem)> {
    let first = uses.first().map(|u| u.layer);
    let id = id_of(name, first);
    observer.event(Event::Checking {
        digest: id.clone(),
        size,
    });
    let mut blob = BlobReader::new(
        Progress {
            inner: reader,
            observer,
            id: &id,
        },
        None,
        None,
    );
    let media_type = first.and_then(|l| l.media_type.as_deref());
    let content = uncompressed_digest(&mut blob, media_type, LAYER_LIMIT);
    if matches!(
        content,
        Err(LayerError::Decompress { .. } | LayerError::TooLarge { .. })
    ) {
        // A damaged blob fails to decompress: its digest says more.
        let _ = io::copy(&mut blob, &mut io::sink());
    }
    observer.event(Event::Finished { digest: id.clone() });
    let mut out = Vec::new();
    for u in uses {
        let entry = &u.layer.blob.entry;
        let expected = blob
            .digest()
            .and_then(|found| expectations(u.layer, found, blob.len()));
        let problem = match &content {
            Err(LayerError::Read(_)) => Some(layer_error(entry, content.as_ref().unwrap_err())),
            Err(e) => expected.or_else(|| Some(layer_error(entry, e))),
            Ok(_) if blob.digest().is_none() => Some(Problem::invalid(
                Part::Layer,
                entry,
                "it was not read whole",
            )),
            Ok(content) => expected.or_else(|| diff_id(u.layer, &content.digest)),
        };
        out.extend(problem.map(|p| (u.image, p)));
    }
    out
}

fn layer_error(entry: &str, e: &LayerError) -> Problem {
    match e {
        LayerError::Read(io) => match BlobError::from_io(io) {
            Some(b) => Problem::blob(Part::Layer, entry, b),
            None => Problem::invalid(Part::Layer, entry, io),
        },
        other => Problem::invalid(Part::Layer, entry, other),
    }
}

/// The size and digest the manifest (or the file name) promised.
fn expectations(layer: &Layer, found: &Digest, len: u64) -> Option<Problem> {
    let entry = &layer.blob.entry;
    if let Some(expected) = layer.blob.size
        && expected != len
    {
        return Some(Problem::blob(
            Part::Layer,
            entry,
            &BlobError::Size {
                expected,
                found: len,
            },
        ));
    }
    match &layer.blob.digest {
        Some(expected) if expected != found => Some(Problem::blob(
            Part::Layer,
            entry,
            &BlobError::Digest {
                expected: expected.clone(),
                found: found.clone(),
            },
        )),
        _ => None,
    }
}

fn diff_id(layer: &Layer, uncompressed: &Digest) -> Option<Problem> {
    match &layer.diff_id {
        Some(expected) if expected != uncompressed => Some(Problem::DiffId {
            entry: escape_untrusted(&layer.blob.entry),
            expected: expected.clone(),
            found: uncompressed.clone(),
        }),
        _ => None,
    }
}

/// Reports each read to the observer.
struct Progress<'a> {
    inner: &'a mut dyn Read,
    observer: &'a dyn Observer,
    id: &'a Digest,
}

impl Read for Progress<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.observer.event(Event::Progress {
                digest: self.id.clone(),
                bytes: n as u64,
            });
        }
        Ok(n)
    }
}

/// One [`Checked`] per image (or one for the source, when it holds none).
fn reports(
    source: &Source,
    given: &str,
    problems: Vec<Vec<Problem>>,
    layer_sizes: &[HashMap<String, u64>],
    source_problems: &[Problem],
) -> Vec<Checked> {
    let kind = format!("{}, {}", source.container, source.layout);
    let mut out: Vec<Checked> = source
        .images
        .iter()
        .zip(problems)
        .zip(layer_sizes)
        .map(|((image, problems), sizes)| Checked {
            source: given.to_string(),
            name: image.display_name(),
            names: image
                .names
                .iter()
                .map(|n| escape_untrusted(&n.given))
                .collect(),
            platform: image.platform(),
            digest: image.digest().map(ToString::to_string),
            layers: image.parts().iter().map(|(_, l)| l.len()).sum(),
            bytes: document_bytes(image) + sizes.values().sum::<u64>(),
            kind: kind.clone(),
            unreadable: false,
            problems: problems
                .iter()
                .chain(source_problems)
                .map(ToString::to_string)
                .collect(),
        })
        .collect();
    if out.is_empty() {
        let mut problems: Vec<String> = source_problems.iter().map(ToString::to_string).collect();
        problems.push("the source holds no images".into());
        out.push(Checked {
            source: given.to_string(),
            name: None,
            names: Vec::new(),
            platform: "unknown".into(),
            digest: None,
            layers: 0,
            bytes: 0,
            kind,
            problems,
            unreadable: false,
        });
    }
    out
}

/// The bytes of an image's manifests and configs, each once.
fn document_bytes(image: &Image) -> u64 {
    use crate::archive::read::Content;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut add = |entry: &str, size: Option<u64>| {
        if seen.insert(entry.to_string()) {
            total += size.unwrap_or(0);
        }
    };
    match &image.content {
        Content::Manifest(m) => add(&m.manifest.blob.entry, m.manifest.blob.size),
        Content::Index { index, children } => {
            add(&index.blob.entry, index.blob.size);
            for c in children.iter().filter(|c| c.image.is_some()) {
                add(&c.blob.entry, c.blob.size);
            }
        }
        Content::Loose { .. } | Content::Unreadable { .. } => {}
    }
    for (config, _) in image.parts() {
        add(&config.blob.entry, config.blob.size);
    }
    total
}

/// A report for a source that could not be read at all.
pub fn unreadable(given: &str, e: &ReadError) -> Checked {
    Checked {
        source: given.to_string(),
        name: None,
        names: Vec::new(),
        platform: "unknown".into(),
        digest: None,
        layers: 0,
        bytes: 0,
        kind: "unknown".into(),
        problems: vec![escape_untrusted(&e.to_string())],
        unreadable: true,
    }
}

/// Prints one image's line: `ok  NAME  PLATFORM  N layers  SIZE  DIGEST`
/// (`FAILED` when it has problems), or one JSON object.
pub fn print(out: &mut dyn Write, c: &Checked, json: bool) -> io::Result<()> {
    if json {
        let line = serde_json::to_string(c).map_err(io::Error::other)?;
        return writeln!(out, "{line}");
    }
    if c.unreadable {
        return writeln!(
            out,
            "FAILED  {}  (cannot be read)",
            escape_untrusted(&c.source)
        );
    }
    writeln!(
        out,
        "{}  {}  {}  {} layer{}  {}  {}",
        if c.ok() { "ok" } else { "FAILED" },
        c.name.as_deref().unwrap_or("(unnamed)"),
        c.platform,
        c.layers,
        if c.layers == 1 { "" } else { "s" },
        human_bytes(c.bytes),
        c.digest.as_deref().unwrap_or("-"),
    )
}
