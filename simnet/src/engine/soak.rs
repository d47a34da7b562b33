//! A soak's eyes (`[soak]`, issue 14 item 5): at the end of every `timeseries.csv` row, every
//! live node's state is sampled and the safety checkers run over the whole network.
//!
//! The state is read through the nodes' own accessors (`Dht::routing_table`,
//! `Dht::provider_records`, `Dht::queries_running`, `Planner::objects`) and, where overlay
//! exposes nothing, from what simnet keeps for the node (operations the workload is waiting
//! on, open connections, the engine's queue). Not sampled, for want of an accessor in
//! overlay: replacement-cache entries, in-flight and queued RPCs, queued transmits and
//! events, the planner's queued and in-flight transfers.
//!
//! The checks are the swarm's (`swarm::check`): no table holds its own node, every provider
//! record names a provider that announced that key; plus one of the soak's own: every
//! acknowledged object (a put whose first copy was stored) still has a copy somewhere, on a
//! live node or on a down node that will come back with its disk (`rejoin_same_id`).
//! Violations are recorded with their time; the run goes on, and the soak fails at its end.

use std::collections::{BTreeMap, BTreeSet};

use overlay::Key;

use super::Sim;
use crate::metrics::StateSample;
use crate::swarm::check;

impl Sim {
    /// Samples every live node's state into row `row` and runs the safety checks (a no-op
    /// without `[soak]`).
    pub(super) fn soak_row(&mut self, row: usize) {
        if self.sc.soak.is_none() {
            return;
        }
        let sample = self.state_sample();
        if let Some(r) = self.metrics.rows.get_mut(row) {
            r.state = Some(sample);
        }
        self.soak_checks(row);
    }

    /// Every live node's state, summed and maximised.
    pub fn state_sample(&self) -> StateSample {
        let mut pending: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for (slot, inc, _) in self.pending.keys() {
            *pending.entry((*slot, *inc)).or_insert(0) += 1;
        }
        let mut sample = StateSample::default();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(dht) = s.dht.as_ref() else {
                continue;
            };
            let slot = slot as u32;
            sample.add([
                dht.routing_table().len() as u64,
                dht.provider_records() as u64,
                dht.queries_running() as u64,
                s.store.as_ref().map_or(0, |st| st.planner.objects() as u64),
                pending.get(&(slot, s.inc)).copied().unwrap_or(0),
                u64::from(self.links.connections(slot)),
                0,
            ]);
        }
        // The engine's queue is shared: its mean per live node is its length over them.
        let queued = self.queue.len() as u64;
        sample.sum[6] = queued;
        sample.max[6] = queued;
        sample
    }

    /// Every object some node holds, live or down with its disk (`rejoin_same_id`).
    pub(super) fn held_anywhere(&self) -> BTreeSet<Key> {
        let mut held = BTreeSet::new();
        for s in &self.slots {
            if let (Some(_), Some(st)) = (&s.dht, &s.store) {
                held.extend(st.objects.keys().copied());
            }
            if let Some(saved) = s.saved.as_ref() {
                held.extend(saved.object_keys());
            }
        }
        held
    }

    /// The swarm's safety checkers and the lost-object check, over the live nodes now.
    fn soak_checks(&mut self, row: usize) {
        let views = self.node_views();
        let mut found: Vec<String> = check::tables_exclude_self(&views)
            .iter()
            .map(ToString::to_string)
            .collect();
        if let Some(log) = self.announced.as_ref() {
            found.extend(
                check::records_announced(&views, log)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        let held = self.held_anywhere();
        for key in &self.acked {
            if !held.contains(key) {
                let short: String = key.0[..4].iter().map(|b| format!("{b:02x}")).collect();
                found.push(format!(
                    "object {short}: acknowledged, and no copy left on any node, live or down"
                ));
            }
        }
        let now = self.now;
        if let Some(r) = self.metrics.rows.get_mut(row) {
            r.violations += found.len() as u64;
        }
        for v in found {
            self.metrics.violation(now, v);
        }
    }
}
