//! One OAP/1 exchange's bidirectional QUIC stream, as frames.
//!
//! This is where bytes from a peer become frames: an incremental [`FrameDecoder`] whose buffer
//! never exceeds `max_frame` (reads stop when it is full, so QUIC flow control pushes back on
//! the sender), then a [`SequenceChecker`] for the direction we receive. Any rule broken is
//! counted under its reason in `oap_rejects_total`, and the stream, never the connection, is
//! ended: a responder first answers 400 (413 for size) if it has not started its response,
//! then stops reading; a requester resets its side. Dropping a stream that has not sent END
//! resets it, so a peer never mistakes an abandoned exchange for a complete one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::future::Either;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::Semaphore;
use tokio::time::error::Elapsed;
use wire::{DecodeError, Direction, Flags, Frame, FrameDecoder, Limits, SequenceChecker, Status};

use super::error::{TransportError, codes};
use super::stats::TransportStats;

/// Payloads shorter than this are copied behind their header into one buffer (one write,
/// one chunk); longer ones are sent as their own buffer, without the copy.
const COPY_BELOW: usize = 4 * 1024;

/// Bound on writing the 400 that explains a rejected stream; it is one 38-byte frame.
const FAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// `fut` within `limit` if there is one; without, no timer is armed. A plain function
/// returning one enum, so the future is held once (not once per branch, nor once more as
/// an async fn's argument).
fn within<F: Future>(
    limit: Option<Duration>,
    fut: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    match limit {
        Some(t) => Either::Left(tokio::time::timeout(t, fut)),
        None => Either::Right(fut.map(Ok)),
    }
}

/// The stream error a read through tokio's `AsyncRead` wrapped: quinn's own, given back.
fn read_error(e: std::io::Error) -> TransportError {
    match e
        .into_inner()
        .map(|inner| inner.downcast::<quinn::ReadError>())
    {
        Some(Ok(read)) => TransportError::Read(*read),
        // quinn's reads fail with nothing else; said, should a new version do so.
        other => {
            tracing::warn!(error = ?other, "a stream read failed with an error quinn does not make");
            TransportError::Read(quinn::ReadError::ClosedStream)
        }
    }
}

/// A bidirectional stream carrying frames one way and checked frames the other.
#[derive(Debug)]
pub(crate) struct FramedStream {
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    checker: SequenceChecker,
    direction: Direction,
    stats: Arc<TransportStats>,
    /// The bound on each read and write; `None` when the caller bounds the whole exchange
    /// more tightly (a request within `request_timeout`), which saves a timer per wait.
    io_timeout: Option<Duration>,
    /// The app protocol and corr_id of the peer's START frame, once seen.
    start: Option<(u16, u64)>,
    recv_fin: bool,
    /// The peer sent STOP_SENDING: nothing more goes out, but reading goes on.
    send_stopped: bool,
    sent_start: bool,
    sent_end: bool,
    aborted: bool,
    /// The connection's budget for bytes of partial frames, and how much of it we hold.
    budget: Option<Arc<Semaphore>>,
    held: usize,
    /// Marks the connection busy while the stream lives (see `peers::Usage`).
    _active: Option<super::peers::ActiveStream>,
}

impl FramedStream {
    /// Wraps a stream; `direction` is what we receive (`Requests` on the responder side).
    pub(crate) fn new(
        (send, recv): (SendStream, RecvStream),
        limits: Limits,
        direction: Direction,
        stats: Arc<TransportStats>,
        io_timeout: Duration,
    ) -> FramedStream {
        FramedStream {
            send,
            recv,
            decoder: FrameDecoder::new(limits),
            checker: SequenceChecker::new(direction),
            direction,
            stats,
            io_timeout: Some(io_timeout),
            start: None,
            recv_fin: false,
            send_stopped: false,
            sent_start: false,
            sent_end: false,
            aborted: false,
            budget: None,
            held: 0,
            _active: None,
        }
    }

    /// Counts the bytes this stream buffers against `budget`, shared by the connection's
    /// streams: reads wait for room in it (within `io_timeout`).
    pub(crate) fn with_budget(mut self, budget: Arc<Semaphore>) -> FramedStream {
        self.budget = Some(budget);
        self
    }

    /// Leaves the bound on time to the caller, which holds the whole exchange to a tighter
    /// one than `io_timeout`.
    pub(crate) fn timed_by_caller(mut self) -> FramedStream {
        self.io_timeout = None;
        self
    }

    /// Counts this stream as use of its connection, from now until it is dropped.
    pub(crate) fn with_activity(mut self, active: super::peers::ActiveStream) -> FramedStream {
        self._active = Some(active);
        self
    }

    /// Returns budget for bytes that left the decoder as frames.
    fn release_budget(&mut self) {
        let keep = self.decoder.buffered();
        if let Some(b) = &self.budget {
            if self.held > keep {
                b.add_permits(self.held - keep);
                self.held = keep;
            }
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        self.decoder.limits()
    }

    pub(crate) fn has_sent_start(&self) -> bool {
        self.sent_start
    }

    pub(crate) fn has_sent_end(&self) -> bool {
        self.sent_end
    }

    /// The peer's next frame, waiting at most `io_timeout`; `None` once its END was returned.
    /// A broken rule or a timeout ends the stream (see the module doc) before returning.
    pub(crate) async fn recv_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        if self.checker.is_ended() {
            return Ok(None);
        }
        if self.aborted {
            return Err(TransportError::Closed);
        }
        let limit = self.io_timeout;
        let result = within(limit, self.read_frame()).await.unwrap_or_else(|_| {
            Err(TransportError::Timeout {
                what: "frame from peer",
                after: limit.unwrap_or_default(),
            })
        });
        if let Err(e) = &result {
            // Boxed: the rare path's future (an answer to send) would otherwise triple the
            // size of every read's.
            Box::pin(self.fail(e)).await;
        }
        result
    }

    /// The next whole frame already in the decoder, checked.
    fn decoded(&mut self) -> Result<Option<Frame>, TransportError> {
        let next = self.decoder.next_frame();
        self.release_budget();
        let Some(frame) = next? else {
            return Ok(None);
        };
        // Even a first frame that breaks sequencing names the exchange its 400 answers.
        self.start
            .get_or_insert((frame.app_proto_id, frame.corr_id));
        self.checker.check(&frame)?;
        self.stats.frame_in();
        Ok(Some(frame))
    }

    async fn read_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        loop {
            // Decoded outside the awaits below, so no frame is kept in this future's state
            // (a spawned task's future is copied whole).
            if let Some(frame) = self.decoded()? {
                return Ok(Some(frame));
            }
            if self.recv_fin {
                self.decoder.finish()?;
                return Err(TransportError::UnexpectedEnd);
            }
            // The decoder's room (at most 16 KiB at a time), counted before it is filled.
            let want = self.decoder.room(usize::MAX);
            if want == 0 {
                // Unreachable: a full buffer always holds a whole frame or a rejected length.
                return Err(TransportError::UnexpectedEnd);
            }
            if let Some(budget) = &self.budget {
                // Room for `want` more bytes in the connection's budget before reading them.
                let permit = budget
                    .acquire_many(want as u32)
                    .await
                    .map_err(|_| TransportError::Closed)?;
                permit.forget();
                self.held += want;
            }
            // Straight into the decoder's room, as many packets' data as fit, in one call
            // (one lock of the connection), not one chunk per packet.
            let read =
                tokio::io::AsyncReadExt::read_buf(&mut self.recv, &mut self.decoder.fill(want))
                    .await;
            let got = *read.as_ref().unwrap_or(&0);
            if let Some(budget) = &self.budget {
                budget.add_permits(want - got);
                self.held -= want - got;
            }
            if read.map_err(read_error)? == 0 {
                self.recv_fin = true;
            }
        }
    }

    /// Writes one frame, waiting at most `io_timeout`; END also finishes our side.
    pub(crate) async fn send_frame(&mut self, frame: &Frame) -> Result<(), TransportError> {
        if self.sent_end {
            return Err(TransportError::AlreadyEnded);
        }
        if self.aborted || self.send_stopped {
            return Err(TransportError::Closed);
        }
        let max = self.limits().max_frame as usize;
        if frame.encoded_len() > max {
            return Err(TransportError::FrameTooLarge {
                len: frame.encoded_len(),
                max,
            });
        }
        let write = async {
            if frame.payload.len() < COPY_BELOW {
                self.send.write_chunk(frame.to_bytes()).await
            } else {
                // The payload goes out as its own buffer: a 256 KiB object piece is not
                // copied behind a 38-byte header.
                let mut head = Vec::with_capacity(frame.encoded_len() - frame.payload.len());
                frame.encode_head(&mut head);
                let mut chunks = [Bytes::from(head), frame.payload.clone()];
                self.send.write_all_chunks(&mut chunks).await
            }
        };
        let limit = self.io_timeout;
        match within(limit, write).await {
            Ok(Ok(())) => {}
            Ok(Err(quinn::WriteError::Stopped(code))) => {
                // The peer has answered (or given up) and wants no more of our side; what it
                // sent us can still be read.
                self.send_stopped = true;
                return Err(quinn::WriteError::Stopped(code).into());
            }
            Ok(Err(e)) => {
                self.abort(codes::STREAM_CANCELLED);
                return Err(e.into());
            }
            Err(_) => {
                // A write cut off mid-frame leaves the stream unusable.
                self.abort(codes::STREAM_CANCELLED);
                return Err(TransportError::Timeout {
                    what: "frame to peer",
                    after: limit.unwrap_or_default(),
                });
            }
        }
        self.stats.frame_out();
        self.sent_start = true;
        if frame.flags.contains(Flags::END) {
            self.sent_end = true;
            let _ = self.send.finish();
            // A responder that has answered needs nothing more of the request.
            if self.direction == Direction::Requests && !self.checker.is_ended() {
                let _ = self.recv.stop(codes::STREAM_DONE);
            }
        }
        Ok(())
    }

    /// Frames until the peer's END, bodies (COMP undone) concatenated up to `max_bytes`,
    /// starting with `first` if the caller already took the START frame. Returns the START
    /// frame's code (the status on responses).
    pub(crate) async fn collect(
        &mut self,
        first: Option<Frame>,
        max_bytes: usize,
    ) -> Result<(u16, Bytes), TransportError> {
        let mut code = None;
        let mut parts: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        let mut pending = first;
        loop {
            let frame = match pending.take() {
                Some(f) => f,
                None => match self.recv_frame().await? {
                    Some(f) => f,
                    None => break,
                },
            };
            code.get_or_insert(frame.code);
            let body = frame.body(self.limits())?;
            total = total.saturating_add(body.len());
            if total > max_bytes {
                let _ = self.recv.stop(codes::STREAM_PROTOCOL);
                if self.direction == Direction::Requests && !self.sent_start {
                    let (app, corr) = self.start.unwrap_or((0, 0));
                    let _ = Box::pin(self.reply(Status::PayloadTooLarge, app, corr, Bytes::new()))
                        .await;
                }
                self.abort(codes::STREAM_CANCELLED);
                return Err(TransportError::TooLarge { max: max_bytes });
            }
            if !body.is_empty() {
                parts.push(body);
            }
            if frame.flags.contains(Flags::END) {
                break;
            }
        }
        let body = match parts.len() {
            0 => Bytes::new(),
            1 => parts.swap_remove(0),
            _ => {
                let mut all = BytesMut::with_capacity(total);
                parts.iter().for_each(|p| all.extend_from_slice(p));
                all.freeze()
            }
        };
        Ok((code.unwrap_or(0), body))
    }

    /// Answers with one `RESP|START|END` frame (404, 503, the 400s of control); as with
    /// any END a responder sends, the rest of the request is not read.
    pub(crate) async fn reply(
        &mut self,
        status: Status,
        app_proto_id: u16,
        corr_id: u64,
        body: Bytes,
    ) -> Result<(), TransportError> {
        self.send_frame(&Frame::response(status, app_proto_id, corr_id, body))
            .await
    }

    /// Ends the stream now: resets our side unless it sent END, stops reading.
    pub(crate) fn abort(&mut self, code: VarInt) {
        if self.aborted {
            return;
        }
        self.aborted = true;
        if !self.sent_end {
            let _ = self.send.reset(code);
        }
        if !self.checker.is_ended() {
            let _ = self.recv.stop(code);
        }
    }

    /// Handles an error while receiving: counts a broken rule, answers it if we are the
    /// responder and can still answer, and ends the stream.
    async fn fail(&mut self, err: &TransportError) {
        if self.aborted {
            return;
        }
        let Some(reason) = err.reject_reason() else {
            self.abort(codes::STREAM_CANCELLED);
            return;
        };
        self.stats.reject(reason);
        tracing::debug!(reason, error = %err, "rejecting stream");
        let _ = self.recv.stop(codes::STREAM_PROTOCOL);
        if self.direction == Direction::Requests && !self.sent_start {
            let status = match err {
                TransportError::Decode(
                    DecodeError::FrameTooLarge { .. } | DecodeError::DecompressBoundExceeded { .. },
                ) => Status::PayloadTooLarge,
                _ => Status::BadRequest,
            };
            let (app, corr) = self.start.unwrap_or((0, 0));
            let reply = Frame::response(status, app, corr, Bytes::new());
            let _ = tokio::time::timeout(FAULT_REPLY_TIMEOUT, self.send_frame(&reply)).await;
        }
        self.abort(codes::STREAM_PROTOCOL);
    }
}

impl Drop for FramedStream {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.add_permits(self.held);
        }
        // quinn finishes a dropped send stream; an exchange we abandon must read as cut off.
        if !self.sent_end && !self.aborted {
            let _ = self.send.reset(codes::STREAM_CANCELLED);
        }
    }
}
