//! Store crashes: the node's object store on a crash-injecting file system
//! (`node::store::SimFs`), 500 crash/reopen cycles (5,000 long) with random puts, removes,
//! reads and index snapshots between them and a bit flipped on the disk every 25 cycles.
//!
//! The loop is the node crate's own (`node::store::crashloop`, behind its `crash-loop`
//! feature; the store's unit test runs the same loop), so the runner drives the real store
//! code, not a model of it. A crash stops the machine at a random mutating operation (a
//! write, an fsync, a create, a rename, a remove, a directory fsync): every sync point is
//! hit, and the figures say how often. What a reboot keeps beyond what was made durable is
//! random too (a prefix of a file's unsynced bytes; a directory's last visible entries).
//!
//! Goals: after every reopen each acknowledged object present and verified; nothing
//! unacknowledged visible as an object (everything indexed is whole); no temporary file
//! left; every flipped bit caught on read, the object dropped and never served; every
//! reopen succeeds; crashes at each kind of sync point.

use super::Opts;
use crate::HarnessError;
use crate::chaos::figures::{Goal, Report};
use node::store::crashloop::{self, CrashLoop};

/// The sync points a run must have crashed at, each at least once.
const SYNC_POINTS: [&str; 5] = ["write", "sync_all", "create", "rename", "sync_dir"];

/// Runs the crash loop.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let cycles = if o.long { 5000 } else { 500 };
    let seed = o.seed.derive("store-crashes");
    println!("chaos: store crash loop, {cycles} cycles, store seed {seed}");
    let x = crashloop::run(&CrashLoop { seed, cycles });
    let mut r = Report::new("store-crashes", o.seed.0, o.long);
    r.goal(
        "cycles",
        x.cycles as f64,
        "",
        Goal::AtLeast(f64::from(cycles)),
    );
    r.zero("acked_lost", x.lost);
    r.zero("acked_wrong", x.wrong);
    r.zero("unacked_visible", x.half_visible);
    r.zero("temporaries_left", x.temporaries);
    r.zero("flips_served", x.flips_served);
    r.zero("reopen_failures", x.reopen_failures);
    let hit = SYNC_POINTS
        .iter()
        .filter(|p| x.crash_points.get(*p).is_some_and(|&n| n > 0))
        .count();
    r.goal(
        "sync_points_hit",
        hit as f64,
        "",
        Goal::AtLeast(SYNC_POINTS.len() as f64),
    );
    r.goal(
        "flips_caught",
        x.flips_caught as f64,
        "",
        Goal::AtLeast(1.0),
    );
    r.info("crashes", x.crashes as f64, "");
    r.info("puts", x.puts as f64, "");
    r.info("acked", x.acked as f64, "");
    r.info("cut_by_crash", x.cut as f64, "");
    r.info("removes", x.removes as f64, "");
    r.info("snapshot_starts", x.snapshots as f64, "");
    r.info("held_at_end", x.held as f64, "");
    r.note(format!(
        "store seed {seed}; crashes by the operation they stopped at: {:?}",
        x.crash_points
    ));
    for f in &x.failures {
        r.note(format!("broken: {f}"));
    }
    Ok(r)
}
