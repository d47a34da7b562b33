//! The same scenario and seed give byte-identical output files; only the three fields that
//! measure the run itself (`wall_seconds`, `events_per_wall_second`, `peak_rss_bytes`) may
//! differ. The scenario exercises every source of randomness at once: churn, loss, drawn
//! latencies, a mass failure, random-node targets, objects and repair.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use simnet::{RunOptions, run_scenario};

const SCENARIO: &str = r#"
nodes = 400
seed = 42
duration_s = 600
[dht]
rpc_timeout_ms = 2000
liveness_interval_s = 30
[latency]
model = "lognormal"
median_ms = 30
sigma = 0.6
loss = 0.02
[churn]
model = "exponential"
mean_up_s = 600
mean_down_s = 300
[failure]
fraction = 0.2
at_s = 300
[workload]
lookups_per_s = 4
target = "random_node"
objects = 60
object_bytes = 65536
puts_window_s = 60
gets_per_s = 1
replan_interval_s = 60
[output]
interval_s = 30
"#;

const RUN_FIELDS: [&str; 3] = ["wall_seconds", "events_per_wall_second", "peak_rss_bytes"];

fn run_into(dir: &Path, seed_offset: u64) -> simnet::Summary {
    let mut sc = common::scenario(SCENARIO);
    sc.seed += seed_offset;
    let opts = RunOptions {
        out: Some(dir.to_path_buf()),
        check_invariants: true,
        ..RunOptions::default()
    };
    run_scenario(sc, &opts).unwrap().1
}

fn summary_without_run_fields(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let obj = v.as_object_mut().unwrap();
    for f in RUN_FIELDS {
        assert!(obj.remove(f).is_some(), "summary.json lacks {f}");
    }
    v
}

#[test]
fn same_seed_same_bytes() {
    let a = common::scratch("determinism-a");
    let b = common::scratch("determinism-b");
    let sa = run_into(&a, 0);
    let sb = run_into(&b, 0);
    assert_eq!(sa.events, sb.events);
    assert!(
        sa.lookups > 1000 && sa.object_gets.unwrap_or(0) > 100,
        "{sa:?}"
    );
    assert!(
        sa.messages_lost > 0 && sa.messages_undeliverable > 0,
        "loss and churn happened"
    );
    assert_eq!(
        summary_without_run_fields(&a),
        summary_without_run_fields(&b)
    );
    for file in [
        "timeseries.csv",
        "params.txt",
        "hops.svg",
        "latency_cdf.svg",
        "timeline.svg",
    ] {
        let x = std::fs::read(a.join(file)).unwrap();
        let y = std::fs::read(b.join(file)).unwrap();
        assert!(!x.is_empty(), "{file} is empty");
        assert!(x == y, "{file} differs between two runs of the same seed");
    }
    // And the summary text itself differs only on the three run-measuring lines.
    let ta = std::fs::read_to_string(a.join("summary.json")).unwrap();
    let tb = std::fs::read_to_string(b.join("summary.json")).unwrap();
    for (la, lb) in ta.lines().zip(tb.lines()) {
        if la != lb {
            assert!(RUN_FIELDS.iter().any(|f| la.contains(f)), "{la} != {lb}");
        }
    }
}

#[test]
fn another_seed_gives_another_run() {
    let a = common::scratch("determinism-seed-a");
    let b = common::scratch("determinism-seed-b");
    let sa = run_into(&a, 0);
    let sb = run_into(&b, 1);
    assert_ne!(sa.events, sb.events);
    assert_ne!(
        std::fs::read(a.join("timeseries.csv")).unwrap(),
        std::fs::read(b.join("timeseries.csv")).unwrap()
    );
}
