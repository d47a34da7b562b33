//! Objects across five in-process nodes over real QUIC on loopback, with real on-disk
//! stores: PUT through one gateway, GET through another, and the integrity paths — a holder
//! serving corrupted bytes is caught and the fetch resumes at the next holder; a corrupt
//! local copy is dropped, never served, and the object is still readable from the mesh;
//! a write keeps its slot until its last copy is placed, and PUTs past the bound are 503.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use node::app::RunningNode;
use node::store::id_string;
use rand::{Rng, SeedableRng};
use wire::object::ByteRange;

mod common;
use common::*;

const SEED: u64 = 0x000b_1ec7;

fn data(len: usize) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    (0..len).map(|_| rng.r#gen()).collect()
}

fn holders(nodes: &[RunningNode], hash: &[u8; 32]) -> Vec<usize> {
    (0..nodes.len())
        .filter(|&i| nodes[i].ctx.objects.store.size(hash).is_some())
        .collect()
}

fn flip_byte(node: &RunningNode, hash: &[u8; 32], at: u64) {
    let path = node.ctx.objects.store.data_file(hash).unwrap();
    flip_in_place(&path, at, 0x55);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_and_integrity_across_the_mesh() {
    println!("seed = {SEED:#x}");
    logs();
    let dir = tempfile::tempdir().unwrap();
    let nodes = tokio::time::timeout(Duration::from_secs(30), mesh(dir.path(), 5))
        .await
        .unwrap();
    let body = data(12 << 20);
    let hash = *blake3::hash(&body).as_bytes();

    // PUT through node 1: 201, the id b3sum would print, at least W = 2 durable copies.
    let (status, reply) = http(
        "PUT",
        format!("http://{}/o", nodes[1].ctx.http),
        body.clone(),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["id"], id_string(&hash));
    assert!(reply["replicas"].as_u64().unwrap() >= 2, "{reply}");

    // Every node reads it back, verified.
    for (i, n) in nodes.iter().enumerate() {
        let (status, got) = http(
            "GET",
            format!("http://{}/o/{}", n.ctx.http, id_string(&hash)),
            vec![],
        )
        .await;
        assert_eq!(status, 200, "node {i}");
        assert!(got == body, "node {i} served different bytes");
    }

    // A holder that lies is caught within a chunk; the fetch resumes at the next holder
    // from the last verified byte, and the reader sees one correct stream.
    // Replication settles on the RF = 3 nodes closest to the id (the PUT returned at W = 2;
    // a surplus copy elsewhere may be released at any time, so only these are stable).
    let key = overlay::Key(hash);
    let mut by_distance: Vec<usize> = (0..nodes.len()).collect();
    by_distance
        .sort_by_key(|&i| overlay::Key::for_node(&nodes[i].ctx.transport.node_id()).distance(&key));
    let closest = &by_distance[..3];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !closest.iter().all(|&i| holders(&nodes, &hash).contains(&i))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = holders(&nodes, &hash);
    assert!(
        closest.iter().all(|i| held.contains(i)),
        "held by {held:?}, closest {closest:?}"
    );
    let (liar, honest) = (closest[0], closest[1]);
    flip_byte(&nodes[liar], &hash, 9 << 20);
    let reader = (0..nodes.len())
        .find(|i| *i != liar && *i != honest)
        .unwrap();
    let peer = |i: usize| peer(&nodes[i]);
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let objects = nodes[reader].ctx.objects.clone();
    let order = vec![peer(liar), peer(honest)];
    let range = ByteRange {
        start: 0,
        len: body.len() as u64,
    };
    let fetch = tokio::spawn(async move { objects.fetch_failover(&order, hash, range, tx).await });
    let mut got = Vec::new();
    while let Some(piece) = rx.recv().await {
        got.extend_from_slice(&piece);
    }
    assert_eq!(fetch.await.unwrap().unwrap(), node::objects::Fetched::Whole);
    assert!(got == body, "failover stream differs");
    assert_eq!(
        nodes[reader]
            .ctx
            .objects
            .stats
            .integrity_fail_peer
            .load(Ordering::Relaxed),
        1
    );
    // The reader asked the "liar" for the chunk that failed: an honest node with a rotten
    // disk finds its rot that way (it served the long range unchecked), drops the copy and
    // fetches a good one back.
    let store = &nodes[liar].ctx.objects.store;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(store.corrupt_found() == 1
        && store
            .read_verified(&hash, 0, body.len() as u64)
            .is_ok_and(|b| b == body))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the holder found its rot and healed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flip_byte(&nodes[liar], &hash, 9 << 20);

    // The liar's own gateway never serves its corrupt copy: the bad chunk (at 9 MiB, deep in
    // the stream, after the headers went out) is caught, the copy dropped and counted, and
    // the stream carries on from the mesh: the client still gets every byte, correct.
    let url = format!("http://{}/o/{}", nodes[liar].ctx.http, id_string(&hash));
    let (status, got) = http("GET", url.clone(), vec![]).await;
    assert_eq!(status, 200);
    assert!(got == body, "the stream continued from the mesh");
    assert_eq!(store.corrupt_found(), 2, "found and dropped");
    // A bad first chunk on another holder: caught before a byte of it goes out, same recovery.
    let reader_store = &nodes[honest].ctx.objects.store;
    flip_byte(&nodes[honest], &hash, 100);
    let (status, got) = http(
        "GET",
        format!("http://{}/o/{}", nodes[honest].ctx.http, id_string(&hash)),
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    assert!(got == body);
    assert_eq!(reader_store.corrupt_found(), 1);

    for n in nodes {
        n.shutdown().await;
    }
}

/// A PUT whose client hangs up while its copies are being placed: the write goes on, every
/// copy it registered with the planner is reported, and the object reaches its holders.
/// When the write ran inside the HTTP handler, dropping the handler dropped the write, and
/// the planner waited for ever on its (object, target) pairs: never planned again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_client_hangs_up_still_reports_every_copy() {
    println!("seed = {SEED:#x}");
    logs();
    let dir = tempfile::tempdir().unwrap();
    let nodes = tokio::time::timeout(Duration::from_secs(30), mesh(dir.path(), 3))
        .await
        .unwrap();
    let gateway = nodes[0].ctx.clone();
    let body = data(32 << 20);
    let hash = gateway.objects.store.put(&body, None).unwrap();
    let in_flight = || gateway.dht.status().transfers_in_flight;
    assert_eq!(in_flight(), 0);

    // Drive the write until the planner holds its copies' transfers, then drop it, as a
    // server drops the handler of a client that went away.
    let slot = gateway.objects.write_slot(None).unwrap();
    let mut write = Box::pin(gateway.objects.replicate(hash, body.len() as u64, slot));
    let registered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                r = &mut write => panic!("the write answered ({r:?}) before it could be dropped"),
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
            if in_flight() > 0 {
                break;
            }
        }
    })
    .await;
    assert!(registered.is_ok(), "the write never registered its copies");
    drop(write);

    // The copies land and are reported: nothing is left in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (in_flight() > 0 || holders(&nodes, &hash).len() < 3)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        in_flight(),
        0,
        "a transfer of the dropped write was never reported"
    );
    assert_eq!(holders(&nodes, &hash), vec![0, 1, 2]);
    // The write's slot is given back when its last placement has reported.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gateway.objects.writes_in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gateway.objects.writes_in_flight(),
        0,
        "the write's slot was not given back"
    );

    for n in nodes {
        n.shutdown().await;
    }
}

/// Waits up to `within` for `done`, polling every 20 ms; whether it came true.
async fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Three nodes with W = 1 (and `tweak`), and a write of a 32 MiB object through node 0,
/// answered at once with its two copies still being placed; the object's hash.
async fn answered_write(
    dir: &std::path::Path,
    tweak: impl Fn(&mut node::config::NodeConfig),
) -> (Vec<RunningNode>, [u8; 32]) {
    let nodes = tokio::time::timeout(
        Duration::from_secs(30),
        mesh_with(dir, 3, |c| {
            c.objects.w = 1;
            tweak(c);
        }),
    )
    .await
    .unwrap();
    let objects = &nodes[0].ctx.objects;
    let body = data(32 << 20);
    let hash = objects.store.put(&body, None).unwrap();
    let slot = objects.write_slot(None).unwrap();
    let answer = objects.replicate(hash, body.len() as u64, slot).await;
    assert_eq!((answer.copies, answer.want), (1, 1));
    (nodes, hash)
}

/// A PUT of `body` over a raw connection that stops halfway: returned once the first half
/// is sent and the handler had time to store it (past its checks). Sending on the returned
/// channel sends the rest; the task gives the raw reply.
async fn half_sent_put(
    addr: std::net::SocketAddr,
    auth: Option<String>,
    body: Vec<u8>,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<String>) {
    use std::io::{Read, Write};
    let (half_sent, half_rx) = std::sync::mpsc::channel();
    let (go_on, go_rx) = std::sync::mpsc::channel::<()>();
    let client = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let auth = auth.map_or(String::new(), |a| format!("Authorization: Bearer {a}\r\n"));
        let head = format!(
            "PUT /o HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body[..body.len() / 2]).unwrap();
        half_sent.send(()).unwrap();
        go_rx.recv().unwrap();
        s.write_all(&body[body.len() / 2..]).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    });
    tokio::task::spawn_blocking(move || half_rx.recv().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    (go_on, client)
}

/// A write holds its slot (`writes_max`) until its last copy is placed, after its answer
/// too: past the bound a PUT is 503 `writes_busy` with `Retry-After`, before its body is
/// read; a PUT whose body was being sent when the last slot went is 503 after it, its copy
/// kept here for repair to place. Before, a write's background placements were counted
/// nowhere, and clients could start them faster than slow targets ended them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_keeps_its_slot_until_its_last_copy_is_placed() {
    println!("seed = {SEED:#x}");
    logs();
    let dir = tempfile::tempdir().unwrap();
    // With W = 1 the write answers at once, both of its copies still being placed.
    let (nodes, hash) = answered_write(dir.path(), |c| c.objects.writes_max = 1).await;
    let gateway = nodes[0].ctx.clone();
    let objects = gateway.objects.clone();
    let url = format!("http://{}/o", gateway.http);
    assert_eq!(
        objects.writes_in_flight(),
        1,
        "the answered write let its slot go"
    );
    let r = request("PUT", url.clone(), vec![], b"a small object".to_vec()).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "writes_busy");
    assert!(
        r.json().get("id").is_none(),
        "refused before its body was read"
    );
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    // The slot comes back once both copies are placed; then a PUT runs.
    assert!(
        eventually(Duration::from_secs(30), || objects.writes_in_flight() == 0).await,
        "the write's slot never came back"
    );
    assert_eq!(holders(&nodes, &hash), vec![0, 1, 2]);
    let r = request("PUT", url.clone(), vec![], b"a small object".to_vec()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(eventually(Duration::from_secs(30), || objects.writes_in_flight() == 0).await);

    // A body half sent when the last slot goes: 503 once it is stored, with its id; the
    // copy stays and repair places it without a write slot.
    let late = b"sent while the slots ran out".repeat(1000);
    let late_hash = *blake3::hash(&late).as_bytes();
    let (go_on, client) = half_sent_put(gateway.http, None, late).await;
    let held = objects.write_slot(None).expect("a free slot");
    go_on.send(()).unwrap();
    let reply = client.await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.contains("writes_busy") && reply.contains(&id_string(&late_hash)),
        "{reply}"
    );
    assert!(
        objects.store.size(&late_hash).is_some(),
        "the stored body was dropped"
    );
    assert!(
        eventually(Duration::from_secs(60), || holders(&nodes, &late_hash)
            .len()
            == 3)
        .await,
        "repair did not place the copies: held by {:?}",
        holders(&nodes, &late_hash)
    );
    drop(held);

    for n in nodes {
        n.shutdown().await;
    }
}

/// A write's placements still running at twice its wait are cut and left to repair: a
/// target that takes a copy in more slowly than the wait allows does not hold the write
/// (and its slot) for hours. The planner hears each cut placement as failed, so repair
/// places the copies later; were it never told, it would wait on those transfers for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cuts_placements_slower_than_twice_its_wait() {
    println!("seed = {SEED:#x}");
    logs();
    let dir = tempfile::tempdir().unwrap();
    // A wait of 5 ms whatever the size: no 32 MiB copy lands within 10 ms.
    let (nodes, hash) = answered_write(dir.path(), |c| {
        c.objects.timings.put_wait_base = Duration::from_millis(5);
        c.objects.timings.put_wait_rate = u64::MAX;
    })
    .await;
    let objects = nodes[0].ctx.objects.clone();
    assert!(
        eventually(Duration::from_secs(5), || objects.writes_in_flight() == 0).await,
        "the write was not cut"
    );
    // Both pushes were stopped, not left to run on their own.
    assert_eq!(objects.stats.placements_cut.load(Ordering::Relaxed), 2);
    assert_ne!(holders(&nodes, &hash), vec![0, 1, 2], "a cut push landed");
    // Repair places what the write could not.
    assert!(
        eventually(Duration::from_secs(60), || holders(&nodes, &hash)
            == vec![0, 1, 2])
        .await,
        "repair never placed the cut copies: held by {:?}, {} transfers in flight",
        holders(&nodes, &hash),
        nodes[0].ctx.dht.status().transfers_in_flight
    );
    // Repair moved both copies: the write's pushes were stopped, not left to land (left
    // alone, they land and repair only proves them: 0). A target holds its copy a moment
    // before its pusher counts it (the pusher proves the copy first), hence the wait.
    let repaired = || -> u64 {
        nodes
            .iter()
            .map(|n| n.ctx.objects.stats.repair_transfers.load(Ordering::Relaxed))
            .sum()
    };
    eventually(Duration::from_secs(10), || repaired() >= 2).await;
    assert_eq!(repaired(), 2, "copies moved by repair");
    for n in nodes {
        n.shutdown().await;
    }
}

/// One token holder runs at most a quarter of the node's writes at once (its tenant's
/// share, else its token's): past it its PUTs are 429 `writes_busy` before their body is
/// read, while another token's PUT still runs. Before, one holder writing to slow targets
/// could take every slot (`writes_max`) and make the node refuse everybody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_holder_takes_only_its_share_of_the_write_slots() {
    use node::caps::{Caveat, Grant, Token};
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (lone, root) = gated_node(dir.path(), |c| c.objects.writes_max = 8).await;
    let gateway = lone.ctx.clone();
    let objects = gateway.objects.clone();
    assert_eq!(objects.writes_per_principal_max(), 2);
    let token = |nonce: u8| {
        Token::mint(
            &root,
            [nonce; 16],
            vec![Caveat::Methods(vec!["PUT".into()])],
        )
    };
    let (a, b) = (token(1), token(2));
    let principal = |t: &Token| Grant::default().principal(&t.id());
    let put = |t: &Token, body: &[u8]| {
        request(
            "PUT",
            format!("http://{}/o", gateway.http),
            vec![("authorization", format!("Bearer {}", t.encode()))],
            body.to_vec(),
        )
    };

    // A's share taken (two writes still placing their copies, say).
    let mut held: Vec<_> = (0..2)
        .map(|_| objects.write_slot(Some(&principal(&a))).unwrap())
        .collect();
    assert!(
        objects.write_slot(Some(&principal(&a))).is_err(),
        "a third slot for A"
    );
    let r = put(&a, b"from A").await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "writes_busy");
    assert!(r.json().get("id").is_none(), "refused before its body");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    // B is not held up by A.
    let r = put(&b, b"from B").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // Bodies still being received count toward the share: with two of B's admitted, its
    // next PUT is refused before its body; once they end, it runs.
    let receiving: Vec<_> = (0..2)
        .map(|_| objects.admit_write(Some(&principal(&b))).unwrap())
        .collect();
    let r = put(&b, b"from B again").await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    drop(receiving);
    let r = put(&b, b"from B again").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // The gateway holds a PUT's admission while its body comes: with one of C's bodies
    // half sent and one more admitted, C's next PUT is refused; the half-sent one is 201.
    let c = token(3);
    let (go_on, client) = half_sent_put(gateway.http, Some(c.encode()), vec![7u8; 64 << 10]).await;
    let other = objects.admit_write(Some(&principal(&c))).unwrap();
    let r = put(&c, b"from C").await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    drop(other);
    go_on.send(()).unwrap();
    let reply = client.await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    // One of A's writes ends: A writes again.
    held.pop();
    let r = put(&a, b"from A").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    drop(held);
    assert!(eventually(Duration::from_secs(5), || objects.writes_in_flight() == 0).await);
    lone.shutdown().await;
}

/// A repair transfer still running at its cut (twice a PUT's wait for the size, at least
/// `repair_cut_min`) is stopped and reported failed, its planner slot free again: a target
/// that takes a copy in just above the transfers' minimum rate does not hold one of the
/// planner's few transfers for hours. Here the cut is 10 ms, so no 32 MiB copy makes it;
/// before, every transfer ran to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_transfer_slower_than_its_cut_is_stopped_and_reported() {
    println!("seed = {SEED:#x}");
    logs();
    let dir = tempfile::tempdir().unwrap();
    let nodes = tokio::time::timeout(
        Duration::from_secs(30),
        mesh_with(dir.path(), 3, |c| {
            c.objects.timings.put_wait_base = Duration::from_millis(5);
            c.objects.timings.put_wait_rate = u64::MAX;
            c.objects.timings.repair_cut_min = Duration::from_millis(5);
        }),
    )
    .await
    .unwrap();
    let objects = nodes[0].ctx.objects.clone();
    let body = data(32 << 20);
    let hash = objects.store.put(&body, None).unwrap();
    // Known to the planner as ours alone: it plans a copy at each of the others.
    objects.announce(hash, body.len() as u64).await;
    let cut = || objects.stats.repair_cut.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(60), || cut() >= 2).await,
        "repair transfers were not cut: {} cut, held by {:?}",
        cut(),
        holders(&nodes, &hash)
    );
    assert_eq!(holders(&nodes, &hash), vec![0], "a cut push landed");
    assert!(
        eventually(Duration::from_secs(5), || nodes[0]
            .ctx
            .dht
            .status()
            .transfers_in_flight
            == 0)
        .await,
        "the cut transfers still hold the planner's slots"
    );
    for n in nodes {
        n.shutdown().await;
    }
}
