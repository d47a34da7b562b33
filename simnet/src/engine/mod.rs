//! The discrete-event engine: one queue, virtual time, and the real `overlay::Dht` of every
//! live node.
//!
//! [`Sim`] owns everything a run touches: the event queue, one `Slot`
//! per node slot (its state machine, if up), the global [`LiveSet`] view, the link model,
//! the churn schedule, the workload and the metrics. It pops the earliest event, hands it
//! to the one node it is for, then drains that node's outputs (str0m's rule: after every
//! input, drain until quiet) into new events. Time only moves forward; nothing reads a
//! clock, and nothing iterates a hash map, so a seed replays the same run bit for bit.
//!
//! The protocol is not modelled here: every request, answer, timeout and table update is
//! overlay's own code. The engine only decides *when* things arrive (latency), *whether*
//! (loss, dead nodes), and which nodes exist (churn, failures), and it watches from outside:
//! `check_invariants` after every step when checking is on, and the global view that
//! scores each lookup against the true closest live nodes.
//!
//! Layout: `queue` (events and message bodies), `nodes` (slots, start and stop,
//! draining, timers, delivery), `setup` (time zero: churn state, ideal tables or joins,
//! the schedule), `workload` (lookups, puts, gets, and scoring them), `faults` (the swarm's
//! partition, loss and message-fault changes, skewed clocks, and the views its checkers
//! read), `liars` (what a lying node answers).

pub mod faults;
pub(crate) mod liars;
pub(crate) mod nodes;
pub(crate) mod queue;
pub(crate) mod reads;
pub(crate) mod setup;
pub(crate) mod soak;
pub(crate) mod workload;
pub(crate) mod writes;

use std::collections::{BTreeMap, BTreeSet};

use overlay::{Instant, Key};

use crate::churn::Schedule;
use crate::latency::Network;
use crate::links::Links;
use crate::metrics::Metrics;
use crate::oracle::LiveSet;
use crate::scenario::Scenario;
use crate::seed::SimRng;
use nodes::Slot;
use queue::{Ev, Queue};
use workload::{Pending, Work};

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A node's state machine (or the engine's own bookkeeping) broke an invariant: a bug.
    #[error("invariant broken at t = {at_s} s, slot {slot}: {message}")]
    Invariant {
        /// Virtual time, s.
        at_s: f64,
        /// The node (u32::MAX for the engine itself).
        slot: u32,
        /// What broke.
        message: String,
    },
}

/// A simulation in progress.
#[derive(Debug)]
pub struct Sim {
    sc: Scenario,
    now: Instant,
    end: Instant,
    queue: Queue,
    slots: Vec<Slot>,
    live: LiveSet,
    net: Network,
    links: Links,
    churn: Option<Schedule>,
    join_rng: SimRng,
    work: Work,
    pending: BTreeMap<(u32, u32, u64), Pending>,
    metrics: Metrics,
    events: u64,
    check: bool,
    violation: Option<SimError>,
    /// The swarm's partition, if any.
    cut: Option<faults::Cut>,
    /// Every (object key, provider id) announced, once the swarm asks for the log.
    announced: Option<BTreeSet<(Key, Key)>>,
    /// Objects whose put stored a first copy (acknowledged writes): none may ever be lost.
    acked: BTreeSet<Key>,
    /// Every node's uplink and downlink (`[bandwidth]`); `None` without the section.
    pipes: Option<crate::bandwidth::Pipes>,
    /// `sc.dht`, shared by every node's `Dht`.
    dht_config: std::sync::Arc<overlay::Config>,
}

/// What a finished run hands to the outputs.
#[derive(Debug)]
pub struct Finished {
    /// The scenario that ran.
    pub scenario: Scenario,
    /// Everything measured.
    pub metrics: Metrics,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the last event (the end of the run, or of the drain).
    pub sim_seconds: f64,
}

impl Sim {
    /// Builds the network at time zero: churn state, tables or joins, and the schedule.
    /// With `check`, every node's invariants are checked after every step (slow; for tests
    /// and debugging).
    pub fn new(scenario: Scenario, check: bool) -> Sim {
        setup::build(scenario, check)
    }

    /// Keeps every finished lookup's outcome in the metrics (for tests that check each
    /// lookup, not just the aggregates).
    pub fn record_outcomes(&mut self) {
        self.metrics.outcomes.get_or_insert_with(Vec::new);
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// When the workload and sampling stop.
    pub fn end(&self) -> Instant {
        self.end
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Nodes live now.
    pub fn alive(&self) -> usize {
        self.live.len()
    }

    /// Messages in flight.
    pub fn messages_in_flight(&self) -> usize {
        self.queue.messages_in_flight()
    }

    /// Events waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Processes every event due before `until` (capped at the end of the run).
    pub fn run_until(&mut self, until: Instant) -> Result<(), SimError> {
        // A violation recorded between runs (a caller's bad `set_*`) is reported even if
        // no event is left to step.
        if let Some(e) = self.violation.take() {
            return Err(e);
        }
        let until = until.min(self.end);
        while self.queue.peek_time().is_some_and(|t| t < until) {
            self.step();
            if let Some(e) = self.violation.take() {
                return Err(e);
            }
        }
        self.metrics.advance_alive(until);
        Ok(())
    }

    /// Runs to the end, closes the last interval, then lets running lookups finish for at
    /// most the scenario's drain time.
    pub fn run(&mut self) -> Result<(), SimError> {
        self.run_until(self.end)?;
        self.close_interval(self.metrics.rows.len() - 1);
        let (replicas, available) = self.replication_state();
        self.metrics.replicas_end = replicas;
        self.metrics.objects_available_end = available;
        let stop = self.end + self.sc.drain;
        while !self.pending.is_empty() && self.queue.peek_time().is_some_and(|t| t < stop) {
            self.step();
            if let Some(e) = self.violation.take() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends the run: whatever is still pending counts as unfinished.
    pub fn finish(mut self) -> Finished {
        let pending = std::mem::take(&mut self.pending);
        for (_, p) in pending {
            self.abandon(p);
        }
        self.abandon_again();
        let held = self.held_anywhere();
        self.metrics.acked = self.acked.len() as u64;
        self.metrics.acked_lost = self.acked.iter().filter(|k| !held.contains(k)).count() as u64;
        let end = self.now.max(self.end);
        self.metrics.durability.close(end);
        self.metrics.seal();
        Finished {
            sim_seconds: self.now.max(self.end).as_duration().as_secs_f64(),
            scenario: self.sc,
            metrics: self.metrics,
            events: self.events,
        }
    }

    fn step(&mut self) {
        let Some((at, ev)) = self.queue.pop() else {
            return;
        };
        if at < self.now {
            self.fail(u32::MAX, format!("event {ev:?} at {at:?} is in the past"));
            return;
        }
        self.now = at;
        self.events += 1;
        match ev {
            Ev::Msg(i) => {
                if let Some(msg) = self.queue.take_msg(i) {
                    self.deliver(msg);
                }
            }
            Ev::Timer(slot) => self.on_timer(slot, at),
            Ev::Churn(slot) => self.on_churn(slot),
            Ev::Trace(n) => self.on_trace(n),
            Ev::Join(slot) => self.on_join(slot),
            Ev::Lookup => self.on_lookup(),
            Ev::Put => self.on_put(),
            Ev::Get => self.on_get(),
            Ev::GetAgain(n) => self.on_get_again(n),
            Ev::WriteTimer(n) => self.on_write_timer(n),
            Ev::Sample => {
                let row = self.metrics.row_of(at).saturating_sub(1);
                self.close_interval(row);
            }
            Ev::Failure => self.on_failure(),
        }
    }

    fn close_interval(&mut self, row: usize) {
        self.metrics.advance_alive(self.now);
        let (replicas, _) = self.replication_state();
        self.metrics.close_row(row, replicas);
        self.soak_row(row);
        if self.check {
            self.check_engine();
        }
    }

    /// Records the first broken invariant; the run stops after the current step.
    fn fail(&mut self, slot: u32, message: String) {
        if self.violation.is_none() {
            self.violation = Some(SimError::Invariant {
                at_s: self.now.as_duration().as_secs_f64(),
                slot,
                message,
            });
        }
    }

    /// The engine's own bookkeeping: the live set, the slots and the pending table agree.
    fn check_engine(&mut self) {
        let up = self.slots.iter().filter(|s| s.dht.is_some()).count();
        if up != self.live.len() {
            return self.fail(
                u32::MAX,
                format!("{up} slots up, live set holds {}", self.live.len()),
            );
        }
        if self.metrics.alive() != up as u64 {
            return self.fail(u32::MAX, "alive count drifted from the slots".into());
        }
        if let Err(e) = self.links.check() {
            return self.fail(u32::MAX, e);
        }
        let stale = self.pending.keys().find(|(slot, inc, _)| {
            self.slots
                .get(*slot as usize)
                .is_none_or(|s| s.dht.is_none() || s.inc != *inc)
        });
        if let Some(k) = stale {
            let k = *k;
            self.fail(
                k.0,
                format!("pending operation {k:?} belongs to a dead node"),
            );
        }
    }
}
