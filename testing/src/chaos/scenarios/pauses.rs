//! Pauses: a holder stops answering without going away (SIGSTOP, as a VM pause or a GC
//! stall would), for 20 s, once in the middle of a GET it is serving and once in the middle
//! of a PUT it is a target of; then SIGCONT.
//!
//! - Mid-GET: a 32 MiB object on its 3 closest nodes is read through a node that does not
//!   hold it, by a client taking 4 MiB/s (so the transfer lasts ~8 s); after 2 s the holder
//!   serving it (the one whose outbound frames climb) is stopped. The read must fail over
//!   and finish, verified, within the client's bound: the transfer time plus the GET bound
//!   (30 s).
//! - Mid-PUT: a 24 MiB object is uploaded at 8 MiB/s through a node outside its 3 closest;
//!   1.5 s in, the closest is stopped. W = 2 is still reachable through the other two: the
//!   PUT must answer 201 within the upload time plus its write wait.
//!
//! After SIGCONT, both objects must read back verified through every node, the paused one
//! included (its copy complete and valid, or absent). Goals: both operations succeed within
//! their bounds, no corrupt read, no crash.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Opts, joined, secs, time_until};
use crate::HarnessError;
use crate::chaos::client;
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report};
use crate::chaos::load::{Acked, GET_TIMEOUT, Ledger, Verdict, put_timeout, verdict};
use crate::chaos::seed::object_bytes;

/// How long a holder stays stopped.
const PAUSE: Duration = Duration::from_secs(20);

/// SIGCONTs the process when dropped, so a failing scenario never leaves it stopped.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        println!("chaos: SIGSTOP pid {pid}");
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        println!("chaos: SIGCONT pid {}", self.0);
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

fn frames_out(c: &Cluster, i: usize) -> f64 {
    c.nodes[i]
        .metric("oap_frames_total{dir=\"out\"}")
        .ok()
        .flatten()
        .unwrap_or(0.0)
}

/// PUTs object `index` of `size` bytes through its closest node and waits until its RF
/// closest hold it.
fn place(c: &Cluster, ledger: &Ledger, index: u64, size: usize) -> Result<Acked, HarnessError> {
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    let id = *blake3::hash(&object_bytes(ledger.seed(), index, size)).as_bytes();
    let via = c.closest(&all, &id, 1)[0];
    let (t, acked) = ledger.put(c.http(via), via, c.token(), index, size, 2);
    let acked = acked.ok_or_else(|| HarnessError::Unexpected {
        what: format!("PUT of {size} B via node {via}"),
        why: t.outcome.describe(),
    })?;
    let want = c.closest(&all, &id, c.rf());
    time_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let h = c.holders(&all, &id);
        want.iter().all(|w| h.contains(w))
    })
    .ok_or_else(|| HarnessError::Timeout {
        what: format!("the object on its closest nodes {want:?}"),
        after: Duration::from_secs(30),
    })?;
    Ok(acked)
}

/// Runs both pauses.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let mut spec = ClusterSpec::new("pause", 5, 3, NetKind::Loopback, o.seed);
    spec.w = Some(2);
    spec.liveness = Some(Duration::from_secs(1));
    let mut c = Cluster::start(spec)?;
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    let ledger = Ledger::new(o.seed);
    let mut r = Report::new("pauses", o.seed.0, o.long);

    // Mid-GET.
    let big = place(&c, &ledger, 1, 32 << 20)?;
    let holders = c.holders(&all, &big.id);
    let reader = all
        .iter()
        .copied()
        .find(|i| !holders.contains(i))
        .unwrap_or(0);
    let rate = 4 << 20;
    let get_bound = Duration::from_secs_f64(big.size as f64 / rate as f64) + GET_TIMEOUT;
    let before: Vec<f64> = holders.iter().map(|&h| frames_out(&c, h)).collect();
    let pids: Vec<u32> = (0..c.nodes.len()).map(|i| c.pid(i)).collect();
    let (got, serving) = std::thread::scope(|scope| {
        let path = client::object_path(&big.id);
        let addr = c.http(reader);
        let reading = scope.spawn(move || {
            client::get_paced(addr, &path, rate, get_bound + Duration::from_secs(30))
        });
        std::thread::sleep(Duration::from_secs(2));
        let serving = holders
            .iter()
            .zip(&before)
            .map(|(&h, b)| (h, frames_out(&c, h) - b))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|(_, d)| *d > 0.0)
            .map(|(h, _)| h);
        let paused = serving.map(|h| Stopped::new(pids[h]));
        std::thread::sleep(PAUSE);
        drop(paused);
        (reading.join(), serving)
    });
    let got = joined(got, "the reading thread")?;
    let v = verdict(&got, &big);
    r.note(format!(
        "mid-GET: read via node {reader} from holders {holders:?}, paused node {serving:?}: \
         {} in {:?} (bound {get_bound:?})",
        got.outcome.describe(),
        got.took
    ));
    if serving.is_none() {
        r.note("mid-GET: no holder's outbound frames moved 2 s in: nothing was paused mid-GET");
    }
    r.yes("mid_get_ok", v == Verdict::Verified && serving.is_some());
    r.goal(
        "mid_get_took",
        secs(got.took),
        "s",
        Goal::AtMost(secs(get_bound)),
    );

    // Mid-PUT.
    let size = 24 << 20;
    let index = 2;
    let body = object_bytes(o.seed, index, size);
    let id = *blake3::hash(&body).as_bytes();
    let targets = c.closest(&all, &id, 3);
    let via = all
        .iter()
        .copied()
        .find(|i| !targets.contains(i))
        .unwrap_or(0);
    let victim = targets[0];
    let upload = 8 << 20;
    let put_bound = Duration::from_secs_f64(size as f64 / upload as f64) + put_timeout(size);
    let put = std::thread::scope(|scope| {
        let (addr, token, body) = (c.http(via), c.token().to_string(), &body);
        let putting = scope.spawn(move || {
            client::put_paced(
                addr,
                Some(&token),
                body,
                upload,
                put_bound + Duration::from_secs(30),
            )
        });
        std::thread::sleep(Duration::from_millis(1500));
        let paused = Stopped::new(pids[victim]);
        let stopped_at = Instant::now();
        while !putting.is_finished() && stopped_at.elapsed() < PAUSE {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(PAUSE.saturating_sub(stopped_at.elapsed()));
        drop(paused);
        putting.join()
    });
    let put = joined(put, "the uploading thread")?;
    let put_acked = ledger.judge_put(&put, id, size, via, index, 2);
    r.note(format!(
        "mid-PUT: via node {via}, targets {targets:?}, paused node {victim}: {} in {:?} \
         (bound {put_bound:?})",
        put.outcome.describe(),
        put.took
    ));
    r.yes("mid_put_acked", put_acked.is_some());
    r.goal(
        "mid_put_took",
        secs(put.took),
        "s",
        Goal::AtMost(secs(put_bound)),
    );

    // After SIGCONT: every node reads both back.
    std::thread::sleep(Duration::from_secs(5));
    let mut reads = 0;
    let mut good = 0;
    let mut corrupt = 0;
    for a in ledger.acked() {
        for &i in &all {
            reads += 1;
            match ledger.get(c.http(i), &a, GET_TIMEOUT) {
                Verdict::Verified => good += 1,
                Verdict::Corrupt => corrupt += 1,
                Verdict::Unavailable => {}
            }
        }
    }
    r.goal(
        "reads_after_ok",
        good as f64,
        "",
        Goal::AtLeast(reads as f64),
    );
    r.zero("corrupt_reads", corrupt);
    let crashed = c.crashed();
    r.zero("crashes", crashed.len() as u64);
    for e in ledger.gets.examples() {
        r.note(e);
    }
    Ok(r)
}
