//! The store's crash loop as an entry point: the store on a [`SimFs`] that stops at a
//! random mutating operation, reopened after every crash, with random puts, removes,
//! reads and index snapshots in between and now and then a bit flipped on the disk.
//!
//! It checks what the store promises after each reopen: every acknowledged object is there
//! and reads back exactly; whatever else is indexed is a whole object, never a half-written
//! one; no temporary file outlives an open; a flipped bit is caught, the object dropped and
//! never served. It never panics on a broken promise: it counts it and keeps the first few
//! descriptions, so the store's own test can assert on the counts and the chaos runner
//! (`testing`, feature `crash-loop`) can print them as figures. It changes nothing in the
//! store; it only drives its public API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Hash, SimFs, Store, StoreError, id_string};

/// Descriptions of broken promises kept in a report.
pub const FAILURES_MAX: usize = 10;

/// How to run the loop.
#[derive(Debug, Clone, Copy)]
pub struct CrashLoop {
    /// Every random choice (operations, sizes, bytes, crash points, what a reboot keeps).
    pub seed: u64,
    /// Crash/reopen cycles.
    pub cycles: u32,
}

/// What the loop did, and every promise it saw broken (all zero when the store keeps them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Cycles run (each ends in a crash, or in 40 operations and a clean stop).
    pub cycles: u64,
    /// Cycles that ended in a crash.
    pub crashes: u64,
    /// Which mutating operation each crash stopped at.
    pub crash_points: BTreeMap<&'static str, u64>,
    /// Puts attempted.
    pub puts: u64,
    /// Puts acknowledged (`Ok` with the id).
    pub acked: u64,
    /// Puts cut by a crash (not acknowledged).
    pub cut: u64,
    /// Acknowledged objects released again (no longer owed).
    pub removes: u64,
    /// Reopens that started from an index snapshot instead of a walk of the disk.
    pub snapshots: u64,
    /// Bits flipped in stored objects.
    pub flips: u64,
    /// Flipped objects whose read failed as corrupt and that were dropped, or rewritten
    /// from the verified bytes kept in memory (`healed`).
    pub flips_caught: u64,
    /// Of those, the ones rewritten: still held, and still acknowledged (they must survive
    /// the crashes that follow).
    pub healed: u64,
    /// Objects held at the end.
    pub held: u64,
    /// Broken: acknowledged objects missing after a reopen.
    pub lost: u64,
    /// Broken: acknowledged objects that read back wrong (or not at all).
    pub wrong: u64,
    /// Broken: objects indexed that are not whole (unacknowledged writes visible).
    pub half_visible: u64,
    /// Broken: reopens that left temporary files behind.
    pub temporaries: u64,
    /// Broken: reads that served a flipped object, or kept it indexed.
    pub flips_served: u64,
    /// Broken: reopens (or walks of the disk) that failed.
    pub reopen_failures: u64,
    /// The first [`FAILURES_MAX`] broken promises, described.
    pub failures: Vec<String>,
}

impl CrashReport {
    /// Broken promises of every kind.
    pub fn violations(&self) -> u64 {
        self.lost
            + self.wrong
            + self.half_visible
            + self.temporaries
            + self.flips_served
            + self.reopen_failures
    }

    fn fail(&mut self, what: String) {
        if self.failures.len() < FAILURES_MAX {
            self.failures.push(what);
        }
    }
}

/// A xorshift generator: the loop's only source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Acknowledged objects and their bytes.
type Acked = BTreeMap<Hash, Vec<u8>>;

/// The loop's state across cycles: the disk, what is owed, the randomness, the report.
struct Loop {
    sim: SimFs,
    acked: Acked,
    rng: Rng,
    r: CrashReport,
}

/// Runs the loop: `cfg.cycles` crash/reopen cycles. Deterministic for a seed.
pub fn run(cfg: &CrashLoop) -> CrashReport {
    let mut l = Loop {
        sim: SimFs::new(cfg.seed),
        acked: Acked::new(),
        rng: Rng(cfg.seed | 1),
        r: CrashReport::default(),
    };
    let data_dir = PathBuf::from("/sim/node");
    for cycle in 0..cfg.cycles {
        l.r.cycles += 1;
        let store = match Store::open_on(Arc::new(l.sim.clone()), &data_dir, 1 << 30) {
            Ok(s) => s,
            Err(e) => {
                l.r.reopen_failures += 1;
                l.r.fail(format!("cycle {cycle}: reopen failed: {e}"));
                l.sim.reboot();
                continue;
            }
        };
        if !l.check_reopened(&store, cycle) {
            l.sim.reboot();
            continue;
        }
        if cycle % 25 == 24 && !l.acked.is_empty() {
            l.flip_one(&store, cycle);
        }
        l.work(&store, cycle);
        if l.sim.crashed() {
            l.r.crashes += 1;
            let at = l.sim.stopped_at().unwrap_or("unknown");
            *l.r.crash_points.entry(at).or_insert(0) += 1;
        }
        drop(store);
        l.sim.reboot();
    }
    l.r.held = l.acked.len() as u64;
    l.r
}

impl Loop {
    /// The checks after a reopen; `false` if the store could not be brought up to date.
    fn check_reopened(&mut self, store: &Store, cycle: u32) -> bool {
        let Loop { sim, acked, r, .. } = self;
        // From a snapshot, before the walk: every acknowledged object is found already
        // (looked up on disk if the snapshot was older than it).
        if !store.is_reconciled() {
            r.snapshots += 1;
            for h in acked.keys() {
                if store.size(h).is_none() {
                    r.lost += 1;
                    r.fail(format!(
                        "cycle {cycle}: {} missing before the walk",
                        id_string(h)
                    ));
                }
            }
            if let Err(e) = store.reconcile() {
                r.reopen_failures += 1;
                r.fail(format!("cycle {cycle}: walk failed: {e}"));
                return false;
            }
        }
        let tmp: Vec<PathBuf> = sim
            .files()
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".tmp"))
            .collect();
        if !tmp.is_empty() {
            r.temporaries += 1;
            r.fail(format!("cycle {cycle}: temporaries left: {tmp:?}"));
        }
        // Every acknowledged object is there and reads back exactly; one that is not is
        // counted once and no longer owed.
        acked.retain(|h, data| {
            if store.size(h) != Some(data.len() as u64) {
                r.lost += 1;
                r.fail(format!("cycle {cycle}: acknowledged {} lost", id_string(h)));
                return false;
            }
            match store.read_verified(h, 0, data.len() as u64) {
                Ok(b) if b == *data => true,
                got => {
                    r.wrong += 1;
                    r.fail(format!(
                        "cycle {cycle}: {} reads back wrong: {:?}",
                        id_string(h),
                        got.err()
                    ));
                    false
                }
            }
        });
        // Whatever else is indexed is a whole object, never a half-written one.
        for (h, size) in store.list() {
            if acked.contains_key(&h) {
                continue; // read whole just above
            }
            let got = store.read_verified(&h, 0, size);
            if !got.is_ok_and(|b| blake3::hash(&b).as_bytes() == &h) {
                r.half_visible += 1;
                r.fail(format!(
                    "cycle {cycle}: {} indexed but not whole",
                    id_string(&h)
                ));
            }
        }
        true
    }

    /// Rots a bit of a stored object: it must be caught and never served; then dropped, or
    /// rewritten whole from the verified bytes kept in memory.
    fn flip_one(&mut self, store: &Store, cycle: u32) {
        let Loop { sim, acked, rng, r } = self;
        let pick = rng.below(acked.len() as u64) as usize;
        let Some((h, len)) = acked.iter().nth(pick).map(|(h, d)| (*h, d.len() as u64)) else {
            return;
        };
        if len == 0 {
            return;
        }
        let at = rng.below(len);
        let Some(path) = store.data_file(&h) else {
            return; // an amnesia store has no disk (never on a SimFs)
        };
        // Every other object is out of the memory cache: its rot is dropped, the others'
        // rewritten from there, so both ways are taken.
        if r.flips % 2 == 0 {
            store.forget_cached(&h);
        }
        if sim.flip(&path, at).is_err() {
            return;
        }
        r.flips += 1;
        let got = store.read_verified(&h, 0, len);
        let caught = matches!(got, Err(StoreError::Corrupt));
        if caught && store.size(&h).is_none() {
            r.flips_caught += 1;
        } else if caught
            && store
                .read_verified(&h, 0, len)
                .is_ok_and(|b| acked.get(&h).is_some_and(|want| *want == b))
        {
            r.flips_caught += 1;
            r.healed += 1;
            return;
        } else {
            r.flips_served += 1;
            r.fail(format!(
                "cycle {cycle}: a flipped bit of {} at {at} was not caught: read {:?}, still \
             indexed: {}",
                id_string(&h),
                got.map(|_| "served"),
                store.size(&h).is_some()
            ));
        }
        acked.remove(&h);
    }

    /// Random work until the machine stops (or 40 operations).
    fn work(&mut self, store: &Store, cycle: u32) {
        let Loop { sim, acked, rng, r } = self;
        sim.fail_after(1 + rng.below(120));
        for _ in 0..40 {
            // Keep the set small: the checks after each reopen read all of it.
            let op = if acked.len() > 40 { 6 } else { rng.below(10) };
            match op {
                0..=5 => {
                    let len = match rng.below(4) {
                        0 => rng.below(64) as usize,
                        1 => 1024 + rng.below(4096) as usize,
                        _ => rng.below(64_000) as usize,
                    };
                    let data = bytes(rng, len);
                    r.puts += 1;
                    match store.put(&data, None) {
                        Ok(h) => {
                            r.acked += 1;
                            acked.insert(h, data);
                        }
                        Err(_) => r.cut += 1,
                    }
                }
                6 | 7 if !acked.is_empty() => {
                    let pick = rng.below(acked.len() as u64) as usize;
                    if let Some(h) = acked.keys().nth(pick).copied() {
                        // A release need not be durable: the object may come back, but it is
                        // no longer owed.
                        store.remove(&h);
                        acked.remove(&h);
                        r.removes += 1;
                    }
                }
                8 if rng.below(3) == 0 => {
                    let _ = store.save_index();
                }
                _ => {
                    if let Some((h, data)) = acked.iter().next() {
                        if let Ok(b) = store.read_verified(h, 0, data.len() as u64) {
                            if b != *data {
                                r.wrong += 1;
                                r.fail(format!("cycle {cycle}: a read served wrong bytes"));
                            }
                        }
                    }
                }
            }
            if sim.crashed() {
                break;
            }
        }
    }
}
