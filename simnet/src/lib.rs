//! simnet: a deterministic discrete-event simulator that drives macronode's real
//! `overlay::Dht` state machines on virtual time.
//!
//! One event queue, virtual time, nodes as the very `overlay` state machines the node runs:
//! simnet decides only when messages arrive (latency), whether (loss, dead nodes) and which
//! nodes exist (churn, failures), and scores every lookup against a global view of the live
//! nodes. Nothing of Kademlia is re-modelled here. The same scenario and seed give
//! byte-identical outputs (TigerBeetle's VOPR): no wall clock, no OS entropy, no hash-order
//! iteration anywhere in a run (`clippy.toml` holds that line; `measure` is the one
//! exception, and only reports).
//!
//! Layout:
//! - [`scenario`]: the TOML scenario, its validation, `--set` overrides and sweep grids.
//! - [`seed`]: every random stream, derived from the master seed.
//! - [`peer`]: [`SimPeer`], the 4-byte handle the overlay stores for each contact (its key
//!   and slot live in a per-thread arena).
//! - [`latency`]: the link model: per-pair delays, jitter, loss with retransmission,
//!   handshakes.
//! - [`bandwidth`]: per-node uplink and downlink calendars (`[bandwidth]`): object bytes
//!   queue for them and take time in proportion to their size.
//! - [`links`]: each node's connections (capped, least recently used closed first) and
//!   message counters.
//! - [`durability`]: live copies per object, time below RF, failure-to-restore times.
//! - [`churn`]: renewal churn with equilibrium starts, and lifetime distributions.
//! - [`oracle`]: the sorted global view (true closest nodes, ideal-table ranges).
//! - [`engine`]: [`Sim`], the event loop, nodes, setup and workload.
//! - [`metrics`], [`output`], [`plots`]: what a run measured, and the files it writes.
//! - [`run`], [`sweep`]: a whole run with progress, and parameter grids.
//! - [`soak`]: a soak's verdict: per-node state at two checkpoints, safety over the run.
//! - [`swarm`]: many seeds of random faults over small networks, judged by checkers.
//! - [`measure`]: wall time and peak memory, the only run-dependent numbers.

pub mod bandwidth;
pub mod churn;
pub mod durability;
pub mod engine;
pub mod latency;
pub mod links;
pub mod measure;
pub mod metrics;
pub mod oracle;
pub mod output;
pub mod peer;
pub mod plots;
pub mod run;
pub mod scenario;
pub mod seed;
pub mod soak;
pub mod swarm;
pub mod sweep;

pub use engine::faults::{Cut, NodeView};
pub use engine::{Finished, Sim, SimError};
pub use output::{OutputError, Summary};
pub use peer::SimPeer;
pub use run::{RunOptions, run_scenario};
pub use scenario::{Scenario, ScenarioError};

/// Anything that can stop a run, for the CLI to report (each kind has its own exit code).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario could not be loaded.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A checker found a broken invariant.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// An output could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A swarm seed could not be set up.
    #[error(transparent)]
    Swarm(#[from] swarm::SwarmError),
    /// A soak broke a safety check or its state bound (its summary line says which).
    #[error("soak failed: {violations} safety violations, worst state change {worst_pct:+.2} %")]
    SoakFailed {
        /// Safety violations found.
        violations: u64,
        /// The largest relative change of a bounded per-node mean, %.
        worst_pct: f64,
    },
    /// Swarm seeds broke a checked property (each printed its replay command).
    #[error("{failed} swarm seeds failed")]
    SwarmFailed {
        /// How many.
        failed: u64,
    },
}
