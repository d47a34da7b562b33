//! The load the scenarios put on the gateways, and the ledger that judges it.
//!
//! Writers PUT objects whose bytes come from `(seed, index)` and record every 201 in the
//! [`Ledger`]; a 201 is a promise (W durable copies), so each acknowledged object must read
//! back, byte for byte, until the end of the run. Readers GET acknowledged objects while the
//! faults go on and classify each answer: verified, corrupt (a 200 whose bytes do not hash
//! to the id: never acceptable), or unavailable. Only the id and size are kept per object:
//! a body is checked by hashing it, since the id is the BLAKE3 hash of the bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use super::client::{self, Outcome, Timed};
use super::figures::Report;
use super::seed::{Seed, object_bytes};

/// How long a PUT of `size` bytes may take: the node's write wait (10 s + size at
/// 4 MiB/s, ARCHITECTURE.md "The data path of a PUT") plus 10 s for the upload and the
/// answer on a loaded 2-core machine.
pub fn put_timeout(size: usize) -> Duration {
    Duration::from_secs(20) + Duration::from_secs_f64(size as f64 / (4u64 << 20) as f64)
}

/// How long a GET may take: a search (within its timeout) and a transfer that may fail over
/// once after the transport's 10 s I/O timeout.
pub const GET_TIMEOUT: Duration = Duration::from_secs(30);

/// One acknowledged object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Its id (BLAKE3 of the bytes).
    pub id: [u8; 32],
    /// Its size.
    pub size: usize,
    /// Which gateway acknowledged it.
    pub via: usize,
    /// The object's index (its bytes are `object_bytes(seed, index, size)`).
    pub index: u64,
    /// When the 201 came, since the ledger was made.
    pub at: Duration,
}

/// Tallies of one kind of operation.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answered as hoped (201 for a PUT, a verified 200 for a GET).
    pub ok: AtomicU64,
    /// Answered with another status (a clean failure).
    pub refused: AtomicU64,
    /// A 200 whose bytes were not the object's.
    pub corrupt: AtomicU64,
    /// No answer within the client's timeout.
    pub timed_out: AtomicU64,
    /// The connection failed without an answer.
    pub failed: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    latencies: Mutex<Vec<f64>>,
    examples: Mutex<Vec<String>>,
}

/// How many failures of each kind a tally keeps as examples for the report.
const EXAMPLES_MAX: usize = 8;

impl Tally {
    /// Records one operation.
    pub fn record(&self, t: &Timed, good: bool, corrupt: bool, what: &str) {
        let c = match (&t.outcome, good, corrupt) {
            (_, _, true) => &self.corrupt,
            (Outcome::Answered(_), true, _) => &self.ok,
            (Outcome::Answered(_), false, _) => &self.refused,
            (Outcome::TimedOut { .. }, ..) => &self.timed_out,
            (Outcome::Failed(_), ..) => &self.failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = t.outcome.status() {
            *lock(&self.statuses).entry(s).or_insert(0) += 1;
        }
        lock(&self.latencies).push(t.took.as_secs_f64());
        if !good || corrupt {
            let mut ex = lock(&self.examples);
            if ex.len() < EXAMPLES_MAX {
                ex.push(format!(
                    "{what}: {} after {:?}",
                    t.outcome.describe(),
                    t.took
                ));
            }
        }
    }

    /// Every operation recorded.
    pub fn total(&self) -> u64 {
        [
            &self.ok,
            &self.refused,
            &self.corrupt,
            &self.timed_out,
            &self.failed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// `ok` as a number.
    pub fn oks(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Everything but `ok`.
    pub fn not_ok(&self) -> u64 {
        self.total() - self.oks()
    }

    /// Count of one field.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Statuses seen, with counts.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        lock(&self.statuses).clone()
    }

    /// The `q` quantile of the latencies, seconds.
    pub fn latency(&self, q: f64) -> f64 {
        super::figures::quantile(&mut lock(&self.latencies).clone(), q)
    }

    /// A few failures, described.
    pub fn examples(&self) -> Vec<String> {
        lock(&self.examples).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The acknowledged objects of a run.
#[derive(Debug)]
pub struct Ledger {
    seed: Seed,
    started: Instant,
    acked: Mutex<Vec<Acked>>,
    /// 201s that reported fewer than W replicas: a broken promise even if the data lives.
    pub thin: AtomicU64,
    /// 503 `insufficient_replicas` answered within a second: no write wait ran out, every
    /// placement failed at once (see RELIABILITY.md, defect D4).
    pub fast_503: AtomicU64,
    /// The PUTs.
    pub puts: Tally,
    /// The GETs of acknowledged objects during the run.
    pub gets: Tally,
}

impl Ledger {
    /// An empty ledger for a run with `seed`.
    pub fn new(seed: Seed) -> Arc<Ledger> {
        Arc::new(Ledger {
            seed,
            started: Instant::now(),
            acked: Mutex::new(Vec::new()),
            thin: AtomicU64::new(0),
            fast_503: AtomicU64::new(0),
            puts: Tally::default(),
            gets: Tally::default(),
        })
    }

    /// The acknowledged objects so far.
    pub fn acked(&self) -> Vec<Acked> {
        lock(&self.acked).clone()
    }

    /// How many.
    pub fn len(&self) -> usize {
        lock(&self.acked).len()
    }

    /// Whether none yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The run's seed.
    pub fn seed(&self) -> Seed {
        self.seed
    }

    /// PUTs object `index` of `size` bytes through `addr` (gateway number `via`); records
    /// the outcome, and the object if acknowledged. `w` is the quorum a 201 promises.
    pub fn put(
        &self,
        addr: SocketAddr,
        via: usize,
        token: &str,
        index: u64,
        size: usize,
        w: u64,
    ) -> (Timed, Option<Acked>) {
        let body = object_bytes(self.seed, index, size);
        let id = *blake3::hash(&body).as_bytes();
        let t = client::put(addr, Some(token), &body, put_timeout(size));
        let acked = self.judge_put(&t, id, size, via, index, w);
        (t, acked)
    }

    /// Records a finished PUT of object `(index, size)` with id `id`.
    pub fn judge_put(
        &self,
        t: &Timed,
        id: [u8; 32],
        size: usize,
        via: usize,
        index: u64,
        w: u64,
    ) -> Option<Acked> {
        let what = format!("PUT #{index} ({size} B) via {via}");
        let Outcome::Answered(a) = &t.outcome else {
            self.puts.record(t, false, false, &what);
            return None;
        };
        if a.status != 201 {
            let insufficient = a.json()["code"] == "insufficient_replicas";
            if a.status == 503 && insufficient && t.took < Duration::from_secs(1) {
                self.fast_503.fetch_add(1, Ordering::Relaxed);
            }
            self.puts.record(t, false, false, &what);
            return None;
        }
        let v = a.json();
        let id_ok = v["id"].as_str() == Some(&format!("b3:{}", hex::encode(id)));
        if !id_ok {
            // A 201 naming another id would be a gateway bug; count it as corrupt.
            self.puts
                .record(t, false, true, &format!("{what}: 201 for {v}"));
            return None;
        }
        if v["replicas"].as_u64().unwrap_or(0) < w {
            self.thin.fetch_add(1, Ordering::Relaxed);
        }
        self.puts.record(t, true, false, &what);
        let acked = Acked {
            id,
            size,
            via,
            index,
            at: self.started.elapsed(),
        };
        lock(&self.acked).push(acked);
        Some(acked)
    }

    /// The goals every write promise has: no acknowledged object `lost` at the end, no
    /// corrupt read (during the run, or `corrupt_final` in the final check), no 201 below W.
    pub fn promise_goals(&self, r: &mut Report, lost: &[(Acked, String)], corrupt_final: u64) {
        r.zero("acked_lost", lost.len() as u64);
        let corrupt = Tally::get(&self.gets.corrupt) + Tally::get(&self.puts.corrupt);
        r.zero("corrupt_reads", corrupt + corrupt_final);
        r.zero("acks_below_w", Tally::get(&self.thin));
    }

    /// GETs an acknowledged object through `addr` and records the verdict.
    pub fn get(&self, addr: SocketAddr, obj: &Acked, timeout: Duration) -> Verdict {
        let t = client::get_object(addr, &obj.id, timeout);
        let v = verdict(&t, obj);
        self.gets.record(
            &t,
            v == Verdict::Verified,
            v == Verdict::Corrupt,
            &format!("GET #{} via {addr}", obj.index),
        );
        v
    }
}

/// What a GET of an acknowledged object showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 200 and the bytes hash to the id.
    Verified,
    /// 200 and they do not (or the length is wrong).
    Corrupt,
    /// Anything else.
    Unavailable,
}

/// Judges a GET of `obj`.
pub fn verdict(t: &Timed, obj: &Acked) -> Verdict {
    match &t.outcome {
        Outcome::Answered(a) if a.status == 200 => {
            if a.body.len() == obj.size && blake3::hash(&a.body).as_bytes() == &obj.id {
                Verdict::Verified
            } else {
                Verdict::Corrupt
            }
        }
        _ => Verdict::Unavailable,
    }
}

/// A size drawn log-uniformly from `lo..=hi`: as many 4-8 KiB objects as 2-4 MiB ones.
pub fn log_uniform(rng: &mut impl Rng, lo: usize, hi: usize) -> usize {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    (rng.gen_range(a..=b).exp() as usize).clamp(lo, hi)
}

/// A stop flag shared by the load threads.
pub type Stop = Arc<AtomicBool>;

/// A fresh stop flag.
pub fn stop_flag() -> Stop {
    Arc::new(AtomicBool::new(false))
}

/// What a writer thread does.
#[derive(Debug, Clone)]
pub struct Writer {
    /// The gateway.
    pub addr: SocketAddr,
    /// Its number in the scenario (names its RNG stream and object indexes).
    pub via: usize,
    /// The write token.
    pub token: String,
    /// Sizes, log-uniform in `lo..=hi`.
    pub sizes: (usize, usize),
    /// The quorum a 201 promises.
    pub w: u64,
    /// Pause between PUTs.
    pub gap: Duration,
    /// `Some(n)`: cycle over the same `n` objects (a store that stops growing, so the
    /// soak's memory figures measure leaks rather than a growing index); `None`: every
    /// PUT a new object.
    pub pool: Option<u64>,
}

impl Writer {
    /// A writer through node `via` of `c`, with the cluster's token, every PUT a new object.
    pub fn on(
        c: &super::cluster::Cluster,
        via: usize,
        sizes: (usize, usize),
        w: u64,
        gap: Duration,
    ) -> Writer {
        Writer {
            addr: c.http(via),
            via,
            token: c.token().to_string(),
            sizes,
            w,
            gap,
            pool: None,
        }
    }
}

/// The size of object `index` of a run with `seed`: log-uniform in `sizes`, the same every
/// time it is asked (an object re-PUT from a pool is the same object).
pub fn size_of(seed: Seed, index: u64, sizes: (usize, usize)) -> usize {
    log_uniform(&mut seed.rng(&format!("size-{index}")), sizes.0, sizes.1)
}

/// A writer thread: PUTs through its gateway until `stop`, object indexes starting at
/// `via << 32` (wrapping at the pool's size, if it has one).
pub fn spawn_writer(ledger: Arc<Ledger>, w: Writer, stop: Stop) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let base = (w.via as u64) << 32;
        let mut k = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let index = base + w.pool.map_or(k, |n| k % n.max(1));
            let size = size_of(ledger.seed(), index, w.sizes);
            ledger.put(w.addr, w.via, &w.token, index, size, w.w);
            k += 1;
            if !w.gap.is_zero() {
                std::thread::sleep(w.gap);
            }
        }
    })
}

/// A reader thread: GETs a random acknowledged object through one of `addrs` (round robin)
/// until `stop`, pausing `gap` between GETs.
pub fn spawn_reader(
    ledger: Arc<Ledger>,
    addrs: Vec<SocketAddr>,
    gap: Duration,
    stop: Stop,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rng = ledger.seed().rng("reader");
        let mut k = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let acked = ledger.acked();
            if acked.is_empty() || addrs.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let obj = acked[rng.gen_range(0..acked.len())];
            ledger.get(addrs[k % addrs.len()], &obj, GET_TIMEOUT);
            k += 1;
            std::thread::sleep(gap);
        }
    })
}

/// The final check: every acknowledged object read through `addrs` (spread over them),
/// each given `attempts` tries a few seconds apart. Returns the objects that never read
/// back verified (lost) and how many reads returned wrong bytes (corrupt).
pub fn verify_all(
    ledger: &Ledger,
    addrs: &[SocketAddr],
    attempts: usize,
) -> (Vec<(Acked, String)>, u64) {
    let acked = ledger.acked();
    let corrupt = AtomicU64::new(0);
    let lost = Mutex::new(Vec::new());
    let workers = addrs.len().clamp(1, 4);
    std::thread::scope(|scope| {
        for w in 0..workers {
            let (acked, corrupt, lost) = (&acked, &corrupt, &lost);
            scope.spawn(move || {
                for (k, obj) in acked.iter().enumerate().skip(w).step_by(workers) {
                    let mut last = String::new();
                    let mut ok = false;
                    for a in 0..attempts {
                        let addr = addrs[(k + a) % addrs.len()];
                        let t = client::get_object(addr, &obj.id, GET_TIMEOUT);
                        match verdict(&t, obj) {
                            Verdict::Verified => {
                                ok = true;
                                break;
                            }
                            Verdict::Corrupt => {
                                corrupt.fetch_add(1, Ordering::Relaxed);
                                last = format!("corrupt bytes via {addr}");
                            }
                            Verdict::Unavailable => {
                                last = format!("{} via {addr}", t.outcome.describe());
                            }
                        }
                        std::thread::sleep(Duration::from_secs(2));
                    }
                    if !ok {
                        lock(lost).push((*obj, last));
                    }
                }
            });
        }
    });
    let lost = lost
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    (lost, corrupt.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_stay_in_range_and_spread() {
        let mut rng = Seed(3).rng("t");
        let v: Vec<usize> = (0..2000)
            .map(|_| log_uniform(&mut rng, 4 << 10, 4 << 20))
            .collect();
        assert!(v.iter().all(|&s| (4 << 10..=4 << 20).contains(&s)));
        let small = v.iter().filter(|&&s| s < 64 << 10).count();
        let large = v.iter().filter(|&&s| s > 1 << 20).count();
        assert!(small > 600 && large > 200, "{small} small, {large} large");
    }
}
