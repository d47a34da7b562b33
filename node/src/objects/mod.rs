//! Objects across the mesh: the write path (store, replicate to the RF closest, acknowledge
//! at W durable copies), the read path (local, else find holders and fetch verified), and
//! repair (carry out the overlay planner's transfers).
//!
//! Layout:
//! - `serve`: answering app protocol 2 (GET slice, HAS, PUT replica).
//! - `fetch`: verified fetch with failover between holders; replica push.

mod fetch;
mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use overlay::{Key, PlanEvent, QueryResult};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use wire::NodeId;
use wire::object::ByteRange;

use crate::dht::{DhtHandle, NetPeer};
use crate::store::{Hash, Store};
use crate::transport::Transport;
pub use fetch::FetchError;
pub use serve::serve_object;

/// Limits and replication parameters of the object layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLimits {
    /// Largest object accepted (1 GiB).
    pub object_max: u64,
    /// Copies each object should have (3).
    pub rf: usize,
    /// Durable copies before a PUT is acknowledged, when peers exist (2; 1 on a lone node).
    pub w: usize,
    /// Longest silence from a peer in the middle of a transfer (10 s).
    pub io_timeout: Duration,
    /// How long a GET may search for holders (5 s).
    pub search_timeout: Duration,
    /// How long one holder may take to answer HAS during a search (1.5 s).
    pub probe_timeout: Duration,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        ObjectLimits {
            object_max: 1 << 30,
            rf: 3,
            w: 2,
            io_timeout: Duration::from_secs(10),
            search_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_millis(1500),
        }
    }
}

/// Counters of the object layer, readable without a metrics recorder (status page, tests).
#[derive(Debug, Default)]
pub struct ObjectStats {
    /// Fetches where a holder sent bytes that failed verification.
    pub integrity_fail_peer: AtomicU64,
    /// Replica pushes whose bytes did not hash to the announced id.
    pub integrity_fail_push: AtomicU64,
    /// Repair transfers completed.
    pub repair_transfers: AtomicU64,
    /// Bytes moved by repair.
    pub repair_bytes: AtomicU64,
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
}

/// Where a GET found its bytes.
#[derive(Debug)]
pub enum Located {
    /// In the local store.
    Local {
        /// Object size.
        size: u64,
    },
    /// At these holders (closest first); the size is what the first one reported.
    Remote {
        /// Object size.
        size: u64,
        /// Peers that hold it.
        holders: Vec<NetPeer>,
    },
}

/// Why a GET found nothing to serve.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// Nobody answered that they hold it.
    #[error("no holder found")]
    NotFound,
    /// Holders may exist but did not answer in time.
    #[error("holders did not answer in time")]
    Timeout,
}

impl Objects {
    /// The object layer over a store, transport and DHT.
    pub fn new(
        store: Store,
        transport: Transport,
        dht: DhtHandle,
        limits: ObjectLimits,
    ) -> Objects {
        Objects {
            store,
            transport,
            dht,
            limits: Arc::new(limits),
            stats: Arc::default(),
        }
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

    /// A peer pushed us a replica: hold it, and remember that the pusher holds it too.
    pub(crate) async fn stored_replica(&self, hash: Hash, size: u64, from: NodeId) {
        self.announce(hash, size).await;
        let _ = self
            .dht
            .holder_confirmed(Key(hash), Key::for_node(&from))
            .await;
    }

    /// The RF closest nodes to `hash` other than us, by a lookup (falling back to our table).
    async fn targets(&self, hash: Hash) -> Vec<NetPeer> {
        let key = Key(hash);
        let me = self.dht.local().key;
        let rf = self.limits.rf;
        let mut peers = match self.dht.find_node(key).await {
            Ok(out) => match out.result {
                QueryResult::FindNode { closest } => closest,
                _ => Vec::new(),
            },
            Err(_) => self.dht.closest_known(key, rf).await.unwrap_or_default(),
        };
        peers.sort_by_key(|p| p.key.distance(&key));
        // We count among the RF closest if we are closer than the RF-th peer.
        let self_in = peers.len() < rf
            || peers
                .get(rf - 1)
                .is_some_and(|p| p.key.distance(&key) > me.distance(&key));
        peers.truncate(if self_in { rf - 1 } else { rf });
        peers
    }

    /// After a local durable write: push to the RF closest and return once `w` copies in all
    /// are durable (ours counts), or every push has finished. Pushes still running go on in
    /// the background. Returns the number of durable copies known.
    pub async fn replicate(&self, hash: Hash, size: u64) -> usize {
        self.announce(hash, size).await;
        let targets = self.targets(hash).await;
        let want = if targets.is_empty() {
            1
        } else {
            self.limits.w.max(1)
        };
        let mut copies = 1;
        let mut pushes = JoinSet::new();
        for peer in targets {
            let objects = self.clone();
            pushes.spawn(async move {
                let ok = objects.push(&peer, hash, size).await;
                if let Err(e) = &ok {
                    tracing::debug!(peer = %peer.id, error = %e, "replica push failed");
                } else {
                    let _ = objects.dht.holder_confirmed(Key(hash), peer.key).await;
                }
                ok.is_ok()
            });
        }
        while copies < want {
            match pushes.join_next().await {
                Some(Ok(true)) => copies += 1,
                Some(_) => {}
                None => break,
            }
        }
        // Let the rest finish on their own; their outcomes reach the planner directly.
        tokio::spawn(async move { while pushes.join_next().await.is_some() {} });
        copies
    }

    /// Finds where `hash` can be read: locally, else at providers or the closest nodes.
    pub async fn locate(&self, hash: Hash) -> Result<Located, LocateError> {
        if let Some(size) = self.store.size(&hash) {
            return Ok(Located::Local { size });
        }
        self.find_holders(hash).await
    }

    /// Finds other nodes that hold `hash`: providers and the closest nodes, asked HAS in
    /// turn, within the search timeout.
    pub async fn find_holders(&self, hash: Hash) -> Result<Located, LocateError> {
        let deadline = tokio::time::Instant::now() + self.limits.search_timeout;
        let key = Key(hash);
        let mut candidates: Vec<NetPeer> = Vec::new();
        let mut providers = 0;
        let lookup =
            tokio::time::timeout_at(deadline, self.dht.get_providers(key, self.limits.rf)).await;
        if let Ok(Ok(out)) = lookup {
            if let QueryResult::GetProviders {
                providers: p,
                closest,
            } = out.result
            {
                providers = p.len();
                candidates.extend(p);
                candidates.extend(closest.into_iter().take(self.limits.rf * 2));
            }
        }
        let me = self.dht.local().id;
        candidates.retain(|p| p.id != me);
        let mut seen = std::collections::BTreeSet::new();
        candidates.retain(|p| seen.insert(p.id));
        // Ask every candidate at once, each bounded by the probe timeout: a dead holder (its
        // provider record outlives it) costs one probe timeout, not the whole search.
        let mut probes = JoinSet::new();
        for c in candidates {
            let objects = self.clone();
            let t = self.limits.probe_timeout;
            probes.spawn(async move {
                let answer = tokio::time::timeout(t, objects.has(&c, hash)).await;
                (c, answer.ok().and_then(Result::ok))
            });
        }
        let mut holders = Vec::new();
        let mut size = None;
        let mut silent = 0;
        while holders.len() < self.limits.rf {
            let next = match tokio::time::timeout_at(deadline, probes.join_next()).await {
                Ok(Some(Ok(n))) => n,
                Ok(Some(Err(_))) => continue,
                Ok(None) => break,
                Err(_) => {
                    silent += probes.len();
                    break;
                }
            };
            match next {
                (c, Some(Some(s))) if size.is_none() || size == Some(s) => {
                    size = Some(s);
                    holders.push(c); // fastest first: the order fetches try them in
                }
                (_, Some(_)) => {}
                (_, None) => silent += 1,
            }
        }
        probes.abort_all();
        match size {
            Some(size) => Ok(Located::Remote { size, holders }),
            // Records say someone holds it, but nobody who could answer did: try again later.
            None if providers > 0 && silent > 0 => Err(LocateError::Timeout),
            None => Err(LocateError::NotFound),
        }
    }

    /// Streams `range` of a remote object, verified, into a channel the caller reads.
    pub fn stream_remote(
        &self,
        holders: Vec<NetPeer>,
        hash: Hash,
        range: ByteRange,
    ) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(8);
        let objects = self.clone();
        tokio::spawn(async move {
            if let Err(e) = objects.fetch_failover(&holders, hash, range, tx).await {
                tracing::warn!(id = %crate::store::id_string(&hash), error = %e, "remote read failed");
            }
        });
        rx
    }

    /// Streams `range` of a local object, verified piece by piece. Should the local copy
    /// fail verification midway (it is then dropped and counted), the stream carries on
    /// from the last verified byte with bytes fetched from other holders, so the reader
    /// still gets one correct stream.
    pub fn stream_local(
        &self,
        hash: Hash,
        range: ByteRange,
        piece: usize,
    ) -> mpsc::Receiver<Bytes> {
        let (out, rx) = mpsc::channel(8);
        let objects = self.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            if let Ok(reader) = objects.store.verified_reader(&hash, range.start, range.len) {
                let (tx, mut pieces) = mpsc::channel(4);
                tokio::task::spawn_blocking(move || pump(Box::new(reader), piece, tx));
                while let Some(Ok(b)) = pieces.recv().await {
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

    /// Carries out the planner's work: pushes for repair, releases of surplus copies.
    pub async fn run_repair(self, mut plans: mpsc::Receiver<PlanEvent<NetPeer>>) {
        while let Some(ev) = plans.recv().await {
            match ev {
                PlanEvent::Transfer { id, key, size, to } => {
                    let objects = self.clone();
                    tokio::spawn(async move {
                        let pushed = objects.push(&to, key.0, size).await;
                        let label = match &pushed {
                            Ok(true) => "copied",
                            Ok(false) => "already_held",
                            Err(_) => "failed",
                        };
                        metrics::counter!("repair_transfers_total", "outcome" => label)
                            .increment(1);
                        // Only bytes that moved count as repair traffic.
                        if let Ok(true) = pushed {
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
                        let _ = objects.dht.transfer_done(id, pushed.is_ok()).await;
                    });
                }
                PlanEvent::Release { key } => {
                    tracing::debug!(id = %crate::store::id_string(&key.0), "releasing a surplus copy");
                    self.store.remove(&key.0);
                    let _ = self.dht.object_removed(key).await;
                }
            }
        }
    }
}

/// Reads `reader` in pieces of `piece` bytes into `tx` until the end or an error (run on a
/// blocking thread; the async side sends the pieces on).
pub(crate) fn pump(
    mut reader: Box<dyn std::io::Read + Send>,
    piece: usize,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) {
    loop {
        let mut buf = vec![0u8; piece];
        let mut filled = 0;
        while filled < piece {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() || filled < piece {
            return;
        }
    }
}
