//! `dht.liveness_spread`: an ideal network starts every node at time zero, so without the
//! spread every node finds its whole table questionable at the same instant (one liveness
//! interval in) and probes at once; with it each node's rounds fall at its own share of the
//! interval. Predictions: the most messages in flight at once falls by well over half (a
//! round's pings spread over 60 s instead of one instant); and about as many pings are
//! sent, counted over 179 s: without the spread every node runs two probing rounds (at 60
//! and 120 s), with it a node whose key gives the share s runs its first round at s · 60 s
//! (nothing is questionable yet) and probes at (1 + s) · 60 and (2 + s) · 60 s, both before
//! 179 s unless s is above 0.983 (1.7 % of the nodes). Every lookup stays exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use overlay::Instant;
use simnet::Sim;

/// The most messages in flight at any 100 ms step of 179 simulated seconds, and the run.
fn peak_in_flight(spread: bool) -> (usize, simnet::Summary) {
    let sc = common::scenario(&format!(
        r#"
name = "spread"
nodes = 2000
seed = 4
duration_s = 179

[dht]
liveness_spread = {spread}

[bootstrap]
mode = "ideal"

[latency]
model = "constant"
ms = 50

[workload]
lookups = 500
"#
    ));
    println!(
        "seed = {}, nodes = {}, spread = {spread}",
        sc.seed, sc.nodes
    );
    let mut sim = Sim::new(sc, false);
    let mut peak = 0;
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(179) {
        t += Duration::from_millis(100);
        sim.run_until(Instant::ZERO + t).unwrap();
        peak = peak.max(sim.messages_in_flight());
    }
    sim.run().unwrap();
    let f = sim.finish();
    (peak, simnet::Summary::new(&f, 0.0, 0))
}

#[test]
fn spread_liveness_rounds_do_not_all_fall_in_one_instant() {
    let (at_once, s0) = peak_in_flight(false);
    let (spread, s1) = peak_in_flight(true);
    println!(
        "peak in flight {at_once} -> {spread}; pings {} -> {}",
        s0.requests_ping, s1.requests_ping
    );
    assert!(
        s0.requests_ping > 10_000,
        "the rounds probe the ideal tables"
    );
    assert!(
        spread * 2 < at_once,
        "spread rounds: {spread} in flight at most, against {at_once}"
    );
    let ratio = s1.requests_ping as f64 / s0.requests_ping as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "about the same probing over the run: {ratio:.3}"
    );
    assert_eq!(s0.lookup_exact_rate, 1.0);
    assert_eq!(s1.lookup_exact_rate, 1.0);
}
