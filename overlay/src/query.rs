//! Queries: the lookups a [`Dht`](crate::Dht) runs, their phases, results and statistics.
//!
//! A query is a closest-peers walk, followed for announcements by a round of ADD_PROVIDER
//! requests. Each phase is a variant named by what it waits for, and a transition consumes
//! the old phase (rustls's `Expect*` states), so a finished walk cannot be walked again.

use std::time::Duration;

use crate::closest::ClosestPeersIter;
use crate::key::Key;
use crate::time::Instant;

/// Names one query for the lifetime of its [`Dht`](crate::Dht).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

/// Why a query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// The k closest nodes to a key, for the application.
    FindNode,
    /// Providers of a key; finishes early once `wanted` are known.
    GetProviders {
        /// Providers to find before finishing early.
        wanted: usize,
    },
    /// Our own id, to join the network.
    Join,
    /// A random key in a stale bucket.
    Refresh,
    /// Announce ourselves as a provider of a key to its k closest nodes.
    Provide,
}

/// What a finished query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult<P> {
    /// FIND_NODE, join and refresh lookups: the closest peers that answered.
    FindNode {
        /// Closest first, at most k.
        closest: Vec<P>,
    },
    /// GET_PROVIDERS: providers found, and the closest peers that answered.
    GetProviders {
        /// Distinct providers, in the order they were learned; at most
        /// `PROVIDERS_PER_WALK_MAX`, past which a nearer one replaces the farthest.
        providers: Vec<P>,
        /// Closest first, at most k.
        closest: Vec<P>,
    },
    /// An announcement: how many of the closest nodes stored our record.
    Provided {
        /// Nodes that acknowledged the record.
        acked: usize,
        /// The nodes asked.
        closest: Vec<P>,
    },
}

/// Per-lookup statistics (docs/DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryStats {
    /// What the query was for.
    pub kind: QueryKind,
    /// The key looked up.
    pub target: Key,
    /// Hops to the closest node of the result (0 if it was in our table).
    pub hops: u32,
    /// Requests sent, announcements included.
    pub rpcs: u32,
    /// Requests that failed, or passed their soft timeout (the walk stopped waiting for
    /// them, even if they answered later), each counted once.
    pub timeouts: u32,
    /// From start to finish.
    pub duration: Duration,
}

/// What a query waits for.
#[derive(Debug)]
pub(crate) enum Phase<P> {
    /// Answers to the closest-peers walk.
    AwaitingPeers(ClosestPeersIter<P>),
    /// Acknowledgements of ADD_PROVIDER from the closest nodes.
    AwaitingAcks {
        closest: Vec<P>,
        pending: usize,
        acked: usize,
        hops: u32,
        rpcs: u32,
        failures: u32,
    },
}

/// A running query.
#[derive(Debug)]
pub(crate) struct Query<P> {
    pub kind: QueryKind,
    pub target: Key,
    pub started: Instant,
    /// When it finishes with what it has, if it has not finished before.
    pub deadline: Instant,
    /// Providers found so far (GET_PROVIDERS only), deduplicated by key.
    pub providers: Vec<P>,
    /// Who reported each of `providers` (the same index): the walk keeps the records of
    /// the reporters nearest the key (`dht::keep_provider`).
    pub reporters: Vec<Key>,
    /// `None` only transiently, while a transition takes the old phase.
    pub phase: Option<Phase<P>>,
    /// An announcement the schedule started (a republish, or `Dht::provide_paced`'s), one
    /// of the `announcements_max` running at once; a command's (a PUT's) is not.
    pub scheduled: bool,
}

impl<P> Query<P> {
    /// The statistics of this query, finished at `now`.
    pub(crate) fn stats(&self, now: Instant, hops: u32, rpcs: u32, timeouts: u32) -> QueryStats {
        QueryStats {
            kind: self.kind,
            target: self.target,
            hops,
            rpcs,
            timeouts,
            duration: now - self.started,
        }
    }
}
