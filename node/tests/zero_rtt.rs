//! Session resumption and 0-RTT between nodes (`TransportConfig::zero_rtt`), over real QUIC
//! on 127.0.0.1. A UDP relay between the two nodes can delay every datagram (to count round
//! trips) and can withhold the dialer's handshake completion (its Handshake and 1-RTT
//! packets) from the listener: what the listener then answers, it answered from the first
//! flight alone, before the handshake completed; what it holds back is what a replay of
//! that flight, which never completes a handshake, would get. Every await is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use node::{
    Identity, InboundExchange, InboundHandler, Transport, TransportConfig, TransportError,
    transport::HandlerFuture,
};
use tokio::net::UdpSocket;
use wire::{NodeId, Status};

/// Echoes; safe to replay.
const READ: u16 = 7;
/// Echoes and records the body as executed; not safe to replay.
const WRITE: u16 = 10;
const BOUND: Duration = Duration::from_secs(10);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("operation did not finish in time")
}

/// Serves READ and WRITE; `reckless` declares WRITE replay-safe too (a dialer that
/// disagrees with the listener about what may go early).
struct Apps {
    seen: Arc<Mutex<Vec<NodeId>>>,
    writes: Arc<Mutex<Vec<Bytes>>>,
    reckless: bool,
}

impl InboundHandler for Apps {
    fn app_protos(&self) -> Vec<u16> {
        vec![READ, WRITE]
    }

    fn handle(&self, mut ex: InboundExchange) -> HandlerFuture {
        let (seen, writes) = (self.seen.clone(), self.writes.clone());
        Box::pin(async move {
            seen.lock().unwrap().push(ex.peer());
            let body = ex.read_body(1 << 20).await?;
            if ex.app_proto_id() == WRITE {
                writes.lock().unwrap().push(body.clone());
            }
            ex.respond(Status::Ok, body).await
        })
    }

    fn replay_safe(&self, app_proto: u16, _body: &[u8]) -> bool {
        app_proto == READ || self.reckless
    }
}

struct TestNode {
    t: Transport,
    seen: Arc<Mutex<Vec<NodeId>>>,
    writes: Arc<Mutex<Vec<Bytes>>>,
}

fn node_with(zero_rtt: bool, reckless: bool, handshake_timeout: Duration) -> TestNode {
    let config = TransportConfig {
        zero_rtt,
        handshake_timeout,
        ..TransportConfig::with_listen("127.0.0.1:0".parse().unwrap())
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let writes = Arc::new(Mutex::new(Vec::new()));
    let apps = Apps {
        seen: seen.clone(),
        writes: writes.clone(),
        reckless,
    };
    let identity = Arc::new(Identity::generate().unwrap());
    let t = Transport::bind(identity, config, Arc::new(apps)).unwrap();
    TestNode { t, seen, writes }
}

fn node(zero_rtt: bool) -> TestNode {
    node_with(zero_rtt, false, Duration::from_secs(5))
}

impl TestNode {
    fn id(&self) -> NodeId {
        self.t.node_id()
    }
    fn addr(&self) -> SocketAddr {
        self.t.local_addr()
    }
}

/// `from` meets `to` once (a full handshake, which leaves `from` with session tickets) and
/// both ends close the connection.
async fn meet_and_part(from: &TestNode, to: &TestNode) {
    let (status, _) = within(
        from.t
            .request_to(to.addr(), to.id(), READ, Bytes::from("hi")),
    )
    .await
    .unwrap();
    assert_eq!(status, Status::Ok);
    part(from, to).await;
}

/// Both ends close the connection `from` opened to `to`, once the tickets had time to come
/// (in the listener's first flight after the handshake).
async fn part(from: &TestNode, to: &TestNode) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    from.t.disconnect(&to.id());
    within(async {
        while from.t.connection_count() + to.t.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A UDP relay: the dialer sends to `addr`, the relay forwards to `upstream` from a socket of
/// its own per dialer address, and back. Each datagram is delayed by `one_way`; while
/// `withhold` is set, dialer datagrams carrying a Handshake or 1-RTT packet are dropped.
struct Relay {
    addr: SocketAddr,
    withhold: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(upstream: SocketAddr, one_way: Duration) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let withhold = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (w, d) = (withhold.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut tasks = Vec::new();
            let mut buf = vec![0u8; 65536];
            while let Ok((n, client)) = front.recv_from(&mut buf).await {
                let datagram = buf[..n].to_vec();
                if w.load(Ordering::SeqCst) && completes_handshake(&datagram) {
                    d.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let back = match backs.get(&client) {
                    Some(b) => b.clone(),
                    None => {
                        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        b.connect(upstream).await.unwrap();
                        let (b2, f2) = (b.clone(), front.clone());
                        tasks.push(AbortOnDrop(tokio::spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while let Ok(n) = b2.recv(&mut buf).await {
                                let datagram = buf[..n].to_vec();
                                let f3 = f2.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(one_way).await;
                                    let _ = f3.send_to(&datagram, client).await;
                                });
                            }
                        })));
                        backs.insert(client, b.clone());
                        b
                    }
                };
                tokio::spawn(async move {
                    tokio::time::sleep(one_way).await;
                    let _ = back.send(&datagram).await;
                });
            }
        });
        Relay {
            addr,
            withhold,
            dropped,
            task,
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a client datagram carries a Handshake packet (the client's Finished goes in one)
/// or a 1-RTT packet, walking coalesced QUIC v1 long-header packets (RFC 9000 §17.2: the
/// type bits are not header-protected). Anything unparsable counts as yes.
fn completes_handshake(mut d: &[u8]) -> bool {
    fn varint(b: &[u8]) -> Option<(usize, usize)> {
        let first = *b.first()?;
        let len = 1usize << (first >> 6);
        let bytes = b.get(..len)?;
        let mut v = u64::from(first & 0x3f);
        for x in &bytes[1..] {
            v = (v << 8) | u64::from(*x);
        }
        Some((usize::try_from(v).ok()?, len))
    }
    let mut walk = || -> Option<bool> {
        while !d.is_empty() {
            let first = d[0];
            if first & 0x80 == 0 {
                return Some(true);
            }
            let ty = (first >> 4) & 0x3;
            if ty == 2 {
                return Some(true);
            }
            let mut i = 5;
            i += 1 + usize::from(*d.get(i)?);
            i += 1 + usize::from(*d.get(i)?);
            if ty == 0 {
                let (token, n) = varint(d.get(i..)?)?;
                i += n + token;
            }
            let (len, n) = varint(d.get(i..)?)?;
            i += n + len;
            d = d.get(i..)?;
        }
        Some(false)
    };
    walk().unwrap_or(true)
}

/// (a) A second connection to a peer met before resumes, and its first read goes in the
/// first flight and is answered before the listener completes its handshake (0.5-RTT):
/// the relay withholds the dialer's Finished, and the answer still comes.
#[tokio::test]
async fn a_second_connection_resumes_and_its_read_is_answered_from_the_first_flight() {
    let (a, b) = (node(true), node(true));
    meet_and_part(&a, &b).await;
    let relay = Relay::start(b.addr(), Duration::ZERO).await;
    relay.withhold.store(true, Ordering::SeqCst);
    let (status, body) = within(a.t.request_to(relay.addr, b.id(), READ, Bytes::from("two")))
        .await
        .unwrap();
    assert_eq!((status, body), (Status::Ok, Bytes::from("two")));
    assert_eq!(a.t.stats().snapshot().zero_rtt_accepted, 1);
    assert_eq!(b.t.stats().snapshot().resumed_in, 1);
    // The dialer's Finished goes out as the answers arrive: the relay drops it then.
    within(async {
        while relay.dropped.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // B never completed the handshake: the connection is not in its table.
    assert!(b.t.peer(&a.id()).is_none());
    // Without zero_rtt (today's transport) the same read cannot be answered at all.
    let (c, d) = (node(false), node(false));
    meet_and_part(&c, &d).await;
    let relay = Relay::start(d.addr(), Duration::ZERO).await;
    relay.withhold.store(true, Ordering::SeqCst);
    let cut = tokio::time::timeout(
        Duration::from_secs(1),
        c.t.request_to(relay.addr, d.id(), READ, Bytes::from("two")),
    )
    .await;
    assert!(!matches!(cut, Ok(Ok(_))), "answered without a handshake");
}

/// (b) A request not safe to replay that arrives as 0-RTT data (from a dialer that
/// thinks otherwise) is held until the handshake completes, executed then; a flight whose
/// handshake never completes (a replay) never has it executed.
#[tokio::test]
async fn a_write_in_early_data_waits_for_the_handshake_and_a_replay_never_runs_it() {
    let a = node_with(true, true, Duration::from_secs(5));
    let b = node_with(true, false, Duration::from_secs(1));
    meet_and_part(&a, &b).await;
    let relay = Relay::start(b.addr(), Duration::ZERO).await;
    relay.withhold.store(true, Ordering::SeqCst);
    let t = a.t.clone();
    let (to, id) = (relay.addr, b.id());
    let write = tokio::spawn(async move { t.request_to(to, id, WRITE, Bytes::from("w1")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.t.stats().snapshot().resumed_in, 1, "not resumed");
    assert_eq!(b.t.stats().snapshot().early_held, 1, "not held");
    assert!(
        b.writes.lock().unwrap().is_empty(),
        "executed before the handshake"
    );
    // The handshake completes (the dialer retransmits its Finished): now it runs.
    relay.withhold.store(false, Ordering::SeqCst);
    let (status, _) = within(write).await.unwrap().unwrap();
    assert_eq!(status, Status::Ok);
    assert_eq!(*b.writes.lock().unwrap(), vec![Bytes::from("w1")]);

    // A replay: the handshake never completes; past B's handshake_timeout the connection is
    // closed and the write was never executed.
    a.t.disconnect(&b.id());
    within(async {
        while b.t.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    relay.withhold.store(true, Ordering::SeqCst);
    let result = within(a.t.request_to(relay.addr, b.id(), WRITE, Bytes::from("w2"))).await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(b.t.stats().snapshot().early_held, 2);
    assert_eq!(*b.writes.lock().unwrap(), vec![Bytes::from("w1")]);
}

/// (c) On a resumed connection each end still knows the other by its key; a stranger
/// without a ticket gets a full handshake; a ticket from one node offered at another
/// node's address does not make that node pass for the first, and its early data is not
/// served there.
#[tokio::test]
async fn a_resumed_connection_keeps_the_peers_identity_and_a_ticket_claims_no_other() {
    let (a, b) = (node(true), node(true));
    meet_and_part(&a, &b).await;
    within(a.t.request_to(b.addr(), b.id(), READ, Bytes::from("again")))
        .await
        .unwrap();
    assert_eq!(b.t.stats().snapshot().resumed_in, 1, "not resumed");
    assert_eq!(a.t.stats().snapshot().zero_rtt_accepted, 1, "not 0-RTT");
    assert_eq!(a.t.peer(&b.id()).map(|p| p.id), Some(b.id()));
    assert_eq!(*b.seen.lock().unwrap(), vec![a.id(), a.id()]);
    within(async {
        while b.t.peer(&a.id()).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let stranger = node(true);
    within(
        stranger
            .t
            .request_to(b.addr(), b.id(), READ, Bytes::from("new")),
    )
    .await
    .unwrap();
    assert_eq!(b.t.stats().snapshot().resumed_in, 1, "a stranger resumed");
    assert_eq!(b.seen.lock().unwrap().last(), Some(&stranger.id()));

    // A holds tickets from B; C now answers at the address A dials for B.
    a.t.disconnect(&b.id());
    let c = node(true);
    let err = within(a.t.request_to(c.addr(), b.id(), READ, Bytes::from("x")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::PeerIdMismatch { expected, got } if expected == b.id() && got == c.id()),
        "{err:?}"
    );
    assert!(c.seen.lock().unwrap().is_empty(), "C served B's early data");
    assert_eq!(c.t.stats().snapshot().resumed_in, 0);
}

/// Round trips of a first request to a peer met before, through a relay adding 25 ms each
/// way (50 ms RTT): a full handshake then the request is two round trips; with 0-RTT, one.
/// Prints the times (PERFORMANCE.md, "First request without a handshake round trip").
#[tokio::test]
async fn a_first_request_to_a_known_peer_costs_one_round_trip_with_zero_rtt() {
    const ONE_WAY: Duration = Duration::from_millis(25);
    const ROUNDS: usize = 5;
    let rtt = ONE_WAY * 2;
    let mut medians = Vec::new();
    for zero_rtt in [false, true] {
        let (a, b) = (node(zero_rtt), node(zero_rtt));
        let relay = Relay::start(b.addr(), ONE_WAY).await;
        let mut times = Vec::new();
        for round in 0..=ROUNDS {
            let started = Instant::now();
            let (status, _) = within(a.t.request_to(relay.addr, b.id(), READ, Bytes::from("q")))
                .await
                .unwrap();
            assert_eq!(status, Status::Ok);
            // Round 0 is the first meeting: a full handshake either way.
            if round > 0 {
                times.push(started.elapsed());
            }
            part(&a, &b).await;
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "zero_rtt={zero_rtt}: first request to a known peer, RTT {rtt:?}: median {median:?}, \
             all {times:?}, 0-RTT accepted {}",
            a.t.stats().snapshot().zero_rtt_accepted
        );
        medians.push(median);
    }
    assert!(
        medians[0] >= rtt * 2,
        "full handshake under 2 RTT: {medians:?}"
    );
    assert!(
        medians[1] < rtt * 3 / 2,
        "0-RTT not under 1.5 RTT: {medians:?}"
    );
}
