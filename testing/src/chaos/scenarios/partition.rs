//! Partition: 3 nodes (RF 3, W 2); every 60 s one node (node `cycle % 3`, so the bootstrap
//! node 0 takes its turn) is cut off from the other two for 30 s. A writer per node PUTs
//! all along, so there are PUTs on both sides: the majority can reach W = 2, the isolated
//! node cannot and must say so (503), never hang. While cut off, the isolated node is also
//! asked for objects the majority acknowledged during the partition: it cannot find them,
//! and must not claim they do not exist (404 only after a search that ran).
//!
//! Goals: no acknowledged write lost; back to RF (every object acknowledged before the
//! heal on all 3 nodes' disks) within 60 s of each heal; no 404 for an acknowledged
//! object; every PUT answered within its timeout; no 201 below W; no crash. Short: 2
//! cycles. Long: 10. Runs in network namespaces when root (real drops), else through the
//! proxy; `--net` chooses.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Opts, secs, sleep_until, time_until};
use crate::HarnessError;
use crate::chaos::client::{self, Outcome};
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report};
use crate::chaos::load::{Acked, Ledger, Tally, Writer, spawn_writer, stop_flag, verify_all};
use crate::chaos::netns;

/// Runs the partition cycles.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let cycles = if o.long { 10 } else { 2 };
    let period = Duration::from_secs(60);
    let cut = Duration::from_secs(30);
    let repair_bound = Duration::from_secs(60);
    let net = o.net.unwrap_or(if netns::unavailable().is_none() {
        NetKind::Netns
    } else {
        NetKind::Proxy
    });
    let (n, rf, w) = (3usize, 3usize, 2u64);
    // How long a heal is followed: past the goal, to tell late repair from none.
    const WATCH_MAX: Duration = Duration::from_secs(180);
    let mut spec = ClusterSpec::new("partition", n, rf, net, o.seed);
    spec.w = Some(w as usize);
    spec.liveness = Some(Duration::from_secs(1));
    let c = Cluster::start(spec)?;
    let mut r = Report::new("partition", o.seed.0, o.long);
    r.note(format!("network: {}", net.name()));
    let ledger = Ledger::new(o.seed);
    let stop = stop_flag();
    let writers: Vec<_> = (0..n)
        .map(|i| {
            let writer = Writer::on(&c, i, (16 << 10, 1 << 20), w, Duration::from_millis(500));
            spawn_writer(ledger.clone(), writer, stop.clone())
        })
        .collect();

    // For each heal, a watcher: how long until every object acknowledged before it is on
    // every node's disk, measured from the heal and followed past the goal (up to
    // `WATCH_MAX`), so a miss says whether repair was late or never came.
    let all: Vec<usize> = (0..n).collect();
    let repair_times = std::thread::scope(|scope| {
        let c = &c;
        let all = &all;
        let watch = |cycle: usize, healed: Instant, objects: Vec<Acked>| {
            scope.spawn(move || {
                let short = |a: &Acked| c.holders(all, &a.id).len() < rf.min(n);
                let left = WATCH_MAX.saturating_sub(healed.elapsed());
                let done = time_until(left, Duration::from_millis(500), || {
                    !objects.iter().any(short)
                })
                .map(|_| healed.elapsed());
                let missing: Vec<String> = objects
                    .iter()
                    .filter(|a| short(a))
                    .take(5)
                    .map(|a| {
                        format!(
                            "b3:{} (acked via {} at {:?}) on {:?}",
                            &hex::encode(a.id)[..16],
                            a.via,
                            a.at,
                            c.holders(all, &a.id)
                        )
                    })
                    .collect();
                println!("chaos: heal {cycle}: back to RF after {done:?}; missing {missing:?}");
                (cycle, objects.len(), done, missing)
            })
        };
        let mut watchers = Vec::new();

        let started = Instant::now();
        let mut wrong_404 = Vec::new();
        let mut minority_reads = Tally::default();
        for cycle in 0..cycles {
            let t0 = started + period * cycle as u32;
            sleep_until(t0);
            let iso = cycle % n;
            let rest: Vec<usize> = all.iter().copied().filter(|&i| i != iso).collect();
            let cut_at = Instant::now();
            let acked_before = ledger.len();
            if let Err(e) = c.partition(&[iso], &rest) {
                r.note(format!("partition failed: {e}"));
                break;
            }
            // While cut off: ask the isolated node for what the majority acknowledged since.
            while cut_at.elapsed() < cut {
                std::thread::sleep(Duration::from_secs(2));
                let fresh: Vec<Acked> = ledger.acked()[acked_before..]
                    .iter()
                    .filter(|a| a.via != iso)
                    .copied()
                    .collect();
                if let Some(a) = fresh.last() {
                    let t = client::get_object(c.http(iso), &a.id, Duration::from_secs(30));
                    if t.outcome.status() == Some(404) {
                        wrong_404.push(format!(
                            "node {iso} (cut off) answered 404 for b3:{} acked via node {} \
                             {:?} into the partition, after {:?}",
                            hex::encode(a.id),
                            a.via,
                            a.at.saturating_sub(cut_at.duration_since(started)),
                            t.took
                        ));
                    }
                    let good = matches!(&t.outcome, Outcome::Answered(x) if x.status == 200);
                    minority_reads.record(&t, good, false, &format!("GET via cut-off {iso}"));
                }
            }
            sleep_until(cut_at + cut);
            if let Err(e) = c.heal() {
                r.note(format!("heal failed: {e}"));
            }
            watchers.push(watch(cycle, Instant::now(), ledger.acked()));
        }
        sleep_until(started + period * cycles as u32);
        stop.store(true, Ordering::Relaxed);
        let times: Vec<_> = watchers.into_iter().filter_map(|w| w.join().ok()).collect();
        (times, wrong_404, std::mem::take(&mut minority_reads))
    });
    for t in writers {
        let _ = t.join();
    }
    let (times, wrong_404, minority_reads) = repair_times;
    let mut c = c;
    let crashed = c.crashed();
    let addrs: Vec<_> = (0..n).map(|i| c.http(i)).collect();
    let (lost, corrupt) = verify_all(&ledger, &addrs, 3);

    let worst = times
        .iter()
        .map(|(_, _, t, _)| t.map_or(f64::INFINITY, secs))
        .fold(0.0, f64::max);
    let puts = &ledger.puts;
    let unclean = Tally::get(&puts.timed_out) + Tally::get(&puts.failed);
    ledger.promise_goals(&mut r, &lost, corrupt);
    r.goal(
        "back_to_rf_after_heal_max",
        worst,
        "s",
        Goal::AtMost(secs(repair_bound)),
    );
    r.zero("wrong_404", wrong_404.len() as u64);
    r.zero("puts_unanswered", unclean);
    r.zero("crashes", crashed.len() as u64);
    r.info("cycles", cycles as f64, "");
    r.info("puts_acked", ledger.len() as f64, "");
    r.info("puts_refused", Tally::get(&puts.refused) as f64, "");
    r.info("cut_off_gets", minority_reads.total() as f64, "");
    r.note(format!("PUT statuses {:?}", puts.statuses()));
    r.note(format!(
        "GETs through the cut-off node: statuses {:?}",
        minority_reads.statuses()
    ));
    for (cycle, count, took, missing) in &times {
        r.note(format!(
            "heal {cycle}: {count} acknowledged objects back to RF after {took:?}; \
             still short: {missing:?}"
        ));
    }
    for e in wrong_404.iter().chain(puts.examples().iter()).take(12) {
        r.note(e.clone());
    }
    super::note_lost(&mut r, &c, &lost);
    for (i, status) in crashed {
        r.note(format!("node {i} crashed: {status}"));
    }
    Ok(r)
}
