//! Helpers shared by the simnet integration tests: scenarios from inline TOML, runs with
//! every checker on, and scratch directories under cargo's per-test temp dir.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use simnet::{Finished, Scenario, Sim, Summary};

/// The example scenarios shipped in `simnet/scenarios/`.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// A scenario from inline TOML (relative paths resolve against `scenarios/`).
pub fn scenario(text: &str) -> Scenario {
    simnet::scenario::parse_str(text, &scenarios_dir(), "test")
        .unwrap_or_else(|e| panic!("bad test scenario: {e}"))
}

/// A fresh, empty scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("simnet-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a scenario with invariant checks after every step and per-lookup outcomes kept.
pub fn run(sc: Scenario) -> (Finished, Summary) {
    println!("seed = {}, nodes = {}", sc.seed, sc.nodes);
    let mut sim = Sim::new(sc, true);
    sim.record_outcomes();
    sim.run().unwrap_or_else(|e| panic!("checker failed: {e}"));
    let f = sim.finish();
    let s = Summary::new(&f, 0.0, 0);
    assert_eq!(
        s.misbehaved_events, 0,
        "an honest node was reported as misbehaving"
    );
    (f, s)
}

/// Runs a scenario to the end without the per-step invariant checks (they would take
/// minutes in the larger tests); the engine's own invariants still stop a broken run.
pub fn run_fast(sc: Scenario) -> Finished {
    println!("seed = {}, nodes = {}", sc.seed, sc.nodes);
    let mut sim = Sim::new(sc, false);
    sim.run()
        .unwrap_or_else(|e| panic!("invariant broken: {e}"));
    sim.finish()
}
