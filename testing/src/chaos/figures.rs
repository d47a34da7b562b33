//! What a scenario reports: named figures, each with its goal, in one printed line.
//!
//! A figure without a goal is context (how many PUTs ran); a figure with a goal is a
//! promise the node makes, and a missed goal is what makes the runner and the CI tier
//! fail. A scenario that cannot run yet (a node feature it needs is not built) reports
//! itself as pending, with what it needs, and fails nothing.

use std::fmt;

/// A bound a figure must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// `value <= bound`.
    AtMost(f64),
    /// `value >= bound`.
    AtLeast(f64),
}

impl Goal {
    /// Whether `value` meets the goal (NaN never does).
    pub fn met(self, value: f64) -> bool {
        match self {
            Goal::AtMost(b) => value <= b,
            Goal::AtLeast(b) => value >= b,
        }
    }
}

/// One measured value.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Short name (`acked_lost`).
    pub name: String,
    /// The value.
    pub value: f64,
    /// Unit printed after it (`""`, `"%"`, `"s"`, `"MiB"`).
    pub unit: &'static str,
    /// The goal, if the figure has one.
    pub goal: Option<Goal>,
    /// The id of a known node defect that makes this figure miss (RELIABILITY.md).
    pub known: Option<&'static str>,
}

impl Figure {
    /// Whether the figure misses its goal.
    pub fn missed(&self) -> bool {
        self.goal.is_some_and(|g| !g.met(self.value))
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}{}", self.name, num(self.value), self.unit)?;
        match self.goal {
            None => Ok(()),
            Some(g) => {
                let (op, b) = match g {
                    Goal::AtMost(b) => ("<=", b),
                    Goal::AtLeast(b) => (">=", b),
                };
                let verdict = match (g.met(self.value), self.known) {
                    (true, None) => "ok".to_string(),
                    (false, None) => "MISS".to_string(),
                    (false, Some(d)) => format!("MISS, known defect {d}"),
                    (true, Some(d)) => format!("ok, known defect {d} did not show"),
                };
                write!(f, " (goal {op}{}{} {verdict})", num(b), self.unit)
            }
        }
    }
}

/// A scenario's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The scenario's name (`kill-loop`).
    pub scenario: String,
    /// The seed it ran with.
    pub seed: u64,
    /// Whether it was the long version.
    pub long: bool,
    /// The figures, goals first.
    pub figures: Vec<Figure>,
    /// Observations worth a line of their own (a defect's evidence, what was skipped).
    pub notes: Vec<String>,
    /// `Some(feature)`: the scenario waits for a node feature and did not run.
    pub pending: Option<String>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &str, seed: u64, long: bool) -> Report {
        Report {
            scenario: scenario.to_string(),
            seed,
            long,
            figures: Vec::new(),
            notes: Vec::new(),
            pending: None,
        }
    }

    /// A report for a scenario that needs `feature` first.
    pub fn pending(scenario: &str, seed: u64, long: bool, feature: &str) -> Report {
        Report {
            pending: Some(feature.to_string()),
            ..Report::new(scenario, seed, long)
        }
    }

    /// Adds a figure with a goal.
    pub fn goal(&mut self, name: &str, value: f64, unit: &'static str, goal: Goal) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit,
            goal: Some(goal),
            known: None,
        });
    }

    /// Adds a count whose goal is none at all (lost writes, crashes, corrupt reads).
    pub fn zero(&mut self, name: &str, count: u64) {
        self.goal(name, count as f64, "", Goal::AtMost(0.0));
    }

    /// Adds a memory figure in MiB: `bytes` at most `bound` bytes.
    pub fn mib_at_most(&mut self, name: &str, bytes: u64, bound: u64) {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        self.goal(name, mib(bytes), "MiB", Goal::AtMost(mib(bound)));
    }

    /// Adds a yes/no figure (1 or 0) whose goal is yes.
    pub fn yes(&mut self, name: &str, yes: bool) {
        self.goal(name, f64::from(u8::from(yes)), "", Goal::AtLeast(1.0));
    }

    /// Adds a figure without a goal.
    pub fn info(&mut self, name: &str, value: f64, unit: &'static str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit,
            goal: None,
            known: None,
        });
    }

    /// Adds a note, printed under the figures line.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Marks the figures that known defects make miss: `(scenario, figure, defect id)`.
    pub fn mark_known(&mut self, known: &[(&str, &str, &'static str)]) {
        for f in &mut self.figures {
            f.known = known
                .iter()
                .find(|(s, name, _)| *s == self.scenario && *name == f.name)
                .map(|k| k.2);
        }
    }

    /// The figures that miss their goals for a reason nobody has written down yet.
    pub fn missed(&self) -> Vec<&Figure> {
        self.figures
            .iter()
            .filter(|f| f.missed() && f.known.is_none())
            .collect()
    }

    /// The figures that miss their goals because of a known defect.
    pub fn known_misses(&self) -> Vec<&Figure> {
        self.figures
            .iter()
            .filter(|f| f.missed() && f.known.is_some())
            .collect()
    }

    /// Whether every goal is met but for known defects (a pending scenario meets its none).
    pub fn passed(&self) -> bool {
        self.missed().is_empty()
    }

    /// The one line of figures: `chaos SCENARIO seed=N short|long: f1, f2, ... => PASS`.
    pub fn line(&self) -> String {
        let mode = if self.long { "long" } else { "short" };
        if let Some(feature) = &self.pending {
            return format!(
                "chaos {} seed={} {mode}: pending: needs {feature}",
                self.scenario, self.seed
            );
        }
        let figures: Vec<String> = self.figures.iter().map(Figure::to_string).collect();
        let known = self.known_misses().len();
        let verdict = match (self.passed(), known) {
            (true, 0) => "PASS".to_string(),
            (true, k) => format!("PASS but for {k} known defect(s)"),
            (false, k) => format!("MISS ({} new, {k} known)", self.missed().len()),
        };
        format!(
            "chaos {} seed={} {mode}: {} => {verdict}",
            self.scenario,
            self.seed,
            figures.join(", ")
        )
    }
}

/// The `q` quantile (0..=1) of `v`, sorting it; NaN when empty.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let at = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    v[at]
}

/// The trend of `y` over `x` (units of y per unit of x): the Theil–Sen estimate, the median
/// of the slopes between every pair of points; NaN with < 2 distinct x. A leak grows
/// steadily and keeps its whole slope here; a one-off step (a node's memory settling after
/// its first repair) moves only the pairs that straddle it, so it cannot pass for a leak in
/// a short window the way it does in a least-squares fit.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    quantile(&mut slopes, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_each_goal_and_its_verdict() {
        let mut r = Report::new("demo", 7, false);
        r.goal("lost", 0.0, "", Goal::AtMost(0.0));
        r.goal("availability", 98.5, "%", Goal::AtLeast(99.0));
        r.info("puts", 120.0, "");
        let line = r.line();
        assert_eq!(
            line,
            "chaos demo seed=7 short: lost=0 (goal <=0 ok), availability=98.50% \
             (goal >=99% MISS), puts=120 => MISS (1 new, 0 known)"
        );
        assert!(!r.passed());
        r.mark_known(&[("demo", "availability", "D9")]);
        assert!(r.passed());
        assert!(r.line().contains("MISS, known defect D9"), "{}", r.line());
        let p = Report::pending("quota-storm", 1, false, "tenant quotas");
        assert!(p.passed());
        assert!(p.line().contains("pending: needs tenant quotas"));
    }

    #[test]
    fn slope_and_quantiles() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        assert!((slope(&pts) - 2.0).abs() < 1e-9);
        assert!(slope(&pts[..1]).is_nan());
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    /// RSS samples every 5 s over a 2.5-minute window (minutes, MiB), with a little noise.
    fn window(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..30)
            .map(|i| {
                let t = 2.5 + f64::from(i) / 12.0;
                let noise = [0.0, 0.04, -0.03, 0.02, -0.05][i as usize % 5];
                (t, f(t) + noise)
            })
            .collect()
    }

    #[test]
    fn a_settling_step_is_no_leak_and_a_leak_keeps_its_slope() {
        // Memory settles 3 MiB higher 40 % into the window and stays there: least squares
        // read about 1.7 MiB/min into it (the soak's false alarm against its 1 MiB/min
        // goal); the trend, 0.6. Early or late in the window a step counts for nothing.
        let step = window(|t| if t < 3.5 { 23.6 } else { 26.6 });
        assert!(slope(&step).abs() < 1.0, "step: {}", slope(&step));
        let early = window(|t| if t < 3.0 { 23.6 } else { 26.6 });
        assert!(slope(&early).abs() < 0.1, "early step: {}", slope(&early));
        // A leak of 1.5 MiB/min with the same step on top is never hidden by it.
        let leak = window(|t| 20.0 + 1.5 * t + if t < 3.5 { 0.0 } else { 3.0 });
        assert!(slope(&leak) >= 1.4, "leak: {}", slope(&leak));
        let pure = window(|t| 20.0 + 1.5 * t);
        assert!(
            (slope(&pure) - 1.5).abs() < 0.1,
            "pure leak: {}",
            slope(&pure)
        );
    }
}
