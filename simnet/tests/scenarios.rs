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

/// The `(section, key, default)` rows of SCENARIOS.md's key tables, as written there:
/// section `""` is the top level, else the table name (`dht`, `latency`, ...); the default is
/// the first backticked value of the row's second cell, or `None` when it has none (`—`).
/// A row naming two keys with two defaults (`min_ms`, `max_ms` | `20`, `80`) gives two rows.
fn documented_defaults() -> Vec<(String, String, Option<String>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("SCENARIOS.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(|v| v.trim_matches('"').to_string())
            .collect()
    };
    let mut section = None;
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = if h == "Top level" {
                Some(String::new())
            } else {
                h.strip_prefix("`[")
                    .and_then(|r| r.split_once("]`"))
                    .map(|(name, _)| name.to_string())
            };
            continue;
        }
        let Some(sec) = &section else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| key | default | meaning |` splits into ["", key, default, meaning, ""].
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let (keys, defaults) = (ticked(cells[1]), ticked(cells[2]));
        if keys.len() > 1 && keys.len() == defaults.len() {
            for (k, d) in keys.into_iter().zip(defaults) {
                rows.push((sec.clone(), k, Some(d)));
            }
        } else {
            for k in keys {
                rows.push((sec.clone(), k, defaults.first().cloned()));
            }
        }
    }
    rows
}

/// What the parser gives for a key when the file leaves it out (with the model named where
/// the key belongs to one), as text to compare with the documented default. `None` for a
/// key this test does not know: the test then fails, so a new documented key gets checked.
fn parsed_default(section: &str, key: &str) -> Option<String> {
    let sc = common::scenario("");
    let d = &sc.dht;
    let secs = |t: Duration| t.as_secs().to_string();
    let model = |sec: &str, m: &str| common::scenario(&format!("[{sec}]\nmodel = \"{m}\""));
    let v = match (section, key) {
        ("", "name") => return Some("(file name)".into()),
        ("", "nodes") => sc.nodes.to_string(),
        ("", "seed") => sc.seed.to_string(),
        ("", "duration_s") => secs(sc.duration),
        ("", "drain_s") => secs(sc.drain),
        ("dht", "k") => d.k.to_string(),
        ("dht", "alpha") => d.alpha.to_string(),
        ("dht", "rpc_timeout_ms") => d.rpc_timeout.as_millis().to_string(),
        ("dht", "bucket_refresh_s") => secs(d.bucket_refresh_interval),
        ("dht", "replacement_cache_size") => symbolic(d.replacement_cache_size, d.k),
        ("dht", "evict_after_failures") => d.evict_after_failures.to_string(),
        ("dht", "liveness_interval_s") => d.liveness_interval.map_or("0".into(), secs),
        ("dht", "bootstrap_check_s") => d.bootstrap_check_interval.map_or("0".into(), secs),
        ("dht", "liveness_probes_max") => d.liveness_probes_max.to_string(),
        ("dht", "liveness_spread") => d.liveness_spread.to_string(),
        ("dht", "soft_timeout_min_ms") => d.soft_timeout_min.as_millis().to_string(),
        ("dht", "soft_timeout_initial_ms") => d.soft_timeout_initial.as_millis().to_string(),
        ("dht", "query_timeout_s") => secs(d.query_timeout),
        ("dht", "provider_ttl_s") => secs(d.provider_ttl),
        ("dht", "provider_republish_s") => secs(d.provider_republish_interval),
        ("dht", "providers_per_key_max") => d.providers_per_key_max.to_string(),
        ("dht", "provider_records_max") => d.provider_records_max.to_string(),
        ("dht", "queries_max") => d.queries_max.to_string(),
        ("dht", "announcements_max") => d.announcements_max.to_string(),
        ("dht", "lookup_rpcs_max") => symbolic(d.lookup_rpcs_max, d.k),
        ("dht", "lookup_candidates_max") => symbolic(d.lookup_candidates_max, d.k),
        ("dht", "transmits_max") => d.transmits_max.to_string(),
        ("dht", "rpcs_in_flight_max") => d.rpcs_in_flight_max.to_string(),
        ("dht", "events_max") => d.events_max.to_string(),
        ("dht", "rejoin_interval_s") => secs(d.rejoin_interval),
        ("dht", "thin_table_lookup_s") => d.thin_table_lookup.map_or("0".into(), secs),
        ("dht", "refresh_on_join_max") => d.refresh_on_join_max.to_string(),
        ("bootstrap", "mode") => match sc.bootstrap {
            Bootstrap::Ideal => "ideal".into(),
            Bootstrap::Join { .. } => "join".into(),
        },
        ("bootstrap", "join_window_s") => {
            match common::scenario("[bootstrap]\nmode = \"join\"").bootstrap {
                Bootstrap::Join { window } => secs(window),
                other => panic!("join mode parsed as {other:?}"),
            }
        }
        ("latency", "model") => match sc.latency.model {
            LatencyModel::Constant { .. } => "constant".into(),
            other => format!("{other:?}"),
        },
        ("latency", "loss") => sc.latency.loss.to_string(),
        // Documented as `0.1` (`0` with `constant`): the constant default is checked apart.
        ("latency", "jitter") => model("latency", "uniform").latency.jitter.to_string(),
        ("latency", "handshake") => sc.latency.handshake.to_string(),
        ("latency", "zero_rtt") => sc.latency.zero_rtt.to_string(),
        ("latency", "connections_max") => sc.latency.connections_max.to_string(),
        ("latency", "names") | ("latency", "rtt_ms") => {
            let r = model("latency", "regions").latency;
            if r.region_names.is_empty() && r.rtt_ms.is_empty() {
                "(none)".into()
            } else {
                "set".into()
            }
        }
        ("latency", _) => {
            let m = match key {
                "ms" => "constant",
                "min_ms" | "max_ms" => "uniform",
                "median_ms" | "sigma" => "lognormal",
                "regions" | "intra_ms" | "inter_ms" => "regions",
                "base_ms" | "side_ms" => "coordinates",
                _ => return None,
            };
            latency_field(model("latency", m).latency.model, key)?
        }
        ("churn", "model") => match sc.churn.model {
            ChurnModel::None => "none".into(),
            other => format!("{other:?}"),
        },
        ("churn", "rejoin_same_id") => sc.churn.rejoin_same_id.to_string(),
        // Documented without a default: unset unless given.
        ("churn", "file") => match sc.churn.model {
            ChurnModel::Trace { .. } => "set".into(),
            _ => "(none)".into(),
        },
        ("workload", "lookups_per_s") => match sc.workload.lookups {
            Rate::PerSecond(r) => r.to_string(),
            Rate::Total(_) => "(none)".into(),
        },
        ("workload", "gets_per_s") => match sc.workload.gets {
            Rate::PerSecond(r) => r.to_string(),
            Rate::Total(_) => "(none)".into(),
        },
        ("workload", "put_w") => match sc.workload.put_w {
            Some(w) => w.to_string(),
            None => "(none)".into(),
        },
        ("workload", "get_holders_wanted") => match sc.workload.get_holders_wanted {
            Some(n) => n.to_string(),
            None => "1".into(), // the workload's `holders_wanted()` default
        },
        ("churn", "mean_up_s") | ("churn", "mean_down_s") => {
            match model("churn", "exponential").churn.model {
                ChurnModel::Exponential {
                    mean_up_s,
                    mean_down_s,
                } => (if key == "mean_up_s" {
                    mean_up_s
                } else {
                    mean_down_s
                })
                .to_string(),
                other => panic!("exponential churn parsed as {other:?}"),
            }
        }
        ("churn", "shape") => {
            // Documented as `0.5` (Weibull), `3.0` (Pareto): checked in the test itself.
            match model("churn", "weibull").churn.model {
                ChurnModel::Weibull { shape, .. } => shape.to_string(),
                other => panic!("weibull churn parsed as {other:?}"),
            }
        }
        ("churn", "mean_s") => match model("churn", "weibull").churn.model {
            ChurnModel::Weibull { mean_up_s, .. } => mean_up_s.to_string(),
            other => panic!("weibull churn parsed as {other:?}"),
        },
        ("failure", "fraction") => sc.failure.fraction.to_string(),
        ("failure", "at_s") => secs(sc.failure.at),
        ("workload", "lookups") => match sc.workload.lookups {
            Rate::Total(n) => n.to_string(),
            other => format!("{other:?}"),
        },
        ("workload", "target") => match sc.workload.target {
            Target::RandomKey => "random_key".into(),
            Target::RandomNode => "random_node".into(),
        },
        ("workload", "start_s") => secs(sc.workload.start),
        ("workload", "objects") => sc.workload.objects.to_string(),
        ("workload", "object_bytes") => sc.workload.object_bytes.to_string(),
        ("workload", "puts_window_s") => secs(sc.workload.puts_window),
        ("workload", "gets") => match sc.workload.gets {
            Rate::Total(n) => n.to_string(),
            other => format!("{other:?}"),
        },
        ("workload", "rf") => sc.workload.replication.rf.to_string(),
        ("workload", "repair_bytes_per_s") => sc.workload.replication.bytes_per_second.to_string(),
        ("workload", "repair_burst_bytes") => sc.workload.replication.burst_bytes.to_string(),
        ("workload", "replan_interval_s") => secs(sc.workload.replication.replan_interval),
        ("workload", "transfers_max") => sc.workload.replication.transfers_max.to_string(),
        ("output", "interval_s") => secs(sc.output.interval),
        ("output", "plots") => sc.output.plots.to_string(),
        // Required in the section, so documented without a default: without the section
        // there is no limit.
        ("bandwidth", "uplink_mbps" | "downlink_mbps") if sc.bandwidth.is_none() => {
            "(required)".into()
        }
        ("soak", _) => {
            let sc = common::scenario("duration_s = 86400\n[soak]");
            let soak = sc.soak.expect("an empty [soak] section is a soak");
            match key {
                "from_s" => secs(soak.from),
                "to_s" if soak.to == sc.duration => "duration_s".into(),
                "to_s" => secs(soak.to),
                "tolerance" => soak.tolerance.to_string(),
                "leak_records" => soak.leak_records.to_string(),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(v)
}

/// `n` written as SCENARIOS.md writes a value that follows k: `k`, `8k`, else the number.
fn symbolic(n: usize, k: usize) -> String {
    match n / k {
        _ if n % k != 0 => n.to_string(),
        1 => "k".into(),
        m => format!("{m}k"),
    }
}

fn latency_field(m: LatencyModel, key: &str) -> Option<String> {
    let v = match (m, key) {
        (LatencyModel::Constant { ms }, "ms") => ms,
        (LatencyModel::Uniform { min_ms, .. }, "min_ms") => min_ms,
        (LatencyModel::Uniform { max_ms, .. }, "max_ms") => max_ms,
        (LatencyModel::LogNormal { median_ms, .. }, "median_ms") => median_ms,
        (LatencyModel::LogNormal { sigma, .. }, "sigma") => sigma,
        (LatencyModel::Regions { regions, .. }, "regions") => f64::from(regions),
        (LatencyModel::Regions { intra_ms, .. }, "intra_ms") => intra_ms,
        (LatencyModel::Regions { inter_ms, .. }, "inter_ms") => inter_ms,
        (LatencyModel::Coordinates { base_ms, .. }, "base_ms") => base_ms,
        (LatencyModel::Coordinates { side_ms, .. }, "side_ms") => side_ms,
        _ => return None,
    };
    Some(v.to_string())
}

/// Whether a documented default and the parsed one say the same: numbers by value (`0.0`
/// and `0`, `3.0` and `3`), anything else as text.
fn same_value(doc: &str, parsed: &str) -> bool {
    match (doc.parse::<f64>(), parsed.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => doc == parsed,
    }
}

#[test]
fn every_default_in_scenarios_md_is_what_the_parser_gives() {
    let rows = documented_defaults();
    assert!(
        rows.len() >= 50,
        "SCENARIOS.md's key tables were not found: {rows:?}"
    );
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (section, key, doc) in &rows {
        let parsed = parsed_default(section, key).unwrap_or_else(|| {
            panic!(
                "SCENARIOS.md documents [{section}] {key}, which this test does not know: add it"
            )
        });
        let Some(doc) = doc else { continue };
        let want = match (section.as_str(), key.as_str(), doc.as_str()) {
            ("", "name", _) => continue,
            // Defaults written as another key's value.
            ("churn", "mean_down_s", "mean_s") => continue,
            _ => doc.clone(),
        };
        checked += 1;
        if !same_value(&want, &parsed) {
            wrong.push(format!(
                "[{section}] {key}: SCENARIOS.md says {want}, the parser gives {parsed}"
            ));
        }
    }
    // `jitter` documents two defaults in one cell; the second is the constant model's.
    assert_eq!(
        common::scenario("").latency.jitter,
        0.0,
        "constant links, no jitter"
    );
    // `shape` documents two defaults in one cell; the second is Pareto's.
    match common::scenario("[churn]\nmodel = \"pareto\"").churn.model {
        ChurnModel::Pareto { shape, .. } => assert_eq!(shape, 3.0, "Pareto's documented shape"),
        other => panic!("pareto churn parsed as {other:?}"),
    }
    // Weibull and Pareto's down time defaults to their `mean_s`.
    match common::scenario("[churn]\nmodel = \"weibull\"\nmean_s = 500")
        .churn
        .model
    {
        ChurnModel::Weibull { mean_down_s, .. } => assert_eq!(mean_down_s, 500.0),
        other => panic!("weibull churn parsed as {other:?}"),
    }
    println!("{checked} documented defaults checked");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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
        (
            "[dht]\nevict_after_failures = 65536",
            "dht.evict_after_failures",
        ),
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
    let e = error_of("[latency]\nhandshake = false\nzero_rtt = true");
    assert!(
        e.contains("latency.zero_rtt") && e.contains("handshake"),
        "0-RTT saves a handshake there is none of: {e}"
    );
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
