//! A get's search for a holder, through the node's own decisions: `overlay::Search` says
//! whom to probe, when the search is over, the order to fetch in and whether a second pass
//! is due, as `Objects::locate_pass` does in the node.
//!
//! Every candidate is probed at once for the object's final group, each probe ending with
//! an answer (holds it, lacks it, or, from one of the swarm's liars that lacks it, a tail
//! that does not verify) one round trip later or with silence at the probe timeout (`overlay::ObjectTimings`);
//! answers reach the search in the order they arrive, and the first holder ends it (the node does not wait for more; `workload.get_holders_wanted` > 1, a
//! research knob, waits for that many holders and asks the walk for as many providers).
//! The fetch goes to the holders in the search's order: a holder that cannot be reached
//! costs a dial timeout ([`FETCH_FAILOVER`]) and the next one is tried, one that turns out
//! to lack the object costs its round trip, and the get fails once
//! `failover_idle` passed without a holder serving it (`overlay::Failover`, as the node). A pass whose records all failed to prove the
//! object walks again, to the key's closest nodes whatever records it meets
//! (`overlay::SECOND_PASS_WANTED`), from when its last probe ended, within the same
//! search timeout (the node's second pass); a pass that ended at the deadline fails.

use std::time::Duration;

use overlay::{Failover, Instant, ProbeAnswer, SECOND_PASS_WANTED, Search, SearchOutcome};

use super::Sim;
use super::queue::Ev;
use super::workload::Pending;
use crate::metrics::{GetOutcome, GetParts};
use crate::peer::SimPeer;

/// A get's TAIL probe to one candidate holder gives up after this, and its whole search
/// (walks and probes) after this: the node's numbers (`overlay::ObjectTimings`).
fn timings() -> overlay::ObjectTimings {
    overlay::ObjectTimings::default()
}
/// A fetch from a holder that cannot be reached gives up after this (the node's
/// `handshake_timeout`: the holder went away since its probe answered, so the dial fails).
pub const FETCH_FAILOVER: Duration = Duration::from_secs(5);

/// A get waiting to walk again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Again {
    slot: u32,
    inc: u32,
    object: u32,
    started: Instant,
}

impl Sim {
    /// The provider walk of a get at `slot` found `providers` and `closest`: search them
    /// for a holder and fetch from it, or walk again.
    pub(super) fn search_holders(
        &mut self,
        slot: u32,
        object: u32,
        started: Instant,
        again: bool,
        providers: Vec<SimPeer>,
        closest: Vec<SimPeer>,
    ) {
        let key = self.work.objects[object as usize];
        let now = self.now;
        let deadline = started + timings().search_timeout;
        if now >= deadline {
            self.metrics.get_done(started, GetOutcome::Failed);
            return;
        }
        let rf = self.sc.workload.replication.rf;
        let wanted = if again {
            SECOND_PASS_WANTED
        } else {
            self.holders_wanted()
        };
        let me = self.slots[slot as usize].key;
        let mut search = Search::new(me, providers, closest, rf, wanted);
        let mut ends: Vec<(Duration, SimPeer, ProbeAnswer)> = Vec::new();
        for c in search.candidates().to_vec() {
            let answer = self
                .exchange(slot, c.slot(), now)
                .filter(|rt| *rt < timings().probe_timeout);
            ends.push(match answer {
                // Someone else at that address (a made-up record, a restarted node): the
                // handshake fails on the id, as the node's dial does.
                Some(rt) if !self.is_current(&c) => (rt, c, ProbeAnswer::Silent),
                Some(rt) if self.holds(c.slot(), &key) => (rt, c, ProbeAnswer::Holds),
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
        let mut done = Duration::ZERO;
        let mut holders = 0;
        for (t, c, answer) in &ends {
            if now + *t > deadline {
                search.handle_deadline();
                done = deadline - now;
                break;
            }
            done = *t;
            holders += usize::from(*answer == ProbeAnswer::Holds);
            if search.handle_answer(&c.key(), *answer) && (holders == 0 || holders >= wait_for) {
                break;
            }
        }
        match search.outcome() {
            SearchOutcome::Found { holders } => {
                let outcome = self.fetch(slot, &key, &holders, started, now, done);
                if again && matches!(outcome, GetOutcome::Served { .. }) {
                    self.metrics.gets_served_again += 1;
                }
                self.metrics.get_done(started, outcome);
            }
            SearchOutcome::SearchAgain if now + done >= deadline => {
                // Out of time: the second walk would fail at once (as in the node).
                self.metrics.get_done(started, GetOutcome::Failed);
            }
            SearchOutcome::SearchAgain => {
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
                    },
                );
                self.metrics.gets_searched_again += 1;
                self.queue.push(now + done, Ev::GetAgain(n));
            }
            SearchOutcome::Unfinished | SearchOutcome::NotFound => {
                self.metrics.get_done(started, GetOutcome::Failed);
            }
        }
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

    /// Get number `n` walks again, to the key's closest nodes (`SECOND_PASS_WANTED`).
    pub(super) fn on_get_again(&mut self, n: u32) {
        let Some(a) = self.work.again.remove(&n) else {
            return;
        };
        let key = self.work.objects[a.object as usize];
        let local = self.local_now(a.slot);
        let s = &mut self.slots[a.slot as usize];
        let alive = s.inc == a.inc && self.now < a.started + timings().search_timeout;
        let id = s
            .dht
            .as_mut()
            .filter(|_| alive)
            .and_then(|dht| dht.get_providers(local, key, SECOND_PASS_WANTED).ok());
        match id {
            Some(id) => {
                self.pending.insert(
                    (a.slot, a.inc, id.0),
                    Pending::Get {
                        started: a.started,
                        object: a.object,
                        again: true,
                    },
                );
                self.after_input(a.slot, false);
            }
            None => self.metrics.get_done(a.started, GetOutcome::Failed),
        }
    }

    /// Gets still waiting to walk again when the run ends count as failed.
    pub(super) fn abandon_again(&mut self) {
        for (_, a) in std::mem::take(&mut self.work.again) {
            self.metrics.get_done(a.started, GetOutcome::Failed);
        }
    }
}
