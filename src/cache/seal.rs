//! Seals, `meta/<hex>.seal`: the record that a stored blob's bytes were
//! checked (downloaded and verified, or hashed from the store) and what the
//! file was then: device, inode, length and mtime, and the boot of the
//! machine. A blob whose file still matches its seal, in the same boot, is
//! used without being hashed again: the bytes are those that were checked,
//! since no write to the file leaves its mtime alone, and the page cache of
//! one boot does not lose written data. After a reboot, or once anything of
//! the file changed, the seal counts for nothing and the blob is hashed as
//! before (and sealed again if it is right).
//!
//! Owns the seal's format. Stored blobs are never written after their
//! commit, and a pull's use is recorded in `meta/<hex>.json`, not in the
//! blob's mtime, so the seal of a blob in use stays true. Must not read or
//! write blobs.

use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use super::{Cache, fsx, meta};
use crate::digest::Digest;

/// The longest seal read: anything longer is no seal.
const MAX_SEAL: u64 = 256;

/// What a seal states of a blob's file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seal {
    boot: String,
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Seal {
    fn of(boot: &str, m: &Metadata) -> Seal {
        Seal {
            boot: boot.to_string(),
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }

    fn to_line(&self) -> String {
        format!(
            "seal1 {} {} {} {} {} {}\n",
            self.boot, self.dev, self.ino, self.len, self.mtime, self.mtime_nsec
        )
    }

    fn parse(text: &str) -> Option<Seal> {
        let mut words = text.strip_suffix('\n')?.split(' ');
        if words.next()? != "seal1" {
            return None;
        }
        let boot = words.next()?.to_string();
        let mut unsigned = || words.next()?.parse::<u64>().ok();
        let (dev, ino, len) = (unsigned()?, unsigned()?, unsigned()?);
        let mut signed = || words.next()?.parse::<i64>().ok();
        let (mtime, mtime_nsec) = (signed()?, signed()?);
        if words.next().is_some() {
            return None;
        }
        Some(Seal {
            boot,
            dev,
            ino,
            len,
            mtime,
            mtime_nsec,
        })
    }
}

/// This boot of the machine (Linux's `boot_id`), read once; `None` where
/// there is none, and then no seal is written or trusted.
fn this_boot() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = text.trim();
        let valid =
            (16..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        valid.then(|| id.to_string())
    })
    .as_deref()
}

impl Cache {
    fn seal_path(&self, hex: &str) -> PathBuf {
        self.root.join("meta").join(format!("{hex}.seal"))
    }

    /// Whether the stored blob `digest`, whose open file has `file`'s
    /// metadata, can be used without hashing it: this process verified it,
    /// or its seal matches the file in this boot.
    pub fn trusts(&self, digest: &Digest, file: &Metadata) -> bool {
        self.is_fresh(digest) || this_boot().is_some_and(|boot| self.sealed(digest, boot, file))
    }

    fn sealed(&self, digest: &Digest, boot: &str, file: &Metadata) -> bool {
        let Ok(f) = fsx::open_nofollow_read(&self.seal_path(digest.hex())) else {
            return false;
        };
        let mut text = String::new();
        if f.take(MAX_SEAL).read_to_string(&mut text).is_err() {
            return false;
        }
        Seal::parse(&text).is_some_and(|s| s == Seal::of(boot, file))
    }

    /// Seals the stored blob `digest` just checked: `before` is its file's
    /// metadata from before the check, `now` from after it. Nothing is
    /// sealed if the file changed meanwhile, nor on a file system that keeps
    /// whole seconds only (an mtime without nanoseconds), where a write in
    /// the same second would leave the mtime as it was. Best effort.
    pub fn seal(&self, digest: &Digest, before: &Metadata, now: &Metadata) {
        let Some(boot) = this_boot() else {
            return;
        };
        let seal = Seal::of(boot, before);
        if !before.is_file() || before.mtime_nsec() == 0 || seal != Seal::of(boot, now) {
            return;
        }
        let path = self.seal_path(digest.hex());
        if let Err(e) = fsx::write_atomic(&path, seal.to_line().as_bytes(), meta::TEMP) {
            tracing::debug!(%digest, error = %e, "cannot seal a blob in the cache");
        }
    }

    /// Seals a blob just committed (its bytes verified on the way in).
    pub(super) fn seal_committed(&self, digest: &Digest) {
        if let Ok(m) = std::fs::symlink_metadata(self.blob_path(digest)) {
            self.seal(digest, &m, &m);
        }
    }

    /// Removes the seal of `hex` (its blob is gone or damaged).
    pub(super) fn unseal(&self, hex: &str) {
        let _ = std::fs::remove_file(self.seal_path(hex));
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

    use super::*;

    fn stored(cache: &Cache, data: &[u8]) -> (Digest, Metadata) {
        let d = Digest::of(data);
        fs::write(cache.blob_path(&d), data).unwrap();
        (d.clone(), fs::metadata(cache.blob_path(&d)).unwrap())
    }

    #[test]
    fn seals_read_back_and_refuse_anything_else() {
        let s = Seal {
            boot: "0f2b-aa".into(),
            dev: 2049,
            ino: 77,
            len: 5,
            mtime: 1_700_000_000,
            mtime_nsec: 123,
        };
        assert_eq!(Seal::parse(&s.to_line()), Some(s.clone()));
        let line = s.to_line();
        for bad in [
            "",
            "seal1\n",
            &line.replace("seal1", "seal2"),
            &line.replace('\n', " 9\n"),
            &line.replace(" 77 ", " -77 "),
            line.trim_end(),
        ] {
            assert_eq!(Seal::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_seal_holds_until_the_file_changes() {
        if this_boot().is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let (d, m) = stored(&cache, b"hello");
        assert!(!cache.trusts(&d, &m), "no seal yet");
        cache.seal(&d, &m, &m);
        assert!(cache.trusts(&d, &fs::metadata(cache.blob_path(&d)).unwrap()));
        // A write, even of the same length, changes the mtime.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(cache.blob_path(&d))
            .unwrap();
        f.write_all(b"HELLO").unwrap();
        let after = fs::metadata(cache.blob_path(&d)).unwrap();
        assert_eq!(after.len(), 5);
        assert!(!cache.trusts(&d, &after));
        // Nor is a file sealed that changed while it was checked, or one whose
        // mtime has whole seconds only.
        cache.unseal(d.hex());
        cache.seal(&d, &m, &after);
        assert!(!cache.seal_path(d.hex()).exists());
        let f = fs::File::options()
            .append(true)
            .open(cache.blob_path(&d))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
            .unwrap();
        let coarse = fs::metadata(cache.blob_path(&d)).unwrap();
        assert_eq!(coarse.mtime_nsec(), 0);
        cache.seal(&d, &coarse, &coarse);
        assert!(
            !cache.seal_path(d.hex()).exists(),
            "sealed on whole seconds"
        );
    }

    #[test]
    fn a_seal_of_another_boot_or_file_counts_for_nothing() {
        if this_boot().is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let (d, m) = stored(&cache, b"hello");
        let mut other = Seal::of("00000000-0000-0000-0000-000000000000", &m);
        fs::write(cache.seal_path(d.hex()), other.to_line()).unwrap();
        assert!(!cache.trusts(&d, &m), "sealed in another boot");
        other.boot = this_boot().unwrap().to_string();
        other.ino += 1;
        fs::write(cache.seal_path(d.hex()), other.to_line()).unwrap();
        assert!(!cache.trusts(&d, &m), "another file");
        // A link planted at the seal's name is not followed.
        let theirs = dir.path().join("theirs");
        fs::write(&theirs, Seal::of(this_boot().unwrap(), &m).to_line()).unwrap();
        fs::remove_file(cache.seal_path(d.hex())).unwrap();
        std::os::unix::fs::symlink(&theirs, cache.seal_path(d.hex())).unwrap();
        assert!(!cache.trusts(&d, &m), "read through a link");
        cache.seal(&d, &m, &m);
        assert!(
            fs::symlink_metadata(cache.seal_path(d.hex()))
                .unwrap()
                .is_file()
        );
        assert_eq!(
            fs::read(&theirs).unwrap(),
            Seal::of(this_boot().unwrap(), &m).to_line().as_bytes()
        );
        assert!(cache.trusts(&d, &m));
    }
}
