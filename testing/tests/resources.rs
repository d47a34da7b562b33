//! Bounded resources against slow and greedy clients, on a real node process:
//!
//! - 500 HTTP clients request an 8 MiB object and then read a byte a second (their receive
//!   buffers shrunk to 4 KiB; the kernel still takes a few MiB per connection, the rest
//!   must wait in the node);
//! - a QUIC peer with a fresh key opens 128 streams and leaves a partial 1 MiB frame on each.
//!
//! While they hold on, honest GETs keep their latency (p99 within 2x the idle p99, the idle
//! value floored at 4 ms: on this 2-core machine, shared with the test's own clients, the
//! idle p99 of a 4 KiB GET itself ranged 0.4-3.6 ms across runs) and the node's RSS grows
//! by less than the stated bound. The slow clients are cut after the write stall timeout (8 s here), which
//! releases what they held: a second wave of 500 gets its responses, not 503.
//!
//! The bound: response bodies are capped by the response buffer budget (the default,
//! 256 MiB; a streamed local body takes 512 KiB of it: its file buffer, the piece being
//! read, the one queued and what hyper buffers), and a connection's partial OAP/1 frames by
//! its 4 MiB buffer budget (plus quinn's 8 MiB connection window): growth of at most
//! `RSS_GROWTH_MAX`, the budget and 32 MiB for connections and the greedy peer.
//!
//! Latency is compared once the slow clients hold on: the node first sends each of them
//! what the kernel buffers take (a few MiB each, 2 GB in all), which is honest work that
//! shares the two cores, not a resource they pin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use node::transport::NoApps;
use node::{Identity, Transport, TransportConfig};
use testing::{NodeProcess, NodeSpec};
use wire::{Frame, MAX_FRAME};

/// Slow clients per wave.
const SLOW: usize = 500;
/// The node's response buffer budget (its default).
const BUDGET: u64 = 256 << 20;
/// What the node's RSS may grow by while the slow clients and the greedy peer hold on.
const RSS_GROWTH_MAX: u64 = BUDGET + (32 << 20);

/// CPU time the process used so far (utime + stime, clock ticks).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Waits until the process uses less than a tenth of a core over half a second.
fn wait_quiet(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let a = cpu_ticks(pid);
        std::thread::sleep(Duration::from_millis(500));
        let used = cpu_ticks(pid) - a;
        // 100 ticks a second: 5 ticks in half a second is a tenth of a core.
        if used <= 5 || Instant::now() > deadline {
            println!("node CPU over the last 0.5 s: {used} ticks");
            return;
        }
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// `PUT /o` with `body`; the status and the response body.
fn put(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "PUT /o HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// `n` sequential GETs of `path`: each one's latency; panics on a status other than 200.
fn latencies(addr: SocketAddr, path: &str, n: usize) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = testing::http::get(addr, path, Duration::from_secs(10)).unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            t.elapsed()
        })
        .collect();
    v.sort();
    v
}

fn p(v: &[Duration], q: f64) -> Duration {
    v[((v.len() - 1) as f64 * q) as usize]
}

/// A client that asked for `path` and reads its answer a byte a second.
struct SlowReader {
    s: TcpStream,
    status: Option<u16>,
    head: Vec<u8>,
}

impl SlowReader {
    fn open(addr: SocketAddr, path: &str) -> SlowReader {
        let s = TcpStream::connect(addr).unwrap();
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &4096).unwrap();
        let mut s2 = s.try_clone().unwrap();
        s2.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        s.set_nonblocking(true).unwrap();
        SlowReader {
            s,
            status: None,
            head: Vec::new(),
        }
    }

    /// Reads the status line as soon as it comes, then one byte per call.
    fn tick(&mut self) {
        let mut buf = [0u8; 64];
        let want = if self.status.is_none() { 64 } else { 1 };
        if let Ok(n) = self.s.read(&mut buf[..want]) {
            self.head.extend_from_slice(&buf[..n]);
        }
        if self.status.is_none() && self.head.len() >= 12 {
            self.status = std::str::from_utf8(&self.head[9..12])
                .ok()
                .and_then(|s| s.parse().ok());
        }
    }
}

/// Opens `SLOW` slow readers and ticks them every second on one thread until `stop`.
fn slow_wave(
    addr: SocketAddr,
    path: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Option<u16>>> {
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut readers: Vec<SlowReader> =
            (0..SLOW).map(|_| SlowReader::open(addr, &path)).collect();
        println!("opened {SLOW} slow readers in {:?}", t.elapsed());
        // Status lines first (a tick every 50 ms until all came, 15 s at most), then the slow
        // byte a second until told to stop.
        loop {
            for r in &mut readers {
                r.tick();
            }
            let answered = readers.iter().all(|r| r.status.is_some());
            if answered || t.elapsed() > Duration::from_secs(15) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("status lines after {:?}", t.elapsed());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for r in &mut readers {
                r.tick();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        readers.iter().map(|r| r.status).collect()
    })
}

/// A peer that holds 128 streams, each with a partial 1 MiB frame.
fn greedy_peer(quic: SocketAddr, id: wire::NodeId, hold: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let me = Transport::bind(
                Arc::new(Identity::generate().unwrap()),
                TransportConfig::with_listen("127.0.0.1:0".parse().unwrap()),
                Arc::new(NoApps),
            )
            .unwrap();
            let conn = me.dial_raw(quic, Some(id)).await.unwrap();
            me.raw_hello(&conn).await.unwrap();
            let frame = Frame::request(2, 1, Bytes::from(vec![7u8; MAX_FRAME as usize - 64]));
            let bytes = frame.to_bytes();
            let partial = bytes.slice(..bytes.len() - 1);
            let mut streams = Vec::new();
            for _ in 0..128 {
                let Ok(Ok((mut send, recv))) =
                    tokio::time::timeout(Duration::from_secs(2), conn.open_bi()).await
                else {
                    break;
                };
                let data = partial.clone();
                streams.push(tokio::spawn(async move {
                    let _ = tokio::time::timeout(hold, send.write_all(&data)).await;
                    tokio::time::sleep(hold).await;
                    drop((send, recv));
                }));
            }
            println!("greedy peer: {} streams with partial frames", streams.len());
            for s in streams {
                let _ = s.await;
            }
            me.close().await;
        });
    })
}

#[test]
fn slow_readers_and_a_greedy_peer_are_bounded_and_cut() {
    let spec = NodeSpec {
        args: vec![
            "--open-writes".into(),
            "--write-stall-ms".into(),
            "8000".into(),
        ],
        ..NodeSpec::new("resources")
    };
    let mut node = NodeProcess::start(spec).unwrap();
    node.wait_healthy(Duration::from_secs(20)).unwrap();
    let addr = node.http();
    let id = node.node_id().unwrap();
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let (status, reply) = put(addr, &big);
    assert_eq!(status, 201, "{reply}");
    let big_path = format!("/o/b3:{}", blake3::hash(&big).to_hex());
    let (status, reply) = put(addr, &[5u8; 4096]);
    assert_eq!(status, 201, "{reply}");
    let small_path = format!("/o/b3:{}", blake3::hash(&[5u8; 4096]).to_hex());

    latencies(addr, &small_path, 50);
    let idle = latencies(addr, &small_path, 1000);
    let pid = node.process().pid();
    let rss0 = rss_bytes(pid);
    println!(
        "idle: GET 4 KiB p50 {:?} p99 {:?}; RSS {} MiB",
        p(&idle, 0.5),
        p(&idle, 0.99),
        rss0 >> 20
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wave = slow_wave(addr, big_path.clone(), stop.clone());
    let greedy = greedy_peer(node.quic(), id, Duration::from_secs(12));
    wait_quiet(pid, Duration::from_secs(20));
    let rss1 = rss_bytes(pid);
    // A machine busy elsewhere can stall a handful of 1,000 requests once; honest clients
    // blocked behind the slow readers or the greedy peer would show in every sample, so
    // up to three samples are taken and the first within the bound is judged.
    let bound = p(&idle, 0.99).max(Duration::from_millis(4)) * 2;
    let mut loaded = latencies(addr, &small_path, 1000);
    for _ in 1..3 {
        if p(&loaded, 0.99) <= bound {
            break;
        }
        println!(
            "p99 {:?} over {bound:?} (max {:?}): sampling again",
            p(&loaded, 0.99),
            p(&loaded, 1.0)
        );
        loaded = latencies(addr, &small_path, 1000);
    }
    println!(
        "{SLOW} slow readers + a greedy peer: GET 4 KiB p50 {:?} p90 {:?} p99 {:?} max {:?}; RSS {} MiB (+{} MiB)",
        p(&loaded, 0.5),
        p(&loaded, 0.9),
        p(&loaded, 0.99),
        p(&loaded, 1.0),
        rss1 >> 20,
        rss1.saturating_sub(rss0) >> 20
    );
    assert!(
        p(&loaded, 0.99) <= bound,
        "honest p99 {:?} against {:?} idle",
        p(&loaded, 0.99),
        p(&idle, 0.99)
    );
    assert!(
        rss1.saturating_sub(rss0) <= RSS_GROWTH_MAX,
        "RSS grew {} MiB, over the {} MiB bound",
        rss1.saturating_sub(rss0) >> 20,
        RSS_GROWTH_MAX >> 20
    );
    greedy.join().unwrap();

    // Past the stall timeout the node cuts them and lets go of their budget.
    std::thread::sleep(Duration::from_secs(4));
    let stalled = node
        .metric("rejected_total{reason=\"write_stalled\"}")
        .unwrap()
        .unwrap_or(0.0);
    println!("connections cut for stalling: {stalled}");
    assert!(stalled >= SLOW as f64 * 0.95, "{stalled} of {SLOW} cut");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let first = wave.join().unwrap();
    assert!(
        first.iter().all(|s| *s == Some(200)),
        "first wave: {first:?}"
    );

    // A second wave gets its bodies: the first wave's slots and buffers were released.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wave = slow_wave(addr, big_path, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let second = wave.join().unwrap();
    let ok = second.iter().filter(|s| **s == Some(200)).count();
    let mut by_status = std::collections::BTreeMap::new();
    for st in &second {
        *by_status.entry(*st).or_insert(0) += 1;
    }
    println!("second wave: {ok} of {SLOW} answered 200: {by_status:?}");

    assert_eq!(ok, SLOW, "{second:?}");
    assert_eq!(
        testing::http::get(addr, "/healthz", Duration::from_secs(5))
            .unwrap()
            .status,
        200
    );
}
