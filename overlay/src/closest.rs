//! The closest-peers walk at the heart of every lookup, as a small pure iterator.
//!
//! It knows nothing of RPCs, timers or messages (the shape of libp2p-kad's
//! `ClosestPeersIter`): [`next`](ClosestPeersIter::next) says whom to ask,
//! [`on_success`](ClosestPeersIter::on_success), [`on_unresponsive`](ClosestPeersIter::on_unresponsive),
//! [`on_given_up`](ClosestPeersIter::on_given_up) and [`on_failure`](ClosestPeersIter::on_failure)
//! report what became of a request.
//!
//! Termination is by progress, as libp2p does it. The walk keeps α requests in flight while
//! answers bring it closer to the target; once α answers in a row brought nothing closer
//! (no new closest candidate, and k candidates known) it is *stalled*, and asks every
//! candidate among the k closest at once (up to k in flight) instead of plodding through
//! them α at a time; an answer that brings progress puts it back to α. It finishes when the
//! k closest candidates still in the running have all answered and none closer than the
//! k-th of them is still awaited, or nobody is left to ask. A request past its soft timeout
//! (the driver decides when) is *unresponsive*: it no longer holds a slot, and the walk asks
//! the next candidates in its place, but it still holds the finish while it is among the k
//! closest: the soft timeout is an estimate made for freeing slots, and a far peer's
//! answer routinely comes after it (simnet's regions: a third of a lookup's k closest).
//! Past a later *give-up* time (the driver's bound on any live round trip) the request is
//! *given up*: it holds nothing, though an answer that still comes before the finish is
//! used. Only the hard timeout (or a refusal) makes it *failed*.
//!
//! Among candidates equally useful for routing (the same number of leading bits in common
//! with the target: Kademlia gives no reason to prefer one of them) the one with the
//! smallest known round-trip time is asked first, which keeps lookups near home when they
//! can (Kademlia paper, §2.3 and §4.2). Hops: a candidate from our own table has hop 0; a
//! candidate first named by the reply of a candidate with hop h has hop h + 1. The lookup's
//! hop count is the hop of the closest node in its result.

use std::collections::BTreeMap;

use crate::key::{Distance, Key};
use crate::peer::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting,
    /// Past its soft timeout, still pending: holds no slot, but holds the finish while it
    /// is among the k closest.
    Unresponsive,
    /// Past its give-up time, still pending: holds nothing, may yet answer.
    GivenUp,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate<P> {
    peer: P,
    state: State,
    hops: u32,
    /// Known round-trip time in µs, for choosing among equally useful candidates; 0 when
    /// unknown (the walk then assumes its default).
    rtt_us: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// α in flight; `no_progress` answers in a row brought nothing closer.
    Iterating { no_progress: usize },
    /// Up to k in flight, until an answer brings progress.
    Stalled,
}

/// What the walk wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<P> {
    /// Send a request to this peer.
    Contact(P),
    /// Nothing to send until an answer (or a timeout) arrives.
    Waiting,
    /// The walk is over: read the result.
    Finished,
}

/// The iterative walk towards the k closest peers of a target.
#[derive(Debug, Clone)]
pub struct ClosestPeersIter<P> {
    target: Key,
    k: usize,
    alpha: usize,
    rpcs_max: usize,
    candidates_max: usize,
    candidates: BTreeMap<Distance, Candidate<P>>,
    mode: Mode,
    /// Requests in state `Waiting`.
    in_flight: usize,
    /// Requests in state `Unresponsive` or `GivenUp` (sent, not settled).
    unresponsive: usize,
    rpcs_sent: usize,
    failures: usize,
    /// The round-trip time assumed for a candidate whose own is unknown, µs.
    default_rtt_us: u32,
    finished: bool,
}

impl<P: Peer> ClosestPeersIter<P> {
    /// A walk seeded with peers from our own table (hop 0).
    pub fn new(
        target: Key,
        seeds: impl IntoIterator<Item = P>,
        k: usize,
        alpha: usize,
        rpcs_max: usize,
        candidates_max: usize,
    ) -> Self {
        Self::with_rtts(
            target,
            seeds.into_iter().map(|p| (p, 0)),
            k,
            alpha,
            rpcs_max,
            candidates_max,
            0,
        )
    }

    /// A walk seeded with peers and their known round-trip times in µs (0: unknown, taken
    /// as `default_rtt_us`).
    pub fn with_rtts(
        target: Key,
        seeds: impl IntoIterator<Item = (P, u32)>,
        k: usize,
        alpha: usize,
        rpcs_max: usize,
        candidates_max: usize,
        default_rtt_us: u32,
    ) -> Self {
        let mut it = ClosestPeersIter {
            target,
            k: k.max(1),
            alpha: alpha.max(1),
            rpcs_max,
            candidates_max: candidates_max.max(k),
            candidates: BTreeMap::new(),
            mode: Mode::Iterating { no_progress: 0 },
            in_flight: 0,
            unresponsive: 0,
            rpcs_sent: 0,
            failures: 0,
            default_rtt_us,
            finished: false,
        };
        for (p, rtt) in seeds {
            let d = p.key().distance(&target);
            it.insert(d, p, 0, || rtt);
        }
        it
    }

    /// The key being looked up.
    pub fn target(&self) -> Key {
        self.target
    }

    /// Requests sent so far.
    pub fn rpcs_sent(&self) -> usize {
        self.rpcs_sent
    }

    /// Requests that failed (hard timeout or refusal) or passed their soft timeout, each
    /// counted once: the requests the walk stopped waiting for.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// Requests awaiting an answer within their soft timeout.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests past their soft timeout whose answer or failure has not come yet.
    pub fn unresponsive(&self) -> usize {
        self.unresponsive
    }

    /// Whether the walk is stalled (asking up to k at once).
    pub fn is_stalled(&self) -> bool {
        self.mode == Mode::Stalled
    }

    /// Inserts a candidate at distance `d` from the target, unless it is known already;
    /// returns whether it is now the closest one known. Its round-trip time is asked for
    /// only when it is new: most peers an answer names are known by then.
    fn insert(&mut self, d: Distance, peer: P, hops: u32, rtt_us: impl FnOnce() -> u32) -> bool {
        if self.candidates.contains_key(&d) {
            return false; // first naming wins: it defines the hop count
        }
        if self.candidates.len() >= self.candidates_max {
            // Forget the farthest candidate nobody asked yet, if the new one is closer.
            let farthest = self
                .candidates
                .iter()
                .rev()
                .find(|(_, c)| c.state == State::NotContacted)
                .map(|(d, _)| *d);
            match farthest {
                Some(f) if f > d => {
                    self.candidates.remove(&f);
                }
                _ => return false,
            }
        }
        self.candidates.insert(
            d,
            Candidate {
                peer,
                state: State::NotContacted,
                hops,
                rtt_us: rtt_us(),
            },
        );
        self.candidates.keys().next() == Some(&d)
    }

    fn capacity(&self) -> usize {
        match self.mode {
            Mode::Iterating { .. } => self.alpha,
            Mode::Stalled => self.k.max(self.alpha),
        }
    }

    /// The next step of the walk. Call it until it stops returning `Contact`.
    #[allow(clippy::should_implement_trait)] // not an Iterator: it can say "wait", and resumes
    pub fn next(&mut self) -> Next<P> {
        if self.finished {
            return Next::Finished;
        }
        let budget_left = self.rpcs_sent < self.rpcs_max;
        let at_capacity = self.in_flight >= self.capacity();
        // Walk the k closest candidates still in the running (failed, unresponsive and given
        // up ones step aside): the first not contacted is the one to ask, unless an equally useful
        // one (same common prefix with the target) further on answers faster.
        let mut counted = 0;
        let mut succeeded = 0;
        // Unresponsive requests closer than the k-th candidate still running: the finish
        // waits for their answers or their give-up.
        let mut held = 0;
        let mut pick: Option<(Distance, u32, u32)> = None; // (key, leading zeros, rtt)
        let default_rtt = self.default_rtt_us;
        for (d, c) in &self.candidates {
            if counted == self.k {
                break;
            }
            match c.state {
                State::Failed | State::GivenUp => continue,
                State::Unresponsive => held += 1,
                State::Succeeded => {
                    counted += 1;
                    succeeded += 1;
                }
                State::Waiting => counted += 1,
                State::NotContacted => {
                    counted += 1;
                    if !budget_left || at_capacity {
                        continue;
                    }
                    let lz = d.leading_zeros();
                    let rtt = if c.rtt_us == 0 { default_rtt } else { c.rtt_us };
                    match pick {
                        None => pick = Some((*d, lz, rtt)),
                        Some((_, plz, prtt)) if lz == plz && rtt < prtt => {
                            pick = Some((*d, lz, rtt))
                        }
                        Some((_, plz, _)) if lz < plz => break,
                        Some(_) => {}
                    }
                }
            }
        }
        if let Some((d, _, _)) = pick {
            if let Some(c) = self.candidates.get_mut(&d) {
                c.state = State::Waiting;
                self.in_flight += 1;
                self.rpcs_sent += 1;
                return Next::Contact(c.peer.clone());
            }
        }
        if succeeded == self.k && held == 0 {
            self.finished = true;
            return Next::Finished;
        }
        if self.in_flight > 0 || held > 0 {
            return Next::Waiting;
        }
        // Fewer than α answered and requests past their soft timeout are still pending:
        // the soft timeouts were too short for this path (the round trip grew, or every
        // peer is far), not proof that the peers are gone. Wait for their answers or their
        // hard timeouts rather than end a walk that learned next to nothing.
        if self.unresponsive > 0 && succeeded < self.alpha.min(self.k) {
            return Next::Waiting;
        }
        // Nothing in flight or held and nobody left to ask among the k closest still running
        // (or no budget left): the walk ends with what answered. Given-up requests may
        // still be pending; their answers come too late.
        self.finished = true;
        Next::Finished
    }

    fn candidate_mut(&mut self, key: &Key) -> Option<&mut Candidate<P>> {
        self.candidates.get_mut(&key.distance(&self.target))
    }

    /// Moves `peer`'s pending request (waiting or unresponsive) to `to`; returns the state
    /// it was in and its hop count, or `None` if the walk is over or nothing was pending.
    fn settle(&mut self, peer: &Key, to: State) -> Option<(State, u32)> {
        if self.finished {
            return None;
        }
        let c = self.candidate_mut(peer)?;
        let was = c.state;
        if !matches!(was, State::Waiting | State::Unresponsive | State::GivenUp) {
            return None;
        }
        c.state = to;
        Some((was, c.hops))
    }

    /// `peer` answered with `closer` peers (each with its known RTT in µs, 0 if unknown).
    /// Returns false if we were not waiting for it, or the walk is over.
    pub fn on_success(&mut self, peer: &Key, closer: impl IntoIterator<Item = (P, u32)>) -> bool {
        let Some((hops, mut progress)) = self.answered(peer) else {
            return false;
        };
        for (p, rtt) in closer {
            let d = p.key().distance(&self.target);
            progress |= self.insert(d, p, hops, || rtt);
        }
        self.after_answer(progress);
        true
    }

    /// [`on_success`](Self::on_success), with each new candidate's RTT in µs (0 if
    /// unknown) from `rtt_of`, which is not asked about peers the walk knows already.
    pub fn on_success_with(
        &mut self,
        peer: &Key,
        closer: impl IntoIterator<Item = P>,
        mut rtt_of: impl FnMut(&Key) -> u32,
    ) -> bool {
        let Some((hops, mut progress)) = self.answered(peer) else {
            return false;
        };
        for p in closer {
            let key = p.key();
            let d = key.distance(&self.target);
            progress |= self.insert(d, p, hops, || rtt_of(&key));
        }
        self.after_answer(progress);
        true
    }

    /// Settles `peer`'s answer: the hop count of the peers it names, and whether the walk
    /// progresses even if none of them is closer (fewer than k known).
    fn answered(&mut self, peer: &Key) -> Option<(u32, bool)> {
        let (was, hops) = self.settle(peer, State::Succeeded)?;
        match was {
            State::Waiting => self.in_flight -= 1,
            _ => self.unresponsive -= 1,
        }
        Some((hops + 1, self.candidates.len() < self.k))
    }

    /// The mode after an answer that did (or did not) bring the walk closer.
    fn after_answer(&mut self, progress: bool) {
        self.mode = match self.mode {
            Mode::Iterating { no_progress } => {
                let no_progress = if progress { 0 } else { no_progress + 1 };
                if no_progress >= self.alpha {
                    Mode::Stalled
                } else {
                    Mode::Iterating { no_progress }
                }
            }
            Mode::Stalled if progress => Mode::Iterating { no_progress: 0 },
            Mode::Stalled => Mode::Stalled,
        };
    }

    /// `peer`'s request passed its soft timeout: it no longer holds a slot, but holds the
    /// finish while among the k closest, and may still answer. Returns false if we were
    /// not waiting for it.
    pub fn on_unresponsive(&mut self, peer: &Key) -> bool {
        if self.finished {
            return false;
        }
        let Some(c) = self.candidate_mut(peer) else {
            return false;
        };
        if c.state != State::Waiting {
            return false;
        }
        c.state = State::Unresponsive;
        self.in_flight -= 1;
        self.unresponsive += 1;
        self.failures += 1;
        true
    }

    /// `peer`'s request passed its give-up time: it holds neither a slot nor the finish,
    /// but may still answer. Returns false if it was not pending, or the walk is over.
    pub fn on_given_up(&mut self, peer: &Key) -> bool {
        if self.finished {
            return false;
        }
        let Some(c) = self.candidate_mut(peer) else {
            return false;
        };
        match c.state {
            State::Unresponsive => c.state = State::GivenUp,
            State::Waiting => {
                c.state = State::GivenUp;
                self.in_flight -= 1;
                self.unresponsive += 1;
                self.failures += 1;
            }
            _ => return false,
        }
        true
    }

    /// `peer` failed (hard timeout, refusal, or a request that could not be sent). Returns
    /// false if we were not waiting for it, or the walk is over.
    pub fn on_failure(&mut self, peer: &Key) -> bool {
        let Some((was, _)) = self.settle(peer, State::Failed) else {
            return false;
        };
        match was {
            State::Waiting => {
                self.in_flight -= 1;
                self.failures += 1;
            }
            _ => self.unresponsive -= 1, // counted when it became unresponsive
        }
        true
    }

    /// The up to k closest peers that answered, closest first, and the hop count of the
    /// closest of them.
    pub fn result(&self) -> (Vec<P>, u32) {
        let ok: Vec<&Candidate<P>> = self
            .candidates
            .values()
            .filter(|c| c.state == State::Succeeded)
            .take(self.k)
            .collect();
        let hops = ok.first().map_or(0, |c| c.hops);
        (ok.into_iter().map(|c| c.peer.clone()).collect(), hops)
    }

    /// Whether the walk holds `key` as a candidate in any state.
    pub fn knows(&self, key: &Key) -> bool {
        self.candidates.contains_key(&key.distance(&self.target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct P(Key);
    impl Peer for P {
        fn key(&self) -> Key {
            self.0
        }
    }

    fn key(b: u8) -> Key {
        let mut k = [0u8; 32];
        k[0] = b;
        Key(k)
    }

    fn none() -> Vec<(P, u32)> {
        Vec::new()
    }

    fn contact(it: &mut ClosestPeersIter<P>) -> Key {
        match it.next() {
            Next::Contact(p) => p.0,
            other => panic!("expected a contact, got {other:?}"),
        }
    }

    #[test]
    fn alpha_in_flight_until_alpha_answers_bring_nothing_closer_then_k() {
        let target = key(0);
        // k = 5, α = 2, eight candidates: the window is the five closest.
        let mut it = ClosestPeersIter::new(target, (1..=8).map(|b| P(key(b))), 5, 2, 100, 100);
        assert_eq!((contact(&mut it), contact(&mut it)), (key(1), key(2)));
        assert_eq!(it.next(), Next::Waiting, "α = 2 in flight");
        assert!(it.on_success(&key(1), none()));
        assert_eq!(contact(&mut it), key(3));
        assert!(!it.is_stalled(), "one answer without progress");
        assert!(it.on_success(&key(2), none()));
        assert!(it.is_stalled(), "α answers without progress");
        // Stalled: the rest of the five closest at once, none beyond them.
        assert_eq!((contact(&mut it), contact(&mut it)), (key(4), key(5)));
        assert_eq!(it.next(), Next::Waiting);
        assert_eq!(it.in_flight(), 3);
        for b in 3..=5 {
            assert!(it.on_success(&key(b), none()));
        }
        assert_eq!(it.next(), Next::Finished);
        let (closest, hops) = it.result();
        assert_eq!(
            closest.iter().map(|p| p.0).collect::<Vec<_>>(),
            (1..=5).map(key).collect::<Vec<_>>()
        );
        assert_eq!((hops, it.rpcs_sent()), (0, 5));
    }

    #[test]
    fn an_answer_that_brings_a_closer_candidate_ends_the_stall() {
        let target = key(0);
        let mut it = ClosestPeersIter::new(target, (10..=15).map(|b| P(key(b))), 3, 1, 100, 100);
        assert_eq!(contact(&mut it), key(10));
        it.on_success(&key(10), none());
        assert!(it.is_stalled(), "α = 1 answer without progress");
        assert_eq!((contact(&mut it), contact(&mut it)), (key(11), key(12)));
        it.on_success(&key(11), vec![(P(key(2)), 0)]);
        assert!(!it.is_stalled(), "a new closest candidate is progress");
        assert_eq!(
            it.next(),
            Next::Waiting,
            "back to α = 1, and 12 is in flight"
        );
        it.on_success(&key(12), none());
        assert_eq!(contact(&mut it), key(2));
    }

    #[test]
    fn an_unresponsive_request_frees_its_slot_and_its_late_answer_counts() {
        let target = key(0);
        let mut it = ClosestPeersIter::new(target, (1..=4).map(|b| P(key(b))), 3, 1, 100, 100);
        assert_eq!(contact(&mut it), key(1));
        assert_eq!(it.next(), Next::Waiting);
        assert!(it.on_unresponsive(&key(1)));
        assert_eq!((it.in_flight(), it.unresponsive()), (0, 1));
        // Its slot goes to the next candidate, and the k-window extends past it.
        assert_eq!(contact(&mut it), key(2));
        it.on_success(&key(2), none());
        // Stalled (α = 1, no progress): 3 and 4 complete the window of k = 3 without 1.
        assert_eq!((contact(&mut it), contact(&mut it)), (key(3), key(4)));
        // 1 answers late, before the finish: it is used, and 4 is no longer needed.
        assert!(it.on_success(&key(1), none()));
        assert_eq!(it.unresponsive(), 0);
        it.on_success(&key(3), none());
        assert_eq!(it.next(), Next::Finished, "1, 2, 3 answered: 4 is beyond k");
        let (closest, _) = it.result();
        assert_eq!(
            closest.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![key(1), key(2), key(3)]
        );
    }

    #[test]
    fn a_given_up_request_does_not_hold_the_finish() {
        let target = key(0);
        let mut it = ClosestPeersIter::new(target, (1..=3).map(|b| P(key(b))), 2, 3, 100, 100);
        assert_eq!((contact(&mut it), contact(&mut it)), (key(1), key(2)));
        assert_eq!(it.next(), Next::Waiting, "the window of k = 2 is all asked");
        it.on_unresponsive(&key(1));
        assert_eq!(
            contact(&mut it),
            key(3),
            "1 steps aside, 3 enters the window"
        );
        it.on_success(&key(2), none());
        it.on_success(&key(3), none());
        assert_eq!(
            it.next(),
            Next::Waiting,
            "1 is unresponsive: it holds the finish"
        );
        assert!(it.on_given_up(&key(1)));
        assert!(!it.on_given_up(&key(1)), "once");
        assert_eq!(
            it.next(),
            Next::Finished,
            "the k = 2 closest still running answered"
        );
        assert_eq!(it.unresponsive(), 1, "1 is still pending");
        assert_eq!(it.failures(), 1, "counted once");
        assert!(!it.on_success(&key(1), none()), "too late");
        assert!(!it.on_failure(&key(1)), "too late");
        // The hard timeout of an unresponsive request is a failure.
        let mut it = ClosestPeersIter::new(target, vec![P(key(1))], 2, 1, 100, 100);
        contact(&mut it);
        it.on_unresponsive(&key(1));
        assert!(it.on_failure(&key(1)));
        assert_eq!((it.failures(), it.unresponsive()), (1, 0));
        assert_eq!(it.next(), Next::Finished);
        // A request may be given up straight from waiting (no soft timeout before its
        // give-up time); a given-up request's answer before the finish is still used.
        let mut it = ClosestPeersIter::new(target, (1..=2).map(|b| P(key(b))), 2, 1, 100, 100);
        contact(&mut it);
        assert!(it.on_given_up(&key(1)));
        assert_eq!(
            (it.in_flight(), it.unresponsive(), it.failures()),
            (0, 1, 1)
        );
        assert_eq!(contact(&mut it), key(2));
        assert!(it.on_success(&key(1), none()));
        assert_eq!(it.unresponsive(), 0);
    }

    #[test]
    fn an_unresponsive_request_among_the_k_closest_holds_the_finish() {
        // k = 2: 1 passes its soft timeout (a far peer), 2 and 3 answer. 1 is still among
        // the two closest known, so the walk waits for it rather than end with 2 and 3.
        let target = key(0);
        let mut it = ClosestPeersIter::new(target, (1..=3).map(|b| P(key(b))), 2, 3, 100, 100);
        assert_eq!((contact(&mut it), contact(&mut it)), (key(1), key(2)));
        it.on_unresponsive(&key(1));
        assert_eq!(contact(&mut it), key(3), "its slot is freed");
        it.on_success(&key(2), none());
        it.on_success(&key(3), none());
        assert_eq!(it.next(), Next::Waiting, "1 holds the finish");
        assert!(it.on_success(&key(1), none()), "its late answer is used");
        assert_eq!(it.next(), Next::Finished);
        let (closest, _) = it.result();
        assert_eq!(
            closest.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![key(1), key(2)]
        );
    }

    #[test]
    fn a_walk_where_nobody_answered_in_time_waits_for_late_answers() {
        // Every request passes its soft timeout (the path's round trip jumped): the walk
        // does not end empty; the late answers are its result.
        let target = key(0);
        let mut it = ClosestPeersIter::new(target, (1..=3).map(|b| P(key(b))), 20, 3, 100, 100);
        let asked = [contact(&mut it), contact(&mut it), contact(&mut it)];
        for k in &asked {
            assert!(it.on_unresponsive(k));
        }
        assert_eq!(it.next(), Next::Waiting, "no answer yet, three pending");
        it.on_success(&key(1), none());
        it.on_success(&key(2), none());
        assert_eq!(it.next(), Next::Waiting, "two answers, fewer than α");
        assert!(it.on_failure(&key(3)), "its hard timeout");
        assert_eq!(it.next(), Next::Finished);
        let (closest, _) = it.result();
        assert_eq!(
            closest.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![key(1), key(2)]
        );
    }

    #[test]
    fn among_equally_useful_candidates_the_fastest_goes_first() {
        let target = key(0);
        // 0x10..0x1f share three leading bits with the target, 0x20 two: 0x13 (20 ms) and
        // 0x1f (unknown: the 100 ms default) are equally useful, and 0x13 is faster than
        // 0x11 (300 ms); 0x20 is less useful, however fast.
        let seeds = vec![
            (P(key(0x11)), 300_000),
            (P(key(0x13)), 20_000),
            (P(key(0x1f)), 0),
            (P(key(0x20)), 1),
        ];
        let mut it = ClosestPeersIter::with_rtts(target, seeds, 4, 1, 100, 100, 100_000);
        assert_eq!(contact(&mut it), key(0x13));
        it.on_unresponsive(&key(0x13));
        assert_eq!(
            contact(&mut it),
            key(0x1f),
            "the default 100 ms beats 300 ms"
        );
        it.on_unresponsive(&key(0x1f));
        assert_eq!(contact(&mut it), key(0x11));
        it.on_unresponsive(&key(0x11));
        assert_eq!(contact(&mut it), key(0x20));
    }

    #[test]
    fn an_answer_asks_the_rtt_of_new_candidates_only_and_uses_it() {
        let target = key(0);
        let mut it = ClosestPeersIter::new(target, vec![P(key(0x40))], 4, 1, 100, 100);
        let p = contact(&mut it);
        let mut asked = Vec::new();
        // 0x11 and 0x1e are equally useful (three leading bits in common with the
        // target); 0x1e is named with the faster round trip. 0x40 is known already.
        let closer = vec![P(key(0x40)), P(key(0x11)), P(key(0x1e))];
        assert!(it.on_success_with(&p, closer, |k| {
            asked.push(*k);
            if *k == key(0x1e) { 5_000 } else { 900_000 }
        }));
        assert_eq!(asked, vec![key(0x11), key(0x1e)], "not the known 0x40");
        assert_eq!(contact(&mut it), key(0x1e), "its round trip was kept");
        assert!(!it.on_success_with(&key(0x77), vec![P(key(0x12))], |_| 0));
        assert!(
            !it.knows(&key(0x12)),
            "an answer nobody was asked for adds nothing"
        );
    }

    #[test]
    fn hops_count_from_the_first_referrer() {
        let target = key(0);
        let mut it = ClosestPeersIter::new(target, vec![P(key(100))], 1, 1, 100, 100);
        let p = contact(&mut it);
        it.on_success(&p, vec![(P(key(50)), 0)]);
        let p = contact(&mut it);
        it.on_success(&p, vec![(P(key(10)), 0), (P(key(100)), 0)]);
        let p = contact(&mut it);
        it.on_success(&p, none());
        assert_eq!(it.next(), Next::Finished);
        assert_eq!(it.result(), (vec![P(key(10))], 2));
    }

    #[test]
    fn answers_from_strangers_are_ignored() {
        let mut it = ClosestPeersIter::new(key(0), vec![P(key(1))], 1, 1, 100, 100);
        assert!(!it.on_success(&key(9), vec![(P(key(2)), 0)]));
        assert!(!it.knows(&key(2)));
        assert!(!it.on_failure(&key(1)), "not contacted yet");
        assert!(!it.on_unresponsive(&key(1)), "not contacted yet");
    }

    #[test]
    fn rpc_budget_bounds_the_walk() {
        let mut it = ClosestPeersIter::new(key(0), (1..=50).map(|b| P(key(b))), 20, 3, 5, 100);
        let mut sent = 0;
        loop {
            match it.next() {
                Next::Contact(p) => {
                    sent += 1;
                    it.on_failure(&p.0);
                }
                Next::Waiting => panic!("nothing in flight"),
                Next::Finished => break,
            }
        }
        assert_eq!(sent, 5);
    }
}
