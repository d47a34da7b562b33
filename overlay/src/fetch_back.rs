//! Fetching back a copy our store dropped as corrupt: when, how often, how many at once.
//!
//! The other holders of an object counted our copy, and their planners do not repair it
//! until their proof of it lapses (`confirm_ttl`, an hour): a copy that rots here would
//! stay one short for that long. So the node that drops a copy fetches a good one back from
//! the mesh itself (verified, as every fetch): at once, then again after each of
//! [`FETCH_BACK_AGAIN`] while it fails (the holders paused, partitioned, restarting), and
//! gives up after the last, well within the hour, leaving it to the others' repair.
//!
//! A disk that rots many copies at a time must not start a fetch of each: at most
//! [`FETCH_BACK_AT_ONCE`] run at once, the rest wait their turn in the order they came due;
//! past [`FETCH_BACK_WAITING_MAX`] copies on (running or waiting), a dropped copy is left to
//! repair at once. A copy dropped again while it waits for its next try changes nothing;
//! one dropped again while its pull runs is fetched again once the pull ends (what the pull
//! stored may be what was dropped), and only a pull that ends with no drop since says the
//! copy is back (the driver announces it then).
//!
//! The driver feeds drops ([`FetchBack::handle_dropped`]) and the end of each pull
//! ([`FetchBack::handle_pulled`]), calls [`FetchBack::handle_timeout`] at
//! [`FetchBack::poll_timeout`], and carries out what [`FetchBack::poll_event`] returns.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::key::Key;
use crate::time::Instant;

/// How long after a failed fetch back the next is tried.
pub const FETCH_BACK_AGAIN: [Duration; 5] = [
    Duration::from_secs(5),
    Duration::from_secs(20),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(20 * 60),
];

/// Fetches back running at once.
pub const FETCH_BACK_AT_ONCE: usize = 4;

/// Copies whose fetch back may be on (running or waiting) at once.
pub const FETCH_BACK_WAITING_MAX: usize = 256;

/// Work for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchBackEvent {
    /// Fetch the object whole from the mesh into our store, verified; report with
    /// [`FetchBack::handle_pulled`]. `attempt` counts from 0.
    Pull {
        /// The object.
        key: Key,
        /// Which try this is.
        attempt: u8,
    },
    /// The last try failed: the other holders' repair restores the copy.
    GaveUp {
        /// The object.
        key: Key,
    },
    /// Too many copies are on already: this one is left to repair without a try.
    NotTried {
        /// The object.
        key: Key,
    },
}

#[derive(Debug, Clone, Copy)]
struct Lost {
    attempt: u8,
    /// When its next try is due; `None` while it runs.
    due: Option<Instant>,
    /// Dropped again while its pull ran: what the pull stored may be what was dropped.
    dropped_again: bool,
}

/// The fetch-back schedule of one node.
#[derive(Debug, Default)]
pub struct FetchBack {
    on: BTreeMap<Key, Lost>,
    /// Waiting copies by when they came due (then by key, for one order on every run).
    due: BTreeSet<(Instant, Key)>,
    running: usize,
    events: VecDeque<FetchBackEvent>,
}

impl FetchBack {
    /// Nothing on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies on, running or waiting.
    pub fn len(&self) -> usize {
        self.on.len()
    }

    /// Whether no copy is on.
    pub fn is_empty(&self) -> bool {
        self.on.is_empty()
    }

    /// Our store dropped its copy of `key` as corrupt.
    pub fn handle_dropped(&mut self, now: Instant, key: Key) {
        if let Some(lost) = self.on.get_mut(&key) {
            // Waiting: its next try fetches it anyway. Running: the copy it stores may be
            // the one just dropped, so it does not end the fetch back.
            lost.dropped_again |= lost.due.is_none();
            return;
        }
        if self.on.len() >= FETCH_BACK_WAITING_MAX {
            self.events.push_back(FetchBackEvent::NotTried { key });
            return;
        }
        self.on.insert(
            key,
            Lost {
                attempt: 0,
                due: Some(now),
                dropped_again: false,
            },
        );
        self.due.insert((now, key));
        self.start_due(now);
    }

    /// A pull of `key` ended: `ok` when it stored a verified copy. Returns whether the copy
    /// is back for good (announce it): not when it was dropped again while the pull ran,
    /// which starts the fetch back over at once.
    pub fn handle_pulled(&mut self, now: Instant, key: Key, ok: bool) -> bool {
        let Some(lost) = self.on.get_mut(&key).filter(|l| l.due.is_none()) else {
            return false;
        };
        self.running -= 1;
        let back = if std::mem::take(&mut lost.dropped_again) {
            lost.attempt = 0;
            lost.due = Some(now);
            self.due.insert((now, key));
            false
        } else {
            match FETCH_BACK_AGAIN.get(usize::from(lost.attempt)) {
                Some(wait) if !ok => {
                    let at = now + *wait;
                    lost.attempt += 1;
                    lost.due = Some(at);
                    self.due.insert((at, key));
                    false
                }
                _ => {
                    self.on.remove(&key);
                    if !ok {
                        self.events.push_back(FetchBackEvent::GaveUp { key });
                    }
                    ok
                }
            }
        };
        self.start_due(now);
        back
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed: the first try due,
    /// if a slot is free for it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.running >= FETCH_BACK_AT_ONCE {
            return None;
        }
        self.due.first().map(|(at, _)| *at)
    }

    /// Starts the tries due by `now`, as slots allow.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.start_due(now);
    }

    /// The next piece of work.
    pub fn poll_event(&mut self) -> Option<FetchBackEvent> {
        self.events.pop_front()
    }

    fn start_due(&mut self, now: Instant) {
        while self.running < FETCH_BACK_AT_ONCE {
            let Some(&(at, key)) = self.due.first() else {
                return;
            };
            if at > now {
                return;
            }
            self.due.pop_first();
            let Some(lost) = self.on.get_mut(&key) else {
                continue;
            };
            lost.due = None;
            self.running += 1;
            self.events.push_back(FetchBackEvent::Pull {
                key,
                attempt: lost.attempt,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u16) -> Key {
        let mut k = [0u8; 32];
        k[..2].copy_from_slice(&i.to_be_bytes());
        Key(k)
    }

    fn at(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    fn drain(f: &mut FetchBack) -> Vec<FetchBackEvent> {
        std::iter::from_fn(|| f.poll_event()).collect()
    }

    #[test]
    fn a_failing_fetch_back_is_tried_again_on_the_schedule_then_given_up() {
        let mut f = FetchBack::new();
        f.handle_dropped(at(0), key(1));
        let mut now = at(0);
        let mut tries = Vec::new();
        loop {
            while let Some(ev) = f.poll_event() {
                match ev {
                    FetchBackEvent::Pull { key: k, attempt } => {
                        tries.push(((now - at(0)).as_secs(), attempt));
                        assert!(!f.handle_pulled(now, k, false));
                    }
                    FetchBackEvent::GaveUp { key: k } => {
                        assert_eq!(k, key(1));
                        assert!(f.is_empty());
                        assert_eq!(
                            tries,
                            vec![(0, 0), (5, 1), (25, 2), (85, 3), (385, 4), (1585, 5)]
                        );
                        assert!(
                            tries.last().is_some_and(|(s, _)| *s < 3600),
                            "within the hour"
                        );
                        return;
                    }
                    FetchBackEvent::NotTried { .. } => panic!("{ev:?}"),
                }
            }
            match f.poll_timeout() {
                Some(t) => {
                    now = t;
                    f.handle_timeout(now);
                }
                None => panic!("stalled after {tries:?}"),
            }
        }
    }

    #[test]
    fn a_copy_back_ends_it() {
        let mut f = FetchBack::new();
        f.handle_dropped(at(0), key(1));
        assert_eq!(
            drain(&mut f),
            vec![FetchBackEvent::Pull {
                key: key(1),
                attempt: 0
            }]
        );
        assert!(f.handle_pulled(at(1), key(1), true), "back for good");
        assert!(f.is_empty());
        assert_eq!(drain(&mut f), vec![]);
        assert_eq!(f.poll_timeout(), None);
        // A report for a copy not running changes nothing.
        assert!(!f.handle_pulled(at(2), key(1), false));
        assert!(f.is_empty() && drain(&mut f).is_empty());
    }

    #[test]
    fn a_rotting_disk_runs_a_few_at_once_and_leaves_the_rest_to_repair() {
        let mut f = FetchBack::new();
        let n = FETCH_BACK_WAITING_MAX as u16 + 10;
        for i in 0..n {
            f.handle_dropped(at(0), key(i));
        }
        let evs = drain(&mut f);
        let pulls: Vec<Key> = evs
            .iter()
            .filter_map(|e| match e {
                FetchBackEvent::Pull { key, .. } => Some(*key),
                _ => None,
            })
            .collect();
        let not_tried = evs
            .iter()
            .filter(|e| matches!(e, FetchBackEvent::NotTried { .. }))
            .count();
        assert_eq!(
            pulls,
            (0..4).map(key).collect::<Vec<_>>(),
            "first come first"
        );
        assert_eq!(not_tried, 10);
        assert_eq!(f.len(), FETCH_BACK_WAITING_MAX);
        assert_eq!(f.poll_timeout(), None, "no slot free: nothing to wake for");
        // One ends: the next in line starts at once.
        assert!(f.handle_pulled(at(3), key(0), true));
        assert_eq!(
            drain(&mut f),
            vec![FetchBackEvent::Pull {
                key: key(4),
                attempt: 0
            }]
        );
    }

    fn pull(key: Key, attempt: u8) -> FetchBackEvent {
        FetchBackEvent::Pull { key, attempt }
    }

    #[test]
    fn a_copy_dropped_again_while_its_pull_runs_is_fetched_again() {
        let mut f = FetchBack::new();
        f.handle_dropped(at(0), key(1));
        assert_eq!(drain(&mut f), vec![pull(key(1), 0)]);
        f.handle_dropped(at(1), key(1));
        assert!(
            !f.handle_pulled(at(2), key(1), true),
            "not back: dropped meanwhile"
        );
        assert_eq!(
            drain(&mut f),
            vec![pull(key(1), 0)],
            "fetched again at once"
        );
        assert!(f.handle_pulled(at(3), key(1), true));
        assert!(f.is_empty());
    }

    #[test]
    fn a_drop_while_waiting_changes_nothing_and_a_failed_pull_frees_its_slot() {
        let mut f = FetchBack::new();
        for i in 0..5 {
            f.handle_dropped(at(0), key(i));
        }
        assert_eq!(drain(&mut f).len(), 4);
        // Key 0 fails: its slot goes to key 4 (attempt 0), key 0 waits 5 s for attempt 1.
        assert!(!f.handle_pulled(at(1), key(0), false));
        assert_eq!(drain(&mut f), vec![pull(key(4), 0)]);
        f.handle_dropped(at(2), key(0));
        assert!(
            drain(&mut f).is_empty(),
            "waiting: its next try fetches it anyway"
        );
        for i in 1..5 {
            assert!(f.handle_pulled(at(3), key(i), true));
        }
        assert_eq!(f.poll_timeout(), Some(at(6)));
        f.handle_timeout(at(6));
        assert_eq!(drain(&mut f), vec![pull(key(0), 1)]);
    }
}
