//! What a run measured: per-lookup outcomes, message counts, live-node time and object
//! availability, accumulated as the run goes and split into timeseries intervals.
//!
//! Everything here is integer counters and sorted vectors of nanoseconds, so the summary is
//! exact and the same for the same events; floating point appears only when a rate or mean
//! is finally reported. A lookup, put or get counts in the interval it *started* in; message
//! counts go to the interval they were sent in, and anything after the end of the run (the
//! drain) to the last interval. Lookups whose node died, or that were still running when
//! the drain ended, count as issued and not successful.

use std::time::Duration;

use overlay::{Instant, Key};

/// How one lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupOutcome {
    /// When it started.
    pub started: Instant,
    /// The closest node of the result is the true closest live node.
    pub success: bool,
    /// The result is exactly the true k closest live nodes.
    pub exact: bool,
    /// Hops as overlay's `QueryStats` counts them.
    pub hops: u32,
    /// Requests sent.
    pub rpcs: u32,
    /// Requests that failed or timed out.
    pub timeouts: u32,
    /// Start to finish, in virtual time.
    pub latency: Duration,
    /// What it looked for.
    pub target: Key,
    /// Its source is honest (not one of the swarm's liars).
    pub honest: bool,
}

/// How one get ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetOutcome {
    /// Served after `latency` (to the first verified byte); `intra` when the holder it was
    /// fetched from is in the getter's region (or the getter held it).
    Served {
        /// From the get to the first verified byte.
        latency: Duration,
        /// Served from within the getter's region.
        intra: bool,
        /// What the latency is made of.
        parts: GetParts,
    },
    /// No holder was found in time, or the getter died.
    Failed,
}

/// The phases of a served get, which add up to its latency: the provider walk, the wait
/// for holders' TAIL answers, and the fetch from the holder chosen. A get served from the
/// getter's own copy has all three zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetParts {
    /// The provider lookup, from the get to its walk's finish.
    pub search: Duration,
    /// From the walk's finish to the last TAIL answer the get waited for.
    pub probe: Duration,
    /// The fetch's round trip (and handshake, if the connection was gone).
    pub fetch: Duration,
}

/// One timeseries interval.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Lookups started in the interval.
    pub lookups: u64,
    /// Of those, finished.
    pub finished: u64,
    /// Of those, successful.
    pub success: u64,
    /// Of those, exact.
    pub exact: u64,
    /// Sum of hops of the finished ones.
    pub hops_sum: u64,
    /// Latencies of the finished ones, ns (sorted when the run ends).
    pub latencies: Vec<u64>,
    /// Messages sent (requests, responses, transfers).
    pub messages: u64,
    /// Messages lost to the loss model.
    pub messages_lost: u64,
    /// Live-node nanoseconds in the interval (its integral of the live count).
    pub alive_integral: u128,
    /// Live nodes at the end of the interval.
    pub alive_end: u64,
    /// Gets started.
    pub gets: u64,
    /// Of those, successful.
    pub gets_ok: u64,
    /// Mean live copies per placed object at the end of the interval.
    pub replicas_mean: f64,
    /// Repair bytes that arrived in the interval.
    pub repair_bytes: u64,
    /// Per-node state at the end of the interval (soaks only).
    pub state: Option<StateSample>,
    /// Safety violations the soak's checkers found at the end of the interval.
    pub violations: u64,
    /// Objects with fewer than RF live copies at the end of the interval.
    pub below_rf: u64,
    /// Objects with no live copy at the end of the interval.
    pub unavailable: u64,
}

/// The per-node quantities a soak samples: whatever a node keeps that would grow if
/// something leaked. Each is read from the node's own state machine (`overlay::Dht`,
/// `overlay::Planner`) or, where overlay has no accessor, from what simnet keeps for it.
pub const STATE_FIELDS: [&str; 7] = [
    "table",
    "records",
    "queries",
    "objects",
    "pending_ops",
    "connections",
    "engine_events",
];

/// Which fields of [`STATE_FIELDS`] the soak's tolerance applies to: every node's own state.
/// `engine_events` (the shared queue over the live nodes) is reported, not bounded: it is
/// dominated by the 30 s connection timeouts a crash leaves at each of its peers (130–230), so
/// a snapshot swings by tens of percent with the number of crashes in the last 30 s.
pub const STATE_BOUNDED: [bool; 7] = [true, true, true, true, true, true, false];

/// One sample of every live node's state: sums and maxima over the live nodes, exact
/// integers, so the means reported are the same for the same run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateSample {
    /// Live nodes sampled.
    pub live: u64,
    /// Per field of [`STATE_FIELDS`]: the sum over live nodes.
    pub sum: [u64; 7],
    /// Per field: the largest value at one node.
    pub max: [u64; 7],
}

impl StateSample {
    /// Adds one node's values.
    pub fn add(&mut self, values: [u64; 7]) {
        self.live += 1;
        for (i, v) in values.into_iter().enumerate() {
            self.sum[i] += v;
            self.max[i] = self.max[i].max(v);
        }
    }

    /// The mean of field `i` per live node (0 without live nodes).
    pub fn mean(&self, i: usize) -> f64 {
        if self.live == 0 {
            0.0
        } else {
            self.sum[i] as f64 / self.live as f64
        }
    }
}

/// The relative change of a per-node mean from `from` to `to`, against `from` or 1,
/// whichever is larger: a queue that holds 0.02 entries per node and later 0.03 has not
/// grown by half, it has stayed empty.
pub fn state_change(from: f64, to: f64) -> f64 {
    (to - from) / from.max(1.0)
}

/// The run's accumulators.
#[derive(Debug)]
pub struct Metrics {
    interval: Duration,
    end: Instant,
    /// One per interval.
    pub rows: Vec<Row>,
    /// Lookups issued, refused at the source included.
    pub lookups: u64,
    /// Lookups the source node refused (no ready node, too many queries, no peers).
    pub lookups_refused: u64,
    /// Lookups that finished.
    pub lookups_finished: u64,
    /// Lookups lost with their node, or still running at the end.
    pub lookups_unfinished: u64,
    /// Successful lookups.
    pub lookups_success: u64,
    /// Exact lookups.
    pub lookups_exact: u64,
    /// Finished lookups per hop count.
    pub hop_histogram: Vec<u64>,
    /// Sum of requests over finished lookups.
    pub rpcs_sum: u64,
    /// Sum of failed requests over finished lookups.
    pub timeouts_sum: u64,
    /// Latencies of finished lookups, ns.
    pub latencies: Vec<u64>,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages lost to the loss model.
    pub messages_lost: u64,
    /// DHT requests sent, by kind: PING, FIND_NODE, GET_PROVIDERS, ADD_PROVIDER.
    pub requests_by_kind: [u64; 4],
    /// Messages that reached a dead node or a newer incarnation.
    pub messages_undeliverable: u64,
    /// Retransmissions the link model made (lost transmissions that were sent again).
    pub retransmissions: u64,
    /// Connections opened (first contacts, each a handshake).
    pub handshakes: u64,
    /// Requests sent with their connection's handshake (0-RTT, `latency.zero_rtt`).
    pub zero_rtt_sends: u64,
    /// Connections closed because a node was at its connection cap.
    pub connections_closed: u64,
    /// Of those, connections used within the node's `idle_evict_after` (1 s): the node
    /// would have refused the new connection instead.
    pub connections_closed_busy: u64,
    /// `PeerMisbehaved` events: every simulated node is honest unless the swarm made some
    /// liars, so without liars anything but 0 is a bug.
    pub misbehaved: u64,
    /// DHT messages the swarm's duplication fault delivered twice.
    pub duplicated: u64,
    alive: u64,
    alive_at: Instant,
    /// Live-node nanoseconds over [0, end].
    pub alive_integral: u128,
    /// Puts issued.
    pub puts: u64,
    /// Puts whose lookup finished and whose copies were sent.
    pub puts_placed: u64,
    /// Puts answered with W durable copies (`workload.put_w`).
    pub puts_acked: u64,
    /// Puts answered with fewer than W copies when their wait ran out (the node's 503).
    pub puts_short: u64,
    /// Pushes (a put's copies and repairs) their receiver refused by its admission rule.
    pub pushes_refused: u64,
    /// Gets issued.
    pub gets: u64,
    /// Gets whose first pass found only records that proved nothing, and walked again.
    pub gets_searched_again: u64,
    /// Gets served by their second walk.
    pub gets_served_again: u64,
    /// Probes answered with bytes that did not verify (a liar claiming what it lacks).
    pub probes_invalid: u64,
    /// Fetches a get tried at a liar that lacked the object (the search must never put
    /// one in its failover order).
    pub fetches_at_liars: u64,
    /// Gets that found a live holder.
    pub gets_ok: u64,
    /// Latencies of successful gets, ns.
    pub get_latencies: Vec<u64>,
    /// Latencies of successful gets served from the getter's region, ns.
    pub get_latencies_intra: Vec<u64>,
    /// Latencies of successful gets served from another region, ns.
    pub get_latencies_inter: Vec<u64>,
    /// Provider-walk part of each successful get, ns.
    pub get_search: Vec<u64>,
    /// Holder-wait part of each successful get, ns.
    pub get_probe: Vec<u64>,
    /// Fetch part of each successful get, ns.
    pub get_fetch: Vec<u64>,
    /// Bytes of object copies stored by puts.
    pub put_bytes: u64,
    /// Bytes of object copies stored by repair (copies that moved, not HAS checks).
    pub repair_bytes: u64,
    /// Repair transfers that failed.
    pub transfers_failed: u64,
    /// With `[bandwidth]`: how long each object transfer (put push, repair, get fetch)
    /// waited for its sender's uplink and receiver's downlink, ns.
    pub transfer_waits: Vec<u64>,
    /// Of those, the repair transfers' waits, ns.
    pub repair_waits: Vec<u64>,
    /// Of those, the get fetches' waits, ns.
    pub get_waits: Vec<u64>,
    /// With `[bandwidth]`: object bytes that went through the links.
    pub bytes_moved: u64,
    /// Mean live copies per placed object at the end of the run.
    pub replicas_end: f64,
    /// Placed objects with a live copy at the end of the run, as a fraction.
    pub objects_available_end: f64,
    /// Every finished lookup's outcome, in finishing order, when recording (tests).
    pub outcomes: Option<Vec<LookupOutcome>>,
    /// Safety violations the soak's checkers found (the first [`VIOLATIONS_KEPT`], with
    /// time), and how many in all.
    pub violations: Vec<String>,
    /// All violations found, kept or not.
    pub violations_total: u64,
    /// Live copies per object, time below RF, restore times.
    pub durability: crate::durability::Durability,
    /// Objects whose put stored a first copy (acknowledged writes).
    pub acked: u64,
    /// Of those, objects with no copy left on any node, live or down, at the end.
    pub acked_lost: u64,
}

/// Violations kept with their description; the rest are only counted.
pub const VIOLATIONS_KEPT: usize = 20;

impl Metrics {
    /// Accumulators for a run of `duration`, `interval` per row.
    pub fn new(duration: Duration, interval: Duration) -> Metrics {
        let n = duration
            .as_nanos()
            .div_ceil(interval.as_nanos().max(1))
            .max(1) as usize;
        Metrics {
            interval,
            end: Instant::ZERO + duration,
            rows: vec![Row::default(); n],
            lookups: 0,
            lookups_refused: 0,
            lookups_finished: 0,
            lookups_unfinished: 0,
            lookups_success: 0,
            lookups_exact: 0,
            hop_histogram: Vec::new(),
            rpcs_sum: 0,
            timeouts_sum: 0,
            latencies: Vec::new(),
            messages_sent: 0,
            messages_lost: 0,
            requests_by_kind: [0; 4],
            messages_undeliverable: 0,
            retransmissions: 0,
            handshakes: 0,
            zero_rtt_sends: 0,
            connections_closed: 0,
            connections_closed_busy: 0,
            misbehaved: 0,
            duplicated: 0,
            alive: 0,
            alive_at: Instant::ZERO,
            alive_integral: 0,
            puts: 0,
            puts_placed: 0,
            pushes_refused: 0,
            puts_acked: 0,
            gets_searched_again: 0,
            gets_served_again: 0,
            probes_invalid: 0,
            fetches_at_liars: 0,
            puts_short: 0,
            gets: 0,
            gets_ok: 0,
            get_latencies: Vec::new(),
            get_latencies_intra: Vec::new(),
            get_latencies_inter: Vec::new(),
            get_search: Vec::new(),
            get_probe: Vec::new(),
            get_fetch: Vec::new(),
            put_bytes: 0,
            repair_bytes: 0,
            transfers_failed: 0,
            transfer_waits: Vec::new(),
            repair_waits: Vec::new(),
            get_waits: Vec::new(),
            bytes_moved: 0,
            replicas_end: 0.0,
            objects_available_end: 0.0,
            outcomes: None,
            violations: Vec::new(),
            violations_total: 0,
            durability: Default::default(),
            acked: 0,
            acked_lost: 0,
        }
    }

    /// A soak checker found `what` at `now`.
    pub fn violation(&mut self, now: Instant, what: String) {
        self.violations_total += 1;
        if self.violations.len() < VIOLATIONS_KEPT {
            let t = now.as_duration().as_secs_f64();
            self.violations.push(format!("t={t:.0}s {what}"));
        }
    }

    /// The interval `t` falls in (the drain counts in the last).
    pub fn row_of(&self, t: Instant) -> usize {
        let i = (t.as_duration().as_nanos() / self.interval.as_nanos().max(1)) as usize;
        i.min(self.rows.len() - 1)
    }

    fn row(&mut self, t: Instant) -> &mut Row {
        let i = self.row_of(t);
        &mut self.rows[i]
    }

    /// Start and end of row `i`.
    pub fn row_span(&self, i: usize) -> (Instant, Instant) {
        let start = Instant::ZERO + self.interval * i as u32;
        (start, (start + self.interval).min(self.end))
    }

    /// A lookup was issued at `now`; `refused` if its source could not start it.
    pub fn lookup_issued(&mut self, now: Instant, refused: bool) {
        self.lookups += 1;
        self.row(now).lookups += 1;
        if refused {
            self.lookups_refused += 1;
        }
    }

    /// A lookup finished.
    pub fn lookup_finished(&mut self, o: LookupOutcome) {
        if let Some(v) = self.outcomes.as_mut() {
            v.push(o);
        }
        self.lookups_finished += 1;
        self.lookups_success += u64::from(o.success);
        self.lookups_exact += u64::from(o.exact);
        let h = o.hops as usize;
        if self.hop_histogram.len() <= h {
            self.hop_histogram.resize(h + 1, 0);
        }
        self.hop_histogram[h] += 1;
        self.rpcs_sum += u64::from(o.rpcs);
        self.timeouts_sum += u64::from(o.timeouts);
        let ns = o.latency.as_nanos() as u64;
        self.latencies.push(ns);
        let row = self.row(o.started);
        row.finished += 1;
        row.success += u64::from(o.success);
        row.exact += u64::from(o.exact);
        row.hops_sum += u64::from(o.hops);
        row.latencies.push(ns);
    }

    /// A lookup will never finish (its node died, or the run ended).
    pub fn lookup_unfinished(&mut self) {
        self.lookups_unfinished += 1;
    }

    /// A message was sent at `now`; `lost` if the loss model dropped it.
    pub fn message_sent(&mut self, now: Instant, lost: bool) {
        self.messages_sent += 1;
        let row = self.row(now);
        row.messages += 1;
        if lost {
            row.messages_lost += 1;
            self.messages_lost += 1;
        }
    }

    /// The live count becomes `alive` at `now`.
    pub fn set_alive(&mut self, now: Instant, alive: u64) {
        self.advance_alive(now);
        self.alive = alive;
    }

    /// Integrates the live count up to `now` (capped at the end of the run).
    pub fn advance_alive(&mut self, now: Instant) {
        let now = now.min(self.end);
        while self.alive_at < now {
            let i = self.row_of(self.alive_at);
            let (_, row_end) = self.row_span(i);
            let upto = if row_end > self.alive_at {
                row_end.min(now)
            } else {
                now
            };
            let ns = (upto - self.alive_at).as_nanos();
            let add = ns * u128::from(self.alive);
            self.alive_integral += add;
            self.rows[i].alive_integral += add;
            self.alive_at = upto;
        }
    }

    /// Nodes live now.
    pub fn alive(&self) -> u64 {
        self.alive
    }

    /// End of row `i`: record the live count and object replication there.
    pub fn close_row(&mut self, i: usize, replicas_mean: f64) {
        let alive = self.alive;
        let (below_rf, unavailable) = (self.durability.below_rf(), self.durability.unavailable());
        if let Some(r) = self.rows.get_mut(i) {
            r.alive_end = alive;
            r.replicas_mean = replicas_mean;
            r.below_rf = below_rf;
            r.unavailable = unavailable;
        }
    }

    /// A get issued at `started` ended.
    pub fn get_done(&mut self, started: Instant, outcome: GetOutcome) {
        self.gets += 1;
        let row = self.row(started);
        row.gets += 1;
        if let GetOutcome::Served {
            latency,
            intra,
            parts,
        } = outcome
        {
            row.gets_ok += 1;
            self.gets_ok += 1;
            self.get_search.push(parts.search.as_nanos() as u64);
            self.get_probe.push(parts.probe.as_nanos() as u64);
            self.get_fetch.push(parts.fetch.as_nanos() as u64);
            let ns = latency.as_nanos() as u64;
            self.get_latencies.push(ns);
            if intra {
                self.get_latencies_intra.push(ns);
            } else {
                self.get_latencies_inter.push(ns);
            }
        }
    }

    /// `bytes` of repair copies arrived at `now`.
    pub fn repair_arrived(&mut self, now: Instant, bytes: u64) {
        self.repair_bytes += bytes;
        self.row(now).repair_bytes += bytes;
    }

    /// Sorts every latency vector (call once, when the run is over).
    pub fn seal(&mut self) {
        self.latencies.sort_unstable();
        self.get_latencies.sort_unstable();
        self.get_latencies_intra.sort_unstable();
        self.get_latencies_inter.sort_unstable();
        self.get_search.sort_unstable();
        self.get_probe.sort_unstable();
        self.get_fetch.sort_unstable();
        self.transfer_waits.sort_unstable();
        self.repair_waits.sort_unstable();
        self.get_waits.sort_unstable();
        self.durability.restore_ns.sort_unstable();
        for r in &mut self.rows {
            r.latencies.sort_unstable();
        }
    }
}

/// The nearest-rank `p`-quantile (0 < p ≤ 1) of a sorted slice; `None` if empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The nearest-rank `p`-quantile of a histogram (`hist[v]` = count of value v).
pub fn histogram_percentile(hist: &[u64], p: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (v, &c) in hist.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(v as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(95));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(histogram_percentile(&[1, 2, 7], 0.5), Some(2));
        assert_eq!(histogram_percentile(&[1, 2, 7], 0.3), Some(1));
    }

    #[test]
    fn alive_integral_splits_across_rows() {
        let s = Duration::from_secs(1);
        let mut m = Metrics::new(s * 10, s * 4);
        m.set_alive(Instant::ZERO, 10);
        m.set_alive(Instant::ZERO + s * 6, 20);
        m.advance_alive(Instant::ZERO + s * 100);
        let ns = 1_000_000_000u128;
        assert_eq!(m.rows[0].alive_integral, 40 * ns);
        assert_eq!(m.rows[1].alive_integral, (20 + 40) * ns);
        assert_eq!(m.rows[2].alive_integral, 40 * ns);
        assert_eq!(m.alive_integral, 140 * ns);
    }
}
