//! Loss and delay through the seeded UDP proxy, on 5 nodes (RF 3, W 2, the node's default
//! timeouts). Three phases on the same mesh:
//!
//! 1. 5 % loss on every link: 20 PUTs of 1 MiB (through a rotating gateway) and 20 GETs of
//!    them through a node that does not hold them (so the bytes cross lossy links): all
//!    must succeed.
//! 2. 20 % loss: PUTs, remote GETs and DHT lookups must each end with a status within their
//!    stated timeouts (PUT: the write wait + 10 s; GET: 30 s; lookup: 20 s), never hang or
//!    drop the connection. Failing with a status is allowed.
//! 3. 200 ms +- 50 ms one-way delay, no loss: lookups and remote GETs complete; first with
//!    the datagrams of a link kept in order (a queue whose delay varies), then reordered
//!    as netem's jitter does (each datagram's delay drawn alone, so they overtake).
//!
//! Short: 6 operations of each kind in phase 2 and 5 in phase 3. Long: 20 and 10.
//! `--net netns` runs the loss phases with iptables drops instead (phase 3 then needs the
//! proxy and is reported as skipped).

use std::net::SocketAddr;
use std::time::Duration;

use super::Opts;
use crate::HarnessError;
use crate::chaos::client::{self, Outcome, Timed};
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report};
use crate::chaos::load::{Acked, GET_TIMEOUT, Ledger, Tally, Verdict, verdict};
use crate::chaos::proxy::Impairment;

/// Bound on a `/v1/lookup` through the admin plane.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

/// One PUT of 1 MiB through `via`, then a GET of it through a node that does not hold it.
fn put_then_remote_get(
    c: &Cluster,
    ledger: &Ledger,
    index: u64,
    via: usize,
    gets: &Tally,
) -> Option<Acked> {
    let (_, acked) = ledger.put(c.http(via), via, c.token(), index, 1 << 20, 2);
    let acked = acked?;
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    let holders = c.holders(&all, &acked.id);
    let reader = all
        .iter()
        .copied()
        .find(|i| !holders.contains(i))
        .unwrap_or((via + 1) % all.len());
    remote_get(c.http(reader), &acked, gets);
    Some(acked)
}

fn remote_get(addr: SocketAddr, a: &Acked, gets: &Tally) -> Verdict {
    let t = client::get_object(addr, &a.id, GET_TIMEOUT);
    let v = verdict(&t, a);
    gets.record(
        &t,
        v == Verdict::Verified,
        v == Verdict::Corrupt,
        &format!("GET #{} via {addr}", a.index),
    );
    v
}

fn lookup(addr: SocketAddr, key: &[u8; 32], tally: &Tally) -> Timed {
    let t = client::get(
        addr,
        &format!("/v1/lookup/{}", hex::encode(key)),
        LOOKUP_TIMEOUT,
    );
    let good = matches!(&t.outcome, Outcome::Answered(a) if a.status == 200);
    tally.record(&t, good, false, &format!("lookup via {addr}"));
    t
}

/// Runs the three phases.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let net = o.net.unwrap_or(NetKind::Proxy);
    let (hard, slow) = if o.long { (20, 10) } else { (6, 4) };
    let n = 5;
    let mut spec = ClusterSpec::new("loss", n, 3, net, o.seed);
    spec.w = Some(2);
    let mut c = Cluster::start(spec)?;
    let mut r = Report::new("loss-delay", o.seed.0, o.long);
    r.note(format!("network: {}", net.name()));

    // Phase 1: 5 % loss.
    c.set_loss(0.05)?;
    let ledger = Ledger::new(o.seed);
    let gets5 = Tally::default();
    let mut objects = Vec::new();
    for k in 0..20u64 {
        if let Some(a) = put_then_remote_get(&c, &ledger, k, (k as usize) % n, &gets5) {
            objects.push(a);
        }
    }
    r.goal(
        "loss5_puts_ok",
        ledger.puts.oks() as f64,
        "",
        Goal::AtLeast(20.0),
    );
    r.goal("loss5_gets_ok", gets5.oks() as f64, "", Goal::AtLeast(20.0));
    r.info("loss5_put_p99", ledger.puts.latency(0.99), "s");
    r.info("loss5_get_p99", gets5.latency(0.99), "s");
    for e in ledger.puts.examples().iter().chain(gets5.examples().iter()) {
        r.note(format!("5 % loss: {e}"));
    }

    // Phase 2: 20 % loss; every operation ends with a status within its bound.
    c.set_loss(0.20)?;
    let ledger20 = Ledger::new(o.seed);
    let gets20 = Tally::default();
    let lookups20 = Tally::default();
    let mut keys = o.seed.rng("lookup-keys");
    for k in 0..hard as u64 {
        let via = (k as usize + 2) % n;
        put_then_remote_get(&c, &ledger20, 1000 + k, via, &gets20);
        if let Some(a) = objects.get(k as usize) {
            remote_get(c.http((via + 1) % n), a, &gets20);
        }
        let key: [u8; 32] = rand::Rng::r#gen(&mut keys);
        lookup(c.admin(via)?, &key, &lookups20);
    }
    let tallies = [&ledger20.puts, &gets20, &lookups20];
    let hangs: u64 = tallies.iter().map(|t| Tally::get(&t.timed_out)).sum();
    let unclean: u64 = tallies.iter().map(|t| Tally::get(&t.failed)).sum();
    let corrupt: u64 = tallies.iter().map(|t| Tally::get(&t.corrupt)).sum();
    let ops: u64 = tallies.iter().map(|t| t.total()).sum();
    let ok: u64 = tallies.iter().map(|t| t.oks()).sum();
    r.zero("loss20_hangs", hangs);
    r.zero("loss20_unanswered", unclean);
    r.zero("corrupt_reads", corrupt + Tally::get(&gets5.corrupt));
    r.info("loss20_ops", ops as f64, "");
    r.info("loss20_ok", ok as f64, "");
    r.info("loss20_put_p50", ledger20.puts.latency(0.5), "s");
    r.note(format!(
        "20 % loss statuses: PUT {:?}, GET {:?}, lookup {:?}",
        ledger20.puts.statuses(),
        gets20.statuses(),
        lookups20.statuses()
    ));
    for t in tallies {
        for e in t.examples() {
            r.note(format!("20 % loss: {e}"));
        }
    }

    // Phase 3: 200 +- 50 ms one way, no loss: first in order (a queue whose delay varies),
    // then reordering as netem's jitter does (datagrams whose delays cross overtake).
    c.set_loss(0.0)?;
    for (name, in_order) in [("delay", true), ("delay_reordered", false)] {
        let rule = Impairment {
            in_order,
            ..Impairment::delay(Duration::from_millis(200), Duration::from_millis(50))
        };
        if let Err(e) = c.impair(rule) {
            r.note(format!("{name} phase skipped: {e}"));
            break;
        }
        // Reordered, a GET takes over a minute today (defect D3): fewer in the short run.
        let count = if in_order || o.long { slow } else { 2 };
        let gets_d = Tally::default();
        let lookups_d = Tally::default();
        for k in 0..count {
            let key: [u8; 32] = rand::Rng::r#gen(&mut keys);
            lookup(c.admin(k % n)?, &key, &lookups_d);
            if let Some(a) = objects.get(k) {
                let all: Vec<usize> = (0..n).collect();
                let holders = c.holders(&all, &a.id);
                let reader = all.iter().copied().find(|i| !holders.contains(i));
                remote_get(c.http(reader.unwrap_or(k % n)), a, &gets_d);
            }
        }
        r.goal(
            &format!("{name}_lookups_ok"),
            lookups_d.oks() as f64,
            "",
            Goal::AtLeast(count as f64),
        );
        r.goal(
            &format!("{name}_gets_ok"),
            gets_d.oks() as f64,
            "",
            Goal::AtLeast(count.min(objects.len()) as f64),
        );
        r.info(&format!("{name}_lookup_p50"), lookups_d.latency(0.5), "s");
        r.info(&format!("{name}_get_p50"), gets_d.latency(0.5), "s");
        for e in lookups_d.examples().iter().chain(gets_d.examples().iter()) {
            r.note(format!("{name}: {e}"));
        }
    }
    let crashed = c.crashed();
    r.zero("crashes", crashed.len() as u64);
    if let Some(p) = c.proxy() {
        let s = p.stats();
        r.note(format!(
            "proxy: {} datagrams forwarded, {} dropped by the loss rule, {} kernel drops, {} \
             from unknown sources",
            s.forwarded,
            s.lost,
            p.kernel_drops(),
            p.unknown_sources()
        ));
    }
    Ok(r)
}
