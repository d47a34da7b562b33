//! The node's peer handle for the overlay, and the mapping between overlay messages and
//! their wire form (app protocol 1).
//!
//! The overlay names peers by [`NetPeer`]: a node id, the DHT key derived from it here (never
//! taken from the wire), and one address to dial. A contact whose id is ours, or whose
//! addresses do not parse, is dropped on the way in; nothing from the wire becomes a peer
//! without passing through [`NetPeer::from_contact`].

use std::net::{IpAddr, SocketAddr};

use overlay::{IpGroup, Key, Peer, Request, Response};
use wire::NodeId;
use wire::dht::{DhtRequest, DhtResponse, WireContact};

/// A peer as the node's overlay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPeer {
    /// Its public key.
    pub id: NodeId,
    /// BLAKE3 of the public key.
    pub key: Key,
    /// Where to dial it.
    pub addr: SocketAddr,
}

impl NetPeer {
    /// A peer from its id and address.
    pub fn new(id: NodeId, addr: SocketAddr) -> NetPeer {
        NetPeer {
            id,
            key: Key::for_node(&id),
            addr,
        }
    }

    /// A peer from a contact another node sent; `None` if no address parses.
    pub fn from_contact(c: &WireContact) -> Option<NetPeer> {
        let addr = c.addrs.iter().find_map(|a| a.parse::<SocketAddr>().ok())?;
        Some(NetPeer::new(c.id, addr))
    }

    /// The contact we send about this peer.
    pub fn to_contact(&self) -> WireContact {
        WireContact {
            id: self.id,
            addrs: vec![self.addr.to_string()],
        }
    }
}

impl Peer for NetPeer {
    fn key(&self) -> Key {
        self.key
    }

    fn ip_group(&self) -> Option<IpGroup> {
        match self.addr.ip() {
            // Loopback and private ranges are one operator's by definition: no diversity
            // limit could mean anything there, so they are exempt (devnets, tests).
            IpAddr::V4(v4) if v4.is_loopback() || v4.is_private() => None,
            IpAddr::V4(v4) => Some(u64::from(u32::from(v4) >> 8)), // the /24
            IpAddr::V6(v6) if v6.is_loopback() => None,
            IpAddr::V6(v6) => Some((u128::from(v6) >> 80) as u64), // the /48
        }
    }
}

/// The wire form of an overlay request.
pub fn request_to_wire(r: &Request) -> DhtRequest {
    match *r {
        Request::Ping => DhtRequest::Ping,
        Request::FindNode(k) => DhtRequest::FindNode { target: k.0 },
        Request::GetProviders(k) => DhtRequest::GetProviders { key: k.0 },
        Request::AddProvider(k) => DhtRequest::AddProvider { key: k.0 },
    }
}

/// The overlay form of a wire request.
pub fn request_from_wire(r: &DhtRequest) -> Request {
    match *r {
        DhtRequest::Ping => Request::Ping,
        DhtRequest::FindNode { target } => Request::FindNode(Key(target)),
        DhtRequest::GetProviders { key } => Request::GetProviders(Key(key)),
        DhtRequest::AddProvider { key } => Request::AddProvider(Key(key)),
    }
}

fn contacts(peers: &[NetPeer]) -> Vec<WireContact> {
    peers.iter().map(NetPeer::to_contact).collect()
}

fn peers_from(contacts: &[WireContact], local: &NodeId) -> Vec<NetPeer> {
    contacts
        .iter()
        .filter(|c| c.id != *local)
        .filter_map(NetPeer::from_contact)
        .collect()
}

/// The wire form of an overlay response; `None` for `Refused`, which travels as a status.
pub fn response_to_wire(r: &Response<NetPeer>) -> Option<DhtResponse> {
    Some(match r {
        Response::Pong => DhtResponse::Pong,
        Response::Nodes(n) => DhtResponse::Nodes {
            closer: contacts(n),
        },
        Response::Providers { closer, providers } => DhtResponse::Providers {
            closer: contacts(closer),
            providers: contacts(providers),
        },
        Response::Added => DhtResponse::Added,
        Response::Refused => return None,
    })
}

/// The overlay form of a wire response, dropping contacts that name us or cannot be dialed.
pub fn response_from_wire(r: DhtResponse, local: &NodeId) -> Response<NetPeer> {
    match r {
        DhtResponse::Pong => Response::Pong,
        DhtResponse::Nodes { closer } => Response::Nodes(peers_from(&closer, local)),
        DhtResponse::Providers { closer, providers } => Response::Providers {
            closer: peers_from(&closer, local),
            providers: peers_from(&providers, local),
        },
        DhtResponse::Added => Response::Added,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_round_trip_and_bad_ones_are_dropped() {
        let p = NetPeer::new(
            NodeId([7; 32]),
            "127.0.0.1:4000".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(NetPeer::from_contact(&p.to_contact()), Some(p.clone()));
        let bad = WireContact {
            id: NodeId([8; 32]),
            addrs: vec!["not an address".into()],
        };
        assert_eq!(NetPeer::from_contact(&bad), None);
        let me = NodeId([7; 32]);
        let r = response_from_wire(
            DhtResponse::Nodes {
                closer: vec![p.to_contact(), bad],
            },
            &me,
        );
        assert_eq!(
            r,
            Response::Nodes(vec![]),
            "ourselves and the undialable are dropped"
        );
    }

    #[test]
    fn public_addresses_have_groups_private_ones_do_not() {
        let g = |a: &str| {
            NetPeer::new(NodeId([1; 32]), a.parse().unwrap_or_else(|e| panic!("{e}"))).ip_group()
        };
        assert_eq!(g("127.0.0.1:1"), None);
        assert_eq!(g("10.1.2.3:1"), None);
        assert_eq!(g("8.8.8.8:1"), g("8.8.8.200:2"));
        assert_ne!(g("8.8.8.8:1"), g("8.8.9.8:1"));
    }
}
