//! The store's limits, each named and defaulted: the node fills a [`Config`] from its own
//! configuration file. Every count and byte figure the store keeps is capped by one of them.

use std::path::PathBuf;
use std::time::Duration;

/// Most shards a store may have.
pub const SHARDS_MAX: usize = 256;

/// How much one sender and one mailbox may hold (per holder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    /// Messages one mailbox holds at most.
    pub mailbox_count_max: usize,
    /// Payload bytes one mailbox holds at most.
    pub mailbox_bytes_max: u64,
    /// Messages one sender holds at most in any one mailbox.
    pub sender_count_max: usize,
    /// Payload bytes one sender holds at most in any one mailbox.
    pub sender_bytes_max: u64,
    /// Payload bytes the whole store holds at most.
    pub store_bytes_max: u64,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            mailbox_count_max: 10_000,
            mailbox_bytes_max: 64 << 20,
            sender_count_max: 1_000,
            sender_bytes_max: 16 << 20,
            store_bytes_max: 1 << 30,
        }
    }
}

/// Someone behind a sender that the sender stores mail for (a gateway's public client, by
/// its token or tenant), and the most it may hold in one mailbox. Its messages count
/// against its own share of the mailbox, capped at the smaller of these limits and the
/// store's sender quota, and not against the sender's own share: one client of a gateway
/// filling its share leaves the others theirs. The mailbox quota bounds them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// An opaque name (the gateway hashes it).
    pub id: [u8; 32],
    /// Messages it may hold in one mailbox.
    pub count_max: usize,
    /// Payload bytes it may hold in one mailbox.
    pub bytes_max: u64,
}

impl Principal {
    /// A principal with no limits of its own (a replicated copy: its limits were checked
    /// where it was first admitted); the sender quota still caps it.
    pub fn unlimited(id: [u8; 32]) -> Principal {
        Principal {
            id,
            count_max: usize::MAX,
            bytes_max: u64::MAX,
        }
    }
}

/// Where and how the store keeps its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Directory of the shard journals; `None` is amnesia mode: memory only, nothing written.
    pub dir: Option<PathBuf>,
    /// Number of shards (1 to [`SHARDS_MAX`]); fixed for a directory once created.
    pub shards: usize,
    /// TTL of a message that asks for none.
    pub ttl_default: Duration,
    /// Longest TTL; longer requests are cut to it.
    pub ttl_max: Duration,
    /// Count and byte quotas.
    pub quotas: Quotas,
    /// A message delivered this many times without an ack is dead-lettered on the next
    /// fetch (a poison message must not loop for ever).
    pub deliveries_max: u32,
    /// Acknowledged ids remembered per shard (so a retried send or a late replica is not
    /// stored again); past this the ones expiring first are forgotten.
    pub tombstones_max: usize,
    /// A shard's journal is compacted by `maintain` once it is over this size and over
    /// twice what its live records need.
    pub compact_min_bytes: u64,
    /// The `Retry-After` advice on a quota refusal.
    pub quota_retry_after: Duration,
    /// A journal corrupt before its last record: `false` refuses to open the store;
    /// `true` keeps the records before the bad one, copies the file aside (see
    /// [`OpenReport::salvaged`](crate::OpenReport::salvaged)) and opens. For a node whose
    /// messages have copies at other holders, which repair and the owner's drain bring
    /// back, one bad byte should not stop the whole node.
    pub salvage: bool,
}

impl Config {
    /// Defaults, durable in `dir`.
    pub fn durable(dir: impl Into<PathBuf>) -> Config {
        Config {
            dir: Some(dir.into()),
            ..Config::amnesia()
        }
    }

    /// Defaults, memory only.
    pub fn amnesia() -> Config {
        Config {
            dir: None,
            shards: 16,
            ttl_default: Duration::from_secs(7 * 24 * 3600),
            ttl_max: Duration::from_secs(7 * 24 * 3600),
            quotas: Quotas::default(),
            deliveries_max: 16,
            tombstones_max: 100_000,
            compact_min_bytes: 8 << 20,
            quota_retry_after: Duration::from_secs(5),
            salvage: false,
        }
    }
}
