//! Quota storm: 1,000 tenants, each trying to write ten times its quota, beside honest
//! tenants, on a 2-node mesh (RF 2) with both nodes as gateways.
//!
//! Every tenant has its own token (minted here with the cluster's capability key) whose
//! tenant caveat carries its quota. The parties, all at once:
//! - **storm**: 1,000 tenants with a quota of 32 KiB in bytes (and a rate that does not
//!   bind), each PUTting 8..32 KiB objects until it has tried >= 10x its quota, through its
//!   gateway (tenant `i` through node `i % 2`), in a seeded order shared by 24 clients, so
//!   one tenant's writes also race each other;
//! - **cross**: 10 of them write through both gateways, alternately (the mesh-wide
//!   figure: a node keeps its own accounts);
//! - **rate**: 10 tenants with a rate of 16 KiB/s (and bytes that do not bind) PUT 4..16 KiB
//!   every 20 ms, about 30x their rate;
//! - **honest**: 8 tenants well inside their quotas PUT 1..32 KiB objects back to back.
//!
//! Then replica pushes (OAP/1, the tenant's token as the capability) straight to a node:
//! from 20 storm tenants that are full there (each must be refused, `push_over_quota`),
//! and from 10 fresh tenants trying 10x their quota (accepted bytes within it).
//!
//! Judged on what the clients were told (every 201) and on the nodes' own accounts
//! (`tenants.json`, saved every 5 s). Goals: honest success >= 99.9 %; no tenant over its
//! quota by more than 1 % on any node (bytes; for rate tenants, bytes against rate x
//! (window + 1 s) + one object, the bucket's depth and overdraw), nor across the mesh (the
//! cross tenants: defect D6); every storm or rate write refused for its quota answered 429
//! `quota_exceeded` with a `Retry-After`; full tenants' pushes refused, fresh ones within
//! their quota; no fast 503 (defect D4, counted apart from the honest figure); no crash.
//! The storm takes about 10 s, so the short version is the whole of it (`--long` is the
//! same run).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::SliceRandom;

use super::{Opts, joined, secs};
use crate::HarnessError;
use crate::chaos::client::{self, Outcome, Timed};
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report, quantile};
use crate::chaos::hostile::{RawAnswer, RawPeer, push_with_token};
use crate::chaos::load::put_timeout;
use crate::chaos::seed::object_bytes;
use node::caps::{Caveat, TenantQuota, Token};
use wire::Status;

/// A storm tenant's quota in bytes.
const STORM_QUOTA: u64 = 32 << 10;
/// How far over its quota each storm tenant tries to write.
const OVER: u64 = 10;
/// Storm tenants writing through both gateways.
const CROSS: usize = 10;
/// Rate tenants and their rate.
const RATE_TENANTS: usize = 10;
const RATE: u64 = 16 << 10;
/// Honest tenants (one client each).
const HONEST: usize = 8;
/// Clients sharing the storm's requests.
const STORM_CLIENTS: usize = 24;
/// A rate, or a byte quota, that never binds.
const AMPLE: u64 = 1 << 40;
/// Allowed excess over a quota, in percent.
const OVER_MAX_PCT: f64 = 1.0;
/// The nodes save their accounts this often (node `QUOTA_SAVE_EVERY`), plus a margin.
const SAVE_WAIT: Duration = Duration::from_secs(6);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Storm,
    Cross,
    Rate,
    Honest,
    Push,
}

#[derive(Debug, Clone)]
struct Tenant {
    name: String,
    token: String,
    bytes_max: u64,
    rate: u64,
    kind: Kind,
}

/// One PUT of a tenant through a gateway.
#[derive(Debug, Clone, Copy)]
struct Req {
    tenant: usize,
    index: u64,
    size: usize,
    via: usize,
}

/// A finished PUT.
#[derive(Debug, Clone)]
struct Done {
    req: Req,
    status: Option<u16>,
    /// 429 with `code` `quota_exceeded` and a `Retry-After` of at least 1 s.
    quota_refusal: bool,
    /// A 503 `insufficient_replicas` within a second: defect D4 (RELIABILITY.md), not a
    /// quota decision (the write was accepted and charged).
    fast_503: bool,
    took: Duration,
    at: Duration,
    what: String,
}

fn tenant(
    root: &[u8; 32],
    o: &Opts,
    name: String,
    bytes_max: u64,
    rate: u64,
    kind: Kind,
) -> Tenant {
    let salt = o.seed.derive(&format!("nonce {name}")).to_le_bytes();
    let token = Token::mint(
        root,
        node::caps::tenant_nonce(root, salt, &name),
        vec![
            Caveat::Methods(vec!["PUT".into()]),
            Caveat::Tenant(TenantQuota {
                name: name.clone(),
                bytes_max,
                bytes_per_second: rate,
            }),
        ],
    )
    .encode();
    Tenant {
        name,
        token,
        bytes_max,
        rate,
        kind,
    }
}

fn tenants(root: &[u8; 32], o: &Opts, storm: usize) -> Vec<Tenant> {
    let mut v = Vec::new();
    for i in 0..storm {
        let kind = if i < CROSS { Kind::Cross } else { Kind::Storm };
        v.push(tenant(
            root,
            o,
            format!("storm-{i:04}"),
            STORM_QUOTA,
            AMPLE,
            kind,
        ));
    }
    for i in 0..RATE_TENANTS {
        v.push(tenant(
            root,
            o,
            format!("rate-{i}"),
            AMPLE,
            RATE,
            Kind::Rate,
        ));
    }
    for i in 0..HONEST {
        v.push(tenant(
            root,
            o,
            format!("honest-{i}"),
            AMPLE,
            AMPLE,
            Kind::Honest,
        ));
    }
    for i in 0..10 {
        v.push(tenant(
            root,
            o,
            format!("push-{i}"),
            STORM_QUOTA,
            AMPLE,
            Kind::Push,
        ));
    }
    v
}

/// The storm's requests: each storm tenant's writes until it has tried `OVER` times its
/// quota, all tenants' shuffled together.
fn storm_requests(ts: &[Tenant], o: &Opts) -> VecDeque<Req> {
    let mut rng = o.seed.rng("quota-storm sizes");
    let mut v = Vec::new();
    let mut index = 1_000_000u64;
    for (t, x) in ts.iter().enumerate() {
        if !matches!(x.kind, Kind::Storm | Kind::Cross) {
            continue;
        }
        let (mut tried, mut k) = (0u64, 0usize);
        while tried < OVER * x.bytes_max {
            let size = rng.gen_range((x.bytes_max / 4) as usize..=x.bytes_max as usize);
            let via = if x.kind == Kind::Cross { k % 2 } else { t % 2 };
            v.push(Req {
                tenant: t,
                index,
                size,
                via,
            });
            tried += size as u64;
            index += 1;
            k += 1;
        }
    }
    v.shuffle(&mut rng);
    v.into()
}

/// The shared state of the clients.
struct Run {
    c_http: [std::net::SocketAddr; 2],
    tenants: Vec<Tenant>,
    seed: crate::chaos::Seed,
    started: Instant,
    done: Mutex<Vec<Done>>,
    stop: AtomicBool,
}

impl Run {
    fn put(&self, req: Req) {
        let t = &self.tenants[req.tenant];
        let body = object_bytes(self.seed, req.index, req.size);
        let timed = client::put(
            self.c_http[req.via],
            Some(&t.token),
            &body,
            put_timeout(req.size),
        );
        self.record(req, &timed);
    }

    fn record(&self, req: Req, timed: &Timed) {
        let quota_refusal = match &timed.outcome {
            Outcome::Answered(a) => {
                a.status == 429
                    && a.json()["code"] == "quota_exceeded"
                    && a.header("retry-after")
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some_and(|s| s >= 1)
            }
            _ => false,
        };
        let fast_503 = matches!(&timed.outcome, Outcome::Answered(a)
            if a.status == 503 && a.json()["code"] == "insufficient_replicas")
            && timed.took < Duration::from_secs(1);
        let d = Done {
            req,
            status: timed.outcome.status(),
            quota_refusal,
            fast_503,
            took: timed.took,
            at: self.started.elapsed(),
            what: timed.outcome.describe(),
        };
        self.done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(d);
    }
}

fn spawn_storm(run: &Arc<Run>, queue: VecDeque<Req>) -> Vec<std::thread::JoinHandle<()>> {
    let queue = Arc::new(Mutex::new(queue));
    (0..STORM_CLIENTS)
        .map(|_| {
            let (run, queue) = (run.clone(), queue.clone());
            std::thread::spawn(move || {
                loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop_front();
                    match next {
                        Some(req) => run.put(req),
                        None => return,
                    }
                }
            })
        })
        .collect()
}

/// Rate and honest tenants: one client each, until the storm is over.
fn spawn_steady(run: &Arc<Run>) -> Vec<std::thread::JoinHandle<()>> {
    let steady: Vec<usize> = (0..run.tenants.len())
        .filter(|&t| matches!(run.tenants[t].kind, Kind::Rate | Kind::Honest))
        .collect();
    steady
        .into_iter()
        .map(|t| {
            let run = run.clone();
            std::thread::spawn(move || {
                let kind = run.tenants[t].kind;
                let mut rng = run
                    .seed
                    .rng(&format!("quota-storm {}", run.tenants[t].name));
                let mut index = 2_000_000 + 100_000 * t as u64;
                while !run.stop.load(Ordering::Relaxed) {
                    let (size, pause) = match kind {
                        Kind::Rate => (rng.gen_range(4096..=16384), Duration::from_millis(20)),
                        _ => (rng.gen_range(1024..=32768), Duration::ZERO),
                    };
                    let via = t % 2;
                    run.put(Req {
                        tenant: t,
                        index,
                        size,
                        via,
                    });
                    index += 1;
                    std::thread::sleep(pause);
                }
            })
        })
        .collect()
}

/// Bytes acknowledged (201) per (tenant, gateway), and in all per tenant.
fn acked_bytes(done: &[Done]) -> (BTreeMap<(usize, usize), u64>, BTreeMap<usize, u64>) {
    let (mut per_node, mut all) = (BTreeMap::new(), BTreeMap::new());
    for d in done.iter().filter(|d| d.status == Some(201)) {
        *per_node.entry((d.req.tenant, d.req.via)).or_insert(0) += d.req.size as u64;
        *all.entry(d.req.tenant).or_insert(0) += d.req.size as u64;
    }
    (per_node, all)
}

/// Each node's accounts from its `tenants.json`: tenant name -> bytes used.
fn accounts(c: &Cluster, i: usize) -> Result<BTreeMap<String, u64>, HarnessError> {
    let path = c.nodes[i].data_dir().join("tenants.json");
    let bytes = std::fs::read(&path).map_err(HarnessError::io(format!("{}", path.display())))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| HarnessError::Unexpected {
            what: path.display().to_string(),
            why: e.to_string(),
        })?;
    Ok(v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, a)| (k.clone(), a["used"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default())
}

fn over_pct(used: u64, allowed: f64) -> f64 {
    100.0 * (used as f64 - allowed) / allowed.max(1.0)
}

/// The figure `name`: the most any of `pcts` (percent over an allowance) is over; at most
/// [`OVER_MAX_PCT`].
fn over_goal(r: &mut Report, name: &str, pcts: impl Iterator<Item = f64>) {
    let worst = pcts.fold(f64::NEG_INFINITY, f64::max);
    r.goal(name, worst, "%", Goal::AtMost(OVER_MAX_PCT));
}

/// Replica pushes with tenants' tokens, straight to node `to`: `(full tenants' pushes
/// refused as 429, of how many, fresh tenants' bytes accepted per tenant)`.
fn pushes(
    c: &Cluster,
    ts: &[Tenant],
    full: &[usize],
    o: &Opts,
) -> Result<(usize, usize, BTreeMap<usize, u64>), HarnessError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(HarnessError::io("a tokio runtime"))?;
    let mut rng = o.seed.rng("quota-storm pushes");
    let key = *blake3::hash(&o.seed.derive("quota-storm pusher").to_le_bytes()).as_bytes();
    let wait = Duration::from_secs(10);
    let mut index = 3_000_000u64;
    rt.block_on(async {
        let mut refused = 0;
        let mut tried = 0;
        let mut accepted: BTreeMap<usize, u64> = BTreeMap::new();
        let mut peers = Vec::new();
        for i in 0..2 {
            peers.push(RawPeer::connect(c.nodes[i].quic(), Some(c.ids()[i]), key, true).await?);
        }
        // Full tenants push to the node they wrote through.
        for &t in full {
            let body = object_bytes(o.seed, index, (STORM_QUOTA / 4) as usize);
            index += 1;
            let frames = push_with_token(&ts[t].token, body.into());
            let a = peers[t % 2].exchange(&frames, wait).await;
            tried += 1;
            refused += usize::from(a == RawAnswer::Status(Status::TooManyRequests));
        }
        // Fresh tenants push 10x their quota to node 0.
        for (t, x) in ts.iter().enumerate().filter(|(_, x)| x.kind == Kind::Push) {
            let mut sent = 0u64;
            while sent < OVER * x.bytes_max {
                let size = rng.gen_range((x.bytes_max / 4) as usize..=x.bytes_max as usize);
                let body = object_bytes(o.seed, index, size);
                index += 1;
                let a = peers[0]
                    .exchange(&push_with_token(&x.token, body.into()), wait)
                    .await;
                if a == RawAnswer::Status(Status::Ok) {
                    *accepted.entry(t).or_insert(0) += size as u64;
                }
                sent += size as u64;
            }
        }
        for p in peers {
            p.close().await;
        }
        Ok((refused, tried, accepted))
    })
}

/// Runs the storm.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let storm_n = 1000;
    let mut spec = ClusterSpec::new("quota-storm", 2, 2, NetKind::Loopback, o.seed);
    spec.w = Some(2);
    let mut c = Cluster::start(spec)?;
    let ts = tenants(&c.cap_root(), o, storm_n);
    let queue = storm_requests(&ts, o);
    let storm_reqs = queue.len();
    println!(
        "chaos: {} tenants ({storm_n} storm), {storm_reqs} storm PUTs",
        ts.len()
    );
    let run = Arc::new(Run {
        c_http: [c.http(0), c.http(1)],
        tenants: ts.clone(),
        seed: o.seed,
        started: Instant::now(),
        done: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let steady = spawn_steady(&run);
    for h in spawn_storm(&run, queue) {
        joined(h.join(), "a storm client")?;
    }
    run.stop.store(true, Ordering::Relaxed);
    for h in steady {
        joined(h.join(), "a steady client")?;
    }
    let wall = run.started.elapsed();
    let done = std::mem::take(
        &mut *run
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let (per_node, all) = acked_bytes(&done);
    // Storm tenants that filled their quota on their gateway, for the pushes.
    let full: Vec<usize> = (CROSS..storm_n)
        .filter(|&t| per_node.get(&(t, t % 2)).copied().unwrap_or(0) > STORM_QUOTA * 3 / 4)
        .take(20)
        .collect();
    let (push_refused, push_tried, push_accepted) = pushes(&c, &ts, &full, o)?;
    std::thread::sleep(SAVE_WAIT);
    let books = [accounts(&c, 0)?, accounts(&c, 1)?];

    let mut r = Report::new("quota-storm", o.seed.0, o.long);
    judge(&mut r, &ts, &done, &per_node, &all, &books, wall);
    r.goal(
        "full_pushes_refused",
        push_refused as f64,
        "",
        Goal::AtLeast(push_tried.max(1) as f64),
    );
    let push_over = push_accepted
        .values()
        .map(|&b| over_pct(b, STORM_QUOTA as f64));
    over_goal(&mut r, "push_over_quota_max", push_over);
    r.zero("crashes", c.crashed().len() as u64);
    r.info("tenants", ts.len() as f64, "");
    r.info("storm_puts", storm_reqs as f64, "");
    r.info("wall", secs(wall), "s");
    r.note(super::push_refusals(&c));
    Ok(r)
}

/// The figures of the HTTP writes.
fn judge(
    r: &mut Report,
    ts: &[Tenant],
    done: &[Done],
    per_node: &BTreeMap<(usize, usize), u64>,
    all: &BTreeMap<usize, u64>,
    books: &[BTreeMap<String, u64>; 2],
    wall: Duration,
) {
    let of = |k: Kind| done.iter().filter(move |d| ts[d.req.tenant].kind == k);
    // Honest tenants.
    // A fast 503 is D4's (counted in `fast_503`), not the quota's: judged there.
    let honest: Vec<&Done> = of(Kind::Honest).collect();
    let honest_ok = honest.iter().filter(|d| d.status == Some(201)).count();
    let honest_d4 = honest.iter().filter(|d| d.fast_503).count();
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    r.goal(
        "honest_success",
        pct(honest_ok, honest.len() - honest_d4),
        "%",
        Goal::AtLeast(99.9),
    );
    r.zero(
        "fast_503",
        done.iter().filter(|d| d.fast_503).count() as u64,
    );
    // Bytes quotas, per node: what clients were told and what the node's book says.
    let mut worst = [
        (f64::NEG_INFINITY, String::new()),
        (f64::NEG_INFINITY, String::new()),
    ];
    for (t, x) in ts.iter().enumerate() {
        let allowed = match x.kind {
            Kind::Storm | Kind::Cross => x.bytes_max as f64,
            Kind::Rate => {
                let mine: Vec<&Done> = done.iter().filter(|d| d.req.tenant == t).collect();
                let window = mine.iter().map(|d| d.at).max().unwrap_or_default()
                    - mine
                        .iter()
                        .map(|d| d.at.saturating_sub(d.took))
                        .min()
                        .unwrap_or_default();
                x.rate as f64 * (secs(window) + 1.0) + 16384.0
            }
            Kind::Honest | Kind::Push => continue,
        };
        for (node, book) in books.iter().enumerate() {
            let told = per_node.get(&(t, node)).copied().unwrap_or(0);
            let kept = book.get(&x.name).copied().unwrap_or(0);
            let over = over_pct(told.max(kept), allowed);
            let w = &mut worst[usize::from(x.kind == Kind::Rate)];
            if over > w.0 {
                *w = (
                    over,
                    format!(
                        "{} on node {node}: {told} B acknowledged, {kept} B in its account, \
                         allowed {allowed:.0}",
                        x.name
                    ),
                );
            }
        }
    }
    let [bytes, rate] = worst;
    r.goal("over_quota_max", bytes.0, "%", Goal::AtMost(OVER_MAX_PCT));
    r.goal("rate_over_max", rate.0, "%", Goal::AtMost(OVER_MAX_PCT));
    r.note(format!("closest to its byte quota: {}", bytes.1));
    r.note(format!("closest to its rate: {}", rate.1));
    // The rest (storm and rate tenants) answered 429 quota_exceeded with Retry-After.
    let storm: Vec<&Done> = of(Kind::Storm).chain(of(Kind::Cross)).collect();
    let refused: Vec<&Done> = storm
        .iter()
        .copied()
        .chain(of(Kind::Rate))
        .filter(|d| d.status != Some(201) && !d.fast_503)
        .collect();
    let with_ra = refused.iter().filter(|d| d.quota_refusal).count();
    r.goal(
        "refusals_429_retry_after",
        pct(with_ra, refused.len()),
        "%",
        Goal::AtLeast(100.0),
    );
    // A tenant's quota across the mesh: the cross tenants' bytes through both gateways.
    let cross_over = ts
        .iter()
        .enumerate()
        .filter(|(_, x)| x.kind == Kind::Cross)
        .map(|(t, x)| over_pct(all.get(&t).copied().unwrap_or(0), x.bytes_max as f64));
    over_goal(r, "mesh_over_quota_max", cross_over);
    let tried: BTreeMap<usize, u64> = storm.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.req.tenant).or_insert(0) += d.req.size as u64;
        m
    });
    let min_tried = tried.values().copied().min().unwrap_or(0) as f64 / STORM_QUOTA as f64;
    r.info("storm_tried_min", min_tried, "x");
    r.info(
        "storm_acked",
        storm.iter().filter(|d| d.status == Some(201)).count() as f64,
        "",
    );
    r.info("quota_refused", refused.len() as f64, "");
    r.info("honest_puts", honest.len() as f64, "");
    let mut lat: Vec<f64> = honest.iter().map(|d| secs(d.took)).collect();
    r.info("honest_p99", quantile(&mut lat, 0.99), "s");
    r.info("rate_puts", of(Kind::Rate).count() as f64, "");
    r.info(
        "storm_rate",
        storm.len() as f64 / secs(wall).max(1e-3),
        "/s",
    );
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for d in done {
        let k = format!(
            "{:?} {}",
            ts[d.req.tenant].kind,
            d.status.map_or("none".into(), |s| s.to_string())
        );
        *statuses.entry(k).or_insert(0) += 1;
    }
    r.note(format!("answers by party: {statuses:?}"));
    for d in done.iter().filter(|d| d.fast_503).take(5) {
        r.note(format!(
            "fast 503 (D4) after {:.3} s: {} ({} B of {} via {})",
            secs(d.took),
            d.what,
            d.req.size,
            ts[d.req.tenant].name,
            d.req.via
        ));
    }
    for d in honest
        .iter()
        .filter(|d| d.status != Some(201) && !d.fast_503)
        .take(5)
    {
        r.note(format!(
            "honest PUT failed: {} ({} B via {})",
            d.what, d.req.size, d.req.via
        ));
    }
    for d in refused.iter().filter(|d| !d.quota_refusal).take(5) {
        r.note(format!(
            "storm refusal without 429 quota_exceeded + Retry-After: {} ({} B via {})",
            d.what, d.req.size, d.req.via
        ));
    }
}
