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
    let request = match message::decode::<DhtRequest>(&body) {
        Ok(r) => r,
        Err(e) => {
            transport.stats().reject(e.reason());
            return ex.respond(Status::BadRequest, Bytes::new()).await;
        }
    };
    // The connection that carried the request, whether or not it is in the peer table yet
    // (a read served from 0-RTT data enters it when its handshake completes).
    let peer = NetPeer::new(ex.peer(), ex.peer_dial_addr());
    if request == DhtRequest::Ping {
        if dht.pinged(peer).await.is_err() {
            return ex.respond(Status::Unavailable, Bytes::new()).await;
        }
        return ex
            .respond(Status::Ok, message::encode(&DhtResponse::Pong))
            .await;
    }
    let answer = match dht.inbound(peer, request_from_wire(&request)).await {
        Ok(a) => a,
        Err(_) => return ex.respond(Status::Unavailable, Bytes::new()).await,
    };
    match response_to_wire(&answer) {
        Some(r) => ex.respond(Status::Ok, message::encode(&r)).await,
        None => ex.respond(Status::Unavailable, Bytes::new()).await,
    }
}
