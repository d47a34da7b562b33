//! The soak (issue 14 item 5), scaled down to run in seconds: 200 node slots for 3
//! simulated hours of churn with restarts, objects put in the first 15 minutes and repaired
//! for the rest, gets and lookups throughout; per-node state compared at 0.5 h and 3 h.
//!
//! It must pass (no safety violation, every per-node mean within 5 %), and a deliberately
//! injected leak (provider records that never expire, `[soak] leak_records`) must fail the
//! state bound: records of providers that released a copy, or of the nodes closest to a key
//! before churn moved them, pile up. The same seed gives the same report and timeseries.
//!
//! At 200 slots the per-node means wander more than at 2,000 (the records mean moves by up
//! to ±10 % between 15-minute rows as the closest sets churn): at this seed the checkpoints
//! show +1.0 % records, +2.8 % connections, and the leak +22 % records. A change to overlay
//! that moves these by a few percent may need the seed re-checked, not the bound loosened.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use simnet::soak::SoakReport;
use simnet::{Scenario, Sim, Summary};

const SEED: u64 = 7;

/// The scaled soak, `hours` long (checkpoints at 0.5 h and at the end), with `extra` lines
/// added to its `[soak]` section.
fn scaled(hours: u32, extra: &str) -> Scenario {
    let duration = hours * 3600;
    common::scenario(&format!(
        r#"
name = "soak-scaled"
nodes = 200
seed = {SEED}
duration_s = {duration}

[dht]
provider_republish_s = 300
provider_ttl_s = 600

[latency]
model = "coordinates"
base_ms = 5
side_ms = 150

[churn]
model = "exponential"
mean_up_s = 3600
mean_down_s = 1200
rejoin_same_id = true

[workload]
lookups_per_s = 0.5
objects = 200
object_bytes = 65536
rf = 3
puts_window_s = 900
gets_per_s = 1
replan_interval_s = 300

[output]
interval_s = 900
plots = false

[soak]
from_s = 1800
to_s = {duration}
tolerance = 0.05
{extra}
"#
    ))
}

fn run(sc: Scenario) -> (SoakReport, String) {
    println!("seed = {}, nodes = {}", sc.seed, sc.nodes);
    let mut sim = Sim::new(sc, false);
    sim.run()
        .unwrap_or_else(|e| panic!("invariant broken: {e}"));
    let f = sim.finish();
    let summary = Summary::new(&f, 0.0, 0);
    let report = summary.soak.clone().expect("a soak has a report");
    println!("{}", report.line());
    (report, simnet::output::timeseries_csv(&f))
}

#[test]
fn the_scaled_soak_passes_and_a_record_leak_fails_it() {
    // Two runs at a time (each is single-threaded), to keep the test near 10 s.
    let ((report, _), (leaky, _)) = std::thread::scope(|s| {
        let leak = s.spawn(|| run(scaled(3, "leak_records = true")));
        (run(scaled(3, "")), leak.join().unwrap())
    });
    assert_eq!(report.violations, 0, "{:?}", report.violations_first);
    for c in &report.state {
        assert!(
            c.within,
            "{} moved {:+.2} % (bound 5 %)",
            c.name,
            c.change * 100.0
        );
    }
    assert!(report.pass);
    assert!(
        report.live[0] > 100 && report.live[1] > 100,
        "{:?}",
        report.live
    );
    let records = report.state.iter().find(|c| c.name == "records").unwrap();
    assert!(records.from_mean > 1.0, "records are sampled: {records:?}");

    // The injected leak: records outlive their providers' interest, and the bound sees it.
    assert_eq!(leaky.violations, 0, "{:?}", leaky.violations_first);
    let records = leaky.state.iter().find(|c| c.name == "records").unwrap();
    assert!(
        !records.within && records.change > 0.05,
        "leaked records must break the bound: {records:?}"
    );
    assert!(!leaky.pass);
}

#[test]
fn the_same_seed_gives_the_same_soak() {
    let (a, b) = std::thread::scope(|s| {
        let other = s.spawn(|| run(scaled(1, "")));
        (run(scaled(1, "")), other.join().unwrap())
    });
    assert_eq!(a, b);
}

#[test]
fn checkpoints_must_fall_on_row_boundaries() {
    let text = r#"
nodes = 10
duration_s = 3600
[output]
interval_s = 600
[soak]
from_s = 700
"#;
    let err = simnet::scenario::parse_str(text, &common::scenarios_dir(), "t").unwrap_err();
    assert!(err.to_string().contains("soak.from_s"), "{err}");
    let text = text.replace("from_s = 700", "from_s = 3600");
    let err = simnet::scenario::parse_str(&text, &common::scenarios_dir(), "t").unwrap_err();
    assert!(err.to_string().contains("soak.to_s"), "{err}");
}
