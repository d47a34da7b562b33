//! Hostile input against a real node process: random UDP datagrams on its QUIC port, and
//! malformed OAP/1 frames on streams of an authenticated connection. The node must end only
//! the offending stream (400/413 or a reset), count each rejection by reason in `/metrics`,
//! and go on serving HTTP and DHT lookups.
//!
//! The hostile peer is the node crate's own `Transport`, in this process with a fresh key:
//! `dial_raw` + `raw_hello` give a connection on which any bytes can be written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use node::transport::NoApps;
use node::{Identity, Transport, TransportConfig};
use overlay::Key;
use testing::{Mesh, NodeProcess};
use wire::{Flags, Frame, MAX_FRAME, Status};

const BOUND: Duration = Duration::from_secs(5);

/// Sends `count` random datagrams (a third shaped like QUIC Initial long headers) to `to`.
fn spray(to: SocketAddr, seed: u64, count: usize) {
    println!("datagram seed {seed}, {count} datagrams to {to}");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = seed | 1;
    for i in 0..count {
        let len = [1, 20, 600, 1200, 1350, 1500][i % 6];
        let mut buf: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if i % 3 == 0 && len >= 6 {
            buf[..5].copy_from_slice(&[0xc0, 0, 0, 0, 1]);
        }
        socket.send_to(&buf, to).unwrap();
    }
}

/// Writes `bytes` on a new stream and returns the status of the one frame the node answered
/// with, or `None` if it reset the stream instead.
async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Option<Status> {
    let (mut send, mut recv) = tokio::time::timeout(BOUND, conn.open_bi())
        .await
        .unwrap()
        .unwrap();
    // The node may stop our side as soon as it has seen enough: a failed write is fine.
    let _ = tokio::time::timeout(BOUND, send.write_all(bytes)).await;
    let _ = send.finish();
    let reply = tokio::time::timeout(BOUND, recv.read_to_end(1 << 20))
        .await
        .expect("the node neither answered nor reset the stream")
        .ok()?;
    if reply.is_empty() {
        return None;
    }
    let frame = Frame::decode(Bytes::from(reply), &wire::Limits::default()).unwrap();
    assert!(frame.flags.contains(Flags::RESP | Flags::END), "{frame:?}");
    frame.status()
}

fn rejects(node: &NodeProcess, reason: &str) -> f64 {
    node.metric(&format!("oap_rejects_total{{reason=\"{reason}\"}}"))
        .unwrap()
        .unwrap_or(0.0)
}

#[test]
fn garbage_and_malformed_frames_are_counted_and_the_node_keeps_serving() {
    // A short RPC timeout: the hostile peer joins the target's table on HELLO and is gone
    // when the lookup below asks it.
    let mut mesh = Mesh::start(3, |_, s| s.rpc_timeout = Some(Duration::from_millis(500))).unwrap();
    mesh.wait_ready(Duration::from_secs(20)).unwrap();
    let ids = mesh.ids().unwrap();
    let target = &mesh.nodes[1];
    let target_id = ids[1];

    let seed = testing::seed::seed(testing::seed::MESH_SEED, "garbage_and_malformed_frames");
    spray(target.quic(), seed, 600);
    assert_eq!(target.get("/healthz").unwrap().status, 200);

    let good = Frame::request(7, 1, Bytes::from_static(b"payload"));
    let patched = |patch: fn(&mut Vec<u8>)| {
        let mut b = good.to_bytes().to_vec();
        patch(&mut b);
        b
    };
    let mut too_large = (MAX_FRAME + 1).to_be_bytes().to_vec();
    too_large.extend_from_slice(&[0; 60]);
    let cases: Vec<(&str, Vec<u8>, Status)> = vec![
        ("bad_version", patched(|b| b[5] = 2), Status::BadRequest),
        ("bad_flags", patched(|b| b[6] = 0x80), Status::BadRequest),
        ("frame_too_large", too_large, Status::PayloadTooLarge),
    ];
    let before: Vec<f64> = cases.iter().map(|(r, ..)| rejects(target, r)).collect();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let identity = Arc::new(Identity::generate().unwrap());
        let config = TransportConfig::with_listen("127.0.0.1:0".parse().unwrap());
        let me = Transport::bind(identity, config, Arc::new(NoApps)).unwrap();
        let conn = tokio::time::timeout(BOUND, me.dial_raw(target.quic(), Some(target_id)))
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(BOUND, me.raw_hello(&conn))
            .await
            .unwrap()
            .unwrap();
        for (reason, bytes, want) in &cases {
            let got = raw_exchange(&conn, bytes).await;
            println!("{reason}: {got:?}");
            assert!(
                got.is_none() || got == Some(*want),
                "{reason}: answered {got:?}, expected {want:?} or a reset"
            );
            // The connection survives: the next stream is read (404: we named no app the
            // node serves).
            let next = raw_exchange(&conn, &good.to_bytes()).await;
            assert_eq!(next, Some(Status::NotFound), "after {reason}");
        }
        me.close().await;
    });

    for ((reason, ..), before) in cases.iter().zip(before) {
        assert_eq!(rejects(target, reason), before + 1.0, "{reason}");
    }
    // Still serving: HTTP, and a lookup through the attacked node that finds the others.
    assert_eq!(target.get("/healthz").unwrap().status, 200);
    assert!(target.readiness().unwrap().is_none());
    let key = Key::for_node(&ids[0]);
    let got = target.lookup(&key).unwrap();
    assert!(got.closest.contains(&ids[0]), "{got:?}");
    assert!(got.closest.contains(&ids[2]), "{got:?}");
}
