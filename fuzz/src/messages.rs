//! Targets `dht_messages` and `object_messages`: the postcard bodies of app protocols 1 and
//! 2, as a peer sends them.
//!
//! The first byte picks the message type, the rest is the body. Checked: decoding never
//! panics; a body it accepts is within its bounds, re-encodes to a body that decodes to the
//! same message; a DHT response becomes overlay contacts whose keys are BLAKE3 of their ids
//! (never the sender's word) and never name the receiving node; an object range never
//! overflows and a `Found` range lies inside its object.

use node::dht::peer::{request_from_wire, request_to_wire, response_from_wire};
use overlay::Key;
use wire::NodeId;
use wire::dht::{ADDRS_MAX, CONTACTS_MAX, DhtRequest, DhtResponse, PROVIDERS_MAX};
use wire::message::{self, Bounded};
use wire::object::{ObjectRequest, ObjectResponse};

/// The node receiving the messages.
const LOCAL: NodeId = NodeId([0x5a; 32]);

/// Decodes `body` as `T`; an accepted message re-encodes to a body that decodes to itself.
fn round_trip<T>(body: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Bounded + PartialEq + std::fmt::Debug,
{
    let msg = message::decode::<T>(body).ok()?;
    assert!(
        msg.check_bounds().is_ok(),
        "accepted out of bounds: {msg:?}"
    );
    let again = message::encode(&msg);
    let back = message::decode::<T>(&again)
        .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
    assert_eq!(back, msg, "re-encoding changed the message");
    Some(msg)
}

/// Target `dht_messages`.
pub fn run_dht(data: &[u8]) {
    let [sel, body @ ..] = data else { return };
    if sel & 1 == 0 {
        if let Some(req) = round_trip::<DhtRequest>(body) {
            // The overlay's view of it maps back to the same wire message.
            assert_eq!(request_to_wire(&request_from_wire(&req)), req);
        }
        return;
    }
    let Some(resp) = round_trip::<DhtResponse>(body) else {
        return;
    };
    let (closer, providers) = match &resp {
        DhtResponse::Nodes { closer } => (closer.len(), 0),
        DhtResponse::Providers { closer, providers } => (closer.len(), providers.len()),
        DhtResponse::Pong | DhtResponse::Added => (0, 0),
    };
    assert!(closer <= CONTACTS_MAX && providers <= PROVIDERS_MAX);
    let peers = match response_from_wire(resp.clone(), &LOCAL) {
        overlay::Response::Nodes(p) => p,
        overlay::Response::Providers { closer, providers } => {
            closer.into_iter().chain(providers).collect()
        }
        _ => Vec::new(),
    };
    for p in &peers {
        assert_ne!(p.id, LOCAL, "a contact naming us was kept");
        assert_eq!(
            p.key,
            Key::for_node(&p.id),
            "a contact's key is not BLAKE3 of its id"
        );
    }
    let contacts = match &resp {
        DhtResponse::Nodes { closer } => closer.iter().collect::<Vec<_>>(),
        DhtResponse::Providers { closer, providers } => closer.iter().chain(providers).collect(),
        _ => Vec::new(),
    };
    assert!(contacts.iter().all(|c| c.addrs.len() <= ADDRS_MAX));
    assert!(peers.len() <= contacts.len());
}

/// Target `object_messages`.
pub fn run_object(data: &[u8]) {
    let [sel, body @ ..] = data else { return };
    if sel & 1 == 0 {
        if let Some(ObjectRequest::Get { range: Some(r), .. }) = round_trip::<ObjectRequest>(body) {
            assert!(
                r.start.checked_add(r.len).is_some(),
                "accepted an overflowing range"
            );
        }
        return;
    }
    if let Some(ObjectResponse::Found { size, range }) = round_trip::<ObjectResponse>(body) {
        let end = range.start.checked_add(range.len);
        assert!(
            end.is_some_and(|e| e <= size),
            "accepted a range outside its object"
        );
    }
}
