//! Gets through the node's own read decisions (`overlay::Search`, driven by
//! `engine::reads`): a first pass asks for one provider and stops at the first holder that
//! proves the object; a pass whose records proved nothing (a stale record, a walk stopped at
//! the first record far from the holders) walks again for rf providers, as the node does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// 300 nodes with exponential churn (1 h up, 20 min down, fresh ids) holding 200 objects
/// of 1 MiB at RF 3, 5 gets/s for 15 minutes.
#[test]
fn gets_whose_records_proved_nothing_walk_again_and_are_served() {
    let sc = common::scenario(
        r#"
name = "reads"
nodes = 300
seed = 1
duration_s = 900

[latency]
model = "coordinates"
base_ms = 5
side_ms = 150

[churn]
model = "exponential"
mean_up_s = 3600
mean_down_s = 1200

[workload]
lookups = 0
objects = 200
object_bytes = 1048576
rf = 3
puts_window_s = 120
gets_per_s = 5

[output]
plots = false
"#,
    );
    let m = common::run_fast(sc).metrics;
    println!(
        "gets {} served {} walked again {} served by the second walk {}",
        m.gets, m.gets_ok, m.gets_searched_again, m.gets_served_again
    );
    assert!(
        m.gets_searched_again > 0,
        "churn leaves records that prove nothing"
    );
    assert!(m.gets_served_again > 0, "a second walk finds the holders");
    assert!(m.gets_served_again <= m.gets_searched_again);
    // Without the second walk every one of them would have failed.
    assert!(
        m.gets_ok as f64 >= 0.999 * m.gets as f64,
        "{} of {} gets served",
        m.gets_ok,
        m.gets
    );
}
