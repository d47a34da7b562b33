//! HELLO: the first exchange on every new connection (app protocol 0).
//!
//! The dialer opens the connection's first stream and states its terms; the listener answers
//! with its own; each side then holds the connection to [`Hello::negotiate`] of the two, which
//! only ever lowers limits. Until HELLO is done a connection is not in the peer table. The
//! dialer does not wait for the answer to send its first request (`send`, then the request
//! on the next stream, then `answer`): that request holds to [`PRE_HELLO_MAX_FRAME`], which
//! no answer can lower, and fails with HELLO if HELLO fails. The listener serves nothing
//! before a valid HELLO: QUIC hands it the connection's streams in id order, so it reads
//! HELLO on the first and only then takes the later ones, which wait in QUIC's receive
//! buffers meanwhile (bounded by the stream and connection flow-control windows, for at
//! most `max_pending_handshakes` connections). A listener whose first stream is anything but
//! a well-formed HELLO answers 400 and the caller closes the connection with `HELLO_FAILED`.

use bytes::Bytes;
use wire::control::{
    APP_PROTO_CONTROL, ControlRequest, ControlResponse, Hello, MIN_MAX_FRAME, Negotiated,
};
use wire::{Direction, Frame, Status, message};

use super::Shared;
use super::error::TransportError;
use super::stream::FramedStream;

/// The largest frame a dialer may send before HELLO's answer: whatever the listener states,
/// [`Hello::negotiate`] refuses a `max_frame` below [`MIN_MAX_FRAME`], so a frame this size
/// is within the terms of every connection that comes to exist.
pub(crate) const PRE_HELLO_MAX_FRAME: u32 = MIN_MAX_FRAME;

/// Runs HELLO as the dialer on a fresh connection.
pub(crate) async fn dial(
    shared: &Shared,
    conn: &quinn::Connection,
) -> Result<(Hello, Negotiated), TransportError> {
    let fs = send(shared, conn).await?;
    answer(shared, fs).await
}

/// The dialer's half that goes out: opens the connection's first stream and sends our HELLO
/// on it. The stream returned waits for the answer ([`answer`]); requests may follow on
/// later streams meanwhile, within [`PRE_HELLO_MAX_FRAME`].
pub(crate) async fn send(
    shared: &Shared,
    conn: &quinn::Connection,
) -> Result<FramedStream, TransportError> {
    let pair = conn.open_bi().await?;
    let mut fs = shared.framed(pair, shared.base_limits(), Direction::Responses);
    let body = message::encode(&ControlRequest::Hello(shared.hello.clone()));
    let request = Frame::request(APP_PROTO_CONTROL, shared.corr_id(), body);
    fs.send_frame(&request).await?;
    Ok(fs)
}

/// The dialer's half that comes back: the listener's HELLO on the stream [`send`] opened,
/// and the terms both hold to.
pub(crate) async fn answer(
    shared: &Shared,
    mut fs: FramedStream,
) -> Result<(Hello, Negotiated), TransportError> {
    let (code, body) = fs
        .collect(None, shared.base_limits().max_frame as usize)
        .await?;
    match Status::from_code(code) {
        Some(Status::Ok) => {}
        Some(status) => return Err(TransportError::Status(status)),
        None => return Err(TransportError::UnexpectedEnd),
    }
    let peer = match message::decode::<ControlResponse>(&body) {
        Ok(ControlResponse::Hello(h)) => h,
        Ok(ControlResponse::Pong(_)) => {
            return Err(TransportError::Handshake("HELLO answered with PONG".into()));
        }
        Err(e) => {
            shared.stats.reject(e.reason());
            return Err(e.into());
        }
    };
    let terms = shared.hello.negotiate(&peer)?;
    Ok((peer, terms))
}

/// Runs HELLO as the listener: the connection's first stream must carry it.
pub(crate) async fn accept(
    shared: &Shared,
    conn: &quinn::Connection,
) -> Result<(Hello, Negotiated), TransportError> {
    let pair = conn.accept_bi().await?;
    let mut fs = shared.framed(pair, shared.base_limits(), Direction::Requests);
    let first = fs
        .recv_frame()
        .await?
        .ok_or(TransportError::UnexpectedEnd)?;
    let (app, corr) = (first.app_proto_id, first.corr_id);
    let not_hello = || TransportError::Handshake("the first exchange is not HELLO".into());
    if app != APP_PROTO_CONTROL {
        let _ = fs.reply(Status::BadRequest, app, corr, Bytes::new()).await;
        return Err(not_hello());
    }
    let (_, body) = fs
        .collect(Some(first), shared.base_limits().max_frame as usize)
        .await?;
    let peer = match message::decode::<ControlRequest>(&body) {
        Ok(ControlRequest::Hello(h)) => h,
        Ok(ControlRequest::Ping(_)) => {
            let _ = fs.reply(Status::BadRequest, app, corr, Bytes::new()).await;
            return Err(not_hello());
        }
        Err(e) => {
            shared.stats.reject(e.reason());
            let _ = fs.reply(Status::BadRequest, app, corr, Bytes::new()).await;
            return Err(e.into());
        }
    };
    match shared.hello.negotiate(&peer) {
        Ok(terms) => {
            let ours = message::encode(&ControlResponse::Hello(shared.hello.clone()));
            fs.reply(Status::Ok, app, corr, ours).await?;
            Ok((peer, terms))
        }
        Err(e) => {
            let _ = fs.reply(Status::BadRequest, app, corr, Bytes::new()).await;
            Err(e.into())
        }
    }
}
