//! Free loopback ports for node processes.
//!
//! A port is found by binding it, then released for the node to bind. Two rules keep that
//! race harmless: ports are drawn at random from below the kernel's ephemeral range (so the
//! kernel never hands one out as the source port of some connection in the meantime), and
//! one test process never hands out the same port twice (tests run in parallel threads).

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

use crate::HarnessError;

/// Lowest port drawn.
const LOW: u16 = 12_000;
/// Attempts before giving up.
const ATTEMPTS: usize = 2_000;

static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Which sockets must be free on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// A QUIC listen port.
    Udp,
    /// An HTTP listen port.
    Tcp,
}

fn random_u64() -> u64 {
    // `RandomState` is seeded from the OS per instance: enough to spread parallel test
    // processes over the range, without an RNG dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// The first port of the kernel's ephemeral range (32768 if it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn is_free(port: u16, proto: Proto) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match proto {
        Proto::Udp => UdpSocket::bind(addr).is_ok(),
        Proto::Tcp => TcpListener::bind(addr).is_ok(),
    }
}

/// `n` consecutive free ports (`first..first + n`), each free for `proto`, none handed out
/// before by this process. `macronode devnet` needs consecutive ones.
pub fn free_range(n: u16, proto: Proto) -> Result<u16, HarnessError> {
    let high = ephemeral_low().max(LOW + 1000);
    let span = u64::from(high - LOW - n);
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..ATTEMPTS {
        let first = LOW + (random_u64() % span) as u16;
        let ports = first..first + n;
        if ports
            .clone()
            .all(|p| !taken.contains(&p) && is_free(p, proto))
        {
            taken.extend(ports);
            return Ok(first);
        }
    }
    Err(HarnessError::NoPort(format!(
        "{n} consecutive {proto:?} ports in {LOW}..{high}"
    )))
}

/// One free port for `proto`.
pub fn free_port(proto: Proto) -> Result<u16, HarnessError> {
    free_range(1, proto)
}

/// `127.0.0.1:port` for a free port.
pub fn free_addr(proto: Proto) -> Result<SocketAddr, HarnessError> {
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(proto)?)))
}
