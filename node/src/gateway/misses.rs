//! Guards for GETs of ids this node does not hold. Each such GET starts a search: a DHT
//! lookup and up to 2·RF probes across the mesh. A client asking for random ids could keep
//! the node (and its peers) searching for ever, so the edge keeps two things:
//!
//! - a short negative cache: an id whose search found nobody answers 404 again without a
//!   search for [`NEGATIVE_TTL`] (an object written elsewhere meanwhile is found once it
//!   runs out; one written here is found at once, as the local store is asked first);
//! - a budget of vain searches per client address (a token bucket): each search that finds
//!   nobody, runs out of time, or is left by its client mid-search costs one; a client
//!   with none left gets 429 with `Retry-After` before its next search. Searches that find
//!   the object cost nothing, so an edge gateway reading remote objects for many users
//!   behind one address is not slowed; local objects and cached misses cost nothing
//!   either.
//!
//! Both maps are bounded; when full, the oldest entries go.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::Hash;

/// How long an id searched in vain answers 404 without a new search.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Vain searches a client may make per second, sustained.
pub const SEARCHES_PER_SECOND: f64 = 50.0;
/// Vain searches a client may make at once, after a quiet spell.
pub const SEARCH_BURST: f64 = 100.0;
/// Most ids and most clients remembered.
const ENTRIES_MAX: usize = 16_384;

/// The client address of an HTTP connection, put on each of its requests by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The negative cache and the per-client search budgets.
#[derive(Debug, Default)]
pub struct MissGuard {
    missed: Mutex<HashMap<Hash, Instant>>,
    budgets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a search may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The id was searched in vain moments ago: it is not there.
    RecentlyMissing,
    /// The client spent its searches; it may search again in about this many seconds.
    OverBudget {
        /// Seconds until a search is allowed again (at least 1).
        retry_after: u32,
    },
}

impl MissGuard {
    /// Whether `client` may search the mesh for `hash` now: the search it may start, which
    /// the caller settles once it ends ([`Search`]).
    pub fn admit(&self, client: Option<IpAddr>, hash: &Hash) -> Result<Search<'_>, Refused> {
        let now = Instant::now();
        {
            let mut missed = lock(&self.missed);
            match missed.get(hash) {
                Some(at) if now.duration_since(*at) < NEGATIVE_TTL => {
                    return Err(Refused::RecentlyMissing);
                }
                Some(_) => {
                    missed.remove(hash);
                }
                None => {}
            }
        }
        // Built only once the search may start: a refusal is not a search, and costs
        // nothing.
        let search = || Search {
            guard: self,
            client,
            hash: *hash,
            settled: false,
        };
        let Some(ip) = client else {
            return Ok(search());
        };
        let mut budgets = lock(&self.budgets);
        let Some(b) = budgets.get_mut(&ip) else {
            drop(budgets);
            return Ok(search());
        };
        b.refill(now);
        if b.tokens >= 1.0 {
            drop(budgets);
            Ok(search())
        } else {
            let wait = (1.0 - b.tokens) / SEARCHES_PER_SECOND;
            Err(Refused::OverBudget {
                retry_after: (wait.ceil() as u32).max(1),
            })
        }
    }

    /// Remembers `hash` as searched in vain now.
    fn remember(&self, hash: Hash, now: Instant) {
        let mut missed = lock(&self.missed);
        if missed.len() >= ENTRIES_MAX && !missed.contains_key(&hash) {
            evict_oldest(&mut missed, |at| *at);
        }
        missed.insert(hash, now);
    }

    fn charge(&self, client: Option<IpAddr>, now: Instant) {
        let Some(ip) = client else {
            return;
        };
        let mut budgets = lock(&self.budgets);
        if budgets.len() >= ENTRIES_MAX && !budgets.contains_key(&ip) {
            evict_oldest(&mut budgets, |b| b.at);
        }
        let b = budgets.entry(ip).or_insert(Bucket {
            tokens: SEARCH_BURST,
            at: now,
        });
        b.refill(now);
        // Searches admitted together are charged together; the debt is bounded.
        b.tokens = (b.tokens - 1.0).max(-SEARCH_BURST);
    }
}

/// A search [`MissGuard::admit`] let start. One that found its object, or never ran, costs
/// nothing ([`Search::free`]); one that found nobody is remembered and charged
/// ([`Search::missed`]); any other end is charged and not remembered: a search that ran out
/// of time, or whose client hung up while it ran (the handler dropped mid-search), held the
/// mesh's probes all the same, and its holders may answer a moment later.
#[must_use = "a search dropped unsettled is charged as a vain one"]
pub struct Search<'a> {
    guard: &'a MissGuard,
    client: Option<IpAddr>,
    hash: Hash,
    settled: bool,
}

impl Search<'_> {
    /// It found a holder, or never ran: nothing to charge.
    pub fn free(mut self) {
        self.settled = true;
    }

    /// It found nobody: the id answers 404 without a search for [`NEGATIVE_TTL`], and the
    /// client is charged.
    pub fn missed(mut self) {
        self.settled = true;
        let now = Instant::now();
        self.guard.remember(self.hash, now);
        self.guard.charge(self.client, now);
    }
}

impl Drop for Search<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.guard.charge(self.client, Instant::now());
        }
    }
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let earned = now.duration_since(self.at).as_secs_f64() * SEARCHES_PER_SECOND;
        self.tokens = (self.tokens + earned).min(SEARCH_BURST);
        self.at = now;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section leaves the map consistent: a poisoned lock still guards one.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Drops the oldest eighth of `map`, so a full map is not scanned on every insert.
fn evict_oldest<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    at: impl Fn(&V) -> Instant,
) {
    let mut ages: Vec<(Instant, K)> = map.iter().map(|(k, v)| (at(v), *k)).collect();
    ages.sort_unstable_by_key(|(t, _)| *t);
    for (_, k) in ages.into_iter().take(map.len() / 8 + 1) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_is_remembered_and_a_client_has_a_budget() {
        let g = MissGuard::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap_or_else(|e| panic!("{e}"));
        let other: IpAddr = "192.0.2.8".parse().unwrap_or_else(|e| panic!("{e}"));
        let h = [1u8; 32];
        g.admit(Some(ip), &h)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .missed();
        assert_eq!(
            g.admit(Some(other), &h).err(),
            Some(Refused::RecentlyMissing)
        );
        // Searches that find something cost nothing; vain ones spend the burst, then the
        // client is refused with a retry hint, alone.
        for i in 0..1000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            g.admit(Some(ip), &id)
                .unwrap_or_else(|e| panic!("found ones are free: {e:?}"))
                .free();
        }
        let mut vain: u32 = 1;
        let refused = loop {
            let mut id = [0xffu8; 32];
            id[..4].copy_from_slice(&vain.to_le_bytes());
            match g.admit(Some(ip), &id) {
                Ok(search) => {
                    search.missed();
                    vain += 1;
                }
                Err(r) => break r,
            }
            assert!(vain < 1000, "never refused");
        };
        assert!(vain >= SEARCH_BURST as u32, "{vain}");
        assert_eq!(refused, Refused::OverBudget { retry_after: 1 });
        assert!(g.admit(Some(other), &[9u8; 32]).is_ok());
        // Refusals cost nothing: asked again and again while over budget, the client is
        // let search again once the budget earned a token back (1/50 s).
        for _ in 0..1000 {
            let _ = g.admit(Some(ip), &[8u8; 32]).map(Search::free);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            g.admit(Some(ip), &[8u8; 32]).is_ok(),
            "refusals were charged as searches"
        );
    }

    /// A search that ran out of time, or whose client hung up mid-search, is charged (it
    /// held the mesh's probes) but not remembered (its holders may answer a moment later).
    #[test]
    fn a_search_left_unsettled_is_charged_but_not_remembered() {
        let g = MissGuard::default();
        let ip: IpAddr = "192.0.2.9".parse().unwrap_or_else(|e| panic!("{e}"));
        let h = [3u8; 32];
        let mut unsettled = 0u32;
        let refused = loop {
            match g.admit(Some(ip), &h) {
                // Timed out, or the handler dropped it.
                Ok(search) => {
                    drop(search);
                    unsettled += 1;
                }
                Err(r) => break r,
            }
            assert!(unsettled < 1000, "never refused");
        };
        assert!(unsettled >= SEARCH_BURST as u32, "{unsettled}");
        assert!(
            matches!(refused, Refused::OverBudget { .. }),
            "the same id, searched again each time: {refused:?}"
        );
        assert!(g.admit(None, &h).is_ok(), "nobody remembers it missing");
    }
}
