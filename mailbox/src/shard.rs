//! One shard's mailboxes in memory, and every delivery rule: the store wraps each call in
//! the shard's lock and journals the [`Record`]s it returns.
//!
//! The rules:
//! - **Idempotency.** A message is known by its derived id; a send of an id held, or
//!   tombstoned (acknowledged or dead-lettered, until the message would have expired), is a
//!   duplicate: answered as success, nothing stored.
//! - **Order.** Each mailbox keeps its messages by the shard's sequence number (arrival
//!   order). A fetch returns visible messages in that order, skipping every sender that has
//!   a message in flight (fetched, not acknowledged, not yet visible again): per-sender
//!   FIFO, redeliveries included.
//! - **At-least-once.** A fetched message is invisible until `now + visibility`, then
//!   visible again; an ack deletes it. Delivered `deliveries_max` times without an ack, it
//!   is dead-lettered.
//! - **TTL.** A message expires at `received + ttl` (the default if none, cut to the
//!   maximum); expired messages are never delivered and are dropped by `expire`.
//! - **Quotas.** Per mailbox and per sender within a mailbox, in messages and in bytes. A
//!   message sent for a principal behind its sender ([`Principal`]) counts against that
//!   principal's share (the smaller of its limits and the sender quota) instead of the
//!   sender's own: a gateway's clients do not starve each other. Per-sender FIFO is per
//!   (sender, principal) for the same reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wire::NodeId;
use wire::mailbox::{Delivered, Envelope, MsgId};

use crate::config::{Config, Principal};
use crate::error::QuotaScope;
use crate::journal::Record;

/// What one fetch may return and how long it hides what it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Only messages with a sequence number above this (0: from the start).
    pub after: u64,
    /// At most this many messages.
    pub max_count: usize,
    /// At most this many payload bytes (one message is returned whatever its size).
    pub max_bytes: usize,
    /// How long returned messages stay invisible; zero peeks.
    pub visibility_ms: u64,
}

/// Messages dropped without an ack, by reason (`mailbox_dlq_total{reason}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetters {
    /// Their TTL ran out.
    pub expired: u64,
    /// Delivered `deliveries_max` times without an ack.
    pub deliveries_exhausted: u64,
}

#[derive(Debug)]
struct Stored {
    id: MsgId,
    sender: NodeId,
    key: Vec<u8>,
    e2e: bool,
    payload: Vec<u8>,
    principal: Option<[u8; 32]>,
    expires_ms: u64,
    /// In flight until then (`<= now`: visible).
    visible_ms: u64,
    deliveries: u32,
}

impl Stored {
    /// The message as a fetch returns it.
    fn delivered(&self, seq: u64, mailbox: &NodeId, now_ms: u64) -> Delivered {
        Delivered {
            seq,
            deliveries: self.deliveries,
            message: Envelope {
                mailbox: *mailbox,
                sender: self.sender,
                idempotency_key: self.key.clone(),
                ttl_ms: self.expires_ms - now_ms,
                e2e: self.e2e,
                payload: self.payload.clone(),
            },
        }
    }
}

/// What [`ShardState::fetch`] found.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The messages, oldest first.
    pub messages: Vec<Delivered>,
    /// Visible messages were left out for the limits.
    pub more: bool,
    /// Records of the messages dead-lettered on the way, with their payload bytes.
    pub dead: Vec<(u64, Record)>,
    /// Numbers of held messages below the last one returned that were left out because
    /// they were in flight, or behind an earlier message of their share that was: a
    /// cursor moved to the last message passes them.
    pub passed: Vec<u64>,
}

#[derive(Debug, Default)]
struct Mailbox {
    msgs: BTreeMap<u64, Stored>,
    bytes: u64,
    /// Per sender, its own share: messages and payload bytes held.
    senders: HashMap<NodeId, (usize, u64)>,
    /// Per sender and principal behind it, that principal's share (kept apart so a
    /// principal-less send hashes no more than a sender id).
    principals: HashMap<(NodeId, [u8; 32]), (usize, u64)>,
}

/// Whose share of a mailbox a message counts against.
type Share = (NodeId, Option<[u8; 32]>);

impl Mailbox {
    /// The usage of a share, if it holds anything.
    fn usage(&self, share: &Share) -> Option<(usize, u64)> {
        match share.1 {
            None => self.senders.get(&share.0).copied(),
            Some(p) => self.principals.get(&(share.0, p)).copied(),
        }
    }

    /// Adds (`add`) or takes away one message of `len` bytes to a share's usage,
    /// forgetting a share that holds nothing.
    fn count(&mut self, share: Share, len: u64, add: bool) {
        fn apply<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, (usize, u64)>,
            k: K,
            len: u64,
            add: bool,
        ) {
            if add {
                let u = map.entry(k).or_insert((0, 0));
                u.0 += 1;
                u.1 += len;
            } else if let Some(u) = map.get_mut(&k) {
                u.0 -= 1;
                u.1 -= len;
                if u.0 == 0 {
                    map.remove(&k);
                }
            }
        }
        match share.1 {
            None => apply(&mut self.senders, share.0, len, add),
            Some(p) => apply(&mut self.principals, (share.0, p), len, add),
        }
    }
}

/// The outcome of [`ShardState::insert`].
#[derive(Debug)]
pub enum Insert {
    /// Stored; journal this record.
    Stored(Record),
    /// Already held or tombstoned.
    Duplicate,
    /// Over a quota.
    Over(QuotaScope),
}

/// A shard's state.
#[derive(Debug, Default)]
pub struct ShardState {
    mailboxes: HashMap<NodeId, Mailbox>,
    /// Where each held message is: its mailbox and sequence number.
    index: HashMap<MsgId, (NodeId, u64)>,
    tombstones: HashMap<MsgId, u64>,
    tomb_order: BTreeSet<(u64, MsgId)>,
    expiry: BTreeSet<(u64, MsgId)>,
    next_seq: u64,
    payload_bytes: u64,
    /// Bytes the live state takes as journal records (to decide compaction).
    record_bytes: u64,
    /// Dead letters since open.
    pub dead: DeadLetters,
}

const TOMBSTONE_RECORD: u64 = (crate::journal::HEADER + 1 + 32 + 8) as u64;

impl ShardState {
    /// Stores a message received at `now_ms`, expiring at `expires_ms`, for `principal`
    /// behind its sender if any, unless it is a duplicate or over a quota. Pure
    /// bookkeeping: the caller checked sizes and the store quota, and journals the record.
    pub fn insert(
        &mut self,
        cfg: &Config,
        env: Envelope,
        id: MsgId,
        expires_ms: u64,
        principal: Option<Principal>,
        replaying_seq: Option<u64>,
    ) -> Insert {
        if replaying_seq.is_some() {
            // The journal's order is the truth: a Put after a Remove of the same id is a
            // resend after the tombstone had expired (expiry is not journaled).
            if let Some(until) = self.tombstones.remove(&id) {
                self.tomb_order.remove(&(until, id));
                self.record_bytes = self.record_bytes.saturating_sub(TOMBSTONE_RECORD);
            }
        }
        if self.index.contains_key(&id) || self.tombstones.contains_key(&id) {
            return Insert::Duplicate;
        }
        let mb = self.mailboxes.entry(env.mailbox).or_default();
        let len = env.payload.len() as u64;
        if replaying_seq.is_none() {
            let q = &cfg.quotas;
            let share = (env.sender, principal.map(|p| p.id));
            let (s_count, s_bytes) = mb.usage(&share).unwrap_or((0, 0));
            if mb.msgs.len() >= q.mailbox_count_max || mb.bytes + len > q.mailbox_bytes_max {
                return Insert::Over(QuotaScope::Mailbox);
            }
            let (count_max, bytes_max, scope) = match principal {
                None => (q.sender_count_max, q.sender_bytes_max, QuotaScope::Sender),
                Some(p) => (
                    p.count_max.min(q.sender_count_max),
                    p.bytes_max.min(q.sender_bytes_max),
                    QuotaScope::Principal,
                ),
            };
            if s_count >= count_max || s_bytes.saturating_add(len) > bytes_max {
                return Insert::Over(scope);
            }
        }
        let seq = match replaying_seq {
            Some(s) => s,
            None => self.next_seq + 1,
        };
        self.next_seq = self.next_seq.max(seq);
        let rec = Record::Put {
            seq,
            mailbox: env.mailbox,
            sender: env.sender,
            expires_ms,
            e2e: env.e2e,
            key: env.idempotency_key,
            payload: env.payload,
            principal: principal.map(|p| p.id),
        };
        self.record_bytes += rec.encoded_len() as u64;
        let Record::Put { key, payload, .. } = &rec else {
            return Insert::Duplicate;
        };
        mb.count((env.sender, principal.map(|p| p.id)), len, true);
        mb.bytes += len;
        mb.msgs.insert(
            seq,
            Stored {
                id,
                sender: env.sender,
                key: key.clone(),
                e2e: env.e2e,
                payload: payload.clone(),
                principal: principal.map(|p| p.id),
                expires_ms,
                visible_ms: 0,
                deliveries: 0,
            },
        );
        self.payload_bytes += len;
        self.index.insert(id, (env.mailbox, seq));
        self.expiry.insert((expires_ms, id));
        Insert::Stored(rec)
    }

    /// Takes a held message out of its mailbox, the index and every count (its sender's,
    /// its mailbox's, the shard's bytes and records); returns it and its payload length.
    /// The expiry order and tombstones are the caller's.
    fn take(&mut self, id: &MsgId) -> Option<(Stored, u64)> {
        let (mailbox, seq) = self.index.remove(id)?;
        let mb = self.mailboxes.get_mut(&mailbox)?;
        let m = mb.msgs.remove(&seq)?;
        let len = m.payload.len() as u64;
        let record = crate::journal::HEADER
            + crate::journal::put_body_len(m.key.len(), m.payload.len(), m.principal.is_some());
        self.record_bytes = self.record_bytes.saturating_sub(record as u64);
        mb.bytes -= len;
        mb.count((m.sender, m.principal), len, false);
        if mb.msgs.is_empty() {
            self.mailboxes.remove(&mailbox);
        }
        self.payload_bytes -= len;
        Some((m, len))
    }

    /// Removes a held message and remembers its id until it would have expired. Returns
    /// its payload length and the record to journal, or `None` if not held.
    pub fn remove(&mut self, cfg: &Config, id: &MsgId) -> Option<(u64, Record)> {
        let (m, len) = self.take(id)?;
        self.expiry.remove(&(m.expires_ms, *id));
        self.add_tombstone(cfg, *id, m.expires_ms);
        Some((
            len,
            Record::Remove {
                id: *id,
                tombstone_ms: m.expires_ms,
            },
        ))
    }

    /// Remembers `id` until `until_ms`, forgetting the tombstone expiring first when full.
    pub fn add_tombstone(&mut self, cfg: &Config, id: MsgId, until_ms: u64) {
        if cfg.tombstones_max == 0 || until_ms == 0 {
            return;
        }
        if let Some(old) = self.tombstones.insert(id, until_ms) {
            self.tomb_order.remove(&(old, id));
        } else {
            self.record_bytes += TOMBSTONE_RECORD;
        }
        self.tomb_order.insert((until_ms, id));
        while self.tombstones.len() > cfg.tombstones_max {
            let Some(first) = self.tomb_order.pop_first() else {
                break;
            };
            self.tombstones.remove(&first.1);
            self.record_bytes = self.record_bytes.saturating_sub(TOMBSTONE_RECORD);
        }
    }

    /// Applies a replayed `Remove` (the message may be gone already).
    pub fn replay_remove(&mut self, cfg: &Config, id: MsgId, tombstone_ms: u64) -> u64 {
        match self.remove(cfg, &id) {
            Some((len, _)) => len,
            None => {
                self.add_tombstone(cfg, id, tombstone_ms);
                0
            }
        }
    }

    /// Drops messages and tombstones expired at `now_ms`; returns the payload bytes freed.
    /// Not journaled: replay drops them again by their expiry.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let mut freed = 0;
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now_ms {
                break;
            }
            self.expiry.pop_first();
            let Some((_, len)) = self.take(&id) else {
                continue;
            };
            freed += len;
            self.dead.expired += 1;
        }
        while let Some(&(at, id)) = self.tomb_order.first() {
            if at > now_ms {
                break;
            }
            self.tomb_order.pop_first();
            self.tombstones.remove(&id);
            self.record_bytes = self.record_bytes.saturating_sub(TOMBSTONE_RECORD);
        }
        freed
    }

    /// The oldest visible messages of `mailbox` within `limits`, hidden until
    /// `now_ms + visibility`: them, whether more were visible, the records of messages
    /// dead-lettered on the way (with their payload bytes), and the messages passed over.
    pub fn fetch(
        &mut self,
        cfg: &Config,
        now_ms: u64,
        mailbox: &NodeId,
        limits: FetchLimits,
    ) -> Fetched {
        let mut out = Vec::new();
        let mut dead = Vec::new();
        let mut more = false;
        let mut passed = Vec::new();
        let Some(mb) = self.mailboxes.get_mut(mailbox) else {
            return Fetched::default();
        };
        let mut blocked: Vec<Share> = Vec::new();
        let mut bytes = 0usize;
        let mut exhausted = Vec::new();
        for (&seq, m) in mb.msgs.iter_mut() {
            if m.expires_ms <= now_ms {
                continue;
            }
            let share = (m.sender, m.principal);
            if m.visible_ms > now_ms {
                if !blocked.contains(&share) {
                    blocked.push(share);
                }
                if seq > limits.after {
                    passed.push(seq);
                }
                continue;
            }
            if seq <= limits.after {
                continue;
            }
            if blocked.contains(&share) {
                passed.push(seq);
                continue;
            }
            if out.len() >= limits.max_count
                || (!out.is_empty() && bytes + m.payload.len() > limits.max_bytes)
            {
                more = true;
                break;
            }
            if limits.visibility_ms > 0 {
                if m.deliveries >= cfg.deliveries_max {
                    exhausted.push(m.id);
                    continue;
                }
                m.deliveries += 1;
                m.visible_ms = now_ms.saturating_add(limits.visibility_ms);
            }
            bytes += m.payload.len();
            out.push(m.delivered(seq, mailbox, now_ms));
        }
        for id in exhausted {
            if let Some(r) = self.remove(cfg, &id) {
                self.dead.deliveries_exhausted += 1;
                dead.push(r);
            }
        }
        // Only what lies below the last message returned was passed over: a caller's
        // cursor moves to that message, not beyond.
        let last = out.last().map_or(limits.after, |d| d.seq);
        passed.retain(|&seq| seq < last);
        Fetched {
            messages: out,
            more,
            dead,
            passed,
        }
    }

    /// Of the messages of `mailbox` numbered `seqs`, those visible now (in order, their
    /// visibility untouched), and the numbers of those still held but in flight or behind
    /// an earlier message of their share that is; messages gone or expired are in neither.
    pub fn visible(
        &self,
        now_ms: u64,
        mailbox: &NodeId,
        seqs: &[u64],
    ) -> (Vec<Delivered>, Vec<u64>) {
        let (mut out, mut waiting) = (Vec::new(), Vec::new());
        let (Some(mb), Some(&last)) = (self.mailboxes.get(mailbox), seqs.iter().max()) else {
            return (out, waiting);
        };
        let mut blocked: Vec<Share> = Vec::new();
        for (&seq, m) in mb.msgs.range(..=last) {
            if m.expires_ms <= now_ms {
                continue;
            }
            let share = (m.sender, m.principal);
            let hidden = m.visible_ms > now_ms;
            if hidden && !blocked.contains(&share) {
                blocked.push(share);
            }
            if !seqs.contains(&seq) {
                continue;
            }
            if hidden || blocked.contains(&share) {
                waiting.push(seq);
            } else {
                out.push(m.delivered(seq, mailbox, now_ms));
            }
        }
        (out, waiting)
    }

    /// Whether `id` was removed here (acknowledged or dead-lettered) and is still
    /// remembered at `now_ms`.
    pub fn tombstoned(&self, id: &MsgId, now_ms: u64) -> bool {
        self.tombstones.get(id).is_some_and(|until| *until > now_ms)
    }

    /// The principal `id` was stored for, if it is held and had one.
    pub fn principal(&self, id: &MsgId) -> Option<[u8; 32]> {
        let (mailbox, seq) = self.index.get(id)?;
        self.mailboxes.get(mailbox)?.msgs.get(seq)?.principal
    }

    /// What `sender` (for `principal`, if any) holds in `mailbox`: messages and bytes.
    pub fn usage(
        &self,
        mailbox: &NodeId,
        sender: &NodeId,
        principal: Option<[u8; 32]>,
    ) -> (usize, u64) {
        self.mailboxes
            .get(mailbox)
            .and_then(|mb| mb.usage(&(*sender, principal)))
            .unwrap_or((0, 0))
    }

    /// Whether `id` is held in `mailbox`.
    pub fn holds(&self, mailbox: &NodeId, id: &MsgId) -> bool {
        self.index.get(id).is_some_and(|(m, _)| m == mailbox)
    }

    /// The mailboxes with at least one message, at most `max` of them.
    pub fn mailbox_ids(&self, max: usize) -> Vec<NodeId> {
        self.mailboxes
            .iter()
            .filter(|(_, m)| !m.msgs.is_empty())
            .map(|(id, _)| *id)
            .take(max)
            .collect()
    }

    /// Messages held in `mailbox`.
    pub fn depth(&self, mailbox: &NodeId) -> usize {
        self.mailboxes.get(mailbox).map_or(0, |m| m.msgs.len())
    }

    /// Payload bytes held.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Bytes the live state needs as journal records.
    pub fn record_bytes(&self) -> u64 {
        self.record_bytes
    }

    /// Figures for metrics: (messages, in flight at `now_ms`, mailboxes, tombstones).
    pub fn figures(&self, now_ms: u64) -> (usize, usize, usize, usize) {
        let inflight = self
            .mailboxes
            .values()
            .flat_map(|mb| mb.msgs.values())
            .filter(|m| m.visible_ms > now_ms && m.expires_ms > now_ms)
            .count();
        (
            self.index.len(),
            inflight,
            self.mailboxes.len(),
            self.tombstones.len(),
        )
    }

    /// The live state as journal records: every message, then every tombstone.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.index.len() + self.tombstones.len());
        for (mailbox, mb) in &self.mailboxes {
            for (&seq, m) in &mb.msgs {
                out.push(Record::Put {
                    seq,
                    mailbox: *mailbox,
                    sender: m.sender,
                    expires_ms: m.expires_ms,
                    e2e: m.e2e,
                    key: m.key.clone(),
                    payload: m.payload.clone(),
                    principal: m.principal,
                });
            }
        }
        for &(until, id) in &self.tomb_order {
            out.push(Record::Remove {
                id,
                tombstone_ms: until,
            });
        }
        out
    }
}
