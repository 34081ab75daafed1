//! File operations that are safe on a shared machine: opens that never follow a
//! symbolic link at the last component of a path, files created for their owner
//! only, writes that replace a file through a randomly named temporary file
//! created exclusively beside it, and inode comparisons for lock-then-verify.
//!
//! The cache is built on these, and the few other places that write where a
//! neighbour might plant a link (the `oci-dir` layout, the log file) use them
//! too. This module knows nothing of blobs, digests or formats; it must never
//! create a file under a predictable temporary name nor open a path in a way
//! that follows a link planted there.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Files the cache creates: owner only.
pub const PRIVATE_FILE: u32 = 0o600;

/// Directories the cache creates: owner only.
pub const PRIVATE_DIR: u32 = 0o700;

/// The user this process acts as.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Makes sure `path` is a directory of this user that nobody else can
/// write into: created (owner only, parents too) if missing; an existing
/// one must belong to this user and is tightened to owner only. A symbolic
/// link is refused, unless `own_link` and both the link and the directory
/// it names belong to this user (a cache directory the user moved
/// elsewhere and linked back).
pub fn private_dir(path: &Path, own_link: bool) -> io::Result<()> {
    if let Err(e) = DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
        && fs::symlink_metadata(path).is_err()
    {
        return Err(e);
    }
    let mut meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        if !own_link {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link, which a cache directory never is",
                    path.display()
                ),
            ));
        }
        owned(path, &meta)?;
        meta = fs::metadata(path)?;
    }
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", path.display()),
        ));
    }
    owned(path, &meta)?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0
        && let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode & PRIVATE_DIR))
        && mode & 0o022 != 0
    {
        // Readable by others is a pity; writable by others is refused.
        return Err(io::Error::new(
            e.kind(),
            format!(
                "{} can be written by other users and cannot be made private: {e}",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn owned(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let me = euid();
    if meta.uid() == me {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} belongs to another user (uid {}, you are uid {me}), who could plant links in it",
            path.display(),
            meta.uid()
        ),
    ))
}

/// `O_NOFOLLOW`: fail on a link rather than follow it. `O_NONBLOCK`: a FIFO
/// planted at the path fails the regular-file check instead of blocking the
/// open (it has no effect on regular files).
const FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// Opens an existing regular file for reading.
pub fn open_nofollow_read(path: &Path) -> io::Result<File> {
    open(OpenOptions::new().read(true), path)
}

/// Opens an existing regular file for writing (no create, no truncate).
pub fn open_nofollow_write(path: &Path) -> io::Result<File> {
    open(OpenOptions::new().write(true), path)
}

/// Opens a regular file for reading and writing, creating it (owner only) if
/// missing; what it holds is kept.
pub fn open_nofollow_rw(path: &Path) -> io::Result<File> {
    open(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE),
        path,
    )
}

/// Opens a file for appending, creating it (owner only) if missing: a
/// regular file, or a character device such as `/dev/null` or a terminal
/// (which only root can create), never a FIFO or socket another user made.
pub fn open_nofollow_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(PRIVATE_FILE)
        .custom_flags(FLAGS)
        .open(path)
        .map_err(explain)?;
    let kind = file.metadata()?.file_type();
    if !(kind.is_file() || std::os::unix::fs::FileTypeExt::is_char_device(&kind)) {
        return Err(not_regular());
    }
    blocking(file)
}

fn open(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options.custom_flags(FLAGS).open(path).map_err(explain)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    blocking(file)
}

fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "it is not a regular file")
}

/// Clears `O_NONBLOCK` again: it was for the open only.
fn blocking(file: File) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns through `file`.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// `ELOOP` from an `O_NOFOLLOW` open means the path is a link: say so.
fn explain(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(
            e.kind(),
            "it is a symbolic link, which is never followed here; remove it if you did not make it",
        );
    }
    e
}

/// The whole content of a regular file, read without following a link;
/// `None` when there is no file.
pub fn read_nofollow(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match open_nofollow_read(path) {
        Ok(mut f) => {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut f, &mut bytes)?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A new, empty file with a random name in `dir` (`<prefix>XXXXXX<suffix>`),
/// created exclusively, so nothing planted there is opened. Owner only
/// unless `shared`, which gives the mode any new file of the user gets
/// (0666 less the umask). Removed on drop unless persisted.
pub fn temp_in(
    dir: &Path,
    prefix: &str,
    suffix: &str,
    shared: bool,
) -> io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(suffix);
    if shared {
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// How [`write_atomic`] writes.
#[derive(Debug, Clone, Copy)]
pub struct Atomic {
    /// The temporary name's suffix (what a sweep of leftovers looks for).
    pub suffix: &'static str,
    /// Readable as the user's other files, not only by the owner.
    pub shared: bool,
    /// Wait until the content is on disk before the rename.
    pub sync: bool,
}

/// Replaces `path` with `bytes` in one rename from a random temporary file
/// beside it; a link at `path` is replaced, never written through.
pub fn write_atomic(path: &Path, bytes: &[u8], how: Atomic) -> io::Result<()> {
    let dir = parent(path);
    let prefix = format!(".{}.", file_name(path));
    let mut temp = temp_in(dir, &prefix, how.suffix, how.shared)?;
    temp.write_all(bytes)?;
    if how.sync {
        temp.as_file().sync_all()?;
    }
    temp.persist(path).map(drop).map_err(|e| e.error)
}

/// The directory a path is in (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Takes an exclusive lock (`flock`) on the directory `path` itself,
/// waiting while another process holds it; released when the returned
/// handle is dropped. A link at `path` is refused: the lock must be on the
/// directory written into.
pub fn lock_dir(path: &Path) -> io::Result<File> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            // ELOOP, or ENOTDIR for a link to a directory with O_DIRECTORY.
            if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                io::Error::new(
                    e.kind(),
                    "it is a symbolic link; give the directory it points to",
                )
            } else {
                e
            }
        })?;
    dir.lock()?;
    Ok(dir)
}

/// Whether `path` names (without following a link) the file open as `file`.
/// A missing path names nothing.
pub fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(named) => Ok(open.dev() == named.dev() && open.ino() == named.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        let link = dir.path().join("link");
        symlink(&victim, &link).unwrap();
        for result in [
            open_nofollow_read(&link),
            open_nofollow_write(&link),
            open_nofollow_rw(&link),
            open_nofollow_append(&link),
        ] {
            let err = result.unwrap_err();
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
        assert!(read_nofollow(&link).is_err());
        assert_eq!(read_nofollow(&dir.path().join("none")).unwrap(), None);
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");

        // Replacing a link replaces the link, not what it points at.
        let how = Atomic {
            suffix: ".tmp",
            shared: false,
            sync: false,
        };
        write_atomic(&link, b"new", how).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_planted_fifo_does_not_block_and_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_nofollow_read(&fifo).is_err());
        assert!(open_nofollow_rw(&fifo).is_err());
        assert!(open_nofollow_append(&fifo).is_err());
        // A device only root can make is fine for appending (a log file).
        open_nofollow_append(Path::new("/dev/null")).unwrap();
    }

    #[test]
    fn private_dirs_are_created_tightened_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o777;
        let new = dir.path().join("a/b");
        private_dir(&new, false).unwrap();
        assert_eq!((mode(&new), mode(&dir.path().join("a"))), (0o700, 0o700));

        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o775)).unwrap();
        private_dir(&open, false).unwrap();
        assert_eq!(mode(&open), 0o700);

        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = private_dir(&file, false).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let err = private_dir(&link, false).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        private_dir(&link, true).unwrap();
    }

    #[test]
    fn directory_locks_exclude_each_other_and_refuse_links() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let other = File::open(dir.path()).unwrap();
        assert!(other.try_lock().is_err());
        drop(held);
        assert!(other.try_lock().is_ok());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = lock_dir(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn created_files_are_private_and_inodes_compare() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = open_nofollow_rw(&path).unwrap();
        let mode = f.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(same_file(&f, &path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(!same_file(&f, &path).unwrap());
        std::fs::write(&path, b"another").unwrap();
        assert!(!same_file(&f, &path).unwrap());
    }
}
