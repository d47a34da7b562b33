//! The macronode node: everything that touches the OS and the network, around the sans-IO
//! `overlay` core and the `wire` codec.
//!
//! This crate owns the node's identity on disk and the QUIC transport that speaks OAP/1 to
//! other nodes; the DHT driver, the store, the HTTP gateway and the `macronode` binary build
//! on these. Invariant across the crate: nothing a peer or the disk hands us can panic the
//! node: every failure is a typed error, every wait is bounded, every buffer is capped.
//!
//! Layout:
//! - [`identity`]: the Ed25519 node key in the data directory; the node id.
//! - [`transport`]: the quinn endpoint, TLS with node-key verification, one connection per
//!   peer, HELLO, requests on streams, inbound routing, limits, counters.
//! - [`dht`]: the task that drives `overlay::Dht` over the transport.
//! - [`gateway`]: the HTTP edge (admin routes; the object routes join it).
//! - [`config`]: file, environment and flags merged into [`config::NodeConfig`].
//! - [`app`]: one running node, started and stopped in order.
//! - [`devnet`]: N node processes on loopback, the newcomer's first command.
//! - [`objects`]: the write path, the read path and repair across the mesh.
//! - [`caps`]: capability tokens for gateway writes.
//! - [`keyring`]: the capability roots (current, rotated out) and the revocation list.
//! - [`cli`]: `token mint|revoke|rotate`, `put` and `get` for operators.
//! - [`admin_cli`]: `status` and `repair`, through a running node's admin plane.
//! - [`store`]: the verified, crash-safe object store (or amnesia).
//! - [`scrub`]: every stored object read back and verified in the background, at a rate.
//! - [`mail`]: mailboxes across the mesh: app protocol 3, send, receive, ack.
//! - [`signals`]: waiting for SIGINT or SIGTERM.

pub mod admin_cli;
pub mod app;
pub mod caps;
pub mod cli;
pub mod config;
pub mod devnet;
pub mod dht;
pub mod doctor;
pub mod gateway;
pub mod identity;
pub mod keyring;
pub mod mail;
pub mod objects;
pub mod quota;
pub mod scrub;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod transport;

pub use identity::{Identity, IdentityError};
pub use transport::{
    Exchange, InboundExchange, InboundHandler, PeerEvent, PeerInfo, Transport, TransportConfig,
    TransportError,
};
