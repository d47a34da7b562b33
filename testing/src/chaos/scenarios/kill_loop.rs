//! Kill loop: 5 nodes (RF 3, W 2) under a steady PUT load of 4 KiB..4 MiB objects through
//! two gateways (nodes 0 and 1), while every 10 s one holder of the newest acknowledged
//! object (among nodes 2..4: the gateways stay, so clients keep their entry points) is
//! SIGKILLed and restarted 2 s later with its data. A reader GETs random acknowledged
//! objects through the gateways all along.
//!
//! Goals: no acknowledged PUT lost (every 201 reads back verified at the end), no corrupt
//! read, GET availability of acknowledged objects >= 99 % during the run, every restart
//! ready (`/readyz` 200) within 5 s, no 201 reporting fewer than W copies, no crash.
//! Short: 2 minutes. Long: 10 minutes.

use std::time::{Duration, Instant};

use rand::Rng;

use super::{Opts, push_refusals, secs, sleep_until};
use crate::HarnessError;
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report};
use crate::chaos::load::{
    Ledger, Tally, Writer, spawn_reader, spawn_writer, stop_flag, verify_all,
};

/// Runs the kill loop.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let duration = Duration::from_secs(if o.long { 600 } else { 120 });
    let period = Duration::from_secs(10);
    let down = Duration::from_secs(2);
    let (rf, w) = (3, 2u64);
    let mut spec = ClusterSpec::new("kill", 5, rf, NetKind::Loopback, o.seed);
    spec.w = Some(w as usize);
    spec.liveness = Some(Duration::from_secs(1));
    let mut c = Cluster::start(spec)?;
    let gateways = [0usize, 1];
    let victims = [2usize, 3, 4];
    let ledger = Ledger::new(o.seed);
    let stop = stop_flag();
    let mut threads = Vec::new();
    for &g in &gateways {
        let writer = Writer::on(&c, g, (4 << 10, 4 << 20), w, Duration::from_millis(100));
        threads.push(spawn_writer(ledger.clone(), writer, stop.clone()));
    }
    let addrs = gateways.iter().map(|&g| c.http(g)).collect();
    threads.push(spawn_reader(
        ledger.clone(),
        addrs,
        Duration::from_millis(100),
        stop.clone(),
    ));

    let mut rng = o.seed.rng("victims");
    let started = Instant::now();
    let mut next = started + period;
    let mut restarts: Vec<f64> = Vec::new();
    let mut failures = Vec::new();
    let mut kills = 0;
    while next + down < started + duration {
        sleep_until(next);
        let holders = ledger
            .acked()
            .last()
            .map(|a| c.holders(&victims, &a.id))
            .unwrap_or_default();
        let pool = if holders.is_empty() {
            victims.to_vec()
        } else {
            holders
        };
        let victim = pool[rng.gen_range(0..pool.len())];
        c.kill(victim)?;
        kills += 1;
        std::thread::sleep(down);
        match c.restart(victim, Duration::from_secs(30)) {
            Ok(took) => {
                println!("chaos: node {victim} ready {took:?} after its restart");
                restarts.push(secs(took));
            }
            Err(e) => failures.push(format!("restart of node {victim}: {e}")),
        }
        next += period;
    }
    sleep_until(started + duration);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let crashed = c.crashed();
    // Everyone up, then every acknowledged object must read back.
    for (i, _) in &crashed {
        let _ = c.restart(*i, Duration::from_secs(30));
    }
    let all: Vec<_> = (0..c.nodes.len()).map(|i| c.http(i)).collect();
    let (lost, corrupt_final) = verify_all(&ledger, &all, 3);

    let mut r = Report::new("kill-loop", o.seed.0, o.long);
    let gets = &ledger.gets;
    let avail = 100.0 * gets.oks() as f64 / gets.total().max(1) as f64;
    let restart_max = restarts.iter().copied().fold(0.0, f64::max);
    ledger.promise_goals(&mut r, &lost, corrupt_final);
    r.goal("get_availability", avail, "%", Goal::AtLeast(99.0));
    r.goal("restart_to_ready_max", restart_max, "s", Goal::AtMost(5.0));
    r.zero("restarts_failed", failures.len() as u64);
    r.zero("fast_503", Tally::get(&ledger.fast_503));
    r.zero("crashes", crashed.len() as u64);
    r.note(push_refusals(&c));
    r.info("kills", f64::from(kills), "");
    r.info("puts_acked", ledger.len() as f64, "");
    r.info("puts_not_acked", ledger.puts.not_ok() as f64, "");
    r.info("gets", gets.total() as f64, "");
    r.info("put_p50", ledger.puts.latency(0.5), "s");
    r.info("put_p99", ledger.puts.latency(0.99), "s");
    r.note(format!("PUT statuses {:?}", ledger.puts.statuses()));
    r.note(format!("GET statuses {:?}", gets.statuses()));
    for e in ledger.puts.examples().iter().chain(gets.examples().iter()) {
        r.note(e.clone());
    }
    super::note_lost(&mut r, &c, &lost);
    for f in failures {
        r.note(f);
    }
    for (i, status) in crashed {
        r.note(format!("node {i} crashed: {status}"));
    }
    Ok(r)
}
