//! The two ends of one OAP/1 exchange, as the application sees them.
//!
//! [`Exchange`] is the requester's end: it sends `REQ` frames (START on the first, with the
//! capability; END on the last) and receives checked `RESP` frames. [`InboundExchange`] is the
//! responder's end, handed to an [`InboundHandler`](super::InboundHandler) with the request's
//! START frame already read and routed. Both stream frame by frame for large transfers and
//! offer whole-body helpers for small messages; bodies larger than one frame are split at the
//! negotiated `max_frame`. Every wait is bounded by the transport's `io_timeout` (within a
//! whole request, by its `request_timeout` instead when that is the shorter), and an end
//! dropped before it sent END resets its stream.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use wire::{Flags, Frame, HEADER_LEN, Limits, NodeId, Status};

use super::error::TransportError;
use super::peers::PeerConn;
use super::stream::FramedStream;

/// The requester's end of an exchange opened with
/// [`Transport::open_exchange`](super::Transport::open_exchange).
#[derive(Debug)]
pub struct Exchange {
    fs: FramedStream,
    peer: NodeId,
    app_proto_id: u16,
    corr_id: u64,
    cap: Bytes,
}

impl Exchange {
    pub(crate) fn new(
        fs: FramedStream,
        peer: NodeId,
        app_proto_id: u16,
        corr_id: u64,
        cap: Bytes,
    ) -> Exchange {
        Exchange {
            fs,
            peer,
            app_proto_id,
            corr_id,
            cap,
        }
    }

    /// The peer this exchange runs with.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The exchange's correlation id.
    pub fn corr_id(&self) -> u64 {
        self.corr_id
    }

    /// The app protocol of the exchange.
    pub fn app_proto_id(&self) -> u16 {
        self.app_proto_id
    }

    /// The terms agreed with this peer in HELLO: what a frame's body (COMP undone) is held
    /// to.
    pub fn limits(&self) -> &Limits {
        self.fs.limits()
    }

    /// The largest payload the next [`send`](Self::send) accepts (the first frame also
    /// carries the capability).
    pub fn max_payload(&self) -> usize {
        let cap = if self.fs.has_sent_start() {
            0
        } else {
            self.cap.len()
        };
        (self.fs.limits().max_frame as usize).saturating_sub(HEADER_LEN + cap)
    }

    /// Sends one `REQ` frame; `end` marks the last.
    pub async fn send(&mut self, payload: Bytes, end: bool) -> Result<(), TransportError> {
        let mut flags = Flags::REQ;
        let mut frame_cap = Bytes::new();
        if !self.fs.has_sent_start() {
            flags = flags | Flags::START;
            frame_cap = self.cap.clone();
        }
        if end {
            flags = flags | Flags::END;
        }
        let mut frame = Frame::new(flags, self.app_proto_id, self.corr_id, payload);
        frame.cap = frame_cap;
        self.fs.send_frame(&frame).await
    }

    /// Sends a whole request body, split into as many frames as `max_frame` needs, the last
    /// one with END. A responder that answers early (say 413 before the body is in) stops
    /// our side: that is `Err(TransportError::Write(Stopped))`, and
    /// [`read_response`](Self::read_response) still returns its answer.
    pub async fn send_body(&mut self, mut body: Bytes) -> Result<(), TransportError> {
        loop {
            // The first frame's room is less the capability's (`max_payload` knows).
            let part = body.split_to(body.len().min(self.max_payload().max(1)));
            let end = body.is_empty();
            self.send(part, end).await?;
            if end {
                return Ok(());
            }
        }
    }

    /// Sends a whole request body as [`send_body`](Self::send_body) does, but takes an
    /// early answer's stop as success: the response is still there to read.
    pub(crate) async fn send_request(&mut self, body: Bytes) -> Result<(), TransportError> {
        match self.send_body(body).await {
            Ok(()) | Err(TransportError::Write(quinn::WriteError::Stopped(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Counts an exchange opened before its connection was registered (the request sent
    /// with HELLO) as the connection's use and against its buffer budget, from now on.
    pub(crate) fn joined(self, pc: &PeerConn) -> Exchange {
        Exchange {
            fs: self
                .fs
                .with_budget(pc.buffer.clone())
                .with_activity(pc.usage.begin()),
            ..self
        }
    }

    /// Leaves the bound on time to the caller (see `FramedStream::timed_by_caller`).
    pub(crate) fn timed_by_caller(self) -> Exchange {
        Exchange {
            fs: self.fs.timed_by_caller(),
            ..self
        }
    }

    /// The next `RESP` frame; `None` after the one with END.
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        self.fs.recv_frame().await
    }

    /// Reads the rest of the response: its status and its body (COMP undone), at most
    /// `max_bytes`.
    pub async fn read_response(
        &mut self,
        max_bytes: usize,
    ) -> Result<(Status, Bytes), TransportError> {
        let (code, body) = self.fs.collect(None, max_bytes).await?;
        // A decoded RESP frame always carries a known status.
        let status = Status::from_code(code).ok_or(TransportError::UnexpectedEnd)?;
        Ok((status, body))
    }
}

/// The responder's end of an exchange, handed to an
/// [`InboundHandler`](super::InboundHandler).
#[derive(Debug)]
pub struct InboundExchange {
    fs: FramedStream,
    peer: NodeId,
    dial_addr: SocketAddr,
    first: Option<Frame>,
    app_proto_id: u16,
    corr_id: u64,
    tenant_id: u128,
    cap: Bytes,
    // Holds the transport's inbound request slots (the peer's share and the node's) for as
    // long as the exchange lives.
    _slots: Vec<OwnedSemaphorePermit>,
}

impl InboundExchange {
    pub(crate) fn new(
        fs: FramedStream,
        (peer, dial_addr): (NodeId, SocketAddr),
        first: Frame,
        slots: Vec<OwnedSemaphorePermit>,
    ) -> InboundExchange {
        InboundExchange {
            fs,
            peer,
            dial_addr,
            app_proto_id: first.app_proto_id,
            corr_id: first.corr_id,
            tenant_id: first.tenant_id,
            cap: first.cap.clone(),
            first: Some(first),
            _slots: slots,
        }
    }

    /// The peer that sent the request, as proven in its TLS handshake.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Where to dial the peer back (`PeerInfo::dial_addr` of the connection that carried
    /// the request). Known even before that connection enters the peer table, as a request
    /// served from 0-RTT data is.
    pub fn peer_dial_addr(&self) -> SocketAddr {
        self.dial_addr
    }

    /// The request's app protocol.
    pub fn app_proto_id(&self) -> u16 {
        self.app_proto_id
    }

    /// The request's correlation id.
    pub fn corr_id(&self) -> u64 {
        self.corr_id
    }

    /// The request's tenant.
    pub fn tenant_id(&self) -> u128 {
        self.tenant_id
    }

    /// The capability token of the request's START frame (empty if none).
    pub fn cap(&self) -> &Bytes {
        &self.cap
    }

    /// The terms agreed with this peer in HELLO: what a frame's body (COMP undone) is held
    /// to.
    pub fn limits(&self) -> &Limits {
        self.fs.limits()
    }

    /// The largest payload one response frame can carry.
    pub fn max_payload(&self) -> usize {
        (self.fs.limits().max_frame as usize).saturating_sub(HEADER_LEN)
    }

    /// The next `REQ` frame, starting with the START frame; `None` after the one with END.
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        match self.first.take() {
            Some(f) => Ok(Some(f)),
            None => self.fs.recv_frame().await,
        }
    }

    /// Reads the rest of the request body (COMP undone), at most `max_bytes`; past that the
    /// peer gets 413.
    pub async fn read_body(&mut self, max_bytes: usize) -> Result<Bytes, TransportError> {
        let first = self.first.take();
        let (_, body) = self.fs.collect(first, max_bytes).await?;
        Ok(body)
    }

    /// Sends one `RESP` frame with `status`; `end` marks the last.
    pub async fn send(
        &mut self,
        status: Status,
        payload: Bytes,
        end: bool,
    ) -> Result<(), TransportError> {
        let mut flags = Flags::RESP;
        if !self.fs.has_sent_start() {
            flags = flags | Flags::START;
        }
        if end {
            flags = flags | Flags::END;
        }
        let mut frame = Frame::new(flags, self.app_proto_id, self.corr_id, payload);
        frame.code = status.code();
        self.fs.send_frame(&frame).await
    }

    /// Sends a whole response, split into as many frames as `max_frame` needs.
    pub async fn respond(mut self, status: Status, mut body: Bytes) -> Result<(), TransportError> {
        let room = self.max_payload().max(1);
        loop {
            let part = body.split_to(body.len().min(room));
            let end = body.is_empty();
            self.send(status, part, end).await?;
            if end {
                return Ok(());
            }
        }
    }

    /// Whether the response is complete (END sent).
    pub fn is_answered(&self) -> bool {
        self.fs.has_sent_end()
    }
}
