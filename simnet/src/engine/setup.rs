//! Time zero and the scenario-driven events: each slot's churn state, the initial network
//! (ideal tables or real joins), the schedule of churn, trace and failure events.
//!
//! Ideal tables are built from the sorted global view in O(n log n · k) overall, never
//! O(n²): the members of bucket i of node x are one contiguous range of the sorted keys
//! (those sharing the first 255 − i bits with x and differing at the next), and up to k of
//! them are drawn uniformly from that range (Floyd's sampling). Each node's draws come from
//! its own stream, so the tables do not depend on the order nodes are filled in.

use std::time::Duration;

use overlay::Instant;
use rand::Rng;

use super::nodes::Slot;
use super::queue::Ev;
use super::workload::Work;
use super::{Sim, SimError};
use crate::churn::Schedule;
use crate::latency::Network;
use crate::links::Links;
use crate::metrics::Metrics;
use crate::oracle::LiveSet;
use crate::peer::SimPeer;
use crate::scenario::{Bootstrap, ChurnModel, Scenario};
use crate::seed::{self, Stream};

/// Seconds (possibly huge, from a heavy-tailed draw) as a delay from `now`.
fn after(now: Instant, secs: f64) -> Instant {
    now + Duration::from_secs_f64(secs.clamp(0.0, 1e10))
}

/// `k` distinct indices of `0..m`, uniformly (Floyd's algorithm), or all if `m <= k`.
fn sample_indices(m: usize, k: usize, rng: &mut impl Rng) -> Vec<usize> {
    if m <= k {
        return (0..m).collect();
    }
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    for j in m - k..m {
        let t = rng.gen_range(0..=j);
        chosen.push(if chosen.contains(&t) { j } else { t });
    }
    chosen
}

pub(super) fn build(sc: Scenario, check: bool) -> Sim {
    let n = sc.nodes;
    let master = sc.seed;
    let end = Instant::ZERO + sc.duration;
    let mut sim = Sim {
        now: Instant::ZERO,
        end,
        queue: Default::default(),
        slots: (0..n).map(|_| Slot::default()).collect(),
        live: LiveSet::new(),
        net: Network::new(&sc.latency, n, master),
        links: {
            let mut links = Links::new(n, sc.latency.connections_max);
            if sc.latency.zero_rtt {
                links.keep_tickets();
            }
            links
        },
        churn: Schedule::new(&sc.churn.model, n, master),
        join_rng: seed::rng(master, Stream::Join, 0, 0),
        work: Work::new(&sc),
        pending: Default::default(),
        metrics: Metrics::new(sc.duration, sc.output.interval),
        events: 0,
        check,
        violation: None,
        cut: None,
        announced: None,
        acked: Default::default(),
        pipes: sc.bandwidth.map(|b| crate::bandwidth::Pipes::new(b, n)),
        dht_config: std::sync::Arc::new(sc.dht.clone()),
        sc,
    };
    if !sim.draws_per_message() {
        sim.links.unnumbered();
    }
    sim.metrics.durability = crate::durability::Durability::new(sim.sc.workload.replication.rf);
    if sim.sc.soak.is_some() {
        // The record checker needs every (key, provider) announced since time zero.
        sim.record_announcements();
    }
    sim.initial_churn_state();
    match sim.sc.bootstrap {
        Bootstrap::Ideal => sim.ideal_network(),
        Bootstrap::Join { window } => sim.schedule_joins(window),
    }
    // Pushed first, so a failure at the same instant as a lookup happens before it.
    if sim.sc.failure.fraction > 0.0 {
        sim.queue
            .push(Instant::ZERO + sim.sc.failure.at, Ev::Failure);
    }
    sim.schedule_workload();
    let rows = sim.metrics.rows.len();
    for j in 1..rows {
        let (start, _) = sim.metrics.row_span(j);
        sim.queue.push(start, Ev::Sample);
    }
    sim
}

impl Sim {
    /// Each slot's churn state at time zero, and its first transition.
    fn initial_churn_state(&mut self) {
        let n = self.sc.nodes;
        if let Some(mut sched) = self.churn.take() {
            for slot in 0..n {
                let (up, left) = sched.initial(slot);
                self.slots[slot as usize].churn_up = up;
                self.queue.push(after(Instant::ZERO, left), Ev::Churn(slot));
            }
            self.churn = Some(sched);
            return;
        }
        for s in &mut self.slots {
            s.churn_up = true;
        }
        if let ChurnModel::Trace { events } = &self.sc.churn.model {
            // Transitions at time zero set the initial state; the rest are scheduled.
            let mut first_later = events.len();
            for (i, e) in events.iter().enumerate() {
                if !e.at.is_zero() {
                    first_later = i;
                    break;
                }
                self.slots[e.slot as usize].churn_up = e.up;
            }
            if let Some(e) = events.get(first_later) {
                self.queue
                    .push(Instant::ZERO + e.at, Ev::Trace(first_later as u32));
            }
        }
    }

    /// Every initially-up node, with ideal tables.
    fn ideal_network(&mut self) {
        let mut up: Vec<u32> = (0..self.sc.nodes)
            .filter(|&s| self.slots[s as usize].churn_up)
            .collect();
        // Spawned in the order of the keys they will take, so that each joins the sorted
        // live set at its end: in slot order each insert moved half the set, 9 TB of
        // memmove at 10^6 nodes. The sort is stable, so of two slots given the same key
        // (a scenario's chosen keys) the lower slot still takes it and the other stays down,
        // as in slot order; nothing else in a spawn depends on the order.
        up.sort_by_cached_key(|&slot| self.first_key(slot));
        for &slot in &up {
            self.spawn(slot);
        }
        up.sort_unstable();
        let k = self.sc.dht.k;
        // The live nodes' handles in key order: the i-th live node's handle is `ranked[i]`,
        // found from its index in the sorted live set without reading the set (or the slot)
        // per contact. Spawned in key order, the handles also sit in the arena in the order
        // the tables' buckets take them. At 100k nodes, reading each contact's handle from
        // its slot instead cost two cache misses per contact, 26 M of them.
        let ranked: Vec<SimPeer> = (0..self.live.len())
            .filter_map(|i| self.live.get(i))
            .map(|(_, slot)| self.peer_of(slot))
            .collect();
        for &slot in &up {
            let now = self.local_now(slot);
            let me = self.slots[slot as usize].key;
            let mut rng = seed::rng(self.sc.seed, Stream::Ideal, slot.into(), 0);
            let buckets = self.live.buckets_of(&me);
            let Some(dht) = self.slots[slot as usize].dht.as_mut() else {
                continue;
            };
            for (_, range) in buckets {
                let members = &ranked[range];
                for j in sample_indices(members.len(), k, &mut rng) {
                    dht.insert_peer(now, members[j]);
                    // Drain as we go: an event queue grown to hundreds would keep its
                    // capacity, a few KiB per node that 100k nodes cannot spare.
                    while dht.poll_event().is_some() {}
                }
            }
            dht.assume_joined();
            self.after_input(slot, false);
        }
    }

    /// The first initially-up node starts the network; the others join through the real
    /// protocol at evenly spread times over `window`.
    fn schedule_joins(&mut self, window: Duration) {
        let up: Vec<u32> = (0..self.sc.nodes)
            .filter(|&s| self.slots[s as usize].churn_up)
            .collect();
        let Some((&first, rest)) = up.split_first() else {
            return;
        };
        self.start_node(first);
        let m = rest.len() as u128;
        for (j, &slot) in rest.iter().enumerate() {
            self.slots[slot as usize].join_pending = true;
            let at_ns = window.as_nanos() * (j as u128 + 1) / m.max(1);
            let at = Instant::ZERO + Duration::from_nanos(at_ns as u64);
            self.queue.push(at, Ev::Join(slot));
        }
    }

    pub(super) fn on_join(&mut self, slot: u32) {
        let s = &self.slots[slot as usize];
        if s.join_pending && s.churn_up && !s.removed {
            self.start_node(slot);
        }
    }

    /// The slot's renewal process changes state; the next change is scheduled.
    pub(super) fn on_churn(&mut self, slot: u32) {
        if self.slots[slot as usize].removed {
            return;
        }
        let up = !self.slots[slot as usize].churn_up;
        self.slots[slot as usize].churn_up = up;
        if up {
            self.start_node(slot);
        } else {
            self.stop_node(slot);
        }
        if let Some(sched) = self.churn.as_mut() {
            let len = sched.next_period(slot, up);
            let at = after(self.now, len);
            self.queue.push(at, Ev::Churn(slot));
        }
    }

    /// Applies trace transition `n` and every one at the same time after it.
    pub(super) fn on_trace(&mut self, n: u32) {
        let ChurnModel::Trace { events } = &self.sc.churn.model else {
            return;
        };
        let Some(&e) = events.get(n as usize) else {
            return;
        };
        let next = events.get(n as usize + 1).map(|x| x.at);
        let slot = &mut self.slots[e.slot as usize];
        if !slot.removed && slot.churn_up != e.up {
            slot.churn_up = e.up;
            if e.up {
                self.start_node(e.slot);
            } else {
                self.stop_node(e.slot);
            }
        }
        if let Some(at) = next {
            self.queue.push(Instant::ZERO + at, Ev::Trace(n + 1));
        }
    }

    /// Removes `fraction` of the live nodes at once, for good.
    pub(super) fn on_failure(&mut self) {
        let mut live: Vec<u32> = (0..self.live.len())
            .filter_map(|i| self.live.get(i).map(|(_, s)| s))
            .collect();
        let count =
            ((self.sc.failure.fraction * live.len() as f64).round() as usize).min(live.len());
        let mut rng = seed::rng(self.sc.seed, Stream::Failure, 0, 0);
        for j in 0..count {
            let r = rng.gen_range(j..live.len());
            live.swap(j, r);
        }
        for &slot in &live[..count] {
            self.slots[slot as usize].removed = true;
            self.stop_node(slot);
        }
        if self.check && self.live.len() != live.len() - count {
            let message = format!("{} live after removing {count}", self.live.len());
            self.violation.get_or_insert(SimError::Invariant {
                at_s: self.now.as_duration().as_secs_f64(),
                slot: u32::MAX,
                message,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn floyd_sampling_is_distinct_and_in_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for m in [0, 1, 5, 20, 21, 100, 5000] {
            let mut v = sample_indices(m, 20, &mut rng);
            assert_eq!(v.len(), m.min(20));
            v.sort_unstable();
            v.dedup();
            assert_eq!(v.len(), m.min(20));
            assert!(v.iter().all(|&i| i < m));
        }
    }
}
