//! Partial downloads below `ingest/`: `<hex>.data` holds the bytes so far,
//! and `<hex>.prefix`, while a chunked download runs, how many of them from
//! byte 0 are a verified prefix (chunks beyond it may have holes). A later
//! run cuts the data back to that prefix before it continues.
//!
//! Like the rest of the cache, nothing here follows a symbolic link: the
//! record is read with `O_NOFOLLOW` and replaced through a random temporary
//! name.

use std::io;
use std::path::{Path, PathBuf};

use super::fsx;

/// How prefix records are replaced: owner only, swept as `*.partial` when a
/// crash leaves the temporary file behind.
const RECORD: fsx::Atomic = fsx::Atomic {
    suffix: ".partial",
    shared: false,
    sync: false,
};

/// The record of how much of the partial download `data` is verified.
pub fn prefix_path(data: &Path) -> PathBuf {
    data.with_extension("prefix")
}

/// Records that the first `verified` bytes of `data` are a verified prefix.
pub fn record_prefix(data: &Path, verified: u64) -> io::Result<()> {
    fsx::write_atomic(&prefix_path(data), verified.to_string().as_bytes(), RECORD)
}

/// Forgets the record: the download ended one way or the other.
pub fn forget_prefix(data: &Path) {
    let _ = std::fs::remove_file(prefix_path(data));
}

/// Cuts a partial download back to its recorded verified prefix (after a
/// chunked download stopped with chunks beyond it), and forgets the record.
pub fn trim_to_recorded_prefix(data: &Path) -> io::Result<()> {
    let record = prefix_path(data);
    let Some(text) = fsx::read_nofollow(&record)? else {
        return Ok(());
    };
    let prefix: u64 = String::from_utf8_lossy(&text).trim().parse().unwrap_or(0);
    match fsx::open_nofollow_write(data) {
        Ok(file) if file.metadata()?.len() > prefix => file.set_len(prefix)?,
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_file(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_prefix_trims_the_data_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("ab.data");
        std::fs::write(&data, vec![7u8; 1000]).unwrap();
        record_prefix(&data, 300).unwrap();
        trim_to_recorded_prefix(&data).unwrap();
        assert_eq!(std::fs::metadata(&data).unwrap().len(), 300);
        assert!(!prefix_path(&data).exists());
        // No record: nothing to do.
        trim_to_recorded_prefix(&data).unwrap();
        assert_eq!(std::fs::metadata(&data).unwrap().len(), 300);
    }

    #[test]
    fn a_link_planted_at_the_record_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("ab.data");
        std::fs::write(&data, b"0123456789").unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"3").unwrap();
        std::os::unix::fs::symlink(&victim, prefix_path(&data)).unwrap();
        assert!(
            trim_to_recorded_prefix(&data).is_err(),
            "a link is no record"
        );
        assert_eq!(std::fs::metadata(&data).unwrap().len(), 10);
        record_prefix(&data, 5).unwrap();
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"3",
            "written through the link"
        );
        assert!(
            !std::fs::symlink_metadata(prefix_path(&data))
                .unwrap()
                .is_symlink()
        );
    }
}
