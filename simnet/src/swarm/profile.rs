//! A seed's fault profile: drawn from the seed alone, so the seed is the whole replay.
//!
//! Timeline of every run: nodes join by the real protocol over the first 30 s; puts run
//! from 35 s for a minute, lookups and gets all along; faults (loss, crashes with restarts
//! under the same id and data, one partition, duplicated and reordered messages) fall in
//! `[FAULTS_FROM, HEAL_AT)`; at `HEAL_AT` they heal and every crashed node is back; lookups
//! started from `MEASURE_FROM` to `END` are the liveness sample. Skewed clocks and Sybils
//! last the whole run, liars from `FAULTS_FROM` to the end.

use std::collections::BTreeSet;
use std::time::Duration;

use overlay::{Instant, Key};
use rand::Rng;

use crate::engine::faults::{Clock, Cut, Extra};
use crate::scenario::{self, ChurnModel, Scenario, ScenarioError, TraceEvent};
use crate::seed::{self, Stream};

/// Faults start here, s.
pub const FAULTS_FROM: f64 = 60.0;
/// Faults heal here, s (loss to zero; the last crashed node is back by then).
pub const HEAL_AT: f64 = 240.0;
/// Lookups started from here on are the liveness sample, s.
pub const MEASURE_FROM: f64 = 300.0;
/// The run ends here, s.
pub const END: f64 = 360.0;

/// Bounds a profile is drawn within.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Fewest nodes.
    pub nodes_min: u32,
    /// Most nodes.
    pub nodes_max: u32,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            nodes_min: 20,
            nodes_max: 50,
        }
    }
}

/// One crash: the slot goes down at `down_s` and comes back (same id, contacts and
/// objects) at `up_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crash {
    /// The slot.
    pub slot: u32,
    /// Down at, s.
    pub down_s: f64,
    /// Back at, s.
    pub up_s: f64,
}

/// A partition: `groups` random groups, cut from `from_s` to `until_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// Each slot's group.
    pub group: Vec<u8>,
    /// Number of groups.
    pub groups: u8,
    /// Cut at, s.
    pub from_s: f64,
    /// Healed at, s.
    pub until_s: f64,
}

/// Everything a seed's run depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: u32,
    /// Message loss during the fault phase (each try, before QUIC retransmits).
    pub loss: f64,
    /// Crashes and restarts.
    pub crashes: Vec<Crash>,
    /// The partition, if any.
    pub partition: Option<Partition>,
    /// Objects put (each announced by its holders).
    pub objects: u32,
    /// Probability a DHT message is delivered twice during the fault phase (0: off).
    pub dup: f64,
    /// Extra per-message delay, uniform up to this, during the fault phase, ms (0: off).
    pub reorder_ms: f64,
    /// Each node's clock runs at a rate within `1 ± skew` and reads up to
    /// [`OFFSET_MAX_S`] ahead (0: true clocks), for the whole run.
    pub skew: f64,
    /// Slots that lie in their answers from [`FAULTS_FROM`] to the end (among the first
    /// `nodes`).
    pub liars: Vec<u32>,
    /// Sybil nodes added after the first `nodes` slots, their ids sharing the first
    /// [`SYBIL_PREFIX_BITS`] bits with object 0's key.
    pub sybils: u32,
    /// Whether the Sybils lie too.
    pub sybils_lie: bool,
}

/// The most a skewed clock reads ahead of true time, s.
pub const OFFSET_MAX_S: f64 = 10.0;
/// Bits a Sybil's id shares with its target key.
pub const SYBIL_PREFIX_BITS: usize = 16;
/// A duplicate arrives up to this much after the original, ms.
pub const DUP_DELAY_MS: f64 = 500.0;

impl Profile {
    /// The profile of `seed` within `bounds`.
    pub fn draw(seed: u64, bounds: Bounds) -> Profile {
        let mut rng = seed::rng(seed, Stream::Swarm, 0, 0);
        let lo = bounds.nodes_min.max(2);
        let hi = bounds.nodes_max.max(lo);
        let nodes = rng.gen_range(lo..=hi);
        let loss = f64::from(rng.gen_range(0..=30u32)) / 100.0;
        let mut crashes = Vec::new();
        for _ in 0..rng.gen_range(0..=nodes / 5) {
            let slot = rng.gen_range(0..nodes);
            if crashes.iter().any(|c: &Crash| c.slot == slot) {
                continue;
            }
            let down_s = rng.gen_range(FAULTS_FROM..HEAL_AT - 10.0);
            let up_s = (down_s + rng.gen_range(5.0..90.0)).min(HEAL_AT);
            crashes.push(Crash {
                slot,
                down_s: down_s.round(),
                up_s: up_s.round(),
            });
        }
        let partition = rng.gen_bool(0.75).then(|| {
            let groups = rng.gen_range(2..=3u8);
            let group = (0..nodes).map(|_| rng.gen_range(0..groups)).collect();
            let from_s = rng.gen_range(FAULTS_FROM..HEAL_AT - 10.0).round();
            let until_s = (from_s + rng.gen_range(10.0..120.0)).min(HEAL_AT).round();
            Partition {
                group,
                groups,
                from_s,
                until_s,
            }
        });
        let objects = rng.gen_range(5..=30);
        // The newer fault kinds draw from their own stream, so the kinds above stay what
        // they were for every seed.
        let mut rng = seed::rng(seed, Stream::Swarm, 1, 0);
        let dup = if rng.gen_bool(0.5) {
            f64::from(rng.gen_range(1..=10u32)) / 100.0
        } else {
            0.0
        };
        let reorder_ms = if rng.gen_bool(0.5) {
            f64::from(rng.gen_range(10..=300u32))
        } else {
            0.0
        };
        let skew = if rng.gen_bool(0.5) {
            f64::from(rng.gen_range(1..=5u32)) / 100.0
        } else {
            0.0
        };
        let mut liars = Vec::new();
        for _ in 0..rng.gen_range(0..=3u32) {
            let slot = rng.gen_range(0..nodes);
            if !liars.contains(&slot) {
                liars.push(slot);
            }
        }
        liars.sort_unstable();
        let sybils = if rng.gen_bool(0.25) {
            rng.gen_range(3..=8)
        } else {
            0
        };
        let sybils_lie = sybils > 0 && rng.gen_bool(0.5);
        Profile {
            seed,
            nodes,
            loss,
            crashes,
            partition,
            objects,
            dup,
            reorder_ms,
            skew,
            liars,
            sybils,
            sybils_lie,
        }
    }

    /// Every slot, Sybils included.
    pub fn slots(&self) -> u32 {
        self.nodes + self.sybils
    }

    /// The key the Sybils crowd (object 0's key, as the workload draws it).
    pub fn sybil_target(&self) -> Key {
        Key::random(&mut seed::rng(self.seed, Stream::Objects, 0, 0))
    }

    /// Every lying slot: the drawn liars, and the Sybils if they lie.
    pub fn lying_slots(&self) -> BTreeSet<u32> {
        let mut out: BTreeSet<u32> = self.liars.iter().copied().collect();
        if self.sybils_lie {
            out.extend(self.nodes..self.slots());
        }
        out
    }

    /// The faults the engine applies for the whole run (clocks, Sybil ids); the run
    /// switches the message faults ([`Profile::dup`], [`Profile::reorder_ms`]) on for the
    /// fault phase, and the liars ([`Profile::lying_slots`]) on from [`FAULTS_FROM`] to
    /// the end: a liar is honest while the network forms (a node joining through a liar
    /// alone is eclipsed for good, known defect D8, pinned by its own test).
    pub fn extra(&self) -> Extra {
        let mut rng = seed::rng(self.seed, Stream::Swarm, 2, 0);
        let clocks = if self.skew > 0.0 {
            (0..self.slots())
                .map(|_| Clock {
                    rate: 1.0 + rng.gen_range(-self.skew..=self.skew),
                    offset: Duration::from_secs_f64(rng.gen_range(0.0..OFFSET_MAX_S)),
                })
                .collect()
        } else {
            Vec::new()
        };
        let target = self.sybil_target();
        let keys = (self.nodes..self.slots())
            .map(|slot| {
                let mut k = Key::random(&mut rng);
                k.0[..SYBIL_PREFIX_BITS / 8].copy_from_slice(&target.0[..SYBIL_PREFIX_BITS / 8]);
                (slot, k)
            })
            .collect();
        Extra {
            dup: 0.0,
            dup_delay_ms: DUP_DELAY_MS,
            reorder_ms: 0.0,
            clocks,
            liars: BTreeSet::new(),
            keys,
            network_changes: true,
        }
    }

    /// One line: nodes, loss, crashes, partition, objects.
    pub fn describe(&self) -> String {
        let cut = match &self.partition {
            Some(p) => format!("cut{}@{:.0}-{:.0}s", p.groups, p.from_s, p.until_s),
            None => "nocut".into(),
        };
        let mut s = format!(
            "n={} loss={:.2} crashes={} {} objects={}",
            self.nodes,
            self.loss,
            self.crashes.len(),
            cut,
            self.objects
        );
        if self.dup > 0.0 {
            s.push_str(&format!(" dup={:.2}", self.dup));
        }
        if self.reorder_ms > 0.0 {
            s.push_str(&format!(" reorder={:.0}ms", self.reorder_ms));
        }
        if self.skew > 0.0 {
            s.push_str(&format!(" skew={:.0}%", self.skew * 100.0));
        }
        if !self.liars.is_empty() {
            s.push_str(&format!(" liars={}", self.liars.len()));
        }
        if self.sybils > 0 {
            let how = if self.sybils_lie { "lying" } else { "honest" };
            s.push_str(&format!(" sybils={}({how})", self.sybils));
        }
        s
    }

    /// The scenario this profile runs (loss off: the run switches it on for the fault
    /// phase), and its partition as the engine's [`Cut`].
    pub fn scenario(&self) -> Result<(Scenario, Option<Cut>), ScenarioError> {
        let text = format!(
            r#"
name = "swarm"
nodes = {nodes}
seed = {seed}
duration_s = {END}
drain_s = 30

[bootstrap]
mode = "join"
join_window_s = 30

[latency]
model = "coordinates"
base_ms = 5
side_ms = 100

[dht]
bootstrap_check_s = 30

[workload]
lookups_per_s = 2
start_s = 35
objects = {objects}
object_bytes = 4096
rf = 3
puts_window_s = 60
gets_per_s = 1
"#,
            nodes = self.slots(),
            seed = self.seed,
            objects = self.objects,
        );
        let mut sc = scenario::parse_str(&text, std::path::Path::new("."), "swarm")?;
        let mut events = Vec::new();
        for c in &self.crashes {
            for (at, up) in [(c.down_s, false), (c.up_s, true)] {
                events.push(TraceEvent {
                    at: Duration::from_secs_f64(at),
                    slot: c.slot,
                    up,
                });
            }
        }
        events.sort_by_key(|e| e.at);
        sc.churn.model = ChurnModel::Trace { events };
        sc.churn.rejoin_same_id = true;
        sc.faults = self.extra();
        // Sybils sit in group 0 of a partition.
        let cut = self.partition.as_ref().map(|p| Cut {
            group: (0..self.slots())
                .map(|i| p.group.get(i as usize).copied().unwrap_or(0))
                .collect(),
            from: Instant::ZERO + Duration::from_secs_f64(p.from_s),
            until: Instant::ZERO + Duration::from_secs_f64(p.until_s),
        });
        Ok((sc, cut))
    }
}
