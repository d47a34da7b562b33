//! What a peer says is a claim until checked, over real QUIC on loopback with real stores:
//!
//! - a stranger with a fresh key cannot push a replica; with a capability it can; a known
//!   peer can push only what the receiver is responsible for;
//! - a holder that lies about an object's size (smaller, then larger) is caught before a
//!   header is sent: the gateway answers with the honest holders' bytes, whole, and counts
//!   the liar, which its DHT then keeps out; an object only a liar claims is not served at
//!   all;
//! - an object file that cannot be read for a moment is 503, then 200 again: an I/O error
//!   never deletes data;
//! - a search that cannot run is 503, one that does not finish 504, never 404;
//!   `If-None-Match: *` on a missing object is 404, and 404s are not cacheable.
//!
//! Every test prints its seed; `TRUST_SEED=<n>` replays the same objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use node::caps::{Caveat, Token};
use node::dht::{self, DhtHandle, NetPeer};
use node::store::{Store, id_string};
use node::transport::{HandlerFuture, NoApps};
use node::{Identity, InboundExchange, InboundHandler, Transport, TransportConfig};
use overlay::Key;
use rand::{Rng, SeedableRng};
use wire::dht::APP_PROTO_DHT;
use wire::object::{APP_PROTO_OBJECT, ByteRange, ObjectRequest, ObjectResponse};
use wire::{Status, message};

fn seed(test: &str) -> u64 {
    let s = std::env::var("TRUST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{test}: seed {s} (replay with TRUST_SEED={s})");
    s
}

fn bytes(rng: &mut rand_chacha::ChaCha8Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.r#gen()).collect()
}

/// A QUIC endpoint with a fresh key that serves nothing: the stranger.
fn stranger() -> Transport {
    Transport::bind(
        Arc::new(Identity::generate().unwrap()),
        TransportConfig::with_listen("127.0.0.1:0".parse().unwrap()),
        Arc::new(NoApps),
    )
    .unwrap()
}

/// Pushes `data` to `to` as app protocol 2 `Put`, with `cap` in the START frame; the
/// status the receiver answered.
async fn push(from: &Transport, to: &NetPeer, data: &[u8], cap: Bytes) -> Status {
    push_paced(from, to, data, cap, None).await
}

/// As [`push`], sending at most `rate` bytes per second when given.
async fn push_paced(
    from: &Transport,
    to: &NetPeer,
    data: &[u8],
    cap: Bytes,
    rate: Option<u64>,
) -> Status {
    let started = tokio::time::Instant::now();
    let mut offset = 0u64;
    from.connect(to.addr, Some(to.id)).await.unwrap();
    let hash = *blake3::hash(data).as_bytes();
    let mut ex = from
        .open_exchange(to.id, APP_PROTO_OBJECT, cap)
        .await
        .unwrap();
    let put = ObjectRequest::Put {
        hash,
        size: data.len() as u64,
    };
    let mut sent = ex.send(message::encode(&put), false).await;
    let piece_len = if rate.is_some_and(|r| r < 64 << 10) {
        1024
    } else {
        60 << 10
    };
    for piece in data.chunks(piece_len) {
        if sent.is_err() {
            break;
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(offset as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        offset += piece.len() as u64;
        let last = piece.as_ptr_range().end == data.as_ptr_range().end;
        sent = ex.send(Bytes::copy_from_slice(piece), last).await;
    }
    let (status, _) = ex.read_response(1024).await.unwrap();
    status
}

/// A capability for node `i` of a mesh under `dir` (its root key from its identity).
fn capability(dir: &std::path::Path, i: usize) -> Bytes {
    let identity = Identity::load_or_create(&dir.join(format!("n{i}"))).unwrap();
    let root = node::caps::derived_root(&identity);
    Token::mint(&root, [7; 16], vec![Caveat::Methods(vec!["PUT".into()])])
        .encode()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_need_a_capability_and_peers_need_a_reason() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("push authorization"));
    let dir = tempfile::tempdir().unwrap();
    // RF = 2 of 4: for most objects a node is not among the RF closest.
    let nodes = mesh_with(dir.path(), 4, |c| {
        c.objects.rf = 2;
        c.objects.w = 1;
        c.replication.rf = 2;
    })
    .await;
    let target = &nodes[0];
    let target_peer = peer(target);

    // A stranger with a fresh key and no capability: refused before a byte is stored.
    let outsider = stranger();
    let data = bytes(&mut rng, 100_000);
    let hash = *blake3::hash(&data).as_bytes();
    let status = push(&outsider, &target_peer, &data, Bytes::new()).await;
    assert_eq!(status, Status::Forbidden);
    assert_eq!(target.ctx.objects.store.size(&hash), None, "nothing stored");
    let stats = target.ctx.transport.stats();
    assert_eq!(
        stats.rejects("push_unknown_sender"),
        1,
        "{:?}",
        stats.snapshot().rejects
    );
    assert_eq!(
        target
            .ctx
            .objects
            .stats
            .pushes_refused
            .load(Ordering::Relaxed),
        1
    );
    let url = format!("http://{}/o/{}", target.ctx.http, id_string(&hash));
    let r = request("GET", url.clone(), vec![], vec![]).await;
    assert_eq!(r.status, 404, "not served");
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // A capability signed with the node's root key opens the same door.
    let status = push(&outsider, &target_peer, &data, capability(dir.path(), 0)).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(target.ctx.objects.store.size(&hash), Some(100_000));
    assert_eq!(request("GET", url, vec![], vec![]).await.body, data);
    // A forged one does not.
    let forged = Token::mint(&[9; 32], [7; 16], vec![]);
    let other = bytes(&mut rng, 5_000);
    let status = push(&outsider, &target_peer, &other, forged.encode().into()).await;
    assert_eq!(status, Status::Unauthorized);

    // A known peer (node 1, in node 0's table) may push what node 0 must hold, and only
    // that: find one object node 0 is responsible for and one it is not.
    let sender = &nodes[1].ctx.objects;
    let key_of = |n: &node::app::RunningNode| Key::for_node(&n.ctx.transport.node_id());
    let rank_of_target = |d: &[u8]| {
        let k = Key(*blake3::hash(d).as_bytes());
        let ours = key_of(target).distance(&k);
        nodes
            .iter()
            .filter(|n| key_of(n).distance(&k) < ours)
            .count()
    };
    let mut mine = None;
    let mut not_mine = None;
    while mine.is_none() || not_mine.is_none() {
        let d = bytes(&mut rng, 30_000);
        match rank_of_target(&d) {
            0 | 1 => mine = mine.or(Some(d)),
            _ => not_mine = not_mine.or(Some(d)),
        }
    }
    let (mine, not_mine) = (mine.unwrap(), not_mine.unwrap());
    for d in [&mine, &not_mine] {
        sender.store.put(d, None).unwrap();
    }
    let h_mine = *blake3::hash(&mine).as_bytes();
    let h_not = *blake3::hash(&not_mine).as_bytes();
    sender
        .push_bytes(&target_peer, h_mine, mine.len() as u64)
        .await
        .unwrap();
    assert_eq!(target.ctx.objects.store.size(&h_mine), Some(30_000));
    let refused = sender
        .push_bytes(&target_peer, h_not, not_mine.len() as u64)
        .await;
    assert!(
        matches!(
            refused,
            Err(node::objects::FetchError::RefusedUnread(Status::Forbidden, ref reason))
                if reason == "push_not_responsible"
        ),
        "{refused:?}"
    );
    assert_eq!(target.ctx.objects.store.size(&h_not), None);
    let stats = target.ctx.transport.stats();
    assert_eq!(
        stats.rejects("push_not_responsible"),
        1,
        "{:?}",
        stats.snapshot().rejects
    );

    outsider.close().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// How the lying holder misstates sizes.
#[derive(Clone, Copy, Debug)]
enum Lie {
    Smaller,
    Larger,
}

/// A holder with a real DHT and a real copy, which lies about the object's size: HAS and
/// TAIL state a wrong size, and TAIL's slice carries that size in its length header.
struct Liar {
    services: OnceLock<(DhtHandle, Transport)>,
    store: Store,
    lie: Lie,
}

impl Liar {
    fn fake(&self, size: u64) -> u64 {
        match self.lie {
            Lie::Smaller => size - 5_000,
            Lie::Larger => size + 5_000,
        }
    }

    async fn answer(self: Arc<Self>, mut ex: InboundExchange) -> Result<(), node::TransportError> {
        let body = ex.read_body(1024).await?;
        let Ok(req) = message::decode::<ObjectRequest>(&body) else {
            return ex.respond(Status::BadRequest, Bytes::new()).await;
        };
        let hash = match req {
            ObjectRequest::Has { hash } | ObjectRequest::Tail { hash } => hash,
            _ => return ex.respond(Status::Unavailable, Bytes::new()).await,
        };
        let Some(size) = self.store.size(&hash) else {
            return ex.respond(Status::NotFound, Bytes::new()).await;
        };
        let fake = self.fake(size);
        if let ObjectRequest::Has { .. } = req {
            let has = ObjectResponse::Has { size: Some(fake) };
            return ex.respond(Status::Ok, message::encode(&has)).await;
        }
        // A genuine slice of a real byte near the claimed end, its header rewritten to the
        // claimed size: every chunk it carries is authentic, only the length is not.
        let at = fake.min(size) - 1;
        let mut enc = self.store.encode_slice(&hash, at, 1).unwrap();
        enc[..8].copy_from_slice(&fake.to_le_bytes());
        let found = ObjectResponse::Found {
            size: fake,
            range: ByteRange::tail(fake),
        };
        ex.send(Status::Partial, message::encode(&found), false)
            .await?;
        ex.send(Status::Partial, enc.into(), true).await
    }
}

impl InboundHandler for Liar {
    fn app_protos(&self) -> Vec<u16> {
        vec![APP_PROTO_DHT, APP_PROTO_OBJECT]
    }

    fn handle(&self, ex: InboundExchange) -> HandlerFuture {
        let Some((dht, transport)) = self.services.get().cloned() else {
            return Box::pin(ex.respond(Status::Unavailable, Bytes::new()));
        };
        if ex.app_proto_id() == APP_PROTO_DHT {
            return Box::pin(dht::serve_dht(ex, dht, transport));
        }
        let me = Arc::new(Liar {
            services: OnceLock::new(),
            store: self.store.clone(),
            lie: self.lie,
        });
        Box::pin(me.answer(ex))
    }
}

/// Starts a liar that joins the mesh through `boot` and announces itself as a provider of
/// each of `objects`, which it holds (for real).
async fn liar(
    lie: Lie,
    boot: &NetPeer,
    objects: &[&[u8]],
) -> (Transport, tokio::sync::watch::Sender<bool>) {
    let handler = Arc::new(Liar {
        services: OnceLock::new(),
        store: Store::amnesia(1 << 30),
        lie,
    });
    let t = Transport::bind(
        Arc::new(Identity::generate().unwrap()),
        TransportConfig::with_listen("127.0.0.1:0".parse().unwrap()),
        handler.clone(),
    )
    .unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let config = overlay::Config {
        rpc_timeout: Duration::from_millis(1000),
        ..overlay::Config::default()
    };
    let (dht, _plans) = dht::spawn(
        t.clone(),
        t.local_addr(),
        config,
        overlay::ReplicationConfig::default(),
        7,
        true,
        stop_rx,
    );
    let _ = handler.services.set((dht.clone(), t.clone()));
    for o in objects {
        handler.store.put(o, None).unwrap();
    }
    t.connect(boot.addr, Some(boot.id)).await.unwrap();
    dht.bootstrap(vec![boot.clone()]).await.unwrap();
    assert!(dht.wait_ready(Duration::from_secs(10)).await, "liar joined");
    for o in objects {
        dht.provide(Key(*blake3::hash(o).as_bytes())).await.unwrap();
    }
    // The driver must outlive this function; it stops with `stop`.
    std::mem::forget(_plans);
    (t, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_come_from_verified_data_and_liars_are_counted() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("lying sizes"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 3).await;
    let (reader, holders) = (&nodes[0], &nodes[1..]);
    for lie in [Lie::Smaller, Lie::Larger] {
        let data = bytes(&mut rng, 300_000);
        let lonely = bytes(&mut rng, 200_000);
        let hash = *blake3::hash(&data).as_bytes();
        // The honest holders hold and announce it; node 0 does not.
        for h in holders {
            h.ctx.objects.store.put(&data, None).unwrap();
            h.ctx.dht.provide(Key(hash)).await.unwrap();
        }
        let (t, stop) = liar(lie, &peer(reader), &[&data, &lonely]).await;
        let lied_before = reader
            .ctx
            .objects
            .stats
            .holders_lied
            .load(Ordering::Relaxed);

        let url = format!("http://{}/o/{}", reader.ctx.http, id_string(&hash));
        let r = request("GET", url, vec![], vec![]).await;
        assert_eq!(r.status, 200, "{lie:?}");
        assert_eq!(r.header("content-length"), Some("300000"), "{lie:?}");
        assert!(r.body == data, "{lie:?}: the honest bytes, whole");
        assert_eq!(
            reader.ctx.objects.store.size(&hash),
            None,
            "served remotely"
        );

        // Only the liar claims this one: no header, no body, no year of caching.
        let url = format!(
            "http://{}/o/{}",
            reader.ctx.http,
            id_string(blake3::hash(&lonely).as_bytes())
        );
        let r = request("GET", url, vec![], vec![]).await;
        assert_eq!(
            r.status,
            404,
            "{lie:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
        // The first GET stops at the first verified holder, so the liar's answer is heard
        // there only if it came first; here it is the only claim, and always heard.
        let lied = reader
            .ctx
            .objects
            .stats
            .holders_lied
            .load(Ordering::Relaxed);
        assert!(lied > lied_before, "{lie:?}: the liar was counted");
        // A proof that failed under the liar's own key keeps it out of the reader's table
        // and walks for a while (`Dht::peer_lied`): it is not asked again.
        let table = reader.ctx.dht.routing_table().await.unwrap();
        assert!(
            table.iter().all(|p| p.id != t.node_id()),
            "{lie:?}: the liar left the reader's table"
        );
        assert!(
            reader.ctx.dht.status().liars_denied >= 1,
            "{lie:?}: the operator sees it kept out"
        );
        // Past the gateway's memory of the miss, so the GET searches again.
        tokio::time::sleep(node::gateway::misses::NEGATIVE_TTL + Duration::from_millis(100)).await;
        let url = format!(
            "http://{}/o/{}",
            reader.ctx.http,
            id_string(blake3::hash(&lonely).as_bytes())
        );
        let r = request("GET", url, vec![], vec![]).await;
        assert_eq!(r.status, 404, "{lie:?}: still nobody else holds it");
        let lied_again = reader
            .ctx
            .objects
            .stats
            .holders_lied
            .load(Ordering::Relaxed);
        assert_eq!(lied_again, lied, "{lie:?}: the liar was not asked again");

        let _ = stop.send(true);
        t.close().await;
        for h in holders {
            h.ctx.objects.store.remove(&hash);
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_is_unavailable_and_never_deleted() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("unreadable file"));
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), 0, None).await;
    let data = bytes(&mut rng, 150_000);
    let (status, reply) = http("PUT", format!("http://{}/o", node.ctx.http), data.clone()).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
    let hash = *blake3::hash(&data).as_bytes();
    let url = format!("http://{}/o/{}", node.ctx.http, id_string(&hash));

    // The object file is briefly a directory: every read fails with EISDIR.
    let path = node.ctx.objects.store.data_file(&hash).unwrap();
    let aside = path.with_extension("aside");
    std::fs::rename(&path, &aside).unwrap();
    std::fs::create_dir(&path).unwrap();
    for range in [None, Some("bytes=0-9")] {
        let headers = range
            .map(|r| vec![("range", r.to_string())])
            .unwrap_or_default();
        let r = request("GET", url.clone(), headers, vec![]).await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["code"], "store_unavailable");
        assert!(r.header("retry-after").is_some());
    }
    assert_eq!(
        node.ctx.objects.store.size(&hash),
        Some(150_000),
        "still indexed"
    );
    assert_eq!(node.ctx.objects.store.corrupt_found(), 0, "not corruption");

    std::fs::remove_dir(&path).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    let r = request("GET", url, vec![], vec![]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == data, "the same bytes after the fault");
    node.shutdown().await;
}

/// Flips one bit of byte `at` of `hash`'s file in `store`, as a disk's rot would: the
/// file's path and its rotten bytes.
/// PUTs `data` through the first of `nodes` (201) and waits until every node holds a copy
/// (RF 3 on 3 nodes); returns its hash.
async fn put_on_every_node(nodes: &[node::app::RunningNode], data: &[u8]) -> [u8; 32] {
    let a = &nodes[0];
    let (status, reply) = http("PUT", format!("http://{}/o", a.ctx.http), data.to_vec()).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
    let hash = *blake3::hash(data).as_bytes();
    let held = |n: &node::app::RunningNode| n.ctx.objects.store.size(&hash).is_some();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !nodes.iter().all(held) {
        assert!(
            std::time::Instant::now() < deadline,
            "RF 3 copies on 3 nodes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hash
}

fn rot(store: &Store, hash: &[u8; 32], at: usize) -> (std::path::PathBuf, Vec<u8>) {
    let path = store.data_file(hash).unwrap();
    // What the file holds once rotten, read while it is still good: the copy found rotten
    // may be dropped the moment the flip lands.
    let mut on_disk = std::fs::read(&path).unwrap();
    on_disk[at] ^= 0x40;
    flip_in_place(&path, at as u64, 0x40);
    (path, on_disk)
}

/// Our own copy rotting on disk is our fault: a push that finds it mid-stream stops at once,
/// says it is local, and never counts the receiver as a liar or waits for its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_our_own_rotten_copy_is_our_failure_not_the_peers() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("rotten push"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Three transfer pieces; the flip sits in the last, so the push is under way when the
    // store finds it.
    let data = bytes(&mut rng, 700_000);
    let hash = *blake3::hash(&data).as_bytes();
    a.ctx.objects.store.put(&data, None).unwrap();
    rot(&a.ctx.objects.store, &hash, 700_000 - 1000);

    let began = std::time::Instant::now();
    let pushed = a
        .ctx
        .objects
        .push_bytes(&peer(b), hash, data.len() as u64)
        .await;
    let took = began.elapsed();
    assert!(
        matches!(pushed, Err(node::objects::FetchError::LocalCorrupt)),
        "our rot, typed as ours: {pushed:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "no wait for an answer: {took:?}"
    );
    assert_eq!(
        a.ctx.objects.store.size(&hash),
        None,
        "the rotten copy dropped"
    );
    assert!(a.ctx.objects.store.corrupt_found() >= 1);
    assert_eq!(
        b.ctx.objects.store.size(&hash),
        None,
        "nothing half-sent kept"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

/// A copy that rots on our disk is dropped when a read finds it; the planner stops counting
/// it and the node fetches a verified copy back from the other holders at once (their
/// proof of ours would otherwise keep them from repairing it for an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotten_copy_is_dropped_replanned_and_fetched_back() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("rotten copy back"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 3).await;
    let a = &nodes[0];
    let data = bytes(&mut rng, 300_000);
    let hash = put_on_every_node(&nodes, &data).await;
    let url = format!("http://{}/o/{}", a.ctx.http, id_string(&hash));
    let held = |n: &node::app::RunningNode| n.ctx.objects.store.size(&hash).is_some();

    let (path, on_disk) = rot(&a.ctx.objects.store, &hash, 150_000);
    // The read that finds the rot still answers, from the mesh.
    let r = request("GET", url.clone(), vec![], vec![]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.body == data, "the good bytes, from another holder");
    assert!(
        a.ctx.objects.store.corrupt_found() >= 1,
        "the rot was found"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(held(a) && std::fs::read(&path).is_ok_and(|b| b != on_disk)) {
        assert!(
            std::time::Instant::now() < deadline,
            "a good copy fetched back into the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found = a.ctx.objects.store.corrupt_found();
    let r = request("GET", url, vec![], vec![]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    assert_eq!(
        a.ctx.objects.store.corrupt_found(),
        found,
        "the copy back verifies"
    );
    assert_eq!(a.ctx.dht.status().objects, 1, "and is ours to plan again");
    for n in nodes {
        n.shutdown().await;
    }
}

/// Serves the DHT protocol by never answering: every lookup through it hangs until the RPC
/// timeout.
struct BlackHole;

impl InboundHandler for BlackHole {
    fn app_protos(&self) -> Vec<u16> {
        vec![APP_PROTO_DHT, APP_PROTO_OBJECT]
    }

    fn handle(&self, ex: InboundExchange) -> HandlerFuture {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(ex);
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_that_cannot_run_or_finish_are_not_404() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    // A lone node (never had a peer): a search over nobody ran, so unknown ids are 404.
    let lone = start(dir.path(), 9, None).await;
    let missing = id_string(&[0xab; 32]);
    let url = format!("http://{}/o/{missing}", lone.ctx.http);
    let r = request("GET", url.clone(), vec![], vec![]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = request("GET", url, vec![("if-none-match", "*".into())], vec![]).await;
    assert_eq!(
        r.status, 404,
        "If-None-Match: * matches only an object that exists"
    );
    lone.shutdown().await;

    // A node whose only peer never answers: lookups pile up behind the RPC timeout.
    let hole = Transport::bind(
        Arc::new(Identity::generate().unwrap()),
        TransportConfig::with_listen("127.0.0.1:0".parse().unwrap()),
        Arc::new(BlackHole),
    )
    .unwrap();
    let mut c = config(dir.path(), 0, Some(hole.local_addr()));
    c.dht.rpc_timeout = Duration::from_secs(60);
    let node = start_with(c).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.ctx.dht.status().routing_table_size == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dialed its bootstrap peer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut gets = tokio::task::JoinSet::new();
    for i in 0..100u8 {
        let url = format!("http://{}/o/{}", node.ctx.http, id_string(&[i; 32]));
        gets.spawn(request("GET", url, vec![], vec![]));
    }
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(r) = gets.join_next().await {
        let r = r.unwrap();
        if r.status == 503 {
            assert!(r.header("retry-after").is_some(), "503 says when to retry");
        }
        *by_status.entry(r.status).or_default() += 1;
    }
    println!("100 GETs through a silent peer: {by_status:?}");
    assert_eq!(
        by_status.get(&404),
        None,
        "a search that did not run or finish is not 404"
    );
    assert!(
        by_status.get(&503).is_some_and(|n| *n > 0),
        "refused lookups: {by_status:?}"
    );
    assert!(
        by_status.get(&504).is_some_and(|n| *n > 0),
        "unfinished ones: {by_status:?}"
    );
    node.shutdown().await;
    hole.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_transfer_completes_and_a_stalled_one_is_cut() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("slow transfers"));
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), 0, None).await;
    let to = peer(&node);
    let cap = capability(dir.path(), 0);
    // 64 MiB at 1 MiB/s: a minute, twice the transport's fixed 30 s bound on an exchange.
    let big = bytes(&mut rng, 64 << 20);
    let trickle = bytes(&mut rng, 1 << 20);
    let (slow, stalled) = (stranger(), stranger());
    let started = tokio::time::Instant::now();
    let (big_status, trickle_status) = tokio::join!(
        push_paced(&slow, &to, &big, cap.clone(), Some(1 << 20)),
        // 2 KiB/s is far below the 64 KiB/s minimum: cut after the 10 s grace.
        push_paced(&stalled, &to, &trickle, cap, Some(2 << 10)),
    );
    println!(
        "64 MiB at 1 MiB/s: {big_status:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(
        big_status,
        Status::Ok,
        "a slow but steady transfer completes"
    );
    assert!(started.elapsed() > Duration::from_secs(60));
    let h = *blake3::hash(&big).as_bytes();
    assert_eq!(node.ctx.objects.store.size(&h), Some(64 << 20));
    assert_eq!(
        trickle_status,
        Status::TooManyRequests,
        "below the minimum rate: cut"
    );
    let stats = node.ctx.transport.stats();
    assert_eq!(stats.rejects("push_too_slow"), 1);
    let t = *blake3::hash(&trickle).as_bytes();
    assert_eq!(node.ctx.objects.store.size(&t), None);
    slow.close().await;
    stalled.close().await;
    node.shutdown().await;
}

/// The same object written through two gateways at once, with W = RF = 3: both writes
/// reach every copy. A receiver refuses a second concurrent push of an object it is
/// already receiving (429 `push_in_progress`); a writer that meets that refusal must wait
/// for the copy in flight and prove it, not count the target as failed and answer 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_one_object_all_reach_their_quorum() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("concurrent writes"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_with(dir.path(), 3, |c| {
        c.objects.rf = 3;
        c.objects.w = 3;
    })
    .await;
    let mut refused = 0;
    for round in 0..6 {
        let data = bytes(&mut rng, (1 << 20) + round);
        let put = |i: usize| {
            http(
                "PUT",
                format!("http://{}/o", nodes[i].ctx.http),
                data.clone(),
            )
        };
        let (a, b) = tokio::join!(put(0), put(1));
        for (via, (status, body)) in [(0, a), (1, b)] {
            println!(
                "round {round} via node {via}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            if status != 201 {
                refused += 1;
            }
        }
    }
    let in_progress: u64 = nodes
        .iter()
        .map(|n| n.ctx.transport.stats().rejects("push_in_progress"))
        .sum();
    println!("push_in_progress refusals met: {in_progress}");
    assert_eq!(refused, 0, "a write refused though every copy was placed");
    for n in nodes {
        n.shutdown().await;
    }
}

/// GETs of ids nobody holds each start a search of the mesh. An id just searched in vain
/// answers 404 again at once (no second search), and a client that keeps asking for new
/// unknown ids meets 429 with `Retry-After` (a search that finds its object costs nothing
/// from that budget); objects held here stay readable meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_for_missing_ids_are_remembered_and_budgeted() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("missing ids"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 2).await;
    let base = format!("http://{}", nodes[0].ctx.http);
    let (status, body) = http("PUT", format!("{base}/o"), bytes(&mut rng, 3000)).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let held: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let held = held["id"].as_str().unwrap().to_string();

    let unknown = |rng: &mut rand_chacha::ChaCha8Rng| {
        format!("{base}/o/b3:{}", hex::encode(rng.r#gen::<[u8; 32]>()))
    };
    let first = unknown(&mut rng);
    let (status, body) = http("GET", first.clone(), Vec::new()).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, body) = http("GET", first, Vec::new()).await;
    assert_eq!(status, 404);
    let said = String::from_utf8_lossy(&body).into_owned();
    assert!(said.contains("searched moments ago"), "{said}");

    // 16 clients' worth of requests from one address, each for a new id.
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut retry_after = None;
    for _ in 0..25 {
        let batch: Vec<String> = (0..16).map(|_| unknown(&mut rng)).collect();
        let replies = futures_util::future::join_all(
            batch.into_iter().map(|u| request("GET", u, vec![], vec![])),
        )
        .await;
        for r in replies {
            *statuses.entry(r.status).or_default() += 1;
            if r.status == 429 {
                retry_after = r.header("retry-after").map(String::from);
                assert_eq!(r.json()["code"], "search_rate_limited");
            }
        }
    }
    println!("GETs of 400 unknown ids from one client: {statuses:?}");
    assert!(statuses.get(&429).is_some_and(|n| *n > 0), "{statuses:?}");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![404, 429],
        "only misses and refusals"
    );
    assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s >= 1)));
    // Over its budget, the client still reads what is held here (no search needed).
    let (status, _) = http("GET", format!("{base}/o/{held}"), Vec::new()).await;
    assert_eq!(status, 200);
    for n in nodes {
        n.shutdown().await;
    }
}

/// How a lying holder bends the slice it serves for a GET.
#[derive(Clone, Copy, Debug)]
enum SliceLie {
    /// One byte of a group deep in the slice flipped.
    Flipped,
    /// The slice cut short by a few bytes, END sent as if it were whole.
    Truncated,
    /// The whole, genuine slice, then bytes that belong to nothing.
    Trailing,
    /// The length header off by one.
    WrongLength,
    /// The genuine slice, 16 KiB every 300 ms (about 53 KiB/s): every frame well within
    /// the 10 s silence bound, the whole below the 64 KiB/s minimum rate.
    Trickle,
    /// Nothing at all: the request is read and never answered.
    Silent,
}

/// A holder that serves GET from a real copy, bent by its lie, in 64 KiB frames (cut
/// without regard to groups, so the asker also meets groups split across frames).
struct SliceLiar {
    store: Store,
    lie: SliceLie,
}

impl SliceLiar {
    async fn answer(
        store: Store,
        lie: SliceLie,
        mut ex: InboundExchange,
    ) -> Result<(), node::TransportError> {
        let body = ex.read_body(1024).await?;
        if let SliceLie::Silent = lie {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        let Ok(ObjectRequest::Get {
            hash,
            range: Some(range),
        }) = message::decode::<ObjectRequest>(&body)
        else {
            return ex.respond(Status::BadRequest, Bytes::new()).await;
        };
        let Some(size) = store.size(&hash) else {
            return ex.respond(Status::NotFound, Bytes::new()).await;
        };
        let mut enc = store.encode_slice(&hash, range.start, range.len).unwrap();
        match lie {
            SliceLie::Flipped => {
                let at = enc.len() * 3 / 4;
                enc[at] ^= 0x20;
            }
            SliceLie::Truncated => enc.truncate(enc.len() - 3),
            SliceLie::Trailing => enc.extend_from_slice(&[7u8; 100]),
            SliceLie::WrongLength => enc[..8].copy_from_slice(&(size + 1).to_le_bytes()),
            SliceLie::Trickle | SliceLie::Silent => {}
        }
        let found = ObjectResponse::Found { size, range };
        ex.send(Status::Ok, message::encode(&found), false).await?;
        let enc = Bytes::from(enc);
        if let SliceLie::Trickle = lie {
            let frames = enc.len().div_ceil(16 << 10);
            for i in 0..frames {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let part = enc.slice(i * (16 << 10)..((i + 1) * (16 << 10)).min(enc.len()));
                ex.send(Status::Ok, part, i + 1 == frames).await?;
            }
            return Ok(());
        }
        let frames = enc.len().div_ceil(64 << 10);
        for i in 0..frames {
            let part = enc.slice(i * (64 << 10)..((i + 1) * (64 << 10)).min(enc.len()));
            ex.send(Status::Ok, part, i + 1 == frames).await?;
        }
        Ok(())
    }
}

impl InboundHandler for SliceLiar {
    fn app_protos(&self) -> Vec<u16> {
        vec![APP_PROTO_OBJECT]
    }

    fn handle(&self, ex: InboundExchange) -> HandlerFuture {
        Box::pin(SliceLiar::answer(self.store.clone(), self.lie, ex))
    }
}

/// A holder serving `data` bent by `lie`, on its own endpoint.
fn slice_liar(data: &[u8], lie: SliceLie) -> (Transport, NetPeer) {
    let handler = Arc::new(SliceLiar {
        store: Store::amnesia(1 << 30),
        lie,
    });
    handler.store.put(data, None).unwrap();
    let t = Transport::bind(
        Arc::new(Identity::generate().unwrap()),
        TransportConfig::with_listen("127.0.0.1:0".parse().unwrap()),
        handler,
    )
    .unwrap();
    let peer = NetPeer::new(t.node_id(), t.local_addr());
    (t, peer)
}

/// The whole of `hash` (`len` bytes) fetched by `objects` from `order` with failover, read
/// by a client that waits `pause` after each piece: what the fetch returned, and the bytes.
async fn fetch_all(
    objects: &node::objects::Objects,
    order: Vec<NetPeer>,
    hash: [u8; 32],
    len: u64,
    pause: Duration,
) -> (
    Result<node::objects::Fetched, node::objects::FetchError>,
    Vec<u8>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let range = ByteRange { start: 0, len };
    let fetch = {
        let objects = objects.clone();
        tokio::spawn(async move { objects.fetch_failover(&order, hash, range, tx).await })
    };
    let mut got = Vec::new();
    while let Some(piece) = rx.recv().await {
        got.extend_from_slice(&piece);
        tokio::time::sleep(pause).await;
    }
    (fetch.await.unwrap(), got)
}

/// Every way a holder can bend a slice is caught (counted against it), and the fetch fails
/// over to an honest holder from the last verified byte: the reader gets the object, whole
/// and correct. Extra bytes after a whole slice are a lie too, even though every byte of
/// the range already verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bent_slice_is_caught_and_the_fetch_fails_over() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("bent slices"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 2).await;
    let (reader, honest) = (&nodes[0], &nodes[1]);
    let data = bytes(&mut rng, (1 << 20) + 5_000);
    let hash = honest.ctx.objects.store.put(&data, None).unwrap();
    for lie in [
        SliceLie::Flipped,
        SliceLie::Truncated,
        SliceLie::Trailing,
        SliceLie::WrongLength,
    ] {
        let (t, liar) = slice_liar(&data, lie);
        let caught_before = reader
            .ctx
            .objects
            .stats
            .integrity_fail_peer
            .load(Ordering::Relaxed);
        let order = vec![liar, peer(honest)];
        let len = data.len() as u64;
        let (fetched, got) = fetch_all(&reader.ctx.objects, order, hash, len, Duration::ZERO).await;
        assert!(
            matches!(fetched, Ok(node::objects::Fetched::Whole)),
            "{lie:?}: {fetched:?}"
        );
        assert!(got == data, "{lie:?}: the stream differs");
        let caught = reader
            .ctx
            .objects
            .stats
            .integrity_fail_peer
            .load(Ordering::Relaxed);
        assert_eq!(caught, caught_before + 1, "{lie:?}: the liar was counted");
        t.close().await;
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// A fetch's failover list past its verified holder is unproven candidates, each costing
/// up to a dial or an I/O timeout: once `failover_idle` passed without a verified byte no
/// further holder is asked (a list of thirty silent ones must not hold a GET for minutes),
/// while holders that refuse at once cost nothing and stop nothing, and one that delivered
/// verified bytes before it failed starts the wait again. A reader that leaves ends the
/// fetch at once, even while a holder keeps it waiting. Here the I/O timeout is 1 s and
/// the idle bound 4 s; silent holders answer nothing, impostors (the honest node's address
/// under another id) are refused by the handshake at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_gives_up_once_its_holders_gave_nothing_for_the_idle_time() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("barren holders"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 2).await;
    let (reader, honest) = (&nodes[0], &nodes[1]);
    let data = bytes(&mut rng, (1 << 20) + 5_000);
    let len = data.len() as u64;
    let hash = honest.ctx.objects.store.put(&data, None).unwrap();
    let mut objects = reader.ctx.objects.clone();
    let mut limits = (*objects.limits).clone();
    limits.io_timeout = Duration::from_secs(1);
    limits.timings.failover_idle = Duration::from_secs(4);
    objects.limits = Arc::new(limits);
    let impostor = || NetPeer::new(Identity::generate().unwrap().node_id(), peer(honest).addr);
    let silent: Vec<_> = (0..6)
        .map(|_| slice_liar(&data, SliceLie::Silent))
        .collect();
    let silent_peers = |n: usize| {
        silent[..n]
            .iter()
            .map(|(_, p)| p.clone())
            .collect::<Vec<_>>()
    };
    let given_up = || objects.stats.failovers_given_up.load(Ordering::Relaxed);

    // Ten refusals that cost nothing, then the honest holder: served.
    let order = [(0..10).map(|_| impostor()).collect(), vec![peer(honest)]].concat();
    let (fetched, got) = fetch_all(&objects, order, hash, len, Duration::ZERO).await;
    assert!(
        matches!(fetched, Ok(node::objects::Fetched::Whole)),
        "{fetched:?}"
    );
    assert!(got == data);
    assert_eq!(given_up(), 0);

    // Six silent holders (1 s each): the fetch ends after four, the rest untried (with
    // the bound off it reaches the honest holder after six seconds).
    let order = [silent_peers(6), vec![peer(honest)]].concat();
    let (fetched, got) = fetch_all(&objects, order, hash, len, Duration::ZERO).await;
    assert!(fetched.is_err(), "gave up before the honest holder");
    assert!(got.is_empty());
    assert_eq!(given_up(), 1);

    // A holder that delivered most of the object before its lie was caught is progress:
    // two silent ones after it fit in the idle time, and the honest one finishes.
    let (t, liar) = slice_liar(&data, SliceLie::Truncated);
    let order = [
        silent_peers(2),
        vec![liar],
        silent_peers(2),
        vec![peer(honest)],
    ]
    .concat();
    let (fetched, got) = fetch_all(&objects, order, hash, len, Duration::ZERO).await;
    assert!(
        matches!(fetched, Ok(node::objects::Fetched::Whole)),
        "{fetched:?}"
    );
    assert!(
        got == data,
        "one verified stream across the liar and the honest holder"
    );
    assert_eq!(given_up(), 1);
    t.close().await;

    // The reader leaves while a silent holder keeps the fetch waiting (an I/O timeout of
    // 5 s here): the fetch ends at once, not at the timeout.
    let mut patient = objects.clone();
    let mut limits = (*patient.limits).clone();
    limits.io_timeout = Duration::from_secs(5);
    patient.limits = Arc::new(limits);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let range = ByteRange { start: 0, len };
    let order = [silent_peers(1), vec![peer(honest)]].concat();
    let fetch = tokio::spawn(async move { patient.fetch_failover(&order, hash, range, tx).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = tokio::time::Instant::now();
    drop(rx);
    let fetched = tokio::time::timeout(Duration::from_secs(2), fetch).await;
    assert!(
        matches!(fetched, Ok(Ok(Ok(node::objects::Fetched::ReaderLeft)))),
        "the fetch went on after its reader left: {fetched:?}"
    );
    println!("ended {:?} after the reader left", left.elapsed());
    for (t, _) in silent {
        t.close().await;
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// A holder that keeps each frame within the silence bound but moves less than the minimum
/// rate is left, past the grace, for the next holder, from the last verified byte: a read
/// never hangs on a trickle. Before, a fetch kept waiting as long as frames came (1 MiB at
/// 53 KiB/s: 20 s; a 1 GiB object: hours).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_trickles_is_left_for_the_next() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("trickling holder"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 2).await;
    let (reader, honest) = (&nodes[0], &nodes[1]);
    let data = bytes(&mut rng, 1 << 20);
    let len = data.len() as u64;
    let hash = honest.ctx.objects.store.put(&data, None).unwrap();
    let (t, slow) = slice_liar(&data, SliceLie::Trickle);
    // The reader's grace cut to 1 s (10 s by default) to keep the test short.
    let mut objects = reader.ctx.objects.clone();
    let mut limits = (*objects.limits).clone();
    limits.transfer_rate_grace = Duration::from_secs(1);
    objects.limits = Arc::new(limits);
    let too_slow = || objects.stats.holders_too_slow.load(Ordering::Relaxed);

    let started = tokio::time::Instant::now();
    let order = vec![slow, peer(honest)];
    let (fetched, got) = fetch_all(&objects, order, hash, len, Duration::ZERO).await;
    let took = started.elapsed();
    println!("1 MiB with a trickling first holder: {took:?}");
    assert!(
        matches!(fetched, Ok(node::objects::Fetched::Whole)),
        "{fetched:?}"
    );
    assert!(got == data, "one verified stream across both holders");
    assert_eq!(too_slow(), 1, "the trickle was left");
    assert!(
        took < Duration::from_secs(8),
        "left after the grace, not read to its end: {took:?}"
    );

    // A slow client of ours is not the holder's fault: the honest holder alone, read at
    // one piece per 150 ms (longer than the 1 s grace in all), is never left.
    let started = tokio::time::Instant::now();
    let pause = Duration::from_millis(150);
    let (fetched, got) = fetch_all(&objects, vec![peer(honest)], hash, len, pause).await;
    println!("1 MiB to a slow client: {:?}", started.elapsed());
    assert!(
        matches!(fetched, Ok(node::objects::Fetched::Whole)),
        "{fetched:?}"
    );
    assert!(got == data);
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "slower than the grace"
    );
    assert_eq!(too_slow(), 1, "the honest holder was not left");
    t.close().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// A copy that rotted on one of the RF closest is found by the next proof (the holder
/// checks a short range in its own store before serving it), dropped there, and replaced:
/// repair pushes a good copy, or the holder fetches one back first. Before, the rotten
/// holder served the bad group, the proof failed as if the holder lied, and repair backed
/// off and tried again for ever with the object one copy short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotten_copy_at_a_holder_is_found_by_a_proof_and_replaced() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("rotten holder"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 3).await;
    let a = &nodes[0];
    // One 16 KiB group: every proof reads the rotten byte.
    let data = bytes(&mut rng, 12_000);
    let hash = put_on_every_node(&nodes, &data).await;
    let rotten = &nodes[2];
    // Out of its memory cache, the rotten copy is dropped and replaced, as a large
    // object's is (one kept verified in memory is rewritten from it instead, below).
    rotten.ctx.objects.store.forget_cached(&hash);
    rot(&rotten.ctx.objects.store, &hash, 5_000);
    let lied_before = a.ctx.objects.stats.holders_lied.load(Ordering::Relaxed);

    let report = a.ctx.objects.repair_now(hash).await.unwrap();
    println!("{report:?}");
    let at_rotten = report
        .closest
        .iter()
        .find(|p| p.id == rotten.ctx.transport.node_id())
        .expect("the rotten holder is among the closest");
    // Pushed by this repair, or fetched back by the holder itself once it dropped the rot
    // (whichever came first); proven either way.
    assert!(at_rotten.holds, "a good copy proven: {at_rotten:?}");
    assert_eq!(report.copies(), 3);
    assert_eq!(
        rotten.ctx.objects.store.corrupt_found(),
        1,
        "found by itself"
    );
    assert_eq!(
        a.ctx.objects.stats.holders_lied.load(Ordering::Relaxed),
        lied_before,
        "an honest holder with a rotten disk is not a liar"
    );
    let table = a.ctx.dht.routing_table().await.unwrap();
    assert!(
        table.iter().any(|p| p.id == rotten.ctx.transport.node_id()),
        "nor kept out of the table as one"
    );
    let got = rotten
        .ctx
        .objects
        .store
        .read_verified(&hash, 0, data.len() as u64);
    assert!(got.is_ok_and(|b| b == data), "the copy now verifies");
    for n in nodes {
        n.shutdown().await;
    }
}

/// An operator's repair that meets a target busy taking the object in from another pusher
/// (429 `push_in_progress`) asks it again, as a write does, and reports the copy once the
/// other push landed it; before, repair gave the target up at the first refusal and
/// reported the object a copy short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_waits_for_a_copy_in_flight_and_counts_it() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("repair meets a push"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 3).await;
    let (a, c) = (&nodes[0], &nodes[2]);
    let data = bytes(&mut rng, 1 << 20);
    // Only `a` holds it, unannounced: nothing else pushes it meanwhile.
    let hash = a.ctx.objects.store.put(&data, None).unwrap();
    // A stranger with c's capability pushes the same object to c at 512 KiB/s (~2 s).
    let pusher = stranger();
    let (to, cap) = (peer(c), capability(dir.path(), 2));
    let slow = tokio::spawn(async move {
        let status = push_paced(&pusher, &to, &data, cap, Some(512 << 10)).await;
        pusher.close().await;
        status
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !c.ctx.objects.is_receiving(&hash) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "c takes the push in"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = a.ctx.objects.repair_now(hash).await.unwrap();
    println!("{report:?}");
    assert_eq!(slow.await.unwrap(), Status::Ok, "the other push landed");
    assert!(
        c.ctx.transport.stats().rejects("push_in_progress") >= 1,
        "repair met the push in flight"
    );
    let at_c = report
        .closest
        .iter()
        .find(|p| p.id == c.ctx.transport.node_id())
        .expect("c is among the closest of three at RF 3");
    assert!(
        at_c.holds,
        "the copy the other push landed counts: {at_c:?}"
    );
    assert!(!at_c.pushed, "proven, not pushed again");
    assert_eq!(report.copies(), 3);
    for n in nodes {
        n.shutdown().await;
    }
}

/// A write whose target says it holds the object already (`Held`) but whose copy rotted:
/// the proof that follows finds the rot there, the target drops its copy and answers that
/// it lacks the object, and the write pushes it a good one, reaching its quorum. Before,
/// the placement ended as if the target had declined the bytes, and a PUT at W = RF
/// answered 503 with every target reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_replaces_a_copy_found_rotten_after_held() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("held but rotten"));
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_with(dir.path(), 3, |c| {
        c.objects.rf = 3;
        c.objects.w = 3;
    })
    .await;
    let data = bytes(&mut rng, 12_000);
    let hash = put_on_every_node(&nodes, &data).await;
    let rotten = &nodes[2];
    // Out of its memory cache, the rotten copy is dropped and replaced, as a large
    // object's is (one kept verified in memory is rewritten from it instead, below).
    rotten.ctx.objects.store.forget_cached(&hash);
    rot(&rotten.ctx.objects.store, &hash, 5_000);
    let (status, body) = http(
        "PUT",
        format!("http://{}/o", nodes[0].ctx.http),
        data.clone(),
    )
    .await;
    println!("{status} {}", String::from_utf8_lossy(&body));
    assert_eq!(
        status,
        201,
        "W = 3 reached: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        rotten.ctx.objects.store.corrupt_found(),
        1,
        "found by itself"
    );
    let got = rotten
        .ctx
        .objects
        .store
        .read_verified(&hash, 0, data.len() as u64);
    assert!(got.is_ok_and(|b| b == data), "a good copy there now");
    for n in nodes {
        n.shutdown().await;
    }
}

/// A lone node whose scrubber passes every 300 ms at 64 MiB/s.
async fn lone_scrubbing_node(dir: &std::path::Path) -> node::app::RunningNode {
    let mut c = config(dir, 0, None);
    c.scrub = node::scrub::ScrubConfig {
        rate: 64 << 20,
        every: Duration::from_millis(300),
    };
    start_with(c).await
}

/// A rotten copy of a small object the node keeps verified in memory (the hot cache of
/// small objects) is rewritten from those bytes, not dropped: on a lone node (RF 1) that
/// copy is the only one, and dropping it lost the object for good. The rewrite is a new
/// copy, byte for byte the object, and the store still holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotten_copy_held_verified_in_memory_is_rewritten_not_dropped() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("heal"));
    let dir = tempfile::tempdir().unwrap();
    let node = lone_scrubbing_node(dir.path()).await;
    let store = &node.ctx.objects.store;
    let small = bytes(&mut rng, 3_000);
    let id = store.put(&small, None).unwrap();
    assert!(
        store.cached(&id).is_some(),
        "a small object is kept in memory"
    );
    let (path, _) = rot(store, &id, 1_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.healed() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scrubber's find was not healed (dropped: {})",
            store.corrupt_found()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.corrupt_found(), 0, "nothing dropped");
    assert_eq!(store.size(&id), Some(small.len() as u64), "still held");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        small,
        "the file is whole again"
    );
    node.shutdown().await;
}

/// A copy that rots where nobody reads it is found by the scrubber: read back in the
/// background at its rate, found rotten, dropped and counted, with no client or peer
/// asking for it (a lone node: no peer proves its copies); the good copies beside it stay.
/// Without a scrubber the rot waited for the next read, however long that took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrubber_finds_rot_nobody_reads() {
    logs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed("scrub"));
    let dir = tempfile::tempdir().unwrap();
    let node = lone_scrubbing_node(dir.path()).await;
    let store = &node.ctx.objects.store;
    // A small object and a large one (read past the page cache), each rotten, between
    // good ones.
    let objects: Vec<Vec<u8>> = [3_000, 100_000, 5 << 20, 12_000]
        .iter()
        .map(|&n| bytes(&mut rng, n))
        .collect();
    let ids: Vec<[u8; 32]> = objects
        .iter()
        .map(|o| store.put(o, None).unwrap())
        .collect();
    rot(store, &ids[1], 70_000);
    rot(store, &ids[2], 3 << 20);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.corrupt_found() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scrubber found {} of 2 rotten copies",
            store.corrupt_found()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.size(&ids[1]), None, "dropped");
    assert_eq!(store.size(&ids[2]), None, "dropped");
    for i in [0, 3] {
        let got = store.read_verified(&ids[i], 0, objects[i].len() as u64);
        assert!(got.is_ok_and(|b| b == objects[i]), "a good copy stays");
    }
    // Later passes find nothing more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.corrupt_found(), 2);
    node.shutdown().await;
}
