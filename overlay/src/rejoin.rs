//! When a node whose table is empty dials its way back in, and through whom.
//!
//! A node joins through the peers its operator configured (`--bootstrap`) and, after a
//! restart, the contacts it saved ([`RoutingTable::contacts_to_save`](crate::RoutingTable::contacts_to_save)):
//! a mesh's seed restarting has no configured peer and would otherwise wait for the others'
//! bootstrap check, minutes later. Whenever its table is empty the driver dials them (names
//! resolved again, each peer's id proven by its handshake) and bootstraps through those it
//! reached; attempts that fail back off from [`REJOIN_BACKOFF_FIRST`], doubling, to
//! [`REJOIN_BACKOFF_MAX`], and a join starts the backoff over. The saved contacts are
//! dialed for the first [`SAVED_CONTACT_ROUNDS`] attempts only, and not once the node was
//! in the mesh: past these a mesh that is gone is not dialed again and again. A node with
//! no configured peer is done once its saved contacts had their rounds (or it joined); it
//! stays reachable for peers that dial it.
//!
//! This is the driver's own loop beside [`Dht`](crate::Dht)'s `rejoin_interval`, which
//! asks the contacts the `Dht` was bootstrapped with again when it finds itself isolated:
//! this one re-resolves names and dials, which only the driver can.

use std::time::Duration;

use crate::time::Instant;

/// The first wait after a failed attempt, and the wait between checks once joined.
pub const REJOIN_BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
pub const REJOIN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Attempts that dial the saved contacts, until one joins.
pub const SAVED_CONTACT_ROUNDS: u32 = 5;

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinStep {
    /// Dial the configured peers, and the saved contacts when `saved`, bootstrap through
    /// those reached, and report with [`Rejoin::handle_attempt`].
    Dial {
        /// Whether to dial the saved contacts too.
        saved: bool,
    },
    /// Nothing to do before this instant: poll again then.
    Wait(Instant),
    /// Nothing left to do.
    Done,
}

/// The rejoin loop of one node.
#[derive(Debug, Clone)]
pub struct Rejoin {
    configured: bool,
    saved_rounds: u32,
    backoff: Duration,
    next: Instant,
    dialing: bool,
    done: bool,
}

impl Rejoin {
    /// A node starting at `now`, with configured peers or not, saved contacts or not.
    pub fn new(now: Instant, configured: bool, saved: bool) -> Self {
        Rejoin {
            configured,
            saved_rounds: if saved { SAVED_CONTACT_ROUNDS } else { 0 },
            backoff: REJOIN_BACKOFF_FIRST,
            next: now,
            dialing: false,
            done: !configured && !saved,
        }
    }

    /// The next step, given whether the table is empty now.
    pub fn poll(&mut self, now: Instant, table_empty: bool) -> RejoinStep {
        if self.done {
            return RejoinStep::Done;
        }
        if self.dialing || now < self.next {
            return RejoinStep::Wait(self.next);
        }
        if table_empty {
            let saved = self.saved_rounds > 0;
            self.saved_rounds = self.saved_rounds.saturating_sub(1);
            self.dialing = true;
            return RejoinStep::Dial { saved };
        }
        // In the mesh (a peer found us meanwhile): the saved contacts did their part.
        self.saved_rounds = 0;
        self.schedule(now)
    }

    /// The attempt from [`RejoinStep::Dial`] ended: `joined` when the node is in the mesh.
    pub fn handle_attempt(&mut self, now: Instant, joined: bool) {
        if !std::mem::take(&mut self.dialing) {
            return;
        }
        if joined {
            self.backoff = REJOIN_BACKOFF_FIRST;
            self.saved_rounds = 0;
        } else {
            self.backoff = (self.backoff * 2).min(REJOIN_BACKOFF_MAX);
        }
        self.schedule(now);
    }

    fn schedule(&mut self, now: Instant) -> RejoinStep {
        if !self.configured && self.saved_rounds == 0 {
            self.done = true;
            return RejoinStep::Done;
        }
        self.next = now + self.backoff;
        RejoinStep::Wait(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: Instant) -> u128 {
        t.as_duration().as_millis()
    }

    /// Runs attempts that all fail, with the table empty; the times (ms) of the dials and
    /// whether each dialed the saved contacts, until `until_ms` or done.
    fn failing(mut r: Rejoin, until_ms: u128) -> (Vec<(u128, bool)>, bool) {
        let mut now = Instant::ZERO;
        let mut dials = Vec::new();
        loop {
            match r.poll(now, true) {
                RejoinStep::Dial { saved } => {
                    dials.push((ms(now), saved));
                    r.handle_attempt(now, false);
                }
                RejoinStep::Wait(t) if ms(t) <= until_ms => now = t,
                RejoinStep::Wait(_) => return (dials, false),
                RejoinStep::Done => return (dials, true),
            }
        }
    }

    #[test]
    fn failed_attempts_back_off_to_the_cap_and_saved_contacts_get_five_rounds() {
        let (dials, done) = failing(Rejoin::new(Instant::ZERO, true, true), 120_000);
        assert!(!done, "a node with configured peers keeps trying");
        let times: Vec<u128> = dials.iter().map(|d| d.0).collect();
        assert_eq!(
            &times[..9],
            &[0, 400, 1200, 2800, 6000, 12400, 25200, 50800, 80800]
        );
        let with_saved = dials.iter().filter(|d| d.1).count();
        assert_eq!(with_saved, 5);
        assert!(dials[..5].iter().all(|d| d.1), "the first five");
    }

    #[test]
    fn a_seed_with_saved_contacts_only_gives_up_after_their_rounds() {
        let (dials, done) = failing(Rejoin::new(Instant::ZERO, false, true), u128::MAX);
        assert!(done);
        assert_eq!(dials.len(), 5);
        // Without saved contacts there is nothing to dial at all.
        let (dials, done) = failing(Rejoin::new(Instant::ZERO, false, false), u128::MAX);
        assert!(done && dials.is_empty());
    }

    #[test]
    fn a_join_resets_the_backoff_and_ends_the_saved_rounds() {
        let mut r = Rejoin::new(Instant::ZERO, true, true);
        let t0 = Instant::ZERO;
        assert_eq!(r.poll(t0, true), RejoinStep::Dial { saved: true });
        r.handle_attempt(t0, false);
        let t1 = t0 + Duration::from_millis(400);
        assert_eq!(r.poll(t1, true), RejoinStep::Dial { saved: true });
        assert_eq!(
            r.poll(t1, true),
            RejoinStep::Wait(t1),
            "one attempt at a time"
        );
        r.handle_attempt(t1, true);
        // Joined: checked again 200 ms later; while the table holds peers nothing is dialed.
        let t2 = t1 + REJOIN_BACKOFF_FIRST;
        assert_eq!(
            r.poll(t2, false),
            RejoinStep::Wait(t2 + REJOIN_BACKOFF_FIRST)
        );
        // The table empties: dial again at once, the configured peers only.
        let t3 = t2 + REJOIN_BACKOFF_FIRST;
        assert_eq!(r.poll(t3, true), RejoinStep::Dial { saved: false });
    }

    #[test]
    fn a_seed_found_by_a_peer_is_done() {
        let mut r = Rejoin::new(Instant::ZERO, false, true);
        assert_eq!(r.poll(Instant::ZERO, false), RejoinStep::Done);
    }
}
