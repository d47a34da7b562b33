//! Answering inbound DHT requests (app protocol 1).
//!
//! The transport authenticated the sender and checked the frames; here the body is decoded
//! under its bounds, handed to the driver, and the answer encoded back. A body that does not
//! decode is answered 400 and counted by reason; the driver never sees it. A PING, whose
//! answer never depends on the table, is answered here and the driver told afterwards (it
//! refreshes the contact): the most frequent request (every liveness probe is one) costs no
//! round trip through the driver task.

use bytes::Bytes;
use wire::dht::{DhtRequest, DhtResponse};
use wire::{Status, message};

use super::DhtHandle;
use super::peer::{NetPeer, request_from_wire, response_to_wire};
use crate::transport::{InboundExchange, Transport, TransportError};

/// Largest DHT request body (requests are fixed-size; this is generous).
const REQUEST_MAX: usize = 4096;

/// Serves one inbound DHT exchange.
pub async fn serve_dht(
    mut ex: InboundExchange,
    dht: DhtHandle,
    transport: Transport,
) -> Result<(), TransportError> {
    let body = ex.read_body(REQUEST_MAX).await?;
    // The connection that carried the request, whether or not it is in the peer table yet
    // (a read served from 0-RTT data enters it when its handshake completes).
    let peer = NetPeer::new(ex.peer(), ex.peer_dial_addr());
    // One answer, sent from one place: each `respond` future holds the whole exchange, so
    // one per outcome would multiply this future's size, copied on every request.
    let (status, answer) = answer(&body, peer, &dht, &transport).await;
    ex.respond(status, answer).await
}

/// The status and body that answer `body` from `peer`.
async fn answer(
    body: &[u8],
    peer: NetPeer,
    dht: &DhtHandle,
    transport: &Transport,
) -> (Status, Bytes) {
    let request = match message::decode::<DhtRequest>(body) {
        Ok(r) => r,
        Err(e) => {
            transport.stats().reject(e.reason());
            return (Status::BadRequest, Bytes::new());
        }
    };
    if request == DhtRequest::Ping {
        if dht.pinged(peer).await.is_err() {
            return (Status::Unavailable, Bytes::new());
        }
        return (Status::Ok, message::encode(&DhtResponse::Pong));
    }
    match dht.inbound(peer, request_from_wire(&request)).await {
        Ok(a) => match response_to_wire(&a) {
            Some(r) => (Status::Ok, message::encode(&r)),
            None => (Status::Unavailable, Bytes::new()),
        },
        Err(_) => (Status::Unavailable, Bytes::new()),
    }
}
