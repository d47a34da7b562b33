//! The object store: content-addressed, verified on the way in and on the way out.
//!
//! On disk each object is a file under `objects/ab/` (`<hex>`) and, for one of more than
//! 16 KiB, its outboard (`<hex>.ob16`: the BLAKE3 tree's parent nodes above 16 KiB groups,
//! 0.4 % of the size, see `wire::tree`), which lets any byte range be verified on its own. A store
//! written by an older version (bao outboards, `<hex>.obao`) is converted at open: the old
//! outboard is removed and the new one rebuilt from the bytes, which must hash to the id. A write goes to temporary files while the bytes are hashed; only
//! if the hash matches are both files fsynced and renamed into place (and the directory
//! fsynced), so an acknowledged object survives a crash and a half-written one never appears.
//! Large objects are written past the page cache (`fs.rs`'s direct file): on a virtual
//! machine, filling fresh cache pages cost more CPU than any other step of a replicated PUT.
//! Reads re-verify every chunk they return; an object found corrupt is counted in
//! `integrity_fail_total` and never served: rewritten from its verified bytes if the
//! in-memory cache of small objects holds them (on a lone node that is the only copy),
//! else dropped. In amnesia mode everything stays in
//! memory and nothing touches the disk.
//!
//! Why files and not redb/fjall: objects are large, immutable and content-addressed, so
//! rename-into-place is all the atomicity they need; the outboard gives verified ranges for
//! free; and a byte range is a seek, not a copy out of a database page.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use wire::tree::{GROUP, SliceDecoder, SliceEncoder, SliceVerifier, TreeHasher};

#[cfg(any(test, feature = "crash-loop"))]
pub mod crashloop;
pub mod fs;
pub mod hot;
pub mod simfs;
mod snapshot;

pub use fs::{Fs, RealFs};
pub use hot::HotCache;
pub use simfs::SimFs;

/// A store failure, with what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes do not hash to the id they were sent under.
    #[error("content hashes to b3:{got}, not the expected b3:{expected}")]
    HashMismatch {
        /// The id claimed.
        expected: String,
        /// What the bytes hash to.
        got: String,
    },
    /// The object would take the store past its quota.
    #[error("store full: {used} of {quota} bytes used, {need} more needed")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The quota.
        quota: u64,
        /// Bytes the write needs.
        need: u64,
    },
    /// The writer got a different number of bytes than announced.
    #[error("expected {expected} bytes, got {got}")]
    SizeMismatch {
        /// Announced.
        expected: u64,
        /// Received.
        got: u64,
    },
    /// No such object.
    #[error("object not found")]
    NotFound,
    /// A stored object failed verification and was dropped.
    #[error("stored object failed verification and was dropped")]
    Corrupt,
    /// The range lies outside the object.
    #[error("range {start}+{len} outside an object of {size} bytes")]
    BadRange {
        /// First byte asked for.
        start: u64,
        /// Length asked for.
        len: u64,
        /// Object size.
        size: u64,
    },
    /// The disk failed.
    #[error("store i/o: {0}")]
    Io(#[from] io::Error),
}

/// An object id: the BLAKE3 hash of its bytes.
pub type Hash = [u8; 32];

/// `b3:<64 lowercase hex>`, exactly what `b3sum` prints for the same bytes.
pub fn id_string(hash: &Hash) -> String {
    format!("b3:{}", hex::encode(hash))
}

/// Parses `b3:<64 hex>` (lowercase or uppercase hex).
pub fn parse_id(s: &str) -> Option<Hash> {
    let hex_part = s.strip_prefix("b3:")?;
    let mut h = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut h).ok()?;
    Some(h)
}

enum Backend {
    Disk {
        dir: PathBuf,
        fs: Arc<dyn Fs>,
    },
    Memory {
        objects: Mutex<BTreeMap<Hash, (Bytes, Bytes)>>,
    },
}

/// The node's object store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Object sizes by id: the index the rest of the node asks.
    index: Mutex<BTreeMap<Hash, u64>>,
    /// The sum of the index's sizes, kept beside it (the quota is checked on every write).
    total: std::sync::atomic::AtomicU64,
    quota: u64,
    /// Stored objects found corrupt (and dropped).
    corrupt: std::sync::atomic::AtomicU64,
    /// Rotten copies rewritten from the verified bytes the hot cache held ([`Store::healed`]).
    healed: std::sync::atomic::AtomicU64,
    /// Who hears of each object dropped as corrupt ([`Store::watch_dropped`]).
    dropped: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Hash>>,
    /// Small objects whose bytes were verified, in memory.
    hot: HotCache,
    /// The index matches the files (no walk pending since a snapshot was loaded).
    reconciled: std::sync::atomic::AtomicBool,
    /// The index changed since the last snapshot.
    changed: std::sync::atomic::AtomicBool,
    /// Objects of at least this many bytes are written past the page cache
    /// ([`Store::set_direct_io`]; `u64::MAX`: none).
    direct_min: std::sync::atomic::AtomicU64,
    /// Which copy of each id is in place, for ids written since the store opened (absent:
    /// 0, the copy found at open). A reader remembers the copy it opened, and a failure it
    /// finds drops the object only if that copy is still the one in place: a long read of
    /// a rotten copy (a slow client, the scrubber) must not drop the good copy fetched back
    /// after another reader dropped the rotten one. Locked before `index`, never after.
    copies: Mutex<HashMap<Hash, u64>>,
    /// The last copy number handed out.
    copies_made: std::sync::atomic::AtomicU64,
}

/// The index snapshot's file name in the objects directory.
const SNAPSHOT: &str = "index.snap";

/// Every whole object under `dir`, sweeping what a crash left behind.
fn walk(fs: &dyn Fs, dir: &Path) -> Result<BTreeMap<Hash, u64>, StoreError> {
    let mut index = BTreeMap::new();
    for (path, is_dir) in fs.read_dir(dir)? {
        if is_dir {
            index_shard(fs, dir, &path, &mut index)?;
        } else if is_temp(&path) {
            let _ = fs.remove_file(&path);
        }
    }
    Ok(index)
}

/// Bytes of small verified objects kept in memory (64 MiB).
pub const HOT_CACHE_BYTES: usize = 64 << 20;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("objects", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// Opens (creating) the store under `data_dir/objects`. With a valid index snapshot the
    /// index is loaded from it and the store is usable at once; call
    /// [`reconcile`](Self::reconcile) (on a blocking thread) to bring it up to date with the
    /// files. Without one, the files are walked now, cleaning up what a crash left behind:
    /// temporary files (in the root and in every shard) and outboards whose object file is
    /// gone; an object file whose outboard is missing gets it rebuilt if its bytes hash to
    /// its name, and is removed if not.
    pub fn open(data_dir: &Path, quota: u64) -> Result<Store, StoreError> {
        Store::open_on(Arc::new(RealFs), data_dir, quota)
    }

    /// [`open`](Self::open) on another file system (a crashable one in tests).
    pub fn open_on(fs: Arc<dyn Fs>, data_dir: &Path, quota: u64) -> Result<Store, StoreError> {
        let dir = data_dir.join("objects");
        fs.create_dir_all(&dir)?;
        let snapshot = snapshot::load(fs.as_ref(), &dir.join(SNAPSHOT));
        let reconciled = snapshot.is_none();
        let index = match snapshot {
            Some(index) => {
                // Root temporaries only (cheap); the shards wait for the walk.
                for (path, is_dir) in fs.read_dir(&dir)? {
                    if !is_dir && is_temp(&path) {
                        let _ = fs.remove_file(&path);
                    }
                }
                index
            }
            None => walk(fs.as_ref(), &dir)?,
        };
        Ok(Store {
            inner: Arc::new(Inner {
                backend: Backend::Disk { dir, fs },
                total: index.values().sum::<u64>().into(),
                index: Mutex::new(index),
                quota,
                corrupt: Default::default(),
                healed: Default::default(),
                dropped: Default::default(),
                hot: HotCache::new(HOT_CACHE_BYTES),
                reconciled: reconciled.into(),
                // After a walk, the next snapshot saves the next start from walking again.
                changed: reconciled.into(),
                direct_min: UNCACHED_MIN.into(),
                copies: Mutex::new(HashMap::new()),
                copies_made: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Whether the index is known to match the files (no walk pending).
    pub fn is_reconciled(&self) -> bool {
        self.inner
            .reconciled
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Walks the files, as an open without a snapshot does, and brings the index up to date
    /// with them: adds what the snapshot lacked, drops what is gone, sweeps what a crash
    /// left; then writes a fresh snapshot. Writes and removals may run meanwhile. Blocking.
    pub fn reconcile(&self) -> Result<(), StoreError> {
        let Backend::Disk { dir, fs } = &self.inner.backend else {
            return Ok(());
        };
        let found = walk(fs.as_ref(), dir)?;
        {
            let mut index = lock(&self.inner.index);
            let gone: Vec<Hash> = index
                .keys()
                .filter(|h| !found.contains_key(*h) && !fs.exists(&data_path(dir, h)))
                .copied()
                .collect();
            for h in gone {
                if let Some(size) = index.remove(&h) {
                    self.inner
                        .total
                        .fetch_sub(size, std::sync::atomic::Ordering::Relaxed);
                }
            }
            for (h, size) in found {
                if index.insert(h, size).is_none() {
                    self.inner
                        .total
                        .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        self.inner
            .reconciled
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner
            .changed
            .store(true, std::sync::atomic::Ordering::Release);
        self.save_index()
    }

    /// Writes the index snapshot if the index changed since the last one. Blocking.
    pub fn save_index(&self) -> Result<(), StoreError> {
        let Backend::Disk { dir, fs } = &self.inner.backend else {
            return Ok(());
        };
        if !self
            .inner
            .changed
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return Ok(());
        }
        let index = lock(&self.inner.index).clone();
        snapshot::write(fs.as_ref(), &dir.join(SNAPSHOT), &index).inspect_err(|_| {
            self.inner
                .changed
                .store(true, std::sync::atomic::Ordering::Release);
        })?;
        Ok(())
    }

    /// Before the walk: an object the snapshot lacks may still be on disk (written after the
    /// snapshot). Looks, and indexes it if it is whole.
    fn size_on_disk(&self, hash: &Hash) -> Option<u64> {
        let Backend::Disk { dir, fs } = &self.inner.backend else {
            return None;
        };
        let len = fs.len(&data_path(dir, hash)).ok()?;
        if len > GROUP && !fs.exists(&outboard_path(dir, hash)) {
            return None; // the walk rebuilds its outboard
        }
        if lock(&self.inner.index).insert(*hash, len).is_none() {
            self.inner
                .total
                .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        }
        Some(len)
    }

    /// A store that keeps everything in memory and writes nothing.
    pub fn amnesia(quota: u64) -> Store {
        let backend = Backend::Memory {
            objects: Mutex::new(BTreeMap::new()),
        };
        Store {
            inner: Arc::new(Inner {
                backend,
                index: Mutex::new(BTreeMap::new()),
                total: 0.into(),
                quota,
                corrupt: Default::default(),
                healed: Default::default(),
                dropped: Default::default(),
                hot: HotCache::new(HOT_CACHE_BYTES),
                reconciled: true.into(),
                changed: false.into(),
                direct_min: UNCACHED_MIN.into(),
                copies: Mutex::new(HashMap::new()),
                copies_made: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Whether objects of [`UNCACHED_MIN`] bytes and more are written past the page cache
    /// (on by default): an operator whose disk is slow to take synchronous writes (a
    /// network volume, a spinning disk) turns it off, and every object goes through the
    /// cache with its writeback started as it is written.
    pub fn set_direct_io(&self, on: bool) {
        let min = if on { UNCACHED_MIN } else { u64::MAX };
        self.inner
            .direct_min
            .store(min, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether an object of `size` bytes is written past the page cache (and read past it
    /// for a copy pushed to a peer, [`push_reader`](Self::push_reader)).
    pub fn uncached(&self, size: u64) -> bool {
        size >= self
            .inner
            .direct_min
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        lock(&self.inner.index).len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of object data held.
    pub fn bytes(&self) -> u64 {
        self.inner.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stored objects found corrupt and dropped since the store opened.
    pub fn corrupt_found(&self) -> u64 {
        self.inner
            .corrupt
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rotten copies rewritten since the store opened from the verified bytes kept in
    /// memory, instead of dropped.
    pub fn healed(&self) -> u64 {
        self.inner.healed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The ids of objects this store drops because they failed verification, as it drops
    /// them, for the one caller that asks first (`None` after): the node tells the
    /// replication planner and stops announcing the copy, which would otherwise count as
    /// one of the RF until its confirmations lapsed. The queue has no bound of its own, so
    /// a disk that rots many objects at once (a scrub pass, a burst of reads) has every
    /// drop heard. It holds 32 bytes per drop not yet taken, and the node takes each at
    /// once (its fetch back is scheduled apart, with its own bounds).
    pub fn watch_dropped(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Hash>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.inner.dropped.set(tx).ok().map(|()| rx)
    }

    /// The quota in bytes.
    pub fn quota(&self) -> u64 {
        self.inner.quota
    }

    /// Every object and its size.
    pub fn list(&self) -> Vec<(Hash, u64)> {
        lock(&self.inner.index)
            .iter()
            .map(|(h, s)| (*h, *s))
            .collect()
    }

    /// Up to `n` objects in id order from `from` on: a walk of the index that does not copy
    /// it whole at once or hold its lock for long (the scrubber's).
    pub fn list_page(&self, from: std::ops::Bound<Hash>, n: usize) -> Vec<(Hash, u64)> {
        lock(&self.inner.index)
            .range((from, std::ops::Bound::Unbounded))
            .take(n)
            .map(|(h, s)| (*h, *s))
            .collect()
    }

    /// The size of an object, if held.
    pub fn size(&self, hash: &Hash) -> Option<u64> {
        let known = lock(&self.inner.index).get(hash).copied();
        match known {
            None if !self.is_reconciled() => self.size_on_disk(hash),
            known => known,
        }
    }

    /// Whether `need` more bytes fit the quota now.
    pub fn check_room(&self, need: u64) -> Result<(), StoreError> {
        let used = self.bytes();
        if used.saturating_add(need) > self.inner.quota {
            return Err(StoreError::Full {
                used,
                quota: self.inner.quota,
                need,
            });
        }
        Ok(())
    }

    /// An object's bytes from the in-memory cache of small verified objects, if there.
    pub fn cached(&self, hash: &Hash) -> Option<Bytes> {
        self.inner.hot.get(hash)
    }

    /// Takes an object out of the in-memory cache: its rotten copy is then dropped and
    /// replaced like a large object's (tests of that path use small objects).
    #[doc(hidden)]
    pub fn forget_cached(&self, hash: &Hash) {
        self.inner.hot.remove(hash);
    }

    /// Keeps bytes of an object the caller verified against `hash` (a remote read) in the
    /// in-memory cache, if small enough; they are served without another fetch.
    pub fn remember_verified(&self, hash: Hash, bytes: Bytes) {
        self.inner.hot.insert(hash, bytes);
    }

    /// Starts writing an object of (at most) `size_hint` bytes.
    pub fn writer(&self, size_hint: u64) -> Result<ObjectWriter, StoreError> {
        self.check_room(size_hint)?;
        let mut w = self.writer_unchecked(size_hint)?;
        w.quota = true;
        Ok(w)
    }

    /// [`writer`](Self::writer) without the quota's check: for a copy that replaces one
    /// already counted (`heal`), which must not fail on a store at its quota.
    fn writer_unchecked(&self, size_hint: u64) -> Result<ObjectWriter, StoreError> {
        let sink = match &self.inner.backend {
            Backend::Disk { dir, fs } => {
                let tmp = dir.join(format!(".tmp-{}", unique()));
                let file = if self.uncached(size_hint) {
                    fs.create_uncached(&tmp)?
                } else {
                    fs.create(&tmp)?
                };
                // A file that gathers its own aligned chunks wants no buffer before it.
                let (buffer, path) = if file.gathers() {
                    (0, "direct")
                } else {
                    (256 * 1024, "cached")
                };
                metrics::counter!("store_writes_total", "path" => path).increment(1);
                let file = io::BufWriter::with_capacity(buffer, file);
                Sink::Disk {
                    file,
                    tmp,
                    fs: fs.clone(),
                    written_back: 0,
                }
            }
            Backend::Memory { .. } => Sink::Memory(Vec::new()),
        };
        Ok(ObjectWriter {
            store: self.clone(),
            sink,
            encoder: TreeHasher::new(),
            len: 0,
            small: Some(Vec::new()),
            quota: false,
        })
    }

    /// Stores `bytes` as one object (small objects, tests).
    pub fn put(&self, bytes: &[u8], expected: Option<&Hash>) -> Result<Hash, StoreError> {
        let mut w = self.writer(bytes.len() as u64)?;
        w.write(bytes)?;
        w.finish(expected)
    }

    /// Removes an object.
    pub fn remove(&self, hash: &Hash) {
        let mut copies = lock(&self.inner.copies);
        self.remove_files(hash, false);
        copies.remove(hash);
    }

    /// Which copy of `hash` is in place now (see `Inner::copies`).
    fn copy_in_place(&self, hash: &Hash) -> u64 {
        lock(&self.inner.copies).get(hash).copied().unwrap_or(0)
    }

    /// Drops an object from the index (its file is gone) without touching the disk.
    /// Takes an object out of the index; returns whether it was there.
    fn forget(&self, hash: &Hash) -> bool {
        let mut index = lock(&self.inner.index);
        let held = index.remove(hash);
        if let Some(size) = held {
            self.inner
                .total
                .fetch_sub(size, std::sync::atomic::Ordering::Relaxed);
            self.inner
                .changed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        drop(index);
        self.inner.hot.remove(hash);
        held.is_some()
    }

    /// Rewrites the rotten copy `copy` of `hash` from the verified bytes the hot cache
    /// holds of it, if it holds them: where ours is the only copy (RF 1, or the others
    /// lost), dropping it would lose the object. The rewrite hashes the bytes again, so a
    /// cache gone bad itself heals nothing, and puts a new copy in place, so another
    /// reader of the rotten one leaves it be. Returns whether the copy was rewritten.
    fn heal(&self, hash: &Hash, copy: u64) -> bool {
        let Some(bytes) = self.inner.hot.get(hash) else {
            return false;
        };
        if lock(&self.inner.copies).get(hash).copied().unwrap_or(0) != copy {
            return false;
        }
        // Counted already: a store at its quota must still take the copy back.
        let rewritten = self.writer_unchecked(bytes.len() as u64).and_then(|mut w| {
            w.write(&bytes)?;
            w.finish(Some(hash))
        });
        match rewritten {
            Ok(_) => {
                metrics::counter!("integrity_fail_total", "source" => "store").increment(1);
                metrics::counter!("store_healed_total").increment(1);
                self.inner
                    .healed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    id = %id_string(hash),
                    "stored object failed verification; rewrote it from the verified bytes in memory"
                );
                true
            }
            Err(e) => {
                tracing::warn!(id = %id_string(hash), error = %e, "rewriting a rotten copy from memory failed; dropping it");
                false
            }
        }
    }

    /// Removes an object's files: the data first (an outboard left alone is swept at open),
    /// and, when `durably`, the removal fsynced so a crash cannot bring the files back (a
    /// released copy that comes back is only surplus; a corrupt one must not).
    fn remove_files(&self, hash: &Hash, durably: bool) {
        self.forget(hash);
        match &self.inner.backend {
            Backend::Disk { dir, fs } => {
                let _ = fs.remove_file(&data_path(dir, hash));
                let _ = fs.remove_file(&outboard_path(dir, hash));
                if durably {
                    if let Err(e) = fs.sync_dir(&shard(dir, hash)) {
                        tracing::warn!(id = %id_string(hash), error = %e, "could not make a removal durable");
                    }
                }
            }
            Backend::Memory { objects } => {
                lock(objects).remove(hash);
            }
        }
    }

    /// The slice of `start..start+len` of an object (`wire::tree`): the bytes a peer needs
    /// to verify that range on its own. Blocking (reads files): call from a blocking task.
    pub fn encode_slice(&self, hash: &Hash, start: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.slice_reader(hash, start, len)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The slice of a range as an encoder, for streaming large ranges without holding them
    /// in memory: read it (`Read`), or take it in pieces cut between groups
    /// (`SliceEncoder::next_piece`, what a holder serves). Blocking reads.
    pub fn slice_reader(
        &self,
        hash: &Hash,
        start: u64,
        len: u64,
    ) -> Result<SliceEncoder, StoreError> {
        self.slice_reader_for(hash, start, len, Reads::Cached)
    }

    /// [`slice_reader`](Self::slice_reader), reading a large object's file past the page
    /// cache if `reads` says so and the store reads such objects that way.
    fn slice_reader_for(
        &self,
        hash: &Hash,
        start: u64,
        len: u64,
        reads: Reads,
    ) -> Result<SliceEncoder, StoreError> {
        let size = self.size(hash).ok_or(StoreError::NotFound)?;
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(StoreError::BadRange { start, len, size });
        }
        Ok(match &self.inner.backend {
            Backend::Disk { dir, fs } => {
                let open = |path: PathBuf| {
                    fs.open(&path).map_err(|e| match e.kind() {
                        // Released between the index lookup and the open: gone, not broken.
                        io::ErrorKind::NotFound if self.size(hash).is_none() => {
                            StoreError::NotFound
                        }
                        _ => StoreError::Io(e),
                    })
                };
                let path = data_path(dir, hash);
                let opened = if reads == Reads::Once && self.uncached(size) {
                    // Written past the page cache, and read once: past it too, whole
                    // blocks into the reader's own window.
                    fs.open_uncached(&path, len)
                } else {
                    fs.open(&path).map(|file| {
                        metrics::counter!("store_reads_total", "path" => "cached").increment(1);
                        // No larger than a group: a whole group is read past the buffer,
                        // straight into the buffer it goes out or is verified in.
                        let file = io::BufReader::with_capacity(GROUP as usize, file);
                        Box::new(file) as Box<dyn fs::ReadFile>
                    })
                };
                let data = match opened {
                    // No object file: released (perhaps before a crash an old snapshot did
                    // not see). The object is gone; only a missing outboard is repairable.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.forget(hash);
                        return Err(StoreError::NotFound);
                    }
                    other => other?,
                };
                if size <= GROUP {
                    // One group: no parents, no outboard file.
                    SliceEncoder::new(data, Cursor::new(Vec::new()), size, start, len)?
                } else {
                    let ob = io::BufReader::new(open(outboard_path(dir, hash))?);
                    SliceEncoder::new(data, ob, size, start, len)?
                }
            }
            Backend::Memory { objects } => {
                let (data, ob) = lock(objects)
                    .get(hash)
                    .cloned()
                    .ok_or(StoreError::NotFound)?;
                SliceEncoder::new(Cursor::new(data), Cursor::new(ob), size, start, len)?
            }
        })
    }

    /// `start..start+len` of an object, every chunk verified against the id. A corrupt object
    /// is dropped, counted, and reported as [`StoreError::Corrupt`]; an I/O error is
    /// [`StoreError::Io`] and leaves the object in place. Blocking.
    pub fn read_verified(&self, hash: &Hash, start: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(len as usize);
        // The reader already counted and dropped the object if a chunk failed.
        self.verified_reader(hash, start, len)?
            .read_to_end(&mut out)
            .map_err(StoreError::from_read)?;
        if start == 0 && out.len() <= HotCache::ENTRY_MAX && self.size(hash) == Some(len) {
            self.inner.hot.insert(*hash, Bytes::copy_from_slice(&out));
        }
        Ok(out)
    }

    /// The encoded slice of `start..start+len` (what a peer asking for the range is sent), in
    /// pieces of at most `max` bytes (but at least one whole node) cut between nodes, every node verified against the id
    /// before this returns. Short ranges (a proof, a small object) are served this way: the
    /// bytes sent are the bytes checked, so a copy that rots between a check and a second
    /// read of the file is never sent as if it were good (its asker would count us a liar).
    /// A slice that fails drops the object, as a verified read does. Blocking; the whole
    /// slice is held in memory.
    pub fn verified_slice(
        &self,
        hash: &Hash,
        start: u64,
        len: u64,
        max: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        // Taken before the files are opened: a copy put in place after it is never dropped
        // for what this read finds.
        let copy = self.copy_in_place(hash);
        let mut encoder = self.slice_reader(hash, start, len)?;
        let mut verifier = SliceVerifier::new(hash, start, len);
        let mut pieces = Vec::new();
        let mut verified = 0u64;
        let failed = |e: io::Error| self.judge_read_error(hash, copy, e);
        while let Some(piece) = encoder.next_piece(max).map_err(failed)? {
            verifier.feed(piece.clone());
            while let Some(b) = verifier.poll_verified().map_err(|e| failed(e.into()))? {
                verified += b.len() as u64;
            }
            pieces.push(piece);
        }
        verifier.finish().map_err(|e| failed(e.into()))?;
        debug_assert_eq!(verified, len);
        Ok(pieces)
    }

    /// What a failed read of copy `copy` of an object means for it: a hash mismatch
    /// (`InvalidData`) or missing bytes (`UnexpectedEof`) say the bytes on disk are not the
    /// object's, and drop it as corrupt; any other I/O error leaves it in place.
    fn judge_read_error(&self, hash: &Hash, copy: u64, e: io::Error) -> StoreError {
        match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                tracing::warn!(error = %e, "verified read failed");
                self.corrupt(hash, copy)
            }
            _ => {
                tracing::warn!(id = %id_string(hash), error = %e, "store read failed; the object stays");
                StoreError::Io(e)
            }
        }
    }

    /// A reader of `start..start+len` that yields only verified bytes. Only bytes that do not
    /// hash to the id (a flipped bit, a truncated file) are corruption: the object is then
    /// dropped and counted, and the error carries [`StoreError::Corrupt`] (see
    /// [`StoreError::from_read`]). Any other I/O error (EIO, EISDIR, EMFILE, …) is passed on
    /// and leaves the object in place: it may read fine a moment later. Blocking reads.
    pub fn verified_reader(
        &self,
        hash: &Hash,
        start: u64,
        len: u64,
    ) -> Result<VerifiedReader, StoreError> {
        self.verified_reader_for(hash, start, len, Reads::Cached)
    }

    /// A [`verified_reader`](Self::verified_reader) of a whole object for a copy pushed
    /// to a peer (a write's copies, a repair). Such a read comes once, usually just after
    /// the write that put a large object on the disk past the page cache: it is read past
    /// the cache too, rather than filling fresh pages with bytes nobody reads again. A
    /// client's read goes through the cache, where a popular object stays.
    pub fn push_reader(&self, hash: &Hash, size: u64) -> Result<VerifiedReader, StoreError> {
        self.verified_reader_for(hash, 0, size, Reads::Once)
    }

    fn verified_reader_for(
        &self,
        hash: &Hash,
        start: u64,
        len: u64,
        reads: Reads,
    ) -> Result<VerifiedReader, StoreError> {
        // Taken before the files are opened (see `verified_slice`).
        let copy = self.copy_in_place(hash);
        let slice = self.slice_reader_for(hash, start, len, reads)?;
        let decoder = SliceDecoder::of_encoder(slice, hash, start, len);
        Ok(VerifiedReader {
            decoder,
            store: self.clone(),
            hash: *hash,
            copy,
            left: len,
            failed: false,
        })
    }

    /// Copy `copy` of `hash` failed verification: dropped, counted and reported, if it is
    /// still the copy in place.
    fn corrupt(&self, hash: &Hash, copy: u64) -> StoreError {
        if self.heal(hash, copy) {
            return StoreError::Corrupt;
        }
        // Held until the files are gone: a copy being put in place waits (see `place`).
        let mut copies = lock(&self.inner.copies);
        if copies.get(hash).copied().unwrap_or(0) != copy {
            tracing::info!(id = %id_string(hash), "a replaced copy failed verification; the copy in place stays");
            return StoreError::Corrupt;
        }
        // Two readers of one rotten copy (a GET and a push of it, say) both find it: the
        // first drops it, and it is one corrupt copy, counted and reported once.
        if !self.forget(hash) {
            return StoreError::Corrupt;
        }
        copies.remove(hash);
        metrics::counter!("integrity_fail_total", "source" => "store").increment(1);
        self.inner
            .corrupt
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(id = %id_string(hash), "stored object failed verification; dropping it");
        self.remove_files(hash, true);
        drop(copies);
        if let Some(tx) = self.inner.dropped.get() {
            // Fails only once the listener is gone (the node shutting down).
            let _ = tx.send(*hash);
        }
        StoreError::Corrupt
    }

    /// Whether objects live on disk (not in amnesia mode's memory).
    pub fn on_disk(&self) -> bool {
        matches!(self.inner.backend, Backend::Disk { .. })
    }

    /// Where an object's bytes live on disk (tests corrupt them on purpose).
    pub fn data_file(&self, hash: &Hash) -> Option<PathBuf> {
        match &self.inner.backend {
            Backend::Disk { dir, .. } => Some(data_path(dir, hash)),
            Backend::Memory { .. } => None,
        }
    }
}

/// How a read will use an object's file: [`Reads::Once`] lets a large object be read past
/// the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Perhaps again soon (a client's read): through the cache.
    Cached,
    /// Once (a copy pushed to a peer).
    Once,
}

/// Verified bytes of a stored range; see [`Store::verified_reader`].
pub struct VerifiedReader {
    decoder: SliceDecoder,
    store: Store,
    hash: Hash,
    /// The copy opened (`Inner::copies`).
    copy: u64,
    left: u64,
    failed: bool,
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(StoreError::Corrupt));
        }
        let got = self.decoder.read(buf);
        self.judged(got, !buf.is_empty())
    }
}

impl VerifiedReader {
    /// The next verified bytes, whole groups of at most `max` bytes in all (at least one
    /// group, so more than `max` only if `max` is less than a group), read from the file
    /// into the buffer handed out, past the reader's own buffers (and the page cache's
    /// too for a [`push_reader`](Store::push_reader) of a large object); `None` at the
    /// end. Errors as `read`'s.
    pub fn next_verified(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        if self.failed {
            return Err(io::Error::other(StoreError::Corrupt));
        }
        // The decoder stops at the first whole group that reaches what it is asked for.
        let at_least = max.saturating_sub(GROUP as usize - 1).max(1);
        let (piece, got) = match self.decoder.next_verified(at_least) {
            Ok(piece) => {
                let n = piece.as_ref().map_or(0, Vec::len);
                (piece, Ok(n))
            }
            Err(e) => (None, Err(e)),
        };
        self.judged(got, true)?;
        Ok(piece)
    }

    /// Whether every byte of the range was read out.
    pub fn is_done(&self) -> bool {
        self.left == 0
    }

    /// What the decoder's answer `got` (bytes, or an error) means for the object: bytes
    /// that do not hash to the id, or too few of them where some were `wanted`, drop it.
    fn judged(&mut self, got: io::Result<usize>, wanted: bool) -> io::Result<usize> {
        match got {
            Ok(0) if self.left > 0 && wanted => {
                tracing::warn!(left = self.left, "verified read ended early");
                self.fail()
            }
            Ok(n) => {
                self.left = self.left.saturating_sub(n as u64);
                Ok(n)
            }
            Err(e) => match self.store.judge_read_error(&self.hash, self.copy, e) {
                StoreError::Io(e) => Err(e),
                _ => {
                    self.failed = true;
                    Err(io::Error::other(StoreError::Corrupt))
                }
            },
        }
    }

    fn fail(&mut self) -> io::Result<usize> {
        self.failed = true;
        self.store.corrupt(&self.hash, self.copy);
        Err(io::Error::other(StoreError::Corrupt))
    }
}

impl StoreError {
    /// Classifies an error from a [`VerifiedReader`]: [`StoreError::Corrupt`] when the
    /// reader found (and dropped) a corrupt object, [`StoreError::Io`] otherwise.
    pub fn from_read(e: io::Error) -> StoreError {
        let corrupt = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<StoreError>())
            .is_some_and(|inner| matches!(inner, StoreError::Corrupt));
        if corrupt {
            StoreError::Corrupt
        } else {
            StoreError::Io(e)
        }
    }

    /// Whether the error may pass by itself (an I/O failure), as opposed to a verdict on the
    /// object or the request.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Io(_))
    }
}

/// The outboard's file extension (`wire::tree`'s format: parents above 16 KiB groups).
const OUTBOARD_EXT: &str = "ob16";
const OUTBOARD_SUFFIX: &str = ".ob16";
/// The extension of the bao outboards an older version wrote.
const LEGACY_OUTBOARD: &str = ".obao";

/// Read-buffer size for object files.
const CHUNK_READ: usize = 64 * 1024;

fn shard(dir: &Path, hash: &Hash) -> PathBuf {
    dir.join(hex::encode(&hash[..1]))
}

fn data_path(dir: &Path, hash: &Hash) -> PathBuf {
    shard(dir, hash).join(hex::encode(hash))
}

fn outboard_path(dir: &Path, hash: &Hash) -> PathBuf {
    shard(dir, hash).join(format!("{}.{OUTBOARD_EXT}", hex::encode(hash)))
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".tmp"))
}

/// Indexes one shard directory at open, sweeping what a crash left behind.
fn index_shard(
    fs: &dyn Fs,
    dir: &Path,
    shard: &Path,
    index: &mut BTreeMap<Hash, u64>,
) -> Result<(), StoreError> {
    for (path, _) in fs.read_dir(shard)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if is_temp(&path) {
            let _ = fs.remove_file(&path);
            continue;
        }
        let mut h = [0u8; 32];
        if name.ends_with(LEGACY_OUTBOARD) {
            // A bao outboard from an older version: the object's outboard is rebuilt below.
            let _ = fs.remove_file(&path);
            continue;
        }
        if let Some(stem) = name.strip_suffix(OUTBOARD_SUFFIX) {
            // An outboard without its object: a crash between the two renames, or a release
            // interrupted halfway. Nothing was acknowledged on it alone.
            if hex::decode_to_slice(stem, &mut h).is_ok() && !fs.exists(&data_path(dir, &h)) {
                tracing::info!(file = %path.display(), "removing an orphaned outboard");
                let _ = fs.remove_file(&path);
            }
            continue;
        }
        if name.len() != 64 || hex::decode_to_slice(&name, &mut h).is_err() {
            continue;
        }
        // Renamed into place only once whole and fsynced: the file is the object. One of
        // more than one group needs its outboard beside it (rebuilt if missing).
        let len = fs.len(&path)?;
        if len > GROUP && !fs.exists(&outboard_path(dir, &h)) && !rebuild_outboard(fs, dir, &h)? {
            continue;
        }
        index.insert(h, len);
    }
    Ok(())
}

/// Recomputes a missing outboard from the object file; removes the file instead when its
/// bytes do not hash to its name. Returns whether the object is now complete.
fn rebuild_outboard(fs: &dyn Fs, dir: &Path, hash: &Hash) -> Result<bool, StoreError> {
    let path = data_path(dir, hash);
    let mut encoder = TreeHasher::new();
    let mut file = io::BufReader::with_capacity(CHUNK_READ, fs.open(&path)?);
    let mut buf = vec![0u8; CHUNK_READ];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => encoder.update(&buf[..n]),
        }
    }
    let (root, outboard) = encoder.finish();
    if &root != hash {
        tracing::warn!(file = %path.display(), "object file without outboard does not match its name; removing it");
        let _ = fs.remove_file(&path);
        return Ok(false);
    }
    let tmp = dir.join(format!(".tmp-{}.{OUTBOARD_EXT}", unique()));
    let written = write_synced(fs, &tmp, &outboard)
        .and_then(|()| fs.rename(&tmp, &outboard_path(dir, hash)))
        .and_then(|()| fs.sync_dir(&shard(dir, hash)));
    if let Err(e) = written {
        let _ = fs.remove_file(&tmp);
        return Err(e.into());
    }
    tracing::info!(file = %path.display(), "rebuilt a missing outboard");
    Ok(true)
}

fn write_synced(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs.create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates the shard directory if needed; a new one is made durable in its parent.
fn ensure_shard(fs: &dyn Fs, dir: &Path, hash: &Hash) -> io::Result<PathBuf> {
    let shard_dir = shard(dir, hash);
    if !fs.is_dir(&shard_dir) {
        match fs.create_dir(&shard_dir) {
            Ok(()) => fs.sync_dir(dir)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(shard_dir)
}

/// How many bytes a write lets pile up in the page cache before it starts writing them to
/// the disk (`WriteFile::start_writeback`). Without it the kernel starts only at its
/// dirty-memory threshold (gigabytes here), and a 1 GiB object's final fsync waited ~0.3 s
/// after its last byte; with it, ~10 ms.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Objects of at least this many bytes are written past the page cache
/// (`Fs::create_uncached`) unless [`Store::set_direct_io`] turned it off: copying them into
/// it cost more CPU than anything else in a replicated PUT here, and a reader of a fresh
/// large object is rare. Smaller ones, read back soonest and cheapest from the cache, stay
/// there.
pub const UNCACHED_MIN: u64 = 4 << 20;

enum Sink {
    Disk {
        file: io::BufWriter<Box<dyn fs::WriteFile>>,
        tmp: PathBuf,
        fs: Arc<dyn Fs>,
        /// Bytes whose writeback has been started.
        written_back: u64,
    },
    Memory(Vec<u8>),
}

/// An object being written: bytes in, hashed and tree-encoded as they come.
pub struct ObjectWriter {
    store: Store,
    sink: Sink,
    encoder: TreeHasher,
    len: u64,
    /// A copy of the bytes while the object is small enough for the hot cache.
    small: Option<Vec<u8>>,
    /// Each write checks the quota (not for a copy already counted: `heal`).
    quota: bool,
}

impl ObjectWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes, refusing to pass the quota.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let len = self.len + bytes.len() as u64;
        if self.quota {
            self.store.check_room(len)?;
        }
        self.encoder.update(bytes);
        match &mut self.sink {
            Sink::Disk {
                file, written_back, ..
            } => {
                file.write_all(bytes)?;
                if len - *written_back >= WRITEBACK_STEP {
                    file.flush()?;
                    file.get_mut()
                        .start_writeback(*written_back, len - *written_back);
                    *written_back = len;
                }
            }
            Sink::Memory(v) => v.extend_from_slice(bytes),
        }
        self.len = len;
        if len > HotCache::ENTRY_MAX as u64 {
            self.small = None;
        } else if let Some(v) = &mut self.small {
            v.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Verifies the hash (against `expected`, if given), makes the object durable and
    /// indexes it. Blocking (fsync): call from a blocking task for large objects.
    pub fn finish(self, expected: Option<&Hash>) -> Result<Hash, StoreError> {
        self.finish_then(expected, || ())
    }

    /// [`finish`](Self::finish), calling `checked` once the bytes are known to hash to
    /// `expected` (or were hashed, without one), before they are made durable: a write
    /// whose replica pushes run beside it lets them end while its own fsync runs.
    pub fn finish_then(
        mut self,
        expected: Option<&Hash>,
        checked: impl FnOnce(),
    ) -> Result<Hash, StoreError> {
        let (hash, outboard) = std::mem::take(&mut self.encoder).finish();
        if let Some(e) = expected {
            if *e != hash {
                self.discard();
                return Err(StoreError::HashMismatch {
                    expected: hex::encode(e),
                    got: hex::encode(hash),
                });
            }
        }
        checked();
        let store = self.store.clone();
        match std::mem::replace(&mut self.sink, Sink::Memory(Vec::new())) {
            Sink::Disk { file, tmp, fs, .. } => {
                let Backend::Disk { dir, .. } = &store.inner.backend else {
                    return Err(StoreError::NotFound);
                };
                let ob_tmp = tmp.with_extension(OUTBOARD_EXT);
                let placed = place(
                    &store,
                    fs.as_ref(),
                    dir,
                    &hash,
                    file,
                    &tmp,
                    &ob_tmp,
                    &outboard,
                );
                if placed.is_err() {
                    // Nothing half-finished stays behind: both temporaries go.
                    let _ = fs.remove_file(&tmp);
                    let _ = fs.remove_file(&ob_tmp);
                }
                placed?;
            }
            Sink::Memory(data) => {
                if let Backend::Memory { objects } = &store.inner.backend {
                    let entry = (Bytes::from(data), Bytes::from(outboard));
                    put_in_place(&store, &hash, || {
                        lock(objects).insert(hash, entry);
                        Ok(())
                    })?;
                }
            }
        }
        let mut index = lock(&store.inner.index);
        let before = index.insert(hash, self.len).unwrap_or(0);
        let t = &store.inner.total;
        t.fetch_add(self.len, std::sync::atomic::Ordering::Relaxed);
        t.fetch_sub(before, std::sync::atomic::Ordering::Relaxed);
        store
            .inner
            .changed
            .store(true, std::sync::atomic::Ordering::Release);
        drop(index);
        if let Some(small) = self.small.take() {
            // Just hashed to `hash`: verified by construction.
            store.inner.hot.insert(hash, Bytes::from(small));
        }
        Ok(hash)
    }

    fn discard(&mut self) {
        if let Sink::Disk { tmp, fs, .. } = &self.sink {
            let _ = fs.remove_file(tmp);
        }
    }
}

/// Makes a finished object durable: fsync the data, write and fsync the outboard, rename
/// the outboard then the data into place (an object file is only indexed beside its
/// outboard), fsync the shard directory.
#[allow(clippy::too_many_arguments)]
fn place(
    store: &Store,
    fs: &dyn Fs,
    dir: &Path,
    hash: &Hash,
    file: io::BufWriter<Box<dyn fs::WriteFile>>,
    tmp: &Path,
    ob_tmp: &Path,
    outboard: &[u8],
) -> io::Result<()> {
    let mut file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    let shard_dir = ensure_shard(fs, dir, hash)?;
    // An object of one group has no parents: no outboard file at all.
    if !outboard.is_empty() {
        write_synced(fs, ob_tmp, outboard)?;
    }
    put_in_place(store, hash, || {
        if !outboard.is_empty() {
            fs.rename(ob_tmp, &outboard_path(dir, hash))?;
        }
        fs.rename(tmp, &data_path(dir, hash))
    })?;
    fs.sync_dir(&shard_dir)
}

/// Puts a new copy of `hash` in place (`install`: renames, or a map insert) and gives it
/// the next copy number, under the copy lock: a reader of the copy before it that finds
/// it rotten leaves this one be, and a drop of the copy before it finishes first
/// (`Store::corrupt`). Renames only: the fsyncs stay outside the lock.
fn put_in_place<T>(
    store: &Store,
    hash: &Hash,
    install: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    let mut copies = lock(&store.inner.copies);
    let done = install()?;
    let copy = store
        .inner
        .copies_made
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    copies.insert(*hash, copy);
    Ok(done)
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // An abandoned write leaves nothing behind (a finished one already renamed it).
        self.discard();
    }
}

/// Checks that a slice of `start..start+len` (`wire::tree`) verifies against `hash`,
/// returning the bytes; fails at the first chunk that does not.
pub fn decode_slice(encoded: &[u8], hash: &Hash, start: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    SliceDecoder::new(Cursor::new(encoded.to_vec()), hash, start, len).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
