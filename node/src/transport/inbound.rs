//! Serving inbound streams: route each request by its app protocol.
//!
//! The transport reads and checks a stream's START frame itself, then: app protocol 0
//! (control) is answered here (PING → PONG; HELLO after the first exchange is a 400); an app
//! protocol the [`InboundHandler`] does not serve gets 404 and the connection stays up; the
//! rest go to the handler as an [`InboundExchange`], bounded by `inbound_timeout` (unless the
//! handler bounds that protocol by progress itself) and by `max_inbound_requests`
//! exchanges at once across the node (past it: 503). A handler that
//! returns or times out without answering leaves its stream reset, never half-answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use wire::control::{APP_PROTO_CONTROL, ControlRequest, ControlResponse};
use wire::{Direction, Flags, Frame, Status, message};

use super::Shared;
use super::error::TransportError;
use super::exchange::InboundExchange;
use super::peers::PeerConn;
use super::stats::Side;
use super::stream::FramedStream;

/// The future an [`InboundHandler`] returns for one exchange.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send>>;

/// The application side of the transport: serves the app protocols above control.
///
/// Boxed futures keep the trait object-safe, so the transport holds one `Arc<dyn
/// InboundHandler>` and is not generic over the application.
pub trait InboundHandler: Send + Sync + 'static {
    /// The app protocols served (stated in HELLO); requests for any other get 404. Read once,
    /// when the transport binds.
    fn app_protos(&self) -> Vec<u16>;

    /// Serves one exchange: read the request from `exchange`, answer on it. Errors are logged
    /// at debug level; an exchange dropped unanswered is reset.
    fn handle(&self, exchange: InboundExchange) -> HandlerFuture;

    /// Whether exchanges of `app_proto` bound themselves by their progress (every frame
    /// within `io_timeout`, a minimum rate) and so are not cut at `inbound_timeout`: a
    /// large transfer may take longer than any fixed bound and still be healthy.
    fn bounds_itself(&self, _app_proto: u16) -> bool {
        false
    }

    /// Whether a request of `app_proto` whose whole body is `body` may be served from 0-RTT
    /// data: serving it twice (an attacker may replay early data) changes nothing but load.
    /// Only such a request goes out in a dial's first flight, and a listener serves only
    /// such a request before the handshake completes; others wait for it (see `tls`).
    /// Default: none.
    fn replay_safe(&self, _app_proto: u16, _body: &[u8]) -> bool {
        false
    }
}

/// A handler that serves no app protocol: every request above control gets 404.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoApps;

impl InboundHandler for NoApps {
    fn app_protos(&self) -> Vec<u16> {
        Vec::new()
    }

    fn handle(&self, _exchange: InboundExchange) -> HandlerFuture {
        Box::pin(async { Ok(()) })
    }
}

/// Serves one inbound stream from its first frame to its end.
pub(crate) async fn serve_stream(
    shared: Arc<Shared>,
    pc: PeerConn,
    pair: (quinn::SendStream, quinn::RecvStream),
) {
    let mut fs = shared.framed_on(&pc, pair, Direction::Requests);
    let first = match fs.recv_frame().await {
        Ok(Some(first)) => first,
        // A rejected first frame was counted and answered by the stream itself.
        Ok(None) | Err(_) => return,
    };
    shared.stats.request_served();
    let (app, corr) = (first.app_proto_id, first.corr_id);
    // The rare paths below are boxed: a spawned task's future is copied whole on spawn and
    // on completion, so its size is paid on every request.
    if !*pc.handshake.borrow() && !Box::pin(confirmed(&shared, &pc, &first)).await {
        return;
    }
    if app == APP_PROTO_CONTROL {
        Box::pin(control(&shared, fs, first)).await;
        return;
    }
    if !shared.served.contains(&app) {
        let _ = Box::pin(fs.reply(Status::NotFound, app, corr, Bytes::new())).await;
        return;
    }
    // The peer's share first, then the node's: a few identities cannot take every slot.
    let Ok(share) = pc.inbound.clone().try_acquire_owned() else {
        shared.stats.reject("inbound_per_peer");
        let _ = Box::pin(fs.reply(Status::Unavailable, app, corr, Bytes::new())).await;
        return;
    };
    let Ok(slot) = shared.inbound_slots.clone().try_acquire_owned() else {
        let _ = Box::pin(fs.reply(Status::Unavailable, app, corr, Bytes::new())).await;
        return;
    };
    let started = Instant::now();
    let exchange = InboundExchange::new(fs, (pc.info.id, pc.dial_addr), first, vec![share, slot]);
    let handled = shared.handler.handle(exchange);
    let outcome = if shared.handler.bounds_itself(app) {
        Ok(handled.await)
    } else {
        tokio::time::timeout(shared.config.inbound_timeout, handled).await
    };
    shared
        .stats
        .exchange_done(Side::Server, app, started.elapsed());
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(peer = %pc.info.id, app, error = %e, "handler failed"),
        Err(_) => tracing::debug!(peer = %pc.info.id, app, "handler timed out"),
    }
}

/// Whether `first`'s request may be served now: at once when the connection's handshake
/// completed or the request is safe to replay (control, or all in this frame and
/// [`InboundHandler::replay_safe`]); else once the handshake completes, `false` if it
/// never does (a replayed flight) within `handshake_timeout`.
async fn confirmed(shared: &Shared, pc: &PeerConn, first: &Frame) -> bool {
    let mut handshake = pc.handshake.clone();
    if *handshake.borrow() {
        return true;
    }
    let whole = first.flags.contains(Flags::END) && !first.flags.contains(Flags::COMP);
    let safe = first.app_proto_id == APP_PROTO_CONTROL
        || (whole
            && shared.served.contains(&first.app_proto_id)
            && shared
                .handler
                .replay_safe(first.app_proto_id, &first.payload));
    if safe {
        return true;
    }
    shared.stats.early_held();
    let t = shared.config.handshake_timeout;
    matches!(
        tokio::time::timeout(t, handshake.wait_for(|done| *done)).await,
        Ok(Ok(_))
    )
}

/// Answers app protocol 0 on an established connection.
async fn control(shared: &Shared, mut fs: FramedStream, first: Frame) {
    let corr = first.corr_id;
    let max = fs.limits().max_frame as usize;
    let Ok((_, body)) = fs.collect(Some(first), max).await else {
        return;
    };
    let (status, reply) = match message::decode::<ControlRequest>(&body) {
        Ok(ControlRequest::Ping(nonce)) => {
            (Status::Ok, message::encode(&ControlResponse::Pong(nonce)))
        }
        // HELLO opens a connection; a second one is out of sequence.
        Ok(ControlRequest::Hello(_)) => (Status::BadRequest, Bytes::new()),
        Err(e) => {
            shared.stats.reject(e.reason());
            (Status::BadRequest, Bytes::new())
        }
    };
    let _ = fs.reply(status, APP_PROTO_CONTROL, corr, reply).await;
}
