//! Where a download's bytes go, off the async workers: a [`Sink`] is a
//! blocking task that takes the pieces of one byte stream (a whole blob, or
//! one ranged chunk) and writes each at its position into the cache's
//! partial file, the blob's place in the archive ([`crate::place`]), or
//! both from the same buffer, and hashes the pieces that continue the
//! hashed prefix. The network side only hands pieces over a short channel,
//! so hashing and writing never hold up the connections.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::cache::{open_nofollow_read, open_nofollow_write};
use crate::digest::Hasher;
use crate::error::PullError;
use crate::place::{Keep, Placement};

/// Bytes gathered before one positional write.
const WRITE_BUFFER: usize = 512 << 10;
/// Pieces in flight between the network and the writing thread.
const PIECES_IN_FLIGHT: usize = 2;

/// Where one blob's bytes go: the cache's partial file, its place in the
/// archive, or both.
#[derive(Clone)]
pub(super) struct Target {
    pub cache: Option<PathBuf>,
    pub place: Option<(Arc<Placement>, u64)>,
}

impl Target {
    /// Whether the blob goes into the cache too.
    pub fn cached(&self) -> bool {
        self.cache.is_some()
    }

    /// A writer for bytes from position `from`, hashed into `hash`.
    pub fn writer(&self, from: u64, hash: Hash) -> Result<Writer, PullError> {
        let cache = match &self.cache {
            Some(path) => {
                let file =
                    open_nofollow_write(path).map_err(|e| PullError::io("writing", path, e))?;
                Some(Out::new(Dest::Own(file, path.clone()), 0, from))
            }
            None => None,
        };
        let place = self
            .place
            .as_ref()
            .map(|(p, at)| Out::new(Dest::Placed(Arc::clone(p)), *at, from));
        Ok(Writer {
            outs: cache.into_iter().chain(place).collect(),
            hash,
            at: from,
        })
    }

    /// Hashes bytes `from..to` as written (chunks that finished ahead of
    /// the hashed prefix), from the cache file or else the place.
    pub fn read_back(&self, from: u64, to: u64, hasher: &mut Hasher) -> Result<(), PullError> {
        match (&self.cache, &self.place) {
            (Some(path), _) => {
                let io = |e| PullError::io("reading", path, e);
                let mut file = open_nofollow_read(path).map_err(io)?;
                file.seek(SeekFrom::Start(from)).map_err(io)?;
                let read = hasher
                    .update_from(Read::take(&mut file, to - from))
                    .map_err(io)?;
                ended_early(read, from, to).map_err(io)
            }
            (None, Some((p, at))) => {
                let io = |e| PullError::io("reading", p.path(), e);
                let mut reader = PlaceReader {
                    file: p.file(),
                    pos: at + from,
                };
                let read = hasher
                    .update_from(Read::take(&mut reader, to - from))
                    .map_err(io)?;
                ended_early(read, from, to).map_err(io)
            }
            (None, None) => Ok(()),
        }
    }

    /// The target a descriptor's download gets: the cache unless the
    /// placement keeps the blob in the archive only.
    pub fn of(cache_path: PathBuf, place: Option<(Arc<Placement>, u64)>) -> Target {
        let archive_only = matches!(&place, Some((p, _)) if p.keep() == Keep::ArchiveOnly);
        Target {
            cache: (!archive_only).then_some(cache_path),
            place,
        }
    }
}

fn ended_early(read: u64, from: u64, to: u64) -> std::io::Result<()> {
    if read == to - from {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("the file ends at byte {}, before byte {to}", from + read),
    ))
}

/// Reads a placement's file from a position on (positional reads of a
/// shared handle).
struct PlaceReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for PlaceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// How a writer hashes what it writes.
pub(super) enum Hash {
    /// A whole stream, in order: every piece.
    Own(Hasher),
    /// One chunk of several: a piece only when it continues the prefix.
    Shared(Arc<Mutex<Hasher>>),
}

enum Dest {
    Own(File, PathBuf),
    Placed(Arc<Placement>),
}

/// One file written at positions: pieces are gathered (not copied) until
/// there are enough for one vectored positional write.
struct Out {
    dest: Dest,
    /// Where blob byte 0 is in the file.
    base: u64,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// The blob position of the first pending byte.
    at: u64,
}

impl Out {
    fn new(dest: Dest, base: u64, from: u64) -> Out {
        Out {
            dest,
            base,
            pending: Vec::new(),
            pending_len: 0,
            at: from,
        }
    }

    fn path(&self) -> &Path {
        match &self.dest {
            Dest::Own(_, path) => path,
            Dest::Placed(p) => p.path(),
        }
    }

    fn file(&self) -> &File {
        match &self.dest {
            Dest::Own(file, _) => file,
            Dest::Placed(p) => p.file(),
        }
    }

    fn write(&mut self, data: &Bytes) -> Result<(), PullError> {
        self.pending_len += data.len();
        self.pending.push(data.clone());
        if self.pending_len >= WRITE_BUFFER || self.pending.len() >= MAX_PIECES_PER_WRITE {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PullError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        write_all_vectored_at(self.file(), &self.pending, self.base + self.at)
            .map_err(|e| PullError::io("writing", self.path(), e))?;
        self.at += self.pending_len as u64;
        self.pending.clear();
        self.pending_len = 0;
        Ok(())
    }

    /// Back to blob byte 0; a file of its own is emptied.
    fn restart(&mut self) -> Result<(), PullError> {
        self.pending.clear();
        self.pending_len = 0;
        self.at = 0;
        match &self.dest {
            Dest::Own(file, path) => file
                .set_len(0)
                .map_err(|e| PullError::io("writing", path, e)),
            Dest::Placed(_) => Ok(()),
        }
    }
}

/// Pieces in one vectored write at most (well under `IOV_MAX`).
const MAX_PIECES_PER_WRITE: usize = 64;

/// Writes every byte of `pieces`, in order, into `file` from offset `at`
/// (`pwritev`, continued after a short write).
fn write_all_vectored_at(file: &File, pieces: &[Bytes], mut at: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (mut first, mut skip) = (0usize, 0usize);
    while first < pieces.len() {
        let iov: Vec<libc::iovec> = pieces[first..]
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = if i == 0 { &p[skip..] } else { &p[..] };
                libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                }
            })
            .collect();
        let offset = libc::off_t::try_from(at).map_err(std::io::Error::other)?;
        // SAFETY: every iovec points into a live `Bytes` of `pieces`, borrowed
        // for the call, with its exact length; the fd is open for writing.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), iov.len() as i32, offset) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut n = n as usize;
        at += n as u64;
        while n > 0 {
            let left = pieces[first].len() - skip;
            if n >= left {
                n -= left;
                first += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
        while first < pieces.len() && pieces[first].len() == skip {
            first += 1;
            skip = 0;
        }
    }
    Ok(())
}

/// The writing side of a [`Sink`]: its files, its hash and how far it got.
pub(super) struct Writer {
    outs: Vec<Out>,
    hash: Hash,
    at: u64,
}

impl Writer {
    fn write(&mut self, data: &Bytes) -> Result<(), PullError> {
        for out in &mut self.outs {
            out.write(data)?;
        }
        match &mut self.hash {
            Hash::Own(h) => h.update(data),
            Hash::Shared(h) => {
                let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
                if h.len() == self.at {
                    h.update(data);
                }
            }
        }
        self.at += data.len() as u64;
        Ok(())
    }

    fn restart(&mut self) -> Result<(), PullError> {
        for out in &mut self.outs {
            out.restart()?;
        }
        if let Hash::Own(h) = &mut self.hash {
            *h = Hasher::new();
        }
        self.at = 0;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PullError> {
        self.outs.iter_mut().try_for_each(Out::flush)
    }

    /// The hash of a whole stream (`None` for a chunk).
    pub fn into_hasher(self) -> Option<Hasher> {
        match self.hash {
            Hash::Own(h) => Some(h),
            Hash::Shared(_) => None,
        }
    }
}

enum Cmd {
    Data(Bytes),
    Restart,
}

/// A [`Writer`] on a blocking thread, fed pieces in order.
pub(super) struct Sink {
    tx: Option<tokio::sync::mpsc::Sender<Cmd>>,
    /// `None` once awaited (its error handed out by `send`).
    task: Option<tokio::task::JoinHandle<Result<Writer, PullError>>>,
}

impl Sink {
    pub fn start(mut writer: Writer) -> Sink {
        let (tx, mut rx) = tokio::sync::mpsc::channel(PIECES_IN_FLIGHT);
        let task = tokio::task::spawn_blocking(move || {
            while let Some(cmd) = rx.blocking_recv() {
                match cmd {
                    Cmd::Data(bytes) => writer.write(&bytes)?,
                    Cmd::Restart => writer.restart()?,
                }
            }
            writer.flush()?;
            Ok(writer)
        });
        Sink {
            tx: Some(tx),
            task: Some(task),
        }
    }

    pub async fn write(&mut self, bytes: Bytes) -> Result<(), PullError> {
        self.send(Cmd::Data(bytes)).await
    }

    /// Back to byte 0 (the body starts over).
    pub async fn restart(&mut self) -> Result<(), PullError> {
        self.send(Cmd::Restart).await
    }

    async fn send(&mut self, cmd: Cmd) -> Result<(), PullError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(cmd).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped: its error says why.
        self.tx = None;
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) | Err(_) => Err(lost()),
            },
            None => Err(lost()),
        }
    }

    /// Everything is written: the writer, flushed.
    pub async fn finish(mut self) -> Result<Writer, PullError> {
        self.tx = None;
        match self.task.take() {
            Some(task) => task.await.map_err(|_| lost())?,
            None => Err(lost()),
        }
    }
}

fn lost() -> PullError {
    PullError::io(
        "writing",
        "a download",
        std::io::Error::other("the writing thread stopped"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use std::collections::HashMap;

    fn placement(dir: &Path, keep: Keep, at: u64, size: u64) -> Arc<Placement> {
        let path = dir.join("archive");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(at + size + 100).unwrap();
        let slots = HashMap::from([(Digest::of(b"x"), (at, size))]);
        Arc::new(Placement::new(file, &path, slots, keep))
    }

    #[test]
    fn vectored_writes_put_every_piece_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let pieces: Vec<Bytes> = (0..200u32)
            .map(|i| match i % 7 {
                0 => Bytes::new(),
                n => Bytes::from(vec![i as u8; n as usize * 100]),
            })
            .collect();
        write_all_vectored_at(&file, &pieces, 10).unwrap();
        let want: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..10], &[0u8; 10]);
        assert!(got[10..] == want[..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_files_get_the_same_bytes_at_their_positions() {
        let dir = tempfile::tempdir().unwrap();
        let p = placement(dir.path(), Keep::CacheAndArchive, 700, 11);
        let cache = dir.path().join("partial");
        std::fs::write(&cache, b"").unwrap();
        let target = Target::of(cache.clone(), Some((Arc::clone(&p), 700)));
        assert!(target.cached());
        let mut sink = Sink::start(target.writer(0, Hash::Own(Hasher::new())).unwrap());
        sink.write(Bytes::from_static(b"junk")).await.unwrap();
        sink.restart().await.unwrap();
        sink.write(Bytes::from_static(b"hello ")).await.unwrap();
        sink.write(Bytes::from_static(b"world")).await.unwrap();
        let hasher = sink.finish().await.unwrap().into_hasher().unwrap();
        assert_eq!(hasher.finish(), Digest::of(b"hello world"));
        assert_eq!(std::fs::read(&cache).unwrap(), b"hello world");
        let archive = std::fs::read(p.path()).unwrap();
        assert_eq!(&archive[700..711], b"hello world");
        assert!(archive[..700].iter().all(|&b| b == 0));
        let mut again = Hasher::new();
        target.read_back(6, 11, &mut again).unwrap();
        assert_eq!(again.finish(), Digest::of(b"world"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_the_error_of_the_next_send_and_finish_fails_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, b"").unwrap();
        let target = Target::of(path.clone(), None);
        let writer = target.writer(0, Hash::Own(Hasher::new())).unwrap();
        // The file is read-only for the writer from here on: every write fails.
        let ro = File::open(&path).unwrap();
        let mut writer = writer;
        writer.outs[0].dest = Dest::Own(ro, path.clone());
        let mut sink = Sink::start(writer);
        let big = Bytes::from(vec![7u8; WRITE_BUFFER]);
        let mut failed = None;
        for _ in 0..10 {
            if let Err(e) = sink.write(big.clone()).await {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("a write into a read-only handle fails");
        assert!(e.to_string().contains("partial"), "{e}");
        assert!(sink.finish().await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn archive_only_writes_no_cache_file_and_reads_back_from_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = placement(dir.path(), Keep::ArchiveOnly, 1024, 5);
        let cache = dir.path().join("partial");
        let target = Target::of(cache.clone(), Some((Arc::clone(&p), 1024)));
        assert!(!target.cached());
        let shared = Arc::new(Mutex::new(Hasher::new()));
        // A chunk ahead of the prefix is written but not hashed.
        let mut ahead = Sink::start(target.writer(3, Hash::Shared(Arc::clone(&shared))).unwrap());
        ahead.write(Bytes::from_static(b"de")).await.unwrap();
        ahead.finish().await.unwrap();
        let mut first = Sink::start(target.writer(0, Hash::Shared(Arc::clone(&shared))).unwrap());
        first.write(Bytes::from_static(b"abc")).await.unwrap();
        first.finish().await.unwrap();
        let mut h = shared.lock().unwrap().clone();
        assert_eq!(h.len(), 3);
        target.read_back(3, 5, &mut h).unwrap();
        assert_eq!(h.finish(), Digest::of(b"abcde"));
        assert!(!cache.exists(), "no cache file");
        assert_eq!(&std::fs::read(p.path()).unwrap()[1024..1029], b"abcde");
        let mut short = Hasher::new();
        assert!(target.read_back(0, 200, &mut short).is_err());
    }
}
