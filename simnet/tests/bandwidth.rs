//! The bandwidth model (`[bandwidth]`, `simnet::bandwidth`): object bytes hold the sender's
//! uplink and the receiver's downlink for size / rate, first come first served, before the
//! last byte travels its one-way delay. Predictions, written before measuring:
//!
//! - a lone get's fetch of S bytes at rate B over a 50 ms constant link takes exactly
//!   2 × 50 ms + S/B (request out, bytes serialized, last byte back); without the model it
//!   takes the 100 ms round trip alone;
//! - N transfers ready at once into one node finish at k·S/B, k = 1..N (FIFO);
//! - after a mass failure at a low bandwidth, the time repair adds to restoring RF (over
//!   the same run without the model) doubles when the objects' size doubles;
//! - during that repair storm a get's fetch waits for links busy with repair: its queue
//!   wait rises over the same run without the failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use overlay::Instant;
use simnet::Scenario;
use simnet::bandwidth::{Bandwidth, Pipes};
use simnet::engine::Finished;

/// 30 nodes on a constant 50 ms link with no handshakes, one object of 1,000,000 bytes at
/// RF 3, and 20 gets a minute apart, long after the put: nothing else moves object bytes.
fn lone_fetches(bandwidth: &str) -> Scenario {
    common::scenario(&format!(
        r#"
name = "lone-fetch"
nodes = 30
seed = 5
duration_s = 1500

[latency]
model = "constant"
ms = 50
handshake = false

[workload]
lookups = 0
objects = 1
object_bytes = 1000000
rf = 3
puts_window_s = 60
gets = 20

[output]
plots = false

{bandwidth}
"#
    ))
}

#[test]
fn a_lone_fetch_takes_its_bytes_time_plus_the_round_trip() {
    // 8 Mbit/s = 1,000,000 bytes/s: the object takes exactly 1 s on the link.
    let on = "[bandwidth]\nuplink_mbps = 8\ndownlink_mbps = 8";
    let (f, _) = common::run(lone_fetches(on));
    let m = &f.metrics;
    println!("fetch parts (ns): {:?}", m.get_fetch);
    let want = (Duration::from_millis(100) + Duration::from_secs(1)).as_nanos() as u64;
    let fetched: Vec<u64> = m.get_fetch.iter().copied().filter(|&t| t > 0).collect();
    assert!(fetched.len() >= 10, "most gets fetch over a link");
    assert!(
        fetched.iter().all(|&t| t == want),
        "every lone fetch takes 100 ms + 1 s exactly: {fetched:?}"
    );
    assert!(m.get_waits.iter().all(|&w| w == 0), "nothing to wait for");

    // Without the model the same fetches take the round trip alone.
    let (off, _) = common::run(lone_fetches(""));
    let rt = Duration::from_millis(100).as_nanos() as u64;
    assert!(off.metrics.get_fetch.iter().all(|&t| t == 0 || t == rt));
    assert!(off.metrics.transfer_waits.is_empty());
}

#[test]
fn transfers_into_one_node_finish_one_after_another() {
    // 10 Mbit/s both ways = 1,250,000 bytes/s: 250,000 bytes take 200 ms.
    let cap = Bandwidth {
        uplink: simnet::bandwidth::bytes_per_s(10.0),
        downlink: simnet::bandwidth::bytes_per_s(10.0),
    };
    let mut pipes = Pipes::new(cap, 9);
    let t0 = Instant::ZERO + Duration::from_secs(3);
    for k in 1..=8u32 {
        let (start, end) = pipes.reserve(t0, k, 0, t0, 250_000);
        assert_eq!(start, t0 + Duration::from_millis(200) * (k - 1));
        assert_eq!(end, t0 + Duration::from_millis(200) * k, "transfer {k}");
    }
    // Out of node 0, into node 1's free downlink: node 0's uplink is free, so it starts
    // at once; into node 0 again: after the eighth.
    let (start, _) = pipes.reserve(t0, 0, 1, t0, 250_000);
    assert_eq!(start, t0);
    let (start, _) = pipes.reserve(t0, 2, 0, t0, 250_000);
    assert_eq!(start, t0 + Duration::from_millis(1600));
}

/// 120 nodes, 360 objects of `bytes` at RF 3 with repair unpaced; 25 % of the nodes fail
/// for good at 600 s (or nothing fails) and gets run throughout, with `bandwidth` added.
fn storm(bytes: u64, failure: bool, bandwidth: &str) -> Scenario {
    let failure = if failure {
        "[failure]\nfraction = 0.25\nat_s = 600"
    } else {
        ""
    };
    common::scenario(&format!(
        r#"
name = "repair-storm"
nodes = 120
seed = 21
duration_s = 2400

[latency]
model = "coordinates"
base_ms = 5
side_ms = 100

{failure}

[workload]
lookups = 0
objects = 360
object_bytes = {bytes}
rf = 3
puts_window_s = 300
gets_per_s = 2
repair_bytes_per_s = 1000000000000
repair_burst_bytes = 1000000000000
replan_interval_s = 60

[output]
plots = false

{bandwidth}
"#
    ))
}

/// The mean of `v` (ns) in seconds; 0 when empty.
fn mean_s(v: &[u64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().map(|&x| x as f64 / 1e9).sum::<f64>() / v.len() as f64
}

fn summary(label: &str, f: &Finished) -> f64 {
    let m = &f.metrics;
    let restore = mean_s(&m.durability.restore_ns);
    println!(
        "{label}: restores {} mean {restore:.3} s, repair bytes {}, unrestored {}, \
         get waits mean {:.3} s (n {}), repair waits mean {:.3} s (n {})",
        m.durability.restore_ns.len(),
        m.repair_bytes,
        m.durability.unrestored(),
        mean_s(&m.get_waits),
        m.get_waits.len(),
        mean_s(&m.repair_waits),
        m.repair_waits.len(),
    );
    restore
}

#[test]
fn repair_time_grows_with_the_bytes_and_gets_wait_behind_it() {
    // 2 Mbit/s = 250,000 bytes/s: 1 MB takes 4 s on a link, 2 MB 8 s.
    let bw = "[bandwidth]\nuplink_mbps = 2\ndownlink_mbps = 2";
    let (one, two) = (1_000_000, 2_000_000);
    let free1 = summary("1 MB, unlimited", &common::run_fast(storm(one, true, "")));
    let free2 = summary("2 MB, unlimited", &common::run_fast(storm(two, true, "")));
    let slow1 = common::run_fast(storm(one, true, bw));
    let slow2 = common::run_fast(storm(two, true, bw));
    let (s1, s2) = (
        summary("1 MB, 2 Mbit/s", &slow1),
        summary("2 MB, 2 Mbit/s", &slow2),
    );
    let (extra1, extra2) = (s1 - free1, s2 - free2);
    println!(
        "repair adds {extra1:.3} s at 1 MB, {extra2:.3} s at 2 MB: ratio {:.3}",
        extra2 / extra1
    );
    assert!(extra1 > 1.0, "the links slow repair down");
    let ratio = extra2 / extra1;
    assert!(
        (1.5..=2.5).contains(&ratio),
        "double the bytes, about double the added repair time: {ratio:.3}"
    );

    // The model draws nothing random: the same seed gives the same run.
    let again = common::run_fast(storm(one, true, bw));
    assert_eq!(
        simnet::Summary::new(&again, 0.0, 0).columns(),
        simnet::Summary::new(&slow1, 0.0, 0).columns(),
        "same seed, same run"
    );

    // The same run without the failure: gets compete only with each other and the puts.
    let calm = common::run_fast(storm(one, false, bw));
    summary("1 MB, 2 Mbit/s, no failure", &calm);
    let (storm_wait, calm_wait) = (
        mean_s(&slow1.metrics.get_waits),
        mean_s(&calm.metrics.get_waits),
    );
    assert!(
        !slow1.metrics.repair_waits.is_empty() && mean_s(&slow1.metrics.repair_waits) > 0.0,
        "repair transfers queue"
    );
    assert!(
        storm_wait > calm_wait,
        "gets wait behind repair: {storm_wait:.4} s vs {calm_wait:.4} s without the failure"
    );
}

#[test]
fn bad_bandwidths_are_refused_with_their_key() {
    let parse = |s: &str| {
        simnet::scenario::parse_str(s, &common::scenarios_dir(), "t").map_err(|e| e.to_string())
    };
    for (text, key) in [
        (
            "[bandwidth]\nuplink_mbps = 0\ndownlink_mbps = 1",
            "bandwidth.uplink_mbps",
        ),
        (
            "[bandwidth]\nuplink_mbps = 1\ndownlink_mbps = -3",
            "bandwidth.downlink_mbps",
        ),
        ("[bandwidth]\nuplink_mbps = 1", "bandwidth.downlink_mbps"),
        (
            "[bandwidth]\nuplink_mbps = 1e-9\ndownlink_mbps = 1",
            "bandwidth.uplink_mbps",
        ),
        (
            "[bandwidth]\nuplink_mbps = 1\ndownlink_mbps = nan",
            "bandwidth.downlink_mbps",
        ),
    ] {
        let err = parse(text).expect_err(text);
        assert!(err.contains(key), "{text}: {err}");
    }
    assert!(parse("[bandwidth]\nuplink_mbps = 1\ndownlink_mbps = 1\nrate = 3").is_err());
    let sc = parse("[bandwidth]\nuplink_mbps = 100\ndownlink_mbps = 0.5").unwrap();
    assert_eq!(
        sc.bandwidth,
        Some(Bandwidth {
            uplink: 12_500_000,
            downlink: 62_500
        })
    );
    assert_eq!(parse("").unwrap().bandwidth, None, "off by default");
}
