//! The mailbox store: messages addressed to node ids, held until their owner acknowledges
//! them or their TTL runs out (issue 17). The node calls it for every mailbox exchange of
//! app protocol 3 (`wire::mailbox`) and for its own gateway routes; nothing here speaks the
//! network, reads the clock or spawns a thread: time is passed in as `now` (a `Duration`
//! since the Unix epoch), so every rule is testable to the millisecond.
//!
//! A separate crate because it is a storage engine with its own durability contract
//! (journal, group commit, recovery, compaction) that the node only drives, and so that it
//! builds, tests and benches without the node's transport.
//!
//! Layout:
//! - [`config`]: [`Config`] and [`Quotas`], every limit with its default; [`Principal`],
//!   a sender's client with its own share of a mailbox.
//! - [`error`]: [`SendError`] and [`StoreError`], typed, each mapping to a wire refusal.
//! - [`shard`]: one shard's mailboxes in memory and the semantics (idempotency, per-sender
//!   FIFO, visibility timeout, TTL, quotas, tombstones, dead letters).
//! - [`journal`]: the append-only, checksummed journal of a shard, group commit, replay.
//! - [`store`]: [`MailboxStore`], shards by mailbox id, each with its own lock and journal.

pub mod config;
pub mod error;
pub mod journal;
pub mod shard;
pub mod store;

pub use config::{Config, Principal, Quotas};
pub use error::{QuotaScope, SendError, StoreError};
pub use shard::{DeadLetters, FetchLimits};
pub use store::{Batch, MailboxStore, Maintenance, OpenReport, Salvaged, Sent, Stats};
