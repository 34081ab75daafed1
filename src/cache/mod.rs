//! The content-addressed blob store shared by every image and every process
//! of one user.
//!
//! On disk, below the cache directory:
//!
//! ```text
//! blobs/sha256/<hex>      verified blobs only, each entered by an atomic rename
//! meta/<hex>.json         what is known of a blob's use: hits, images, last use (meta.rs)
//! meta/<hex>.seal         the blob's file as it was when its bytes were checked (seal.rs)
//! ingest/<hex>.data       a partial download, kept across runs and resumed
//! ingest/<hex>.prefix     how much of a chunked partial download is written without gaps
//! ingest/<hex>.lock       held (flock) by the process downloading <hex> (lock.rs)
//! meta/.<hex>.json.*.tmp  a record being replaced (random name, renamed at once)
//! leases/<random>.lease   the blobs a running pull holds, one per line (held.rs)
//! leases/gate.lock        orders changes of leases against prunes (held.rs)
//! ```
//!
//! Where each part lives: directories and safe opens in fsx.rs, the download
//! lock in lock.rs, use records in meta.rs, seals in seal.rs, blobs held by
//! running pulls in held.rs, verified reads in verify.rs, listing,
//! statistics, prune and clear in prune.rs. This module owns the files below the cache directory
//! and nothing else: it never talks to the network and knows no archive
//! format. With `--no-cache` a temporary directory with the same layout is
//! used and removed at the end.
//!
//! # Safety rules
//!
//! The cache must stay sound with a hostile user on the same machine.
//!
//! - **Private.** Its directories are created owner only (0700) and its
//!   files 0600. An existing directory (the root, `blobs/`, `meta/`,
//!   `ingest/`) that belongs to another user is refused with an error naming
//!   it, since whoever owns it could plant links in it; one that an earlier
//!   version left readable by others is tightened. Only the root may be a
//!   link, and only the user's own to a directory of the user's own.
//! - **No links followed.** Every file the cache opens or creates is opened
//!   with `O_NOFOLLOW`, and only as a regular file ([`fsx`]). A link at a
//!   blob's name is no blob ([`Cache::contains`] is false, the blob is
//!   downloaded and the link replaced). Files are replaced by a rename from
//!   a random temporary name created exclusively beside them, never through
//!   a predictable name.
//! - **Verified reads.** Code outside the cache gets a blob only through
//!   [`Cache::open_blob`], [`Cache::open_verified`] (size and digest
//!   checked, unless [`Cache::trusts`] it: this process verified it, or its
//!   seal matches its file in this boot) and [`Cache::read_verified`]
//!   (bounded, for configs). Whoever reads a blob by `open_blob` checks it
//!   the same way. A blob found damaged is evicted (its seal with it) and
//!   the error says to run the pull again.
//! - **Blobs are never written after their commit.** Not even their mtime:
//!   a pull's use is the mtime of `meta/<hex>.json`, so a seal stays true.
//!
//! # Lock protocol
//!
//! A blob is written only by the holder of its download lock, so processes
//! sharing the cache never download it twice at once and no reader sees a
//! half-written blob. Locks are lock-then-verify: after `flock` succeeds, the
//! lock file's path must still name the locked inode, else the lock is
//! dropped and taken again. Only a lock's holder removes its file (a commit,
//! or a prune of what an interrupted run left), which is then safe. Blobs a
//! pull uses are held in its lease (held.rs) until [`Cache::release`]; a
//! prune decides under the exclusive gate lock and skips every leased blob,
//! so it never removes one in use.

pub mod fsx;
mod held;
pub mod ingest;
mod lock;
mod meta;
mod prune;
mod seal;
mod verify;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

pub use fsx::{open_nofollow_read, open_nofollow_rw, open_nofollow_write};
pub use lock::IngestLock;
pub use prune::{CacheEntry, CacheStats, PruneOutcome};
pub use verify::hash_file;

pub struct Cache {
    root: PathBuf,
    /// Keeps a `--no-cache` directory alive; removed on drop.
    _temporary: Option<tempfile::TempDir>,
    /// Blobs this process uses, held in its lease file until released, so
    /// `cache prune` in another process leaves them alone (held.rs).
    lease: std::sync::Mutex<held::Lease>,
    /// Blobs this process downloaded and verified itself: copying them into
    /// an archive needs no second hash.
    fresh: std::sync::Mutex<std::collections::HashSet<Digest>>,
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> io::Result<Cache> {
        let cache = Cache {
            root: root.to_path_buf(),
            _temporary: None,
            lease: Default::default(),
            fresh: Default::default(),
        };
        cache.create_layout()?;
        Ok(cache)
    }

    /// A private cache that disappears when dropped (`--no-cache`).
    pub fn temporary() -> io::Result<Cache> {
        let dir = tempfile::Builder::new().prefix("docker-pull-").tempdir()?;
        let cache = Cache {
            root: dir.path().to_path_buf(),
            _temporary: Some(dir),
            lease: Default::default(),
            fresh: Default::default(),
        };
        cache.create_layout()?;
        Ok(cache)
    }

    /// Creates the cache's directories, or checks existing ones: each is
    /// this user's own and private (see [`fsx::private_dir`]); only the root
    /// may be a link, and only one of the user's own.
    fn create_layout(&self) -> io::Result<()> {
        fsx::private_dir(&self.root, true)?;
        for sub in ["blobs", "blobs/sha256", "meta", "ingest", "leases"] {
            fsx::private_dir(&self.root.join(sub), false)?;
        }
        Ok(())
    }

    fn meta_path(&self, hex: &str) -> PathBuf {
        self.root.join("meta").join(format!("{hex}.json"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    pub fn ingest_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}.data", digest.hex()))
    }

    fn lock_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}.lock", digest.hex()))
    }

    /// Whether a verified blob of `size` bytes is stored (a regular file:
    /// a link there is no blob).
    pub fn contains(&self, digest: &Digest, size: u64) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// The partial download of `digest` for the holder of its lock: created
    /// (owner only) if missing, read and write, its content kept, never
    /// through a link.
    pub fn open_ingest(&self, digest: &Digest) -> io::Result<File> {
        fsx::open_nofollow_rw(&self.ingest_path(digest))
    }

    /// Takes the download lock for `digest`, waiting while another process
    /// holds it. Blocking: call from a blocking context.
    pub fn lock_ingest(&self, digest: &Digest) -> io::Result<IngestLock> {
        lock::lock(&self.lock_path(digest))
    }

    /// Moves a verified download into the store. The lock file goes too
    /// (safe while held, see lock.rs): whoever takes the lock from now on
    /// finds the blob stored.
    pub fn commit(&self, digest: &Digest, lock: &IngestLock) -> io::Result<PathBuf> {
        let target = self.blob_path(digest);
        fs::rename(self.ingest_path(digest), &target)?;
        let _ = lock.remove();
        self.seal_committed(digest);
        Ok(target)
    }

    /// Removes a stored blob found damaged.
    pub fn evict(&self, digest: &Digest) -> io::Result<()> {
        self.unseal(digest.hex());
        match fs::remove_file(self.blob_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_commit_and_evict() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let d = Digest::of(b"hello");
        assert!(!cache.contains(&d, 5));
        let lock = cache.lock_ingest(&d).unwrap();
        fs::write(cache.ingest_path(&d), b"hello").unwrap();
        let p = cache.commit(&d, &lock).unwrap();
        assert_eq!(p, dir.path().join("c/blobs/sha256").join(d.hex()));
        assert!(cache.contains(&d, 5));
        assert!(
            !cache.lock_path(&d).exists(),
            "the lock file goes with the commit"
        );
        drop(lock);
        assert!(!cache.contains(&d, 6), "size is part of the check");
        cache.evict(&d).unwrap();
        assert!(!cache.contains(&d, 5));
        cache.evict(&d).unwrap();
    }

    #[test]
    fn a_link_at_a_blob_is_no_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let d = Digest::of(b"hello");
        let theirs = dir.path().join("theirs");
        fs::write(&theirs, b"hello").unwrap();
        std::os::unix::fs::symlink(&theirs, cache.blob_path(&d)).unwrap();
        assert!(!cache.contains(&d, 5));
        // Nor is it touched or written through when recorded.
        let before = fs::metadata(&theirs).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.record_use(&d, "r/a:1", true);
        assert_eq!(fs::read(&theirs).unwrap(), b"hello");
        assert_eq!(fs::metadata(&theirs).unwrap().modified().unwrap(), before);
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn directories_are_private_and_files_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        let cache = Cache::open(&root).unwrap();
        for sub in ["", "blobs", "blobs/sha256", "meta", "ingest"] {
            assert_eq!(mode(&root.join(sub)), 0o700, "{sub}/");
        }
        let d = Digest::of(b"x");
        let lock = cache.lock_ingest(&d).unwrap();
        assert_eq!(mode(&cache.lock_path(&d)), 0o600);
        io::Write::write_all(&mut cache.open_ingest(&d).unwrap(), b"x").unwrap();
        assert_eq!(mode(&cache.ingest_path(&d)), 0o600);
        cache.commit(&d, &lock).unwrap();
        assert_eq!(mode(&cache.blob_path(&d)), 0o600);
        cache.record_use(&d, "r/a:1", false);
        assert_eq!(mode(&cache.meta_path(d.hex())), 0o600);
    }

    #[test]
    fn an_earlier_cache_open_to_others_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        let d = Digest::of(b"kept");
        fs::write(root.join("blobs/sha256").join(d.hex()), b"kept").unwrap();
        for sub in ["", "blobs", "blobs/sha256"] {
            fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cache = Cache::open(&root).unwrap();
        for sub in ["", "blobs", "blobs/sha256", "meta", "ingest"] {
            assert_eq!(mode(&root.join(sub)), 0o700, "{sub}/");
        }
        assert!(cache.contains(&d, 4), "its blobs are kept");
    }

    #[test]
    fn a_cache_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        if fsx::euid() != 0 {
            // Only root can give a directory away; `/` belongs to root.
            let err = Cache::open(Path::new("/")).err().expect("refused");
            assert!(err.to_string().contains("belongs to another user"), "{err}");
            return;
        }
        for (i, sub) in ["", "blobs", "blobs/sha256", "meta", "ingest"]
            .iter()
            .enumerate()
        {
            let root = dir.path().join(format!("c{i}"));
            drop(Cache::open(&root).unwrap());
            let theirs = if sub.is_empty() {
                root.clone()
            } else {
                root.join(sub)
            };
            std::os::unix::fs::chown(&theirs, Some(4242), None).unwrap();
            let err = Cache::open(&root).err().expect("refused").to_string();
            assert!(
                err.contains(&format!("{} belongs to another user", theirs.display())),
                "{sub}/: {err}"
            );
        }
        // A link of another user in place of the cache directory.
        let mine = dir.path().join("mine");
        drop(Cache::open(&mine).unwrap());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(4242), None).unwrap();
        let err = Cache::open(&link).err().expect("refused").to_string();
        assert!(err.contains("belongs to another user"), "{err}");
    }

    #[test]
    fn links_in_place_of_cache_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        for sub in ["blobs", "meta", "ingest"] {
            let root = dir.path().join(format!("c-{sub}"));
            fs::create_dir(&root).unwrap();
            std::os::unix::fs::symlink(&elsewhere, root.join(sub)).unwrap();
            let err = Cache::open(&root).err().expect("refused").to_string();
            assert!(err.contains("symbolic link"), "{sub}: {err}");
        }
        // The user's own link to the user's own directory is fine.
        let moved = dir.path().join("moved");
        drop(Cache::open(&moved).unwrap());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&moved, &link).unwrap();
        Cache::open(&link).unwrap();
    }

    #[test]
    fn temporary_cache_is_removed() {
        let root = {
            let c = Cache::temporary().unwrap();
            assert!(c.root().join("blobs/sha256").is_dir());
            c.root().to_path_buf()
        };
        assert!(!root.exists());
    }
}
