//! The chaos suite: faults injected into a running mesh, hostile clients and peers, and a
//! soak, each scenario ending in one line of figures judged against stated goals.
//!
//! Pieces:
//! - [`seed`]: one printed seed per run; every random choice derives from it.
//! - [`proxy`]: a seeded userspace UDP proxy that delays, jitters, drops, duplicates,
//!   reorders and partitions the nodes' QUIC datagrams, per link, while they run.
//! - [`netns`]: nodes in their own network namespaces on a bridge; partitions and loss
//!   as real packet drops (root only; cleaned up on drop and swept by owner pid).
//! - [`cluster`]: N nodes on loopback, behind the proxy, or in namespaces, with a shared
//!   capability key, a token, and who holds what on disk.
//! - [`client`]: a blocking HTTP client that tells an answer from a hang.
//! - [`load`]: writers and readers on the gateways, and the ledger of acknowledged writes.
//! - [`hostile`]: raw OAP/1 peers and zstd bombs.
//! - [`procfs`]: RSS, peak RSS, fds and CPU of a node process.
//! - [`figures`]: figures, goals and the report line.
//! - [`scenarios`]: the scenarios themselves and the table the runner uses.

pub mod client;
pub mod cluster;
pub mod figures;
pub mod hostile;
pub mod load;
pub mod netns;
pub mod procfs;
pub mod proxy;
pub mod scenarios;
pub mod seed;

pub use cluster::{Cluster, ClusterSpec, NetKind};
pub use figures::{Goal, Report};
pub use seed::Seed;
