//! A harness for testing macronode as operators run it: real `macronode` processes on
//! loopback, each with its own temporary data directory, free ports and a log file.
//!
//! The in-process transport tests (`node/tests/transport.rs`) and the sans-IO tests of
//! `overlay` cover the protocol logic; what only separate processes can show lives here:
//! joining through a bootstrap peer, a node killed without warning, a restart with the same
//! key, the CLI and its config layers, signals and exit codes. Invariants of the harness:
//! every wait has a timeout and says what it waited for; every process it starts is
//! SIGKILLed when its handle drops, so a failing test leaves nothing running; a failing test
//! prints the logs of the nodes it started.
//!
//! Layout:
//! - [`benchkit`]: helpers shared by the benchmark binaries.
//! - [`chaos`]: the chaos suite: fault injection (UDP proxy, network namespaces), hostile
//!   clients, the scenarios and their figures (`RELIABILITY.md`).
//! - [`binary`]: finding (and if needed building) the `macronode` binary.
//! - [`ports`]: free loopback ports, never handed out twice by one test process.
//! - [`seed`]: seeds from an environment variable or the clock, printed for a replay.
//! - [`http`]: a tiny blocking HTTP/1.1 GET client.
//! - [`process`]: [`ChildProc`], any child process with logs and kill-on-drop.
//! - [`node`]: [`NodeProcess`], one `macronode run` with its data directory and helpers.
//! - [`mesh`]: [`Mesh`], N nodes joined through node 0; the true k closest of a key.
//! - [`small_disk`]: [`small_disk::SmallDisk`], a real full disk for one directory (root).
//! - [`wait`]: polling with a deadline.
//! - [`error`]: the one error type, [`HarnessError`].

pub mod benchkit;
pub mod binary;
pub mod chaos;
pub mod curl;
pub mod error;
pub mod http;
pub mod mesh;
pub mod node;
pub mod ports;
pub mod process;
pub mod seed;
pub mod small_disk;
pub mod stranger;
pub mod wait;

pub use error::HarnessError;
pub use http::HttpResponse;
pub use mesh::{Mesh, expected_closest};
pub use node::{NodeProcess, NodeSpec};
pub use process::ChildProc;
pub use wait::{poll_until, poll_until_ok};
