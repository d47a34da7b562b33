//! A get's search for a holder, through the node's own decisions: `overlay::Locate` says
//! when to walk, whom to probe, when a pass is over, the order to fetch in and whether a
//! second pass is due, as it does for the node's GET (`Objects::locate`).
//!
//! Every candidate is probed at once for the object's final group, each probe ending with
//! an answer (holds it, lacks it, or, from one of the swarm's liars that lacks it, a tail
//! that does not verify) one round trip later or with silence at the probe timeout (`overlay::ObjectTimings`);
//! answers reach the search in the order they arrive, and the first holder ends it (the node does not wait for more; `workload.get_holders_wanted` > 1, a
//! research knob, waits for that many holders and asks the walk for as many providers).
//! A liar's tail that fails verification (an answer the search took) makes the getter's
//! DHT keep the liar out of its table and walks for a while (`Dht::peer_lied`, as the node).
//! The fetch goes to the holders in the search's order: a holder that cannot be reached
//! costs a dial timeout ([`FETCH_FAILOVER`]) and the next one is tried, one that turns out
//! to lack the object costs its round trip, and the get fails once
//! `failover_idle` passed without a holder serving it (`overlay::Failover`, as the node). A pass whose records all failed to prove the
//! object walks again, to the key's closest nodes whatever records it meets
//! (`overlay::SECOND_PASS_WANTED`), from when its last probe ended, within the same
//! search timeout; a pass that ended at the deadline fails.

use std::time::Duration;

use overlay::{Failover, Instant, Locate, LocateEnd, LocateStep, ProbeAnswer, WalkEnd};

use super::Sim;
use super::queue::Ev;
use super::workload::Pending;
use crate::metrics::{GetOutcome, GetParts};
use crate::peer::SimPeer;

/// A get's TAIL probe to one candidate holder gives up after this, and its whole search
/// (walks and probes) after this: the node's numbers (`overlay::ObjectTimings`).
pub(super) fn timings() -> overlay::ObjectTimings {
    overlay::ObjectTimings::default()
}
/// A fetch from a holder that cannot be reached gives up after this (the node's
/// `handshake_timeout`: the holder went away since its probe answered, so the dial fails).
pub const FETCH_FAILOVER: Duration = Duration::from_secs(5);

/// A get waiting to walk again.
#[derive(Debug, Clone)]
pub(crate) struct Again {
    slot: u32,
    inc: u32,
    object: u32,
    started: Instant,
    locate: Box<Locate<SimPeer>>,
    wanted: usize,
}

impl Sim {
    /// Starts the provider walk of a get at `slot` for `wanted` providers, the step its
    /// `locate` asked for; a walk that cannot start fails the get.
    pub(super) fn walk_for_get(
        &mut self,
        slot: u32,
        object: u32,
        started: Instant,
        locate: Box<Locate<SimPeer>>,
        wanted: usize,
    ) {
        let key = self.work.objects[object as usize];
        let local = self.local_now(slot);
        let s = &mut self.slots[slot as usize];
        let id = s
            .dht
            .as_mut()
            .and_then(|dht| dht.get_providers(local, key, wanted).ok());
        match id {
            Some(id) => {
                let inc = s.inc;
                self.pending.insert(
                    (slot, inc, id.0),
                    Pending::Get {
                        started,
                        object,
                        locate,
                    },
                );
                self.after_input(slot, false);
            }
            None => self.metrics.get_done(started, GetOutcome::Failed),
        }
    }

    /// The provider walk of a get at `slot` ended as `walk`: its search probes the
    /// candidates, then fetches from the holders, walks again, or gives up, as its
    /// `locate` decides.
    pub(super) fn search_holders(
        &mut self,
        slot: u32,
        object: u32,
        started: Instant,
        mut locate: Box<Locate<SimPeer>>,
        walk: WalkEnd<SimPeer>,
    ) {
        let key = self.work.objects[object as usize];
        let now = self.now;
        if now >= locate.deadline() {
            locate.handle_deadline();
        } else {
            // A node with a walk behind it had peers.
            locate.handle_walk(walk, true);
        }
        // Time from the walk's end to the step polled for: the probes' answers.
        let mut done = Duration::ZERO;
        loop {
            match locate.poll(now + done) {
                LocateStep::Probe(candidates) => {
                    done = self.probe_all(slot, &key, &mut locate, candidates);
                }
                LocateStep::Walk { wanted } => {
                    let n = self.work.next_again;
                    self.work.next_again += 1;
                    let inc = self.slots[slot as usize].inc;
                    self.work.again.insert(
                        n,
                        Again {
                            slot,
                            inc,
                            object,
                            started,
                            locate,
                            wanted,
                        },
                    );
                    self.metrics.gets_searched_again += 1;
                    self.queue.push(now + done, Ev::GetAgain(n));
                    return;
                }
                LocateStep::Done(LocateEnd::Found {
                    holders,
                    second_pass,
                }) => {
                    let outcome = self.fetch(slot, &key, &holders, started, now, done);
                    if second_pass && matches!(outcome, GetOutcome::Served { .. }) {
                        self.metrics.gets_served_again += 1;
                    }
                    self.metrics.get_done(started, outcome);
                    return;
                }
                LocateStep::Done(_) | LocateStep::Wait => {
                    self.metrics.get_done(started, GetOutcome::Failed);
                    return;
                }
            }
        }
    }

    /// Probes every candidate at once from `slot` and reports their answers to `locate` in
    /// the order they arrive, until its pass is over or the deadline: the time from now to
    /// the last answer it took (the deadline if that came first).
    fn probe_all(
        &mut self,
        slot: u32,
        key: &overlay::Key,
        locate: &mut Locate<SimPeer>,
        candidates: Vec<SimPeer>,
    ) -> Duration {
        let now = self.now;
        let mut ends: Vec<(Duration, SimPeer, ProbeAnswer)> = Vec::new();
        for c in candidates {
            let answer = self
                .exchange(slot, c.slot(), now)
                .filter(|rt| *rt < timings().probe_timeout);
            ends.push(match answer {
                // Someone else at that address (a made-up record, a restarted node): the
                // handshake fails on the id, as the node's dial does.
                Some(rt) if !self.is_current(&c) => (rt, c, ProbeAnswer::Silent),
                Some(rt) if self.holds(c.slot(), key) => (rt, c, ProbeAnswer::Holds),
                // A liar claims what it lacks: its tail does not verify against the id.
                Some(rt) if self.lies(c.slot()) => (rt, c, ProbeAnswer::Invalid),
                Some(rt) => (rt, c, ProbeAnswer::Lacks),
                None => (timings().probe_timeout, c, ProbeAnswer::Silent),
            });
        }
        self.metrics.probes_invalid += ends
            .iter()
            .filter(|(_, _, a)| *a == ProbeAnswer::Invalid)
            .count() as u64;
        ends.sort_by_key(|(t, c, _)| (*t, c.slot()));
        // The node stops at the first holder; `get_holders_wanted` > 1 (a research knob)
        // waits for that many before fetching from the first.
        let wait_for = self.holders_wanted();
        let deadline = locate.deadline();
        let mut done = Duration::ZERO;
        let mut holders = 0;
        let mut liars = Vec::new();
        for (t, c, answer) in &ends {
            if now + *t > deadline {
                locate.handle_deadline();
                done = deadline - now;
                break;
            }
            done = *t;
            holders += usize::from(*answer == ProbeAnswer::Holds);
            if *answer == ProbeAnswer::Invalid {
                liars.push(*c);
            }
            if locate.handle_answer(&c.key(), *answer) && (holders == 0 || holders >= wait_for) {
                break;
            }
        }
        // A proof that failed under its sender's key: the getter's DHT keeps the liar out
        // (`Dht::peer_lied`, as the node's `note_failure` reports it).
        if !liars.is_empty() {
            let local = self.local_now(slot);
            if let Some(dht) = self.slots[slot as usize].dht.as_mut() {
                for c in liars {
                    dht.peer_lied(local, c, "object_proof");
                }
            }
            self.after_input(slot, false);
        }
        done
    }

    /// Fetches from `holders` in order, from when the search ended (`walked` after the
    /// get's walk finished).
    fn fetch(
        &mut self,
        slot: u32,
        key: &overlay::Key,
        holders: &[SimPeer],
        started: Instant,
        walked: Instant,
        probed: Duration,
    ) -> GetOutcome {
        let from = walked + probed;
        let mut at = from;
        let mut failover = Failover::new(holders.to_vec(), at, timings().failover_idle);
        while let Some(h) = failover.next_holder(at) {
            if self.lies(h.slot()) && !self.holds(h.slot(), key) {
                self.metrics.fetches_at_liars += 1;
            }
            match self.exchange_legs(slot, h.slot(), at) {
                Some((go, back)) if self.is_current(&h) && self.holds(h.slot(), key) => {
                    let intra = match (self.net.region(slot), self.net.region(h.slot())) {
                        (Some(a), Some(b)) => a == b,
                        _ => false,
                    };
                    // With `[bandwidth]` the object's bytes leave the holder once the request
                    // reached it, when its uplink and the getter's downlink are free.
                    let size = self.object_size(h.slot(), key);
                    let end = match self.through_pipes(h.slot(), slot, at + go, size, false) {
                        Some(sent) => {
                            if let Some(w) = self.metrics.transfer_waits.last() {
                                self.metrics.get_waits.push(*w);
                            }
                            sent + back
                        }
                        None => at + go + back,
                    };
                    return GetOutcome::Served {
                        latency: end - started,
                        intra,
                        parts: GetParts {
                            search: walked - started,
                            probe: probed,
                            fetch: end - from,
                        },
                    };
                }
                Some((go, back)) => at = at + go + back,
                None => at = at + FETCH_FAILOVER,
            }
            failover.report(false, at);
        }
        GetOutcome::Failed
    }

    /// Get number `n` walks again, the step its search asked for (to the key's closest
    /// nodes, `overlay::SECOND_PASS_WANTED`); a node that restarted since fails it.
    pub(super) fn on_get_again(&mut self, n: u32) {
        let Some(a) = self.work.again.remove(&n) else {
            return;
        };
        // Its search polled the walk due before its deadline, so only a restart ends it.
        if self.slots[a.slot as usize].inc != a.inc || self.now >= a.locate.deadline() {
            self.metrics.get_done(a.started, GetOutcome::Failed);
            return;
        }
        self.walk_for_get(a.slot, a.object, a.started, a.locate, a.wanted);
    }

    /// Gets still waiting to walk again when the run ends count as failed.
    pub(super) fn abandon_again(&mut self) {
        for (_, a) in std::mem::take(&mut self.work.again) {
            self.metrics.get_done(a.started, GetOutcome::Failed);
        }
    }
}
