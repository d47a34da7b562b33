//! Repair on an operator's word (`macronode repair`, the admin plane's `POST /v1/repair`):
//! for an object this node holds, find the RF closest nodes now, make each prove a copy or
//! receive one, and report who holds it against who should.
//!
//! The planner repairs on its own schedule; this runs the same placement (`place_copy`,
//! registered with the planner through `begin_external` so the two never push the same
//! copy at once) at once and waits for every placement, bounded by the write's wait.

use overlay::{Key, PlaceEnd, TransferFault, TransferOutcome};
use tokio::task::JoinSet;
use wire::NodeId;

use super::Objects;
use super::fetch::Placed;
use crate::store::Hash;

/// A placement still running at the operator's wait: the target was slower than it allows.
const TIMED_OUT: TransferOutcome = TransferOutcome::Failed(TransferFault::TooSlow);

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
        let rf = self.limits.rf;
        let wait = self.limits.put_wait(size);
        let mut running = JoinSet::new();
        for (i, peer) in targets.iter().cloned().enumerate() {
            let objects = self.clone();
            // Each placement runs on a task of its own, which an operator who hangs up
            // (dropping this future and the set) does not abort: the planner hears how
            // every transfer it registered ended.
            let placement = tokio::spawn(async move {
                let id = objects
                    .dht
                    .begin_external(Key(hash), peer.key)
                    .await
                    .ok()
                    .flatten();
                let placed =
                    tokio::time::timeout(wait, objects.place_copy(&peer, hash, size, true, None))
                        .await;
                if let Some(id) = id {
                    let done = placed.as_ref().map_or(TIMED_OUT, |p| p.end.outcome());
                    let _ = objects.dht.transfer_done(id, done).await;
                }
                (i, placed.ok())
            });
            running.spawn(placement);
        }
        let mut closest: Vec<TargetReport> = targets
            .iter()
            .map(|p| TargetReport {
                id: p.id,
                holds: false,
                pushed: false,
                error: Some("no answer".into()),
            })
            .collect();
        while let Some(done) = running.join_next().await {
            let Ok(Ok((i, placed))) = done else { continue };
            let Some(p) = closest.get_mut(i) else {
                continue;
            };
            match placed {
                None => p.error = Some(format!("timed out after {wait:?}")),
                Some(Placed { end, error }) => match end {
                    PlaceEnd::Verified { moved } => {
                        p.holds = true;
                        p.pushed = moved;
                        p.error = None;
                    }
                    PlaceEnd::Absent => p.error = Some("absent".into()),
                    PlaceEnd::Failed(fault) => {
                        p.error =
                            Some(error.map_or_else(|| format!("{fault:?}"), |e| e.to_string()))
                    }
                },
            }
        }
        Ok(RepairReport {
            rf,
            local_counts: self_in,
            closest,
        })
    }
}
