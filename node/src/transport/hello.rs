//! HELLO: the first exchange on every new connection (app protocol 0).
//!
//! The dialer opens the connection's first stream and states its terms; the listener answers
//! with its own; each side then holds the connection to [`Hello::negotiate`] of the two, which
//! only ever lowers limits. Until HELLO is done a connection is not in the peer table and
//! carries nothing else: a listener whose first stream is anything but a well-formed HELLO
//! answers 400 and the caller closes the connection with `HELLO_FAILED`.

use bytes::Bytes;
use wire::control::{APP_PROTO_CONTROL, ControlRequest, ControlResponse, Hello, Negotiated};
use wire::{Direction, Frame, Status, message};

use super::Shared;
use super::error::TransportError;

/// Runs HELLO as the dialer on a fresh connection.
pub(crate) async fn dial(
    shared: &Shared,
    conn: &quinn::Connection,
) -> Result<(Hello, Negotiated), TransportError> {
    let pair = conn.open_bi().await?;
    let mut fs = shared.framed(pair, shared.base_limits(), Direction::Responses);
    let body = message::encode(&ControlRequest::Hello(shared.hello.clone()));
    let request = Frame::request(APP_PROTO_CONTROL, shared.corr_id(), body);
    fs.send_frame(&request).await?;
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
