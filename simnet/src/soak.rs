//! A soak's verdict (`[soak]`, issue 14 item 5): per-node state at two checkpoints and the
//! safety checks of the whole run, judged against the scenario's bounds.
//!
//! The engine samples every live node's state at the end of each `timeseries.csv` row and
//! runs the checkers there (`engine::soak`); this module reads the samples at the
//! checkpoints `from` and `to` (the settled network, and the end of the day), computes
//! each per-node mean's relative change (against the earlier mean or 1, whichever is
//! larger, `metrics::state_change`), and passes the run when no check failed and every
//! bounded mean moved by at most the tolerance.

use serde::Serialize;

use crate::engine::Finished;
use crate::metrics::{STATE_BOUNDED, STATE_FIELDS, StateSample, state_change};
use crate::output::Cell;

/// One sampled quantity at the two checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateChange {
    /// What is counted (`metrics::STATE_FIELDS`).
    pub name: &'static str,
    /// Whether the tolerance applies to it.
    pub bounded: bool,
    /// Mean per live node at `from`.
    pub from_mean: f64,
    /// Mean per live node at `to`.
    pub to_mean: f64,
    /// (to − from) / max(from, 1).
    pub change: f64,
    /// Largest value at one node at `from`.
    pub from_max: u64,
    /// Largest value at one node at `to`.
    pub to_max: u64,
    /// Within the tolerance (or not bounded).
    pub within: bool,
}

/// The soak's verdict, in `summary.json` under `soak`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoakReport {
    /// No violation and every bounded mean within the tolerance.
    pub pass: bool,
    /// The baseline checkpoint, s.
    pub from_s: f64,
    /// The final checkpoint, s.
    pub to_s: f64,
    /// The largest relative change allowed.
    pub tolerance: f64,
    /// Live nodes sampled at `from` and at `to`.
    pub live: [u64; 2],
    /// Safety violations over the whole run.
    pub violations: u64,
    /// The first few, with their time.
    pub violations_first: Vec<String>,
    /// Every sampled quantity.
    pub state: Vec<StateChange>,
    /// The largest |change| among the bounded quantities.
    pub worst_change: f64,
}

impl Cell for SoakReport {
    fn cell(&self) -> String {
        if self.pass { "pass" } else { "fail" }.to_string()
    }
}

fn sample_at(f: &Finished, t: std::time::Duration) -> Option<&StateSample> {
    let interval = f.scenario.output.interval.as_nanos().max(1);
    let row = (t.as_nanos() / interval).checked_sub(1)?;
    f.metrics.rows.get(row as usize)?.state.as_ref()
}

impl SoakReport {
    /// The verdict of a finished run, if it was a soak.
    pub fn new(f: &Finished) -> Option<SoakReport> {
        let soak = f.scenario.soak?;
        let empty = StateSample::default();
        let a = sample_at(f, soak.from).unwrap_or(&empty);
        let b = sample_at(f, soak.to).unwrap_or(&empty);
        let mut worst: f64 = 0.0;
        let state: Vec<StateChange> = STATE_FIELDS
            .iter()
            .enumerate()
            .map(|(i, &name)| {
                let (from_mean, to_mean) = (a.mean(i), b.mean(i));
                let change = state_change(from_mean, to_mean);
                let bounded = STATE_BOUNDED[i];
                if bounded {
                    worst = worst.max(change.abs());
                }
                StateChange {
                    name,
                    bounded,
                    from_mean,
                    to_mean,
                    change,
                    from_max: a.max[i],
                    to_max: b.max[i],
                    within: !bounded || change.abs() <= soak.tolerance,
                }
            })
            .collect();
        let sampled = a.live > 0 && b.live > 0;
        let violations = f.metrics.violations_total;
        Some(SoakReport {
            pass: sampled && violations == 0 && state.iter().all(|s| s.within),
            from_s: soak.from.as_secs_f64(),
            to_s: soak.to.as_secs_f64(),
            tolerance: soak.tolerance,
            live: [a.live, b.live],
            violations,
            violations_first: f.metrics.violations.clone(),
            state,
            worst_change: worst,
        })
    }

    /// The one line `simnet run` prints: the verdict against both criteria.
    pub fn line(&self) -> String {
        let mut s = format!(
            "soak {}: {} safety violations (0 allowed); per-node state at {:.1} h vs {:.1} h: worst change {:+.2} % (bound {:.1} %)",
            if self.pass { "PASS" } else { "FAIL" },
            self.violations,
            self.to_s / 3600.0,
            self.from_s / 3600.0,
            self.worst_change * 100.0,
            self.tolerance * 100.0,
        );
        for c in &self.state {
            s.push_str(&format!(
                "\n  {:<13} mean {:>10.3} -> {:>10.3} ({:+7.2} %)  max {:>6} -> {:>6}{}",
                c.name,
                c.from_mean,
                c.to_mean,
                c.change * 100.0,
                c.from_max,
                c.to_max,
                if c.within { "" } else { "  OUT OF BOUND" }
            ));
        }
        for v in &self.violations_first {
            s.push_str(&format!("\n  violation: {v}"));
        }
        s
    }
}
