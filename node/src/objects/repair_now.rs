//! Repair on an operator's word (`macronode repair`, the admin plane's `POST /v1/repair`):
//! for an object this node holds, find the RF closest nodes now, make each prove a copy or
//! receive one, and report who holds it against who should.
//!
//! The planner repairs on its own schedule; this runs a write's placements
//! (`overlay::Write`, registered with the planner through `begin_external` so the two
//! never push the same copy at once) at once and waits for every one: a target busy with
//! another pusher's copy is asked again, a placement still running at twice the write's
//! wait is cut.

use std::collections::BTreeMap;

use overlay::{Key, PlaceEnd, Write};
use wire::NodeId;

use super::fetch::Placed;
use super::{Objects, WriteRun};
use crate::dht::{Clock, NetPeer};
use crate::store::Hash;

/// Objects one `repair --all` walks at most.
pub const REPAIR_ALL_MAX: usize = 10_000;

/// One of the RF closest and what repair found there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    /// The node.
    pub id: NodeId,
    /// It proved a copy (held before, or received now).
    pub holds: bool,
    /// It received the bytes now.
    pub pushed: bool,
    /// Why it holds none, if it does not.
    pub error: Option<String>,
}

/// What a repair of one object found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The copies the mesh keeps.
    pub rf: usize,
    /// Whether this node is among the RF closest (its copy counts).
    pub local_counts: bool,
    /// The other RF closest nodes, nearest first.
    pub closest: Vec<TargetReport>,
}

impl RepairReport {
    /// Copies among the RF closest after the repair (ours included when it counts).
    pub fn copies(&self) -> usize {
        usize::from(self.local_counts) + self.closest.iter().filter(|p| p.holds).count()
    }
}

/// Why an object cannot be repaired from here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepairError {
    /// This node holds no copy to repair from.
    #[error("this node holds no copy of the object: run the repair on a node that does")]
    NotHeld,
    /// The closest nodes could not be looked up (the DHT driver stopped).
    #[error("the closest nodes could not be looked up: {0}")]
    Lookup(String),
}

impl Objects {
    /// Makes each of the RF closest nodes prove or receive a copy of `hash`, now.
    pub async fn repair_now(&self, hash: Hash) -> Result<RepairReport, RepairError> {
        let size = self.store.size(&hash).ok_or(RepairError::NotHeld)?;
        let (targets, self_in) = self
            .targets(hash)
            .await
            .map_err(|e| RepairError::Lookup(e.to_string()))?;
        let wait = self.limits.put_wait(size);
        // The placements run on a task of their own, which an operator who hangs up
        // (dropping this future) does not stop: the planner hears how every transfer it
        // registered ended.
        let placing = tokio::spawn(self.clone().place_at_each(hash, size, targets.clone()));
        let (mut ended, lost) = match placing.await {
            Ok(ended) => (ended, None),
            Err(e) => (
                BTreeMap::new(),
                Some(format!("the repair's task failed: {e}")),
            ),
        };
        let closest = targets
            .iter()
            .map(|p| {
                let mut report = TargetReport {
                    id: p.id,
                    holds: false,
                    pushed: false,
                    error: None,
                };
                match ended.remove(&p.key) {
                    // Still running at the cut (twice the write's wait), unless the task
                    // running them all was lost.
                    None => {
                        report.error = lost
                            .clone()
                            .or_else(|| Some(format!("cut after {:?}", wait * 2)))
                    }
                    Some(Placed { end, error }) => match end {
                        PlaceEnd::Verified { moved } => {
                            report.holds = true;
                            report.pushed = moved;
                        }
                        PlaceEnd::Absent => report.error = Some("absent".into()),
                        PlaceEnd::Failed(fault) => {
                            report.error =
                                Some(error.map_or_else(|| format!("{fault:?}"), |e| e.to_string()))
                        }
                    },
                }
                report
            })
            .collect();
        Ok(RepairReport {
            rf: self.limits.rf,
            local_counts: self_in,
            closest,
        })
    }

    /// Places a copy at each of `targets` under a write's rules (`overlay::Write`: a target
    /// busy taking the object in from another pusher is asked again while the write's wait
    /// lasts; a placement still running at twice the wait is cut), waiting for every one,
    /// and returns how each ended; a target cut is missing.
    async fn place_at_each(
        self,
        hash: Hash,
        size: u64,
        targets: Vec<NetPeer>,
    ) -> BTreeMap<Key, Placed> {
        let clock = Clock::new();
        // Never answered early: an operator's repair waits for every target.
        let every = targets.len() + 1;
        let wait = self.limits.put_wait(size);
        let mut write = Write::new(clock.now(), targets, every, wait);
        // Proven first: most of the closest hold the object already.
        let mut run =
            WriteRun::registered(self, hash, size, clock, &write, BTreeMap::new(), false).await;
        loop {
            run.start_placements(&mut write, clock.now());
            if write.finished() {
                return run.ended;
            }
            run.next_report(&mut write).await;
        }
    }
}
