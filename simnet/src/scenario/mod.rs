//! A scenario: everything a run depends on besides the code, parsed and checked up front.
//!
//! A run is a pure function of its [`Scenario`] (and the commit): the TOML file names the
//! network, its latency, loss, churn, failures and workload, and [`parse`] turns it into the
//! typed, validated values below, so the engine never meets a negative delay or a
//! probability above one. Every knob and its default is documented in `SCENARIOS.md`; the
//! names the issue fixed (`nodes`, `seed`, `duration_s`, `[dht] k, alpha`, ...) are kept as
//! they are. [`set`] applies `--set key=value` overrides and expands sweep grids.

mod models;
pub mod parse;
pub mod set;

use std::path::PathBuf;
use std::time::Duration;

pub use parse::{load, parse_str};
pub use set::{Override, expand_grid, parse_set_arg};

/// Why a scenario could not be loaded; every variant names the file, key or line at fault.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The scenario or trace file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type.
    #[error("{origin}: {message}")]
    Toml {
        /// The file (and whether overrides were applied).
        origin: String,
        /// The parser's message, with line and column where it has them.
        message: String,
    },
    /// A value has the right type but cannot work.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `latency.max_ms`.
        key: String,
        /// What is wrong, and what would be accepted.
        reason: String,
    },
    /// A `--set` argument is malformed or names a key that cannot be set.
    #[error("--set {arg}: {reason}")]
    Set {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A churn trace line is malformed.
    #[error("{path}:{line}: {reason}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
}

/// A complete, validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// A label for outputs (default: the file name without extension).
    pub name: String,
    /// Node slots; each slot holds at most one live node at a time.
    pub nodes: u32,
    /// The master seed every random choice of the run derives from.
    pub seed: u64,
    /// Simulated time during which the workload, churn and sampling run.
    pub duration: Duration,
    /// After `duration`, how long lookups still running may take to finish.
    pub drain: Duration,
    /// The overlay configuration every node runs (overlay defaults plus `[dht]` overrides).
    pub dht: overlay::Config,
    /// How the network forms.
    pub bootstrap: Bootstrap,
    /// Message delays and loss.
    pub latency: Latency,
    /// Nodes coming and going.
    pub churn: Churn,
    /// A mass failure.
    pub failure: Failure,
    /// Lookups and objects.
    pub workload: Workload,
    /// Sampling and plots.
    pub output: Output,
    /// The long-run checks of a soak (`[soak]`): per-node state sampled and bounded, safety
    /// checked at every sample; `None` without the section.
    pub soak: Option<Soak>,
    /// Per-node uplink and downlink capacities (`[bandwidth]`): object bytes queue for
    /// them and take time in proportion to their size; `None` (the default) moves them in
    /// their one-way delay alone.
    pub bandwidth: Option<crate::bandwidth::Bandwidth>,
    /// Faults only the swarm sets (no scenario-file key; off by default).
    pub faults: crate::engine::faults::Extra,
}

/// How the network forms at time zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bootstrap {
    /// Every bucket filled with up to k nodes drawn uniformly from its part of the id space.
    Ideal,
    /// Nodes join through the real protocol, one at a time over `window`.
    Join {
        /// Initially-up nodes join at evenly spread times in `[0, window]`.
        window: Duration,
    },
}

/// One-way message delay model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyModel {
    /// Every message takes `ms`.
    Constant {
        /// One-way delay, ms.
        ms: f64,
    },
    /// Uniform in `[min_ms, max_ms]`, drawn per message.
    Uniform {
        /// Smallest delay, ms.
        min_ms: f64,
        /// Largest delay, ms.
        max_ms: f64,
    },
    /// Log-normal with the given median and shape, drawn per message.
    LogNormal {
        /// Median delay, ms.
        median_ms: f64,
        /// σ of the underlying normal.
        sigma: f64,
    },
    /// Each slot sits in one of `regions` regions (slot mod regions); the delay between two
    /// regions is fixed: `intra_ms`/`inter_ms`, or half the measured round trip of
    /// [`Latency::rtt_ms`] when the scenario gives one.
    Regions {
        /// Number of regions.
        regions: u32,
        /// Delay between nodes of one region, ms (without a measured matrix).
        intra_ms: f64,
        /// Delay between nodes of different regions, ms (without a measured matrix).
        inter_ms: f64,
    },
    /// Each node a random point in a `side_ms` square; delay = base + Euclidean distance.
    Coordinates {
        /// Fixed part of every delay, ms.
        base_ms: f64,
        /// Side of the square, in ms of delay.
        side_ms: f64,
    },
}

/// Delays, loss and connections: the link model.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// The delay model: each pair of slots gets a stable base delay from it.
    pub model: LatencyModel,
    /// Probability that one transmission of a message (or of a handshake packet) is lost;
    /// QUIC retransmits it, so a message is late rather than gone.
    pub loss: f64,
    /// Per-message jitter: a message takes its pair's base delay times (1 + J), J exponential
    /// with this mean.
    pub jitter: f64,
    /// Whether a first contact pays for its connection: a handshake round trip before the
    /// request (HELLO rides with the request, as the node sends it).
    pub handshake: bool,
    /// Whether a node resumes with 0-RTT (the node's `transport.zero_rtt`, off by default):
    /// a DHT read (PING, FIND_NODE, GET_PROVIDERS) to a peer whose session ticket it holds
    /// leaves with the handshake instead of after it (`links.rs`, "Session tickets").
    pub zero_rtt: bool,
    /// Connections a node keeps open (the node's cap); past it the least recently used closes.
    pub connections_max: u32,
    /// With `regions`: the region names, for outputs.
    pub region_names: Vec<String>,
    /// With `regions`: a measured round-trip matrix in ms (row-major, regions × regions,
    /// symmetric; the diagonal is the round trip within a region).
    pub rtt_ms: Vec<f64>,
}

/// Session-length distributions for churn.
#[derive(Debug, Clone, PartialEq)]
pub enum ChurnModel {
    /// Nodes never leave.
    None,
    /// Exponential up and down periods.
    Exponential {
        /// Mean up period, s.
        mean_up_s: f64,
        /// Mean down period, s.
        mean_down_s: f64,
    },
    /// Weibull up and down periods with one shape (OverSim's lifetime churn).
    Weibull {
        /// Weibull shape k (< 1: heavy-tailed sessions).
        shape: f64,
        /// Mean up period, s.
        mean_up_s: f64,
        /// Mean down period, s.
        mean_down_s: f64,
    },
    /// Pareto up and down periods (x_m = mean·(α−1)/α), OverSim's lifetime churn.
    Pareto {
        /// Pareto shape α (> 1 for a finite mean).
        shape: f64,
        /// Mean up period, s.
        mean_up_s: f64,
        /// Mean down period, s.
        mean_down_s: f64,
    },
    /// Transitions read from a CSV file.
    Trace {
        /// The transitions, sorted by time (stable).
        events: Vec<TraceEvent>,
    },
}

/// One line of a churn trace: at `at`, slot `slot` goes up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEvent {
    /// When.
    pub at: Duration,
    /// Which slot.
    pub slot: u32,
    /// Up (`true`) or down.
    pub up: bool,
}

/// Churn settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Churn {
    /// The model.
    pub model: ChurnModel,
    /// A returning node keeps its id, routing contacts and objects (else: fresh id, empty).
    pub rejoin_same_id: bool,
}

/// A mass failure: `fraction` of the live nodes vanish at `at`, without warning, for good.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failure {
    /// Fraction of live nodes removed, in [0, 1].
    pub fraction: f64,
    /// When.
    pub at: Duration,
}

/// A number of operations: a total spread evenly, or a Poisson rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// This many, evenly spaced over their window.
    Total(u64),
    /// A Poisson process with this many per second.
    PerSecond(f64),
}

/// What a lookup looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A uniformly random key.
    RandomKey,
    /// The key of a random live node other than the one asking.
    RandomNode,
}

/// The workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// FIND_NODE lookups from random ready nodes.
    pub lookups: Rate,
    /// Their targets.
    pub target: Target,
    /// No lookups, puts or gets before this.
    pub start: Duration,
    /// Objects put (0: no object workload).
    pub objects: u32,
    /// Size of each object.
    pub object_bytes: u64,
    /// Puts are spread evenly over `[start, start + puts_window)`.
    pub puts_window: Duration,
    /// Gets of random placed objects, from `start + puts_window` on.
    pub gets: Rate,
    /// Holders a get waits for before it fetches from the fastest, and providers its walk
    /// asks for (`None`: 1, as the node's `Objects::find_holders` does: it fetches from the
    /// first verified holder; `rf` models a node that waits for every copy).
    pub get_holders_wanted: Option<usize>,
    /// Durable copies a put waits for before it answers (`None`: a put counts as placed
    /// when its copies are sent, waiting for nothing): with `Some(w)` a put runs the node's
    /// own decisions (`overlay::Write`; `engine::writes`).
    pub put_w: Option<usize>,
    /// Replication parameters of every node's planner (rf, repair pacing, re-planning).
    pub replication: overlay::ReplicationConfig,
}

/// Output settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Output {
    /// Width of one `timeseries.csv` row.
    pub interval: Duration,
    /// Whether to draw the SVG plots.
    pub plots: bool,
}

/// A soak's checks (issue 14 item 5): at every `timeseries.csv` row the engine samples each
/// live node's state and runs the safety checkers; the run passes when no check failed and
/// every bounded per-node mean at `to` is within `tolerance` of its value at `from`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Soak {
    /// The baseline checkpoint (a row boundary), once the network has settled.
    pub from: Duration,
    /// The final checkpoint (a row boundary, at most the run's duration).
    pub to: Duration,
    /// Largest relative change of a bounded mean between the checkpoints (0.05: 5 %).
    pub tolerance: f64,
    /// Test knob: provider records never expire (overlay's TTL set past any run), a leak the
    /// state bound must catch.
    pub leak_records: bool,
}

impl Scenario {
    /// Every parameter of the run, one `key = value` per line, for the stderr preamble.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| {
            s.push_str(k);
            s.push_str(" = ");
            s.push_str(&v);
            s.push('\n');
        };
        line("name", self.name.clone());
        line("seed", self.seed.to_string());
        line("nodes", self.nodes.to_string());
        line("duration_s", fmt_secs(self.duration));
        line("drain_s", fmt_secs(self.drain));
        line("dht", format!("{:?}", self.dht));
        line("bootstrap", format!("{:?}", self.bootstrap));
        line("latency", format!("{:?}", self.latency));
        let churn = match &self.churn.model {
            ChurnModel::Trace { events } => format!("trace with {} transitions", events.len()),
            m => format!("{m:?}"),
        };
        line("churn", churn);
        line(
            "churn.rejoin_same_id",
            self.churn.rejoin_same_id.to_string(),
        );
        if let Some(p) = self.churn_up_probability() {
            line("churn.expected_up_fraction", format!("{p:.6}"));
            line(
                "churn.expected_alive",
                format!("{:.3}", p * f64::from(self.nodes)),
            );
        }
        if let Some((up, down)) = crate::churn::lifetimes(&self.churn.model) {
            line("churn.up_distribution", up.describe());
            line("churn.down_distribution", down.describe());
        }
        line("failure", format!("{:?}", self.failure));
        line("workload", format!("{:?}", self.workload));
        line("output", format!("{:?}", self.output));
        if let Some(soak) = &self.soak {
            line("soak", format!("{soak:?}"));
        }
        if let Some(bw) = &self.bandwidth {
            line("bandwidth", format!("{bw:?}"));
        }
        for (name, stream) in crate::seed::STREAMS {
            line(
                &format!("stream.{name}"),
                format!("{:#018x}", crate::seed::derive(self.seed, stream, 0, 0)),
            );
        }
        s
    }

    /// E\[up\] / (E\[up\] + E\[down\]) for the renewal churn models: the fraction of slots up in
    /// equilibrium, which the run starts in and should stay at.
    pub fn churn_up_probability(&self) -> Option<f64> {
        match self.churn.model {
            ChurnModel::Exponential {
                mean_up_s,
                mean_down_s,
            }
            | ChurnModel::Weibull {
                mean_up_s,
                mean_down_s,
                ..
            }
            | ChurnModel::Pareto {
                mean_up_s,
                mean_down_s,
                ..
            } => Some(mean_up_s / (mean_up_s + mean_down_s)),
            ChurnModel::None | ChurnModel::Trace { .. } => None,
        }
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}
