//! Replica pushes that run while the client is still uploading.
//!
//! A PUT that declares its id (`PUT /o/b3:<hex>`) names its RF closest nodes before its
//! first byte, so its copies need not wait for the upload, the hash and the fsync to end
//! before they start: every batch the gateway writes to its own store also goes to one
//! streamed push per target. A receiver hashes what arrives and commits only bytes that hash
//! to the id, but it could not tell a client's lie from ours, so the pushes hold their last
//! frame (END) until our own store found the bytes hash to the declared id. A mismatch or
//! a dropped upload ends them without END: the stream is reset and the receiver keeps
//! nothing, blames nobody, and gives back the budget the bytes it never got were charged.
//! A failed local fsync after the check stops them too, though a receiver that already
//! took END keeps its copy (verified, and announced by it).
//!
//! Only the W − 1 nearest targets get a streamed push: that is what the acknowledgement
//! waits for, and the rest would take the gateway's uplink (and, on one machine, its CPU)
//! from them. The others are pushed from the store once the object is durable here, as an
//! ordinary write's copies are, and go on after the answer.
//!
//! Streaming is for uploads that keep moving, and every wait is bounded:
//! - a node streams [`STREAMED_WRITES_MAX`] uploads, or detached writes' pushes, at once
//!   (its own permits, not write slots: the write slot is taken after the body, as for
//!   `PUT /o`); pushes a write took over after the body count against its write slot
//!   instead;
//! - each push queues at most [`QUEUE`] batches (1 MiB each); the upload waits for the
//!   pushes that are behind together, for any one batch at most a quarter of the I/O
//!   timeout and for one push at most the I/O timeout in all, then leaves it (the push is
//!   stopped, and its copy pushed from the store after the commit), so one stuck target
//!   cannot starve the others;
//! - an upload that falls behind the pace the write's wait allows (10 s, then 4 MiB/s: its
//!   bytes so far arrived later than the wait for an object of their size) leaves (stops)
//!   every push, so a client trickling a body under someone's id holds the receivers' one
//!   reception of that id for about 10 s (and the time the upload waited for its slow
//!   pushes, at most the I/O timeout each), and a slow honest client's copies are given
//!   up early, before most of their bytes were sent for nothing;
//! - a push whose next batch does not come within half the I/O timeout ends itself, before
//!   the receiver's frame timeout would (a paused client);
//! - the upload's streaming permit ([`StreamingPermit`]) goes back when the tee leaves
//!   every push (all of them stopped or ended), or when the body ended and the write took
//!   the pushes over: a slow target or a trickling client holds none once nothing streams;
//! - a write refused its slot after the body (its copy durable here) leaves its pushes to
//!   end by themselves, still under the upload's permit and for at most four I/O timeouts
//!   (what is left to send is their queues, END and the receivers' answers).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use overlay::{Key, ObjectTimings, TransferFault, TransferOutcome};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use wire::message;
use wire::object::ObjectRequest;

use super::Objects;
use super::fetch::FetchError;
use crate::dht::NetPeer;
use crate::store::Hash;
use crate::transport::TransportError;

/// Batches queued per streamed push before it counts as behind.
pub(crate) const QUEUE: usize = 4;

/// Uploads a node streams at once; more are written first and pushed after, as `PUT /o`.
pub(crate) const STREAMED_WRITES_MAX: usize = 16;

/// Whether the bytes an upload delivered hash to the id it declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The upload is still arriving, or is being hashed.
    Pending,
    /// Our store hashed the bytes to the declared id: the pushes may end.
    Verified,
}

/// One streamed push's task, with the bytes it handed to the stream. Dropped, it stops the
/// push (the stream is reset), so a placement that was cut, or an upload that went wrong,
/// leaves no push running behind it.
pub(crate) struct StreamedPush(JoinHandle<(Result<bool, FetchError>, u64)>);

/// How a streamed push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamedEnd {
    /// The target stored the object.
    Stored,
    /// The target held it already.
    Held,
    /// Anything else, ours or not: the copy is then pushed from the store. `charged`: the
    /// target may have read some of its bytes, which stay charged to our budget there (a
    /// receiver gives back what it never read): bytes were sent, and the target did not
    /// refuse the push before reading (over budget, receiving it from another, or any
    /// refusal but `push_too_slow`).
    Failed { charged: bool },
}

impl StreamedEnd {
    /// Its `replica_pushes_streamed_total` outcome, `failed` naming what a failure led to.
    pub(crate) fn outcome_label(self, failed: &'static str) -> &'static str {
        match self {
            StreamedEnd::Stored => "stored",
            StreamedEnd::Held => "held",
            StreamedEnd::Failed { .. } => failed,
        }
    }
}

impl StreamedPush {
    /// How it ended.
    pub(crate) async fn outcome(mut self) -> StreamedEnd {
        match (&mut self.0).await {
            Ok((Ok(true), _)) => StreamedEnd::Stored,
            Ok((Ok(false), _)) => StreamedEnd::Held,
            Ok((Err(e), sent)) => StreamedEnd::Failed {
                charged: sent > 0
                    && !matches!(
                        e,
                        FetchError::OverBudget
                            | FetchError::InProgress
                            | FetchError::RefusedUnread(..)
                    ),
            },
            // Cancelled or panicked: what the target took is unknown, so count it charged.
            Err(_) => StreamedEnd::Failed { charged: true },
        }
    }
}

impl Drop for StreamedPush {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pushes of one upload, started before its body.
pub(crate) struct EarlyPushes {
    /// The RF closest other than us, as looked up before the body.
    pub(crate) targets: Vec<NetPeer>,
    /// The push to each streamed target, by its key.
    pub(crate) pushes: BTreeMap<Key, StreamedPush>,
    /// The upload's streaming permit, shared with its tee.
    pub(crate) permit: StreamingPermit,
}

/// One upload's streaming permit, shared by its tee and its [`EarlyPushes`]. It goes back
/// when the tee leaves every push (nothing streams any more), or with the last share: a
/// write that takes the pushes over drops its share, a detached set keeps it until it
/// ended.
#[derive(Clone)]
pub(crate) struct StreamingPermit(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl StreamingPermit {
    fn new(permit: OwnedSemaphorePermit) -> StreamingPermit {
        StreamingPermit(Arc::new(Mutex::new(Some(permit))))
    }

    /// Gives the permit back now, whoever else holds a share.
    fn give_back(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// A push fed by the tee, and how long the upload has waited for it in all.
struct Branch {
    tx: mpsc::Sender<Bytes>,
    stalled: Duration,
    /// The push's task: stopped when the tee leaves it, so a push left behind does not
    /// go on sending the batches it had queued to a copy that cannot end.
    push: AbortHandle,
}

/// One upload's batches on their way to every streamed push.
pub(crate) struct Tee {
    branches: Vec<Branch>,
    verdict: watch::Sender<Verdict>,
    /// The most the upload waits for one push, in all.
    stall_max: Duration,
    /// When the upload began, and the bytes it has delivered since.
    started: Instant,
    received: u64,
    /// How long the upload has waited for pushes that were full: the targets' time, not
    /// the client's.
    waited: Duration,
    /// The write's wait: past `started + waited + put_wait(received)` the upload is
    /// behind, and leaves every push.
    pace: ObjectTimings,
    /// This node's streaming permit, given back once no push is left in the tee.
    permit: StreamingPermit,
}

impl Tee {
    /// Hands `batch` to every push still in the tee (see the module's rules for one that is
    /// behind, and for an upload behind its pace). The pushes that are full are waited
    /// for together, each at most a quarter of the stall budget at once: a push that is
    /// keeping up then never goes long enough without a batch to think the client paused.
    pub(crate) async fn send(&mut self, batch: Bytes) {
        if self.branches.is_empty() {
            return;
        }
        self.received += batch.len() as u64;
        if Instant::now() > self.started + self.waited + self.pace.put_wait(self.received) {
            count(self.branches.len(), "abandoned");
            for branch in self.branches.drain(..) {
                branch.push.abort();
            }
            self.permit.give_back();
            return;
        }
        let mut ends: Vec<Option<&'static str>> = vec![None; self.branches.len()];
        let mut full = Vec::new();
        for (i, branch) in self.branches.iter().enumerate() {
            match branch.tx.try_send(batch.clone()) {
                Ok(()) => {}
                // The push ended by itself (the target held it, refused, or went away).
                Err(mpsc::error::TrySendError::Closed(_)) => ends[i] = Some("ended_early"),
                Err(mpsc::error::TrySendError::Full(_)) => full.push(i),
            }
        }
        if !full.is_empty() {
            let once = self.stall_max / 4;
            let waits = full.iter().map(|&i| {
                let branch = &self.branches[i];
                let left = self.stall_max.saturating_sub(branch.stalled).min(once);
                let batch = batch.clone();
                async move {
                    let waited = Instant::now();
                    let sent = tokio::time::timeout(left, branch.tx.send(batch)).await;
                    (sent, waited.elapsed())
                }
            });
            let began = Instant::now();
            let waited = futures_util::future::join_all(waits).await;
            self.waited += began.elapsed();
            for (&i, (sent, elapsed)) in full.iter().zip(waited) {
                self.branches[i].stalled += elapsed;
                ends[i] = match sent {
                    Ok(Ok(())) => None,
                    Ok(Err(_)) => Some("ended_early"),
                    Err(_) => Some("left_behind"),
                };
            }
        }
        let mut ends = ends.into_iter();
        self.branches.retain(|branch| match ends.next().flatten() {
            Some(outcome) => {
                // One that ended early may still be reading its target's answer.
                if outcome == "left_behind" {
                    branch.push.abort();
                }
                count(1, outcome);
                false
            }
            None => true,
        });
        if self.branches.is_empty() {
            self.permit.give_back();
        }
    }

    /// Ends the batches (each push then waits for the verdict) and gives the verdict's
    /// sender: [`Verdict::Verified`] sent on it lets the pushes send END; dropped unsent,
    /// it ends them without.
    pub(crate) fn close(self) -> watch::Sender<Verdict> {
        self.verdict
    }
}

/// Waits for `early`'s pushes for at most `within` and counts how each ended; the ones left
/// are dropped, which stops them. The upload's permit goes back at the end.
async fn detached(early: EarlyPushes, within: Duration) {
    let EarlyPushes {
        pushes,
        permit: _permit,
        ..
    } = early;
    let deadline = Instant::now() + within;
    let mut ends: futures_util::stream::FuturesUnordered<_> =
        pushes.into_values().map(StreamedPush::outcome).collect();
    while let Ok(Some(end)) = tokio::time::timeout_at(deadline, ends.next()).await {
        count(1, end.outcome_label("detached_failed"));
    }
    count(ends.len(), "detached_stopped");
}

fn count(n: usize, outcome: &'static str) {
    metrics::counter!("replica_pushes_streamed_total", "outcome" => outcome).increment(n as u64);
}

impl Objects {
    /// A permit to stream one more upload, if fewer than [`STREAMED_WRITES_MAX`] are.
    pub(crate) fn streaming_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Looks up the RF closest to `hash` and starts a streamed push of `size` bytes to the
    /// W − 1 nearest (W: the write's quorum, ours included), fed by the returned [`Tee`].
    /// The tee and the returned [`EarlyPushes`] share `permit`. `None` (and the permit
    /// back) when the lookup found nobody or failed: the write looks again after the body.
    pub(crate) async fn start_streamed(
        &self,
        hash: Hash,
        size: u64,
        permit: OwnedSemaphorePermit,
    ) -> Option<(Tee, EarlyPushes)> {
        let (targets, _) = self.closest_set(Key(hash), self.limits.rf).await.ok()?;
        if targets.is_empty() {
            return None;
        }
        let permit = StreamingPermit::new(permit);
        let (verdict, verdict_rx) = watch::channel(Verdict::Pending);
        let mut branches = Vec::new();
        let mut pushes = BTreeMap::new();
        for peer in targets.iter().take(self.write_quorum().saturating_sub(1)) {
            let (tx, rx) = mpsc::channel(QUEUE);
            let objects = self.clone();
            let (peer, verdict) = (peer.clone(), verdict_rx.clone());
            let key = peer.key;
            let push = tokio::spawn(async move {
                let mut sent = 0;
                let end = objects
                    .push_streamed(&peer, hash, size, rx, verdict, &mut sent)
                    .await;
                (end, sent)
            });
            branches.push(Branch {
                tx,
                stalled: Duration::ZERO,
                push: push.abort_handle(),
            });
            pushes.insert(key, StreamedPush(push));
        }
        count(branches.len(), "started");
        let tee = Tee {
            branches,
            verdict,
            stall_max: self.limits.io_timeout,
            started: Instant::now(),
            received: 0,
            waited: Duration::ZERO,
            pace: self.limits.timings,
            permit: permit.clone(),
        };
        let early = EarlyPushes {
            targets,
            pushes,
            permit,
        };
        Some((tee, early))
    }

    /// Leaves the pushes of a write refused its slot after the body (its copy durable here)
    /// to end by themselves: one told the bytes are good may be sending END to a whole
    /// copy, which a reset would throw away. They hold their upload's streaming permit
    /// while any of them still streams (the tee gave it back if it left them all, and then
    /// none is running), so a client refused slots again and again cannot pile them up,
    /// and run for at most four I/O timeouts, then are stopped. They are registered with
    /// the planner before the object is announced (call this first), so its repair does
    /// not push the same copies beside them (a receiver takes one push of an id at a
    /// time); once they ended, the planner checks those targets itself.
    pub(crate) async fn detach(&self, hash: Hash, early: EarlyPushes) {
        if early.pushes.is_empty() {
            return;
        }
        count(early.pushes.len(), "detached");
        let mut planned = Vec::new();
        for to in early.pushes.keys() {
            if let Ok(Some(id)) = self.dht.begin_external(Key(hash), *to).await {
                planned.push(id);
            }
        }
        let (dht, within) = (self.dht.clone(), self.limits.io_timeout * 4);
        tokio::spawn(async move {
            detached(early, within).await;
            // Followed no further: not a fault of the targets'.
            let ended = TransferOutcome::Failed(TransferFault::Stopped);
            for id in planned {
                let _ = dht.transfer_done(id, ended).await;
            }
        });
    }

    /// One streamed push: the batches from `batches` go to `peer` as they come, END only
    /// once `verdict` says they hash to `hash`; `sent` counts the bytes handed to the
    /// stream. Whatever ends it early is ours (the upload or the tee), and drops the
    /// exchange, which resets the stream: the receiver keeps nothing.
    async fn push_streamed(
        &self,
        peer: &NetPeer,
        hash: Hash,
        size: u64,
        mut batches: mpsc::Receiver<Bytes>,
        mut verdict: watch::Receiver<Verdict>,
        sent: &mut u64,
    ) -> Result<bool, FetchError> {
        let mut ex = self.open_push(peer).await?;
        ex.send(message::encode(&ObjectRequest::Put { hash, size }), false)
            .await?;
        // A client that pauses longer than this would have the receiver time out first.
        let pause_max = self.limits.io_timeout / 2;
        let sending = async {
            loop {
                let mut batch = match tokio::time::timeout(pause_max, batches.recv()).await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(_) => return Ok(false),
                };
                while !batch.is_empty() {
                    let n = batch.len().min(ex.max_payload().max(1));
                    ex.send(batch.split_to(n), false).await?;
                    *sent += n as u64;
                }
            }
            Ok::<_, TransportError>(true)
        };
        // A receiver that answers early (it holds the object, or refuses) stops our side;
        // its answer says why.
        let sent_all = sending.await;
        drop(batches);
        if matches!(sent_all, Ok(false)) {
            return Err(FetchError::Local("the upload paused".into()));
        }
        if sent_all.is_ok() {
            if *sent != size {
                return Err(FetchError::Local(format!(
                    "the upload gave this push {sent} of {size} bytes"
                )));
            }
            let checked =
                tokio::time::timeout(pause_max, verdict.wait_for(|v| *v == Verdict::Verified))
                    .await
                    .is_ok_and(|r| r.is_ok());
            if !checked {
                return Err(FetchError::Local(
                    "the upload did not hash to its declared id".into(),
                ));
            }
            ex.send(Bytes::new(), true).await?;
        }
        self.push_answer(&mut ex, sent_all.map(|_| ()).map_err(FetchError::from))
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use wire::Status;

    use super::*;

    /// The budget the tests give each push: 800 ms in all, 200 ms for one batch.
    const STALL_MAX: Duration = Duration::from_millis(800);

    /// A pace no test's upload falls behind.
    const PATIENT: ObjectTimings = pace(Duration::from_secs(600), 1 << 30);

    const fn pace(base: Duration, rate: u64) -> ObjectTimings {
        ObjectTimings {
            search_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(1),
            put_wait_base: base,
            put_wait_rate: rate,
            repair_cut_min: Duration::from_secs(60),
            failover_idle: Duration::from_secs(40),
        }
    }

    /// A tee over `n` pushes queueing one batch each, at `pace`; and the semaphore its
    /// permit came from.
    fn tee_of(
        n: usize,
        pace: ObjectTimings,
    ) -> (Tee, Vec<mpsc::Receiver<Bytes>>, Arc<tokio::sync::Semaphore>) {
        let (mut branches, mut receivers) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (tx, rx) = mpsc::channel(1);
            // The push's task stands in for a real one: it runs until stopped.
            let push = tokio::spawn(std::future::pending::<()>()).abort_handle();
            branches.push(Branch {
                tx,
                stalled: Duration::ZERO,
                push,
            });
            receivers.push(rx);
        }
        let (verdict, _) = watch::channel(Verdict::Pending);
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let tee = Tee {
            branches,
            verdict,
            stall_max: STALL_MAX,
            started: Instant::now(),
            received: 0,
            waited: Duration::ZERO,
            pace,
            permit: StreamingPermit::new(permits.clone().try_acquire_owned().unwrap()),
        };
        (tee, receivers, permits)
    }

    fn tee(pace: ObjectTimings) -> (Tee, mpsc::Receiver<Bytes>, Arc<tokio::sync::Semaphore>) {
        let (tee, mut receivers, permits) = tee_of(1, pace);
        (tee, receivers.remove(0), permits)
    }

    const BATCH: Bytes = Bytes::from_static(b"batch");

    #[tokio::test(start_paused = true)]
    async fn a_slow_push_is_waited_for_at_most_the_stall_budget_in_all() {
        let (mut tee, mut rx, permits) = tee(PATIENT);
        let push = tee.branches[0].push.clone();
        // The push takes a batch every 150 ms: within one batch's wait (200 ms), but each
        // wait is charged, so after about 800 / 150 of them it is left.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(150)).await;
                match rx.recv().await {
                    Some(_) => got += 1,
                    None => return got,
                }
            }
        });
        let mut sends = 0;
        while !tee.branches.is_empty() && sends < 30 {
            tee.send(BATCH).await;
            sends += 1;
            if sends <= 3 {
                assert_eq!(tee.branches.len(), 1, "a slow but moving push stays");
            }
        }
        assert!(tee.branches.is_empty(), "left after {sends} batches");
        assert!(
            (5..=10).contains(&sends),
            "left after {sends} batches: the budget is for the whole upload"
        );
        assert_eq!(permits.available_permits(), 1, "the permit went back");
        tokio::task::yield_now().await;
        assert!(push.is_finished(), "the push left behind was stopped");
        let got = reader.await.unwrap();
        assert!(got >= 4, "it read {got} batches, then its batches ended");
    }

    #[tokio::test(start_paused = true)]
    async fn one_stuck_push_does_not_starve_the_others() {
        let (mut tee, mut receivers, _) = tee_of(2, PATIENT);
        let (stuck, mut moving) = (receivers.remove(0), receivers.remove(0));
        tee.send(BATCH).await;
        // The moving push reads at once; the stuck one never.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while moving.recv().await.is_some() {
                got += 1;
            }
            got
        });
        let started = Instant::now();
        tee.send(BATCH).await;
        let waited = started.elapsed();
        assert!(
            waited < STALL_MAX / 2,
            "waited {waited:?} for one batch: the moving push went that long without one"
        );
        assert_eq!(
            tee.branches.len(),
            1,
            "the stuck push was left, the other kept"
        );
        for _ in 0..5 {
            tee.send(BATCH).await;
        }
        assert_eq!(tee.branches.len(), 1, "the moving push stays");
        drop(tee);
        assert_eq!(reader.await.unwrap(), 7, "the moving push got every batch");
        drop(stuck);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_behind_the_writes_pace_leaves_every_push() {
        // 1 s of grace, then a batch (5 bytes) a second.
        let (mut tee, mut rx, permits) = tee(pace(Duration::from_secs(1), 5));
        let push = tee.branches[0].push.clone();
        // Ahead: three batches within 1.5 s.
        for _ in 0..3 {
            tee.send(BATCH).await;
            assert_eq!(rx.recv().await, Some(BATCH));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            tee.branches.len(),
            1,
            "an upload ahead of its pace keeps its pushes"
        );
        // The fourth at 5 s: four batches are worth 1 s + 4 s, and it came after.
        tokio::time::sleep(Duration::from_millis(3_600)).await;
        tee.send(BATCH).await;
        assert!(
            tee.branches.is_empty(),
            "behind its pace, the upload left its pushes"
        );
        assert_eq!(permits.available_permits(), 1);
        tokio::task::yield_now().await;
        assert!(push.is_finished(), "the push was stopped");
        assert_eq!(rx.recv().await, None, "nothing more once behind");
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_that_ended_by_itself_is_not_waited_for() {
        let (mut tee, rx, permits) = tee(PATIENT);
        let push = tee.branches[0].push.clone();
        tee.send(BATCH).await;
        drop(rx);
        tee.send(BATCH).await;
        assert!(tee.branches.is_empty());
        assert_eq!(permits.available_permits(), 1);
        // It may still be reading its target's answer (held, refused): left to it.
        tokio::task::yield_now().await;
        assert!(
            !push.is_finished(),
            "a push that ended its sending was stopped"
        );
        push.abort();
    }

    /// One upload's pushes, holding `permit`: one that would end by itself after
    /// `ends_in`; and what tells whether it did (`Err` when it was stopped first).
    fn early_pushes(
        ends_in: Duration,
        permit: StreamingPermit,
    ) -> (EarlyPushes, tokio::sync::oneshot::Receiver<()>) {
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let push = tokio::spawn(async move {
            tokio::time::sleep(ends_in).await;
            let _ = done_tx.send(());
            (Ok(true), 5)
        });
        let early = EarlyPushes {
            targets: Vec::new(),
            pushes: BTreeMap::from([(Key([7; 32]), StreamedPush(push))]),
            permit,
        };
        (early, done)
    }

    /// A node with one streaming permit, and that permit, taken by an upload.
    fn one_permit() -> (Arc<tokio::sync::Semaphore>, StreamingPermit) {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = StreamingPermit::new(permits.clone().try_acquire_owned().unwrap());
        (permits, permit)
    }

    #[tokio::test(start_paused = true)]
    async fn the_permit_goes_back_once_nothing_streams() {
        // The body's end alone keeps it: the pushes may still be sending.
        let (upload, _rx, permits) = tee(PATIENT);
        let (early, _done) = early_pushes(Duration::from_secs(60), upload.permit.clone());
        drop(upload);
        assert_eq!(permits.available_permits(), 0, "the pushes still stream");
        // The write takes them over and drops the share.
        drop(early);
        assert_eq!(
            permits.available_permits(),
            1,
            "the write took the pushes over"
        );
        // A tee that left every push gives it back at once, though its upload (a client
        // trickling the rest of its body) goes on.
        let (mut upload, rx, permits) = tee(PATIENT);
        let (early, _done) = early_pushes(Duration::from_secs(60), upload.permit.clone());
        drop(rx);
        upload.send(BATCH).await;
        assert!(upload.branches.is_empty());
        assert_eq!(permits.available_permits(), 1, "nothing streams");
        drop(early);
    }

    #[tokio::test(start_paused = true)]
    async fn detached_pushes_end_by_themselves_within_their_time() {
        let (permits, permit) = one_permit();
        // A push sending its END ends a moment later: left to it, though no permit is free
        // (the upload's is still theirs).
        let (early, done) = early_pushes(Duration::from_millis(50), permit);
        let within = Duration::from_secs(1);
        tokio::spawn(detached(early, within));
        assert!(done.await.is_ok(), "the push ran to its end");
        tokio::task::yield_now().await;
        assert_eq!(permits.available_permits(), 1, "the permit went back");
        // One that would take longer than its time is stopped at its end.
        let (permits, permit) = one_permit();
        let (early, done) = early_pushes(Duration::from_secs(5), permit);
        let started = Instant::now();
        let detaching = tokio::spawn(detached(early, within));
        assert_eq!(
            permits.available_permits(),
            0,
            "they hold their upload's streaming permit"
        );
        assert!(done.await.is_err(), "the push was stopped");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(2),
            "stopped after {took:?}, its time was 1 s"
        );
        detaching.await.unwrap();
        assert_eq!(permits.available_permits(), 1, "the permit went back");
    }

    /// How a streamed push that ended with `end`, having sent `sent` bytes, is judged.
    async fn judged(end: Result<bool, FetchError>, sent: u64) -> StreamedEnd {
        StreamedPush(tokio::spawn(async move { (end, sent) }))
            .outcome()
            .await
    }

    #[tokio::test]
    async fn a_failed_push_counts_as_charged_only_if_the_target_may_have_read_it() {
        let charged = |c| StreamedEnd::Failed { charged: c };
        let slow = || Err(FetchError::Status(Status::TooManyRequests));
        // Refused as too slow after reading: what it read stays charged.
        assert_eq!(judged(slow(), 3 << 20).await, charged(true));
        // Nothing sent (the connection failed): nothing charged.
        assert_eq!(judged(slow(), 0).await, charged(false));
        let reset = Err(FetchError::Local("the upload paused".into()));
        assert_eq!(judged(reset, 1 << 20).await, charged(true));
        // Refused before reading, though our bytes were on their way: nothing charged.
        assert_eq!(
            judged(Err(FetchError::OverBudget), 1 << 20).await,
            charged(false)
        );
        assert_eq!(
            judged(Err(FetchError::InProgress), 1 << 20).await,
            charged(false)
        );
        // Refused before reading for any other reason (not responsible, too large, its
        // store down): nothing charged either.
        assert_eq!(
            judged(
                Err(FetchError::RefusedUnread(
                    Status::Forbidden,
                    "push_not_responsible".into()
                )),
                1 << 20
            )
            .await,
            charged(false)
        );
        assert_eq!(judged(Ok(false), 1 << 20).await, StreamedEnd::Held);
    }

    #[tokio::test(start_paused = true)]
    async fn pushes_dropped_with_their_upload_are_stopped() {
        let (permits, permit) = one_permit();
        let (early, done) = early_pushes(Duration::from_millis(50), permit);
        drop(early);
        assert!(done.await.is_err(), "the push was stopped at once");
        assert_eq!(permits.available_permits(), 1, "and gave its permit back");
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_a_slow_push_do_not_count_against_the_uploads_pace() {
        // 100 ms of grace, then 5 ms a batch: the upload keeps up, the push does not.
        let (mut tee, mut rx, _) = tee(pace(Duration::from_millis(100), 1_000));
        let reader = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        for sent in 1..=4 {
            tee.send(BATCH).await;
            assert_eq!(
                tee.branches.len(),
                1,
                "batch {sent}: the upload was only waiting for its push"
            );
        }
        drop(tee);
        reader.await.unwrap();
    }
}
