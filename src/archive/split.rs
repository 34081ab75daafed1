//! Split archives (`--split SIZE`): a finished archive cut into parts of at
//! most SIZE, `NAME.part-000`, `NAME.part-001`, …, plus `NAME.sha256`, the
//! sha256 of the whole and of each part in `sha256sum` format (so
//! `sha256sum -c --ignore-missing` checks the parts as they arrive, and
//! `sha256sum -c` the joined archive). `cat NAME.part-* > NAME` joins them.
//!
//! The archive is cut from its end: each part but the first is copied out
//! (a kernel copy) and the archive truncated behind it, so at most one part
//! more than the archive is ever on the disk; the first part is the
//! archive's own file. Parts get their names only when every one is
//! written; parts of an earlier, longer split of the same name are removed.
//!
//! The reading side finds the parts of a split archive from any of them or
//! from its `.sha256` file ([`find`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::error::PullError;

/// Fewer digits than this never name a part (`part-000`).
const MIN_WIDTH: usize = 3;
/// Parts are read and hashed in pieces of this size.
const PIECE: usize = 1 << 20;

/// Where a split archive landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// The parts, in order.
    pub parts: Vec<PathBuf>,
    /// The `.sha256` file.
    pub checksums: PathBuf,
}

/// `NAME.part-007`, with `width` digits.
pub fn part_name(target: &Path, index: usize, width: usize) -> PathBuf {
    suffixed(target, &format!(".part-{index:0width$}"))
}

/// `NAME.sha256`.
pub fn checksum_name(target: &Path) -> PathBuf {
    suffixed(target, ".sha256")
}

fn suffixed(target: &Path, suffix: &str) -> PathBuf {
    let mut name = target.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// How many digits name `count` parts.
fn width_for(count: usize) -> usize {
    count.saturating_sub(1).to_string().len().max(MIN_WIDTH)
}

/// The sha256 of the whole file and of each `size`-byte part of it, read
/// front to back once.
fn hash_parts(file: &File, len: u64, size: u64) -> io::Result<(Digest, Vec<Digest>)> {
    let mut whole = Hasher::new();
    let mut parts = Vec::new();
    let mut part = Hasher::new();
    let mut buf = vec![0u8; PIECE];
    let mut reader = io::BufReader::with_capacity(PIECE, file);
    reader.seek(SeekFrom::Start(0))?;
    let mut at = 0u64;
    while at < len {
        let room = size - part.len();
        let want = (buf.len() as u64).min(room).min(len - at) as usize;
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive shrank while it was split",
            ));
        }
        whole.update(&buf[..n]);
        part.update(&buf[..n]);
        at += n as u64;
        if part.len() == size || at == len {
            parts.push(std::mem::replace(&mut part, Hasher::new()).finish());
        }
    }
    Ok((whole.finish(), parts))
}

/// Cuts the finished archive in `temp` (written for `target`) into parts of
/// at most `size` bytes and gives them, and the checksum file, their names.
pub(super) fn split(
    temp: tempfile::NamedTempFile,
    target: &Path,
    size: u64,
    sync: bool,
) -> Result<Parts, PullError> {
    let temp_path = temp.path().to_path_buf();
    let write_err = |e| PullError::io("splitting", &temp_path, e);
    let len = temp.as_file().metadata().map_err(write_err)?.len();
    let count = usize::try_from(len.div_ceil(size).max(1))
        .map_err(io::Error::other)
        .map_err(write_err)?;
    let width = width_for(count);
    let (whole, digests) = hash_parts(temp.as_file(), len, size).map_err(write_err)?;
    let dir = crate::cache::fsx::parent(target).to_path_buf();
    let mut tail = Vec::with_capacity(count.saturating_sub(1));
    for k in (1..count).rev() {
        let start = k as u64 * size;
        let part = cut_part(
            temp.as_file(),
            &dir,
            target,
            start,
            len.min(start + size) - start,
        )
        .map_err(|e| PullError::io("writing a part of", target, e))?;
        if sync {
            part.as_file().sync_all().map_err(write_err)?;
        }
        temp.as_file().set_len(start).map_err(write_err)?;
        tail.push(part);
    }
    if sync {
        temp.as_file().sync_all().map_err(write_err)?;
    }
    let names: Vec<PathBuf> = (0..count).map(|i| part_name(target, i, width)).collect();
    let give = |file: tempfile::NamedTempFile, name: &Path| {
        let was = file.path().to_path_buf();
        let given = file
            .persist(name)
            .map(drop)
            .map_err(|e| PullError::io("renaming the finished part to", name, e.error));
        super::untrack(&was);
        given
    };
    give(temp, &names[0])?;
    for (file, name) in tail.into_iter().rev().zip(&names[1..]) {
        give(file, name)?;
    }
    remove_stale_parts(target, &names);
    let checksums = checksum_name(target);
    let text = checksum_text(target, &whole, &names, &digests);
    crate::cache::fsx::write_atomic(
        &checksums,
        text.as_bytes(),
        crate::cache::fsx::Atomic {
            suffix: ".partial",
            shared: true,
            sync,
        },
    )
    .map_err(|e| PullError::io("writing", &checksums, e))?;
    Ok(Parts {
        parts: names,
        checksums,
    })
}

/// Bytes `start..start + len` of `archive` copied into a new temporary part
/// beside `target` (tracked, so Ctrl-C removes it).
fn cut_part(
    archive: &File,
    dir: &Path,
    target: &Path,
    start: u64,
    len: u64,
) -> io::Result<tempfile::NamedTempFile> {
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let mut builder = tempfile::Builder::new();
    let prefix = format!(".{file_name}.part.");
    builder.prefix(&prefix).suffix(".partial");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let part = super::create_tracked(&builder, dir)?;
    let mut from = archive;
    from.seek(SeekFrom::Start(start))?;
    let mut to = part.as_file();
    let copied = io::copy(&mut from.take(len), &mut to)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive ended before the part did",
        ));
    }
    to.flush()?;
    Ok(part)
}

/// Removes `NAME.part-<digits>` files that are not among `kept` (left by an
/// earlier split into more parts), so `cat NAME.part-*` joins only these.
fn remove_stale_parts(target: &Path, kept: &[PathBuf]) {
    let Some(prefix) = target
        .file_name()
        .map(|n| format!("{}.part-", n.to_string_lossy()))
    else {
        return;
    };
    let dir = crate::cache::fsx::parent(target);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_part = name
            .strip_prefix(&prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let path = dir.join(&name);
        if is_part && !kept.iter().any(|k| k.file_name() == path.file_name()) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// `sha256sum` lines for the whole archive and each part, by file name
/// (a name with a backslash or line feed escaped as `sha256sum` does).
fn checksum_text(target: &Path, whole: &Digest, parts: &[PathBuf], digests: &[Digest]) -> String {
    let line = |digest: &Digest, path: &Path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains(['\\', '\n']) {
            let escaped = name.replace('\\', "\\\\").replace('\n', "\\n");
            format!("\\{}  {escaped}\n", digest.hex())
        } else {
            format!("{}  {name}\n", digest.hex())
        }
    };
    let mut text = line(whole, target);
    for (digest, path) in digests.iter().zip(parts) {
        text.push_str(&line(digest, path));
    }
    text
}

/// The parts of the split archive `path` names (a part, or the `.sha256`
/// file): `None` when it names none. The parts must be numbered from 0
/// without a gap, all with the same number of digits, and, when the
/// `.sha256` file is there, be the parts it lists.
pub fn find(path: &Path) -> io::Result<Option<Vec<PathBuf>>> {
    let text = path.to_string_lossy();
    let base = if let Some(b) = text.strip_suffix(".sha256") {
        b.to_string()
    } else {
        match text.rsplit_once(".part-") {
            Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => b.to_string(),
            _ => return Ok(None),
        }
    };
    let base = PathBuf::from(base);
    let listed = listed_parts(&checksum_name(&base))?;
    let Some(width) = part_widths(&base)? else {
        return match listed {
            Some(_) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no part of {} is there", base.display()),
            )),
            None => Ok(None),
        };
    };
    let mut parts = Vec::new();
    while parts.len() < 1_000_000 {
        let part = part_name(&base, parts.len(), width);
        match std::fs::metadata(&part) {
            Ok(m) if m.is_file() => parts.push(part),
            _ => break,
        }
    }
    if let Some(listed) = listed {
        for name in &listed {
            if !parts
                .iter()
                .any(|p| p.file_name().is_some_and(|f| f.to_string_lossy() == *name))
            {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{name} is missing ({} lists {} parts)",
                        checksum_name(&base).display(),
                        listed.len()
                    ),
                ));
            }
        }
        parts.truncate(listed.len());
    }
    Ok(Some(parts))
}

/// The number of digits the parts of `base` have (the fewest with a first
/// part there), if there is a first part at all.
fn part_widths(base: &Path) -> io::Result<Option<usize>> {
    for width in MIN_WIDTH..=7 {
        if std::fs::metadata(part_name(base, 0, width)).is_ok_and(|m| m.is_file()) {
            return Ok(Some(width));
        }
    }
    Ok(None)
}

/// The part names a `.sha256` file lists (every line but the first, which
/// is the whole archive), if the file is there.
fn listed_parts(checksums: &Path) -> io::Result<Option<Vec<String>>> {
    let text = match std::fs::read(checksums) {
        Ok(bytes) if bytes.len() <= 64 << 20 => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} is too large",
                checksums.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(
        text.lines()
            .skip(1)
            .filter_map(|l| l.split_once("  ").map(|(_, name)| name.to_string()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_of(dir: &Path, len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut temp = tempfile::Builder::new().tempfile_in(dir).unwrap();
        temp.write_all(&data).unwrap();
        (temp, data)
    }

    #[test]
    fn parts_join_to_the_archive_and_match_their_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.tar");
        // A stale part of a longer split is removed.
        std::fs::write(dir.path().join("x.tar.part-009"), b"old").unwrap();
        let (temp, data) = archive_of(dir.path(), 10_000);
        let parts = split(temp, &target, 3000, false).unwrap();
        assert_eq!(parts.parts.len(), 4);
        assert_eq!(parts.parts[3], dir.path().join("x.tar.part-003"));
        assert!(!dir.path().join("x.tar.part-009").exists());
        let mut joined = Vec::new();
        for (i, p) in parts.parts.iter().enumerate() {
            let bytes = std::fs::read(p).unwrap();
            assert_eq!(bytes.len(), if i == 3 { 1000 } else { 3000 });
            joined.extend(bytes);
        }
        assert_eq!(joined, data);
        let sums = std::fs::read_to_string(&parts.checksums).unwrap();
        let lines: Vec<&str> = sums.lines().collect();
        assert_eq!(lines[0], format!("{}  x.tar", Digest::of(&data).hex()));
        assert_eq!(
            lines[2],
            format!("{}  x.tar.part-001", Digest::of(&data[3000..6000]).hex())
        );
        assert_eq!(lines.len(), 5);
        // Found again from any part or the checksum file.
        for from in [&parts.parts[2], &parts.checksums] {
            assert_eq!(find(from).unwrap(), Some(parts.parts.clone()));
        }
        std::fs::remove_file(&parts.parts[1]).unwrap();
        let e = find(&parts.parts[0]).unwrap_err();
        assert!(e.to_string().contains("x.tar.part-001 is missing"), "{e}");
        assert_eq!(find(&target).unwrap(), None);
    }

    #[test]
    fn one_part_when_it_fits_and_wider_names_for_many() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("y.tar");
        let (temp, _) = archive_of(dir.path(), 100);
        let parts = split(temp, &target, 100, false).unwrap();
        assert_eq!(parts.parts, vec![dir.path().join("y.tar.part-000")]);
        assert_eq!(width_for(1000), 3);
        assert_eq!(width_for(1001), 4);
        let (temp, _) = archive_of(dir.path(), 1001);
        let parts = split(temp, &dir.path().join("z.tar"), 1, false).unwrap();
        assert_eq!(parts.parts[1000], dir.path().join("z.tar.part-1000"));
        assert_eq!(find(&parts.parts[5]).unwrap().map(|p| p.len()), Some(1001));
    }
}
