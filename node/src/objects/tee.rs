//! Replica pushes that run while the client is still uploading.
//!
//! A PUT that declares its id (`PUT /o/b3:<hex>`) names its RF closest nodes before its
//! first byte, so its copies need not wait for the upload, the hash and the fsync to end
//! before they start: every batch the gateway writes to its own store also goes to one
//! streamed push per target. A receiver hashes what arrives and commits only bytes that hash
//! to the id, but it could not tell a client's lie from ours, so the pushes hold their last
//! frame (END) until our own store found the bytes hash to the declared id. A mismatch, a
//! dropped upload or a failed local write ends them without END: the stream is reset and
//! the receiver keeps nothing, blames nobody.
//!
//! Only the W − 1 nearest targets get a streamed push: that is what the acknowledgement
//! waits for, and the rest would take the gateway's uplink (and, on one machine, its CPU)
//! from them. The others are pushed from the store once the object is durable here, as an
//! ordinary write's copies are, and go on after the answer.
//!
//! Memory is bounded: each push queues at most [`QUEUE`] batches (1 MiB each). A push that
//! falls that far behind while enough others keep up is dropped from the tee (its copy is
//! placed from the store after the local commit, as an ordinary write's is); otherwise the
//! upload waits for it, up to the I/O timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use overlay::Key;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use wire::Status;
use wire::message;
use wire::object::{APP_PROTO_OBJECT, ObjectRequest, ObjectResponse};

use super::Objects;
use super::fetch::{FetchError, IN_PROGRESS};
use crate::dht::NetPeer;
use crate::store::Hash;
use crate::transport::TransportError;

/// Batches queued per streamed push before it counts as behind.
pub(crate) const QUEUE: usize = 4;

/// How long the upload waits for a push that is behind when too few others keep up.
const LAGGARD_GRACE: Duration = Duration::from_millis(100);

/// Whether the bytes an upload delivered hash to the id it declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The upload is still arriving, or is being hashed.
    Pending,
    /// Our store hashed the bytes to the declared id: the pushes may end.
    Verified,
}

/// What a streamed push ended with: `Ok(true)` stored there, `Ok(false)` it held the object
/// already, or why not (a local reason when the tee dropped it or the upload failed).
pub(crate) type StreamedPush = JoinHandle<Result<bool, FetchError>>;

/// The pushes of one upload, started before its body.
pub(crate) struct EarlyPushes {
    /// The RF closest other than us, as looked up before the body.
    pub(crate) targets: Vec<NetPeer>,
    /// The push to each target, by its key.
    pub(crate) pushes: BTreeMap<Key, StreamedPush>,
}

/// One upload's batches on their way to every streamed push.
pub(crate) struct Tee {
    branches: Vec<mpsc::Sender<Bytes>>,
    /// Pushes that must stay in the tee for the write to reach W without a second push.
    keep: usize,
    verdict: watch::Sender<Verdict>,
    wait: Duration,
}

impl Tee {
    /// Hands `batch` to every push still in the tee (see the module's rule for one that is
    /// behind).
    pub(crate) async fn send(&mut self, batch: Bytes) {
        let mut i = 0;
        while i < self.branches.len() {
            let kept = match self.branches[i].try_send(batch.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(b)) => {
                    let others = self.branches.len() - 1;
                    let grace = if others >= self.keep {
                        LAGGARD_GRACE
                    } else {
                        self.wait
                    };
                    matches!(
                        tokio::time::timeout(grace, self.branches[i].send(b)).await,
                        Ok(Ok(()))
                    )
                }
            };
            if kept {
                i += 1;
            } else {
                metrics::counter!("replica_pushes_streamed_total", "outcome" => "left_behind")
                    .increment(1);
                self.branches.swap_remove(i);
            }
        }
    }

    /// Ends the batches (each push then waits for the verdict) and gives the verdict's
    /// sender: [`Verdict::Verified`] sent on it lets the pushes send END; dropped unsent,
    /// it ends them without.
    pub(crate) fn close(self) -> watch::Sender<Verdict> {
        self.verdict
    }
}

impl Objects {
    /// Looks up the RF closest to `hash` and starts a streamed push of `size` bytes to the
    /// `want - 1` nearest (`want`: the write's quorum, ours included), fed by the returned
    /// [`Tee`].
    pub(crate) async fn start_streamed(
        &self,
        hash: Hash,
        size: u64,
        want: usize,
    ) -> (Tee, EarlyPushes) {
        let (targets, _) = self.closest_set(Key(hash), self.limits.rf).await;
        let (verdict, verdict_rx) = watch::channel(Verdict::Pending);
        let mut branches = Vec::new();
        let mut pushes = BTreeMap::new();
        for peer in targets.iter().take(want.saturating_sub(1)) {
            let (tx, rx) = mpsc::channel(QUEUE);
            branches.push(tx);
            let objects = self.clone();
            let (peer, verdict) = (peer.clone(), verdict_rx.clone());
            let key = peer.key;
            let push =
                tokio::spawn(
                    async move { objects.push_streamed(&peer, hash, size, rx, verdict).await },
                );
            pushes.insert(key, push);
        }
        let tee = Tee {
            branches,
            keep: want.saturating_sub(1),
            verdict,
            wait: self.limits.io_timeout,
        };
        let early = EarlyPushes { targets, pushes };
        (tee, early)
    }

    /// One streamed push: the batches from `batches` go to `peer` as they come, END only
    /// once `verdict` says they hash to `hash`. Whatever ends it early is ours (the upload
    /// or the tee), and drops the exchange, which resets the stream: the receiver keeps
    /// nothing.
    async fn push_streamed(
        &self,
        peer: &NetPeer,
        hash: Hash,
        size: u64,
        mut batches: mpsc::Receiver<Bytes>,
        mut verdict: watch::Receiver<Verdict>,
    ) -> Result<bool, FetchError> {
        let t = &self.transport;
        t.connect(peer.addr, Some(peer.id)).await?;
        let mut ex = t
            .open_exchange(peer.id, APP_PROTO_OBJECT, Bytes::new())
            .await?;
        ex.send(message::encode(&ObjectRequest::Put { hash, size }), false)
            .await?;
        let mut sent = 0u64;
        let sending = async {
            while let Some(mut batch) = batches.recv().await {
                sent += batch.len() as u64;
                while !batch.is_empty() {
                    let n = batch.len().min(ex.max_payload().max(1));
                    ex.send(batch.split_to(n), false).await?;
                }
            }
            Ok::<_, TransportError>(())
        };
        // A receiver that answers early (it holds the object, or refuses) stops our side;
        // its answer says why.
        let sent_all = sending.await;
        if sent_all.is_ok() {
            if sent != size {
                return Err(FetchError::Local(format!(
                    "the upload gave this push {sent} of {size} bytes"
                )));
            }
            let checked = tokio::time::timeout(
                self.limits.io_timeout,
                verdict.wait_for(|v| *v == Verdict::Verified),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if !checked {
                return Err(FetchError::Local(
                    "the upload did not hash to its declared id".into(),
                ));
            }
            ex.send(Bytes::new(), true).await?;
        }
        let wait = self.limits.io_timeout * 4;
        let answer = tokio::time::timeout(wait, ex.read_response(1024))
            .await
            .map_err(|_| TransportError::Timeout {
                what: "replica ack",
                after: wait,
            })?;
        match answer? {
            (Status::Ok, reply) => match message::decode::<ObjectResponse>(&reply)? {
                ObjectResponse::Held => Ok(false),
                ObjectResponse::Stored if sent_all.is_ok() => Ok(true),
                _ => Err(FetchError::Status(Status::BadRequest)),
            },
            (Status::TooManyRequests, reason) if &reason[..] == IN_PROGRESS => {
                Err(FetchError::InProgress)
            }
            (status, _) => Err(FetchError::Status(status)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A tee over `n` pushes, each queueing one batch, that must keep `keep` of them.
    fn tee(n: usize, keep: usize) -> (Tee, Vec<mpsc::Receiver<Bytes>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel(1)).unzip();
        let (verdict, _) = watch::channel(Verdict::Pending);
        let tee = Tee {
            branches: senders,
            keep,
            verdict,
            wait: Duration::from_millis(300),
        };
        (tee, receivers)
    }

    #[tokio::test]
    async fn a_push_behind_is_left_when_enough_others_keep_up() {
        let (mut tee, mut rx) = tee(2, 1);
        let batch = Bytes::from_static(b"batch");
        tee.send(batch.clone()).await;
        // Push 1 reads; push 0 does not, and is one batch behind from here on.
        assert_eq!(rx[1].recv().await, Some(batch.clone()));
        let started = std::time::Instant::now();
        tee.send(batch.clone()).await;
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "waited for the laggard"
        );
        assert_eq!(tee.branches.len(), 1, "the push behind was left");
        assert_eq!(rx[1].recv().await, Some(batch));
        // The one left behind sees its batches end (it then pushes from the store).
        assert!(rx[0].recv().await.is_some());
        assert_eq!(rx[0].recv().await, None);
    }

    #[tokio::test]
    async fn the_upload_waits_for_a_push_the_write_needs_and_a_stuck_one_is_left() {
        let (mut tee, mut rx) = tee(1, 1);
        let batch = Bytes::from_static(b"batch");
        tee.send(batch.clone()).await;
        // Full: the one push the quorum needs is waited for while it reads.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let first = rx[0].recv().await;
            (first, rx)
        });
        tee.send(batch.clone()).await;
        assert_eq!(tee.branches.len(), 1, "a slow but moving push stays");
        let (first, mut rx) = reader.await.unwrap();
        assert_eq!(first, Some(batch.clone()));
        // Stuck past the wait: left, so the upload goes on.
        let started = std::time::Instant::now();
        tee.send(batch.clone()).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(tee.branches.is_empty());
        assert!(rx[0].recv().await.is_some());
        assert_eq!(rx[0].recv().await, None);
    }
}
