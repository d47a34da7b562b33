//! The probe cascade, measured where simnet cannot see it: real node processes, their QUIC
//! connections and their DHT driver, under lookup load.
//!
//! Liveness pings are meant to be bounded by the questionable rule (BEP 5): only an entry
//! silent for longer than the liveness interval is pinged, one probe per bucket at a time,
//! whatever the traffic. Before issue 12 every new QUIC connection, and every answer from a
//! peer whose bucket was full, pinged the bucket's oldest entry; each ping could open a
//! connection, which pinged again. This test counts DHT pings sent against FIND_NODEs sent,
//! over a window of lookup load, from the nodes' own `/metrics`, and fails above
//! [`PINGS_PER_FIND_NODE_MAX`].
//!
//! Size: the issue's 30 processes, with k = 4 so that buckets fill (with the default k = 20
//! no bucket of a 30-node mesh holds more than 15 peers, and nothing could probe whatever
//! the rule). Lookups on loopback take milliseconds: in a debug build on this 2-core
//! machine, start, join, 750 lookups and the metrics take about 2 s (the test binary's
//! build is the rest), far inside CI's minute.
//!
//! Reproduce a run: `MESH_SEED=<printed seed> cargo test -p testing --test dht_probes`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use overlay::Key;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use testing::{Mesh, NodeProcess, seed};

/// Processes in the mesh.
const NODES: usize = 30;
/// Bucket size of every node: small enough that most buckets fill in a mesh of [`NODES`].
const K: usize = 4;
/// Lookups each node runs during the load window (all nodes at once).
const LOOKUPS_PER_NODE: usize = 25;
/// The issue's bound: a cascade sends about one ping per contact, the questionable rule
/// close to none while entries are fresh.
const PINGS_PER_FIND_NODE_MAX: f64 = 0.2;

/// Mesh-wide sums of the DHT counters this test reads.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    pings_sent: f64,
    find_node_sent: f64,
    find_node_handled: f64,
    failed_local: f64,
    failed_peer: f64,
}

impl Counts {
    fn read(nodes: &[NodeProcess]) -> Counts {
        let mut c = Counts::default();
        for node in nodes {
            let m = |s: &str| node.metric(s).unwrap().unwrap_or(0.0);
            c.pings_sent += m(r#"dht_rpcs_sent_total{kind="ping"}"#);
            c.find_node_sent += m(r#"dht_rpcs_sent_total{kind="find_node"}"#);
            c.find_node_handled += m(r#"dht_requests_handled_total{kind="find_node"}"#);
            c.failed_local += m(r#"dht_rpcs_failed_total{blame="local"}"#);
            c.failed_peer += m(r#"dht_rpcs_failed_total{blame="peer"}"#);
        }
        c
    }

    fn since(self, before: Counts) -> Counts {
        Counts {
            pings_sent: self.pings_sent - before.pings_sent,
            find_node_sent: self.find_node_sent - before.find_node_sent,
            find_node_handled: self.find_node_handled - before.find_node_handled,
            failed_local: self.failed_local - before.failed_local,
            failed_peer: self.failed_peer - before.failed_peer,
        }
    }

    fn pings_per_find_node(&self) -> f64 {
        self.pings_sent / self.find_node_sent.max(1.0)
    }
}

#[test]
fn lookup_load_does_not_start_a_probe_cascade() {
    let seed = seed::seed(seed::MESH_SEED, "dht_probes");
    let started = Instant::now();
    let mut mesh = Mesh::start(NODES, |_, spec| {
        spec.config_toml = Some(format!("k = {K}\n"));
    })
    .unwrap();
    mesh.wait_ready(Duration::from_secs(40)).unwrap();
    println!("{NODES} nodes ready after {:?}", started.elapsed());
    let joined = Counts::read(&mesh.nodes);

    let load = Instant::now();
    std::thread::scope(|s| {
        for (i, node) in mesh.nodes.iter().enumerate() {
            s.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ i as u64);
                for _ in 0..LOOKUPS_PER_NODE {
                    let key = Key::random(&mut rng);
                    let got = node.lookup(&key).unwrap();
                    assert!(!got.closest.is_empty(), "{}: {got:?}", node.name());
                }
            });
        }
    });
    let all = Counts::read(&mesh.nodes);
    let window = all.since(joined);
    println!(
        "{} lookups in {:?}; join: {joined:?}; load window: {window:?}",
        NODES * LOOKUPS_PER_NODE,
        load.elapsed()
    );
    println!(
        "pings per FIND_NODE sent: {:.3} in the load window, {:.3} since start",
        window.pings_per_find_node(),
        all.pings_per_find_node()
    );

    // The load happened: every lookup asked at least one peer.
    assert!(
        window.find_node_sent >= (NODES * LOOKUPS_PER_NODE) as f64,
        "{window:?}"
    );
    // Every FIND_NODE sent was handled by a node of the mesh, and no request failed for a
    // shortage of ours (12 nodes are far from any local limit).
    assert!(
        all.find_node_handled >= all.find_node_sent - all.failed_peer,
        "{all:?}"
    );
    assert_eq!(all.failed_local, 0.0, "{all:?}");
    assert!(
        window.pings_per_find_node() <= PINGS_PER_FIND_NODE_MAX,
        "probe cascade: {:.3} pings per FIND_NODE under lookup load (bound \
         {PINGS_PER_FIND_NODE_MAX}); seed {seed}; {window:?}",
        window.pings_per_find_node()
    );
}
