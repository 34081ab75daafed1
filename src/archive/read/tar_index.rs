//! The index of a tar: every entry's normalised name and kind, with the
//! offset and size of each file's data, read once from the headers. Names
//! are checked as they are indexed (relative, no `..`, UTF-8, bounded), a
//! name may appear only once (but directories), and links are resolved only
//! inside the archive, never to anything on the machine.
//!
//! The index never reads a file's data itself; the caller may look at each
//! entry as it passes (to keep small documents of a compressed archive).

use std::collections::HashMap;
use std::io::{self, Read};

use crate::resolve::MAX_BLOB_SIZE;

/// No source holds more entries than this (real archives hold hundreds).
pub const MAX_ENTRIES: usize = 100_000;
/// No entry name is longer than this.
pub const MAX_NAME: usize = 4096;
/// Links followed from one name, at most.
const MAX_LINK_DEPTH: usize = 8;
const BLOCK: u64 = 512;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: its data starts at `offset` (in the uncompressed
    /// stream) and is `size` bytes long.
    File {
        offset: u64,
        size: u64,
    },
    /// A symbolic link (target relative to the link's directory) or a hard
    /// link (target relative to the archive's root), normalised.
    Link {
        target: String,
    },
    Directory,
}

/// Why the headers of a tar cannot be indexed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("not a tar archive: {0}")]
    NotTar(io::Error),
    #[error("the archive is truncated: {0}")]
    Truncated(String),
    #[error("entry {name:?}: {reason}")]
    Entry { name: String, reason: String },
    #[error("more than {MAX_ENTRIES} entries")]
    TooMany,
}

/// Why a name does not lead to a file of the archive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Lookup {
    #[error("it is missing")]
    Missing,
    #[error("it is a directory, not a file")]
    Directory,
    #[error("it is a link that leads outside the archive")]
    Escapes,
    #[error("it is a link in a chain of more than {MAX_LINK_DEPTH} links")]
    TooManyLinks,
    #[error("it is a symbolic link, which a layout directory must not hold")]
    SymbolicLink,
    #[error("it is not a regular file")]
    Special,
    #[error("its name is not allowed: {0}")]
    BadName(&'static str),
}

/// A file found by [`TarIndex::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its own name, once every link is followed.
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Default)]
pub struct TarIndex {
    entries: HashMap<String, Kind>,
}

/// `raw` as a name relative to the archive's root: `./a//b` is `a/b`; an
/// absolute name, one with `..`, or a NUL is refused. The root itself is `""`.
pub fn normalise(raw: &str) -> Result<String, &'static str> {
    if raw.starts_with('/') {
        return Err("an absolute name");
    }
    if raw.contains('\0') {
        return Err("a NUL in the name");
    }
    if raw.len() > MAX_NAME {
        return Err("a name longer than 4096 bytes");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("a name with `..`"),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Where a link leads: `target` relative to `dir` (symbolic links) or to
/// the root (hard links), `..` allowed as long as it stays inside.
fn join_inside(dir: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl TarIndex {
    /// Indexes `entries`, calling `look` with each regular file's name, size
    /// and data as it passes (it may read some or none of it). `len` is the
    /// archive's length when known (a file): data past it means truncation.
    pub fn build<R: Read>(
        entries: tar::Entries<'_, R>,
        len: Option<u64>,
        look: &mut dyn FnMut(&str, u64, &mut dyn Read) -> io::Result<()>,
    ) -> Result<(TarIndex, u64), IndexError> {
        let mut index = TarIndex::default();
        let mut data_end = 0u64;
        for entry in entries {
            let mut entry = entry.map_err(read_error)?;
            if index.entries.len() >= MAX_ENTRIES {
                return Err(IndexError::TooMany);
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let bad = |reason: &str| IndexError::Entry {
                name: crate::text::escape_untrusted(&raw),
                reason: reason.to_string(),
            };
            let name = normalise(&raw).map_err(bad)?;
            let size = entry.size();
            let offset = entry.raw_file_position();
            data_end = data_end.max(offset + size.div_ceil(BLOCK) * BLOCK);
            let kind = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if size > MAX_BLOB_SIZE {
                        return Err(bad("it claims more bytes than any blob has"));
                    }
                    if let Some(len) = len
                        && offset.saturating_add(size) > len
                    {
                        return Err(IndexError::Truncated(format!(
                            "{} ends at byte {}, past the end of the file ({len} bytes)",
                            crate::text::escape_untrusted(&raw),
                            offset.saturating_add(size)
                        )));
                    }
                    look(&name, size, &mut entry).map_err(read_error)?;
                    Kind::File { offset, size }
                }
                tar::EntryType::Directory => Kind::Directory,
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    let dir = match entry.header().entry_type() {
                        tar::EntryType::Symlink => name.rsplit_once('/').map_or("", |(d, _)| d),
                        _ => "",
                    };
                    match join_inside(dir, &target) {
                        Some(target) => Kind::Link { target },
                        None => Kind::Link {
                            // Refused when followed, so that only a name in use fails.
                            target: String::from("\0outside"),
                        },
                    }
                }
                tar::EntryType::XGlobalHeader => continue,
                _ => return Err(bad("an entry type image archives do not hold")),
            };
            if name.is_empty() {
                continue;
            }
            index
                .insert(name, kind)
                .map_err(|_| bad("it appears twice"))?;
        }
        Ok((index, data_end))
    }

    fn insert(&mut self, name: String, kind: Kind) -> Result<(), ()> {
        match self.entries.get(&name) {
            Some(Kind::Directory) if kind == Kind::Directory => Ok(()),
            Some(_) => Err(()),
            None => {
                self.entries.insert(name, kind);
                Ok(())
            }
        }
    }

    /// Whether `name` is in the archive at all (a file, link or directory).
    pub fn contains(&self, name: &str) -> bool {
        normalise(name).is_ok_and(|n| self.entries.contains_key(&n))
    }

    /// The file `name` leads to, following links inside the archive.
    pub fn resolve(&self, name: &str) -> Result<Found, Lookup> {
        let mut name = normalise(name).map_err(Lookup::BadName)?;
        for _ in 0..=MAX_LINK_DEPTH {
            match self.entries.get(&name) {
                None => return Err(Lookup::Missing),
                Some(Kind::Directory) => return Err(Lookup::Directory),
                Some(Kind::File { offset, size }) => {
                    return Ok(Found {
                        name,
                        offset: *offset,
                        size: *size,
                    });
                }
                Some(Kind::Link { target }) if target.starts_with('\0') => {
                    return Err(Lookup::Escapes);
                }
                Some(Kind::Link { target }) => name = target.clone(),
            }
        }
        Err(Lookup::TooManyLinks)
    }
}

/// The tar crate reports a short header or short data as an I/O error.
fn read_error(e: io::Error) -> IndexError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => IndexError::Truncated(e.to_string()),
        _ if e.to_string().contains("failed to read entire block") => {
            IndexError::Truncated(e.to_string())
        }
        _ => IndexError::NotTar(e),
    }
}

/// Whether a tar read up to `consumed` bytes, whose last entry's data ends
/// at `data_end`, ended with the end-of-archive zero block rather than the
/// end of the file.
pub fn has_end_marker(consumed: u64, data_end: u64) -> bool {
    consumed >= data_end + BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_or_refused() {
        assert_eq!(normalise("./a//b/").unwrap(), "a/b");
        assert_eq!(normalise("./").unwrap(), "");
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "a\0b"] {
            assert!(normalise(bad).is_err(), "{bad:?}");
        }
        assert!(normalise(&"a".repeat(MAX_NAME + 1)).is_err());
    }

    #[test]
    fn links_stay_inside() {
        assert_eq!(join_inside("a/b", "../c").unwrap(), "a/c");
        assert_eq!(join_inside("a", "../c.tar").unwrap(), "c.tar");
        assert_eq!(join_inside("", "../x"), None);
        assert_eq!(join_inside("a", "/etc/passwd"), None);
        assert_eq!(join_inside("a", "../../x"), None);
    }
}
