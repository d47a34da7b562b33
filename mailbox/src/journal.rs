//! A shard's append-only journal: every change to the shard's durable state is one
//! checksummed record, and a send is acknowledged only once its record is fsynced.
//!
//! Record: `len: u32 LE` (body bytes, at most [`RECORD_MAX`]), `check: u64 LE` (the first 8
//! bytes of BLAKE3 of the body), then the body: a tag byte and the fields, integers little
//! endian ([`Record`]). Visibility (in flight or not) is not journaled: after a restart
//! every held message is visible again, which at-least-once delivery allows.
//!
//! Group commit: appends go to an in-memory buffer under the shard's lock and get a
//! sequence number (`lsn`); [`Journal::sync`] then makes everything up to that number
//! durable. One caller at a time writes the buffer and fsyncs, outside every lock; the
//! others wait for it, and one fsync covers every record appended before it started.
//! [`Journal::flush`] writes without the fsync, for acknowledgements: a process crash
//! keeps them (they are in the OS's cache), a power loss may undo them, and an undone ack
//! only delivers its message again.
//!
//! Replay ([`replay`]) reads records until the end of the file. A torn last record (the
//! header or body cut short, or a checksum failure in the final record, as a crash in the
//! middle of a write leaves) is counted and cut off, and the file truncated to the last
//! good record. Any other bad record is corruption and a [`StoreError::Corrupt`]: skipping
//! it could drop an acknowledged message or resurrect an acknowledged one.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use wire::NodeId;
use wire::mailbox::{IDEMPOTENCY_KEY_MAX, MsgId, PAYLOAD_MAX};

use crate::error::StoreError;

/// Record header: length and checksum.
pub const HEADER: usize = 12;
/// Largest record body: a full payload, the longest key and the fixed fields.
pub const RECORD_MAX: usize = PAYLOAD_MAX + IDEMPOTENCY_KEY_MAX + 128;

const TAG_PUT: u8 = 1;
const TAG_REMOVE: u8 = 2;
/// A `Put` with a principal: the `Put` fields, then the principal's 32 bytes. Journals
/// written before principals existed have none of these and read as before.
const TAG_PUT_FOR: u8 = 3;

/// One change to a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message was stored.
    Put {
        /// The shard's sequence number.
        seq: u64,
        /// Mailbox.
        mailbox: NodeId,
        /// Sender.
        sender: NodeId,
        /// Expiry, ms since the epoch.
        expires_ms: u64,
        /// End-to-end encrypted payload.
        e2e: bool,
        /// Idempotency key.
        key: Vec<u8>,
        /// Payload.
        payload: Vec<u8>,
        /// Whom behind the sender it was sent for (`None`: the sender itself).
        principal: Option<[u8; 32]>,
    },
    /// A message was acknowledged or dead-lettered; remember its id until `tombstone_ms`
    /// (0: not at all).
    Remove {
        /// The message.
        id: MsgId,
        /// Tombstone expiry, ms since the epoch.
        tombstone_ms: u64,
    },
}

/// The body of a `Put` record (header excluded) for a key and a payload of these lengths:
/// tag, seq, mailbox, sender, expiry, e2e, key length, key, payload length, payload, and
/// the principal if there is one.
pub fn put_body_len(key_len: usize, payload_len: usize, principal: bool) -> usize {
    1 + 8 + 32 + 32 + 8 + 1 + 1 + key_len + 4 + payload_len + if principal { 32 } else { 0 }
}

impl Record {
    /// Encoded size, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER
            + match self {
                Record::Put {
                    key,
                    payload,
                    principal,
                    ..
                } => put_body_len(key.len(), payload.len(), principal.is_some()),
                Record::Remove { .. } => 1 + 32 + 8,
            }
    }

    /// Appends the framed record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        match self {
            Record::Put {
                seq,
                mailbox,
                sender,
                expires_ms,
                e2e,
                key,
                payload,
                principal,
            } => {
                out.push(if principal.is_some() {
                    TAG_PUT_FOR
                } else {
                    TAG_PUT
                });
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&mailbox.0);
                out.extend_from_slice(&sender.0);
                out.extend_from_slice(&expires_ms.to_le_bytes());
                out.push(u8::from(*e2e));
                // Keys are at most 64 bytes and payloads 64 KiB (checked before a record
                // is built), so the narrowing casts below cannot truncate.
                out.push(key.len() as u8);
                out.extend_from_slice(key);
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(payload);
                if let Some(p) = principal {
                    out.extend_from_slice(p);
                }
            }
            Record::Remove { id, tombstone_ms } => {
                out.push(TAG_REMOVE);
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&tombstone_ms.to_le_bytes());
            }
        }
        let body_len = out.len() - start - HEADER;
        let check = checksum(&out[start + HEADER..]);
        out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
        out[start + 4..start + HEADER].copy_from_slice(&check.to_le_bytes());
    }

    /// Parses a body whose checksum matched.
    pub fn decode(body: &[u8]) -> Option<Record> {
        let mut r = Cursor(body);
        let rec = match r.u8()? {
            tag @ (TAG_PUT | TAG_PUT_FOR) => {
                let seq = r.u64()?;
                let mailbox = NodeId(r.array()?);
                let sender = NodeId(r.array()?);
                let expires_ms = r.u64()?;
                let e2e = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                let key_len = r.u8()? as usize;
                if key_len == 0 || key_len > IDEMPOTENCY_KEY_MAX {
                    return None;
                }
                let key = r.take(key_len)?.to_vec();
                let len = u32::from_le_bytes(r.array()?) as usize;
                if len > PAYLOAD_MAX {
                    return None;
                }
                let payload = r.take(len)?.to_vec();
                let principal = match tag {
                    TAG_PUT_FOR => Some(r.array()?),
                    _ => None,
                };
                Record::Put {
                    seq,
                    mailbox,
                    sender,
                    expires_ms,
                    e2e,
                    key,
                    payload,
                    principal,
                }
            }
            TAG_REMOVE => Record::Remove {
                id: MsgId(r.array()?),
                tombstone_ms: r.u64()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some(rec)
    }
}

fn checksum(body: &[u8]) -> u64 {
    let h = blake3::hash(body);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
}

/// What replaying a journal found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Good records applied.
    pub records: u64,
    /// Torn last records cut off (0 or 1).
    pub torn: u64,
    /// Bytes cut off with them.
    pub torn_bytes: u64,
    /// Length of the file after the cut.
    pub len: u64,
}

/// Why a record that checksums right is refused: not rot, which the checksum would have
/// caught, but a record this version cannot read (a newer version's journal, after a
/// rollback). Never salvaged: cutting there would drop good records.
pub const WHY_UNPARSEABLE: &str = "record does not parse (a newer version's journal?)";

/// Whether `rest` holds a whole record (header, body, checksum) at any offset: what a
/// garbled length that runs past the end leaves after it, and a torn write never does (it
/// is the last thing written). `rest` is under one record long, so this is cheap.
fn holds_a_record(rest: &[u8]) -> bool {
    (1..rest.len().saturating_sub(HEADER)).any(|at| {
        let h = &rest[at..];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let mut check = [0u8; 8];
        check.copy_from_slice(&h[4..HEADER]);
        len > 0
            && len <= h.len() - HEADER
            && checksum(&h[HEADER..HEADER + len]) == u64::from_le_bytes(check)
    })
}

/// Reads every record of the journal at `path` (a missing file is empty), handing each to
/// `apply`, and truncates a torn tail.
pub fn replay(path: &Path, mut apply: impl FnMut(Record)) -> Result<Replayed, StoreError> {
    let io = |op, source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replayed::default()),
        Err(e) => return Err(io("open", e)),
    };
    let file_len = file.metadata().map_err(|e| io("stat", e))?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut out = Replayed::default();
    let mut offset = 0u64;
    let mut body = Vec::new();
    let corrupt = |offset, why| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        why,
    };
    while offset < file_len {
        let left = file_len - offset;
        if left < HEADER as u64 {
            break; // torn header
        }
        let mut header = [0u8; HEADER];
        reader.read_exact(&mut header).map_err(|e| io("read", e))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let mut check = [0u8; 8];
        check.copy_from_slice(&header[4..]);
        // A torn write leaves its length whole (it is written first), so a length no
        // record can have is a garbled one, wherever it is: cut as a torn tail, it would
        // drop every record after it unseen.
        if len > RECORD_MAX as u64 {
            return Err(corrupt(offset, "record length over RECORD_MAX"));
        }
        let end = offset + HEADER as u64 + len;
        if end > file_len {
            // A torn body, unless whole records follow: then the length is garbled, and
            // cutting here would drop them unseen.
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).map_err(|e| io("read", e))?;
            if holds_a_record(&rest) {
                return Err(corrupt(
                    offset,
                    "a length that runs past the end, with records after it",
                ));
            }
            break;
        }
        body.resize(len as usize, 0);
        reader.read_exact(&mut body).map_err(|e| io("read", e))?;
        if checksum(&body) != u64::from_le_bytes(check) {
            if end == file_len {
                break; // the last record, half written
            }
            return Err(corrupt(offset, "checksum mismatch before the last record"));
        }
        let Some(rec) = Record::decode(&body) else {
            return Err(corrupt(offset, WHY_UNPARSEABLE));
        };
        apply(rec);
        out.records += 1;
        offset = end;
    }
    if offset < file_len {
        out.torn = 1;
        out.torn_bytes = file_len - offset;
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io("open", e))?;
        f.set_len(offset).map_err(|e| io("truncate", e))?;
        f.sync_all().map_err(|e| io("fsync", e))?;
    }
    out.len = offset;
    Ok(out)
}

/// Keeps the good records of a journal found corrupt at `offset`: copies what is cut (the
/// bad record and all after it) aside, to a new file named from `aside` (a suffix added if
/// that name is taken), then cuts the journal at `offset`. Returns the bytes cut and where
/// they were kept; `None` if the copy could not be made (a full disk): the journal is cut
/// anyway, so the node starts, and the cut records' copies at other holders remain.
pub fn salvage(
    path: &Path,
    offset: u64,
    aside: &Path,
) -> Result<(u64, Option<PathBuf>), StoreError> {
    let io = |op, p: &Path, source| StoreError::Io {
        op,
        path: p.to_path_buf(),
        source,
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io("open", path, e))?;
    let len = f.metadata().map_err(|e| io("stat", path, e))?.len();
    let kept = keep_tail(&f, offset, aside);
    f.set_len(offset).map_err(|e| io("truncate", path, e))?;
    f.sync_all().map_err(|e| io("fsync", path, e))?;
    Ok((len.saturating_sub(offset), kept))
}

/// Writes `file`'s bytes from `offset` on to a new file beside it: a temporary name,
/// fsynced, renamed to the first free name from `aside`, the directory fsynced. A
/// half-made copy is removed.
fn keep_tail(file: &File, offset: u64, aside: &Path) -> Option<PathBuf> {
    use std::io::{Seek, SeekFrom};
    let named = |suffix: &str| {
        let mut name = aside.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let tmp = named(".tmp");
    let copied = (|| {
        let mut from = file;
        from.seek(SeekFrom::Start(offset))?;
        let mut to = File::create(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.sync_all()
    })();
    let name = (0..100)
        .map(|i| match i {
            0 => aside.to_path_buf(),
            i => named(&format!(".{i}")),
        })
        .find(|p| !p.exists());
    let kept = match (copied, name) {
        (Ok(()), Some(name)) => std::fs::rename(&tmp, &name).ok().map(|()| name),
        _ => None,
    };
    if kept.is_none() {
        let _ = std::fs::remove_file(&tmp);
    }
    let dir = aside.parent()?;
    File::open(dir).and_then(|d| d.sync_all()).ok()?;
    kept
}

/// The open journal of one shard, with group commit.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
    synced: Condvar,
}

#[derive(Debug)]
struct Inner {
    file: Arc<File>,
    /// Records appended and not yet written.
    buf: Vec<u8>,
    /// Number of the last record appended.
    appended: u64,
    /// Number of the last record durable.
    durable: u64,
    /// Number of the last record written to the file (durable or in the OS's cache).
    written: u64,
    /// A caller is writing (and perhaps fsyncing) right now.
    syncing: bool,
    failed: bool,
    /// While failed: when a rewrite may be tried again (ms, the store's clock), and the
    /// wait after the next failed try.
    retry_at_ms: u64,
    backoff_ms: u64,
    /// Bytes in the file plus the buffer.
    len: u64,
}

/// The first wait after a failed recovery, doubled after each, up to [`RETRY_MAX_MS`].
const RETRY_FIRST_MS: u64 = 5_000;
/// The longest wait between tries to recover a failed journal.
const RETRY_MAX_MS: u64 = 300_000;

impl Journal {
    /// Opens (creating) the journal at `path` for appending; `len` is its length after
    /// replay.
    pub fn open(path: &Path, len: u64) -> Result<Journal, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| StoreError::Io {
                op: "open",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Journal {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file: Arc::new(file),
                buf: Vec::with_capacity(64 * 1024),
                appended: 0,
                durable: 0,
                written: 0,
                syncing: false,
                failed: false,
                retry_at_ms: 0,
                backoff_ms: 0,
                len,
            }),
            synced: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters and a byte buffer: nothing
        // half-updated that later callers could misread, so a poisoned lock is taken over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record to the buffer; returns its number for [`Journal::sync`]. Called
    /// under the shard's lock, so records are in the order of the changes.
    pub fn append(&self, rec: &Record) -> u64 {
        let mut g = self.lock();
        g.appended += 1;
        if g.failed {
            // Nothing reaches the file until a rewrite from the shard's state, which holds
            // this change too: buffering it would only grow while the disk stays full.
            return g.appended;
        }
        let before = g.buf.len();
        rec.encode(&mut g.buf);
        g.len += (g.buf.len() - before) as u64;
        g.appended
    }

    /// The number of the last record appended (to sync a duplicate's answer).
    pub fn appended(&self) -> u64 {
        self.lock().appended
    }

    /// Bytes in the journal, buffered ones included.
    pub fn len(&self) -> u64 {
        self.lock().len
    }

    /// Whether the journal holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns once record `lsn` and all before it are durable.
    pub fn sync(&self, lsn: u64) -> Result<(), StoreError> {
        self.persist(lsn, true)
    }

    /// Returns once record `lsn` and all before it are written to the file, without an
    /// fsync: they survive the process (a crash, a SIGKILL), not the machine losing power.
    /// For changes whose loss only repeats work, such as an acknowledgement (the message
    /// is delivered again, as at-least-once allows); the next [`Journal::sync`] makes
    /// them durable too.
    pub fn flush(&self, lsn: u64) -> Result<(), StoreError> {
        self.persist(lsn, false)
    }

    fn persist(&self, lsn: u64, fsync: bool) -> Result<(), StoreError> {
        let mut g = self.lock();
        loop {
            if g.failed {
                return Err(StoreError::Failed(self.path.clone()));
            }
            if (if fsync { g.durable } else { g.written }) >= lsn {
                return Ok(());
            }
            if g.syncing {
                g = self.synced.wait(g).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Become the writer for everything appended so far.
            g.syncing = true;
            let buf = std::mem::take(&mut g.buf);
            let upto = g.appended;
            let file = Arc::clone(&g.file);
            drop(g);
            let res = (&*file)
                .write_all(&buf)
                .and_then(|()| if fsync { file.sync_data() } else { Ok(()) });
            g = self.lock();
            g.syncing = false;
            // Give the allocation back for the next group.
            if g.buf.is_empty() {
                let mut buf = buf;
                buf.clear();
                g.buf = buf;
            }
            match res {
                Ok(()) => {
                    g.written = upto;
                    if fsync {
                        g.durable = upto;
                    }
                }
                Err(source) => {
                    g.failed = true;
                    // What was appended meanwhile waits for the rewrite too (see `append`).
                    let unwritten = g.buf.len() as u64;
                    g.len = g.len.saturating_sub(unwritten);
                    g.buf.clear();
                    self.synced.notify_all();
                    return Err(StoreError::Io {
                        op: "append",
                        path: self.path.clone(),
                        source,
                    });
                }
            }
            self.synced.notify_all();
        }
    }

    /// Replaces the journal by `records` (the shard's live state), durably: written to a
    /// temporary file, fsynced, renamed over the journal, the directory fsynced. Called
    /// under the shard's lock, so nothing is appended meanwhile; records buffered and not
    /// yet written are covered by the new file, and their waiters released.
    pub fn rewrite(&self, records: impl Iterator<Item = Record>) -> Result<(), StoreError> {
        let mut g = self.lock();
        while g.syncing {
            g = self.synced.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        // A failed journal is rewritten too: that is how it recovers. Its last write may
        // have left a torn record in the file, but the shard's state in memory holds every
        // change, the failed ones included, and the new file is written from that state.
        let tmp = self.path.with_extension("compact");
        let io = |op, path: &Path, source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let written = (|| {
            let mut out = Vec::with_capacity(1 << 20);
            let mut len = 0u64;
            let mut f = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
            for rec in records {
                rec.encode(&mut out);
                if out.len() >= 1 << 20 {
                    f.write_all(&out).map_err(|e| io("write", &tmp, e))?;
                    len += out.len() as u64;
                    out.clear();
                }
            }
            f.write_all(&out).map_err(|e| io("write", &tmp, e))?;
            len += out.len() as u64;
            f.sync_all().map_err(|e| io("fsync", &tmp, e))?;
            std::fs::rename(&tmp, &self.path).map_err(|e| io("rename", &self.path, e))?;
            Ok(len)
        })();
        let len = match written {
            Ok(len) => len,
            Err(e) => {
                // On a full disk a half-written copy would hold the space the next try needs.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // The new file is in place: from here on every append must go to it, whatever
        // fails next, or it would be written to the unlinked old file and lost.
        let file = match OpenOptions::new().append(true).open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                g.failed = true;
                self.synced.notify_all();
                return Err(io("open", &self.path, e));
            }
        };
        g.file = Arc::new(file);
        g.buf.clear();
        g.written = g.appended;
        g.len = len;
        let dir_synced = match self.path.parent() {
            Some(dir) => File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("fsync", dir, e)),
            None => Ok(()),
        };
        // Until the rename is durable the old file may be what a power loss leaves: the
        // journal stays failed, and the next maintenance rewrites it again.
        g.failed = dir_synced.is_err();
        if !g.failed {
            g.durable = g.appended;
            g.backoff_ms = 0;
            g.retry_at_ms = 0;
        }
        self.synced.notify_all();
        dir_synced
    }

    /// Whether a write of this journal failed and no rewrite has recovered it since: it
    /// takes no appends to the file until then.
    pub fn failed(&self) -> bool {
        self.lock().failed
    }

    /// Whether a failed journal's recovery may be tried at `now_ms`: at once after the
    /// failure, then after each failed try a wait that doubles (5 s to 5 min), so a disk
    /// still full or failing is not rewritten every few seconds.
    pub fn recovery_due(&self, now_ms: u64) -> bool {
        let g = self.lock();
        g.failed && now_ms >= g.retry_at_ms
    }

    /// A try at recovering the journal failed (or was not made: no room) at `now_ms`.
    pub fn recovery_put_off(&self, now_ms: u64) {
        let mut g = self.lock();
        g.backoff_ms = (g.backoff_ms * 2).clamp(RETRY_FIRST_MS, RETRY_MAX_MS);
        g.retry_at_ms = now_ms.saturating_add(g.backoff_ms);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn recs_old() -> Record {
        Record::Put {
            seq: 1,
            mailbox: NodeId([1; 32]),
            sender: NodeId([2; 32]),
            expires_ms: 5,
            e2e: false,
            key: b"k".to_vec(),
            payload: vec![],
            principal: None,
        }
    }

    #[test]
    fn records_round_trip_and_bad_bodies_do_not_parse() {
        let recs = [
            Record::Put {
                seq: 9,
                mailbox: NodeId([1; 32]),
                sender: NodeId([2; 32]),
                expires_ms: 1234,
                e2e: true,
                key: b"k".to_vec(),
                payload: vec![5; 1000],
                principal: None,
            },
            Record::Put {
                seq: 10,
                mailbox: NodeId([1; 32]),
                sender: NodeId([2; 32]),
                expires_ms: 1234,
                e2e: false,
                key: b"k2".to_vec(),
                payload: vec![6; 10],
                principal: Some([4; 32]),
            },
            Record::Remove {
                id: MsgId([3; 32]),
                tombstone_ms: 77,
            },
        ];
        for rec in recs {
            let mut out = Vec::new();
            rec.encode(&mut out);
            assert_eq!(out.len(), rec.encoded_len());
            assert_eq!(Record::decode(&out[HEADER..]), Some(rec));
            assert_eq!(Record::decode(&out[HEADER..out.len() - 1]), None);
            let mut longer = out[HEADER..].to_vec();
            longer.push(0);
            assert_eq!(Record::decode(&longer), None);
        }
        // A principal-less Put is the record journals held before principals existed.
        let mut out = Vec::new();
        recs_old().encode(&mut out);
        assert_eq!(out[HEADER], TAG_PUT);
        assert_eq!(Record::decode(&[9]), None);
        assert_eq!(Record::decode(&[]), None);
    }

    fn put(seq: u64) -> Record {
        Record::Put {
            seq,
            mailbox: NodeId([1; 32]),
            sender: NodeId([2; 32]),
            expires_ms: 5,
            e2e: false,
            key: seq.to_le_bytes().to_vec(),
            payload: vec![7; 100],
            principal: None,
        }
    }

    /// A journal whose file is `/dev/full` fails its first write with ENOSPC, as on a full
    /// disk; the rewrite puts a real file in its place, as freed space would let it.
    #[test]
    fn a_failed_journal_refuses_writes_until_a_rewrite_recovers_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-000.journal");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let j = Journal::open(&path, 0).unwrap();
        let first = j.append(&put(1));
        let err = j.sync(first).unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.raw_os_error() == Some(28)),
            "ENOSPC: {err}"
        );
        assert!(j.failed());
        let second = j.append(&put(2));
        assert!(matches!(j.flush(second), Err(StoreError::Failed(_))));
        assert!(matches!(j.sync(second), Err(StoreError::Failed(_))));
        // What is appended while failed waits for the rewrite, not in a growing buffer.
        let len = j.len();
        for seq in 10..1_000 {
            j.append(&put(seq));
        }
        assert_eq!(j.len(), len, "nothing buffered while failed");
        // Recovery is due at once, then, after each try that fails, a doubling wait.
        assert!(j.recovery_due(0));
        j.recovery_put_off(1_000);
        assert!(!j.recovery_due(5_999));
        assert!(j.recovery_due(6_000));
        j.recovery_put_off(6_000);
        assert!(!j.recovery_due(15_999), "10 s after the second");
        assert!(j.recovery_due(16_000));

        // The state in memory holds both changes; the rewrite writes them, and the journal
        // takes writes again.
        j.rewrite([put(1), put(2)].into_iter()).unwrap();
        assert!(!j.failed());
        assert!(!path.with_extension("compact").exists());
        let third = j.append(&put(3));
        j.sync(third).unwrap();
        let mut seen = Vec::new();
        replay(&path, |rec| {
            if let Record::Put { seq, .. } = rec {
                seen.push(seq);
            }
        })
        .unwrap();
        assert_eq!(seen, vec![1, 2, 3], "nothing lost, nothing twice");
    }

    /// A rewrite that fails (the disk still full) leaves no half-written copy behind to
    /// hold the space, and the journal failed.
    #[test]
    fn a_failed_rewrite_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-000.journal");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        std::os::unix::fs::symlink("/dev/full", path.with_extension("compact")).unwrap();
        let j = Journal::open(&path, 0).unwrap();
        let first = j.append(&put(1));
        assert!(j.sync(first).is_err());
        // Writing the copy goes to /dev/full too: ENOSPC again.
        let many = (0..3).map(put);
        assert!(j.rewrite(many).is_err());
        assert!(j.failed());
        assert!(
            std::fs::symlink_metadata(path.with_extension("compact")).is_err(),
            "the failed copy is removed"
        );
    }
}
