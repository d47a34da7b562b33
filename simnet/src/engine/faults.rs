//! Faults the swarm injects on top of a scenario, and the read-only views its checkers use.
//!
//! A scenario already expresses loss, churn and crashes; the swarm adds what must change in
//! the middle of a run: a partition (a [`Cut`] between groups of slots for a while) and the
//! loss rate (healed to zero for the liveness phase). The checkers judge the nodes from
//! outside, through [`NodeView`]s built from the real state machines' accessors, and through
//! the log of every announcement the engine made on a node's behalf.

use std::collections::BTreeSet;

use overlay::{Instant, Key};

use super::Sim;

/// A partition: while `from <= t < until`, no message crosses between slots of different
/// groups (QUIC gives up; handshakes fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Each slot's group.
    pub group: Vec<u8>,
    /// When the cut starts.
    pub from: Instant,
    /// When it heals.
    pub until: Instant,
}

impl Cut {
    /// Whether a message from `a` to `b` sent at `t` is cut.
    pub fn blocks(&self, a: u32, b: u32, t: Instant) -> bool {
        t >= self.from && t < self.until && self.group.get(a as usize) != self.group.get(b as usize)
    }
}

/// One live node as a checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Its slot.
    pub slot: u32,
    /// Its id.
    pub key: Key,
    /// The ids in its routing table.
    pub table: Vec<Key>,
    /// Provider records it holds for others: (object key, provider id).
    pub records: Vec<(Key, Key)>,
    /// Objects it stores (and so announces).
    pub objects: Vec<Key>,
}

impl Sim {
    /// Changes the loss rate from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.net.set_loss(loss);
    }

    /// Installs a partition (replacing any other).
    pub fn set_cut(&mut self, cut: Cut) {
        self.cut = Some(cut);
    }

    /// Whether a message from `a` to `b` sent now is cut by the partition.
    pub(super) fn cut_blocks(&self, a: u32, b: u32, t: Instant) -> bool {
        self.cut.as_ref().is_some_and(|c| c.blocks(a, b, t))
    }

    /// From now on, log every (object key, provider id) the engine announces.
    pub fn record_announcements(&mut self) {
        self.announced.get_or_insert_with(BTreeSet::new);
    }

    /// Every (object key, provider id) announced since [`Sim::record_announcements`].
    pub fn announced(&self) -> Option<&BTreeSet<(Key, Key)>> {
        self.announced.as_ref()
    }

    /// Every live node, in slot order, through its state machine's read-only accessors.
    pub fn node_views(&self) -> Vec<NodeView> {
        let mut out = Vec::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(dht) = s.dht.as_ref() else {
                continue;
            };
            out.push(NodeView {
                slot: slot as u32,
                key: dht.local().key,
                table: dht.routing_table().iter().map(|e| e.peer.key).collect(),
                records: dht
                    .provider_store()
                    .iter()
                    .map(|(k, p)| (*k, p.key))
                    .collect(),
                objects: s
                    .store
                    .as_ref()
                    .map(|st| st.objects.keys().copied().collect())
                    .unwrap_or_default(),
            });
        }
        out
    }

    /// The true `n` closest live nodes to `target`, closest first.
    pub fn true_closest(&self, target: &Key, n: usize) -> Vec<Key> {
        self.live
            .closest(target, n, None)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}
