//! `simnet swarm`: many seeds, each a random fault profile over a small network of real
//! `overlay::Dht` nodes, judged by checkers outside the nodes (TigerBeetle's VOPR,
//! FoundationDB's simulation).
//!
//! Per seed: [`profile`] draws the faults (loss, crashes with same-id restarts, a
//! partition) from the seed; the run turns loss on for the fault phase and off at the heal;
//! [`check`] judges safety every 10 simulated seconds (no table holds itself, no invented
//! provider record) and liveness after the heal (every stored object has a record at one of
//! its k closest; lookups started after the settling time are exact at
//! [`EXACT_MIN`] or better). Each seed yields one [`SeedReport`] with a digest of the run's
//! final state and counters: the same seed gives the same digest, bit for bit.

pub mod check;
pub mod profile;

use overlay::Instant;

use crate::engine::Sim;
use crate::scenario::ScenarioError;
use check::Violation;
use profile::{Bounds, Profile};

/// The fraction of liveness lookups that must be exact (the true k closest live nodes, in
/// order) for a seed to pass.
pub const EXACT_MIN: f64 = 0.99;

/// The known defect a liveness failure after a partition is (RELIABILITY.md, "D7"): once
/// each side's liveness probes have evicted the other, only the periodic bootstrap check
/// re-merges the network, and a group whose nodes all joined through each other has no
/// bootstrap contact across the cut (1 seed in 200 still fails). A seed that
/// failed only on lookup exactness, and drew a partition, reports it as known; `simnet
/// swarm --strict` fails on it. Safety violations and records out of reach are never known.
pub const KNOWN_PARTITION_SPLIT: &str = "D7";

/// Safety is checked at this interval of virtual time, s.
const CHECK_EVERY_S: u64 = 10;

/// How one seed went.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The profile that ran.
    pub profile: Profile,
    /// Broken properties (empty: safe and live).
    pub violations: Vec<String>,
    /// Liveness lookups started after the settling time.
    pub lookups: u64,
    /// Of those, exact.
    pub exact: u64,
    /// blake3 of the run's counters and final state, hex.
    pub digest: String,
    /// The known defect that explains every violation, if one does.
    pub known: Option<&'static str>,
}

impl SeedReport {
    /// Whether the seed passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether the seed failed in a way no known defect explains.
    pub fn failed_unknown(&self) -> bool {
        !self.passed() && self.known.is_none()
    }

    /// The one line `simnet swarm` prints for this seed.
    pub fn line(&self, bounds: Bounds) -> String {
        let verdict = match (self.passed(), self.known) {
            (true, _) => "ok".to_string(),
            (false, Some(d)) => format!("FAIL, known defect {d}"),
            (false, None) => "FAIL".to_string(),
        };
        let mut s = format!(
            "seed {} {} exact {}/{} {} digest {}",
            self.profile.seed,
            self.profile.describe(),
            self.exact,
            self.lookups,
            verdict,
            &self.digest[..16]
        );
        if !self.passed() {
            s.push_str(&format!(
                "\n  replay: simnet swarm --seeds 1 --from {} --nodes-min {} --nodes-max {}",
                self.profile.seed, bounds.nodes_min, bounds.nodes_max
            ));
            for v in &self.violations {
                s.push_str(&format!("\n  {v}"));
            }
        }
        s
    }
}

/// Why a seed could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The generated scenario did not validate (a bug in the profile).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

fn at(s: f64) -> Instant {
    Instant::ZERO + std::time::Duration::from_secs_f64(s)
}

fn safety(sim: &Sim, out: &mut Vec<String>) {
    let views = sim.node_views();
    let t = sim.now().as_duration().as_secs_f64();
    let mut found = check::tables_exclude_self(&views);
    if let Some(log) = sim.announced() {
        found.extend(check::records_announced(&views, log));
    }
    out.extend(found.iter().map(|v: &Violation| format!("t={t:.0}s {v}")));
}

/// Runs `seed` within `bounds` and judges it.
pub fn run_seed(seed: u64, bounds: Bounds) -> Result<SeedReport, SwarmError> {
    run_seed_with(seed, bounds, |_| {})
}

/// As [`run_seed`], with `tweak` applied to the drawn scenario first (tests switch a
/// mechanism off to see the checkers catch what it prevents).
pub fn run_seed_with(
    seed: u64,
    bounds: Bounds,
    tweak: impl FnOnce(&mut crate::scenario::Scenario),
) -> Result<SeedReport, SwarmError> {
    let profile = Profile::draw(seed, bounds);
    let (mut sc, cut) = profile.scenario()?;
    tweak(&mut sc);
    let k = sc.dht.k;
    let mut sim = Sim::new(sc, false);
    sim.record_outcomes();
    sim.record_announcements();
    if let Some(cut) = cut {
        sim.set_cut(cut);
    }
    let mut violations = Vec::new();
    // Phase boundaries fall on check times, so each change happens exactly at its time.
    let mut t = 0;
    while (t as f64) < profile::END {
        t += CHECK_EVERY_S;
        if let Err(e) = sim.run_until(at(t as f64)) {
            violations.push(e.to_string());
            break;
        }
        if t as f64 == profile::FAULTS_FROM {
            sim.set_loss(profile.loss);
        }
        if t as f64 == profile::HEAL_AT {
            sim.set_loss(0.0);
        }
        safety(&sim, &mut violations);
    }
    if violations.is_empty() {
        if let Err(e) = sim.run() {
            violations.push(e.to_string());
        }
    }
    let views = sim.node_views();
    let missing = check::records_reachable(&views, |key| sim.true_closest(key, k));
    violations.extend(missing.iter().map(|v| format!("after heal: {v}")));
    let mut hasher = blake3::Hasher::new();
    hasher.update(&sim.events().to_le_bytes());
    for v in &views {
        hasher.update(&v.slot.to_le_bytes());
        hasher.update(&v.key.0);
        for key in v.table.iter().chain(v.objects.iter()) {
            hasher.update(&key.0);
        }
        for (a, b) in &v.records {
            hasher.update(&a.0);
            hasher.update(&b.0);
        }
    }
    let finished = sim.finish();
    let measure_from = at(profile::MEASURE_FROM);
    let (mut lookups, mut exact) = (0u64, 0u64);
    for o in finished.metrics.outcomes.iter().flatten() {
        hasher.update(&o.latency.as_nanos().to_le_bytes());
        hasher.update(&[u8::from(o.exact)]);
        if o.started >= measure_from {
            lookups += 1;
            exact += u64::from(o.exact);
        }
    }
    if lookups > 0 && (exact as f64) < EXACT_MIN * lookups as f64 {
        let unknown: Vec<String> = views
            .iter()
            .filter(|v| !views.iter().any(|w| w.table.contains(&v.key)))
            .map(|v| format!("{} (table {})", v.slot, v.table.len()))
            .collect();
        violations.push(format!(
            "after heal: {exact}/{lookups} lookups exact, below {EXACT_MIN}; in no other table: [{}]",
            unknown.join(", ")
        ));
    }
    let known = (!violations.is_empty()
        && profile.partition.is_some()
        && violations.iter().all(|v| v.contains("lookups exact")))
    .then_some(KNOWN_PARTITION_SPLIT);
    Ok(SeedReport {
        profile,
        violations,
        lookups,
        exact,
        digest: hasher.finalize().to_hex().to_string(),
        known,
    })
}
