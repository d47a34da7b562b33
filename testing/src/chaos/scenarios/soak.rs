//! Soak: 3 nodes (RF 3, W 2) under a steady gateway load through node 0 (PUTs of 4..256
//! KiB cycling over a pool of 400 objects, so the store stops growing after the first pass
//! and the memory figures measure leaks, not a growing index; and GETs of acknowledged
//! objects), and every 2 minutes node 1 or 2 (in turn) is
//! SIGKILLed and restarted 2 s later. Node 0 is never killed: its memory and descriptors
//! over time are the figures.
//!
//! Goals, after a warm-up (2.5 minutes short, 2 minutes long): node 0's RSS trend (Theil–Sen, the
//! median of pairwise slopes over samples every 5 s; a one-off settling step does not pass
//! for a leak) <= 1 MiB/min; its open fds within +-2 (the minimum of
//! the first three samples against the minimum of the last three, so a request in flight
//! does not count); error rate <= 0.1 % of all operations; every acknowledged object read
//! back at the end; no crash. Short: 5 minutes. Long: 10 minutes. The short warm-up takes
//! in the first kill and the repair after it: a node's memory settles after its first
//! repair (about 2 MiB here), and a 3-minute window that starts before it measured that
//! step as a slope (1.1 MiB/min short, 0.2 MiB/min over the 8 minutes of the long run).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Opts, push_refusals, secs};
use crate::HarnessError;
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report, slope};
use crate::chaos::load::{
    Ledger, Tally, Writer, spawn_reader, spawn_writer, stop_flag, verify_all,
};
use crate::chaos::procfs;

/// Objects the writer cycles over: after the first pass the store stops growing, so
/// memory that keeps growing is a leak, not a bigger index.
const POOL: u64 = 400;

/// Runs the soak.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let duration = Duration::from_secs(if o.long { 600 } else { 300 });
    let warmup = Duration::from_secs(if o.long { 120 } else { 150 });
    let kill_every = Duration::from_secs(120);
    let sample_every = Duration::from_secs(5);
    let mut spec = ClusterSpec::new("soak", 3, 3, NetKind::Loopback, o.seed);
    spec.w = Some(2);
    spec.liveness = Some(Duration::from_secs(1));
    let mut c = Cluster::start(spec)?;
    let ledger = Ledger::new(o.seed);
    let stop = stop_flag();
    let writer = Writer {
        pool: Some(POOL),
        ..Writer::on(&c, 0, (4 << 10, 256 << 10), 2, Duration::from_millis(50))
    };
    let threads = vec![
        spawn_writer(ledger.clone(), writer, stop.clone()),
        spawn_reader(
            ledger.clone(),
            vec![c.http(0)],
            Duration::from_millis(50),
            stop.clone(),
        ),
    ];
    let pid = c.pid(0);
    let started = Instant::now();
    let mut rss: Vec<(f64, f64)> = Vec::new();
    let mut fds: Vec<usize> = Vec::new();
    let mut next_kill = started + kill_every;
    let mut victim = 1;
    let mut restarts = Vec::new();
    let mut failures = Vec::new();
    while started.elapsed() < duration {
        std::thread::sleep(sample_every);
        let t = started.elapsed();
        if t >= warmup {
            let minutes = t.as_secs_f64() / 60.0;
            rss.push((minutes, procfs::mib(procfs::rss_bytes(pid)?)));
            fds.push(procfs::fd_count(pid)?);
        }
        if Instant::now() >= next_kill && started.elapsed() + Duration::from_secs(10) < duration {
            c.kill(victim)?;
            std::thread::sleep(Duration::from_secs(2));
            match c.restart(victim, Duration::from_secs(30)) {
                Ok(took) => restarts.push(secs(took)),
                Err(e) => failures.push(format!("restart of node {victim}: {e}")),
            }
            victim = if victim == 1 { 2 } else { 1 };
            next_kill += kill_every;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let crashed = c.crashed();
    let (lost, corrupt) = verify_all(&ledger, &[c.http(0)], 3);

    let mut r = Report::new("soak", o.seed.0, o.long);
    let ops = ledger.puts.total() + ledger.gets.total();
    let errors = ledger.puts.not_ok() + ledger.gets.not_ok();
    let min3 = |v: &[usize]| v.iter().take(3).min().copied().unwrap_or(0) as f64;
    let first = min3(&fds);
    let last = min3(&fds.iter().rev().copied().collect::<Vec<_>>());
    r.goal("rss_slope", slope(&rss), "MiB/min", Goal::AtMost(1.0));
    r.goal("fd_drift", (last - first).abs(), "", Goal::AtMost(2.0));
    r.goal(
        "error_rate",
        100.0 * errors as f64 / ops.max(1) as f64,
        "%",
        Goal::AtMost(0.1),
    );
    ledger.promise_goals(&mut r, &lost, corrupt);
    r.zero("restarts_failed", failures.len() as u64);
    r.zero("fast_503", Tally::get(&ledger.fast_503));
    r.zero("crashes", crashed.len() as u64);
    r.note(push_refusals(&c));
    super::note_lost(&mut r, &c, &lost);
    r.info("ops", ops as f64, "");
    r.info("kills", restarts.len() as f64 + failures.len() as f64, "");
    r.info("rss_first", rss.first().map_or(f64::NAN, |p| p.1), "MiB");
    r.info("rss_last", rss.last().map_or(f64::NAN, |p| p.1), "MiB");
    r.info("fds_first", first, "");
    r.info("fds_last", last, "");
    r.note(format!(
        "PUT statuses {:?}, GET statuses {:?}",
        ledger.puts.statuses(),
        ledger.gets.statuses()
    ));
    for e in ledger
        .puts
        .examples()
        .iter()
        .chain(ledger.gets.examples().iter())
    {
        r.note(e.clone());
    }
    for f in failures {
        r.note(f);
    }
    Ok(r)
}
