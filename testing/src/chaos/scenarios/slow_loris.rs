//! Slow-loris: one node (`--write-stall-ms 10000`) held by three slow populations at once,
//! while an honest client GETs a 4 KiB object:
//!
//! - 500 HTTP clients that ask for an 8 MiB object and read it one byte a second (receive
//!   buffers shrunk to 4 KiB): cut after the write stall timeout (judged on the node's side
//!   of the connection: the client itself would see the FIN only after draining what the
//!   kernel holds for it, a byte a second);
//! - 500 HTTP clients that send a request head one byte a second, never finishing it: cut
//!   after the 10 s header timeout;
//! - 200 OAP/1 streams (two peers with fresh keys, 100 each) that send a DHT request one
//!   byte a second: cut by the transport's timeouts (the inbound bound is 30 s).
//!
//! The readers come first and the honest latency is measured once the node is quiet again
//! (sending each reader what its kernel buffers take is honest work), with all three
//! populations holding on. Goals: honest GET p99 <= 2x its idle p99 (idle floored at 4 ms,
//! as `tests/resources.rs` does: on these 2-core machines the idle p99 itself varies from
//! 0.4 to 3.6 ms); every slow client cut within its timeout plus slack (readers: stall +
//! 5 s after the node went quiet; head dribblers: 12 s; streams: 35 s); RSS growth at most
//! the response buffer budget (256 MiB) + 32 MiB; the node up at the end.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Opts, joined, secs};
use crate::HarnessError;
use crate::chaos::client::{self, Outcome};
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report, quantile};
use crate::chaos::hostile::RawPeer;
use crate::chaos::load::Ledger;
use crate::chaos::procfs;

const READERS: usize = 500;
const DRIBBLERS: usize = 500;
const STREAMS_PER_PEER: usize = 100;
const PEERS: usize = 2;
const STALL: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const INBOUND_TIMEOUT: Duration = Duration::from_secs(30);
const RSS_GROWTH_MAX: u64 = (256 + 32) << 20;

/// A nonblocking TCP client and when the node closed it.
struct Slow {
    s: TcpStream,
    opened: Instant,
    closed: Option<Instant>,
}

impl Slow {
    fn open(addr: SocketAddr, first: &[u8], small_rcvbuf: bool) -> Option<Slow> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        if small_rcvbuf {
            let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &4096);
        }
        s.write_all(first).ok()?;
        s.set_nonblocking(true).ok()?;
        Some(Slow {
            s,
            opened: Instant::now(),
            closed: None,
        })
    }

    /// Reads up to `n` bytes and writes `out`; notes when the node closed the connection.
    fn tick(&mut self, n: usize, out: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        let mut buf = [0u8; 64];
        let end = match self.s.read(&mut buf[..n.min(64)]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        };
        let write_failed = !out.is_empty()
            && matches!(self.s.write(out), Err(e) if e.kind() != ErrorKind::WouldBlock);
        if end || write_failed {
            self.closed = Some(Instant::now());
        }
    }
}

/// The node's side of its TCP connections, by the client's port (IPv4, this namespace),
/// from `/proc/net/tcp`. A client that reads a byte a second would take an hour to drain
/// what the kernel still holds for it and see the FIN, so whether the node let go of a
/// connection is read on the node's side: anything but `ESTABLISHED` (FIN sent, or gone)
/// means the node closed its socket.
fn node_side_states(node_port: u16) -> std::collections::BTreeMap<u16, u8> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
            let (local, remote) = (port(f.get(1)?)?, port(f.get(2)?)?);
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            (local == node_port).then_some((remote, state))
        })
        .collect()
}

/// `ESTABLISHED` in `/proc/net/tcp`.
const TCP_ESTABLISHED: u8 = 0x01;

/// Marks the clients whose connection the node has closed.
fn mark_closed(v: &mut [Slow], node_port: u16) {
    let states = node_side_states(node_port);
    let now = Instant::now();
    for s in v.iter_mut().filter(|s| s.closed.is_none()) {
        let closed = match s.s.local_addr() {
            Ok(a) => states.get(&a.port()) != Some(&TCP_ESTABLISHED),
            Err(_) => true,
        };
        if closed {
            s.closed = Some(now);
        }
    }
}

/// Lifetimes (seconds from `from`, or from each client's opening) of closed clients, and
/// how many were still open.
fn lifetimes(v: &[Slow], from: Option<Instant>) -> (Vec<f64>, usize) {
    let closed: Vec<f64> = v
        .iter()
        .filter_map(|s| {
            s.closed
                .map(|c| secs(c.duration_since(from.unwrap_or(s.opened))))
        })
        .collect();
    let open = v.len() - closed.len();
    (closed, open)
}

fn honest(addr: SocketAddr, path: &str, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = client::get(addr, path, Duration::from_secs(10));
            if matches!(&t.outcome, Outcome::Answered(a) if a.status == 200) {
                secs(t.took)
            } else {
                f64::INFINITY
            }
        })
        .collect()
}

/// Waits until the process uses less than a tenth of a core over half a second.
fn wait_quiet(pid: u32, within: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        let a = procfs::cpu_seconds(pid).unwrap_or(0.0);
        std::thread::sleep(Duration::from_millis(500));
        if procfs::cpu_seconds(pid).unwrap_or(0.0) - a <= 0.05 {
            break;
        }
    }
    started.elapsed()
}

/// 200 streams dribbling a DHT request a byte a second; each stream's lifetime (seconds),
/// `None` for one still open at `hold`.
fn dribble_streams(
    quic: SocketAddr,
    id: wire::NodeId,
    seed: crate::chaos::Seed,
    hold: Duration,
) -> Result<Vec<Option<f64>>, HarnessError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(HarnessError::io("a tokio runtime"))?;
    rt.block_on(async move {
        let request = wire::Frame::request(
            wire::dht::APP_PROTO_DHT,
            1,
            wire::message::encode(&wire::dht::DhtRequest::FindNode { target: [7; 32] }),
        )
        .to_bytes();
        let mut peers = Vec::new();
        let mut tasks = Vec::new();
        for p in 0..PEERS {
            let key = seed.derive(&format!("dribbler-{p}"));
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&key.to_le_bytes());
            let peer = RawPeer::connect(quic, Some(id), k, true).await?;
            for _ in 0..STREAMS_PER_PEER {
                let Ok(Ok((mut send, mut recv))) =
                    tokio::time::timeout(Duration::from_secs(5), peer.conn.open_bi()).await
                else {
                    break;
                };
                let bytes = request.clone();
                tasks.push(tokio::spawn(async move {
                    let opened = tokio::time::Instant::now();
                    let mut reading = Box::pin(recv.read_to_end(1 << 16));
                    for b in bytes.iter() {
                        if opened.elapsed() > hold {
                            return None;
                        }
                        let wrote = tokio::time::timeout(
                            Duration::from_secs(2),
                            send.write_all(std::slice::from_ref(b)),
                        )
                        .await;
                        if !matches!(wrote, Ok(Ok(()))) {
                            return Some(opened.elapsed().as_secs_f64());
                        }
                        // Whatever the node sends back (a status, a reset) ends it too.
                        if tokio::time::timeout(Duration::from_secs(1), &mut reading)
                            .await
                            .is_ok()
                        {
                            return Some(opened.elapsed().as_secs_f64());
                        }
                    }
                    None
                }));
            }
            peers.push(peer);
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.ok().flatten());
        }
        for p in peers {
            p.close().await;
        }
        Ok(out)
    })
}

/// Runs the three populations against one node.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let mut spec = ClusterSpec::new("loris", 1, 1, NetKind::Loopback, o.seed);
    spec.args = vec!["--write-stall-ms".into(), STALL.as_millis().to_string()];
    let mut c = Cluster::start(spec)?;
    let addr = c.http(0);
    let quic = c.nodes[0].quic();
    let id = c.ids()[0];
    let pid = c.pid(0);
    let ledger = Ledger::new(o.seed);
    let small = ledger
        .put(addr, 0, c.token(), 1, 4096, 1)
        .1
        .ok_or_else(|| HarnessError::Unexpected {
            what: "PUT of the 4 KiB object".into(),
            why: ledger.puts.examples().join("; "),
        })?;
    let big = ledger
        .put(addr, 0, c.token(), 2, 8 << 20, 1)
        .1
        .ok_or_else(|| HarnessError::Unexpected {
            what: "PUT of the 8 MiB object".into(),
            why: ledger.puts.examples().join("; "),
        })?;
    let small_path = client::object_path(&small.id);
    let big_path = client::object_path(&big.id);

    honest(addr, &small_path, 50);
    let mut idle = honest(addr, &small_path, 500);
    let idle_p99 = quantile(&mut idle, 0.99);
    let rss0 = procfs::rss_bytes(pid)?;
    procfs::reset_peak(pid);
    let mut r = Report::new("slow-loris", o.seed.0, o.long);

    // Readers first, then the node settles.
    let get_big = format!("GET {big_path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut readers: Vec<Slow> = (0..READERS)
        .filter_map(|_| Slow::open(addr, get_big.as_bytes(), true))
        .collect();
    for _ in 0..20 {
        readers.iter_mut().for_each(|s| s.tick(64, &[]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let settle = wait_quiet(pid, Duration::from_secs(30));
    let quiet_at = Instant::now();
    println!(
        "chaos: {} slow readers; node quiet after {settle:?}",
        readers.len()
    );

    // Then the head dribblers and the streams.
    let head = format!("GET {small_path} HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    let mut dribblers: Vec<Slow> = (0..DRIBBLERS)
        .filter_map(|_| Slow::open(addr, head.as_bytes(), false))
        .collect();
    let hold = INBOUND_TIMEOUT + Duration::from_secs(15);
    let seed = o.seed;
    let streams = std::thread::spawn(move || dribble_streams(quic, id, seed, hold));
    let t_loaded = Instant::now();
    let mut loaded = Vec::new();
    let mut last_tick = Instant::now() - Duration::from_secs(1);
    let port = addr.port();
    let tick = |readers: &mut Vec<Slow>, dribblers: &mut Vec<Slow>, last: &mut Instant| {
        if last.elapsed() >= Duration::from_secs(1) {
            readers.iter_mut().for_each(|s| s.tick(1, &[]));
            dribblers.iter_mut().for_each(|s| s.tick(1, b"a"));
            *last = Instant::now();
        }
        mark_closed(readers, port);
        mark_closed(dribblers, port);
    };
    std::thread::sleep(Duration::from_secs(2));
    // Honest GETs while everything holds on (the head dribblers are cut at 10 s).
    while t_loaded.elapsed() < Duration::from_secs(7) && loaded.len() < 500 {
        tick(&mut readers, &mut dribblers, &mut last_tick);
        loaded.extend(honest(addr, &small_path, 10));
    }
    let rss_loaded = procfs::rss_bytes(pid)?;
    let loaded_p99 = quantile(&mut loaded, 0.99);
    // Then watch them being cut.
    let watch_until = t_loaded + hold;
    while Instant::now() < watch_until {
        tick(&mut readers, &mut dribblers, &mut last_tick);
        let all_closed = readers.iter().chain(&dribblers).all(|s| s.closed.is_some());
        if all_closed && streams.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stream_lives = joined(streams.join(), "the stream dribblers")??;
    let peak = procfs::peak_rss_bytes(pid)?;
    let stalled = c.nodes[0]
        .metric("rejected_total{reason=\"write_stalled\"}")
        .ok()
        .flatten()
        .unwrap_or(0.0);
    let up = client::get(addr, "/healthz", Duration::from_secs(5))
        .outcome
        .status()
        == Some(200);

    let (reader_lives, readers_open) = lifetimes(&readers, Some(quiet_at));
    let (dribbler_lives, dribblers_open) = lifetimes(&dribblers, None);
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let stream_closed: Vec<f64> = stream_lives.iter().flatten().copied().collect();
    let streams_open = stream_lives.len() - stream_closed.len();
    let floor = idle_p99.max(0.004);
    r.goal(
        "honest_p99_ms",
        loaded_p99 * 1e3,
        "ms",
        Goal::AtMost(2.0 * floor * 1e3),
    );
    r.info("idle_p99_ms", idle_p99 * 1e3, "ms");
    // The longest a client of a population lived (infinite while any is still open).
    let mut cut = |name: &str, lives: &[f64], open: usize, bound: f64| {
        let worst = if open > 0 { f64::INFINITY } else { max(lives) };
        r.goal(name, worst, "s", Goal::AtMost(bound));
    };
    cut(
        "readers_cut_max",
        &reader_lives,
        readers_open,
        secs(STALL) + 5.0,
    );
    cut(
        "head_dribblers_cut_max",
        &dribbler_lives,
        dribblers_open,
        secs(HEADER_TIMEOUT) + 2.0,
    );
    cut(
        "streams_cut_max",
        &stream_closed,
        streams_open,
        secs(INBOUND_TIMEOUT) + 5.0,
    );
    r.mib_at_most("rss_growth", peak.saturating_sub(rss0), RSS_GROWTH_MAX);
    r.yes("node_up", up);
    let crashed = c.crashed();
    r.zero("crashes", crashed.len() as u64);
    r.info("readers", readers.len() as f64, "");
    r.info("head_dribblers", dribblers.len() as f64, "");
    r.info("streams", stream_lives.len() as f64, "");
    r.note(format!(
        "still open at the end: {readers_open} readers, {dribblers_open} head dribblers, \
         {streams_open} streams; the node counted {stalled} write stalls; RSS {} MiB idle, {} MiB loaded, peak {} MiB",
        rss0 >> 20,
        rss_loaded >> 20,
        peak >> 20
    ));
    let mut sl = stream_closed.clone();
    r.note(format!(
        "stream lifetimes: min {:.1} s, p50 {:.1} s, max {:.1} s",
        stream_closed.iter().copied().fold(f64::INFINITY, f64::min),
        quantile(&mut sl, 0.5),
        max(&stream_closed)
    ));
    Ok(r)
}
