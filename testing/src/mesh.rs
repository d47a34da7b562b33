//! [`Mesh`]: N node processes joined through node 0, and the answer a lookup must give.
//!
//! Node 0 starts a new mesh; nodes 1.. bootstrap off it, the odd ones by address alone
//! (`HOST:PORT`, learning node 0's id from the handshake) and the even ones by `ID@HOST:PORT`,
//! so both forms are exercised in every mesh. [`expected_closest`] computes, outside the
//! nodes, what an exact lookup must return, with the same key derivation the overlay uses
//! (`Key::for_node`).

use std::time::{Duration, Instant};

use overlay::Key;
use wire::NodeId;

use crate::HarnessError;
use crate::node::{NodeProcess, NodeSpec, POLL};
use crate::wait::poll_until_ok;

/// Nodes joined through node 0.
#[derive(Debug)]
pub struct Mesh {
    /// The nodes, node 0 first.
    pub nodes: Vec<NodeProcess>,
}

impl Mesh {
    /// Starts `n` nodes (`customize` adjusts each spec); node 0 is healthy when this returns,
    /// the others are starting.
    pub fn start(n: usize, customize: impl Fn(usize, &mut NodeSpec)) -> Result<Mesh, HarnessError> {
        let mut spec0 = NodeSpec::new("node-0");
        customize(0, &mut spec0);
        let mut first = NodeProcess::start(spec0)?;
        first.wait_healthy(Duration::from_secs(10))?;
        let id0 = first.node_id()?;
        let addr0 = first.quic();
        let mut nodes = vec![first];
        for i in 1..n {
            let peer = if i % 2 == 1 {
                addr0.to_string()
            } else {
                format!("{id0}@{addr0}")
            };
            let mut spec = NodeSpec::new(format!("node-{i}")).bootstrap(peer);
            customize(i, &mut spec);
            nodes.push(NodeProcess::start(spec)?);
        }
        Ok(Mesh { nodes })
    }

    /// Waits until every node answers `/readyz` 200, all within one `timeout`; returns how
    /// long each took from the call.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Vec<Duration>, HarnessError> {
        let started = Instant::now();
        let mut took = Vec::new();
        for node in &mut self.nodes {
            let left = timeout.saturating_sub(started.elapsed());
            node.wait_ready(left)?;
            took.push(started.elapsed());
        }
        Ok(took)
    }

    /// Every node's id, in node order.
    pub fn ids(&mut self) -> Result<Vec<NodeId>, HarnessError> {
        self.nodes.iter_mut().map(NodeProcess::node_id).collect()
    }

    /// Waits until the routing table of every node in `which` holds every id in `want`
    /// other than its own.
    pub fn wait_tables_hold(
        &self,
        which: &[usize],
        want: &[NodeId],
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let ids: Vec<NodeId> = which
            .iter()
            .map(|&i| self.nodes[i].status().and_then(|s| own_id(&s)))
            .collect::<Result<_, _>>()?;
        poll_until_ok("routing tables to fill", timeout, POLL * 5, || {
            for (&i, me) in which.iter().zip(&ids) {
                let table = self.nodes[i].routing_ids()?;
                if want.iter().any(|w| w != me && !table.contains(w)) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })
    }
}

fn own_id(status: &serde_json::Value) -> Result<NodeId, HarnessError> {
    status["node_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HarnessError::Unexpected {
            what: "/v1/status".into(),
            why: format!("no node_id: {status}"),
        })
}

/// The `k` nodes of `all` closest to `key` by XOR distance of their DHT keys, nearest
/// first, leaving out `querier` (a node never lists itself).
pub fn expected_closest(key: &Key, all: &[NodeId], querier: &NodeId, k: usize) -> Vec<NodeId> {
    let mut others: Vec<NodeId> = all.iter().filter(|id| *id != querier).copied().collect();
    others.sort_by_key(|id| Key::for_node(id).distance(key));
    others.truncate(k);
    others
}
