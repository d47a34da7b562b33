//! HELLO pipelined with the first request, against a listener under the test's control: it
//! holds its HELLO answer back and notes when the dialer's request stream arrives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wire::control::{ControlRequest, ControlResponse, Hello};
use wire::{Direction, Limits, NodeId, Status, message};

use super::error::codes;
use super::stats::TransportStats;
use super::stream::FramedStream;
use super::tls::TlsSetup;
use super::{NoApps, Transport, TransportConfig};
use crate::identity::Identity;

/// How long the scripted listener sits on HELLO before answering it.
const HELLO_DELAY: Duration = Duration::from_millis(300);
/// The app protocol the scripted listener echoes.
const APP: u16 = 7;

/// How the scripted listener answers HELLO.
#[derive(Clone, Copy)]
enum Answer {
    /// With its own HELLO, after `HELLO_DELAY`.
    Hello,
    /// 400 and a closed connection, as a listener that refuses the dialer's terms.
    Refuse,
}

fn local() -> TransportConfig {
    TransportConfig::with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A listener for one connection that speaks OAP/1 by hand. Its task returns how long after
/// HELLO arrived the dialer's next stream arrived (`None`: not while HELLO was unanswered).
fn scripted_listener(answer: Answer) -> (SocketAddr, NodeId, JoinHandle<Option<Duration>>) {
    let identity = Arc::new(Identity::generate().unwrap_or_else(|e| panic!("test identity: {e}")));
    let id = identity.node_id();
    let config = local();
    let tls = TlsSetup::new(identity, false).unwrap_or_else(|e| panic!("test TLS: {e}"));
    let server = tls
        .server_config(
            config
                .quic()
                .unwrap_or_else(|e| panic!("test QUIC config: {e}")),
            4,
        )
        .unwrap_or_else(|e| panic!("test server config: {e}"));
    let endpoint =
        quinn::Endpoint::server(server, config.listen).unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = endpoint
        .local_addr()
        .unwrap_or_else(|e| panic!("bound address: {e}"));
    let ours = Hello::ours(
        config.max_frame,
        config.max_streams_per_connection,
        vec![0, APP],
        vec![addr.to_string()],
    );
    let task = tokio::spawn(async move {
        let conn = endpoint.accept().await?.await.ok()?;
        let stats = Arc::new(TransportStats::default());
        let framed = |pair| {
            FramedStream::new(
                pair,
                Limits::default(),
                Direction::Requests,
                stats.clone(),
                Duration::from_secs(5),
            )
        };
        let mut hello = framed(conn.accept_bi().await.ok()?);
        let (_, body) = hello.collect(None, 1 << 20).await.ok()?;
        let hello_at = Instant::now();
        assert!(matches!(
            message::decode::<ControlRequest>(&body),
            Ok(ControlRequest::Hello(_))
        ));
        // The dialer's next stream, if it comes while HELLO waits for its answer.
        let early = tokio::time::timeout(HELLO_DELAY, conn.accept_bi()).await;
        let arrived = early.is_ok().then(|| hello_at.elapsed());
        tokio::time::sleep_until(hello_at + HELLO_DELAY).await;
        match answer {
            Answer::Hello => {
                let reply = message::encode(&ControlResponse::Hello(ours));
                hello.reply(Status::Ok, 0, 1, reply).await.ok()?;
            }
            Answer::Refuse => {
                let _ = hello.reply(Status::BadRequest, 0, 1, Bytes::new()).await;
                conn.close(codes::HELLO_FAILED, b"hello failed");
                return arrived;
            }
        }
        let pair = match early {
            Ok(pair) => pair.ok()?,
            Err(_) => conn.accept_bi().await.ok()?,
        };
        let mut request = framed(pair);
        let first = request.recv_frame().await.ok()??;
        let corr = first.corr_id;
        let (_, body) = request.collect(Some(first), 1 << 20).await.ok()?;
        request.reply(Status::Ok, APP, corr, body).await.ok()?;
        // Keep the connection until the dialer has read the answer.
        conn.closed().await;
        arrived
    });
    (addr, id, task)
}

fn dialer() -> Transport {
    let identity = Arc::new(Identity::generate().unwrap_or_else(|e| panic!("test identity: {e}")));
    Transport::bind(identity, local(), Arc::new(NoApps))
        .unwrap_or_else(|e| panic!("bind the dialer: {e}"))
}

/// The first request to a new peer leaves with HELLO: the listener has it while HELLO is
/// still unanswered, so it costs the handshake and one round trip, not two.
#[tokio::test]
async fn the_first_request_goes_out_before_hellos_answer() {
    let (addr, id, listener) = scripted_listener(Answer::Hello);
    let a = dialer();
    let asked = tokio::time::timeout(
        Duration::from_secs(5),
        a.request_to(addr, id, APP, Bytes::from_static(b"first")),
    )
    .await;
    let (status, body) = asked
        .unwrap_or_else(|e| panic!("the request finishes: {e}"))
        .unwrap_or_else(|e| panic!("the request succeeds: {e}"));
    assert_eq!((status, &body[..]), (Status::Ok, &b"first"[..]));
    assert_eq!(a.connection_count(), 1);
    assert_eq!(a.stats().snapshot().connections_dialed, 1);
    a.close().await;
    let arrived = listener
        .await
        .unwrap_or_else(|e| panic!("listener task: {e}"));
    let Some(after) = arrived else {
        panic!("the request did not arrive while HELLO was unanswered");
    };
    assert!(
        after < Duration::from_millis(100),
        "the request arrived {after:?} after HELLO"
    );
}

/// A HELLO refused after the request went out fails the request with a typed error at once,
/// and leaves no connection behind.
#[tokio::test]
async fn a_refused_hello_fails_the_pipelined_request_cleanly() {
    let (addr, id, listener) = scripted_listener(Answer::Refuse);
    let a = dialer();
    let started = Instant::now();
    let asked = tokio::time::timeout(
        Duration::from_secs(5),
        a.request_to(addr, id, APP, Bytes::from_static(b"first")),
    )
    .await
    .unwrap_or_else(|e| panic!("a refused HELLO does not hang the request: {e}"));
    // The 400 or the close, whichever the dialer reads first; never a timeout.
    assert!(matches!(&asked, Err(e) if !e.is_timeout()), "{asked:?}");
    assert!(started.elapsed() < HELLO_DELAY + Duration::from_secs(1));
    assert_eq!(a.connection_count(), 0);
    assert_eq!(a.stats().snapshot().connections_dialed, 0);
    let _ = listener.await;
    a.close().await;
}

/// A dial dropped midway (a probe's timeout, a reader that left) forgets its dial lock, as a
/// finished one does: before, the map kept an entry for every target whose dial was
/// cancelled, for the node's lifetime.
#[tokio::test]
async fn a_cancelled_dial_leaves_no_lock_behind() {
    let t = Transport::bind(
        Arc::new(Identity::generate().unwrap_or_else(|e| panic!("{e}"))),
        local(),
        Arc::new(NoApps),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // A UDP socket that never answers: the handshake waits until it is dropped.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let stranger = Identity::generate()
        .unwrap_or_else(|e| panic!("{e}"))
        .node_id();
    let dials = |t: &Transport| {
        t.shared
            .dials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    };
    let cut = tokio::time::timeout(Duration::from_millis(200), t.connect(addr, Some(stranger)));
    assert!(cut.await.is_err(), "the dial was not cut");
    assert_eq!(dials(&t), 0, "the cancelled dial's lock stayed");
    // Two dials of one peer at once share one lock while they run.
    let (a, b) = (t.clone(), t.clone());
    let first = tokio::spawn(async move { a.connect(addr, Some(stranger)).await });
    let second = tokio::spawn(async move { b.connect(addr, Some(stranger)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dials(&t), 1);
    first.abort();
    second.abort();
    let _ = (first.await, second.await);
    assert_eq!(dials(&t), 0);
    t.close().await;
}
