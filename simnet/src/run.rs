//! Running one scenario end to end: print its parameters, build the network, advance it with
//! a progress bar, and write the outputs.
//!
//! The preamble goes to stderr before anything runs (TigerBeetle's VOPR: the seed and every
//! derived parameter first), so a run that dies still says how to reproduce it. The progress
//! bar is driven by virtual time, chunk by chunk; it reads the wall clock only to show a
//! rate, through [`measure`](crate::measure).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use crate::Error;
use crate::engine::{Finished, Sim};
use crate::measure::{Stopwatch, peak_rss_bytes};
use crate::output::{self, Summary};
use crate::scenario::Scenario;

/// How to run a scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where to write the outputs (`None`: write nothing).
    pub out: Option<PathBuf>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Print the parameter preamble on stderr.
    pub preamble: bool,
    /// Check every node's invariants after every step (slow).
    pub check_invariants: bool,
}

/// Progress chunks per run: the bar advances in these steps of virtual time.
const CHUNKS: u32 = 200;

fn progress_line(done: f64, sim: &Sim, wall: f64) -> String {
    let width = 30;
    let filled = ((done * width as f64) as usize).min(width);
    format!(
        "[{}{}] {:>5.1}%  t = {:.0} s  alive = {}  events = {}  ({:.2} M events/s)",
        "#".repeat(filled),
        " ".repeat(width - filled),
        done * 100.0,
        sim.now().as_duration().as_secs_f64(),
        sim.alive(),
        sim.events(),
        sim.events() as f64 / wall.max(1e-9) / 1e6,
    )
}

/// Runs `scenario` and returns its finished state and summary; writes the outputs if
/// `opts.out` is set.
pub fn run_scenario(scenario: Scenario, opts: &RunOptions) -> Result<(Finished, Summary), Error> {
    if opts.preamble {
        eprintln!("simnet: seed = {}", scenario.seed);
        eprint!("{}", scenario.describe());
        if let Some(out) = &opts.out {
            eprintln!("out = {}", out.display());
        }
    }
    let watch = Stopwatch::start();
    let mut sim = Sim::new(scenario, opts.check_invariants);
    let tty = std::io::stderr().is_terminal();
    let end = sim.end();
    let mut last_decile = 0;
    for c in 1..=CHUNKS {
        let until = overlay::Instant::ZERO + end.as_duration() * c / CHUNKS;
        sim.run_until(until)?;
        if opts.progress {
            let done = f64::from(c) / f64::from(CHUNKS);
            let line = progress_line(done, &sim, watch.seconds());
            if tty {
                eprint!("\r{line}");
                let _ = std::io::stderr().flush();
            } else if (c * 10 / CHUNKS) > last_decile {
                last_decile = c * 10 / CHUNKS;
                eprintln!("{line}");
            }
        }
    }
    if opts.progress && tty {
        eprintln!();
    }
    sim.run()?;
    let finished = sim.finish();
    let wall = watch.seconds();
    let summary = Summary::new(&finished, wall, peak_rss_bytes());
    if let Some(dir) = &opts.out {
        output::write_all(dir, &finished, &summary)?;
    }
    Ok((finished, summary))
}
