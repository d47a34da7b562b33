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
    /// How long an RPC may take before it counts as failed (5 s): the hard timeout, which
    /// only decides whether the contact failed. A lookup stops waiting for a request much
    /// sooner, at its soft timeout (`soft_timeout_min`, `soft_timeout_initial`).
    pub rpc_timeout: Duration,
    /// The floor of a request's soft timeout (100 ms). The soft timeout is SRTT + 4·RTTVAR
    /// of the peer asked (the network-wide estimate for a stranger), clamped between this
    /// and `rpc_timeout`; past it the request no longer holds one of the walk's α slots
    /// nor blocks its finish, and an answer that still comes is used.
    pub soft_timeout_min: Duration,
    /// The soft timeout before any round trip has been measured (1 s, RFC 6298's initial
    /// RTO).
    pub soft_timeout_initial: Duration,
    /// A query still running this long after it started finishes with what it has (60 s,
    /// libp2p's default).
    pub query_timeout: Duration,
    /// A bucket not touched by a lookup for this long is refreshed (1 h).
    pub bucket_refresh_interval: Duration,
    /// Contacts kept per bucket as replacements for failing entries (k).
    pub replacement_cache_size: usize,
    /// A good entry (heard from within `liveness_interval`) is evicted after this many
    /// consecutive failed RPCs (2); a questionable one after its first.
    pub evict_after_failures: u32,
    /// An entry silent for longer than this is *questionable* (BEP 5), and only
    /// questionable entries are ever pinged (60 s); `None` disables liveness probing.
    pub liveness_interval: Option<Duration>,
    /// Liveness pings started per interval, at most one per bucket at a time (16). A bucket
    /// in which an entry just failed is swept: its questionable entries are pinged one
    /// after another, so dead entries leave while live ones stay.
    pub liveness_probes_max: usize,
    /// Whether a node's first liveness round comes at a share of `liveness_interval` its
    /// key gives (in [0, 1)) rather than a whole interval after it started, so that nodes
    /// started in the same instant do not all probe in the same instant (false). simnet's
    /// ideal tables start every node at time zero (`[dht] liveness_spread`); the node's
    /// configuration does not set it.
    pub liveness_spread: bool,
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
    /// Provider records kept for other nodes in all (65,536); the keys we provide ourselves
    /// are not among them.
    pub provider_records_max: usize,
    /// Queries running at once; more are refused with `CommandError::TooManyQueries` (64).
    pub queries_max: usize,
    /// Scheduled announcements (republishes, and [`Dht::provide_paced`]'s: a restarted
    /// node's stored objects) running at once (16); a PUT's announcement starts at once and
    /// does not count. A large store is announced a few keys at a time, once the node's table
    /// holds a peer, rather than in a burst of walks that fills `queries_max`. It bounds
    /// what one node keeps announced: at about a second a walk, 16 at a time announce
    /// ~1.3 M keys within a `provider_republish_interval`.
    ///
    /// [`Dht::provide_paced`]: crate::Dht::provide_paced
    pub announcements_max: usize,
    /// RPCs one lookup may send before it stops widening (k × 8).
    pub lookup_rpcs_max: usize,
    /// Candidates one lookup remembers (k × 8); farther ones are forgotten.
    pub lookup_candidates_max: usize,
    /// Outbound messages queued before new work is refused (4,096); requests held for a
    /// slot (`rpcs_in_flight_max`) count.
    pub transmits_max: usize,
    /// Requests holding a slot at most (256): sent and not yet answered, failed or timed
    /// out, and for a lookup request not yet past its soft timeout (its walk no longer waits
    /// for it then). One more waits for a slot, its timeouts starting when it is sent: a
    /// shortage of ours delays a walk, it neither fails the request nor counts against the
    /// peer.
    pub rpcs_in_flight_max: usize,
    /// Events queued before the oldest are dropped and counted (4,096).
    pub events_max: usize,
    /// With no peers left, retry the bootstrap contacts this often (30 s).
    pub rejoin_interval: Duration,
    /// This often, one bootstrap contact missing from the table is pinged, and enters it
    /// if it answers (10 min; `None`: never). A network split by a partition long enough
    /// for each side's liveness probes to evict the other has no other way back together:
    /// lookups and refreshes only ask nodes already known. One ping per node per period,
    /// so a bootstrap node of a large mesh is not pinged by everyone at once.
    pub bootstrap_check_interval: Option<Duration>,
    /// Bucket refresh lookups started after a join, at most (16).
    pub refresh_on_join_max: usize,
    /// While the table holds fewer than k peers after a join, the self-lookup is repeated
    /// this long after it (1 s; `None`: never), the wait doubling each time up to a
    /// quarter of `bucket_refresh_interval`. A seed answers a joiner only with peers it has
    /// verified, so the joiners of a small mesh that arrive together learn only the seed;
    /// without a second look they stay strangers to each other until a bucket refresh.
    pub thin_table_lookup: Option<Duration>,
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
            soft_timeout_min: Duration::from_millis(100),
            soft_timeout_initial: Duration::from_secs(1),
            query_timeout: Duration::from_secs(60),
            bucket_refresh_interval: Duration::from_secs(3600),
            replacement_cache_size: k,
            evict_after_failures: 2,
            liveness_interval: Some(Duration::from_secs(60)),
            liveness_probes_max: 16,
            liveness_spread: false,
            ip_diversity: None,
            provider_ttl: Duration::from_secs(48 * 3600),
            provider_republish_interval: Duration::from_secs(22 * 3600),
            providers_per_key_max: 20,
            provider_records_max: 65_536,
            queries_max: 64,
            announcements_max: 16,
            strangers_verified_max: 16,
            lookup_rpcs_max: k * 8,
            lookup_candidates_max: k * 8,
            transmits_max: 4096,
            rpcs_in_flight_max: 256,
            events_max: 4096,
            rejoin_interval: Duration::from_secs(30),
            bootstrap_check_interval: Some(Duration::from_secs(600)),
            refresh_on_join_max: 16,
            thin_table_lookup: Some(Duration::from_secs(1)),
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
        if self.rpc_timeout.is_zero() || self.query_timeout.is_zero() {
            return Err("rpc_timeout and query_timeout must be positive");
        }
        if self.soft_timeout_initial.is_zero() {
            return Err("soft_timeout_initial must be positive");
        }
        if self.lookup_candidates_max < self.k {
            return Err("lookup_candidates_max must be at least k");
        }
        if self.rpcs_in_flight_max == 0 {
            return Err("rpcs_in_flight_max must be at least 1");
        }
        if self.provider_republish_interval.is_zero() {
            return Err("provider_republish_interval must be positive");
        }
        if self.announcements_max == 0 {
            return Err("announcements_max must be at least 1 (none would ever be announced)");
        }
        if self.thin_table_lookup.is_some_and(|d| d.is_zero()) {
            return Err("thin_table_lookup must be positive (None turns it off)");
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
    /// A holder outside our routing table counts only on our own proof and only for this
    /// long (60 s): the table no longer vouches that it is alive, and a gateway far from a
    /// key releases its copy within a second of proving the key's closest hold it.
    pub off_table_proof_ttl: Duration,
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
            off_table_proof_ttl: Duration::from_secs(60),
            queue_max: 65_536,
            takeover_after: Duration::from_secs(60),
            accept_bytes_per_second: 64 << 20,
            accept_burst_bytes: (1 << 30) + (64 << 20),
        }
    }
}

/// How long a node's object reads and writes wait: a GET's search for a holder and each
/// holder's answer to its probe, a PUT's wait for its copies. The node and simnet read
/// these same numbers, so a simulated GET or PUT gives up where a real one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectTimings {
    /// How long a GET may search for holders, every pass included (5 s).
    pub search_timeout: Duration,
    /// How long one holder may take to answer a probe during a search (1.5 s).
    pub probe_timeout: Duration,
    /// A PUT waits for its W copies at most this plus the object's size at
    /// `put_wait_rate` (10 s); then it answers 503 and repair goes on.
    pub put_wait_base: Duration,
    /// Bytes per second of the object's size added to `put_wait_base` (4 MiB/s).
    pub put_wait_rate: u64,
    /// The shortest time a repair transfer may run before it is cut (60 s; see
    /// [`ObjectTimings::repair_cut`]): repair is no one's wait, so a small copy behind a
    /// brief stall is not given up early.
    pub repair_cut_min: Duration,
    /// How long a fetch with failover (a GET's, a copy fetched back) goes on without a
    /// verified byte from any holder before it gives up (40 s: four of the node's I/O
    /// timeouts, or eight dial timeouts): a few dead or silent candidates are passed,
    /// thirty are not waited out one by one (`locate::Failover`).
    pub failover_idle: Duration,
}

impl Default for ObjectTimings {
    fn default() -> Self {
        ObjectTimings {
            search_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_millis(1500),
            put_wait_base: Duration::from_secs(10),
            put_wait_rate: 4 << 20,
            repair_cut_min: Duration::from_secs(60),
            failover_idle: Duration::from_secs(40),
        }
    }
}

impl ObjectTimings {
    /// How long a PUT of `size` bytes waits for its quorum.
    pub fn put_wait(&self, size: u64) -> Duration {
        let rate = self.put_wait_rate.max(1);
        self.put_wait_base + Duration::from_secs_f64(size as f64 / rate as f64)
    }

    /// How long one repair transfer of `size` bytes (the proof, and the push when it is
    /// ours) may run before it is cut and reported failed: twice a PUT's wait, as a
    /// write's placements, and at least `repair_cut_min`. The planner runs a few
    /// transfers at a time; without the cut a target reading just above the transfers'
    /// minimum rate would hold one of them for hours (a 1 GiB copy at 64 KiB/s: 4.5 h).
    pub fn repair_cut(&self, size: u64) -> Duration {
        (self.put_wait(size) * 2).max(self.repair_cut_min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repair_transfer_is_cut_at_twice_a_puts_wait_never_under_the_floor() {
        let t = ObjectTimings::default();
        // 1 KiB: twice 10 s is under the 60 s floor.
        assert_eq!(t.repair_cut(1 << 10), Duration::from_secs(60));
        // 1 GiB: twice (10 s + 256 s at 4 MiB/s).
        assert_eq!(t.repair_cut(1 << 30), Duration::from_secs(532));
    }
}
