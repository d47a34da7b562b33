//! What can go wrong while driving node processes, as one typed enum.
//!
//! Every variant names what was being done, so a failing test reads as a sentence: which
//! node, which request, what was waited for and for how long.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A failure of the harness or of a node it drives.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// An OS call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The `macronode` binary is not where it should be and could not be built.
    #[error("macronode binary: {0}")]
    Binary(String),
    /// No free port was found.
    #[error("no free port: {0}")]
    NoPort(String),
    /// An HTTP exchange failed or its answer could not be parsed.
    #[error("GET http://{addr}{path}: {why}")]
    Http {
        /// The server.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// An answer was not the JSON expected.
    #[error("unexpected answer from {what}: {why}")]
    Unexpected {
        /// Which request or document.
        what: String,
        /// What was wrong with it.
        why: String,
    },
    /// A wait passed its bound.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A process exited when it should have kept running.
    #[error("{name} exited with {status}; log {log}")]
    Exited {
        /// The process's name in the test.
        name: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its log file.
        log: PathBuf,
    },
    /// A signal could not be sent.
    #[error("signal to {name}: {source}")]
    Signal {
        /// The process's name in the test.
        name: String,
        /// Why.
        source: nix::Error,
    },
}

impl HarnessError {
    /// An [`HarnessError::Io`] naming what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}
