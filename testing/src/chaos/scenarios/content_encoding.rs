//! Encoded HTTP bodies: `PUT /o` with gzip and zstd bombs (gigabytes of zeros in a
//! megabyte or less) under a `Content-Encoding` the gateway does not accept, against one
//! node.
//!
//! The gateway stores bodies as sent, named by their hash, so it accepts no encoding and
//! refuses an encoded body with 415 before reading it (docs/DESIGN.md §6). The shots: each
//! bomb with its own encoding, the same names in other spellings (`x-gzip`, `GZIP`), lists
//! (`gzip, zstd`, `identity, zstd`), chunked bodies, the other codings (`br`, `deflate`,
//! `compress`, an unknown one), and the header twice (`identity`, then `gzip`). Then a storm
//! of gzip bombs, 64 at a time; then the gzip bomb without the header, which the node must
//! store as sent (its size, its bytes), never inflated.
//!
//! Goals: every encoded PUT refused with 415 and counted in `rejected_total{reason=
//! "content_encoding"}`, each within 5 s; bombs of >= 1000:1; peak RSS growth during the
//! storm <= 64 MiB; the unlabelled bomb stored as sent; an honest PUT and GET afterwards;
//! no crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use super::{Opts, joined, secs};
use crate::HarnessError;
use crate::chaos::client::{self, Outcome, Timed};
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report};
use crate::chaos::hostile::{BOMB_MEMBER, gzip_bomb, ratio, zstd_bomb};
use crate::chaos::load::{GET_TIMEOUT, Ledger, Verdict};
use crate::chaos::procfs;

/// Concurrent bomb PUTs per round of the storm.
const WAVE: usize = 64;
/// Bound on the node's peak RSS growth during the storm.
const STORM_RSS_MAX: u64 = 64 << 20;
/// A refusal must come within this (the body is never read, so it is a round trip).
const REFUSAL_MAX: Duration = Duration::from_secs(5);
/// The client's bound on one PUT.
const PUT_BOUND: Duration = Duration::from_secs(30);

/// One encoded PUT: what it sent and how it ended.
struct Shot {
    what: String,
    headers: Vec<String>,
    body: Arc<Vec<u8>>,
    chunked: bool,
}

fn is_refused(t: &Timed) -> bool {
    t.outcome.status() == Some(415) && t.took <= REFUSAL_MAX
}

fn shots(gzip: &Arc<Vec<u8>>, zstd: &Arc<Vec<u8>>, o: &Opts) -> Vec<Shot> {
    let small = Arc::new(vec![0u8; 4096]);
    let ce = |v: &str| vec![format!("Content-Encoding: {v}")];
    let mut v = vec![
        ("gzip bomb, gzip", ce("gzip"), gzip.clone(), false),
        ("gzip bomb, x-gzip", ce("x-gzip"), gzip.clone(), false),
        ("gzip bomb, GZIP", ce("GZIP"), gzip.clone(), false),
        ("gzip bomb, gzip, chunked", ce("gzip"), gzip.clone(), true),
        ("zstd bomb, zstd", ce("zstd"), zstd.clone(), false),
        ("zstd bomb, zstd, chunked", ce("zstd"), zstd.clone(), true),
        (
            "zstd bomb, gzip, zstd",
            ce("gzip, zstd"),
            zstd.clone(),
            false,
        ),
        (
            "zstd bomb, identity, zstd",
            ce("identity, zstd"),
            zstd.clone(),
            false,
        ),
        ("4 KiB, br", ce("br"), small.clone(), false),
        ("4 KiB, deflate", ce("deflate"), small.clone(), false),
        ("4 KiB, compress", ce("compress"), small.clone(), false),
        ("4 KiB, x-bomb", ce("x-bomb"), small.clone(), false),
    ];
    // The order is the seed's.
    v.shuffle(&mut o.seed.rng("content-encoding order"));
    v.into_iter()
        .map(|(what, headers, body, chunked)| Shot {
            what: what.into(),
            headers,
            body,
            chunked,
        })
        .collect()
}

fn fire(c: &Cluster, token: &str, s: &Shot) -> Timed {
    client::put_with_headers(
        c.http(0),
        Some(token),
        &s.headers,
        &s.body,
        s.chunked,
        PUT_BOUND,
    )
}

/// `rounds` waves of [`WAVE`] concurrent gzip-bomb PUTs; their outcomes.
fn storm(c: &Cluster, token: &str, bomb: &Arc<Vec<u8>>, rounds: usize) -> Vec<Timed> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        let wave: Vec<_> = (0..WAVE)
            .map(|_| {
                let (addr, token, bomb) = (c.http(0), token.to_string(), bomb.clone());
                std::thread::spawn(move || {
                    let h = vec!["Content-Encoding: gzip".to_string()];
                    client::put_with_headers(addr, Some(&token), &h, &bomb, false, PUT_BOUND)
                })
            })
            .collect();
        for t in wave {
            out.push(joined(t.join(), "a bomb PUT").unwrap_or_else(|e| Timed {
                outcome: Outcome::Failed(e.to_string()),
                took: Duration::ZERO,
            }));
        }
    }
    out
}

/// The gzip bomb without a `Content-Encoding`: stored as sent (201 with its size), read
/// back byte for byte; never inflated.
fn unlabelled(c: &Cluster, token: &str, bomb: &[u8], r: &mut Report) -> bool {
    let t = client::put(c.http(0), Some(token), bomb, PUT_BOUND);
    let Outcome::Answered(a) = &t.outcome else {
        r.note(format!("unlabelled bomb PUT: {}", t.outcome.describe()));
        return false;
    };
    let size_ok = a.status == 201 && a.json()["size"].as_u64() == Some(bomb.len() as u64);
    let got = client::get_object(c.http(0), blake3::hash(bomb).as_bytes(), GET_TIMEOUT);
    let same = matches!(&got.outcome, Outcome::Answered(g) if g.status == 200 && g.body == bomb);
    if !(size_ok && same) {
        r.note(format!(
            "unlabelled bomb: PUT {}, GET {}",
            t.outcome.describe(),
            got.outcome.describe()
        ));
    }
    size_ok && same
}

/// Throws the encoded bodies.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let (members, rounds) = if o.long { (64, 8) } else { (16, 2) };
    let gzip = Arc::new(gzip_bomb(members)?);
    let zstd = Arc::new(zstd_bomb(members)?);
    let inflated = members * BOMB_MEMBER;
    let mut c = Cluster::start(ClusterSpec::new(
        "content-encoding",
        1,
        1,
        NetKind::Loopback,
        o.seed,
    ))?;
    let token = c.token().to_string();
    let pid = c.pid(0);
    let counted = |c: &Cluster| {
        c.nodes[0]
            .metric("rejected_total{reason=\"content_encoding\"}")
            .ok()
            .flatten()
            .unwrap_or(0.0)
    };
    let counted0 = counted(&c);

    let shots = shots(&gzip, &zstd, o);
    let answers: Vec<Timed> = shots.iter().map(|s| fire(&c, &token, s)).collect();
    // The header twice: `identity` first, then `gzip` (RFC 9110 §5.3: one list, gzip last).
    let twice = Shot {
        what: "gzip bomb, Content-Encoding twice (identity, then gzip)".into(),
        headers: vec![
            "Content-Encoding: identity".into(),
            "Content-Encoding: gzip".into(),
        ],
        body: gzip.clone(),
        chunked: false,
    };
    let twice_answer = fire(&c, &token, &twice);

    let rss0 = procfs::rss_bytes(pid)?;
    let reset = procfs::reset_peak(pid);
    let started = Instant::now();
    let stormed = storm(&c, &token, &gzip, rounds);
    let storm_wall = started.elapsed();
    let peak = procfs::peak_rss_bytes(pid)?;
    let counted_all = counted(&c) - counted0;

    let mut r = Report::new("content-encoding", o.seed.0, o.long);
    let stored_as_sent = unlabelled(&c, &token, &gzip, &mut r);
    let ledger = Ledger::new(o.seed);
    let honest = ledger
        .put(c.http(0), 0, &token, 1, 100_000, 1)
        .1
        .map(|a| ledger.get(c.http(0), &a, GET_TIMEOUT) == Verdict::Verified)
        .unwrap_or(false);

    let refused = answers.iter().filter(|t| is_refused(t)).count();
    let storm_refused = stormed.iter().filter(|t| is_refused(t)).count();
    r.goal(
        "encoded_refused",
        refused as f64,
        "",
        Goal::AtLeast(shots.len() as f64),
    );
    r.yes("header_twice_refused", is_refused(&twice_answer));
    r.goal(
        "storm_refused",
        storm_refused as f64,
        "",
        Goal::AtLeast(stormed.len() as f64),
    );
    let refusals = (refused + storm_refused + usize::from(is_refused(&twice_answer))) as f64;
    r.goal("refusals_counted", counted_all, "", Goal::AtLeast(refusals));
    let min_ratio = ratio(inflated, &gzip).min(ratio(inflated, &zstd));
    r.goal("min_ratio", min_ratio, ":1", Goal::AtLeast(1000.0));
    let growth = procfs::peak_growth(pid, rss0, peak, reset)?;
    r.mib_at_most("storm_peak_rss_growth", growth, STORM_RSS_MAX);
    r.yes("unlabelled_stored_as_sent", stored_as_sent);
    r.yes("honest_put_get_ok", honest);
    r.zero("crashes", c.crashed().len() as u64);
    let slowest = answers
        .iter()
        .chain(&stormed)
        .map(|t| secs(t.took))
        .fold(0.0, f64::max);
    r.info("slowest_refusal", slowest, "s");
    r.info("bomb_inflated", (inflated >> 20) as f64, "MiB");
    r.info("gzip_body", (gzip.len() >> 10) as f64, "KiB");
    r.info("zstd_body", (zstd.len() >> 10) as f64, "KiB");
    r.info("storm_puts", stormed.len() as f64, "");
    r.info("storm_wall", secs(storm_wall), "s");
    for (s, t) in shots.iter().zip(&answers).chain([(&twice, &twice_answer)]) {
        if !is_refused(t) {
            r.note(format!(
                "not refused within {REFUSAL_MAX:?}: {} ({} B{}): {} in {:.2} s",
                s.what,
                s.body.len(),
                if s.chunked { ", chunked" } else { "" },
                t.outcome.describe(),
                secs(t.took)
            ));
        }
    }
    let mut storm_answers = std::collections::BTreeMap::new();
    for t in &stormed {
        let key = t
            .outcome
            .status()
            .map_or_else(|| t.outcome.describe(), |s| s.to_string());
        *storm_answers.entry(key).or_insert(0) += 1;
    }
    r.note(format!(
        "storm answers {storm_answers:?}; RSS {} MiB before, peak {} MiB (peak reset: \
         {reset})",
        rss0 >> 20,
        peak >> 20
    ));
    Ok(r)
}
