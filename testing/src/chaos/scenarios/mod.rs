//! The scenarios, each `run(&Opts) -> Report` with a bounded run time, and the table the
//! runner and the tests use. A scenario measures; it never asserts: its goals are in its
//! report, and the caller (the runner, a test, the CI script) decides what a miss means.
//!
//! Short versions (the default) fit the CI tier; `--long` runs the versions the issue
//! describes (10-minute kill loop, 10 partition cycles, ...).

use std::time::{Duration, Instant};

use super::cluster::NetKind;
use super::figures::Report;
use super::seed::Seed;
use crate::HarnessError;

pub mod bombs;
pub mod content_encoding;
pub mod flood;
pub mod kill_loop;
pub mod loss_delay;
pub mod mail_soak;
pub mod partition;
pub mod pauses;
pub mod quota_storm;
pub mod slow_loris;
pub mod soak;
pub mod store_crashes;

/// How to run a scenario.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    /// Every random choice derives from it.
    pub seed: Seed,
    /// The long version.
    pub long: bool,
    /// The network, where a scenario can run on more than one.
    pub net: Option<NetKind>,
}

/// A scenario of the table.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name the runner takes.
    pub name: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// Runs it.
    pub run: fn(&Opts) -> Result<Report, HarnessError>,
}

/// Scenarios that wait for node features: (name, what it will do, the feature it needs).
/// None today: the last three (`quota-storm`, `store-crashes`, `content-encoding`) run.
pub const PENDING: &[(&str, &str, &str)] = &[];

/// Node defects the suite found and left for the node's owners, each with the figures it
/// makes miss: `(scenario, figure, defect id)`. RELIABILITY.md "Known defects" describes
/// each with its reproducer. A known miss is printed as such and does not fail a run
/// (`--strict` makes it); a known figure that meets its goal is printed as "did not show",
/// the cue to check whether the defect is fixed and to drop it from this list.
pub const KNOWN: &[(&str, &str, &str)] = &[
    // D1-D5 were fixed in the node (RELIABILITY.md "Found and fixed"); their figures are
    // goals like any other now.
    ("quota-storm", "mesh_over_quota_max", "D6"),
];

/// Runs `s` and marks the figures known defects make miss.
pub fn run(s: &Scenario, o: &Opts) -> Result<Report, HarnessError> {
    let mut r = (s.run)(o)?;
    r.mark_known(KNOWN);
    Ok(r)
}

/// Every scenario that runs today, in the order `all` runs them.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "kill-loop",
        about: "5 nodes RF 3 W 2, PUT load through two gateways, SIGKILL a holder every 10 s",
        run: kill_loop::run,
    },
    Scenario {
        name: "partition",
        about: "3 nodes, one isolated 30 s of every 60 s, PUTs on both sides",
        run: partition::run,
    },
    Scenario {
        name: "loss-delay",
        about: "5 % and 20 % datagram loss, then 200 +- 50 ms delay, through the proxy",
        run: loss_delay::run,
    },
    Scenario {
        name: "pauses",
        about: "SIGSTOP a holder 20 s in the middle of a GET and of a PUT",
        run: pauses::run,
    },
    Scenario {
        name: "slow-loris",
        about: "500 header dribblers, 500 byte-a-second readers, 200 dribbled OAP/1 streams",
        run: slow_loris::run,
    },
    Scenario {
        name: "bombs",
        about: "zstd bombs (>= 1000:1) in COMP frames on every app protocol",
        run: bombs::run,
    },
    Scenario {
        name: "handshake-flood",
        about: "2,000 QUIC handshakes from fresh keys in a burst against one node",
        run: flood::run,
    },
    Scenario {
        name: "store-crashes",
        about: "the store on a crashing file system: 500 crash/reopen cycles, bit flips",
        run: store_crashes::run,
    },
    Scenario {
        name: "content-encoding",
        about: "PUTs with gzip/zstd bombs under Content-Encoding: 415, RSS bounded",
        run: content_encoding::run,
    },
    Scenario {
        name: "quota-storm",
        about: "1,000 tenants 10x over their write quotas beside honest ones, 2 gateways",
        run: quota_storm::run,
    },
    Scenario {
        name: "mail-soak",
        about: "4 nodes, two echoing mail through each other's mailboxes, a holder killed every 10 s",
        run: mail_soak::run,
    },
    Scenario {
        name: "soak",
        about: "3 nodes, gateway load, a kill every 2 minutes; RSS slope, fds, error rate",
        run: soak::run,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// The report of a pending scenario, if `name` is one.
pub fn pending(name: &str, o: &Opts) -> Option<Report> {
    PENDING
        .iter()
        .find(|p| p.0 == name)
        .map(|p| Report::pending(p.0, o.seed.0, o.long, p.2))
}

/// Sleeps until `at` (no-op if it passed).
pub fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// Polls `check` every `every` until it holds or `timeout` passes; how long it took, or
/// `None` if it never held.
pub fn time_until(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if check() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Replica pushes each node refused as `push_in_progress` (another push of the same object
/// was being received), and how many 429 `push_too_slow`: the evidence for defect D4.
pub fn push_refusals(c: &super::cluster::Cluster) -> String {
    let count = |i: usize, reason: &str| {
        c.nodes[i]
            .metric(&format!("oap_rejects_total{{reason=\"{reason}\"}}"))
            .ok()
            .flatten()
            .unwrap_or(0.0)
    };
    let per: Vec<String> = (0..c.nodes.len())
        .map(|i| {
            format!(
                "node {i}: {}/{}",
                count(i, "push_in_progress"),
                count(i, "push_too_slow")
            )
        })
        .collect();
    format!(
        "replica pushes refused as push_in_progress/push_too_slow (since each node's last \
         start): {}",
        per.join(", ")
    )
}

/// One note per lost object (the first ten): what the final read said and which nodes
/// still have its file.
pub fn note_lost(
    r: &mut Report,
    c: &super::cluster::Cluster,
    lost: &[(super::load::Acked, String)],
) {
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    for (obj, why) in lost.iter().take(10) {
        r.note(format!(
            "lost: b3:{} ({} B, #{} acked via node {} at {:?}): {why}; on disk at {:?}",
            hex::encode(obj.id),
            obj.size,
            obj.index,
            obj.via,
            obj.at,
            c.holders(&all, &obj.id)
        ));
    }
}

/// A thread's result, or an error naming the thread if it panicked.
pub fn joined<T>(r: std::thread::Result<T>, what: &str) -> Result<T, HarnessError> {
    r.map_err(|_| HarnessError::Unexpected {
        what: what.into(),
        why: "the thread panicked".into(),
    })
}

/// Seconds as a float, for figures.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
