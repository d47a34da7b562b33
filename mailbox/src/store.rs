//! [`MailboxStore`]: the mailboxes of one node, split into shards by mailbox id so that
//! unrelated mailboxes never wait for each other. Each shard has its own lock and, unless
//! in amnesia mode, its own journal (`shard-NNN.journal` in the store's directory).
//!
//! Every call takes `now`, a `Duration` since the Unix epoch, read by the caller: the store
//! never reads the clock. A send returns only once its record is durable (group commit: the
//! shard's lock is released before the fsync, and one fsync covers every send appended
//! before it). Calls are blocking and short; the node runs them on its blocking pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use wire::NodeId;
use wire::mailbox::{Delivered, Envelope, IDEMPOTENCY_KEY_MAX, MsgId, PAYLOAD_MAX};

use crate::config::{Config, Principal, SHARDS_MAX};
use crate::error::{QuotaScope, SendError, StoreError};
use crate::journal::{self, Journal, Record};
use crate::shard::{DeadLetters, FetchLimits, Insert, ShardState};

/// The answer to a stored send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The message's id.
    pub id: MsgId,
    /// It was already held or already acknowledged: nothing new stored.
    pub duplicate: bool,
}

/// The answer to a fetch, ready for `wire::mailbox::MailboxResponse::Batch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The messages, oldest first.
    pub messages: Vec<Delivered>,
    /// The highest sequence number returned (or the request's `after`).
    pub next_cursor: u64,
    /// Visible messages were left out.
    pub more: bool,
    /// Held messages after the request's `after` and below `next_cursor` that were left
    /// out, in flight to the owner or behind one of their share that is (a repair whose
    /// cursor moves to `next_cursor` pushes them once they are visible, [`MailboxStore::visible`]).
    pub passed_over: Vec<u64>,
}

/// What opening the store found in its journals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Records replayed.
    pub records: u64,
    /// Torn last records cut off (at most one per shard).
    pub torn_records: u64,
    /// Messages held after replay.
    pub messages: usize,
    /// Journals found corrupt and cut before their bad record (only with
    /// [`Config::salvage`]).
    pub salvaged: Vec<Salvaged>,
}

/// One journal cut before a corrupt record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// The journal.
    pub journal: PathBuf,
    /// Where the bytes cut off were kept; `None` if they could not be (a full disk).
    pub copy: Option<PathBuf>,
    /// Where the bad record starts: the journal keeps what came before.
    pub offset: u64,
    /// Bytes cut off: the bad record and every one after it.
    pub dropped_bytes: u64,
    /// What was wrong.
    pub why: &'static str,
}

/// What [`MailboxStore::maintain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Messages dropped as expired.
    pub expired: u64,
    /// Shards whose journal was compacted.
    pub compacted: usize,
    /// Shards whose failed journal was rewritten and takes writes again.
    pub recovered: usize,
}

/// Figures for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages held (`mailbox_queue_depth`).
    pub messages: usize,
    /// Messages fetched and not yet acknowledged nor visible again (`mailbox_inflight`).
    pub inflight: usize,
    /// Mailboxes with at least one message.
    pub mailboxes: usize,
    /// Payload bytes held.
    pub bytes: u64,
    /// Acknowledged ids remembered.
    pub tombstones: usize,
    /// Messages dropped without an ack, by reason (`mailbox_dlq_total{reason}`).
    pub dead: DeadLetters,
    /// Journal bytes on disk and buffered.
    pub journal_bytes: u64,
    /// Shards whose journal write failed and is not yet rewritten: every change to them is
    /// made in memory and answered as failed (not durable) until maintenance recovers
    /// them (`mailbox_journals_failed`).
    pub journals_failed: usize,
}

struct Shard {
    state: Mutex<ShardState>,
    journal: Option<Journal>,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, ShardState> {
        // The state is updated in steps that keep its maps consistent at every `?`-free
        // point; a panic (a bug) poisons the lock, and the store carries on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The mailboxes a node holds. `Sync`: share it behind an `Arc`.
pub struct MailboxStore {
    cfg: Config,
    shards: Box<[Shard]>,
    /// Payload bytes held in all shards (the store quota).
    bytes: AtomicU64,
}

impl std::fmt::Debug for MailboxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxStore")
            .field("dir", &self.cfg.dir)
            .field("shards", &self.shards.len())
            .finish()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn journal_path(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("shard-{shard:03}.journal"))
}

impl MailboxStore {
    /// Opens the store: in amnesia mode empty, else replaying every shard's journal (a torn
    /// last record is cut off and counted; corruption before it is an error, or with
    /// [`Config::salvage`] cut before the bad record) and dropping
    /// what expired by `now`.
    pub fn open(cfg: Config, now: Duration) -> Result<(MailboxStore, OpenReport), StoreError> {
        if cfg.shards == 0 || cfg.shards > SHARDS_MAX {
            return Err(StoreError::BadConfig(format!(
                "shards = {}, must be 1..={SHARDS_MAX}",
                cfg.shards
            )));
        }
        if let Some(dir) = &cfg.dir {
            check_layout(dir, cfg.shards)?;
        }
        let mut report = OpenReport::default();
        let mut shards = Vec::with_capacity(cfg.shards);
        let mut bytes = 0;
        for i in 0..cfg.shards {
            let mut state = ShardState::default();
            let journal = match &cfg.dir {
                None => None,
                Some(dir) => {
                    let path = journal_path(dir, i);
                    let mut applied = 0;
                    let replayed = journal::replay(&path, |rec| {
                        applied += 1;
                        match rec {
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
                                let id = MsgId::derive(&mailbox, &sender, &key);
                                let env = Envelope {
                                    mailbox,
                                    sender,
                                    idempotency_key: key,
                                    ttl_ms: 0,
                                    e2e,
                                    payload,
                                };
                                let principal = principal.map(Principal::unlimited);
                                state.insert(&cfg, env, id, expires_ms, principal, Some(seq));
                            }
                            Record::Remove { id, tombstone_ms } => {
                                state.replay_remove(&cfg, id, tombstone_ms);
                            }
                        }
                    });
                    // Replay applied every record before a corrupt one; with salvage on,
                    // those are what the shard keeps.
                    let replayed = match replayed {
                        // A record that checksums right but does not parse is not rot: it
                        // is refused, never cut (see `journal::WHY_UNPARSEABLE`).
                        Err(StoreError::Corrupt { offset, why, .. })
                            if cfg.salvage && why != journal::WHY_UNPARSEABLE =>
                        {
                            let aside = path.with_extension(format!("journal.corrupt-{}", ms(now)));
                            let (dropped_bytes, copy) = journal::salvage(&path, offset, &aside)?;
                            report.salvaged.push(Salvaged {
                                journal: path.clone(),
                                copy,
                                offset,
                                dropped_bytes,
                                why,
                            });
                            journal::Replayed {
                                records: applied,
                                len: offset,
                                ..journal::Replayed::default()
                            }
                        }
                        other => other?,
                    };
                    report.records += replayed.records;
                    report.torn_records += replayed.torn;
                    Some(Journal::open(&path, replayed.len)?)
                }
            };
            state.expire(ms(now));
            bytes += state.payload_bytes();
            report.messages += state.figures(0).0;
            shards.push(Shard {
                state: Mutex::new(state),
                journal,
            });
        }
        let store = MailboxStore {
            cfg,
            shards: shards.into_boxed_slice(),
            bytes: AtomicU64::new(bytes),
        };
        Ok((store, report))
    }

    /// The store's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn shard_index(&self, mailbox: &NodeId) -> usize {
        // Node ids are public keys, uniform already: their first bytes pick the shard.
        let mut b = [0u8; 8];
        b.copy_from_slice(&mailbox.0[..8]);
        (u64::from_le_bytes(b) % self.shards.len() as u64) as usize
    }

    fn shard(&self, mailbox: &NodeId) -> &Shard {
        &self.shards[self.shard_index(mailbox)]
    }

    /// Stores `msg`, received at `now`; returns once it is durable. `msg.ttl_ms` of 0 means
    /// the default TTL; longer than the maximum is cut to it. A message already held, or
    /// acknowledged and still remembered, is answered `duplicate` (after making sure the
    /// earlier copy is durable) and not stored again. Also the way to take a REPLICATE:
    /// one call per message, `ttl_ms` being the time left.
    pub fn send(&self, now: Duration, msg: Envelope) -> Result<Sent, SendError> {
        self.send_for(now, msg, None)
    }

    /// As [`send`](Self::send), for `principal` behind the sender if any: the message
    /// counts against the principal's share of the mailbox ([`Principal`]).
    pub fn send_for(
        &self,
        now: Duration,
        msg: Envelope,
        principal: Option<Principal>,
    ) -> Result<Sent, SendError> {
        let shard = self.shard(&msg.mailbox);
        let (res, lsn) = {
            let mut state = shard.lock();
            self.insert_locked(now, &mut state, shard, msg, principal)
        };
        let sent = res?;
        if let Some(j) = &shard.journal {
            j.sync(lsn)?;
        }
        Ok(sent)
    }

    /// Stores many messages at once (a REPLICATE, or sends the caller gathered): each
    /// shard is locked once and fsynced once for all of its messages. One result per
    /// message, in order; all the stored ones are durable when it returns (if a journal
    /// fails, the messages of that shard get its error).
    pub fn send_batch(&self, now: Duration, msgs: Vec<Envelope>) -> Vec<Result<Sent, SendError>> {
        self.send_batch_for(now, msgs.into_iter().map(|m| (m, None)).collect())
    }

    /// As [`send_batch`](Self::send_batch), each message for its principal if any.
    pub fn send_batch_for(
        &self,
        now: Duration,
        msgs: Vec<(Envelope, Option<Principal>)>,
    ) -> Vec<Result<Sent, SendError>> {
        type Item = (usize, (Envelope, Option<Principal>));
        let mut by_shard: Vec<Vec<Item>> = vec![Vec::new(); self.shards.len()];
        let n = msgs.len();
        for (i, m) in msgs.into_iter().enumerate() {
            let s = self.shard_index(&m.0.mailbox);
            by_shard[s].push((i, m));
        }
        let mut out: Vec<Option<Result<Sent, SendError>>> = (0..n).map(|_| None).collect();
        for (s, group) in by_shard.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let shard = &self.shards[s];
            let mut lsn = 0;
            let mut done = Vec::with_capacity(group.len());
            {
                let mut state = shard.lock();
                for (i, (m, p)) in group {
                    let (res, l) = self.insert_locked(now, &mut state, shard, m, p);
                    lsn = lsn.max(l);
                    done.push((i, res));
                }
            }
            let synced = match &shard.journal {
                Some(j) => j.sync(lsn),
                None => Ok(()),
            };
            for (i, res) in done {
                out[i] = Some(match (&synced, res) {
                    (Err(e), Ok(_)) => Err(SendError::Store(e.duplicate())),
                    (_, res) => res,
                });
            }
        }
        // Every index was filled by its shard's group; the fallback is never taken.
        out.into_iter()
            .map(|r| r.unwrap_or(Err(SendError::BadKey(0))))
            .collect()
    }

    /// Validates and stores one message under its shard's lock; returns the outcome and
    /// the journal number to sync before answering (for a duplicate: everything appended
    /// so far, as its first copy may still be buffered).
    fn insert_locked(
        &self,
        now: Duration,
        state: &mut ShardState,
        shard: &Shard,
        msg: Envelope,
        principal: Option<Principal>,
    ) -> (Result<Sent, SendError>, u64) {
        if msg.payload.len() > PAYLOAD_MAX {
            let e = SendError::TooLarge {
                len: msg.payload.len(),
                max: PAYLOAD_MAX,
            };
            return (Err(e), 0);
        }
        let key_len = msg.idempotency_key.len();
        if key_len == 0 || key_len > IDEMPOTENCY_KEY_MAX {
            return (Err(SendError::BadKey(key_len)), 0);
        }
        let id = msg.id();
        let ttl = match msg.ttl_ms {
            0 => self.cfg.ttl_default,
            t => Duration::from_millis(t).min(self.cfg.ttl_max),
        };
        let expires_ms = ms(now).saturating_add(ms(ttl));
        let len = msg.payload.len() as u64;
        let appended = || shard.journal.as_ref().map_or(0, |j| j.appended());
        let duplicate = Sent {
            id,
            duplicate: true,
        };
        if state.holds(&msg.mailbox, &id) {
            return (Ok(duplicate), appended());
        }
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > self.cfg.quotas.store_bytes_max {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return (Err(self.over(QuotaScope::Store)), 0);
        }
        match state.insert(&self.cfg, msg, id, expires_ms, principal, None) {
            Insert::Stored(rec) => {
                let lsn = shard.journal.as_ref().map_or(0, |j| j.append(&rec));
                (
                    Ok(Sent {
                        id,
                        duplicate: false,
                    }),
                    lsn,
                )
            }
            Insert::Duplicate => {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                (Ok(duplicate), appended())
            }
            Insert::Over(scope) => {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                (Err(self.over(scope)), 0)
            }
        }
    }

    fn over(&self, scope: QuotaScope) -> SendError {
        SendError::Quota {
            scope,
            retry_after: self.cfg.quota_retry_after,
        }
    }

    /// The principals `ids` of `mailbox` were stored for (`None`: not held, or none), in
    /// order: what a repair push must carry so the receiver counts each copy as we do.
    pub fn principals(&self, mailbox: &NodeId, ids: &[MsgId]) -> Vec<Option<[u8; 32]>> {
        let state = self.shard(mailbox).lock();
        ids.iter().map(|id| state.principal(id)).collect()
    }

    /// What `sender` holds in `mailbox` for `principal` (`None`: its own share), as
    /// (messages, payload bytes).
    pub fn usage(
        &self,
        mailbox: &NodeId,
        sender: &NodeId,
        principal: Option<[u8; 32]>,
    ) -> (usize, u64) {
        self.shard(mailbox).lock().usage(mailbox, sender, principal)
    }

    /// The oldest visible messages of `mailbox` (see [`FetchLimits`]), hidden for the
    /// visibility timeout. The caller has checked that the asker owns the mailbox.
    pub fn fetch(
        &self,
        now: Duration,
        mailbox: &NodeId,
        limits: FetchLimits,
    ) -> Result<Batch, StoreError> {
        let shard = self.shard(mailbox);
        let (messages, more, passed_over, lsn) = {
            let mut state = shard.lock();
            let f = state.fetch(&self.cfg, ms(now), mailbox, limits);
            let mut lsn = None;
            for (len, rec) in f.dead {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                lsn = shard.journal.as_ref().map(|j| j.append(&rec));
            }
            (f.messages, f.more, f.passed, lsn)
        };
        if let (Some(j), Some(lsn)) = (&shard.journal, lsn) {
            j.sync(lsn)?;
        }
        let next_cursor = messages.last().map_or(limits.after, |d| d.seq);
        Ok(Batch {
            messages,
            next_cursor,
            more,
            passed_over,
        })
    }

    /// Of the messages of `mailbox` numbered `seqs` (sequence numbers a fetch passed
    /// over), those visible now, oldest first, without touching their visibility; and the
    /// numbers of those still in flight (or behind one of their share that is). Messages
    /// acknowledged or expired since are in neither list.
    pub fn visible(
        &self,
        now: Duration,
        mailbox: &NodeId,
        seqs: &[u64],
    ) -> (Vec<Delivered>, Vec<u64>) {
        self.shard(mailbox).lock().visible(ms(now), mailbox, seqs)
    }

    /// Deletes the messages of `mailbox` named by `ids` (ids of other mailboxes, and ids not
    /// held, are ignored); returns how many were deleted, once the deletion is written to
    /// the journal. It is not fsynced ([`crate::journal::Journal::flush`]): a crash of the
    /// process keeps it, a power loss may bring the messages back, to be delivered again
    /// as at-least-once allows; the fsync an ack would wait for is the receive loop's
    /// largest cost. An ack deletes whether or not the message is still in flight: the
    /// owner has it.
    /// `now` keeps every call's shape the same (time first); the ack itself does not
    /// depend on it.
    pub fn ack(&self, now: Duration, mailbox: &NodeId, ids: &[MsgId]) -> Result<u32, StoreError> {
        let _ = now;
        let shard = self.shard(mailbox);
        let mut deleted = 0u32;
        let lsn = {
            let mut state = shard.lock();
            let mut lsn = None;
            for id in ids {
                if !state.holds(mailbox, id) {
                    // Acknowledged before: its removal may still be unwritten (a journal
                    // that failed under the first ack), so the answer waits for it too.
                    if state.tombstoned(id, 0) {
                        lsn = lsn.or_else(|| shard.journal.as_ref().map(Journal::appended));
                    }
                    continue;
                }
                if let Some((len, rec)) = state.remove(&self.cfg, id) {
                    self.bytes.fetch_sub(len, Ordering::Relaxed);
                    deleted += 1;
                    lsn = shard.journal.as_ref().map(|j| j.append(&rec));
                }
            }
            lsn
        };
        if let (Some(j), Some(lsn)) = (&shard.journal, lsn) {
            j.flush(lsn)?;
        }
        Ok(deleted)
    }

    /// Which of `ids` this store removed from `mailbox` (acknowledged or dead-lettered) and
    /// still remembers: the owner's node uses it to recognise a copy a holder that missed
    /// the ack delivers again, and to send that holder the ack it missed.
    pub fn settled(&self, now: Duration, mailbox: &NodeId, ids: &[MsgId]) -> Vec<MsgId> {
        let state = self.shard(mailbox).lock();
        ids.iter()
            .filter(|id| !state.holds(mailbox, id) && state.tombstoned(id, ms(now)))
            .copied()
            .collect()
    }

    /// The mailboxes holding at least one message, at most `max` (the node's repair walks
    /// them to push copies to the holders of each).
    pub fn mailboxes(&self, max: usize) -> Vec<NodeId> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            if out.len() >= max {
                break;
            }
            out.extend(shard.lock().mailbox_ids(max - out.len()));
        }
        out
    }

    /// Messages held in `mailbox`.
    pub fn queue_depth(&self, mailbox: &NodeId) -> usize {
        self.shard(mailbox).lock().depth(mailbox)
    }

    /// Periodic work, for the node to call every few seconds: drops expired messages and
    /// tombstones, compacts journals grown past `compact_min_bytes` and twice their live
    /// records, and rewrites every journal whose write failed (a full disk, an I/O error)
    /// from the shard's state, so the shard takes writes again once the disk does. One
    /// shard at a time; each is blocked only while its own file is rewritten. A shard that
    /// cannot be rewritten does not stop the others; the first such error is returned.
    pub fn maintain(&self, now: Duration) -> Result<Maintenance, StoreError> {
        let mut out = Maintenance::default();
        let mut first_error = None;
        for shard in self.shards.iter() {
            let mut state = shard.lock();
            let before = state.dead.expired;
            let freed = state.expire(ms(now));
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            out.expired += state.dead.expired - before;
            if let Some(j) = &shard.journal {
                let failed = j.failed();
                let len = j.len();
                let now_ms = ms(now);
                let due = if failed {
                    // A try on a disk without room would only fill what the other shards and
                    // the objects need, for a moment, and fail.
                    j.recovery_due(now_ms) && {
                        let room = self.room_for(state.record_bytes());
                        if !room {
                            j.recovery_put_off(now_ms);
                        }
                        room
                    }
                } else {
                    len > self.cfg.compact_min_bytes && len > 2 * state.record_bytes()
                };
                if due {
                    match j.rewrite(state.snapshot().into_iter()) {
                        Ok(()) if failed => out.recovered += 1,
                        Ok(()) => out.compacted += 1,
                        Err(e) => {
                            if failed {
                                j.recovery_put_off(now_ms);
                            }
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        first_error.map_or(Ok(out), Err)
    }

    /// Whether the store's file system has room for `bytes` more and a margin (1 MiB);
    /// `true` where it cannot tell.
    fn room_for(&self, bytes: u64) -> bool {
        let Some(dir) = &self.cfg.dir else {
            return true;
        };
        match nix::sys::statvfs::statvfs(dir) {
            Ok(v) => {
                let free = v.blocks_available().saturating_mul(v.fragment_size());
                free >= bytes.saturating_add(1 << 20)
            }
            Err(_) => true,
        }
    }

    /// Compacts every shard's journal now, whatever its size (tests, shutdown).
    pub fn compact(&self, now: Duration) -> Result<(), StoreError> {
        for shard in self.shards.iter() {
            let mut state = shard.lock();
            let freed = state.expire(ms(now));
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            if let Some(j) = &shard.journal {
                j.rewrite(state.snapshot().into_iter())?;
            }
        }
        Ok(())
    }

    /// Figures for metrics at `now`. Walks every message (in flight is a matter of time):
    /// for a scrape every few seconds, not for every request.
    pub fn stats(&self, now: Duration) -> Stats {
        let mut s = Stats::default();
        for shard in self.shards.iter() {
            let state = shard.lock();
            let (messages, inflight, mailboxes, tombstones) = state.figures(ms(now));
            s.messages += messages;
            s.inflight += inflight;
            s.mailboxes += mailboxes;
            s.tombstones += tombstones;
            s.bytes += state.payload_bytes();
            s.dead.expired += state.dead.expired;
            s.dead.deliveries_exhausted += state.dead.deliveries_exhausted;
            s.journal_bytes += shard.journal.as_ref().map_or(0, |j| j.len());
            s.journals_failed += usize::from(shard.journal.as_ref().is_some_and(|j| j.failed()));
        }
        s
    }
}

/// A directory is created with a shard count, written to `shards`; it must not change, or
/// mailboxes would be looked for in the wrong journal.
fn check_layout(dir: &Path, shards: usize) -> Result<(), StoreError> {
    let io = |op, path: &Path, source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let marker = dir.join("shards");
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            if text.trim() != shards.to_string() {
                return Err(StoreError::BadConfig(format!(
                    "{} was created with {} shards, configured {shards}",
                    dir.display(),
                    text.trim()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join("shards.tmp");
            std::fs::write(&tmp, format!("{shards}\n")).map_err(|e| io("write", &tmp, e))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("fsync", &tmp, e))?;
            std::fs::rename(&tmp, &marker).map_err(|e| io("rename", &marker, e))?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("fsync", dir, e))?;
            Ok(())
        }
        Err(e) => Err(io("read", &marker, e)),
    }
}
