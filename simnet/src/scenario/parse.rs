//! TOML text to a validated [`Scenario`]: unknown keys, wrong types and values that cannot
//! work are refused with the key (and, from the TOML parser, the line) at fault.
//!
//! Parsing goes in two steps. Serde reads the text into `Raw*` structs of optional fields
//! with `deny_unknown_fields`, so a typo is an error rather than a silently ignored knob;
//! then each section is checked and converted by hand and its defaults filled in (the
//! `[latency]` and `[churn]` models in `models`, where a parameter given for another model
//! is refused, not ignored). Defaults not set here are overlay's own.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::models;
use super::set::{Override, apply_overrides};
use super::{Bootstrap, Failure, Output, Rate, Scenario, ScenarioError, Soak, Target, Workload};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawScenario {
    name: Option<String>,
    nodes: Option<u32>,
    seed: Option<u64>,
    duration_s: Option<f64>,
    drain_s: Option<f64>,
    dht: RawDht,
    bootstrap: RawBootstrap,
    latency: models::RawLatency,
    churn: models::RawChurn,
    failure: RawFailure,
    workload: RawWorkload,
    output: RawOutput,
    soak: Option<RawSoak>,
    bandwidth: Option<RawBandwidth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBandwidth {
    uplink_mbps: Option<f64>,
    downlink_mbps: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSoak {
    from_s: Option<f64>,
    to_s: Option<f64>,
    tolerance: Option<f64>,
    leak_records: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDht {
    k: Option<usize>,
    alpha: Option<usize>,
    rpc_timeout_ms: Option<f64>,
    soft_timeout_min_ms: Option<f64>,
    soft_timeout_initial_ms: Option<f64>,
    query_timeout_s: Option<f64>,
    bucket_refresh_s: Option<f64>,
    replacement_cache_size: Option<usize>,
    evict_after_failures: Option<u32>,
    liveness_interval_s: Option<f64>,
    bootstrap_check_s: Option<f64>,
    liveness_probes_max: Option<usize>,
    liveness_spread: Option<bool>,
    provider_ttl_s: Option<f64>,
    provider_republish_s: Option<f64>,
    providers_per_key_max: Option<usize>,
    provider_records_max: Option<usize>,
    queries_max: Option<usize>,
    announcements_max: Option<usize>,
    lookup_rpcs_max: Option<usize>,
    lookup_candidates_max: Option<usize>,
    transmits_max: Option<usize>,
    rpcs_in_flight_max: Option<usize>,
    events_max: Option<usize>,
    rejoin_interval_s: Option<f64>,
    refresh_on_join_max: Option<usize>,
    thin_table_lookup_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBootstrap {
    mode: Option<String>,
    join_window_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFailure {
    fraction: Option<f64>,
    at_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWorkload {
    lookups: Option<u64>,
    lookups_per_s: Option<f64>,
    target: Option<String>,
    start_s: Option<f64>,
    objects: Option<u32>,
    object_bytes: Option<u64>,
    puts_window_s: Option<f64>,
    gets: Option<u64>,
    gets_per_s: Option<f64>,
    get_holders_wanted: Option<usize>,
    put_w: Option<usize>,
    rf: Option<usize>,
    repair_bytes_per_s: Option<u64>,
    repair_burst_bytes: Option<u64>,
    replan_interval_s: Option<f64>,
    transfers_max: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOutput {
    interval_s: Option<f64>,
    plots: Option<bool>,
}

pub(super) fn invalid(key: &str, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// A finite, non-negative number of seconds (or ms, scaled by `unit`) as a `Duration`;
/// `positive` refuses zero.
pub(super) fn duration(
    key: &str,
    v: f64,
    unit: f64,
    positive: bool,
) -> Result<Duration, ScenarioError> {
    if !v.is_finite() || v < 0.0 || (positive && v == 0.0) {
        let want = if positive { "> 0" } else { ">= 0" };
        return Err(invalid(
            key,
            format!("must be a finite number {want}, got {v}"),
        ));
    }
    let secs = v * unit;
    if secs > 1e9 {
        return Err(invalid(key, format!("{v} is too large")));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(super) fn number(key: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ScenarioError> {
    if !v.is_finite() || v < lo || v > hi {
        return Err(invalid(key, format!("must be in [{lo}, {hi}], got {v}")));
    }
    Ok(v)
}

pub(super) fn positive(key: &str, v: f64) -> Result<f64, ScenarioError> {
    if !v.is_finite() || v <= 0.0 {
        return Err(invalid(
            key,
            format!("must be a finite number > 0, got {v}"),
        ));
    }
    Ok(v)
}

/// Refuses a parameter given for a model it does not belong to.
pub(super) fn only_for(
    section: &str,
    model: &str,
    given: &[(&str, bool)],
    allowed: &[&str],
) -> Result<(), ScenarioError> {
    for (name, set) in given {
        if *set && !allowed.contains(name) {
            return Err(invalid(
                &format!("{section}.{name}"),
                format!("is not a parameter of model \"{model}\" (it takes: {allowed:?})"),
            ));
        }
    }
    Ok(())
}

/// Reads and validates the scenario at `path`, with `overrides` applied on top.
pub fn load(path: &Path, overrides: &[Override]) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let name = path.file_stem().map_or_else(
        || "scenario".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let origin = path.display().to_string();
    parse_with(&text, &origin, base, &name, overrides)
}

/// Parses scenario text; relative trace paths resolve against `base_dir`.
pub fn parse_str(
    text: &str,
    base_dir: &Path,
    default_name: &str,
) -> Result<Scenario, ScenarioError> {
    parse_with(text, "scenario", base_dir, default_name, &[])
}

fn parse_with(
    text: &str,
    origin: &str,
    base_dir: &Path,
    default_name: &str,
    overrides: &[Override],
) -> Result<Scenario, ScenarioError> {
    let toml_err = |origin: &str, e: toml::de::Error| ScenarioError::Toml {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    };
    let raw: RawScenario = if overrides.is_empty() {
        toml::from_str(text).map_err(|e| toml_err(origin, e))?
    } else {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| toml_err(origin, e))?;
        apply_overrides(&mut table, overrides)?;
        let merged = toml::to_string(&table).map_err(|e| ScenarioError::Toml {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let origin = format!("{origin} (with --set overrides)");
        toml::from_str(&merged).map_err(|e| toml_err(&origin, e))?
    };
    convert(raw, base_dir, default_name)
}

fn convert(
    raw: RawScenario,
    base_dir: &Path,
    default_name: &str,
) -> Result<Scenario, ScenarioError> {
    let nodes = raw.nodes.unwrap_or(10_000);
    if nodes == 0 {
        return Err(invalid("nodes", "must be at least 1"));
    }
    let run_for = duration("duration_s", raw.duration_s.unwrap_or(3600.0), 1.0, true)?;
    let drain = duration("drain_s", raw.drain_s.unwrap_or(60.0), 1.0, false)?;
    let dht = convert_dht(raw.dht)?;
    let churn = models::convert_churn(raw.churn, nodes, base_dir)?;
    let failure = Failure {
        fraction: number(
            "failure.fraction",
            raw.failure.fraction.unwrap_or(0.0),
            0.0,
            1.0,
        )?,
        at: duration("failure.at_s", raw.failure.at_s.unwrap_or(0.0), 1.0, false)?,
    };
    let output = Output {
        interval: duration(
            "output.interval_s",
            raw.output.interval_s.unwrap_or(60.0),
            1.0,
            true,
        )?,
        plots: raw.output.plots.unwrap_or(true),
    };
    if run_for.as_nanos() / output.interval.as_nanos() > 1_000_000 {
        return Err(invalid(
            "output.interval_s",
            "gives more than 1,000,000 rows",
        ));
    }
    let soak = match raw.soak {
        Some(r) => Some(convert_soak(r, run_for, output.interval)?),
        None => None,
    };
    let mut dht = dht;
    if soak.is_some_and(|s| s.leak_records) {
        // About 116 days, longer than any run: records of providers that left or released are never dropped.
        dht.provider_ttl = Duration::from_secs(10_000_000);
    }
    Ok(Scenario {
        name: raw.name.unwrap_or_else(|| default_name.to_string()),
        nodes,
        seed: raw.seed.unwrap_or(1),
        duration: run_for,
        drain,
        dht,
        bootstrap: convert_bootstrap(raw.bootstrap)?,
        latency: models::convert_latency(raw.latency)?,
        churn,
        failure,
        workload: convert_workload(raw.workload)?,
        output,
        soak,
        bandwidth: match raw.bandwidth {
            Some(r) => Some(convert_bandwidth(r)?),
            None => None,
        },
        faults: Default::default(),
    })
}

/// `[bandwidth]`: both capacities, in Mbit/s (10^6 bits), finite and at least 1 byte/s.
fn convert_bandwidth(r: RawBandwidth) -> Result<crate::bandwidth::Bandwidth, ScenarioError> {
    let one = |key: &str, v: Option<f64>| {
        let Some(v) = v else {
            return Err(invalid(
                key,
                "is required in [bandwidth] (Mbit/s; leave the section out for no bandwidth limit)",
            ));
        };
        let v = positive(key, v)?;
        if v > 1e7 {
            return Err(invalid(
                key,
                format!("{v} Mbit/s is too large (at most 1e7)"),
            ));
        }
        match crate::bandwidth::bytes_per_s(v) {
            0 => Err(invalid(
                key,
                format!("{v} Mbit/s is below 1 byte/s (at least 0.000008)"),
            )),
            b => Ok(b),
        }
    };
    Ok(crate::bandwidth::Bandwidth {
        uplink: one("bandwidth.uplink_mbps", r.uplink_mbps)?,
        downlink: one("bandwidth.downlink_mbps", r.downlink_mbps)?,
    })
}

fn convert_soak(r: RawSoak, run_for: Duration, interval: Duration) -> Result<Soak, ScenarioError> {
    let from = duration("soak.from_s", r.from_s.unwrap_or(7200.0), 1.0, true)?;
    let to = match r.to_s {
        Some(v) => duration("soak.to_s", v, 1.0, true)?,
        None => run_for,
    };
    for (key, t) in [("soak.from_s", from), ("soak.to_s", to)] {
        if t > run_for {
            return Err(invalid(key, "must be at most duration_s"));
        }
        if t.as_nanos() % interval.as_nanos() != 0 {
            return Err(invalid(
                key,
                "must be a multiple of output.interval_s (a row boundary)",
            ));
        }
    }
    if from >= to {
        return Err(invalid("soak.to_s", "must be after soak.from_s"));
    }
    Ok(Soak {
        from,
        to,
        tolerance: number("soak.tolerance", r.tolerance.unwrap_or(0.05), 0.0, 10.0)?,
        leak_records: r.leak_records.unwrap_or(false),
    })
}

fn convert_dht(r: RawDht) -> Result<overlay::Config, ScenarioError> {
    let mut c = overlay::Config::default();
    if let Some(k) = r.k {
        // The k-derived defaults follow k, as in overlay's own defaults.
        c.k = k;
        c.replacement_cache_size = k;
        c.lookup_rpcs_max = k * 8;
        c.lookup_candidates_max = k * 8;
    }
    let set = |v: Option<usize>, field: &mut usize| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(r.alpha, &mut c.alpha);
    set(r.replacement_cache_size, &mut c.replacement_cache_size);
    set(r.liveness_probes_max, &mut c.liveness_probes_max);
    set(r.providers_per_key_max, &mut c.providers_per_key_max);
    set(r.provider_records_max, &mut c.provider_records_max);
    set(r.queries_max, &mut c.queries_max);
    set(r.announcements_max, &mut c.announcements_max);
    set(r.lookup_rpcs_max, &mut c.lookup_rpcs_max);
    set(r.lookup_candidates_max, &mut c.lookup_candidates_max);
    set(r.transmits_max, &mut c.transmits_max);
    set(r.rpcs_in_flight_max, &mut c.rpcs_in_flight_max);
    set(r.events_max, &mut c.events_max);
    set(r.refresh_on_join_max, &mut c.refresh_on_join_max);
    if let Some(v) = r.evict_after_failures {
        // A routing entry counts its failures in two bytes.
        if v > u32::from(u16::MAX) {
            return Err(invalid(
                "dht.evict_after_failures",
                format!("must be at most 65535, got {v}"),
            ));
        }
        c.evict_after_failures = v;
    }
    if let Some(v) = r.rpc_timeout_ms {
        c.rpc_timeout = duration("dht.rpc_timeout_ms", v, 1e-3, true)?;
    }
    if let Some(v) = r.soft_timeout_min_ms {
        c.soft_timeout_min = duration("dht.soft_timeout_min_ms", v, 1e-3, false)?;
    }
    if let Some(v) = r.soft_timeout_initial_ms {
        c.soft_timeout_initial = duration("dht.soft_timeout_initial_ms", v, 1e-3, true)?;
    }
    if let Some(v) = r.query_timeout_s {
        c.query_timeout = duration("dht.query_timeout_s", v, 1.0, true)?;
    }
    if let Some(v) = r.bucket_refresh_s {
        c.bucket_refresh_interval = duration("dht.bucket_refresh_s", v, 1.0, true)?;
    }
    if let Some(v) = r.liveness_spread {
        c.liveness_spread = v;
    }
    if let Some(v) = r.liveness_interval_s {
        let d = duration("dht.liveness_interval_s", v, 1.0, false)?;
        c.liveness_interval = (!d.is_zero()).then_some(d);
    }
    if let Some(v) = r.bootstrap_check_s {
        let d = duration("dht.bootstrap_check_s", v, 1.0, false)?;
        c.bootstrap_check_interval = (!d.is_zero()).then_some(d);
    }
    if let Some(v) = r.provider_ttl_s {
        c.provider_ttl = duration("dht.provider_ttl_s", v, 1.0, true)?;
    }
    if let Some(v) = r.provider_republish_s {
        c.provider_republish_interval = duration("dht.provider_republish_s", v, 1.0, true)?;
    }
    if let Some(v) = r.rejoin_interval_s {
        c.rejoin_interval = duration("dht.rejoin_interval_s", v, 1.0, true)?;
    }
    if let Some(v) = r.thin_table_lookup_s {
        let d = duration("dht.thin_table_lookup_s", v, 1.0, false)?;
        c.thin_table_lookup = (!d.is_zero()).then_some(d);
    }
    c.validate().map_err(|reason| invalid("dht", reason))?;
    if c.queries_max == 0 || c.transmits_max == 0 || c.events_max == 0 {
        return Err(invalid(
            "dht",
            "queries_max, transmits_max and events_max must be >= 1",
        ));
    }
    Ok(c)
}

fn convert_bootstrap(r: RawBootstrap) -> Result<Bootstrap, ScenarioError> {
    match r.mode.as_deref().unwrap_or("ideal") {
        "ideal" => {
            only_for(
                "bootstrap",
                "ideal",
                &[("join_window_s", r.join_window_s.is_some())],
                &[],
            )?;
            Ok(Bootstrap::Ideal)
        }
        "join" => Ok(Bootstrap::Join {
            window: duration(
                "bootstrap.join_window_s",
                r.join_window_s.unwrap_or(60.0),
                1.0,
                false,
            )?,
        }),
        other => Err(invalid(
            "bootstrap.mode",
            format!("unknown mode \"{other}\" (expected \"ideal\" or \"join\")"),
        )),
    }
}

fn rate(
    section: &str,
    total_key: &str,
    total: Option<u64>,
    per_s: Option<f64>,
    default_total: u64,
) -> Result<Rate, ScenarioError> {
    match (total, per_s) {
        (Some(_), Some(_)) => Err(invalid(
            &format!("{section}.{total_key}_per_s"),
            format!("give either {total_key} (a total) or {total_key}_per_s (a rate), not both"),
        )),
        (_, Some(r)) => Ok(Rate::PerSecond(number(
            &format!("{section}.{total_key}_per_s"),
            r,
            0.0,
            1e7,
        )?)),
        (t, None) => Ok(Rate::Total(t.unwrap_or(default_total))),
    }
}

fn convert_workload(r: RawWorkload) -> Result<Workload, ScenarioError> {
    let target = match r.target.as_deref().unwrap_or("random_key") {
        "random_key" => Target::RandomKey,
        "random_node" => Target::RandomNode,
        other => {
            return Err(invalid(
                "workload.target",
                format!("unknown target \"{other}\" (expected random_key or random_node)"),
            ));
        }
    };
    let mut replication = overlay::ReplicationConfig::default();
    if let Some(rf) = r.rf {
        if rf == 0 || rf > 32 {
            return Err(invalid(
                "workload.rf",
                format!("must be in [1, 32], got {rf}"),
            ));
        }
        replication.rf = rf;
    }
    if let Some(b) = r.repair_bytes_per_s {
        if b == 0 {
            return Err(invalid("workload.repair_bytes_per_s", "must be >= 1"));
        }
        replication.bytes_per_second = b;
    }
    if let Some(b) = r.repair_burst_bytes {
        replication.burst_bytes = b.max(1);
    }
    if let Some(v) = r.replan_interval_s {
        replication.replan_interval = duration("workload.replan_interval_s", v, 1.0, true)?;
    }
    if let Some(t) = r.transfers_max {
        if t == 0 {
            return Err(invalid("workload.transfers_max", "must be >= 1"));
        }
        replication.transfers_max = t;
    }
    let object_bytes = r.object_bytes.unwrap_or(1 << 20);
    if object_bytes == 0 {
        return Err(invalid("workload.object_bytes", "must be >= 1"));
    }
    Ok(Workload {
        lookups: rate("workload", "lookups", r.lookups, r.lookups_per_s, 100_000)?,
        target,
        start: duration("workload.start_s", r.start_s.unwrap_or(0.0), 1.0, false)?,
        objects: r.objects.unwrap_or(0),
        object_bytes,
        puts_window: duration(
            "workload.puts_window_s",
            r.puts_window_s.unwrap_or(60.0),
            1.0,
            true,
        )?,
        gets: rate("workload", "gets", r.gets, r.gets_per_s, 0)?,
        get_holders_wanted: match r.get_holders_wanted {
            Some(0) => return Err(invalid("workload.get_holders_wanted", "must be >= 1")),
            w => w,
        },
        put_w: match r.put_w {
            Some(w) if w == 0 || w > replication.rf => {
                return Err(invalid(
                    "workload.put_w",
                    format!("must be in [1, rf = {}], got {w}", replication.rf),
                ));
            }
            w => w,
        },
        replication,
    })
}
