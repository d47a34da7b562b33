//! Identity and QUIC transport over real sockets on 127.0.0.1: key persistence, HELLO,
//! connection reuse, peer-id verification, 404 routing, malformed input on streams and on
//! the UDP port, and request timeouts. Every await is bounded so a bug fails, never hangs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{Key, KeyName, Metadata, SharedString, Unit};
use node::transport::{HandlerFuture, Role, codes};
use node::{
    Identity, IdentityError, InboundExchange, InboundHandler, PeerEvent, Transport,
    TransportConfig, TransportError,
};
use wire::{Flags, Frame, MAX_FRAME, NodeId, Status};

const ECHO: u16 = 7;
const STALL: u16 = 9;
const REFUSE: u16 = 8;
/// Answers half of its response, then drops the exchange (which resets the stream).
const ABANDON: u16 = 10;
const BOUND: Duration = Duration::from_secs(5);

/// Awaits `f`, failing the test if it takes longer than `BOUND`.
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("operation did not finish in time")
}

/// Echoes app protocol 7, answers 8 with 413 without reading, never answers 9, records who
/// asked.
#[derive(Default)]
struct TestApps {
    seen: Arc<Mutex<Vec<NodeId>>>,
}

impl InboundHandler for TestApps {
    fn app_protos(&self) -> Vec<u16> {
        vec![ECHO, REFUSE, STALL, ABANDON]
    }

    fn handle(&self, mut ex: InboundExchange) -> HandlerFuture {
        let seen = self.seen.clone();
        Box::pin(async move {
            seen.lock().unwrap().push(ex.peer());
            match ex.app_proto_id() {
                ECHO => {
                    let body = ex.read_body(16 << 20).await?;
                    ex.respond(Status::Ok, body).await
                }
                REFUSE => ex.respond(Status::PayloadTooLarge, Bytes::new()).await,
                ABANDON => {
                    ex.send(Status::Ok, Bytes::from(vec![1u8; 100_000]), false)
                        .await?;
                    // Let the bytes reach the asker before the reset does.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(())
                }
                _ => {
                    std::future::pending::<()>().await;
                    Ok(())
                }
            }
        })
    }
}

fn local_config() -> TransportConfig {
    TransportConfig::with_listen("127.0.0.1:0".parse().unwrap())
}

struct TestNode {
    t: Transport,
    seen: Arc<Mutex<Vec<NodeId>>>,
}

impl TestNode {
    fn id(&self) -> NodeId {
        self.t.node_id()
    }
    fn addr(&self) -> SocketAddr {
        self.t.local_addr()
    }
}

fn node_with(config: TransportConfig) -> TestNode {
    let apps = TestApps::default();
    let seen = apps.seen.clone();
    let identity = Arc::new(Identity::generate().unwrap());
    let t = Transport::bind(identity, config, Arc::new(apps)).unwrap();
    TestNode { t, seen }
}

fn node() -> TestNode {
    node_with(local_config())
}

async fn echo(from: &TestNode, to: NodeId, body: &[u8]) -> Result<Bytes, TransportError> {
    let (status, reply) = within(from.t.request(to, ECHO, Bytes::copy_from_slice(body))).await?;
    assert_eq!(status, Status::Ok);
    Ok(reply)
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
#[cfg(unix)]
fn identity_persists_is_private_and_refuses_bad_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Identity::load_or_create(&data).unwrap();
    let again = Identity::load_or_create(&data).unwrap();
    assert_eq!(first.node_id(), again.node_id());
    let key = data.join(node::identity::KEY_FILE);
    assert_eq!(mode(&key), 0o600);
    let names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![node::identity::KEY_FILE],
        "no temporary file is left"
    );
    let text = first.node_id().to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<NodeId>().unwrap(), first.node_id());

    chmod(&key, 0o644);
    assert!(matches!(
        Identity::load_or_create(&data),
        Err(IdentityError::InsecurePermissions { mode: 0o644, .. })
    ));

    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let bad_key = bad.join(node::identity::KEY_FILE);
    std::fs::write(&bad_key, [0u8; 47]).unwrap();
    chmod(&bad_key, 0o600);
    assert!(matches!(
        Identity::load_or_create(&bad),
        Err(IdentityError::BadSize { len: 47, .. })
    ));
    std::fs::write(&bad_key, [0u8; node::identity::KEY_FILE_LEN]).unwrap();
    assert!(matches!(
        Identity::load_or_create(&bad),
        Err(IdentityError::BadFormat { .. })
    ));
}

#[tokio::test]
async fn hello_request_and_connection_reuse() {
    let a = node();
    let b = node();
    let mut events = b.t.subscribe();

    let info = within(a.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    assert_eq!(info.id, b.id());
    assert_eq!(info.role, Role::Dialed);
    assert_eq!(info.negotiated.max_frame, MAX_FRAME);
    assert_eq!(info.listen_addrs, vec![b.addr().to_string()]);
    assert!(info.app_protos.contains(&ECHO));

    assert_eq!(echo(&a, b.id(), b"hello").await.unwrap(), &b"hello"[..]);
    // Larger than one frame both ways: split and reassembled.
    let big: Vec<u8> = (0..3 * MAX_FRAME as usize).map(|i| i as u8).collect();
    assert_eq!(echo(&a, b.id(), &big).await.unwrap(), big);

    // Dialing again, by id or by address, reuses the connection.
    within(a.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    let by_addr = within(a.t.connect(b.addr(), None)).await.unwrap();
    assert_eq!(by_addr.id, b.id());
    assert_eq!(a.t.stats().snapshot().connections_dialed, 1);
    assert_eq!(b.t.stats().snapshot().connections_accepted, 1);
    assert_eq!((a.t.connection_count(), b.t.connection_count()), (1, 1));

    // The listener learned the dialer's id from its certificate.
    assert_eq!(*b.seen.lock().unwrap(), vec![a.id(), a.id()]);
    let seen_by_b = b.t.peer(&a.id()).unwrap();
    assert_eq!(seen_by_b.role, Role::Accepted);
    match within(events.recv()).await.unwrap() {
        PeerEvent::Connected(p) => assert_eq!(p.id, a.id()),
        other => panic!("unexpected event {other:?}"),
    }

    // The connection carries requests the other way too, and PING.
    assert_eq!(echo(&b, a.id(), b"back").await.unwrap(), &b"back"[..]);
    assert_eq!(b.t.stats().snapshot().connections_dialed, 0);
    within(a.t.ping(b.id())).await.unwrap();
    assert!(a.t.stats().snapshot().frames_out >= 6);

    within(a.t.close()).await;
    within(async {
        while b.t.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match within(events.recv()).await.unwrap() {
        PeerEvent::Disconnected { id, .. } => assert_eq!(id, a.id()),
        other => panic!("unexpected event {other:?}"),
    }
    assert!(matches!(
        within(a.t.request(b.id(), ECHO, Bytes::new())).await,
        Err(TransportError::Closed | TransportError::NotConnected(_))
    ));
    within(b.t.close()).await;
}

#[tokio::test]
async fn the_connection_limit_refuses_extra_peers() {
    let b = node_with(TransportConfig {
        max_connections: 1,
        ..local_config()
    });
    let a = node();
    let c = node();
    within(a.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    let refused = within(c.t.connect(b.addr(), Some(b.id()))).await;
    assert!(
        matches!(refused, Err(TransportError::Connect { .. })),
        "{refused:?}"
    );
    assert_eq!(b.t.stats().snapshot().connections_refused, 1);
    assert_eq!(echo(&a, b.id(), b"first").await.unwrap(), &b"first"[..]);
    // When the first peer leaves, its slot is free again.
    a.t.disconnect(&b.id());
    within(async {
        while c.t.connect(b.addr(), Some(b.id())).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(echo(&c, b.id(), b"second").await.unwrap(), &b"second"[..]);
}

/// At the connection limit a slot is kept by use: connections that sat idle give theirs
/// to a new peer (those that never carried a stream first), busy ones keep theirs, and the
/// flood of strangers a listener sees cannot lock a real peer out (RELIABILITY.md D1).
#[tokio::test]
async fn idle_connections_give_their_slots_to_new_peers() {
    let b = node_with(TransportConfig {
        max_connections: 2,
        idle_evict_after: Duration::from_millis(100),
        ..local_config()
    });
    let (used, idle, late) = (node(), node(), node());
    within(used.t.connect(b.addr(), Some(b.id())))
        .await
        .unwrap();
    within(idle.t.connect(b.addr(), Some(b.id())))
        .await
        .unwrap();
    assert_eq!(
        echo(&used, b.id(), b"in use").await.unwrap(),
        &b"in use"[..]
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Both idle past the threshold; the one that never carried a stream goes.
    within(late.t.connect(b.addr(), Some(b.id())))
        .await
        .unwrap();
    assert_eq!(echo(&late, b.id(), b"late").await.unwrap(), &b"late"[..]);
    within(async {
        while b.t.peer(&idle.id()).is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(b.t.peer(&used.id()).is_some(), "the used connection stays");
    assert_eq!(b.t.connection_count(), 2);

    // Every slot busy (a stream open on each): a newcomer is refused, before TLS.
    let _stalled_a = tokio::spawn({
        let t = used.t.clone();
        let to = b.id();
        async move { t.request(to, STALL, Bytes::new()).await }
    });
    let _stalled_b = tokio::spawn({
        let t = late.t.clone();
        let to = b.id();
        async move { t.request(to, STALL, Bytes::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refused_before = b.t.stats().snapshot().connections_refused;
    let newcomer = node();
    let refused = within(newcomer.t.connect(b.addr(), Some(b.id()))).await;
    assert!(
        matches!(refused, Err(TransportError::Connect { .. })),
        "every connection busy: {refused:?}"
    );
    assert_eq!(
        b.t.stats().snapshot().connections_refused,
        refused_before + 1
    );
}

#[tokio::test]
async fn a_peer_with_another_key_is_refused_and_the_listener_keeps_serving() {
    let a = node();
    let b = node();
    let c = node();

    let err = within(a.t.connect(b.addr(), Some(c.id())))
        .await
        .unwrap_err();
    match err {
        TransportError::PeerIdMismatch { expected, got } => {
            assert_eq!((expected, got), (c.id(), b.id()));
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
    assert_eq!(a.t.connection_count(), 0);
    assert!(matches!(
        within(a.t.request(b.id(), ECHO, Bytes::new())).await,
        Err(TransportError::NotConnected(_))
    ));

    // b still serves, the refused dialer included once it dials the right id.
    within(c.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    assert_eq!(echo(&c, b.id(), b"c").await.unwrap(), &b"c"[..]);
    within(a.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    assert_eq!(echo(&a, b.id(), b"a").await.unwrap(), &b"a"[..]);

    assert!(matches!(
        within(a.t.connect(a.addr(), None)).await,
        Err(TransportError::SelfDial)
    ));
}

/// A responder that drops its exchange half-way resets the stream with
/// `STREAM_CANCELLED`: the asker gets quinn's reset with that code, not a made-up error, and
/// the connection serves the next request.
#[tokio::test]
async fn an_abandoned_answer_reaches_the_asker_as_a_reset_with_its_code() {
    let (a, b) = (node(), node());
    within(a.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    let got = within(a.t.request(b.id(), ABANDON, Bytes::new())).await;
    assert!(
        matches!(
            got,
            Err(TransportError::Read(quinn::ReadError::Reset(code))) if code == codes::STREAM_CANCELLED
        ),
        "{got:?}"
    );
    assert_eq!(echo(&a, b.id(), b"after").await.unwrap(), &b"after"[..]);
}

#[tokio::test]
async fn unknown_app_protocol_gets_404_and_the_connection_stays() {
    let a = node();
    let b = node();
    within(a.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    let (status, body) = within(a.t.request(b.id(), 42, Bytes::from_static(b"?")))
        .await
        .unwrap();
    assert_eq!((status, body.len()), (Status::NotFound, 0));
    // An answer given before the request body is in still reaches the requester.
    let upload = Bytes::from(vec![7u8; 6 * MAX_FRAME as usize]);
    let (status, _) = within(a.t.request(b.id(), REFUSE, upload)).await.unwrap();
    assert_eq!(status, Status::PayloadTooLarge);
    assert_eq!(
        echo(&a, b.id(), b"still here").await.unwrap(),
        &b"still here"[..]
    );
    assert_eq!(a.t.stats().snapshot().connections_dialed, 1);
    assert_eq!(a.t.connection_count(), 1);
}

/// Writes `bytes` on a new stream of `conn` and returns the status of the single frame the
/// peer answered with, or `None` if it reset the stream without one.
async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Option<Status> {
    let (mut send, mut recv) = within(conn.open_bi()).await.unwrap();
    // The peer may stop our side as soon as it has seen enough: a failed write is fine.
    let _ = within(send.write_all(bytes)).await;
    let _ = send.finish();
    let reply = within(recv.read_to_end(1 << 20)).await.ok()?;
    if reply.is_empty() {
        return None;
    }
    let frame = Frame::decode(Bytes::from(reply), &wire::Limits::default()).unwrap();
    assert!(
        frame
            .flags
            .contains(Flags::RESP | Flags::START | Flags::END)
    );
    frame.status()
}

/// A `metrics` recorder that keeps counter totals as `name{label=value,...}` keys, installed
/// for the test's thread (a current-thread runtime runs every task there).
#[derive(Default)]
struct CountingRecorder {
    totals: Arc<Mutex<BTreeMap<String, u64>>>,
}

struct Total {
    key: String,
    totals: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl metrics::CounterFn for Total {
    fn increment(&self, value: u64) {
        *self
            .totals
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.totals.lock().unwrap().insert(self.key.clone(), value);
    }
}

impl metrics::Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        metrics::Counter::from_arc(Arc::new(Total {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            totals: self.totals.clone(),
        }))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

impl CountingRecorder {
    fn total(&self, key: &str) -> u64 {
        self.totals.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

fn with_bytes(frame: &Frame, patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = frame.to_bytes().to_vec();
    patch(&mut bytes);
    bytes
}

#[tokio::test]
async fn malformed_frames_end_only_their_stream_and_are_counted() {
    let recorder = CountingRecorder::default();
    let _installed = metrics::set_default_local_recorder(&recorder);
    let a = node();
    let b = node();
    let raw = within(a.t.dial_raw(b.addr(), Some(b.id()))).await.unwrap();
    within(a.t.raw_hello(&raw)).await.unwrap();

    let good = Frame::request(ECHO, 1, Bytes::from_static(b"payload"));
    let mut resp = Frame::response(Status::Ok, ECHO, 1, Bytes::from_static(b"x"));
    resp.flags = Flags::RESP | Flags::START | Flags::END;
    let mut cap_late = Frame::new(Flags::REQ | Flags::END, ECHO, 1, Bytes::new());
    cap_late.cap = Bytes::from_static(b"token");
    let start_only = Frame::new(Flags::REQ | Flags::START, ECHO, 1, Bytes::new());
    let mut twice = start_only.to_bytes().to_vec();
    twice.extend_from_slice(&good.to_bytes());
    let mut garbage = vec![0, 0, 0, 7];
    garbage.extend_from_slice(b"not a frame at all");
    let mut too_large = (MAX_FRAME + 1).to_be_bytes().to_vec();
    too_large.extend_from_slice(&[0; 60]);

    let cases: Vec<(&str, Vec<u8>, Status)> = vec![
        ("frame_too_small", garbage, Status::BadRequest),
        ("frame_too_large", too_large, Status::PayloadTooLarge),
        (
            "bad_version",
            with_bytes(&good, |b| b[5] = 2),
            Status::BadRequest,
        ),
        (
            "bad_flags",
            with_bytes(&good, |b| b[6] = 0x01),
            Status::BadRequest,
        ),
        (
            "cap_on_non_start",
            cap_late.to_bytes().to_vec(),
            Status::BadRequest,
        ),
        ("wrong_kind", resp.to_bytes().to_vec(), Status::BadRequest),
        ("second_start", twice, Status::BadRequest),
        (
            "truncated",
            good.to_bytes()[..20].to_vec(),
            Status::BadRequest,
        ),
        (
            "missing_end",
            start_only.to_bytes().to_vec(),
            Status::BadRequest,
        ),
    ];
    for (reason, bytes, want) in cases {
        assert_eq!(b.t.stats().rejects(reason), 0, "{reason}");
        let got = raw_exchange(&raw, &bytes).await;
        assert_eq!(got, Some(want), "{reason}");
        assert_eq!(b.t.stats().rejects(reason), 1, "{reason}");
        // The connection survives: a well-formed request on the next stream is answered.
        assert_eq!(
            raw_exchange(&raw, &good.to_bytes()).await,
            Some(Status::Ok),
            "{reason}"
        );
    }

    // Garbage as a connection's first exchange fails HELLO and closes that connection only.
    let raw2 = within(a.t.dial_raw(b.addr(), Some(b.id()))).await.unwrap();
    let (mut send, _recv) = within(raw2.open_bi()).await.unwrap();
    within(send.write_all(&[0, 0, 0, 1, 2, 3])).await.unwrap();
    let _ = send.finish();
    match within(raw2.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, codes::HELLO_FAILED);
        }
        other => panic!("expected HELLO_FAILED, got {other:?}"),
    }
    assert_eq!(b.t.stats().rejects("frame_too_small"), 2);
    // The same counts reach the metrics facade, labelled by reason.
    assert_eq!(
        recorder.total("oap_rejects_total{reason=frame_too_small}"),
        2
    );
    assert_eq!(recorder.total("oap_rejects_total{reason=bad_version}"), 1);
    assert!(recorder.total("oap_frames_total{dir=in}") > 0);

    // And the node serves ordinary peers as before.
    within(a.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    assert_eq!(echo(&a, b.id(), b"ok").await.unwrap(), &b"ok"[..]);
}

#[tokio::test]
async fn garbage_datagrams_do_not_stop_the_node() {
    let b = node();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..300usize {
        let len = [1, 20, 600, 1200, 1350][i % 5];
        let mut buf: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if i % 3 == 0 && len >= 6 {
            // Looks like a QUIC v1 Initial long header, then noise.
            buf[..5].copy_from_slice(&[0xc0, 0, 0, 0, 1]);
        }
        socket.send_to(&buf, b.addr()).unwrap();
    }
    let a = node();
    within(a.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    assert_eq!(echo(&a, b.id(), b"alive").await.unwrap(), &b"alive"[..]);
}

#[tokio::test]
async fn a_silent_handler_times_the_request_out() {
    let a = node_with(TransportConfig {
        request_timeout: Duration::from_millis(400),
        ..local_config()
    });
    let b = node();
    within(a.t.connect(b.addr(), Some(b.id()))).await.unwrap();
    let started = Instant::now();
    let result = within(a.t.request(b.id(), STALL, Bytes::from_static(b"?"))).await;
    let waited = started.elapsed();
    assert!(
        matches!(result, Err(TransportError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(echo(&a, b.id(), b"next").await.unwrap(), &b"next"[..]);
}

#[tokio::test]
async fn simultaneous_dials_settle_on_one_connection() {
    let fast = || TransportConfig {
        request_timeout: Duration::from_millis(300),
        ..local_config()
    };
    let a = node_with(fast());
    let b = node_with(fast());
    let (ra, rb) = within(async {
        tokio::join!(
            a.t.connect(b.addr(), Some(b.id())),
            b.t.connect(a.addr(), Some(a.id()))
        )
    })
    .await;
    ra.unwrap();
    rb.unwrap();
    // Each side dialed once, so two connections existed for a moment.
    assert_eq!(a.t.stats().snapshot().connections_dialed, 1);
    assert_eq!(b.t.stats().snapshot().connections_dialed, 1);
    // Both sides settle on the connection dialed by the node with the smaller id: the
    // smaller one uses the connection it dialed, the larger one the connection it accepted.
    let (small, large) = if a.id() < b.id() { (&a, &b) } else { (&b, &a) };
    println!("smaller id {}, larger id {}", small.id(), large.id());
    let settled = || {
        let on_small = small.t.peer(&large.id()).map(|p| p.role);
        let on_large = large.t.peer(&small.id()).map(|p| p.role);
        (on_small, on_large)
    };
    let want = (Some(Role::Dialed), Some(Role::Accepted));
    let deadline = Instant::now() + BOUND;
    while settled() != want {
        assert!(
            Instant::now() < deadline,
            "after {BOUND:?}: (smaller's role, larger's role) = {:?}, want {want:?}",
            settled()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Requests go both ways over it, and it is still the one in use afterwards.
    assert_eq!(echo(&a, b.id(), b"ab").await.unwrap(), &b"ab"[..]);
    assert_eq!(echo(&b, a.id(), b"ba").await.unwrap(), &b"ba"[..]);
    assert_eq!(settled(), want, "the winner changed");
}

#[tokio::test]
async fn request_to_dials_with_the_request_and_reuses_the_connection() {
    let a = node();
    let b = node();
    let c = node();
    // A new peer: the request goes with HELLO and the connection is the peer's afterwards.
    let (status, body) = within(a.t.request_to(b.addr(), b.id(), ECHO, Bytes::from("one")))
        .await
        .unwrap();
    assert_eq!((status, &body[..]), (Status::Ok, &b"one"[..]));
    assert_eq!(a.t.peer(&b.id()).map(|p| p.role), Some(Role::Dialed));
    assert_eq!(b.t.peer(&a.id()).map(|p| p.role), Some(Role::Accepted));
    // Several at once to a new peer: one connection, every answer right.
    let asks = (0..4u8).map(|i| {
        a.t.request_to(c.addr(), c.id(), ECHO, Bytes::from(vec![i; 3]))
    });
    let answers = within(futures_util::future::join_all(asks)).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap().1, vec![i as u8; 3]);
    }
    // Known peers: the existing connections carry the requests, also one too large to go
    // with HELLO.
    let big: Vec<u8> = (0..2 * MAX_FRAME as usize).map(|i| i as u8).collect();
    let (_, echoed) = within(a.t.request_to(b.addr(), b.id(), ECHO, Bytes::from(big.clone())))
        .await
        .unwrap();
    assert_eq!(echoed, big);
    // A new peer and a request too large to go with HELLO: it waits for the connection.
    let d = node();
    let (_, echoed) = within(a.t.request_to(d.addr(), d.id(), ECHO, Bytes::from(big.clone())))
        .await
        .unwrap();
    assert_eq!(echoed, big);
    assert_eq!(a.t.stats().snapshot().connections_dialed, 3);
    assert_eq!(a.t.connection_count(), 3);
    assert_eq!(*b.seen.lock().unwrap(), vec![a.id(), a.id()]);
}

#[tokio::test]
async fn before_hello_a_stranger_can_make_the_listener_buffer_only_a_little() {
    let a = node();
    let b = node();
    let raw = within(a.t.dial_raw(b.addr(), Some(b.id()))).await.unwrap();
    // No HELLO on the first stream: a request on the second, then bulk after it.
    let (_hello, _) = within(raw.open_bi()).await.unwrap();
    let (mut send, _recv) = within(raw.open_bi()).await.unwrap();
    let request = Frame::request(ECHO, 1, Bytes::from_static(b"early")).to_bytes();
    within(send.write_all(&request)).await.unwrap();
    let bulk = vec![0u8; 1 << 20];
    let wrote = tokio::time::timeout(Duration::from_millis(500), send.write_all(&bulk)).await;
    // Flow control stops the stranger at the pre-HELLO window, well short of the megabyte.
    assert!(wrote.is_err(), "the listener took 1 MiB before HELLO");
    let sent = raw.stats().udp_tx.bytes;
    let window = u64::from(node::transport::config::PRE_HELLO_RECEIVE_WINDOW);
    assert!(sent < 2 * window, "{sent} bytes went out before HELLO");
    // And nothing it sent was served.
    assert!(b.seen.lock().unwrap().is_empty());
    assert_eq!(b.t.connection_count(), 0);
}
