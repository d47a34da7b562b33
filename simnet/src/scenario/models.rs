//! The model-specific sections of a scenario, `[latency]` and `[churn]`: each parameter is
//! matched to the model it belongs to, defaults are filled per model, and churn traces are
//! read and checked line by line.
//!
//! Kept apart from [`parse`](super::parse) because these sections are where one key's
//! meaning depends on another's value (`model`): a parameter given for a model it does not
//! belong to is refused by name rather than silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::parse::{invalid, number, only_for, positive};
use super::{Churn, ChurnModel, Latency, LatencyModel, ScenarioError, TraceEvent};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLatency {
    model: Option<String>,
    ms: Option<f64>,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
    median_ms: Option<f64>,
    sigma: Option<f64>,
    regions: Option<u32>,
    intra_ms: Option<f64>,
    inter_ms: Option<f64>,
    base_ms: Option<f64>,
    side_ms: Option<f64>,
    names: Option<Vec<String>>,
    rtt_ms: Option<Vec<Vec<f64>>>,
    loss: Option<f64>,
    jitter: Option<f64>,
    handshake: Option<bool>,
    zero_rtt: Option<bool>,
    connections_max: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawChurn {
    model: Option<String>,
    mean_up_s: Option<f64>,
    mean_down_s: Option<f64>,
    shape: Option<f64>,
    mean_s: Option<f64>,
    file: Option<String>,
    rejoin_same_id: Option<bool>,
}

pub(super) fn convert_latency(r: RawLatency) -> Result<Latency, ScenarioError> {
    let given = [
        ("ms", r.ms.is_some()),
        ("min_ms", r.min_ms.is_some()),
        ("max_ms", r.max_ms.is_some()),
        ("median_ms", r.median_ms.is_some()),
        ("sigma", r.sigma.is_some()),
        ("regions", r.regions.is_some()),
        ("intra_ms", r.intra_ms.is_some()),
        ("inter_ms", r.inter_ms.is_some()),
        ("base_ms", r.base_ms.is_some()),
        ("side_ms", r.side_ms.is_some()),
        ("names", r.names.is_some()),
        ("rtt_ms", r.rtt_ms.is_some()),
    ];
    let ms = |key: &str, v: Option<f64>, default: f64| -> Result<f64, ScenarioError> {
        number(&format!("latency.{key}"), v.unwrap_or(default), 0.0, 1e6)
    };
    let model_name = r.model.as_deref().unwrap_or("constant");
    let mut rtt_ms = Vec::new();
    let mut region_names = Vec::new();
    let model = match model_name {
        "constant" => {
            only_for("latency", model_name, &given, &["ms"])?;
            LatencyModel::Constant {
                ms: ms("ms", r.ms, 50.0)?,
            }
        }
        "uniform" => {
            only_for("latency", model_name, &given, &["min_ms", "max_ms"])?;
            let (min_ms, max_ms) = (ms("min_ms", r.min_ms, 20.0)?, ms("max_ms", r.max_ms, 80.0)?);
            if min_ms > max_ms {
                return Err(invalid(
                    "latency.max_ms",
                    format!("{max_ms} < min_ms = {min_ms}"),
                ));
            }
            LatencyModel::Uniform { min_ms, max_ms }
        }
        "lognormal" => {
            only_for("latency", model_name, &given, &["median_ms", "sigma"])?;
            LatencyModel::LogNormal {
                median_ms: positive("latency.median_ms", r.median_ms.unwrap_or(50.0))?,
                sigma: number("latency.sigma", r.sigma.unwrap_or(0.5), 0.0, 5.0)?,
            }
        }
        "regions" => {
            only_for(
                "latency",
                model_name,
                &given,
                &["regions", "intra_ms", "inter_ms", "names", "rtt_ms"],
            )?;
            if let Some(m) = &r.rtt_ms {
                if r.intra_ms.is_some() || r.inter_ms.is_some() {
                    return Err(invalid(
                        "latency.rtt_ms",
                        "give a measured matrix or intra_ms/inter_ms, not both",
                    ));
                }
                let n = m.len();
                if n == 0 || m.iter().any(|row| row.len() != n) {
                    return Err(invalid("latency.rtt_ms", "must be a square matrix"));
                }
                for (i, row) in m.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        number(&format!("latency.rtt_ms[{i}][{j}]"), *v, 0.0, 1e6)?;
                        if (v - m[j][i]).abs() > 1e-9 {
                            return Err(invalid(
                                "latency.rtt_ms",
                                format!(
                                    "must be symmetric: [{i}][{j}] = {v}, [{j}][{i}] = {}",
                                    m[j][i]
                                ),
                            ));
                        }
                    }
                }
                if r.regions.is_some_and(|x| x as usize != n) {
                    return Err(invalid(
                        "latency.regions",
                        "differs from the size of rtt_ms",
                    ));
                }
                rtt_ms = m.iter().flatten().copied().collect();
            }
            let regions = match &r.rtt_ms {
                Some(m) => m.len() as u32,
                None => r.regions.unwrap_or(3),
            };
            if regions == 0 {
                return Err(invalid("latency.regions", "must be at least 1"));
            }
            if let Some(names) = &r.names {
                if names.len() != regions as usize {
                    return Err(invalid(
                        "latency.names",
                        format!("{} names for {regions} regions", names.len()),
                    ));
                }
                region_names = names.clone();
            }
            LatencyModel::Regions {
                regions,
                intra_ms: ms("intra_ms", r.intra_ms, 20.0)?,
                inter_ms: ms("inter_ms", r.inter_ms, 100.0)?,
            }
        }
        "coordinates" => {
            only_for("latency", model_name, &given, &["base_ms", "side_ms"])?;
            LatencyModel::Coordinates {
                base_ms: ms("base_ms", r.base_ms, 5.0)?,
                side_ms: ms("side_ms", r.side_ms, 100.0)?,
            }
        }
        other => {
            return Err(invalid(
                "latency.model",
                format!(
                    "unknown model \"{other}\" (expected constant, uniform, lognormal, regions \
                     or coordinates)"
                ),
            ));
        }
    };
    let loss = number("latency.loss", r.loss.unwrap_or(0.0), 0.0, 1.0)?;
    if loss >= 1.0 {
        return Err(invalid(
            "latency.loss",
            "must be < 1: with 1 no message arrives",
        ));
    }
    // A constant link is constant unless jitter is asked for.
    let default_jitter = if model_name == "constant" { 0.0 } else { 0.1 };
    let jitter = number(
        "latency.jitter",
        r.jitter.unwrap_or(default_jitter),
        0.0,
        10.0,
    )?;
    let connections_max = r.connections_max.unwrap_or(256);
    if connections_max == 0 {
        return Err(invalid("latency.connections_max", "must be at least 1"));
    }
    let handshake = r.handshake.unwrap_or(true);
    let zero_rtt = r.zero_rtt.unwrap_or(false);
    if zero_rtt && !handshake {
        return Err(invalid(
            "latency.zero_rtt",
            "needs latency.handshake = true (without handshakes there is nothing to save)",
        ));
    }
    Ok(Latency {
        model,
        loss,
        jitter,
        handshake,
        zero_rtt,
        connections_max,
        region_names,
        rtt_ms,
    })
}

pub(super) fn convert_churn(
    r: RawChurn,
    nodes: u32,
    base_dir: &Path,
) -> Result<Churn, ScenarioError> {
    let given = [
        ("mean_up_s", r.mean_up_s.is_some()),
        ("mean_down_s", r.mean_down_s.is_some()),
        ("shape", r.shape.is_some()),
        ("mean_s", r.mean_s.is_some()),
        ("file", r.file.is_some()),
    ];
    let secs = |key: &str, v: Option<f64>, default: f64| -> Result<f64, ScenarioError> {
        let v = positive(&format!("churn.{key}"), v.unwrap_or(default))?;
        if v > 1e9 {
            return Err(invalid(
                &format!("churn.{key}"),
                format!("{v} is too large"),
            ));
        }
        Ok(v)
    };
    let name = r.model.as_deref().unwrap_or("none");
    let model = match name {
        "none" => {
            only_for("churn", name, &given, &[])?;
            ChurnModel::None
        }
        "exponential" => {
            only_for("churn", name, &given, &["mean_up_s", "mean_down_s"])?;
            ChurnModel::Exponential {
                mean_up_s: secs("mean_up_s", r.mean_up_s, 3600.0)?,
                mean_down_s: secs("mean_down_s", r.mean_down_s, 3600.0)?,
            }
        }
        "weibull" | "pareto" => {
            only_for("churn", name, &given, &["shape", "mean_s", "mean_down_s"])?;
            let mean_up_s = secs("mean_s", r.mean_s, 3600.0)?;
            let mean_down_s = secs("mean_down_s", r.mean_down_s, mean_up_s)?;
            if name == "weibull" {
                let shape = number("churn.shape", r.shape.unwrap_or(0.5), 0.1, 20.0)?;
                ChurnModel::Weibull {
                    shape,
                    mean_up_s,
                    mean_down_s,
                }
            } else {
                let shape = r.shape.unwrap_or(3.0);
                if !(shape > 1.0 && shape <= 100.0) {
                    return Err(invalid(
                        "churn.shape",
                        format!(
                            "a Pareto shape must be in (1, 100] for a finite mean, got {shape}"
                        ),
                    ));
                }
                ChurnModel::Pareto {
                    shape,
                    mean_up_s,
                    mean_down_s,
                }
            }
        }
        "trace" => {
            only_for("churn", name, &given, &["file"])?;
            let Some(file) = r.file else {
                return Err(invalid("churn.file", "model \"trace\" needs a file"));
            };
            let path = base_dir.join(file);
            ChurnModel::Trace {
                events: read_trace(&path, nodes)?,
            }
        }
        other => {
            return Err(invalid(
                "churn.model",
                format!(
                    "unknown model \"{other}\" (expected none, exponential, weibull, pareto or trace)"
                ),
            ));
        }
    };
    Ok(Churn {
        model,
        rejoin_same_id: r.rejoin_same_id.unwrap_or(false),
    })
}

/// Reads a `time_s,slot,up|down` CSV (a header line and `#` comments are skipped).
fn read_trace(path: &PathBuf, nodes: u32) -> Result<Vec<TraceEvent>, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.clone(),
        source,
    })?;
    let bad = |line: usize, reason: String| ScenarioError::Trace {
        path: path.clone(),
        line,
        reason,
    };
    let mut events = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line.starts_with("time")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [t, slot, state] = fields[..] else {
            return Err(bad(
                i + 1,
                format!("expected time_s,slot,up|down, got \"{line}\""),
            ));
        };
        let t: f64 = t
            .parse()
            .map_err(|_| bad(i + 1, format!("time \"{t}\" is not a number")))?;
        if !t.is_finite() || !(0.0..=1e9).contains(&t) {
            return Err(bad(i + 1, format!("time {t} must be in [0, 1e9]")));
        }
        let slot: u32 = slot.parse().map_err(|_| {
            bad(
                i + 1,
                format!("slot \"{slot}\" is not a non-negative integer"),
            )
        })?;
        if slot >= nodes {
            return Err(bad(i + 1, format!("slot {slot} >= nodes = {nodes}")));
        }
        let up = match state {
            "up" => true,
            "down" => false,
            s => return Err(bad(i + 1, format!("state \"{s}\" is neither up nor down"))),
        };
        events.push(TraceEvent {
            at: Duration::from_secs_f64(t),
            slot,
            up,
        });
    }
    events.sort_by_key(|e| e.at);
    Ok(events)
}
