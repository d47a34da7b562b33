//! A seeded UDP impairment proxy between node processes: per-link delay, jitter, loss,
//! duplication, reordering and partitions for their QUIC traffic, changeable while the
//! nodes run, without root and without `tc netem` (which these machines lack).
//!
//! How nodes reach each other through it: each node `j` gets an *alias* socket `P_j` on
//! loopback, and the node itself listens on `0.0.0.0:port_j`. A node listening on an
//! unspecified address states no `listen_addrs` in HELLO, so its peers know it by the
//! address they dialed or saw packets come from. Every node bootstraps off `P_0`. A
//! datagram from node `i` (recognised by its source, `127.0.0.1:port_i`) arriving at `P_j`
//! is judged by the rules of link `i -> j` and, unless dropped, sent on to node `j` *from*
//! `P_i`: so `j` sees `i` at `P_i`, dials `P_i` to reach it, and every address any node
//! learns or gossips is an alias. Nothing but the harness knows the real ports.
//!
//! Determinism: each directed link has its own ChaCha8 stream derived from the seed and
//! the link, and every datagram draws the same four numbers whatever the rules, so the
//! k-th datagram on a link meets the same fate for a given seed and rules. (Which datagram
//! is the k-th depends on the nodes' timing; the schedule of rule changes is the
//! scenario's, from the same seed.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::seed::Seed;
use crate::HarnessError;

/// Largest datagram relayed (QUIC stays under 1,500; a loopback datagram may be larger).
const DATAGRAM_MAX: usize = 65_535;
/// How often idle threads look at the stop flag.
const TICK: Duration = Duration::from_millis(50);
/// Socket buffers asked for, so bursts are not dropped by the kernel before we judge them.
const SOCKET_BUFFER: usize = 8 << 20;

/// What one directed link does to the datagrams it carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Added one-way delay.
    pub delay: Duration,
    /// The delay varies uniformly within `delay ± jitter` (clamped at 0), which also
    /// reorders datagrams whose delays cross.
    pub jitter: Duration,
    /// Probability a datagram is dropped.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by `reorder_gap`, so later ones overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_gap: Duration,
    /// Jitter without reordering: a datagram is never delivered before one that came
    /// before it on the same link (a queue, as a real path mostly is; netem's jitter, by
    /// contrast, reorders).
    pub in_order: bool,
}

impl Impairment {
    /// A perfect link.
    pub const NONE: Impairment = Impairment {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        reorder_gap: Duration::from_millis(10),
        in_order: false,
    };

    /// Only loss.
    pub fn loss(p: f64) -> Impairment {
        Impairment {
            loss: p,
            ..Impairment::NONE
        }
    }

    /// Only delay with jitter.
    pub fn delay(delay: Duration, jitter: Duration) -> Impairment {
        Impairment {
            delay,
            jitter,
            ..Impairment::NONE
        }
    }

    fn is_none(&self) -> bool {
        self.delay.is_zero()
            && self.jitter.is_zero()
            && self.loss == 0.0
            && self.duplicate == 0.0
            && self.reorder == 0.0
    }
}

/// Counters of one link, or of all links summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams delivered (a duplicate counts twice).
    pub forwarded: u64,
    /// Dropped by the loss rule.
    pub lost: u64,
    /// Dropped because the link was partitioned.
    pub blocked: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Held back to be overtaken.
    pub reordered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    lost: AtomicU64,
    blocked: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> LinkStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            forwarded: l(&self.forwarded),
            lost: l(&self.lost),
            blocked: l(&self.blocked),
            duplicated: l(&self.duplicated),
            reordered: l(&self.reordered),
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    due: Instant,
    seq: u64,
    from: usize,
    to: usize,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Shared {
    /// When the last datagram of each link is due (for in-order jitter).
    last_due: Vec<Mutex<Option<Instant>>>,
    real: Vec<SocketAddr>,
    sockets: Vec<UdpSocket>,
    rules: RwLock<Vec<Impairment>>,
    blocked: Vec<AtomicBool>,
    rngs: Vec<Mutex<ChaCha8Rng>>,
    counters: Vec<Counters>,
    unknown_source: AtomicU64,
    queue: Mutex<BinaryHeap<Reverse<Pending>>>,
    wake: Condvar,
    seq: AtomicU64,
    stop: AtomicBool,
}

/// The proxy: alias sockets for `n` nodes and the threads relaying between them. Dropping
/// it stops the threads and closes the sockets.
#[derive(Debug)]
pub struct UdpProxy {
    shared: Arc<Shared>,
    aliases: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

fn link_name(from: usize, to: usize) -> String {
    format!("link {from}->{to}")
}

impl UdpProxy {
    /// A proxy for nodes whose real QUIC addresses are `real` (loopback, in node order).
    pub fn start(seed: Seed, real: Vec<SocketAddr>) -> Result<UdpProxy, HarnessError> {
        let n = real.len();
        let mut sockets = Vec::with_capacity(n);
        for i in 0..n {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(HarnessError::io(
                format!("binding the alias socket of node {i}"),
            ))?;
            grow_buffers(&s);
            s.set_read_timeout(Some(TICK))
                .map_err(HarnessError::io("set_read_timeout on an alias socket"))?;
            sockets.push(s);
        }
        let aliases = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<Result<Vec<_>, _>>()
            .map_err(HarnessError::io("local_addr of an alias socket"))?;
        let links = n * n;
        let rngs = (0..links)
            .map(|l| Mutex::new(seed.rng(&link_name(l / n, l % n))))
            .collect();
        let shared = Arc::new(Shared {
            last_due: (0..links).map(|_| Mutex::new(None)).collect(),
            real,
            sockets,
            rules: RwLock::new(vec![Impairment::NONE; links]),
            blocked: (0..links).map(|_| AtomicBool::new(false)).collect(),
            rngs,
            counters: (0..links).map(|_| Counters::default()).collect(),
            unknown_source: AtomicU64::new(0),
            queue: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for j in 0..n {
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("proxy-rx-{j}"))
                    .spawn(move || receive_loop(&sh, j))
                    .map_err(HarnessError::io("spawning a proxy thread"))?,
            );
        }
        let sh = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("proxy-delay".into())
                .spawn(move || delay_loop(&sh))
                .map_err(HarnessError::io("spawning a proxy thread"))?,
        );
        Ok(UdpProxy {
            shared,
            aliases,
            threads,
        })
    }

    /// How many nodes the proxy serves.
    pub fn len(&self) -> usize {
        self.aliases.len()
    }

    /// Whether it serves none.
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }

    /// The address node `i` is known by: where its peers dial it.
    pub fn alias(&self, i: usize) -> SocketAddr {
        self.aliases[i]
    }

    /// Sets the rules of the directed link `from -> to`.
    pub fn set_link(&self, from: usize, to: usize, rule: Impairment) {
        let n = self.len();
        if let Ok(mut rules) = self.shared.rules.write() {
            rules[from * n + to] = rule;
        }
    }

    /// Sets the rules of every link.
    pub fn set_all(&self, rule: Impairment) {
        if let Ok(mut rules) = self.shared.rules.write() {
            rules.iter_mut().for_each(|r| *r = rule);
        }
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let n = self.len();
        for &x in a {
            for &y in b {
                self.shared.blocked[x * n + y].store(true, Ordering::Relaxed);
                self.shared.blocked[y * n + x].store(true, Ordering::Relaxed);
            }
        }
    }

    /// Restores every cut link (the other rules stay).
    pub fn heal(&self) {
        for b in &self.shared.blocked {
            b.store(false, Ordering::Relaxed);
        }
    }

    /// Counters of the link `from -> to`.
    pub fn link_stats(&self, from: usize, to: usize) -> LinkStats {
        self.shared.counters[from * self.len() + to].snapshot()
    }

    /// Counters summed over every link.
    pub fn stats(&self) -> LinkStats {
        let mut t = LinkStats::default();
        for c in &self.shared.counters {
            let s = c.snapshot();
            t.forwarded += s.forwarded;
            t.lost += s.lost;
            t.blocked += s.blocked;
            t.duplicated += s.duplicated;
            t.reordered += s.reordered;
        }
        t
    }

    /// Datagrams from sources that are not nodes of the proxy (dropped).
    pub fn unknown_sources(&self) -> u64 {
        self.shared.unknown_source.load(Ordering::Relaxed)
    }

    /// Datagrams the kernel dropped on the alias sockets (full receive buffers): loss the
    /// scenario did not ask for. From `/proc/net/udp`; 0 where it cannot be read.
    pub fn kernel_drops(&self) -> u64 {
        let ports: Vec<u16> = self.aliases.iter().map(SocketAddr::port).collect();
        let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
            return 0;
        };
        table
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
                let drops: u64 = f.last()?.parse().ok()?;
                ports.contains(&port).then_some(drops)
            })
            .sum()
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Larger socket buffers (forced past `rmem_max` where we may, as root).
fn grow_buffers(s: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(s, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(s, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(s, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(s, sockopt::SndBuf, &SOCKET_BUFFER);
    }
}

/// Receives what arrives at node `to`'s alias and judges it.
fn receive_loop(sh: &Shared, to: usize) {
    let n = sh.real.len();
    let mut buf = vec![0u8; DATAGRAM_MAX];
    while !sh.stop.load(Ordering::Relaxed) {
        let (len, src) = match sh.sockets[to].recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue, // the read timeout, or a transient error
        };
        let Some(from) = sh.real.iter().position(|r| *r == src) else {
            sh.unknown_source.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let link = from * n + to;
        let counters = &sh.counters[link];
        // Always four draws, whatever the rules: the k-th datagram's fate depends only on
        // the seed and the rules.
        let (u_loss, u_dup, u_reorder, u_jitter) = match sh.rngs[link].lock() {
            Ok(mut r) => (
                r.r#gen::<f64>(),
                r.r#gen::<f64>(),
                r.r#gen::<f64>(),
                r.r#gen::<f64>(),
            ),
            Err(_) => continue,
        };
        let rule = match sh.rules.read() {
            Ok(r) => r[link],
            Err(_) => continue,
        };
        if sh.blocked[link].load(Ordering::Relaxed) {
            counters.blocked.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if rule.is_none() {
            send(sh, from, to, &buf[..len], counters);
            continue;
        }
        if u_loss < rule.loss {
            counters.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let jitter = rule.jitter.as_secs_f64() * (2.0 * u_jitter - 1.0);
        let mut delay = Duration::from_secs_f64((rule.delay.as_secs_f64() + jitter).max(0.0));
        if u_reorder < rule.reorder {
            counters.reordered.fetch_add(1, Ordering::Relaxed);
            delay += rule.reorder_gap;
        }
        let copies = if u_dup < rule.duplicate {
            counters.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        if delay.is_zero() {
            for _ in 0..copies {
                send(sh, from, to, &buf[..len], counters);
            }
            continue;
        }
        let mut due = Instant::now() + delay;
        if rule.in_order {
            if let Ok(mut last) = sh.last_due[link].lock() {
                due = last.map_or(due, |l| due.max(l));
                *last = Some(due);
            }
        }
        if let Ok(mut q) = sh.queue.lock() {
            for c in 0..copies {
                q.push(Reverse(Pending {
                    // A duplicate trails its original by a millisecond.
                    due: due + Duration::from_millis(c),
                    seq: sh.seq.fetch_add(1, Ordering::Relaxed),
                    from,
                    to,
                    data: buf[..len].to_vec(),
                }));
            }
        }
        sh.wake.notify_one();
    }
}

/// Delivers `data` to node `to` from node `from`'s alias.
fn send(sh: &Shared, from: usize, to: usize, data: &[u8], counters: &Counters) {
    if sh.sockets[from].send_to(data, sh.real[to]).is_ok() {
        counters.forwarded.fetch_add(1, Ordering::Relaxed);
    }
}

/// Delivers delayed datagrams when they are due.
fn delay_loop(sh: &Shared) {
    let n = sh.real.len();
    let Ok(mut q) = sh.queue.lock() else {
        return;
    };
    while !sh.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match q.peek() {
            Some(Reverse(p)) if p.due <= now => {
                if let Some(Reverse(p)) = q.pop() {
                    drop(q);
                    send(sh, p.from, p.to, &p.data, &sh.counters[p.from * n + p.to]);
                    q = match sh.queue.lock() {
                        Ok(q) => q,
                        Err(_) => return,
                    };
                }
            }
            next => {
                let wait = next.map_or(TICK, |Reverse(p)| (p.due - now).min(TICK));
                q = match sh.wake.wait_timeout(q, wait) {
                    Ok((q, _)) => q,
                    Err(_) => return,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two plain sockets standing in for nodes 0 and 1 (node 1 reads with a timeout), and
    /// their addresses.
    fn two_nodes() -> (UdpSocket, UdpSocket, Vec<SocketAddr>) {
        let bind = || UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (bind(), bind());
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = |s: &UdpSocket| s.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let real = vec![addr(&a), addr(&b)];
        (a, b, real)
    }

    /// Two plain sockets stand in for nodes: what node 0 sends to node 1's alias arrives
    /// at node 1 from node 0's alias, and the loss rule drops what its seed says.
    #[test]
    fn relays_between_aliases_and_drops_by_the_seed() {
        let (a, b, real) = two_nodes();
        let delivered = |seed: u64| {
            let p = UdpProxy::start(Seed(seed), real.clone()).unwrap_or_else(|e| panic!("{e}"));
            p.set_all(Impairment::loss(0.3));
            let mut got = Vec::new();
            for k in 0u8..50 {
                a.send_to(&[k], p.alias(1))
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut buf = [0u8; 8];
                if let Ok((1, from)) = b.recv_from(&mut buf) {
                    assert_eq!(from, p.alias(0), "node 1 sees node 0 at its alias");
                    got.push(buf[0]);
                }
            }
            let s = p.link_stats(0, 1);
            assert_eq!(s.forwarded + s.lost, 50, "{s:?}");
            got
        };
        let first = delivered(9);
        assert!(first.len() > 20 && first.len() < 50, "{first:?}");
        assert_eq!(
            first,
            delivered(9),
            "the same seed drops the same datagrams"
        );
        assert_ne!(first, delivered(10));
    }

    #[test]
    fn a_partition_blocks_both_ways_until_healed() {
        let (a, b, real) = two_nodes();
        let p = UdpProxy::start(Seed(1), real).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 8];
        p.partition(&[0], &[1]);
        a.send_to(b"x", p.alias(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            b.recv_from(&mut buf).is_err(),
            "delivered across a partition"
        );
        p.heal();
        p.set_link(
            0,
            1,
            Impairment::delay(Duration::from_millis(50), Duration::ZERO),
        );
        let sent = Instant::now();
        a.send_to(b"y", p.alias(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            b.recv_from(&mut buf).is_ok(),
            "not delivered after the heal"
        );
        assert!(sent.elapsed() >= Duration::from_millis(45));
        assert_eq!(p.link_stats(0, 1).blocked, 1);
    }
}
