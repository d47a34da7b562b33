//! Kademlia and replication planning as sans-IO state machines.
//!
//! The one implementation of macronode's DHT logic: the node drives it from QUIC streams
//! and tokio timers, simnet from an event queue on virtual time, so what researchers measure
//! is what operators run. Nothing here performs I/O, reads a clock or draws OS entropy
//! (`clippy.toml` holds that line): time comes in as `now`, randomness from a seeded RNG each
//! state machine owns, and every collection whose order can reach an output is ordered.
//!
//! Layout:
//! - [`key`]: the 256-bit key space, XOR distance, bucket indices.
//! - [`peer`]: the [`Peer`] trait the drivers implement for their peer handles.
//! - [`time`]: [`Instant`], the virtual time every input carries.
//! - [`config`]: every parameter, with docs/DESIGN.md §4's defaults.
//! - [`routing`]: the k-bucket [`RoutingTable`] with replacement caches.
//! - [`rtt`]: round-trip time estimates, for the walk's soft timeouts.
//! - [`closest`]: the closest-peers walk of one lookup.
//! - [`providers`]: provider records with TTL and caps.
//! - [`query`]: query kinds, phases, results and per-lookup stats.
//! - [`dht`]: [`Dht`], the state machine that ties them together.
//! - [`cause`]: [`FailureCause`] and [`ConnectionEvent`], whose failure a driver's event is.
//! - [`replication`]: [`Planner`], which keeps each object on its RF closest nodes.
//! - [`admission`]: [`Admission`], who may push us a replica without a capability.
//! - [`rejoin`]: [`Rejoin`], when a node with an empty table dials its way back in.
//! - [`fetch_back`]: [`FetchBack`], when a copy our store dropped as corrupt is fetched back.
//! - [`locate`]: [`Locate`], a GET's search for a holder in one or two passes ([`Search`]),
//!   and the fetch's [`Failover`].
//! - [`write`]: [`Write`], one write's targets, quorum and retries of busy targets.
//! - [`mail_receive`]: [`MailMerge`], an owner's receive: whom it asks, and copies merged
//!   into messages; [`MailAck`], when its ack is answered and what it answers.
//! - [`mail_repair`]: [`MailRepairLog`], what a mailbox holder's repair pushed to the other
//!   holders and so pushes next.
//! - [`mail_send`]: [`MailSend`], one send of mail: which holder gets which message, when it is answered.
//! - [`placement`]: [`Placement`], the steps that make one copy count at one target.
//! - [`timer`]: a node's one timer over its `Dht` and `Planner`, and their order.
//! - [`testnet`]: an in-memory network of `Dht`s on a deterministic scheduler, for tests
//!   and benchmarks.

pub mod admission;
pub mod cause;
pub mod closest;
pub mod config;
pub mod dht;
pub mod fetch_back;
pub mod key;
pub mod locate;
pub mod mail_receive;
pub mod mail_repair;
pub mod mail_send;
pub mod peer;
pub mod placement;
pub mod providers;
pub mod query;
pub mod rejoin;
pub mod replication;
pub mod routing;
pub mod rtt;
pub mod testnet;
pub mod time;
pub mod timer;
pub mod write;

pub use admission::{Admission, Payer, Refusal};
pub use cause::{ConnectionEvent, FailureCause, TransferFault};
pub use config::{Config, IpDiversity, ObjectTimings, ReplicationConfig};
pub use dht::{
    CommandError, Dht, DhtStats, Event, PlacementWalk, Request, Response, RpcFailure, RpcId,
    Transmit,
};
pub use fetch_back::{FetchBack, FetchBackEvent};
pub use key::{Distance, Key};
pub use locate::{
    Failover, Locate, LocateEnd, LocateStep, ProbeAnswer, SECOND_PASS_WANTED, Search,
    SearchOutcome, WalkEnd, WalkVerdict,
};
pub use mail_receive::{MailAck, MailAcked, MailMerge, MailReceived, mail_receive_set};
pub use mail_repair::{MailCursor, MailRepairLog, MailRound};
pub use mail_send::{MailAnswer, MailSend, MailSent};
pub use peer::{IpGroup, Peer};
pub use placement::{PlaceEnd, PlaceStep, Placement, ProofAnswer, PushAnswer};
pub use query::{QueryId, QueryKind, QueryResult, QueryStats};
pub use rejoin::{Rejoin, RejoinStep};
pub use replication::{PlanEvent, Planner, TransferId, TransferOutcome};
pub use routing::RoutingTable;
pub use time::Instant;
pub use write::{PlaceResult, PlacementCut, Write, WriteAnswer, placement_targets, write_quorum};
