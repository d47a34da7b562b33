//! App protocol 1, dht: the Kademlia RPCs as they stand on the wire.
//!
//! Contacts carry a node id and its listen addresses; the receiver derives the DHT key from
//! the id itself (BLAKE3 of the public key), so a peer cannot place a contact at a key of its
//! choosing. ADD_PROVIDER names no provider: the provider is the authenticated sender, so a
//! peer cannot announce records on another's behalf. Every list is bounded on decode.

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::message::{Bounded, MessageError, check_count, check_len};

/// The app protocol id of DHT messages.
pub const APP_PROTO_DHT: u16 = 1;
/// At most this many contacts in one response (k is at most this).
pub const CONTACTS_MAX: usize = 32;
/// At most this many providers in one response.
pub const PROVIDERS_MAX: usize = 32;
/// At most this many addresses per contact.
pub const ADDRS_MAX: usize = 4;
/// Longest address text, in bytes.
pub const ADDR_LEN_MAX: usize = 128;

/// A peer as one node tells another about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireContact {
    /// The peer's public key.
    pub id: NodeId,
    /// Where it listens, as `host:port` text.
    pub addrs: Vec<String>,
}

/// A DHT request. Keys are the 32-byte BLAKE3 keys of the DHT space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DhtRequest {
    /// Liveness probe.
    Ping,
    /// The responder's closest contacts to a key.
    FindNode {
        /// The key sought.
        target: [u8; 32],
    },
    /// Providers of a key, plus closest contacts to continue the walk.
    GetProviders {
        /// The object key.
        key: [u8; 32],
    },
    /// Records the sender as a provider of a key.
    AddProvider {
        /// The object key.
        key: [u8; 32],
    },
}

/// A DHT response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DhtResponse {
    /// Answer to `Ping`.
    Pong,
    /// Answer to `FindNode`.
    Nodes {
        /// Closest contacts the responder knows.
        closer: Vec<WireContact>,
    },
    /// Answer to `GetProviders`.
    Providers {
        /// Closest contacts the responder knows.
        closer: Vec<WireContact>,
        /// Providers the responder has records of.
        providers: Vec<WireContact>,
    },
    /// Answer to `AddProvider`: the record is stored.
    Added,
}

fn check_contacts(
    field: &'static str,
    contacts: &[WireContact],
    max: usize,
) -> Result<(), MessageError> {
    check_count(field, contacts, max)?;
    for c in contacts {
        check_count("addrs", &c.addrs, ADDRS_MAX)?;
        for a in &c.addrs {
            check_len("addrs[]", a.len(), ADDR_LEN_MAX)?;
        }
    }
    Ok(())
}

impl Bounded for DhtRequest {
    fn check_bounds(&self) -> Result<(), MessageError> {
        Ok(())
    }
}

impl Bounded for DhtResponse {
    fn check_bounds(&self) -> Result<(), MessageError> {
        match self {
            DhtResponse::Pong | DhtResponse::Added => Ok(()),
            DhtResponse::Nodes { closer } => check_contacts("closer", closer, CONTACTS_MAX),
            DhtResponse::Providers { closer, providers } => {
                check_contacts("closer", closer, CONTACTS_MAX)?;
                check_contacts("providers", providers, PROVIDERS_MAX)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{decode, encode};

    fn contact(i: u8) -> WireContact {
        WireContact {
            id: NodeId([i; 32]),
            addrs: vec![format!("127.0.0.1:{}", 4000 + i as u16)],
        }
    }

    #[test]
    fn every_message_round_trips() {
        let reqs = [
            DhtRequest::Ping,
            DhtRequest::FindNode { target: [1; 32] },
            DhtRequest::GetProviders { key: [2; 32] },
            DhtRequest::AddProvider { key: [3; 32] },
        ];
        for r in reqs {
            assert_eq!(decode::<DhtRequest>(&encode(&r)), Ok(r));
        }
        let resps = [
            DhtResponse::Pong,
            DhtResponse::Added,
            DhtResponse::Nodes {
                closer: (0..20).map(contact).collect(),
            },
            DhtResponse::Providers {
                closer: vec![contact(1)],
                providers: vec![contact(2)],
            },
        ];
        for r in resps {
            assert_eq!(decode::<DhtResponse>(&encode(&r)), Ok(r));
        }
    }

    #[test]
    fn oversized_responses_are_refused() {
        let many = DhtResponse::Nodes {
            closer: (0..=CONTACTS_MAX as u8).map(contact).collect(),
        };
        assert!(matches!(
            decode::<DhtResponse>(&encode(&many)),
            Err(MessageError::TooMany {
                field: "closer",
                ..
            })
        ));
        let mut c = contact(1);
        c.addrs = vec!["a".into(); ADDRS_MAX + 1];
        let r = DhtResponse::Providers {
            closer: vec![],
            providers: vec![c],
        };
        assert!(matches!(
            decode::<DhtResponse>(&encode(&r)),
            Err(MessageError::TooMany { field: "addrs", .. })
        ));
        let mut c = contact(1);
        c.addrs = vec!["a".repeat(ADDR_LEN_MAX + 1)];
        let r = DhtResponse::Nodes { closer: vec![c] };
        assert!(matches!(
            decode::<DhtResponse>(&encode(&r)),
            Err(MessageError::TooLong {
                field: "addrs[]",
                ..
            })
        ));
    }
}
