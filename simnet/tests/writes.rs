//! Puts through the node's own write decisions (`workload.put_w`: `overlay::Write` and
//! `overlay::placement_targets`, driven by `engine::writes`): a put is acknowledged only
//! with W durable copies and answers short when it cannot reach them. Without `put_w` a
//! put waits for nothing, as before. Either way each copy passes its receiver's admission
//! rule (`overlay::Admission`), as a pushed copy does in the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use simnet::Scenario;
use simnet::engine::Finished;

/// 300 nodes, 150 objects of 64 KiB at RF 3 put in the first 5 minutes, with `workload`
/// lines added and `faults` (a section) appended.
fn scenario(workload: &str, faults: &str) -> Scenario {
    common::scenario(&format!(
        r#"
name = "writes"
nodes = 300
seed = 11
duration_s = 900

[latency]
model = "coordinates"
base_ms = 5
side_ms = 100

{faults}

[workload]
lookups = 0
objects = 150
object_bytes = 65536
rf = 3
puts_window_s = 300
gets = 0
{workload}

[output]
plots = false
"#
    ))
}

fn run(sc: Scenario) -> Finished {
    common::run_fast(sc)
}

#[test]
fn in_a_still_network_every_put_is_acknowledged_with_w_copies() {
    let f = run(scenario("put_w = 3", ""));
    let m = &f.metrics;
    println!(
        "puts {} placed {} acked {} short {}",
        m.puts, m.puts_placed, m.puts_acked, m.puts_short
    );
    println!("pushes refused {}", m.pushes_refused);
    assert_eq!(m.puts, 150);
    assert_eq!(m.puts_acked, 150, "every put reached its 3 copies");
    // Each target runs the node's admission rule: a writer far from the key is known to
    // the key's closest only as a replacement (it asked them in its lookup), and refusing
    // it refused most copies, then the writers' repairs, again and again.
    assert!(
        m.pushes_refused < 30,
        "{} pushes refused in a still network",
        m.pushes_refused
    );
    assert_eq!(m.puts_short, 0);
    assert_eq!(m.acked, 150);
    assert_eq!(m.acked_lost, 0);
}

#[test]
fn puts_that_cannot_reach_w_copies_answer_short() {
    // 98 % of the nodes fail for good at 100 s, a third of the way through the puts: a put
    // after it finds one or two live peers at most, too few for 3 copies.
    let failure = "[failure]\nfraction = 0.98\nat_s = 100";
    let f = run(scenario("put_w = 3", failure));
    let m = &f.metrics;
    println!(
        "puts {} placed {} acked {} short {} lost {}",
        m.puts, m.puts_placed, m.puts_acked, m.puts_short, m.acked_lost
    );
    assert!(
        m.puts_short > 0,
        "puts after the failure must miss their 3 copies"
    );
    assert!(m.puts_acked > 0, "puts before it reach them");
    // A writer that fails loses its write unanswered: answered puts are at most those placed.
    assert!(m.puts_acked + m.puts_short <= m.puts_placed);
    assert_eq!(
        m.acked, m.puts_acked,
        "acknowledged means W copies, nothing less"
    );
}

/// A node whose queries are all taken (its own refreshes and announcements) places a put's
/// copies at its table's closest, as the node's `closest_set` does, instead of dropping it.
#[test]
fn a_put_at_the_query_cap_places_at_the_table_closest() {
    // 30 nodes, each running about three lookups a second with room for one query: most
    // puts find their node's only query taken.
    let f = run(common::scenario(
        r#"
name = "writes-at-the-query-cap"
nodes = 30
seed = 11
duration_s = 400

[latency]
model = "coordinates"
base_ms = 5
side_ms = 100

[dht]
queries_max = 1

[workload]
lookups = 100000
objects = 100
object_bytes = 65536
rf = 3
puts_window_s = 300
gets = 0
put_w = 3

[output]
plots = false
"#,
    ));
    let m = &f.metrics;
    println!(
        "puts {} placed {} acked {} short {} lost {}; lookups refused {}",
        m.puts, m.puts_placed, m.puts_acked, m.puts_short, m.acked_lost, m.lookups_refused
    );
    assert_eq!(m.puts, 100);
    assert_eq!(m.puts_placed, 100, "no put is dropped for want of a lookup");
    assert_eq!(m.puts_acked, 100, "the table's closest take the copies");
    assert_eq!(m.acked_lost, 0);
}

#[test]
fn without_put_w_a_put_waits_for_nothing() {
    let f = run(scenario("", ""));
    let m = &f.metrics;
    assert_eq!(m.puts_placed, 150);
    assert_eq!((m.puts_acked, m.puts_short), (0, 0));
    // Its first stored copy is its acknowledgement.
    assert_eq!(m.acked, 150);
}

/// The writer of a put that waits for nothing sends the copies without keeping one: no
/// target may count it as a holder, or a real holder releases its copy for a writer that
/// has none and the object sits below RF until the confirmation expires (an hour).
#[test]
fn without_put_w_every_object_ends_on_rf_copies() {
    let f = run(scenario("", ""));
    let d = &f.metrics.durability;
    println!(
        "objects {} below RF at the end {}, object-s below RF {:.0}",
        d.objects(),
        d.below_rf(),
        d.below_ns as f64 / 1e9
    );
    assert_eq!(d.objects(), 150);
    assert_eq!(d.below_rf(), 0, "a still network keeps every object at RF");
}

#[test]
fn put_w_must_be_between_one_and_rf() {
    for bad in ["put_w = 0", "put_w = 4"] {
        let text = format!(
            "name = \"t\"\nnodes = 10\nduration_s = 10\n[workload]\nobjects = 1\nrf = 3\n{bad}\n"
        );
        let err = simnet::scenario::parse_str(&text, &common::scenarios_dir(), "t").unwrap_err();
        assert!(err.to_string().contains("workload.put_w"), "{err}");
    }
}
