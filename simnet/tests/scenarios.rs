//! Scenario files: every example parses, every knob has its documented default, and
//! unknown keys, misplaced parameters and impossible values are refused with the key at
//! fault named in the message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use simnet::scenario::{self, Bootstrap, ChurnModel, LatencyModel, Rate, Target};

fn error_of(text: &str) -> String {
    match simnet::scenario::parse_str(text, &common::scenarios_dir(), "t") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_example_scenario_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(common::scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let sc = scenario::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert!(!sc.name.is_empty());
            n += 1;
        }
    }
    assert!(n >= 9, "expected the example scenarios, found {n}");
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let sc = common::scenario("");
    assert_eq!(sc.nodes, 10_000);
    assert_eq!(sc.seed, 1);
    assert_eq!(sc.duration, Duration::from_secs(3600));
    assert_eq!(sc.drain, Duration::from_secs(60));
    assert_eq!(sc.dht, overlay::Config::default());
    assert_eq!(sc.bootstrap, Bootstrap::Ideal);
    assert_eq!(sc.latency.model, LatencyModel::Constant { ms: 50.0 });
    assert_eq!(sc.latency.loss, 0.0);
    assert_eq!(sc.churn.model, ChurnModel::None);
    assert!(!sc.churn.rejoin_same_id);
    assert_eq!(sc.failure.fraction, 0.0);
    assert_eq!(sc.failure.at, Duration::ZERO);
    assert_eq!(sc.workload.lookups, Rate::Total(100_000));
    assert_eq!(sc.workload.target, Target::RandomKey);
    assert_eq!(sc.workload.objects, 0);
    assert_eq!(
        sc.workload.replication,
        overlay::ReplicationConfig::default()
    );
    assert_eq!(sc.output.interval, Duration::from_secs(60));
}

#[test]
fn model_defaults_and_k_derived_limits() {
    let sc = common::scenario(
        "[dht]\nk = 8\n[latency]\nmodel = \"regions\"\n[churn]\nmodel = \"weibull\"",
    );
    assert_eq!(sc.dht.k, 8);
    assert_eq!(
        sc.dht.lookup_rpcs_max, 64,
        "follows k as overlay's default does"
    );
    assert_eq!(sc.dht.replacement_cache_size, 8);
    assert_eq!(
        sc.latency.model,
        LatencyModel::Regions {
            regions: 3,
            intra_ms: 20.0,
            inter_ms: 100.0
        }
    );
    assert_eq!(
        sc.churn.model,
        ChurnModel::Weibull {
            shape: 0.5,
            mean_up_s: 3600.0,
            mean_down_s: 3600.0
        }
    );
    let sc = common::scenario("[dht]\nliveness_interval_s = 0\nrpc_timeout_ms = 1500");
    assert_eq!(sc.dht.liveness_interval, None);
    assert_eq!(sc.dht.rpc_timeout, Duration::from_millis(1500));
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let e = error_of("nodez = 5");
    assert!(e.contains("nodez") && e.contains("unknown field"), "{e}");
    let e = error_of("[dht]\nkk = 3");
    assert!(e.contains("kk"), "{e}");
    let e = error_of("[lookups]\nn = 3");
    assert!(e.contains("lookups"), "{e}");
}

#[test]
fn wrong_types_and_impossible_values_name_the_key() {
    for (text, key) in [
        ("nodes = 0", "nodes"),
        ("nodes = -4", "nodes"),
        ("nodes = \"many\"", "nodes"),
        ("duration_s = 0", "duration_s"),
        ("duration_s = -1", "duration_s"),
        ("[dht]\nk = 0", "k must be"),
        ("[dht]\nk = 40", "k must be"),
        ("[dht]\nalpha = 0", "alpha"),
        ("[latency]\nloss = 1.5", "latency.loss"),
        ("[latency]\nloss = 1.0", "latency.loss"),
        (
            "[latency]\nmodel = \"uniform\"\nmin_ms = 90\nmax_ms = 10",
            "latency.max_ms",
        ),
        ("[latency]\nmodel = \"warp\"", "latency.model"),
        (
            "[latency]\nmodel = \"regions\"\nregions = 0",
            "latency.regions",
        ),
        ("[churn]\nmodel = \"pareto\"\nshape = 0.9", "churn.shape"),
        (
            "[churn]\nmodel = \"exponential\"\nmean_up_s = 0",
            "churn.mean_up_s",
        ),
        ("[churn]\nmodel = \"trace\"", "churn.file"),
        ("[failure]\nfraction = 1.2", "failure.fraction"),
        ("[bootstrap]\nmode = \"magic\"", "bootstrap.mode"),
        (
            "[workload]\nlookups = 5\nlookups_per_s = 2.0",
            "workload.lookups_per_s",
        ),
        ("[workload]\ntarget = \"nearest\"", "workload.target"),
        ("[workload]\nrf = 0", "workload.rf"),
        ("[output]\ninterval_s = 0", "output.interval_s"),
    ] {
        let e = error_of(text);
        assert!(
            e.contains(key),
            "`{text}` gave `{e}`, which does not name {key}"
        );
    }
}

#[test]
fn parameters_of_another_model_are_refused() {
    let e = error_of("[latency]\nmodel = \"constant\"\nmin_ms = 3");
    assert!(
        e.contains("latency.min_ms") && e.contains("constant"),
        "{e}"
    );
    let e = error_of("[latency]\nmin_ms = 3");
    assert!(
        e.contains("latency.min_ms"),
        "the default model is constant: {e}"
    );
    let e = error_of("[churn]\nmodel = \"exponential\"\nshape = 2");
    assert!(e.contains("churn.shape"), "{e}");
    let e = error_of("[churn]\nmean_up_s = 20");
    assert!(e.contains("churn.mean_up_s") && e.contains("none"), "{e}");
    let e = error_of("[bootstrap]\njoin_window_s = 20");
    assert!(e.contains("bootstrap.join_window_s"), "{e}");
}

#[test]
fn trace_files_are_read_and_checked_line_by_line() {
    let sc =
        common::scenario("nodes = 1000\n[churn]\nmodel = \"trace\"\nfile = \"traces/example.csv\"");
    let ChurnModel::Trace { events } = sc.churn.model else {
        panic!()
    };
    assert!(events.len() > 300);
    assert!(
        events.windows(2).all(|w| w[0].at <= w[1].at),
        "sorted by time"
    );
    // The example names slots up to 999: with 500 slots, a line is out of range.
    let e = error_of("nodes = 500\n[churn]\nmodel = \"trace\"\nfile = \"traces/example.csv\"");
    assert!(e.contains("example.csv:") && e.contains(">= nodes"), "{e}");
    let e = error_of("[churn]\nmodel = \"trace\"\nfile = \"traces/missing.csv\"");
    assert!(e.contains("missing.csv"), "{e}");
    let dir = common::scratch("bad-trace");
    std::fs::write(
        dir.join("t.csv"),
        "time_s,slot,state\n5,1,up\n7,2,sideways\n",
    )
    .unwrap();
    let text = "[churn]\nmodel = \"trace\"\nfile = \"t.csv\"";
    let e = simnet::scenario::parse_str(text, &dir, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.csv:3") && e.contains("sideways"), "{e}");
}

#[test]
fn set_overrides_go_through_the_same_checks() {
    let path = common::scenarios_dir().join("static-10k.toml");
    let set = |arg: &str| {
        let (key, mut values) = scenario::parse_set_arg(arg).unwrap();
        scenario::Override {
            key,
            value: values.remove(0),
        }
    };
    let sc = scenario::load(&path, &[set("dht.k=8"), set("nodes=500")]).unwrap();
    assert_eq!((sc.dht.k, sc.nodes), (8, 500));
    // static-10k sets `ms`, a parameter of the constant model only.
    let e = scenario::load(&path, &[set("latency.model=uniform")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("latency.ms"), "{e}");
    let trace = common::scenarios_dir().join("churn-trace.toml");
    let sc = scenario::load(&trace, &[set("latency.model=uniform")]).unwrap();
    assert_eq!(
        sc.latency.model,
        LatencyModel::Uniform {
            min_ms: 20.0,
            max_ms: 80.0
        }
    );
    let e = scenario::load(&path, &[set("dht.kk=8")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("kk") && e.contains("--set"), "{e}");
    let e = scenario::load(&path, &[set("latency.loss=2")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("latency.loss"), "{e}");
}
