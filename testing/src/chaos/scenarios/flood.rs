//! Handshake flood: 2,000 QUIC connections from 2,000 fresh keys, opened in one burst
//! against node 0 of a 3-node mesh, each completing TLS and HELLO (the most a stranger can
//! get without being asked anything) and held for 20 s (the idle timeout is 30 s), while
//! the mesh goes on working:
//!
//! - node 1 runs DHT lookups (its RPCs reach node 0 over the connection it already has)
//!   and clients GET an object through node 0's gateway, every 250 ms;
//! - node 2, killed before the flood, restarts 1 s into it and must rejoin through node 0,
//!   its only bootstrap peer: a peer that needs a *new* connection during the flood.
//!
//! Goals: >= 99 % of those operations succeed; node 2 ready within 5 s (the restart bound
//! of the kill loop); the flood visible in node 0's metrics (a counter of accepted, refused
//! or failed handshakes that moved); node 0's peak RSS growth under 128 MiB; node up, no
//! crash.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Opts, secs};
use crate::HarnessError;
use crate::chaos::client::{self, Outcome};
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report};
use crate::chaos::hostile::endpoint;
use crate::chaos::load::{GET_TIMEOUT, Ledger, Tally};
use crate::chaos::procfs;

const FLOOD: usize = 2000;
const HOLD: Duration = Duration::from_secs(20);
const REJOIN_MAX: Duration = Duration::from_secs(5);
const RSS_GROWTH_MAX: u64 = 128 << 20;

/// Counters of the flood, client side.
#[derive(Debug, Default)]
struct FloodCount {
    connected: AtomicU64,
    hello: AtomicU64,
    failed: AtomicU64,
    errors: std::sync::Mutex<BTreeMap<String, u64>>,
}

/// All counter and gauge samples of a `/metrics` text.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn flood(quic: SocketAddr, id: wire::NodeId, seed: crate::chaos::Seed, count: Arc<FloodCount>) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        count.failed.fetch_add(FLOOD as u64, Ordering::Relaxed);
        return;
    };
    rt.block_on(async move {
        let mut tasks = Vec::with_capacity(FLOOD);
        for k in 0..FLOOD {
            let count = count.clone();
            let key = *blake3::hash(&seed.derive(&format!("flood-{k}")).to_le_bytes()).as_bytes();
            tasks.push(tokio::spawn(async move {
                let fail = |why: String| {
                    count.failed.fetch_add(1, Ordering::Relaxed);
                    let short: String = why.chars().take(60).collect();
                    if let Ok(mut e) = count.errors.lock() {
                        *e.entry(short).or_insert(0) += 1;
                    }
                };
                let t = match endpoint(key) {
                    Ok(t) => t,
                    Err(e) => return fail(e.to_string()),
                };
                match t.dial_raw(quic, Some(id)).await {
                    Err(e) => fail(e.to_string()),
                    Ok(conn) => {
                        count.connected.fetch_add(1, Ordering::Relaxed);
                        match t.raw_hello(&conn).await {
                            Ok(_) => {
                                count.hello.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => fail(format!("HELLO: {e}")),
                        }
                        tokio::time::sleep(HOLD).await;
                        conn.close(0u32.into(), b"");
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), t.close()).await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// Runs the flood.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let mut spec = ClusterSpec::new("flood", 3, 3, NetKind::Loopback, o.seed);
    spec.liveness = Some(Duration::from_secs(1));
    let mut c = Cluster::start(spec)?;
    let ledger = Ledger::new(o.seed);
    let obj = ledger
        .put(c.http(1), 1, c.token(), 1, 256 << 10, 2)
        .1
        .ok_or_else(|| HarnessError::Unexpected {
            what: "the PUT before the flood".into(),
            why: ledger.puts.examples().join("; "),
        })?;
    c.kill(2)?;
    // Node 0 must stay node 2's only way back in: without this, node 2 would rejoin through
    // the contacts it saved (node 1 among them), round the flood.
    let saved = c.nodes[2]
        .data_dir()
        .join(node::dht::contacts::CONTACTS_FILE);
    if let Err(e) = std::fs::remove_file(&saved) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(HarnessError::io(format!("removing {}", saved.display()))(e));
        }
    }
    let quic = c.nodes[0].quic();
    let id = c.ids()[0];
    let pid = c.pid(0);
    let before = samples(&c.nodes[0].get("/metrics")?.body);
    let rss0 = procfs::rss_bytes(pid)?;
    let reset = procfs::reset_peak(pid);

    let count = Arc::new(FloodCount::default());
    let started = Instant::now();
    let flooding = {
        let (count, seed) = (count.clone(), o.seed);
        std::thread::spawn(move || flood(quic, id, seed, count))
    };
    let ops = Tally::default();
    let mut peak_conns = 0.0f64;
    std::thread::sleep(Duration::from_secs(1));
    c.nodes[2].restart()?;
    let restarted = Instant::now();
    let mut rejoin: Option<Duration> = None;
    let mut keys = o.seed.rng("flood-lookups");
    let admin1 = c.admin(1)?;
    while !flooding.is_finished()
        || rejoin.is_none() && restarted.elapsed() < Duration::from_secs(60)
    {
        let key: [u8; 32] = rand::Rng::r#gen(&mut keys);
        let t = client::get(
            admin1,
            &format!("/v1/lookup/{}", hex::encode(key)),
            Duration::from_secs(20),
        );
        let good = matches!(&t.outcome, Outcome::Answered(a) if a.status == 200);
        ops.record(&t, good, false, "lookup via node 1");
        ledger.get(c.http(0), &obj, GET_TIMEOUT);
        if rejoin.is_none() && c.nodes[2].readiness().is_ok_and(|m| m.is_none()) {
            rejoin = Some(restarted.elapsed());
            println!("chaos: node 2 ready {:?} into the flood", rejoin);
        }
        if let Ok(Some(n)) = c.nodes[0].metric("transport_connections") {
            peak_conns = peak_conns.max(n);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = flooding.join();
    let flood_took = started.elapsed();
    let peak = procfs::peak_rss_bytes(pid)?;
    let after = samples(&c.nodes[0].get("/metrics")?.body);
    let mut moved: Vec<(String, f64)> = after
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            (k.contains("handshake") || k.contains("connection") || k.contains("refused"))
                && k.contains("total")
        })
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    moved.sort_by(|a, b| b.1.total_cmp(&a.1));
    let up = c.nodes[0].get("/healthz").is_ok_and(|r| r.status == 200);

    let mut r = Report::new("handshake-flood", o.seed.0, o.long);
    let get_ok = ledger.gets.oks();
    let total = ops.total() + ledger.gets.total();
    let ok = ops.oks() + get_ok;
    r.goal(
        "peer_ops_ok",
        100.0 * ok as f64 / total.max(1) as f64,
        "%",
        Goal::AtLeast(99.0),
    );
    r.goal(
        "peer_rejoin",
        rejoin.map_or(f64::INFINITY, secs),
        "s",
        Goal::AtMost(secs(REJOIN_MAX)),
    );
    r.yes("flood_counted", !moved.is_empty());
    let growth = peak.saturating_sub(rss0);
    r.mib_at_most("peak_rss_growth", growth, RSS_GROWTH_MAX);
    r.yes("node_up", up);
    let crashed = c.crashed();
    r.zero("crashes", crashed.len() as u64);
    r.info("handshakes", FLOOD as f64, "");
    r.info(
        "connected",
        count.connected.load(Ordering::Relaxed) as f64,
        "",
    );
    r.info("hello_done", count.hello.load(Ordering::Relaxed) as f64, "");
    r.info("peak_connections", peak_conns, "");
    r.info("flood_wall", secs(flood_took), "s");
    r.note(format!(
        "flood client errors: {:?}",
        count.errors.lock().map(|e| e.clone()).unwrap_or_default()
    ));
    r.note(format!("metrics that moved on node 0: {moved:?}"));
    r.note(format!(
        "lookups {:?}, GETs {:?} during the flood; RSS {} MiB before, peak {} MiB (reset {reset})",
        ops.statuses(),
        ledger.gets.statuses(),
        rss0 >> 20,
        peak >> 20
    ));
    for e in ops.examples().iter().chain(ledger.gets.examples().iter()) {
        r.note(e.clone());
    }
    if ledger.gets.total() > 0 && get_ok < ledger.gets.total() {
        r.note(format!(
            "{} of {} GETs failed",
            ledger.gets.total() - get_ok,
            ledger.gets.total()
        ));
    }
    Ok(r)
}
