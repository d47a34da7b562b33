//! `obj-bench`: object latencies and bulk throughput between in-process nodes on loopback
//! (real QUIC, real on-disk stores in temp directories, `--open-writes`), in one run:
//! 1. PUT latency at RF = 3 on a 3-node mesh: sequential PUTs of distinct 4 KiB objects
//!    through node 0's HTTP gateway;
//! 2. GET latency of an object held only on another node (4-node mesh, RF = 1, W = 1),
//!    next to GETs served by the holder's own gateway as the reference;
//! 3. a verified 256 MiB transfer between two nodes (`Objects::fetch_from`), alternated
//!    with a raw quinn bulk stream (rustls + ring, the node's flow-control windows) as the
//!    physical reference, reporting per-round ratios and their median, and the ceiling
//!    this setting allows: raw quinn's CPU plus one BLAKE3 and one copy of the bytes.
//!
//! Run it optimised: `cargo run --release -p testing --bin obj-bench`. Options:
//! `--rounds N` (bulk rounds of each kind, default 2), `--bulk-only` (skip 1. and 2.; the
//! bulk transfer then runs between two fresh nodes), `--put` (instead of all of the above,
//! issue 13's two PUT targets, each against its reference in the same run, rounds
//! alternated: a 256 MiB PUT to a lone node's gateway against `b3sum` of the same file plus
//! one write of it with one fsync; a 1 GiB PUT at RF = 3 / W = 2 on a 3-node mesh, as
//! `PUT /o` and as `PUT /o/{id}` (copies pushed beside the upload), time to 201, against
//! raw quinn moving 1 GiB between two endpoints, with the floor of that ratio: raw quinn's
//! CPU plus the TCP upload, two hashes and two direct writes), `--put-local` (the first of
//! those alone), `--put-declared` (the 1 GiB mesh PUT as `PUT /o/{id}` alone, against raw
//! quinn: the run to profile), `--push` (a write's copy pushed from the store: a 1 GiB
//! `PUT /o` to one of two nodes at RF = 2 / W = 1, timed from its 201 until the other
//! node holds the copy, against raw quinn moving 1 GiB).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use node::app::{self, RunningNode};
use node::config::{ConfigLayer, NodeConfig};
use node::dht::NetPeer;
use node::store::id_string;
use testing::benchkit::{cpu_seconds, loadavg, loopback, median, thread_cpu_seconds};
use wire::object::ByteRange;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SMALL: usize = 4 << 10;
const COUNT: usize = 300;
const BULK: usize = 256 << 20;
const ROUNDS: usize = 2;

/// What the command line asked for.
struct Args {
    rounds: usize,
    bulk_only: bool,
    put: bool,
    /// `--put-local`: the 256 MiB local PUT of `--put` alone, without the 1 GiB mesh PUT.
    put_local: bool,
    /// `--put-declared`: the mesh PUT of `--put` as `PUT /o/{id}` alone.
    put_declared: bool,
    /// `--push`: a copy pushed from the store after its write, against raw quinn.
    push: bool,
}

fn args() -> Result<Args, BoxError> {
    let mut a = Args {
        rounds: ROUNDS,
        bulk_only: false,
        put: false,
        put_local: false,
        put_declared: false,
        push: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().ok_or("--rounds needs a number")?.parse()?,
            "--bulk-only" => a.bulk_only = true,
            "--put" => a.put = true,
            "--put-local" => (a.put, a.put_local) = (true, true),
            "--put-declared" => (a.put, a.put_declared) = (true, true),
            "--push" => a.push = true,
            "-h" | "--help" => {
                println!(
                    "obj-bench [--rounds N] [--bulk-only | --put | --put-local | --put-declared | --push]: see the source's header"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(a)
}

async fn start(
    dir: &std::path::Path,
    i: usize,
    bootstrap: Option<SocketAddr>,
    rf: Option<usize>,
    w: Option<usize>,
) -> RunningNode {
    let layer = ConfigLayer {
        data_dir: Some(dir.join(format!("n{i}"))),
        listen: Some(loopback()),
        http: Some(loopback()),
        bootstrap: bootstrap.map(|b| vec![b.to_string()]),
        open_writes: Some(true),
        rf,
        w,
        ..ConfigLayer::default()
    };
    app::start(NodeConfig::resolve(layer).unwrap(), None)
        .await
        .unwrap()
}

async fn mesh(
    dir: &std::path::Path,
    n: usize,
    rf: Option<usize>,
    w: Option<usize>,
) -> Vec<RunningNode> {
    let first = start(dir, 0, None, rf, w).await;
    let boot = first.ctx.transport.local_addr();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(start(dir, i, Some(boot), rf, w).await);
    }
    for (i, node) in nodes.iter().enumerate() {
        assert!(
            node.ctx.dht.wait_ready(Duration::from_secs(10)).await,
            "node {i} not ready"
        );
    }
    nodes
}

/// One HTTP request on a blocking thread; status and body.
async fn http(
    agent: ureq::Agent,
    method: &'static str,
    url: String,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        let mut resp = match method {
            "PUT" => agent.put(&url).send(&body[..]).unwrap(),
            _ => agent.get(&url).call().unwrap(),
        };
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .unwrap();
        (status, bytes)
    })
    .await
    .unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A distinct 4 KiB body per `(tag, i)`.
fn small(tag: u8, i: usize) -> Vec<u8> {
    let mut v = vec![tag; SMALL];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    for (k, b) in v.iter_mut().enumerate().skip(8) {
        *b = (k as u8).wrapping_mul(31) ^ (i as u8) ^ tag;
    }
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 / p95 / p99 in ms (nearest rank).
fn pct(v: &mut [Duration]) -> (f64, f64, f64) {
    v.sort();
    let at = |p: f64| {
        let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        ms(v[i])
    };
    (at(0.50), at(0.95), at(0.99))
}

fn row(name: &str, (p50, p95, p99): (f64, f64, f64), n: usize) {
    println!("{name:<44} {n:>5} {p50:>9.2} {p95:>9.2} {p99:>9.2}");
}

/// Step 1, PUT latency, RF = 3 (the default), 3 nodes.
async fn put_latency() -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 3, Some(3), None).await;
    let url = format!("http://{}/o", nodes[0].ctx.http);
    let a = agent();
    let mut times = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let body = small(1, i);
        let t = Instant::now();
        let (status, reply) = http(a.clone(), "PUT", url.clone(), body).await;
        times.push(t.elapsed());
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
    }
    for n in nodes {
        n.shutdown().await;
    }
    pct(&mut times)
}

/// Step 2, GET latency, remote (held only elsewhere) and local; RF = 1, W = 1, 4 nodes.
/// Returns the 4-node mesh and its directory for the bulk transfer.
async fn get_latency() -> (
    (f64, f64, f64),
    (f64, f64, f64),
    Vec<RunningNode>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 4, Some(1), Some(1)).await;
    let a = agent();
    let put_url = format!("http://{}/o", nodes[0].ctx.http);
    let mut objs = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let body = small(2, i);
        let hash = *blake3::hash(&body).as_bytes();
        let (status, reply) = http(a.clone(), "PUT", put_url.clone(), body.clone()).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
        objs.push((hash, body));
    }
    // Let replication/release settle so that one node holds each object.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut remote, mut local) = (Vec::new(), Vec::new());
    let mut single = 0;
    for (i, (hash, body)) in objs.iter().enumerate() {
        let held: Vec<usize> = (0..nodes.len())
            .filter(|&k| nodes[k].ctx.objects.store.size(hash).is_some())
            .collect();
        if held.len() == 1 {
            single += 1;
        }
        let Some(&holder) = held.first() else {
            continue;
        };
        // Rotate the reader among the non-holders.
        let others: Vec<usize> = (0..nodes.len()).filter(|k| !held.contains(k)).collect();
        let reader = others[i % others.len()];
        assert!(nodes[reader].ctx.objects.store.size(hash).is_none());
        for (node, out) in [(reader, &mut remote), (holder, &mut local)] {
            let url = format!("http://{}/o/{}", nodes[node].ctx.http, id_string(hash));
            let t = Instant::now();
            let (status, got) = http(a.clone(), "GET", url, vec![]).await;
            out.push(t.elapsed());
            assert_eq!(status, 200);
            assert!(&got == body, "GET served different bytes");
        }
    }
    println!("GET mesh: {single} of {COUNT} objects held by exactly one node");
    (pct(&mut remote), pct(&mut local), nodes, dir)
}

/// One verified `fetch_from` of the whole bulk object, B from A; MiB/s and the CPU
/// seconds the process spent (both nodes). The fetch runs in a task of the runtime, as a
/// node's own fetches do: from `block_on`'s thread, outside the workers, every wake-up
/// between it and the connection's tasks crosses threads (raw quinn ran 20–25 % slower so).
async fn fetch_once(nodes: &[RunningNode], hash: [u8; 32]) -> (f64, f64) {
    let a = NetPeer::new(
        nodes[0].ctx.transport.node_id(),
        nodes[0].ctx.transport.local_addr(),
    );
    let objects = nodes[1].ctx.objects.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let drain = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(piece) = rx.recv().await {
            n += piece.len() as u64;
        }
        n
    });
    let range = ByteRange {
        start: 0,
        len: BULK as u64,
    };
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let fetch = tokio::spawn(async move { objects.fetch_from(&a, hash, range, &tx).await });
    let sent = fetch.await.unwrap().unwrap();
    let got = drain.await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!((sent, got), (BULK as u64, BULK as u64));
    (BULK as f64 / (1 << 20) as f64 / secs, cpu_seconds() - cpu)
}

/// A raw quinn connection with the node's windows (2 MiB stream, 8 MiB connection/send).
async fn quinn_pair() -> Result<
    (
        quinn::Connection,
        quinn::Connection,
        quinn::Endpoint,
        quinn::Endpoint,
    ),
    BoxError,
> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)?;
    server_tls.alpn_protocols = vec![b"bulk".to_vec()];
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window((2u32 << 20).into())
        .receive_window((8u32 << 20).into())
        .send_window(8 << 20)
        // `--put` leaves it idle for minutes between its transfers.
        .keep_alive_interval(Some(Duration::from_secs(5)));
    let transport = Arc::new(transport);
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
    ));
    server_cfg.transport_config(transport.clone());
    let server = quinn::Endpoint::server(server_cfg, loopback())?;
    let server_addr = server.local_addr()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![b"bulk".to_vec()];
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
    ));
    client_cfg.transport_config(transport);
    let mut client = quinn::Endpoint::client(loopback())?;
    client.set_default_client_config(client_cfg);
    // The handshake completes only once the server side accepts: accept concurrently.
    let accept = {
        let server = server.clone();
        tokio::spawn(async move { server.accept().await.unwrap().await.unwrap() })
    };
    let conn = client.connect(server_addr, "localhost")?.await?;
    let server_conn = accept.await?;
    Ok((conn, server_conn, server, client))
}

/// One raw quinn bulk stream of `BULK` bytes, client → server; MiB/s and CPU seconds.
async fn quinn_once(conn: &quinn::Connection, server_conn: &quinn::Connection) -> (f64, f64) {
    quinn_bytes(conn, server_conn, BULK).await
}

/// One raw quinn bulk stream of `size` bytes (whole MiB), client → server; MiB/s and CPU
/// seconds. Both ends run in tasks of the runtime (see [`fetch_once`]).
async fn quinn_bytes(
    conn: &quinn::Connection,
    server_conn: &quinn::Connection,
    size: usize,
) -> (f64, f64) {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut send = conn.open_uni().await.unwrap();
    let writer = tokio::spawn(async move {
        let buf = vec![0x5au8; 1 << 20];
        for _ in 0..size >> 20 {
            send.write_all(&buf).await.unwrap();
        }
        send.finish().unwrap();
        let _ = send.stopped().await;
    });
    let server_conn = server_conn.clone();
    let reader = tokio::spawn(async move {
        let mut recv = server_conn.accept_uni().await.unwrap();
        let mut n = 0usize;
        while let Some(chunk) = recv.read_chunk(1 << 20, true).await.unwrap() {
            n += chunk.bytes.len();
        }
        n
    });
    let n = reader.await.unwrap();
    writer.await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(n, size);
    (size as f64 / (1 << 20) as f64 / secs, cpu_seconds() - cpu)
}

/// The CPU seconds one thread takes to hash `bytes` with BLAKE3, and to copy them once in
/// transfer-sized pieces into a reused buffer (as a holder's read copies them out of the
/// page cache): work a verified transfer adds to raw quinn's, however it is built. Raw
/// quinn's CPU plus these, spent with raw quinn's parallelism, bounds the ratio a verified
/// transfer can reach in the same round.
fn hash_and_copy_cpu(bytes: &[u8]) -> (f64, f64) {
    let start = thread_cpu_seconds();
    std::hint::black_box(blake3::hash(std::hint::black_box(bytes)));
    let hashed = thread_cpu_seconds();
    let mut piece = vec![0u8; 256 << 10];
    for from in bytes.chunks(piece.len()) {
        piece[..from.len()].copy_from_slice(std::hint::black_box(from));
        std::hint::black_box(&mut piece);
    }
    (hashed - start, thread_cpu_seconds() - hashed)
}

/// The CPU seconds a PUT through the gateway adds to a QUIC transfer however it is
/// built, each measured alone on the same machine, by the CPU clocks of the threads doing
/// it: moving `size` bytes over loopback TCP in 1 MiB writes and reads (the client's
/// upload, both ends); one thread hashing them with BLAKE3 (the gateway hashes, and so does
/// the receiver); one thread writing them past the page cache in 1 MiB writes with one
/// fsync, in a file at `scratch` (each of the W copies is written so before the 201),
/// through the cache where the file system refuses direct writes (the store does the
/// same), which the last value says. Raw quinn's CPU plus the upload, two hashes and two
/// writes, spent with raw quinn's parallelism, bounds how soon a PUT can be answered beside
/// raw quinn.
fn put_floor_cpu(size: usize, scratch: &std::path::Path) -> (f64, f64, f64, bool) {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    const MIB: usize = 1 << 20;
    assert_eq!(size % MIB, 0, "whole MiB only");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Connected before either end starts, so a failure panics here rather than leaving
    // the other end waiting; the timeouts end a transfer that stalls.
    let mut to = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut from, _) = listener.accept().unwrap();
    let stall = Some(Duration::from_secs(60));
    to.set_write_timeout(stall).unwrap();
    from.set_read_timeout(stall).unwrap();
    let bytes = vec![0x5au8; size];
    let tcp = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let start = thread_cpu_seconds();
            for piece in bytes.chunks(MIB) {
                to.write_all(piece).unwrap();
            }
            thread_cpu_seconds() - start
        });
        let start = thread_cpu_seconds();
        let (mut buf, mut got) = (vec![0u8; MIB], 0);
        while got < size {
            match from.read(&mut buf).unwrap() {
                0 => panic!("upload ended at {got} of {size}"),
                n => got += n,
            }
        }
        thread_cpu_seconds() - start + sender.join().unwrap()
    });
    let start = thread_cpu_seconds();
    std::hint::black_box(blake3::hash(std::hint::black_box(&bytes)));
    let hashed = thread_cpu_seconds() - start;
    drop(bytes);
    // 1 MiB at a 4 KiB-aligned address, as `O_DIRECT` wants it.
    let block = vec![0x5au8; MIB + 4096];
    let at = block.as_ptr().align_offset(4096);
    let block = &block[at..at + MIB];
    let start = thread_cpu_seconds();
    let open = |flags| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(scratch)
    };
    let (mut file, direct) = match open(nix::libc::O_DIRECT) {
        Ok(file) => (file, true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EINVAL | nix::libc::EOPNOTSUPP)
            ) =>
        {
            (open(0).unwrap(), false)
        }
        Err(e) => panic!("{}: {e}", scratch.display()),
    };
    for _ in 0..size / MIB {
        // A direct write is whole or fails: a short one would leave the next unaligned.
        assert_eq!(file.write(block).unwrap(), MIB, "a short write");
    }
    file.sync_all().unwrap();
    let written = thread_cpu_seconds() - start;
    drop(file);
    std::fs::remove_file(scratch).unwrap();
    (tcp, hashed, written, direct)
}

/// `size` pseudo-random bytes, distinct for each `tag` (so every round's PUT is a new object).
fn bulk_bytes(size: usize, tag: u32) -> Vec<u8> {
    (0..size)
        .map(|i| {
            (i as u32 ^ tag.rotate_left(7))
                .wrapping_mul(2_654_435_761)
                .to_le_bytes()[3]
        })
        .collect()
}

/// One PUT of `body` through `node`'s gateway, timed to its answer; seconds and the process's
/// CPU seconds (every node of the run is in this process).
/// `declared`: `PUT /o/{id}` with the body's id (hashed before the clock starts, as a client
/// that knows its id would), so the copies are pushed beside the upload.
async fn put_timed(node: &RunningNode, body: Vec<u8>, declared: bool) -> (f64, f64) {
    let url = if declared {
        let id = id_string(blake3::hash(&body).as_bytes());
        format!("http://{}/o/{id}", node.ctx.http)
    } else {
        format!("http://{}/o", node.ctx.http)
    };
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let (status, reply) = http(agent(), "PUT", url, body).await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
    (secs, cpu_seconds() - cpu)
}

/// The local PUT's reference: one write of the bytes to a file on the same disk with one
/// fsync, then `b3sum` of that file; seconds for each.
fn write_and_b3sum(path: &std::path::Path, body: &[u8]) -> (f64, f64) {
    use std::io::Write;
    let t = Instant::now();
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(body).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let write = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = std::process::Command::new("b3sum")
        .arg(path)
        .output()
        .expect("b3sum on PATH (scripts/install-test-deps.sh installs it)");
    let hash = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "b3sum failed");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with(&blake3::hash(body).to_hex().to_string()),
        "b3sum printed {printed}"
    );
    (write, hash)
}

/// Figures on one line, `prec` decimals each.
fn shown(v: &[f64], prec: usize) -> String {
    v.iter()
        .map(|r| format!("{r:.prec$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--put`: issue 13 item 4's targets, rounds alternated with their references.
async fn put_targets(rounds: usize, local_only: bool, declared_only: bool) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    if !declared_only {
        local_put(&dir, rounds).await;
    }
    if local_only {
        return Ok(());
    }
    mesh_put(&dir, rounds, declared_only).await
}

/// `--put`'s first target: a 256 MiB PUT to a lone node (RF = 1, W = 1) against write +
/// fsync + b3sum.
async fn local_put(dir: &tempfile::TempDir, rounds: usize) {
    const LOCAL: usize = 256 << 20;
    // A lone node is never "ready" (it has no peer), and needs not be to store.
    let lone = vec![start(&dir.path().join("lone"), 0, None, Some(1), Some(1)).await];
    let (mut put, mut reference, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let body = bulk_bytes(LOCAL, round as u32);
        let (write, hash) = write_and_b3sum(&dir.path().join("ref.bin"), &body);
        let (secs, _) = put_timed(&lone[0], body, false).await;
        put.push(secs);
        reference.push(write + hash);
        ratio.push((write + hash) / secs);
        println!(
            "  local round {round}: PUT {secs:.3} s; write+fsync {write:.3} s + b3sum {hash:.3} s"
        );
    }
    for n in lone {
        n.shutdown().await;
    }
    println!("256 MiB PUT, lone node, against one write + fsync + b3sum of the same bytes");
    println!("  PUT s:               {}", shown(&put, 2));
    println!("  write+b3sum s:       {}", shown(&reference, 2));
    println!(
        "  reference/PUT:       {} (median {:.2}; target >= 0.90)",
        shown(&ratio, 2),
        median(&mut ratio.clone())
    );
}

/// `--put`'s second target: a 1 GiB PUT at RF = 3 / W = 2, 3 nodes, against raw quinn
/// moving 1 GiB; `PUT /o/{id}` alone if `declared_only`.
async fn mesh_put(
    dir: &tempfile::TempDir,
    rounds: usize,
    declared_only: bool,
) -> Result<(), BoxError> {
    const MESH: usize = 1 << 30;
    let nodes = mesh(&dir.path().join("mesh"), 3, Some(3), Some(2)).await;
    let (conn, server_conn, _server, _client) = quinn_pair().await?;
    // Per round: `PUT /o`, then `PUT /o/{id}` (copies pushed beside the upload), then
    // raw quinn; each ratio is against the same round's raw quinn.
    let mut raw = Vec::new();
    // Per kind: its name, then seconds, the ratio to raw quinn and the CPU ratio per round.
    type Kind = (&'static str, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut kinds: Vec<Kind> = vec![
        ("PUT /o", Vec::new(), Vec::new(), Vec::new()),
        ("PUT /o/{id}", Vec::new(), Vec::new(), Vec::new()),
    ];
    if declared_only {
        kinds.remove(0);
    }
    let mut cpu_raws = Vec::new();
    let mut first = true;
    for round in 0..rounds {
        let mut secs_cpu = Vec::new();
        for (k, _) in kinds.iter().enumerate() {
            if !first {
                // Each receiver takes 1 GiB of replicas from a peer at once, then 64 MiB/s
                // (overlay's `accept_bytes_per_second`): wait for node 0's budget to refill.
                tokio::time::sleep(Duration::from_secs(17)).await;
            }
            first = false;
            let body = bulk_bytes(MESH, 1000 + (2 * round + k) as u32);
            let hash = *blake3::hash(&body).as_bytes();
            secs_cpu.push(put_timed(&nodes[0], body, k + usize::from(declared_only) == 1).await);
            // The copies past W go on after the 201: let them end before the next
            // measurement, which they would otherwise slow.
            let settled = Instant::now();
            while nodes
                .iter()
                .any(|n| n.ctx.objects.store.size(&hash).is_none())
            {
                assert!(settled.elapsed() < Duration::from_secs(120), "RF copies");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let (mib_s, cpu_raw) = quinn_bytes(&conn, &server_conn, MESH).await;
        let raw_secs = (MESH >> 20) as f64 / mib_s;
        raw.push(raw_secs);
        cpu_raws.push(cpu_raw);
        for ((name, put, ratio, cpu), (secs, cpu_put)) in kinds.iter_mut().zip(secs_cpu) {
            put.push(secs);
            ratio.push(secs / raw_secs);
            cpu.push(cpu_put / cpu_raw);
            println!(
                "  mesh round {round}: {name} to 201 {secs:.3} s ({cpu_put:.2} CPU s); raw quinn {raw_secs:.3} s ({cpu_raw:.2} CPU s)"
            );
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
    // Measured once, after the last round: its gigabyte written to the disk would
    // otherwise come just before the next round's PUT.
    let scratch = dir.path().join("floor");
    let (tcp, hashed, written, direct) =
        tokio::task::spawn_blocking(move || put_floor_cpu(MESH, &scratch)).await?;
    let added = tcp + 2.0 * (hashed + written);
    let floors: Vec<f64> = cpu_raws.iter().map(|&c| (c + added) / c).collect();
    println!("1 GiB PUT, RF = 3 / W = 2, 3 nodes, time to 201, against raw quinn 1 GiB");
    println!("  raw quinn s:         {}", shown(&raw, 2));
    println!("  raw quinn CPU s:     {}", shown(&cpu_raws, 2));
    println!(
        "  added work, CPU s:   TCP upload {tcp:.2} + BLAKE3 twice {:.2} + {} write twice {:.2}",
        2.0 * hashed,
        if direct { "direct" } else { "cached" },
        2.0 * written
    );
    println!(
        "  floor PUT/raw:       {} (median {:.2}): raw quinn's CPU plus that, at raw quinn's parallelism",
        shown(&floors, 2),
        median(&mut floors.clone())
    );
    for (name, put, ratio, cpu) in &kinds {
        println!("  {name}");
        println!("    PUT s:             {}", shown(put, 2));
        println!(
            "    PUT/raw per round: {} (median {:.2}; target <= 1.5)",
            shown(ratio, 2),
            median(&mut ratio.clone())
        );
        println!(
            "    CPU PUT/raw:       {} (median {:.2})",
            shown(cpu, 2),
            median(&mut cpu.clone())
        );
    }
    Ok(())
}

/// `--push`: a 1 GiB `PUT /o` to node 0 of two (RF = 2, W = 1), answered once its own
/// copy is durable; then the copy node 0 pushes from its store (read back from the disk,
/// verified, sent) is timed until node 1 holds it, against raw quinn moving 1 GiB.
async fn push_target(rounds: usize) -> Result<(), BoxError> {
    const SIZE: usize = 1 << 30;
    let dir = tempfile::tempdir()?;
    let nodes = mesh(dir.path(), 2, Some(2), Some(1)).await;
    let (conn, server_conn, _server, _client) = quinn_pair().await?;
    let (mut push, mut raw, mut ratio, mut cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        if round > 0 {
            // Node 1 took 1 GiB of copies from node 0: let its budget for node 0 refill.
            tokio::time::sleep(Duration::from_secs(17)).await;
        }
        let body = bulk_bytes(SIZE, 2000 + round as u32);
        let hash = *blake3::hash(&body).as_bytes();
        put_timed(&nodes[0], body, false).await;
        let (t, before) = (Instant::now(), cpu_seconds());
        while nodes[1].ctx.objects.store.size(&hash).is_none() {
            assert!(t.elapsed() < Duration::from_secs(120), "the pushed copy");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (secs, cpu_push) = (t.elapsed().as_secs_f64(), cpu_seconds() - before);
        let (mib_s, cpu_raw) = quinn_bytes(&conn, &server_conn, SIZE).await;
        let raw_secs = (SIZE >> 20) as f64 / mib_s;
        println!(
            "  round {round}: push {secs:.3} s ({cpu_push:.2} CPU s); raw quinn {raw_secs:.3} s ({cpu_raw:.2} CPU s)"
        );
        push.push(secs);
        raw.push(raw_secs);
        ratio.push(secs / raw_secs);
        cpu.push(cpu_push / cpu_raw);
    }
    for n in nodes {
        n.shutdown().await;
    }
    println!(
        "1 GiB copy pushed from the store (from the 201 to the copy held), against raw quinn 1 GiB"
    );
    println!("  push s:              {}", shown(&push, 2));
    println!("  raw quinn s:         {}", shown(&raw, 2));
    println!(
        "  push/raw per round:  {} (median {:.2})",
        shown(&ratio, 2),
        median(&mut ratio.clone())
    );
    println!(
        "  CPU push/raw:        {} (median {:.2})",
        shown(&cpu, 2),
        median(&mut cpu.clone())
    );
    Ok(())
}

async fn run(args: Args) -> Result<(), BoxError> {
    println!("obj-bench: load avg {} at start", loadavg());
    if args.push {
        push_target(args.rounds).await?;
        println!("obj-bench: load avg {} at end", loadavg());
        return Ok(());
    }
    if args.put {
        put_targets(args.rounds, args.put_local, args.put_declared).await?;
        println!("obj-bench: load avg {} at end", loadavg());
        return Ok(());
    }
    let (latencies, nodes, _dir) = if args.bulk_only {
        let dir = tempfile::tempdir()?;
        let nodes = mesh(dir.path(), 2, Some(1), Some(1)).await;
        (None, nodes, dir)
    } else {
        let put = put_latency().await;
        let (remote, local, nodes, dir) = get_latency().await;
        (Some((put, remote, local)), nodes, dir)
    };

    // 3. Bulk: a 256 MiB object stored on node 0 only (directly, no replication), fetched
    // verified by node 1; raw quinn in the same process as the reference.
    let bulk: Vec<u8> = (0..BULK)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let hash = nodes[0].ctx.objects.store.put(&bulk, None)?;
    let bulk = Arc::new(bulk);
    let (conn, server_conn, _server, _client) = quinn_pair().await?;
    let (mut fa, mut qb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_a, mut cpu_b, mut cpu_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut added, mut ceilings) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let (a, ca) = fetch_once(&nodes, hash).await;
        let (b, cb) = quinn_once(&conn, &server_conn).await;
        let bytes = bulk.clone();
        let (hashed, copied) = tokio::task::spawn_blocking(move || hash_and_copy_cpu(&bytes))
            .await
            .unwrap();
        fa.push(a);
        qb.push(b);
        ratios.push(a / b);
        cpu_a.push(ca * 1000.0);
        cpu_b.push(cb * 1000.0);
        cpu_ratios.push(ca / cb);
        added.push(format!("{:.0}+{:.0}", hashed * 1000.0, copied * 1000.0));
        ceilings.push(cb / (cb + hashed + copied));
    }

    if let Some((put, remote, local)) = latencies {
        println!();
        println!(
            "{:<44} {:>5} {:>9} {:>9} {:>9}",
            "latency (ms)", "n", "p50", "p95", "p99"
        );
        row("PUT 4 KiB, RF=3, 3 nodes (gateway node 0)", put, COUNT);
        row("GET 4 KiB, remote (RF=1, W=1, 4 nodes)", remote, COUNT);
        row("GET 4 KiB, local (holder's gateway)", local, COUNT);
    }
    println!();
    println!("256 MiB transfer, rounds alternate A (fetch_from, verified), B (raw quinn)");
    println!("  A fetch_from MiB/s:  {}", shown(&fa, 0));
    println!("  B raw quinn MiB/s:   {}", shown(&qb, 0));
    println!("  A/B per round:       {}", shown(&ratios, 2));
    println!(
        "  median: A {:.0} MiB/s, B {:.0} MiB/s, ratio {:.2} (target >= 0.90, floor 0.80)",
        median(&mut fa),
        median(&mut qb),
        median(&mut ratios)
    );
    println!("  CPU ms (both ends), A: {}", shown(&cpu_a, 0));
    println!("  CPU ms (both ends), B: {}", shown(&cpu_b, 0));
    println!(
        "  CPU A/B per round:   {} (median {:.2})",
        shown(&cpu_ratios, 2),
        median(&mut cpu_ratios.clone())
    );
    println!(
        "  BLAKE3 + one copy, CPU ms: {} (one thread, the same bytes)",
        added.join(" ")
    );
    println!(
        "  ceiling A/B per round: {} (median {:.2}): B's CPU plus those, at B's parallelism",
        shown(&ceilings, 2),
        median(&mut ceilings.clone())
    );
    println!("obj-bench: load avg {} at end", loadavg());
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}
