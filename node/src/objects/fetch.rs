//! Fetching objects from peers with verification, and pushing replicas to them.
//!
//! A fetch streams the slice of a range (`wire::tree`) from a holder and feeds each frame
//! body, as it arrives, to a `wire::tree::SliceVerifier` on the task that reads the stream:
//! every 16 KiB group is checked against the object's hash before views of its bytes (no
//! copy) are passed on. A holder that lies (a flipped byte, a slice cut short or running
//! long, a wrong length) is caught within one group; the fetch then resumes from the last
//! verified byte at the next holder, so the client sees one continuous, verified stream.

use std::time::Duration;

use bytes::Bytes;
use overlay::{
    Failover, FailureCause, PlaceEnd, PlaceStep, Placement, ProofAnswer, PushAnswer, TransferFault,
};
use tokio::sync::mpsc;
use wire::object::{APP_PROTO_OBJECT, ByteRange, ObjectRequest, ObjectResponse};
use wire::{Status, message};

use super::pieces::PieceReader;
use super::tee::{StreamedEnd, StreamedPush};
use super::{DurableTo, Objects};
use crate::dht::{NetPeer, transport_cause};
use crate::store::{Hash, StoreError};
use crate::transport::TransportError;

/// What a write's placement carries beyond the planner's: where it reports its copy
/// durable, the push that ran beside the upload, if one did, and which step comes first.
pub(crate) struct WritePlacement {
    /// Hears once the copy counts.
    pub(crate) durable: DurableTo,
    /// The streamed push to this target.
    pub(crate) streamed: Option<StreamedPush>,
    /// Push first (a new object's copies: the target most likely lacks it), or prove
    /// first and push only to a target that lacks it (an operator's repair).
    pub(crate) push_first: bool,
}

/// Why a fetch from one holder failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The transport failed (connect, timeout, reset).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The holder answered with a status other than 200/206.
    #[error("holder answered {0:?}")]
    Status(Status),
    /// The holder is receiving this object from another pusher right now (429
    /// `push_in_progress`): the copy is on its way, not refused.
    #[error("holder is receiving the object from another pusher")]
    InProgress,
    /// The holder refused a push of ours for now: we pushed it more bytes than its budget
    /// for us takes in (403 `push_over_budget`).
    #[error("holder's budget for our pushes is spent for now")]
    OverBudget,
    /// The holder refused a push of ours before reading any of it (its reason, any but
    /// `push_too_slow`, says so): it kept none of the bytes charged.
    #[error("holder refused the push before reading it: {0:?} {1}")]
    RefusedUnread(Status, String),
    /// The holder's answer is not a valid object response.
    #[error("malformed answer: {0}")]
    Message(#[from] wire::message::MessageError),
    /// The bytes failed verification against the id.
    #[error("holder sent bytes that fail verification")]
    Integrity,
    /// A proof (a short slice the holder verifies in its own store before serving it) did
    /// not verify against the id, or contradicted itself: a lie under the holder's key,
    /// not rot, not a version it reads otherwise.
    #[error("holder's proof fails verification")]
    ProofFailed,
    /// A proof verified, but under another size than the one we hold the object at: ours
    /// or theirs is wrong, and a middle chunk cannot tell which.
    #[error("holder's copy is {theirs} bytes, ours {ours}")]
    SizeDisagrees {
        /// The size we hold it at.
        ours: u64,
        /// The size the holder's verified slice has.
        theirs: u64,
    },
    /// No holder is known.
    #[error("no holder found")]
    NoHolder,
    /// Our own side failed (the store could not read our copy).
    #[error("local failure: {0}")]
    Local(String),
    /// Our own copy failed verification as we read it to send (the store has dropped it):
    /// our fault, never the receiver's.
    #[error("our copy failed verification (dropped from the store)")]
    LocalCorrupt,
}

impl FetchError {
    /// What went wrong, in the overlay's terms: the replication planner judges from it
    /// whether the target waits before it is asked again (`overlay::TransferFault::blame`).
    pub(crate) fn fault(&self) -> TransferFault {
        match self {
            FetchError::Transport(e) => TransferFault::Exchange(transport_cause(e)),
            // What our reading of a broken answer is called (an answer of the wrong kind, a
            // status code we do not know), or the holder's own failure.
            FetchError::Status(Status::BadRequest | Status::Internal) => TransferFault::BadAnswer,
            FetchError::Status(_) | FetchError::OverBudget => TransferFault::Declined,
            FetchError::RefusedUnread(status, _) => FetchError::Status(*status).fault(),
            FetchError::InProgress => TransferFault::InProgress,
            FetchError::Message(_)
            | FetchError::Integrity
            | FetchError::ProofFailed
            | FetchError::SizeDisagrees { .. } => TransferFault::BadAnswer,
            // No holder was there to ask: nobody answered.
            FetchError::NoHolder => TransferFault::Exchange(FailureCause::Silent),
            FetchError::Local(_) | FetchError::LocalCorrupt => TransferFault::OurStore,
        }
    }
}

/// How a fetch with failover ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Every byte of the range went out, verified.
    Whole,
    /// The reader left first; what it took was verified.
    ReaderLeft,
}

/// Joins the verified views one frame body yields (a view per 16 KiB group) back into
/// views of as few runs of the body as they cover, so a frame goes on as one piece, not
/// sixteen. A view of an earlier body (the first part of a group split across frames)
/// passes through as it is.
struct Joined {
    body: Bytes,
    /// The run of `body` gathered so far.
    run: Option<std::ops::Range<usize>>,
}

impl Joined {
    fn new(body: Bytes) -> Joined {
        Joined { body, run: None }
    }

    /// Takes the next verified view in order; returns the pieces to send now, in order
    /// (none while the view extends the run).
    fn push(&mut self, view: Bytes) -> [Option<Bytes>; 2] {
        let base = self.body.as_ptr() as usize;
        let ptr = view.as_ptr() as usize;
        let at = ptr.wrapping_sub(base);
        if ptr < base || at + view.len() > self.body.len() {
            // Not a view of this body: what was gathered goes first, then this one.
            return [self.take(), Some(view)];
        }
        match &mut self.run {
            Some(r) if r.end == at => {
                r.end = at + view.len();
                [None, None]
            }
            _ => {
                let before = self.take();
                self.run = Some(at..at + view.len());
                [before, None]
            }
        }
    }

    /// The run gathered so far, if any.
    fn take(&mut self) -> Option<Bytes> {
        self.run.take().map(|r| self.body.slice(r))
    }
}

impl Objects {
    /// Streams `range` of object `hash` from one holder into `out`, verified. Returns the
    /// number of verified bytes sent to `out` (all of `range` on success).
    pub async fn fetch_from(
        &self,
        holder: &NetPeer,
        hash: Hash,
        range: ByteRange,
        out: &mpsc::Sender<Bytes>,
    ) -> Result<u64, (u64, FetchError)> {
        let t = &self.transport;
        let fail = |e: FetchError| (0u64, e);
        t.connect(holder.addr, Some(holder.id))
            .await
            .map_err(|e| fail(e.into()))?;
        let mut ex = t
            .open_exchange(holder.id, APP_PROTO_OBJECT, Bytes::new())
            .await
            .map_err(|e| fail(e.into()))?;
        let req = ObjectRequest::Get {
            hash,
            range: Some(range),
        };
        ex.send(message::encode(&req), true)
            .await
            .map_err(|e| fail(e.into()))?;
        let io = self.limits.io_timeout;
        let first = match tokio::time::timeout(io, ex.recv()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Err(fail(FetchError::Transport(TransportError::UnexpectedEnd))),
            Ok(Err(e)) => return Err(fail(e.into())),
            Err(_) => {
                return Err(fail(FetchError::Transport(TransportError::Timeout {
                    what: "object header",
                    after: io,
                })));
            }
        };
        let status = Status::from_code(first.code).unwrap_or(Status::Internal);
        if !matches!(status, Status::Ok | Status::Partial) {
            return Err(fail(FetchError::Status(status)));
        }
        let header = first
            .body(ex.limits())
            .map_err(|e| fail(TransportError::Decode(e).into()))?;
        match message::decode::<ObjectResponse>(&header).map_err(|e| fail(e.into()))? {
            ObjectResponse::Found { range: r, .. } if r == range => {}
            _ => return Err(fail(FetchError::Status(Status::BadRequest))),
        }
        // Each frame body is verified on this task as it arrives (a few hundred
        // microseconds of BLAKE3 per frame, no thread hop), and what verified goes out as
        // views of the body: no byte of the object is copied on this side.
        let mut verifier = wire::tree::SliceVerifier::new(&hash, range.start, range.len);
        let mut delivered = 0u64;
        let mut ended = first.flags.contains(wire::Flags::END);
        // A holder that keeps a frame coming within `io` but moves less than the minimum
        // rate would hold the read for ever: past the grace it is left for the next holder.
        // Only the time spent waiting on the holder counts, not on our own slow client.
        let mut pace = super::pace::Pace::new(self);
        let mut waited = Duration::ZERO;
        let outcome: Result<(), FetchError> = loop {
            if ended {
                break verifier.finish().map_err(|_| FetchError::Integrity);
            }
            let asked = tokio::time::Instant::now();
            let received = tokio::time::timeout(io, ex.recv()).await;
            waited += asked.elapsed();
            let frame = match received {
                Ok(Ok(Some(f))) => f,
                // The stream ended without END: whatever verified went out, the rest is
                // missing, which `finish` reports.
                Ok(Ok(None)) => {
                    ended = true;
                    continue;
                }
                Ok(Err(e)) => break Err(e.into()),
                Err(_) => {
                    break Err(FetchError::Transport(TransportError::Timeout {
                        what: "object body",
                        after: io,
                    }));
                }
            };
            ended = frame.flags.contains(wire::Flags::END);
            let body = match frame.body(ex.limits()) {
                Ok(b) => b,
                Err(e) => break Err(TransportError::Decode(e).into()),
            };
            if let Err(e) = pace.progress_over(body.len(), waited) {
                tracing::debug!(peer = %holder.id, error = %e, "holder too slow; leaving it");
                metrics::counter!("holders_too_slow_total").increment(1);
                self.stats
                    .holders_too_slow
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                break Err(e.into());
            }
            verifier.feed(body.clone());
            let mut joined = Joined::new(body);
            let verified = loop {
                match verifier.poll_verified() {
                    Ok(Some(v)) => {
                        for piece in joined.push(v).into_iter().flatten() {
                            delivered += piece.len() as u64;
                            if out.send(piece).await.is_err() {
                                return Ok(delivered); // the client went away
                            }
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(_) => break Err(FetchError::Integrity),
                }
            };
            if let Some(piece) = joined.take() {
                delivered += piece.len() as u64;
                if out.send(piece).await.is_err() {
                    return Ok(delivered);
                }
            }
            if let Err(e) = verified {
                break Err(e);
            }
        };
        match outcome {
            Ok(()) => Ok(delivered),
            Err(e) => {
                if matches!(e, FetchError::Integrity) {
                    metrics::counter!("integrity_fail_total", "source" => "peer").increment(1);
                    self.stats
                        .integrity_fail_peer
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(peer = %holder.id, "holder sent bytes that fail verification");
                    self.ask_to_check(holder, hash, range.start + delivered);
                }
                Err((delivered, e))
            }
        }
    }

    /// Asks `holder`, in the background, for the one chunk at `at` whose group failed our
    /// check: a holder verifies a short range in its own store before serving it, so an
    /// honest holder whose disk rotted finds the rot and drops its copy (repair then
    /// replaces it), where a long range it serves unverified would never tell it. A liar
    /// learns nothing; the answer is not used.
    fn ask_to_check(&self, holder: &NetPeer, hash: Hash, at: u64) {
        let (objects, holder) = (self.clone(), holder.clone());
        tokio::spawn(async move {
            let range = ByteRange { start: at, len: 1 };
            let request = ObjectRequest::Get {
                hash,
                range: Some(range),
            };
            let asked = objects.small_slice(&holder, hash, request, |_| range);
            let _ = tokio::time::timeout(objects.limits.io_timeout, asked).await;
        });
    }

    /// Streams `range` of `hash` from the first holder that serves it, resuming at the next
    /// holder after a failure, from the last verified byte. It gives up once
    /// `ObjectTimings::failover_idle` (40 s) passed without a verified byte
    /// (`overlay::Failover`), and as soon as the reader leaves, even mid-way through a
    /// holder's dial or first answer.
    pub async fn fetch_failover(
        &self,
        holders: &[NetPeer],
        hash: Hash,
        range: ByteRange,
        out: mpsc::Sender<Bytes>,
    ) -> Result<Fetched, FetchError> {
        let started = tokio::time::Instant::now();
        let now = || overlay::Instant::from_duration(started.elapsed());
        let idle = self.limits.timings.failover_idle;
        let mut failover = Failover::new(holders.to_vec(), now(), idle);
        let mut done = 0u64;
        let mut last = FetchError::NoHolder;
        while let Some(h) = failover.next_holder(now()) {
            let rest = ByteRange {
                start: range.start + done,
                len: range.len - done,
            };
            let fetched = tokio::select! {
                fetched = self.fetch_from(&h, hash, rest, &out) => fetched,
                // Nobody is left to read what this holder would send.
                () = out.closed() => return Ok(Fetched::ReaderLeft),
            };
            let (n, failed) = match fetched {
                Ok(n) => (n, None),
                Err((n, e)) => (n, Some(e)),
            };
            done += n;
            failover.report(n > 0, now());
            match failed {
                None if done == range.len => return Ok(Fetched::Whole),
                None if out.is_closed() => return Ok(Fetched::ReaderLeft),
                None => {}
                Some(e) => {
                    tracing::debug!(peer = %h.id, error = %e, "fetch failed; trying the next holder");
                    if done == range.len {
                        // It failed after its last byte (it sent more than the slice):
                        // counted, but every byte of the range went out verified.
                        return Ok(Fetched::Whole);
                    }
                    last = e;
                }
            }
        }
        if failover.gave_up() {
            metrics::counter!("fetch_failover_given_up_total").increment(1);
            self.stats
                .failovers_given_up
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(last)
    }

    /// Asks `peer` for a small verified slice (a TAIL, or a GET of a short range) and
    /// checks it: the header names the range asked for, and the slice verifies against
    /// the id. Returns the object's size as the verified slice states it.
    async fn small_slice(
        &self,
        peer: &NetPeer,
        hash: Hash,
        request: ObjectRequest,
        expect: impl FnOnce(u64) -> ByteRange,
    ) -> Result<(u64, Bytes), FetchError> {
        self.transport.connect(peer.addr, Some(peer.id)).await?;
        let mut ex = self
            .transport
            .open_exchange(peer.id, APP_PROTO_OBJECT, Bytes::new())
            .await?;
        ex.send(message::encode(&request), true).await?;
        let first = match tokio::time::timeout(self.limits.io_timeout, ex.recv()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Err(TransportError::UnexpectedEnd.into()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(TransportError::Timeout {
                    what: "object proof",
                    after: self.limits.io_timeout,
                }
                .into());
            }
        };
        let status = Status::from_code(first.code).unwrap_or(Status::Internal);
        if !matches!(status, Status::Ok | Status::Partial) {
            return Err(FetchError::Status(status));
        }
        let ended = first.flags.contains(wire::Flags::END);
        let header = first.body(ex.limits()).map_err(TransportError::Decode)?;
        let ObjectResponse::Found { size, range } = message::decode::<ObjectResponse>(&header)?
        else {
            return Err(FetchError::Integrity);
        };
        if range != expect(size) {
            return Err(FetchError::Integrity);
        }
        let encoded = if ended {
            Bytes::new()
        } else {
            ex.read_response(PROOF_MAX).await?.1
        };
        if size == 0 {
            // Only one object is empty: its id says so, no bytes can.
            return if hash == *blake3::hash(b"").as_bytes() {
                Ok((0, Bytes::new()))
            } else {
                Err(FetchError::ProofFailed)
            };
        }
        // The slice starts with the length the holder claims; decoding it verifies every
        // chunk it covers, and a slice that reaches the final chunk authenticates the length.
        let claimed = encoded
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes);
        if claimed != Some(size)
            || crate::store::decode_slice(&encoded, &hash, range.start, range.len).is_err()
        {
            return Err(FetchError::ProofFailed);
        }
        Ok((size, encoded))
    }

    /// The size of `hash` at `peer`, proven by its final group, and for an object of one
    /// group (at most 16 KiB) its bytes, verified (the final group is the whole object):
    /// `Err(Status(NotFound))` when the peer does not hold it, `Err(Integrity)` when its
    /// answer does not verify.
    pub async fn probe_tail(&self, peer: &NetPeer, hash: Hash) -> Result<Tail, FetchError> {
        let (size, encoded) = self
            .small_slice(peer, hash, ObjectRequest::Tail { hash }, ByteRange::tail)
            .await?;
        let whole = if size <= wire::tree::GROUP {
            crate::store::decode_slice(&encoded, &hash, 0, size)
                .ok()
                .map(Bytes::from)
        } else {
            None
        };
        Ok(Tail { size, whole })
    }

    /// Checks that `peer` holds `hash` (of `size` bytes) by having it serve a chunk we pick
    /// at random, verified against the id: a peer's "I have it" is a claim until then.
    pub async fn prove(&self, peer: &NetPeer, hash: Hash, size: u64) -> Result<(), FetchError> {
        let chunks = size.div_ceil(PROOF_CHUNK).max(1);
        let pick = {
            let mut b = [0u8; 8];
            let _ = getrandom::fill(&mut b);
            u64::from_le_bytes(b) % chunks
        };
        let start = pick * PROOF_CHUNK;
        let range = ByteRange {
            start,
            len: PROOF_CHUNK.min(size - start.min(size)),
        };
        let request = ObjectRequest::Get {
            hash,
            range: Some(range),
        };
        match self.small_slice(peer, hash, request, |_| range).await? {
            (s, _) if s == size => Ok(()),
            (theirs, _) => Err(FetchError::SizeDisagrees { ours: size, theirs }),
        }
    }

    /// Sends our copy of `hash` to `peer` (PUT), each piece re-verified as it is read from
    /// the store; `Ok(true)` once the peer answered `Stored` (durable there, after its
    /// fsync), `Ok(false)` if it answered `Held` (it says it had it: a claim to check).
    pub async fn push_bytes(
        &self,
        peer: &NetPeer,
        hash: Hash,
        size: u64,
    ) -> Result<bool, FetchError> {
        let mut ex = self.open_push(peer).await?;
        let sent = self.send_put(&mut ex, hash, size).await;
        // Our own store failed: the receiver's answer can only be about the bytes we cut
        // short; dropping the exchange resets the stream, so it keeps nothing.
        if let Err(e @ (FetchError::Local(_) | FetchError::LocalCorrupt)) = sent {
            return Err(e);
        }
        self.push_answer(&mut ex, sent).await
    }

    /// An object exchange with `peer`, for a push.
    pub(crate) async fn open_push(
        &self,
        peer: &NetPeer,
    ) -> Result<crate::transport::Exchange, FetchError> {
        let t = &self.transport;
        t.connect(peer.addr, Some(peer.id)).await?;
        Ok(t.open_exchange(peer.id, APP_PROTO_OBJECT, Bytes::new())
            .await?)
    }

    /// A push's answer, within four I/O timeouts: `Ok(true)` for `Stored` (when `sent`,
    /// how our sending ended, is `Ok`), `Ok(false)` for `Held`, else why not. A receiver
    /// that refuses (403, 413, 429) answers early and stops our side: its answer says why
    /// better than our failed write does.
    pub(crate) async fn push_answer(
        &self,
        ex: &mut crate::transport::Exchange,
        sent: Result<(), FetchError>,
    ) -> Result<bool, FetchError> {
        let wait = self.limits.io_timeout * 4;
        let answer = tokio::time::timeout(wait, ex.read_response(1024))
            .await
            .map_err(|_| TransportError::Timeout {
                what: "replica ack",
                after: wait,
            });
        match (answer, sent) {
            (Ok(Ok((Status::Ok, reply))), sent) => match message::decode::<ObjectResponse>(&reply)?
            {
                // A `Held` answer comes before the body is read: our writes may have been
                // stopped, which is no failure.
                ObjectResponse::Held => Ok(false),
                ObjectResponse::Stored => sent.map(|()| true),
                _ => Err(FetchError::Status(Status::BadRequest)),
            },
            (Ok(Ok((Status::TooManyRequests, reason))), _) if &reason[..] == IN_PROGRESS => {
                Err(FetchError::InProgress)
            }
            (Ok(Ok((Status::Forbidden, reason))), _) if &reason[..] == OVER_BUDGET => {
                Err(FetchError::OverBudget)
            }
            (Ok(Ok((status, reason))), _)
                if !reason.is_empty() && &reason[..] != super::serve::TOO_SLOW.as_bytes() =>
            {
                Err(FetchError::RefusedUnread(status, reason_text(&reason)))
            }
            (Ok(Ok((status, _))), _) => Err(FetchError::Status(status)),
            (Ok(Err(e)), _) => Err(e.into()),
            (Err(e), _) => Err(e.into()),
        }
    }

    async fn send_put(
        &self,
        ex: &mut crate::transport::Exchange,
        hash: Hash,
        size: u64,
    ) -> Result<(), FetchError> {
        ex.send(
            message::encode(&ObjectRequest::Put { hash, size }),
            size == 0,
        )
        .await?;
        if size == 0 {
            return Ok(());
        }
        // A piece that fails verification ends the push (the store has dropped the copy)
        // instead of spreading bad bytes.
        let reader = self.store.push_reader(&hash, size).map_err(|e| match e {
            StoreError::Corrupt => FetchError::LocalCorrupt,
            other => FetchError::Local(other.to_string()),
        })?;
        let piece = super::serve::TRANSFER_PIECE.min(ex.max_payload());
        let mut pieces = PieceReader::new(reader, piece).prefetch(super::serve::PREFETCH);
        let mut sent = 0u64;
        let mut pace = super::pace::Pace::new(self);
        while let Some(piece) = pieces.recv().await {
            let piece = piece.map_err(|e| match StoreError::from_read(e) {
                StoreError::Corrupt => FetchError::LocalCorrupt,
                other => FetchError::Local(other.to_string()),
            })?;
            sent += piece.len() as u64;
            // A receiver that reads slower than the minimum rate is left: its copy is not
            // worth holding our send for hours.
            pace.progress(piece.len())?;
            ex.send(piece, sent == size).await?;
        }
        if sent != size {
            return Err(FetchError::Local(format!(
                "the store gave {sent} of {size} bytes"
            )));
        }
        Ok(())
    }

    /// Makes sure `peer` holds a copy it can prove, running the steps `overlay::Placement`
    /// asks for: the planner's way (no `write`), and an operator's repair
    /// (`WritePlacement::push_first` false), prove first and push (if `push`) only to a
    /// target that lacks the object; a write's pushes first; a placement run for a write or
    /// a repair reports the copy to it once it counts there (its `Stored`, or its proof). A write's streamed push
    /// (one that ran beside the upload, `tee`) stands for the first push when it got an
    /// answer; when it ended for a reason of ours, or any other way, the copy is pushed
    /// from the store, and the streamed attempt is blamed on nobody.
    pub(crate) async fn place_copy(
        &self,
        peer: &NetPeer,
        hash: Hash,
        size: u64,
        push: bool,
        write: Option<WritePlacement>,
    ) -> Placed {
        let (durable, mut streamed, push_first) = match write {
            Some(w) => (Some(w.durable), w.streamed, w.push_first),
            None => (None, None, false),
        };
        // Whether our failed streamed push may have left bytes charged to us there (it
        // sent some, and the target did not refuse it before reading).
        let mut charged = false;
        let mut placement = if push_first && push {
            Placement::push_first()
        } else {
            Placement::prove_first(push)
        };
        // The last error, kept for the report (the placement keeps only its fault).
        let mut error = None;
        let failed = |e: FetchError, error: &mut Option<FetchError>| {
            self.note_failure(peer, &e);
            let fault = e.fault();
            *error = Some(e);
            fault
        };
        loop {
            match placement.poll() {
                PlaceStep::Prove => {
                    let answer = match self.prove(peer, hash, size).await {
                        Ok(()) => ProofAnswer::Proven,
                        // Kept: after our push it ends the placement (the target
                        // declined to hold what it took).
                        Err(e @ FetchError::Status(Status::NotFound)) => {
                            error = Some(e);
                            ProofAnswer::Lacks
                        }
                        Err(e) => ProofAnswer::Failed(failed(e, &mut error)),
                    };
                    placement.handle_proof(answer);
                }
                PlaceStep::Push => {
                    let early = match streamed.take() {
                        Some(push) => {
                            let end = push.outcome().await;
                            let outcome = end.outcome_label("pushed_again");
                            metrics::counter!("replica_pushes_streamed_total", "outcome" => outcome)
                                .increment(1);
                            Some(end)
                        }
                        None => None,
                    };
                    let pushed = match early {
                        Some(StreamedEnd::Stored) => Ok(true),
                        Some(StreamedEnd::Held) => Ok(false),
                        Some(StreamedEnd::Failed { charged: c }) => {
                            charged = c;
                            self.push_bytes(peer, hash, size).await
                        }
                        None => self.push_bytes(peer, hash, size).await,
                    };
                    let pushed = match pushed {
                        // What our failed streamed push was charged still counts against
                        // the target's budget for us: its refusal is ours, not its fault.
                        Err(FetchError::OverBudget) if charged => Err(FetchError::Local(
                            "the target's budget went on our streamed push".into(),
                        )),
                        other => other,
                    };
                    let answer = match pushed {
                        Ok(true) => PushAnswer::Stored,
                        Ok(false) => PushAnswer::Held,
                        Err(e) => PushAnswer::Failed(failed(e, &mut error)),
                    };
                    placement.handle_push(answer);
                }
                PlaceStep::Durable => {
                    if let Some(d) = &durable {
                        d.report().await;
                    }
                }
                PlaceStep::Done(end) => return Placed { end, error },
            }
        }
    }

    /// Counts a holder whose answer to a proof or a push was wrong, and reports a proof
    /// that failed verification to the DHT as a lie (`FetchError::ProofFailed`: a proof is
    /// a short range the holder verifies in its own store before serving it, so bytes that
    /// fail under its key are not rot). An answer we cannot read (a version we do not
    /// speak), a size that disagrees with ours (which of us is wrong a middle chunk cannot
    /// tell) and a long fetch's failure (possibly rot) are not reported.
    pub(crate) fn note_failure(&self, peer: &NetPeer, e: &FetchError) {
        if matches!(
            e,
            FetchError::Integrity
                | FetchError::Message(_)
                | FetchError::ProofFailed
                | FetchError::SizeDisagrees { .. }
        ) {
            metrics::counter!("integrity_fail_total", "source" => "proof").increment(1);
            self.stats
                .holders_lied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(peer = %peer.id, error = %e, "a holder's proof failed verification");
            if matches!(e, FetchError::ProofFailed) {
                self.dht.peer_lied(peer.clone());
            }
        } else {
            tracing::debug!(peer = %peer.id, error = %e, "placing a copy failed");
        }
    }
}

/// A refusal's reason as an operator may read it: at most 64 of the peer's bytes, each
/// kept only if it may appear in a reason code (letters, digits, `_ - . : /`), so a liar
/// cannot forge a field or a quote in a text log line.
fn reason_text(reason: &[u8]) -> String {
    reason
        .iter()
        .take(64)
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b':' | b'/' => b as char,
            _ => '?',
        })
        .collect()
}

/// The reason a receiver gives for refusing a second concurrent push of one object.
const IN_PROGRESS: &[u8] = b"push_in_progress";
/// The reason a receiver gives for a push over its budget for the pusher.
const OVER_BUDGET: &[u8] = b"push_over_budget";

/// Largest encoded answer to a proof (a group, its parents and the length header).
const PROOF_MAX: usize = 24 * 1024;
/// Bytes a proof asks for: one BLAKE3 chunk (the answer carries its whole 16 KiB group).
const PROOF_CHUNK: u64 = 1024;

/// A holder's proven answer to TAIL.
#[derive(Debug, Clone)]
pub struct Tail {
    /// The object's size, verified.
    pub size: u64,
    /// The whole object, verified, when it is one group (at most 16 KiB).
    pub whole: Option<Bytes>,
}

/// What became of one copy placed at a peer: how the placement ended and, if it failed on
/// an answer, the error behind it.
#[derive(Debug)]
pub(crate) struct Placed {
    /// How it ended.
    pub end: PlaceEnd,
    /// What went wrong, in detail, for logs and reports.
    pub error: Option<FetchError>,
}

impl Placed {
    /// A placement that ended on a failure of our side (its task, its wait).
    pub(crate) fn failed(e: FetchError) -> Self {
        Placed {
            end: PlaceEnd::Failed(e.fault()),
            error: Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reason code passes as it is; what could break a log line out of its field, or
    /// run on past 64 bytes, does not.
    #[test]
    fn a_peers_reason_is_cut_to_what_a_reason_code_holds() {
        assert_eq!(reason_text(b"push_not_responsible"), "push_not_responsible");
        assert_eq!(
            reason_text(b"x\" peer=\\forged\n\x1b[31m"),
            "x??peer??forged???31m"
        );
        assert_eq!(reason_text(&[b'a'; 100]).len(), 64);
    }

    /// Views of one body that follow each other go on as one piece; a view of an earlier
    /// body (a group split across frames) passes through first, in order; a gap in the
    /// body starts a new piece.
    #[test]
    fn views_of_one_body_are_joined_in_order() {
        let earlier = Bytes::from(vec![1u8; 100]);
        let body = Bytes::from((0..=255u8).collect::<Vec<u8>>());
        let mut j = Joined::new(body.clone());
        let mut sent: Vec<Bytes> = Vec::new();
        for v in [
            earlier.slice(90..),
            body.slice(0..10),
            body.slice(10..50),
            body.slice(60..70),
            body.slice(70..80),
        ] {
            sent.extend(j.push(v).into_iter().flatten());
        }
        sent.extend(j.take());
        let got: Vec<&[u8]> = sent.iter().map(|b| &b[..]).collect();
        assert_eq!(
            got,
            vec![&earlier[90..], &body[0..50], &body[60..80]],
            "joined runs, in order"
        );
        // The joined runs are views of the body, not copies.
        assert_eq!(sent[1].as_ptr(), body.as_ptr());
    }
}
