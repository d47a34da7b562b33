//! Every parameter of the DHT and the replication planner, with documented defaults.
//!
//! Defaults follow docs/DESIGN.md §4 (libp2p/IPFS practice): k = 20, α = 3, RPC timeout 5 s,
//! hourly bucket refresh, provider records for 48 h republished every 22 h. Tests and simnet
//! shorten the intervals; nothing else in the crate hard-codes a number that matters.

use std::time::Duration;

/// DHT parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Bucket size and the number of closest nodes a lookup converges on (k = 20).
    pub k: usize,
    /// RPCs a lookup keeps in flight (α = 3).
    pub alpha: usize,
    /// How long an RPC may take before it counts as failed (5 s).
    pub rpc_timeout: Duration,
    /// A bucket not touched by a lookup for this long is refreshed (1 h).
    pub bucket_refresh_interval: Duration,
    /// Contacts kept per bucket as replacements for failing entries (k).
    pub replacement_cache_size: usize,
    /// An entry is evicted after this many consecutive failed RPCs (2). An entry probed
    /// because its bucket is full is evicted after one failure.
    pub evict_after_failures: u32,
    /// Entries not heard from for this long are pinged (60 s); `None` disables probing.
    pub liveness_interval: Option<Duration>,
    /// At most this many liveness pings per interval (16).
    pub liveness_probes_max: usize,
    /// Whether an inbound request from a peer that finds its bucket full makes us ping the
    /// bucket's oldest entry (Kademlia's rule: `true`), or only caches the peer as a
    /// replacement (`false`). The ping is itself an inbound request at a node that may not
    /// know us, so at scale the probes cascade: simnet measured ~6, ~13 and ~23 pings per
    /// FIND_NODE at 3k, 10k and 30k nodes. A PING never triggers a probe (which cuts the
    /// chain); peers that answer our own requests still probe.
    pub probe_on_inbound: bool,
    /// Strangers being verified at once: a peer not in our table that asks us something
    /// (other than a PING) is pinged, and enters the table only if it answers (16).
    pub strangers_verified_max: usize,
    /// IP-diversity limits; `None` (simnet's default) disables them.
    pub ip_diversity: Option<IpDiversity>,
    /// How long a provider record lives without republish (48 h).
    pub provider_ttl: Duration,
    /// How often we re-announce what we provide (22 h).
    pub provider_republish_interval: Duration,
    /// Provider records kept per key (20).
    pub providers_per_key_max: usize,
    /// Provider records kept in all (65,536).
    pub provider_records_max: usize,
    /// Queries running at once; more are refused with `CommandError::TooManyQueries` (64).
    pub queries_max: usize,
    /// RPCs one lookup may send before it stops widening (k × 8).
    pub lookup_rpcs_max: usize,
    /// Candidates one lookup remembers (k × 8); farther ones are forgotten.
    pub lookup_candidates_max: usize,
    /// Outbound messages queued before new work is refused (4,096).
    pub transmits_max: usize,
    /// Events queued before the oldest are dropped and counted (4,096).
    pub events_max: usize,
    /// With no peers left, retry the bootstrap contacts this often (30 s).
    pub rejoin_interval: Duration,
    /// Bucket refresh lookups started after a join, at most (16).
    pub refresh_on_join_max: usize,
}

/// Limits on how many contacts may share an address group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpDiversity {
    /// Per bucket (2).
    pub per_bucket: usize,
    /// Per table (10).
    pub per_table: usize,
}

impl Default for IpDiversity {
    fn default() -> Self {
        IpDiversity {
            per_bucket: 2,
            per_table: 10,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let k = 20;
        Config {
            k,
            alpha: 3,
            rpc_timeout: Duration::from_secs(5),
            bucket_refresh_interval: Duration::from_secs(3600),
            replacement_cache_size: k,
            evict_after_failures: 2,
            liveness_interval: Some(Duration::from_secs(60)),
            liveness_probes_max: 16,
            probe_on_inbound: true,
            ip_diversity: None,
            provider_ttl: Duration::from_secs(48 * 3600),
            provider_republish_interval: Duration::from_secs(22 * 3600),
            providers_per_key_max: 20,
            provider_records_max: 65_536,
            queries_max: 64,
            strangers_verified_max: 16,
            lookup_rpcs_max: k * 8,
            lookup_candidates_max: k * 8,
            transmits_max: 4096,
            events_max: 4096,
            rejoin_interval: Duration::from_secs(30),
            refresh_on_join_max: 16,
        }
    }
}

impl Config {
    /// `Err` naming the first parameter that cannot work.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.k == 0 || self.k > wire::dht::CONTACTS_MAX {
            return Err("k must be between 1 and 32");
        }
        if self.alpha == 0 {
            return Err("alpha must be at least 1");
        }
        if self.rpc_timeout.is_zero() {
            return Err("rpc_timeout must be positive");
        }
        if self.lookup_candidates_max < self.k {
            return Err("lookup_candidates_max must be at least k");
        }
        Ok(())
    }
}

/// Replication parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationConfig {
    /// Copies each object should have, on the RF nodes closest to its key (3).
    pub rf: usize,
    /// Transfers in flight at once (4).
    pub transfers_max: usize,
    /// Repair bandwidth, bytes per second (16 MiB/s).
    pub bytes_per_second: u64,
    /// Largest burst the bandwidth quota allows (8 MiB).
    pub burst_bytes: u64,
    /// Re-plan this long after the routing table changed, to batch changes (1 s).
    pub replan_debounce: Duration,
    /// Re-plan at least this often (10 min).
    pub replan_interval: Duration,
    /// A confirmed copy is re-checked after this long (1 h).
    pub confirm_ttl: Duration,
    /// Planned transfers queued at most; past this the plan waits for the next round (65,536).
    pub queue_max: usize,
    /// A holder that is not the lead pushes a copy itself once it has seen it missing for
    /// this long (60 s), so a lead that cannot reach the target does not stall repair.
    pub takeover_after: Duration,
    /// Replica pushes accepted from one peer without a capability: bytes per second
    /// (64 MiB/s) and the depth of its bucket (1 GiB + 64 MiB, one largest object and then
    /// some). Honest repair is paced far below this by the sender's own quota.
    pub accept_bytes_per_second: u64,
    /// See `accept_bytes_per_second`.
    pub accept_burst_bytes: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            rf: 3,
            transfers_max: 4,
            bytes_per_second: 16 << 20,
            burst_bytes: 8 << 20,
            replan_debounce: Duration::from_secs(1),
            replan_interval: Duration::from_secs(600),
            confirm_ttl: Duration::from_secs(3600),
            queue_max: 65_536,
            takeover_after: Duration::from_secs(60),
            accept_bytes_per_second: 64 << 20,
            accept_burst_bytes: (1 << 30) + (64 << 20),
        }
    }
}
