//! Objects across the mesh: the write path (store, replicate to the RF closest, acknowledge
//! at W durable copies), the read path (local, else find holders and fetch verified), and
//! repair (carry out the overlay planner's transfers).
//!
//! Trust: what a peer says is a claim until checked. A holder counts toward a write's
//! quorum only after it answered `Stored` (after its fsync) or served a chunk we picked
//! that verified; a remote object's size comes from a verified final chunk, never from a
//! peer's word; the planner learns of a holder only from verified bytes. Pushes we receive
//! are authorized in `serve` (a capability, or the overlay's admission rule).
//!
//! Layout:
//! - `serve`: answering app protocol 2 (GET slice, TAIL, HAS, PUT replica).
//! - `fetch`: verified fetch with failover between holders; proofs; replica push.
//! - `pieces`: blocking file I/O and hashing driven from async code, a piece per trip.
//! - `tee`: replica pushes that run beside a declared id's upload.

mod fetch;
mod pace;
mod pieces;
mod repair_now;
mod serve;
mod tee;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use overlay::{
    FetchBackEvent, Key, Locate, LocateEnd, LocateStep, PlaceEnd, PlacementCut, PlanEvent,
    ProbeAnswer, QueryResult, TransferFault, TransferOutcome, WalkEnd, Write,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use wire::NodeId;
use wire::Status;
use wire::object::ByteRange;

pub use repair_now::{REPAIR_ALL_MAX, RepairError, RepairReport, TargetReport};

use crate::dht::{Clock, DhtError, DhtHandle, NetPeer};
use crate::quota::Quotas;
use crate::store::{Hash, Store};
use crate::transport::Transport;
pub(crate) use fetch::Placed;
pub use fetch::{FetchError, Fetched, Tail};
pub(crate) use pieces::{Ingest, PieceReader};
pub use serve::serve_object;
pub(crate) use tee::EarlyPushes;

/// Limits and replication parameters of the object layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLimits {
    /// Largest object accepted (1 GiB).
    pub object_max: u64,
    /// Copies each object should have (3).
    pub rf: usize,
    /// Durable copies before a PUT is acknowledged, when peers exist (2; 1 on a node that
    /// never had a peer).
    pub w: usize,
    /// Longest silence from a peer in the middle of a transfer (10 s).
    pub io_timeout: Duration,
    /// How long a GET searches and a PUT waits (`overlay::ObjectTimings`, which simnet
    /// runs with too).
    pub timings: overlay::ObjectTimings,
    /// Slowest average rate an inbound transfer may keep up once `transfer_rate_grace` has
    /// passed (64 KiB/s): a transfer is bounded by its progress, never by a fixed time.
    pub transfer_min_rate: u64,
    /// How long a transfer may run before `transfer_min_rate` applies (10 s).
    pub transfer_rate_grace: Duration,
    /// Writes (gateway PUTs) this node runs at once (256), each from its stored body
    /// until every copy's placement has reported: a write goes on after its answer and
    /// after its client hangs up, so without this bound a client could start background
    /// work faster than slow targets end it. Past it a PUT is answered 503 `writes_busy`
    /// (before its body is read when it can be; after, the copy stays for repair). One
    /// principal (a token's tenant, else the token) runs at most a quarter of them
    /// ([`Objects::writes_per_principal_max`]).
    pub writes_max: usize,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        ObjectLimits {
            object_max: 1 << 30,
            rf: 3,
            w: 2,
            io_timeout: Duration::from_secs(10),
            timings: overlay::ObjectTimings::default(),
            transfer_min_rate: 64 << 10,
            transfer_rate_grace: Duration::from_secs(10),
            writes_max: 256,
        }
    }
}

impl ObjectLimits {
    /// How long a PUT of `size` bytes waits for its quorum.
    pub fn put_wait(&self, size: u64) -> Duration {
        self.timings.put_wait(size)
    }
}

/// Counters of the object layer, readable without a metrics recorder (status page, tests).
#[derive(Debug, Default)]
pub struct ObjectStats {
    /// Fetches where a holder sent bytes that failed verification.
    pub integrity_fail_peer: AtomicU64,
    /// Replica pushes whose bytes did not hash to the announced id.
    pub integrity_fail_push: AtomicU64,
    /// Holders whose proof (a size or a chunk we asked for) did not verify.
    pub holders_lied: AtomicU64,
    /// Fetches left for the next holder because the holder moved less than the minimum
    /// rate.
    pub holders_too_slow: AtomicU64,
    /// Fetches that stopped with holders left untried, `ObjectTimings::failover_idle`
    /// having passed without a verified byte.
    pub failovers_given_up: AtomicU64,
    /// Placements of a write (or an operator's repair) cut at twice its wait, their target
    /// still taking the copy in.
    pub placements_cut: AtomicU64,
    /// Repair transfers that moved bytes.
    pub repair_transfers: AtomicU64,
    /// Repair transfers cut at `ObjectTimings::repair_cut`, their target still taking the
    /// copy in (or proving it).
    pub repair_cut: AtomicU64,
    /// Bytes moved by repair.
    pub repair_bytes: AtomicU64,
    /// Replica pushes we refused (no capability and not justified, over budget, a second
    /// concurrent transfer of one object, too slow).
    pub pushes_refused: AtomicU64,
    /// Replica pushes we stored.
    pub pushes_stored: AtomicU64,
}

/// The object layer of one node. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    /// Counters.
    pub stats: Arc<ObjectStats>,
    /// The local store.
    pub store: Store,
    pub(crate) transport: Transport,
    pub(crate) dht: DhtHandle,
    /// Limits and replication parameters.
    pub limits: Arc<ObjectLimits>,
    /// The keys OAP/1 capabilities on replica pushes are checked against.
    pub(crate) keyring: crate::keyring::Keyring,
    /// Tenant write quotas, for writes made with a token that names a tenant.
    pub quotas: Quotas,
    /// Objects being received right now: a second concurrent push of one is refused.
    receiving: Arc<Mutex<BTreeSet<Hash>>>,
    /// One permit per write running (`ObjectLimits::writes_max`).
    writes: Arc<tokio::sync::Semaphore>,
    /// One permit per upload whose copies are pushed beside it (`tee`).
    streams: Arc<tokio::sync::Semaphore>,
    /// One permit per upload being committed ([`Objects::commit_permit`]).
    commits: Arc<tokio::sync::Semaphore>,
    /// Writes admitted per principal (bodies being received and writes running), each at
    /// most [`Objects::writes_per_principal_max`].
    principal_writes: Arc<Mutex<HashMap<Principal, usize>>>,
}

/// Whom a gateway write counts against for its share of the write slots: a token's tenant,
/// else the token (`caps::Grant::principal`, hashed). Writes the operator opened have none.
pub type Principal = [u8; 32];

/// Why no write slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritesBusy {
    /// The node runs `writes_max` writes.
    Node,
    /// The writer's principal runs its share of them.
    Principal,
    /// The node commits as many uploads as it may ([`Objects::commit_permit`]).
    Commits,
}

/// One of the node's writes in flight ([`ObjectLimits::writes_max`]): taken once a PUT's
/// body is stored (a client slow to send it holds none), handed to [`Objects::replicate`],
/// and given back when the last of the write's placements has reported, whether or not
/// its client is still there.
#[derive(Debug)]
pub struct WriteSlot {
    // Given back in the reverse order of taking: the principal's count, then the permit.
    _share: Option<PrincipalShare>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// A write admitted before its body was read ([`Objects::admit_write`]): it counts toward
/// its principal's share until it ends or gets its [`WriteSlot`].
#[derive(Debug)]
pub struct Admitted {
    share: Option<PrincipalShare>,
}

/// One of a principal's writes in flight, counted off when it ends.
#[derive(Debug)]
struct PrincipalShare {
    running: Arc<Mutex<HashMap<Principal, usize>>>,
    principal: Principal,
}

impl Drop for PrincipalShare {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = running.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.principal);
            }
        }
    }
}

/// Where a GET found its bytes.
#[derive(Debug)]
pub enum Located {
    /// In the local store.
    Local {
        /// Object size.
        size: u64,
    },
    /// At remote holders: the first proved the size with a verified final group.
    Remote {
        /// Object size, verified.
        size: u64,
        /// The order to fetch from: the holder that proved it, then candidates that had
        /// not answered when it did (each fetch verifies every byte it reads).
        holders: Vec<NetPeer>,
        /// The whole object, verified, when it fits in the final group its TAIL carried
        /// (16 KiB or less): nothing more to fetch.
        whole: Option<Bytes>,
    },
}

/// Why a GET found nothing to serve.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// A search ran and nobody holds it.
    #[error("no holder found")]
    NotFound,
    /// Holders may exist but did not answer in time, or the search did not finish.
    #[error("holders did not answer in time")]
    Timeout,
    /// The search could not start: too many running, or the DHT is down.
    #[error("the search could not run: {0}")]
    Overloaded(String),
    /// This node has lost every peer: there is nobody to ask.
    #[error("this node has no peers to search")]
    NoPeers,
}

/// What a search's end tells the GET. `tail` is the verified final group of the holder
/// that proved the object; `refused`, why a walk could not start.
fn located(
    end: LocateEnd<NetPeer>,
    tail: Option<Tail>,
    refused: Option<String>,
    store: &Store,
    hash: Hash,
) -> Result<Located, LocateError> {
    match (end, tail) {
        (LocateEnd::Found { holders, .. }, Some(Tail { size, whole })) => {
            if let Some(w) = &whole {
                // Verified against its id: as good as a local small object for reads.
                store.remember_verified(hash, w.clone());
            }
            Ok(Located::Remote {
                size,
                holders,
                whole,
            })
        }
        // Found without a tail cannot happen: a holder is judged by its verified tail.
        (LocateEnd::Found { .. } | LocateEnd::NotFound, _) => Err(LocateError::NotFound),
        (LocateEnd::Unfinished, _) => Err(LocateError::Timeout),
        (LocateEnd::NoPeers, _) => Err(LocateError::NoPeers),
        (LocateEnd::NotRun, _) => Err(LocateError::Overloaded(refused.unwrap_or_default())),
    }
}

/// What a write achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicated {
    /// Durable copies confirmed when the write returned (ours included).
    pub copies: usize,
    /// Copies the write needed (W; 1 on a node that never had a peer).
    pub want: usize,
}

/// Marks an object as being received until dropped.
pub(crate) struct Receiving {
    set: Arc<Mutex<BTreeSet<Hash>>>,
    hash: Hash,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.hash);
    }
}

/// Stored objects handed to the DHT in one command at start-up: a million objects are
/// ~4,000 short turns of its loop rather than a million.
const HAND_OVER_BATCH: usize = 256;

impl Objects {
    /// The object layer over a store, transport and DHT; replica pushes with a capability
    /// are checked against `keyring`, and tenants' writes against `quotas`.
    pub fn new(
        store: Store,
        transport: Transport,
        dht: DhtHandle,
        limits: ObjectLimits,
        keyring: crate::keyring::Keyring,
        quotas: Quotas,
    ) -> Objects {
        let writes = Arc::new(tokio::sync::Semaphore::new(limits.writes_max));
        let commits = Arc::new(tokio::sync::Semaphore::new(limits.writes_max * 2));
        Objects {
            store,
            transport,
            dht,
            limits: Arc::new(limits),
            stats: Arc::default(),
            keyring,
            quotas,
            receiving: Arc::default(),
            writes,
            streams: Arc::new(tokio::sync::Semaphore::new(tee::STREAMED_WRITES_MAX)),
            commits,
            principal_writes: Arc::default(),
        }
    }

    /// Admits one more write of `principal`'s (none: writes the operator opened) before its
    /// body is read, or says why not: `writes_max` writes are running (nothing is reserved
    /// for that: a client slow to send its body holds no slot of the node's), every commit
    /// permit is taken, or the principal runs its share of them, bodies still being
    /// received included (a client trickling bodies holds only its own share).
    pub fn admit_write(&self, principal: Option<&Principal>) -> Result<Admitted, WritesBusy> {
        if self.writes.available_permits() == 0 {
            return Err(WritesBusy::Node);
        }
        // Refused now rather than after a body it could not commit.
        if self.commits.available_permits() == 0 {
            return Err(WritesBusy::Commits);
        }
        let share = match principal {
            Some(p) => {
                let mut running = self
                    .principal_writes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let n = running.entry(*p).or_insert(0);
                if *n >= self.writes_per_principal_max() {
                    return Err(WritesBusy::Principal);
                }
                *n += 1;
                Some(PrincipalShare {
                    running: self.principal_writes.clone(),
                    principal: *p,
                })
            }
            None => None,
        };
        Ok(Admitted { share })
    }

    /// The slot of an admitted write whose body is stored, or `Node` when `writes_max`
    /// writes took them all meanwhile.
    pub fn slot_for(&self, admitted: Admitted) -> Result<WriteSlot, WritesBusy> {
        let permit = self
            .writes
            .clone()
            .try_acquire_owned()
            .map_err(|_| WritesBusy::Node)?;
        Ok(WriteSlot {
            _share: admitted.share,
            _permit: permit,
        })
    }

    /// A slot for one more write of `principal`'s at once ([`admit_write`](Self::admit_write),
    /// then [`slot_for`](Self::slot_for)).
    pub fn write_slot(&self, principal: Option<&Principal>) -> Result<WriteSlot, WritesBusy> {
        self.slot_for(self.admit_write(principal)?)
    }

    /// The most writes one principal may run at once: a quarter of `writes_max` (at least
    /// one), so a single token holder writing to slow targets cannot take every slot.
    pub fn writes_per_principal_max(&self) -> usize {
        (self.limits.writes_max / 4).max(1)
    }

    /// A permit to commit one upload whose body is in (the hash check, the fsync, and the
    /// write up to its answer), if one is free. A commit runs on when its client hangs up,
    /// so clients that hang up once their bodies are sent could otherwise pile up commits
    /// nobody waits for: at most twice `writes_max` run at once (at most `writes_max` of
    /// them hold a write slot, the others are hashing and syncing). It is not waited for:
    /// a streamed upload's pushes would take the wait for a paused client and reset their
    /// copies, and admission already refuses a body when none is free.
    pub(crate) fn commit_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.commits.clone().try_acquire_owned().ok()
    }

    /// Uploads being committed now (their commit permits taken), for the gauge.
    pub fn commits_in_flight(&self) -> usize {
        (self.limits.writes_max * 2).saturating_sub(self.commits.available_permits())
    }

    /// Uploads whose copies are streamed beside them now, detached sets included, for the
    /// gauge.
    pub fn uploads_streaming(&self) -> usize {
        tee::STREAMED_WRITES_MAX.saturating_sub(self.streams.available_permits())
    }

    /// Writes running now (their slots taken), for the gauge.
    pub fn writes_in_flight(&self) -> usize {
        self.limits
            .writes_max
            .saturating_sub(self.writes.available_permits())
    }

    /// Whether an inbound transfer of `hash` is running (a second one would be refused as
    /// `push_in_progress`); for tests that need a target busy.
    #[doc(hidden)]
    pub fn is_receiving(&self, hash: &Hash) -> bool {
        self.receiving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(hash)
    }

    /// Claims `hash` for one inbound transfer; `None` while another is running.
    pub(crate) fn start_receiving(&self, hash: Hash) -> Option<Receiving> {
        let mut set = self
            .receiving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        set.insert(hash).then(|| Receiving {
            set: self.receiving.clone(),
            hash,
        })
    }

    /// Tells the DHT and the planner that we hold `hash` (after any durable write).
    pub async fn announce(&self, hash: Hash, size: u64) {
        let _ = self.dht.object_added(Key(hash), size).await;
        let dht = self.dht.clone();
        tokio::spawn(async move {
            if let Err(e) = dht.provide(Key(hash)).await {
                tracing::debug!(error = %e, "provider announcement failed");
            }
        });
    }

    /// Hands every stored object to the DHT in the background, [`HAND_OVER_BATCH`] at a
    /// time: the planner plans its copies, and the DHT announces it a few at a time
    /// (`overlay::Config::announcements_max`), so a large store neither delays start-up nor
    /// bursts lookups at the mesh.
    pub fn announce_stored(&self) -> tokio::task::JoinHandle<()> {
        let objects = self.clone();
        tokio::spawn(async move {
            let stored = objects.store.list();
            for batch in stored.chunks(HAND_OVER_BATCH) {
                // Still held: one deleted since the list was taken is not planned again.
                let batch = batch
                    .iter()
                    .filter(|(h, _)| objects.store.size(h).is_some())
                    .map(|(h, size)| (Key(*h), *size))
                    .collect();
                if objects.dht.objects_held_at_start(batch).await.is_err() {
                    return; // the DHT stopped: the node is shutting down
                }
            }
        })
    }

    /// A peer pushed us a replica: hold it, and remember that the pusher holds it too (its
    /// bytes verified as we stored them).
    pub(crate) async fn stored_replica(&self, hash: Hash, size: u64, from: NodeId) {
        self.announce(hash, size).await;
        let _ = self
            .dht
            .holder_confirmed(Key(hash), Key::for_node(&from))
            .await;
    }

    /// The RF closest nodes to `hash` other than us, by a lookup (falling back to our
    /// table), and whether we are one of the RF (`overlay::placement_targets`).
    async fn targets(&self, hash: Hash) -> Result<(Vec<NetPeer>, bool), DhtError> {
        self.closest_set(Key(hash), self.limits.rf).await
    }

    /// The `n` closest nodes to `key` (`n` at least 1), by a lookup (or our table when
    /// none can start): the peers among them, nearest first, and whether we are one of them (then
    /// the peers are `n - 1`; the rule is `overlay::placement_targets`). The object and
    /// mailbox layers place copies with it. A stopped DHT driver is an error, not an empty
    /// set: an empty set would say we are among the closest.
    pub(crate) async fn closest_set(
        &self,
        key: Key,
        n: usize,
    ) -> Result<(Vec<NetPeer>, bool), DhtError> {
        let peers = self.dht.find_placement(key, n).await?;
        Ok(overlay::placement_targets(
            self.dht.local().key,
            key,
            peers,
            n,
        ))
    }

    /// How many durable copies a write needs (`overlay::write_quorum`'s rule).
    pub fn write_quorum(&self) -> usize {
        overlay::write_quorum(self.limits.w, self.limits.rf, self.dht.status().peers_seen)
    }

    /// After a local durable write: place copies at the RF closest and return once `want`
    /// copies in all are durable (ours counts), every placement has finished, or the
    /// write's wait ran out; `overlay::Write` decides each of these, and when a target busy
    /// with another pusher's copy is asked again. A copy counts when its holder answered
    /// `Stored` after its fsync, or proved it already held the object with a verified read;
    /// a peer's word alone does not count. Placements still running go on in the background
    /// and report to the planner, which also repairs what the write could not place.
    ///
    /// The write runs on a task of its own: a client that hangs up (or a server that drops
    /// the handler) must not cut it short, or the planner never hears how the copies it
    /// registered ended and never plans that object at those targets again. The task holds
    /// `slot` to its end, so the writes running in the background stay counted.
    pub async fn replicate(&self, hash: Hash, size: u64, slot: WriteSlot) -> Replicated {
        self.replicate_with(hash, size, slot, None).await
    }

    /// [`replicate`](Self::replicate) with the pushes a declared id's upload started beside
    /// its body ([`start_streamed`](Self::start_streamed)): their targets are the write's,
    /// and each stands for the first push to its target.
    pub(crate) async fn replicate_with(
        &self,
        hash: Hash,
        size: u64,
        slot: WriteSlot,
        early: Option<EarlyPushes>,
    ) -> Replicated {
        let (answer_tx, answer) = oneshot::channel();
        let objects = self.clone();
        tokio::spawn(async move {
            objects.run_write(hash, size, early, answer_tx).await;
            drop(slot);
        });
        answer.await.unwrap_or(Replicated {
            copies: 1,
            want: self.write_quorum(),
        })
    }

    async fn run_write(
        self,
        hash: Hash,
        size: u64,
        early: Option<EarlyPushes>,
        answer_tx: oneshot::Sender<Replicated>,
    ) {
        let want = self.write_quorum();
        // The lookup runs again when the one before the body found nobody.
        // Taking the pushes over drops the upload's share of its streaming permit.
        let (targets, streamed) = match early {
            Some(early) if !early.targets.is_empty() => (early.targets, early.pushes),
            // A stopped driver gives no targets: the write answers short of W.
            other => {
                drop(other);
                (
                    self.targets(hash).await.map(|t| t.0).unwrap_or_default(),
                    BTreeMap::new(),
                )
            }
        };
        let clock = Clock::new();
        let mut write = Write::new(clock.now(), targets, want, self.limits.put_wait(size));
        // The write's pushes are registered with the planner before it hears of the object,
        // or its own repair pushes to the same targets race ours (each receiver takes one
        // push of an object at a time).
        let mut run = WriteRun::registered(self, hash, size, clock, &write, streamed, true).await;
        run.objects.announce(hash, size).await;
        let mut answer_tx = Some(answer_tx);
        loop {
            run.start_placements(&mut write, clock.now());
            if let Some(answer) = write.answer(clock.now())
                && let Some(tx) = answer_tx.take()
            {
                let _ = tx.send(Replicated {
                    copies: answer.copies,
                    want: answer.want,
                });
            }
            if write.finished() {
                break;
            }
            run.next_report(&mut write).await;
        }
    }

    /// Finds another node that holds `hash`: providers and the closest nodes, each asked
    /// for the object's final chunk at once (TAIL), within the search timeout; the first
    /// answer that verifies ends the search (a slow or paused holder does not hold up a
    /// GET the others can serve). A holder whose answer does not verify is counted and
    /// skipped; the others are still tried.
    pub async fn find_holders(&self, hash: Hash) -> Result<Located, LocateError> {
        let started = std::time::Instant::now();
        let result = self.locate(hash).await;
        let outcome = match &result {
            Ok(_) => "found",
            Err(LocateError::NotFound) => "not_found",
            Err(LocateError::Timeout) => "timeout",
            Err(LocateError::Overloaded(_) | LocateError::NoPeers) => "not_run",
        };
        metrics::histogram!("object_locate_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// [`find_holders`](Self::find_holders) without its timing: runs `overlay::Locate`,
    /// which decides the passes. A GET needs one holder that proves the object, so the
    /// first pass asks the DHT for one provider and stops at the first verified answer;
    /// only when records named providers and none of the candidates could prove the object
    /// (a walk cut short by its first record, a stale or made-up one) does a second pass
    /// walk to the key's closest nodes whatever records it meets, within the same deadline.
    /// Each pass asks every candidate at once for the object's final group, each bounded by
    /// the probe timeout: a dead holder (its provider record outlives it) costs one probe
    /// timeout, not the whole search.
    async fn locate(&self, hash: Hash) -> Result<Located, LocateError> {
        let clock = Clock::new();
        let mut locate = Locate::new(
            self.dht.local().key,
            self.limits.rf,
            1,
            clock.now(),
            self.limits.timings.search_timeout,
        );
        let deadline = clock.deadline(locate.deadline());
        let mut refused = None;
        let mut tail = None;
        loop {
            match locate.poll(clock.now()) {
                LocateStep::Walk { wanted } => {
                    let (walk, why, had_peers) = self.walk(hash, wanted, deadline).await;
                    refused = why.or(refused);
                    locate.handle_walk(walk, had_peers);
                }
                LocateStep::Probe(candidates) => {
                    tail = self
                        .probe_all(hash, candidates, &mut locate, deadline)
                        .await
                        .or(tail);
                }
                // Each step above reports before it returns, so nothing is out to wait for;
                // were this reached, nothing was proven.
                LocateStep::Wait => return Err(LocateError::Timeout),
                LocateStep::Done(end) => return located(end, tail, refused, &self.store, hash),
            }
        }
    }

    /// One provider walk for `wanted` providers, cut at `deadline`: how it ended, the
    /// reason of ours it could not start (if so), and whether the table ever held a peer.
    async fn walk(
        &self,
        hash: Hash,
        wanted: usize,
        deadline: tokio::time::Instant,
    ) -> (WalkEnd<NetPeer>, Option<String>, bool) {
        let key = Key(hash);
        let had_peers = self.dht.status().peers_seen;
        let lookup = tokio::time::timeout_at(deadline, self.dht.get_providers(key, wanted)).await;
        let walk = match lookup {
            Ok(Ok(out)) => {
                let (providers, closest) = match out.result {
                    QueryResult::GetProviders { providers, closest } => (providers, closest),
                    _ => (Vec::new(), Vec::new()),
                };
                let rpcs = out.stats.rpcs;
                WalkEnd::Finished {
                    providers,
                    closest,
                    rpcs,
                }
            }
            Ok(Err(DhtError::Command(overlay::CommandError::NoPeers))) => WalkEnd::NoPeers,
            Ok(Err(e)) => return (WalkEnd::Refused, Some(e.to_string()), had_peers),
            Err(_) => WalkEnd::TimedOut,
        };
        (walk, None, had_peers)
    }

    /// Asks every candidate at once for the object's final group, each within the probe
    /// timeout, and reports each answer to `locate` until its pass is over or `deadline`
    /// passed. Returns the verified tail of the holder that proved the object, if one did.
    async fn probe_all(
        &self,
        hash: Hash,
        candidates: Vec<NetPeer>,
        locate: &mut Locate<NetPeer>,
        deadline: tokio::time::Instant,
    ) -> Option<Tail> {
        let mut probes = JoinSet::new();
        // Whose probe each task is, so a probe that panicked still settles its candidate
        // (as silent): unsettled, the search would end as NotFound, not Unfinished.
        let mut probing = HashMap::new();
        for c in candidates {
            let objects = self.clone();
            let t = self.limits.timings.probe_timeout;
            let key = c.key;
            let task = probes.spawn(async move {
                let answer = tokio::time::timeout(t, objects.probe_tail(&c, hash)).await;
                (c, answer)
            });
            probing.insert(task.id(), key);
        }
        let mut tail = None;
        loop {
            let (c, answer) = match tokio::time::timeout_at(deadline, probes.join_next()).await {
                Ok(Some(Ok(n))) => n,
                Ok(Some(Err(e))) => match probing.get(&e.id()) {
                    Some(key) if locate.handle_answer(key, ProbeAnswer::Silent) => break,
                    _ => continue,
                },
                Ok(None) => break,
                Err(_) => {
                    locate.handle_deadline();
                    break;
                }
            };
            let judged = match answer {
                Ok(Ok(t)) => {
                    tail = Some(t);
                    ProbeAnswer::Holds
                }
                Ok(Err(FetchError::Status(Status::NotFound))) => ProbeAnswer::Lacks,
                Ok(Err(FetchError::Status(_))) => ProbeAnswer::Declined,
                Ok(Err(
                    e @ (FetchError::Integrity
                    | FetchError::Message(_)
                    | FetchError::ProofFailed
                    | FetchError::SizeDisagrees { .. }),
                )) => {
                    self.note_failure(&c, &e);
                    ProbeAnswer::Invalid
                }
                Ok(Err(_)) | Err(_) => ProbeAnswer::Silent,
            };
            if locate.handle_answer(&c.key, judged) {
                break;
            }
        }
        probes.abort_all();
        tail
    }

    /// Streams `range` of a remote object, verified, into a channel the caller reads.
    pub fn stream_remote(
        &self,
        holders: Vec<NetPeer>,
        hash: Hash,
        range: ByteRange,
    ) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(2);
        let objects = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let fetched = objects.fetch_failover(&holders, hash, range, tx).await;
            let outcome = match &fetched {
                Ok(Fetched::Whole) => "ok",
                Ok(Fetched::ReaderLeft) => "abandoned",
                Err(_) => "failed",
            };
            metrics::histogram!("object_fetch_duration_seconds", "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            if let Err(e) = fetched {
                tracing::warn!(id = %crate::store::id_string(&hash), error = %e, "remote read failed");
            }
        });
        rx
    }

    /// Streams `range` of a local object, verified piece by piece. Should the local copy
    /// fail midway (corrupt: it is then dropped and counted; or unreadable for a moment),
    /// the stream carries on from the last verified byte with bytes fetched from other
    /// holders, so the reader still gets one correct stream.
    pub fn stream_local(
        &self,
        hash: Hash,
        range: ByteRange,
        piece: usize,
    ) -> mpsc::Receiver<Bytes> {
        let (out, rx) = mpsc::channel(1);
        let objects = self.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            if let Ok(reader) = objects.store.verified_reader(&hash, range.start, range.len) {
                let mut pieces = PieceReader::new(reader, piece);
                while let Some(Ok(b)) = pieces.next().await {
                    sent += b.len() as u64;
                    if out.send(b).await.is_err() {
                        return; // the reader went away
                    }
                }
            }
            if sent == range.len {
                return;
            }
            tracing::warn!(id = %crate::store::id_string(&hash), at = range.start + sent, "local copy failed mid-stream; continuing from the mesh");
            let rest = ByteRange {
                start: range.start + sent,
                len: range.len - sent,
            };
            if let Ok(Located::Remote { holders, .. }) = objects.find_holders(hash).await {
                if let Err(e) = objects.fetch_failover(&holders, hash, rest, out).await {
                    tracing::warn!(id = %crate::store::id_string(&hash), error = %e, "no holder could finish the read");
                }
            }
        });
        rx
    }

    /// Tells the DHT of every object the store drops as corrupt (`Store::watch_dropped`):
    /// its planner stops counting our copy, so the RF closest get a new one, and the node
    /// stops announcing it. Runs until the node stops.
    ///
    /// The other holders counted our copy and will not repair it until their proof of it
    /// lapses (an hour), so we fetch a good one back from them (verified, as every fetch)
    /// on `overlay::FetchBack`'s schedule: when to try again, how many at once, when to
    /// leave a copy to repair.
    pub async fn forget_dropped(self, mut dropped: mpsc::UnboundedReceiver<Hash>) {
        let clock = Clock::new();
        let mut schedule = overlay::FetchBack::new();
        // Owned here, so the fetches back are aborted with this task at shutdown (a pull's
        // blocking write may still finish: it writes a temporary file and renames it).
        let mut pulling: JoinSet<Option<u64>> = JoinSet::new();
        // Which copy each pull is for, so one whose task panicked still frees its place.
        let mut pulls: BTreeMap<tokio::task::Id, Hash> = BTreeMap::new();
        loop {
            let wake = schedule.poll_timeout().map(|t| clock.deadline(t));
            tokio::select! {
                next = dropped.recv() => {
                    let Some(hash) = next else { break };
                    tracing::warn!(id = %crate::store::id_string(&hash), "our copy failed verification and was dropped");
                    // The planner hears of every drop, whether or not we fetch the copy back.
                    let _ = self.dht.object_removed(Key(hash)).await;
                    schedule.handle_dropped(clock.now(), Key(hash));
                }
                Some(done) = pulling.join_next_with_id(), if !pulling.is_empty() => {
                    let (task, size) = match done {
                        Ok((task, size)) => (task, size),
                        Err(e) => {
                            tracing::warn!(error = %e, "a fetch back's task failed");
                            (e.id(), None)
                        }
                    };
                    if let Some(hash) = pulls.remove(&task)
                        && schedule.handle_pulled(clock.now(), Key(hash), size.is_some())
                        && let Some(size) = size
                    {
                        self.announce(hash, size).await;
                    }
                }
                () = async {
                    match wake {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => schedule.handle_timeout(clock.now()),
            }
            while let Some(ev) = schedule.poll_event() {
                match ev {
                    FetchBackEvent::Pull { key, attempt } => {
                        if attempt == 0 {
                            tracing::info!(id = %crate::store::id_string(&key.0), "fetching our dropped copy back");
                        }
                        let objects = self.clone();
                        let task =
                            pulling.spawn(async move { objects.fetch_back(key.0, attempt).await });
                        pulls.insert(task.id(), key.0);
                    }
                    FetchBackEvent::GaveUp { key } => {
                        metrics::counter!("copies_fetched_back_total", "outcome" => "gave_up")
                            .increment(1);
                        tracing::warn!(id = %crate::store::id_string(&key.0), "gave up fetching our copy back; the other holders' repair restores it");
                    }
                    FetchBackEvent::NotTried { key } => {
                        // A disk that rots this many at once is one to replace; the other
                        // holders' repair restores these copies when their proof of ours lapses.
                        metrics::counter!("copies_fetched_back_total", "outcome" => "not_tried")
                            .increment(1);
                        tracing::warn!(id = %crate::store::id_string(&key.0), "too many copies to fetch back; leaving this one to repair");
                    }
                }
            }
        }
    }

    /// One try at pulling our dropped copy of `hash` back; its size once it is stored.
    async fn fetch_back(&self, hash: Hash, attempt: u8) -> Option<u64> {
        let id = crate::store::id_string(&hash);
        match self.pull(hash).await {
            Ok(size) => {
                tracing::info!(%id, size, attempt, "a good copy fetched back");
                metrics::counter!("copies_fetched_back_total", "outcome" => "ok").increment(1);
                Some(size)
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, attempt, "fetching our copy back failed");
                metrics::counter!("copies_fetched_back_total", "outcome" => "failed").increment(1);
                None
            }
        }
    }

    /// Fetches `hash` whole from the mesh into our store, verified; its size.
    async fn pull(&self, hash: Hash) -> Result<u64, PullError> {
        let (size, holders, whole) = match self.find_holders(hash).await? {
            Located::Remote {
                size,
                holders,
                whole,
            } => (size, holders, whole),
            Located::Local { size } => return Ok(size), // stored again meanwhile
        };
        let store = self.store.clone();
        if let Some(bytes) = whole {
            tokio::task::spawn_blocking(move || store.put(&bytes, Some(&hash)))
                .await
                .map_err(|e| PullError::Local(e.to_string()))??;
            return Ok(size);
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let write = tokio::task::spawn_blocking(move || {
            let mut w = store.writer(size)?;
            while let Some(piece) = rx.blocking_recv() {
                w.write(&piece)?;
            }
            w.finish(Some(&hash))
        });
        let range = ByteRange {
            start: 0,
            len: size,
        };
        let fetched = self.fetch_failover(&holders, hash, range, tx).await;
        let written = write.await.map_err(|e| PullError::Local(e.to_string()))?;
        let fetched = fetched?;
        written?;
        match fetched {
            Fetched::Whole => Ok(size),
            // Our writer stopped reading: it failed, and said so above, or cannot have.
            Fetched::ReaderLeft => Err(PullError::Local("the copy's writer stopped".into())),
        }
    }

    /// Carries out the planner's work: transfers (prove, push if we lead), releases of
    /// surplus copies.
    pub async fn run_repair(self, mut plans: mpsc::Receiver<PlanEvent<NetPeer>>) {
        while let Some(ev) = plans.recv().await {
            match ev {
                PlanEvent::Transfer {
                    id,
                    key,
                    size,
                    to,
                    push,
                } => {
                    let objects = self.clone();
                    tokio::spawn(async move {
                        let cut = objects.limits.timings.repair_cut(size);
                        let placing = objects.place_copy(&to, key.0, size, push, None);
                        let placed = match tokio::time::timeout(cut, placing).await {
                            Ok(placed) => placed,
                            Err(_) => {
                                objects.stats.repair_cut.fetch_add(1, Ordering::Relaxed);
                                metrics::counter!("repair_transfers_total", "outcome" => "cut")
                                    .increment(1);
                                let _ = objects.dht.transfer_done(id, CUT).await;
                                return;
                            }
                        };
                        let label = match (&placed.end, &placed.error) {
                            (PlaceEnd::Verified { moved: true }, _) => "copied",
                            (PlaceEnd::Verified { moved: false }, _) => "already_held",
                            (PlaceEnd::Absent, _) => "absent",
                            (PlaceEnd::Failed(fault), e) => {
                                tracing::debug!(peer = %to.id, ?fault, error = ?e, "repair transfer failed");
                                "failed"
                            }
                        };
                        metrics::counter!("repair_transfers_total", "outcome" => label)
                            .increment(1);
                        // Only bytes that moved count as repair traffic.
                        if let PlaceEnd::Verified { moved: true } = placed.end {
                            metrics::counter!("repair_bytes_total").increment(size);
                            objects
                                .stats
                                .repair_transfers
                                .fetch_add(1, Ordering::Relaxed);
                            objects
                                .stats
                                .repair_bytes
                                .fetch_add(size, Ordering::Relaxed);
                        }
                        let _ = objects.dht.transfer_done(id, placed.end.outcome()).await;
                    });
                }
                PlanEvent::Release { key } => {
                    tracing::debug!(id = %crate::store::id_string(&key.0), "releasing a surplus copy");
                    let store = self.store.clone();
                    let _ = tokio::task::spawn_blocking(move || store.remove(&key.0)).await;
                    let _ = self.dht.object_removed(key).await;
                }
            }
        }
    }
}

/// Why a copy could not be fetched back into our store.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("no holder found: {0}")]
    Locate(#[from] LocateError),
    #[error("fetch: {0}")]
    Fetch(#[from] FetchError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("local: {0}")]
    Local(String),
}

/// What a write's placements tell it.
enum WriteReport {
    /// The peer's copy is durable.
    Durable(Key),
    /// The placement at the peer ended.
    Placed(Key, Placed),
}

/// Where a placement reports its copy durable, the moment it is: a write counts it then,
/// not when the placement's proof is done.
pub(crate) struct DurableTo {
    tx: mpsc::Sender<WriteReport>,
    peer: Key,
}

impl DurableTo {
    async fn report(&self) {
        let _ = self.tx.send(WriteReport::Durable(self.peer)).await;
    }
}

/// The I/O side of one write (or an operator's repair, run as one): starts the placements
/// `overlay::Write` asks for and feeds back what they report.
struct WriteRun {
    objects: Objects,
    hash: Hash,
    size: u64,
    clock: Clock,
    /// The planner's id for each target's transfer, reported once it is over for good.
    planned: BTreeMap<Key, overlay::TransferId>,
    /// The placements running, to stop those the write cuts.
    running: BTreeMap<Key, tokio::task::AbortHandle>,
    /// The pushes that ran beside the upload, each taken by its target's first placement.
    streamed: BTreeMap<Key, tee::StreamedPush>,
    reports: (mpsc::Sender<WriteReport>, mpsc::Receiver<WriteReport>),
    /// How each placement over for good ended (a target cut has none).
    ended: BTreeMap<Key, Placed>,
    /// Each placement pushes first (a write's), or proves first (an operator's repair).
    push_first: bool,
}

impl WriteRun {
    /// A run of `write`'s placements, each target's transfer registered with the planner
    /// first (so its repair does not push the same copy beside ours).
    async fn registered(
        objects: Objects,
        hash: Hash,
        size: u64,
        clock: Clock,
        write: &Write<NetPeer>,
        streamed: BTreeMap<Key, tee::StreamedPush>,
        push_first: bool,
    ) -> WriteRun {
        let mut planned = BTreeMap::new();
        for peer in write.targets() {
            if let Ok(Some(id)) = objects.dht.begin_external(Key(hash), peer.key).await {
                planned.insert(peer.key, id);
            }
        }
        WriteRun {
            objects,
            hash,
            size,
            clock,
            planned,
            running: BTreeMap::new(),
            streamed,
            reports: mpsc::channel(write.targets().count() * 2 + 1),
            ended: BTreeMap::new(),
            push_first,
        }
    }

    /// Starts every placement due at `now`. Each reports how it ended, a placement whose
    /// task panicked included (as a local failure): the write waits for every report.
    fn start_placements(&mut self, write: &mut Write<NetPeer>, now: overlay::Instant) {
        while let Some(peer) = write.poll_place(now) {
            let objects = self.objects.clone();
            let (hash, size) = (self.hash, self.size);
            let tx = self.reports.0.clone();
            let key = peer.key;
            let durable = DurableTo {
                tx: tx.clone(),
                peer: peer.key,
            };
            let write = fetch::WritePlacement {
                durable,
                streamed: self.streamed.remove(&key),
                push_first: self.push_first,
            };
            let placing = tokio::spawn(async move {
                objects
                    .place_copy(&peer, hash, size, true, Some(write))
                    .await
            });
            self.running.insert(key, placing.abort_handle());
            tokio::spawn(async move {
                let placed = placing.await.unwrap_or_else(|e| {
                    let why = if e.is_cancelled() { "cut" } else { "panicked" };
                    Placed::failed(FetchError::Local(format!("the placement task {why}")))
                });
                let _ = tx.send(WriteReport::Placed(key, placed)).await;
            });
        }
    }

    /// Stops what the write cut at `now` (`overlay::Write::cut`: past twice its wait) and
    /// reports each to the planner: a target still taking in its copy as too slow (it waits
    /// before it is asked again), any other as stopped (ours: it waits for nothing).
    async fn cut_placements(&mut self, write: &mut Write<NetPeer>, now: overlay::Instant) {
        for (peer, why) in write.cut(now) {
            if let Some(task) = self.running.remove(&peer.key) {
                task.abort();
            }
            let outcome = match why {
                PlacementCut::TooSlow => {
                    tracing::debug!(peer = %peer.id, "write's placement cut: slower than its wait allows");
                    metrics::counter!("write_placements_cut_total").increment(1);
                    self.objects
                        .stats
                        .placements_cut
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    TransferOutcome::Failed(TransferFault::TooSlow)
                }
                PlacementCut::Unfinished => TransferOutcome::Failed(TransferFault::Stopped),
            };
            if let Some(id) = self.planned.get(&peer.key) {
                let _ = self.objects.dht.transfer_done(*id, outcome).await;
            }
        }
    }

    /// Waits for the next report (or the write's next timer) and applies it.
    async fn next_report(&mut self, write: &mut Write<NetPeer>) {
        // Reports already in count before anything is cut: a copy proven a moment ago
        // is not cut as slow.
        while let Ok(report) = self.reports.1.try_recv() {
            self.apply(write, Some(report)).await;
        }
        // Retries due now start first, read at the same instant as the wait below: one
        // that came due in between would otherwise be neither started nor waited for.
        let now = self.clock.now();
        self.start_placements(write, now);
        self.cut_placements(write, now).await;
        if write.finished() {
            return;
        }
        // Past the deadline the write has answered: a time not in the future (the deadline
        // itself) is nothing to wait for, or the loop would spin until the last placement
        // ends.
        let wake = [write.poll_timeout(), write.cut_at()]
            .into_iter()
            .flatten()
            .filter(|&t| t > now)
            .min();
        let report = match wake {
            Some(t) => tokio::time::timeout_at(self.clock.deadline(t), self.reports.1.recv())
                .await
                .ok()
                .flatten(),
            None => self.reports.1.recv().await,
        };
        self.apply(write, report).await;
    }

    /// Applies one report (`None`: a timer fired) to the write, and tells the planner of
    /// each placement over for good.
    async fn apply(&mut self, write: &mut Write<NetPeer>, report: Option<WriteReport>) {
        match report {
            Some(WriteReport::Durable(peer)) => write.handle_durable(&peer),
            Some(WriteReport::Placed(peer, placed)) => {
                self.running.remove(&peer);
                if write.handle_placed(self.clock.now(), &peer, placed.end.result()) {
                    if let Some(id) = self.planned.get(&peer) {
                        let _ = self
                            .objects
                            .dht
                            .transfer_done(*id, placed.end.outcome())
                            .await;
                    }
                    self.ended.insert(peer, placed);
                }
            }
            None => {}
        }
    }
}

/// A planner's transfer still running at its cut: the target takes the copy in more slowly
/// than `ObjectTimings::repair_cut` allows.
const CUT: TransferOutcome = TransferOutcome::Failed(TransferFault::TooSlow);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportError;
    use overlay::RpcFailure;

    /// Whose fault the planner finds a failed placement to be.
    fn blame(e: FetchError) -> RpcFailure {
        match Placed::failed(e).end.outcome() {
            TransferOutcome::Failed(fault) => fault.blame(),
            other => panic!("a failure read as {other:?}"),
        }
    }

    fn failed(e: TransportError) -> RpcFailure {
        blame(FetchError::Transport(e))
    }

    #[test]
    fn a_shortage_of_ours_never_makes_the_target_wait() {
        // The same reading as the DHT's: a dial queued behind one that failed, our
        // connection cap, our shutdown are ours.
        let queued = TransportError::Timeout {
            what: "concurrent dial",
            after: Duration::from_secs(5),
        };
        assert_eq!(failed(queued), RpcFailure::Local);
        assert_eq!(failed(TransportError::Closed), RpcFailure::Local);
        assert_eq!(
            failed(TransportError::Connection(
                quinn::ConnectionError::LocallyClosed
            )),
            RpcFailure::Local,
            "a connection we closed"
        );
        assert_eq!(blame(FetchError::LocalCorrupt), RpcFailure::Local);
        assert_eq!(blame(FetchError::Local("disk".into())), RpcFailure::Local);
        // The target's: silence, a failed dial, a reset, bytes that do not verify.
        let silent = TransportError::Timeout {
            what: "connect",
            after: Duration::from_secs(5),
        };
        assert_eq!(failed(silent), RpcFailure::Peer);
        assert_eq!(
            failed(TransportError::Connection(quinn::ConnectionError::Reset)),
            RpcFailure::Peer
        );
        assert_eq!(blame(FetchError::Integrity), RpcFailure::Peer);
        // A target that is there but declines, or is taking the object in from another
        // pusher, is refusing: it waits too, but is not blamed for a fault.
        assert_eq!(
            blame(FetchError::Status(Status::Forbidden)),
            RpcFailure::Refused
        );
        assert_eq!(blame(FetchError::InProgress), RpcFailure::Refused);
        // A broken answer (of the wrong kind, with a status we do not know) is the holder's.
        assert_eq!(
            blame(FetchError::Status(Status::BadRequest)),
            RpcFailure::Peer
        );
        assert_eq!(
            blame(FetchError::Status(Status::Internal)),
            RpcFailure::Peer
        );
    }
}
