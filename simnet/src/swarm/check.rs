//! The swarm's checkers: pure functions over [`NodeView`]s, outside the nodes, so a test can
//! feed them a broken state and watch them object.
//!
//! Safety (every moment a checker looks): no routing table holds its own node; every
//! provider record names a provider that really announced that key. After healing: every
//! stored object has a record at one of its k closest live nodes.

use std::collections::BTreeSet;

use overlay::Key;

use crate::engine::faults::NodeView;

/// A broken property, with what a reader needs to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A node's routing table holds the node itself.
    SelfInTable {
        /// The node's slot.
        slot: u32,
    },
    /// A provider record names a provider that never announced its key.
    InventedRecord {
        /// The slot holding the record.
        slot: u32,
        /// The object key.
        key: Key,
        /// The provider the record names.
        provider: Key,
    },
    /// A stored object has no record at any of its k closest live nodes.
    RecordMissing {
        /// The object key.
        key: Key,
    },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |k: &Key| {
            k.0[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        match self {
            Violation::SelfInTable { slot } => write!(f, "slot {slot}: table holds itself"),
            Violation::InventedRecord {
                slot,
                key,
                provider,
            } => write!(
                f,
                "slot {slot}: record for {} names {} which never announced it",
                short(key),
                short(provider)
            ),
            Violation::RecordMissing { key } => {
                write!(f, "object {}: no record at its k closest", short(key))
            }
        }
    }
}

/// No routing table holds its own node.
pub fn tables_exclude_self(views: &[NodeView]) -> Vec<Violation> {
    views
        .iter()
        .filter(|v| v.table.contains(&v.key))
        .map(|v| Violation::SelfInTable { slot: v.slot })
        .collect()
}

/// Every provider record names a provider that announced its key (`announced` holds
/// (object key, provider id) pairs).
pub fn records_announced(views: &[NodeView], announced: &BTreeSet<(Key, Key)>) -> Vec<Violation> {
    let mut out = Vec::new();
    for v in views {
        for &(key, provider) in &v.records {
            if !announced.contains(&(key, provider)) {
                out.push(Violation::InventedRecord {
                    slot: v.slot,
                    key,
                    provider,
                });
            }
        }
    }
    out
}

/// Every object some live node stores has a record at one of its k closest live nodes;
/// `closest(key)` gives those nodes' ids.
pub fn records_reachable(
    views: &[NodeView],
    mut closest: impl FnMut(&Key) -> Vec<Key>,
) -> Vec<Violation> {
    let stored: BTreeSet<Key> = views
        .iter()
        .flat_map(|v| v.objects.iter().copied())
        .collect();
    let mut out = Vec::new();
    for key in stored {
        let near: BTreeSet<Key> = closest(&key).into_iter().collect();
        let found = views
            .iter()
            .filter(|v| near.contains(&v.key))
            .any(|v| v.records.iter().any(|(k, _)| *k == key));
        if !found {
            out.push(Violation::RecordMissing { key });
        }
    }
    out
}

/// The honest nodes eclipsed by liars: each knows only liars (`liars` holds their ids), or
/// nobody at all after it caught the liars it knew lying (`Dht::peer_lied`) with liars as
/// its only bootstrap contacts, and no other node in `views` knows it. Such a node hears
/// only made-up contacts, so nothing the protocol does can bring it back (known defect
/// D8).
pub fn eclipsed(views: &[NodeView], liars: &[Key]) -> Vec<u32> {
    let all_liars = |ids: &[Key]| !ids.is_empty() && ids.iter().all(|id| liars.contains(id));
    views
        .iter()
        .filter(|v| all_liars(&v.table) || (v.table.is_empty() && all_liars(&v.bootstrap)))
        .filter(|v| {
            !views
                .iter()
                .any(|w| w.slot != v.slot && w.table.contains(&v.key))
        })
        .map(|v| v.slot)
        .collect()
}
