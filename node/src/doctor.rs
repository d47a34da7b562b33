//! `macronode doctor`: checks a host before a node runs on it, with the same configuration
//! `macronode run` would use, and says what to do about each problem. Exit status 0 only
//! when every check passes.
//!
//! The checks: the data directory exists (or can be made) and is writable by us; its file
//! system has room for the store quota; the QUIC and HTTP ports are free; the open-file
//! limit covers the connections, their streams and the gateway's sockets; the clock is
//! plausible; and each bootstrap peer answers a QUIC handshake and HELLO with the key it is
//! expected to have.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Identity;
use crate::config::NodeConfig;
use crate::transport::{NoApps, Transport, TransportConfig};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked.
    pub check: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen, and on failure what to do.
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} {:<16} {}", self.check, self.detail)
    }
}

/// Open files a node may need: connections and their streams' share, the gateway's
/// sockets, and the store's files in use, with room to spare.
const FILES_NEEDED: u64 = 8192;
/// How long a bootstrap peer has to answer the handshake.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every check for `config`.
pub async fn check(config: &NodeConfig) -> Vec<Finding> {
    let mut out = vec![data_dir(&config.data_dir, config.amnesia)];
    if !config.amnesia {
        out.push(free_space(&config.data_dir, config.store_quota_bytes));
    }
    out.push(port_free(config));
    out.push(http_free(config));
    if let Some(admin) = config.admin.filter(|a| a.port() != 0) {
        out.push(admin_free(admin));
    }
    out.push(open_files());
    out.push(clock());
    out.extend(bootstrap(config).await);
    out
}

fn finding(check: &'static str, ok: bool, detail: String) -> Finding {
    Finding { check, ok, detail }
}

fn data_dir(dir: &Path, amnesia: bool) -> Finding {
    let what = "data directory";
    if let Err(e) = std::fs::create_dir_all(dir) {
        return finding(
            what,
            false,
            format!(
                "{}: cannot create it ({e}); choose --data-dir on a writable disk",
                dir.display()
            ),
        );
    }
    let probe = dir.join(".doctor-probe");
    let written = std::fs::write(&probe, b"probe").and_then(|()| std::fs::remove_file(&probe));
    match written {
        Ok(()) => {
            let note = if amnesia {
                " (amnesia: only the node key is written)"
            } else {
                ""
            };
            finding(what, true, format!("{} is writable{note}", dir.display()))
        }
        Err(e) => finding(
            what,
            false,
            format!(
                "{}: cannot write in it ({e}); fix its owner or mode for the user the node runs as",
                dir.display()
            ),
        ),
    }
}

fn free_space(dir: &Path, quota: u64) -> Finding {
    let what = "free space";
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
            if free >= quota {
                finding(
                    what,
                    true,
                    format!(
                        "{:.1} GiB free for a quota of {:.1} GiB",
                        gib(free),
                        gib(quota)
                    ),
                )
            } else {
                finding(
                    what,
                    false,
                    format!(
                        "{:.1} GiB free, below the store quota of {:.1} GiB: free space, or lower --store-quota-bytes",
                        gib(free),
                        gib(quota)
                    ),
                )
            }
        }
        Err(e) => finding(
            what,
            false,
            format!("cannot read the file system of {}: {e}", dir.display()),
        ),
    }
}

fn port_free(config: &NodeConfig) -> Finding {
    match UdpSocket::bind(config.listen) {
        Ok(_) => finding(
            "QUIC port",
            true,
            format!("{} (UDP) is free", config.listen),
        ),
        Err(e) => finding(
            "QUIC port",
            false,
            format!(
                "{} (UDP): {e}; stop what holds it or choose another --listen",
                config.listen
            ),
        ),
    }
}

fn http_free(config: &NodeConfig) -> Finding {
    match TcpListener::bind(config.http) {
        Ok(_) => finding("HTTP port", true, format!("{} (TCP) is free", config.http)),
        Err(e) => finding(
            "HTTP port",
            false,
            format!(
                "{} (TCP): {e}; stop what holds it or choose another --http",
                config.http
            ),
        ),
    }
}

/// A fixed admin plane port must be free too (the default, port 0, always is).
fn admin_free(admin: std::net::SocketAddr) -> Finding {
    match TcpListener::bind(admin) {
        Ok(_) => finding("admin port", true, format!("{admin} (TCP) is free")),
        Err(e) => finding(
            "admin port",
            false,
            format!("{admin} (TCP): {e}; stop what holds it or choose another --admin"),
        ),
    }
}

fn open_files() -> Finding {
    let what = "open files";
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _hard)) if soft >= FILES_NEEDED => {
            finding(what, true, format!("limit {soft} (needs {FILES_NEEDED})"))
        }
        Ok((soft, hard)) => finding(
            what,
            false,
            format!(
                "limit {soft} (hard {hard}) is below {FILES_NEEDED}: raise it (ulimit -n, or LimitNOFILE= in the systemd unit)"
            ),
        ),
        Err(e) => finding(what, false, format!("cannot read the limit: {e}")),
    }
}

fn clock() -> Finding {
    // Token expiry compares wall-clock seconds; a clock before this code was written is
    // wrong for certain.
    const BUILT_AFTER: u64 = 1_764_000_000; // 2025-11-24
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now >= BUILT_AFTER {
        finding("clock", true, format!("unix time {now}"))
    } else {
        finding(
            "clock",
            false,
            format!(
                "unix time {now} is in the past: tokens would not expire when they should; set the clock (NTP)"
            ),
        )
    }
}

async fn bootstrap(config: &NodeConfig) -> Vec<Finding> {
    let what = "bootstrap peer";
    if config.bootstrap.is_empty() {
        return vec![finding(
            what,
            true,
            "none configured: this node starts a new mesh".into(),
        )];
    }
    let client = Identity::generate()
        .map_err(|e| e.to_string())
        .and_then(|id| {
            let tconfig = TransportConfig {
                listen: "127.0.0.1:0".parse().unwrap_or(config.listen),
                handshake_timeout: PEER_TIMEOUT,
                ..TransportConfig::default()
            };
            Transport::bind(Arc::new(id), tconfig, Arc::new(NoApps)).map_err(|e| e.to_string())
        });
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            return vec![finding(
                what,
                false,
                format!("cannot open a QUIC client to check them: {e}"),
            )];
        }
    };
    let mut out = Vec::new();
    for peer in &config.bootstrap {
        let addrs = match tokio::time::timeout(PEER_TIMEOUT, peer.resolve()).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                out.push(finding(
                    what,
                    false,
                    format!("{peer}: does not resolve ({e}); fix the name or use an address"),
                ));
                continue;
            }
            Err(_) => {
                out.push(finding(
                    what,
                    false,
                    format!("{peer}: name resolution timed out"),
                ));
                continue;
            }
        };
        let mut tried = Vec::new();
        let mut reached = None;
        for addr in addrs {
            match client.connect(addr, peer.id).await {
                Ok(info) => {
                    reached = Some((addr, info.id));
                    break;
                }
                Err(e) => tried.push(format!("{addr}: {e}")),
            }
        }
        out.push(match reached {
            Some((addr, id)) => {
                finding(what, true, format!("{peer}: {addr} answered HELLO as {id}"))
            }
            None => finding(
                what,
                false,
                format!(
                    "{peer}: {}; check the address, that the peer runs, and that UDP reaches it",
                    tried.join("; ")
                ),
            ),
        });
    }
    client.close().await;
    out
}
