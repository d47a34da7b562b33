//! Decompression bombs: OAP/1 COMP frames whose few hundred bytes inflate to megabytes
//! (ratios of thousands to one), on every app protocol, against one node.
//!
//! - Over the cap (the inflation bound, 8 MiB at the 1 MiB frame cap): a declared content
//!   size of 64 MiB, and an undeclared size that only inflating finds out (8 MiB + 64 KiB),
//!   as a request on app 0 (control), 1 (dht) and 2 (object), as the body frame of an
//!   authorized object PUT, and as the HELLO that opens a connection. Each must be refused
//!   (413, or the stream reset) and counted as `decompress_bound_exceeded`.
//! - Under the cap: 64 concurrent requests at a time on apps 1 and 2, each inflating to
//!   just under 8 MiB, several rounds. Legal frames; what they may cost the node is the
//!   question: peak RSS growth must stay under 64 MiB (the wire spec says validation keeps
//!   no inflated bytes: a scratch buffer and the zstd window), and the CPU per bomb is
//!   reported.
//!
//! Goals: every over-cap bomb refused and counted, ratios >= 1000:1, bounded peak RSS, the
//! node up and serving an honest PUT and GET afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Opts;
use crate::HarnessError;
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report};
use crate::chaos::hostile::{
    RawAnswer, RawPeer, bomb_payload, comp_request, exchange, put_with_comp_body, ratio,
};
use crate::chaos::load::{GET_TIMEOUT, Ledger, Verdict};
use crate::chaos::procfs;
use wire::Status;

/// Concurrent under-cap bombs per round.
const WAVE: usize = 64;
/// The bound under-cap bombs must keep the node's peak RSS growth within.
const UNDERCAP_RSS_MAX: u64 = 64 << 20;

fn key(seed: crate::chaos::Seed, what: &str) -> [u8; 32] {
    *blake3::hash(&seed.derive(what).to_le_bytes()).as_bytes()
}

fn refused(a: &RawAnswer) -> bool {
    matches!(
        a,
        RawAnswer::Status(Status::PayloadTooLarge) | RawAnswer::Reset
    )
}

struct OverCap {
    what: String,
    ratio: f64,
    answer: RawAnswer,
}

async fn over_cap(
    quic: SocketAddr,
    id: wire::NodeId,
    seed: crate::chaos::Seed,
    token: &str,
) -> Result<Vec<OverCap>, HarnessError> {
    let bound = wire::Limits::default().inflate_bound();
    let peer = RawPeer::connect(quic, Some(id), key(seed, "bomber"), true).await?;
    let mut out = Vec::new();
    let wait = Duration::from_secs(10);
    for (declared, inflated) in [(true, 64 << 20), (false, bound + (64 << 10))] {
        let payload = bomb_payload(inflated, declared)?;
        let r = ratio(inflated, &payload);
        let kind = if declared { "declared" } else { "undeclared" };
        let hash = key(seed, &format!("put-{kind}"));
        let mut shots: Vec<(String, bytes::Bytes)> = [0u16, 1, 2]
            .iter()
            .map(|&app| {
                let frame = comp_request(app, 100 + u64::from(app), payload.clone());
                (format!("app {app} request"), frame)
            })
            .collect();
        let put = put_with_comp_body(hash, 1 << 20, token, payload.clone());
        shots.push(("object PUT body frame".into(), put));
        // The same bomb as the first exchange of a connection (`None`): its HELLO.
        let hello = comp_request(0, 1, payload);
        for (what, frame, on) in shots.into_iter().map(|(w, f)| (w, f, Some(&peer))).chain([(
            "HELLO".to_string(),
            hello,
            None,
        )]) {
            let answer = match on {
                Some(p) => p.exchange(&frame, wait).await,
                None => {
                    let fresh_key = key(seed, &format!("hello-{kind}"));
                    let fresh = RawPeer::connect(quic, Some(id), fresh_key, false).await?;
                    let a = fresh.exchange(&frame, wait).await;
                    fresh.close().await;
                    a
                }
            };
            out.push(OverCap {
                what: format!("{what}, {kind} {inflated} B"),
                ratio: r,
                answer,
            });
        }
    }
    peer.close().await;
    Ok(out)
}

/// `rounds` waves of `WAVE` concurrent under-cap bombs on apps 1 and 2; the answers.
async fn under_cap(
    quic: SocketAddr,
    id: wire::NodeId,
    seed: crate::chaos::Seed,
    rounds: usize,
) -> Result<Vec<RawAnswer>, HarnessError> {
    let bound = wire::Limits::default().inflate_bound();
    let payload = bomb_payload(bound - 4096, true)?;
    let peer = RawPeer::connect(quic, Some(id), key(seed, "undercap"), true).await?;
    let mut answers = Vec::new();
    for round in 0..rounds {
        let mut wave = Vec::new();
        for k in 0..WAVE {
            let app = if k % 2 == 0 { 1 } else { 2 };
            let frame = comp_request(app, (round * WAVE + k) as u64 + 1000, payload.clone());
            let conn = peer.conn.clone();
            wave.push(tokio::spawn(async move {
                exchange(&conn, &frame, Duration::from_secs(30)).await
            }));
        }
        for t in wave {
            answers.push(t.await.unwrap_or(RawAnswer::Failed("task panicked".into())));
        }
    }
    peer.close().await;
    Ok(answers)
}

/// Throws the bombs.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let rounds = if o.long { 16 } else { 4 };
    let mut c = Cluster::start(ClusterSpec::new("bombs", 1, 1, NetKind::Loopback, o.seed))?;
    let quic = c.nodes[0].quic();
    let id = c.ids()[0];
    let pid = c.pid(0);
    let token = c.token().to_string();
    let rejects = |c: &Cluster| {
        c.nodes[0]
            .metric("oap_rejects_total{reason=\"decompress_bound_exceeded\"}")
            .ok()
            .flatten()
            .unwrap_or(0.0)
    };
    let counted0 = rejects(&c);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(HarnessError::io("a tokio runtime"))?;
    let over = rt.block_on(over_cap(quic, id, o.seed, &token))?;
    let counted = rejects(&c) - counted0;

    let rss0 = procfs::rss_bytes(pid)?;
    let reset = procfs::reset_peak(pid);
    let cpu0 = procfs::cpu_seconds(pid)?;
    let started = Instant::now();
    let under = rt.block_on(under_cap(quic, id, o.seed, rounds))?;
    let took = started.elapsed();
    let cpu = procfs::cpu_seconds(pid)? - cpu0;
    let peak = procfs::peak_rss_bytes(pid)?;
    drop(rt);

    let ledger = Ledger::new(o.seed);
    let honest = ledger
        .put(c.http(0), 0, &token, 1, 100_000, 1)
        .1
        .map(|a| ledger.get(c.http(0), &a, GET_TIMEOUT) == Verdict::Verified)
        .unwrap_or(false);

    let mut r = Report::new("bombs", o.seed.0, o.long);
    let refused_n = over.iter().filter(|b| refused(&b.answer)).count();
    let min_ratio = over.iter().map(|b| b.ratio).fold(f64::INFINITY, f64::min);
    r.goal(
        "over_cap_refused",
        refused_n as f64,
        "",
        Goal::AtLeast(over.len() as f64),
    );
    r.goal(
        "over_cap_counted",
        counted,
        "",
        Goal::AtLeast(over.len() as f64),
    );
    r.goal("min_ratio", min_ratio, ":1", Goal::AtLeast(1000.0));
    let growth = procfs::peak_growth(pid, rss0, peak, reset)?;
    r.mib_at_most("under_cap_peak_rss_growth", growth, UNDERCAP_RSS_MAX);
    r.yes("honest_put_get_ok", honest);
    let crashed = c.crashed();
    r.zero("crashes", crashed.len() as u64);
    r.info("over_cap_bombs", over.len() as f64, "");
    r.info("under_cap_bombs", under.len() as f64, "");
    r.info(
        "under_cap_cpu_per_bomb",
        1e3 * cpu / under.len().max(1) as f64,
        "ms",
    );
    r.info("under_cap_wall", took.as_secs_f64(), "s");
    for b in &over {
        if !refused(&b.answer) {
            r.note(format!(
                "not refused: {} ({:.0}:1): {:?}",
                b.what, b.ratio, b.answer
            ));
        }
    }
    let mut answers = std::collections::BTreeMap::new();
    for a in &under {
        *answers.entry(format!("{a:?}")).or_insert(0) += 1;
    }
    r.note(format!(
        "over-cap answers: {:?}",
        over.iter()
            .map(|b| format!("{}: {:?}", b.what, b.answer))
            .collect::<Vec<_>>()
    ));
    r.note(format!(
        "under-cap answers {answers:?}; RSS {} MiB before, peak {} MiB (peak reset: {reset})",
        rss0 >> 20,
        peak >> 20
    ));
    Ok(r)
}
