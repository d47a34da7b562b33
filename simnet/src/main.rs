//! The `simnet` command line: `run` one scenario, `sweep` a parameter grid, `swarm` many
//! seeds of random faults, `check` that scenario files parse.
//!
//! Exit codes tell failures apart (the checkers report through them): 0 success, 2 a
//! scenario or argument error, 3 a broken invariant (a bug in overlay or simnet; also a
//! swarm seed that failed in a way no known defect explains, or any failed seed with
//! `--strict`, or a soak that failed its checks or its state bound), 4 an output that could not be written, 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use simnet::scenario::{self, Override};
use simnet::swarm::profile::Bounds;
use simnet::{Error, RunOptions};

#[derive(Debug, Parser)]
#[command(
    name = "simnet",
    version,
    about = "Deterministic simulator of the macronode DHT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario and write summary.json, timeseries.csv and SVG plots.
    Run {
        /// The scenario file (TOML; see SCENARIOS.md).
        scenario: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory (default: simnet-out/<scenario name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a scenario key, e.g. --set dht.k=10 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Check every node's invariants after every step (slow).
        #[arg(long)]
        check_invariants: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Run every point of a parameter grid; one row per run in OUT/sweep.csv.
    Sweep {
        /// The scenario file.
        scenario: PathBuf,
        /// A grid axis, e.g. --set dht.k=10,20 (repeatable; first axis slowest).
        #[arg(long = "set", value_name = "KEY=V1,V2,...", required = true)]
        sets: Vec<String>,
        /// Override the scenario's seed for every run.
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Check every node's invariants after every step (slow).
        #[arg(long)]
        check_invariants: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// Points run at once (default: one per core). Each run needs its own memory.
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Run many seeds of random faults over small networks, judged by checkers outside the
    /// nodes; one line per seed, exit status 3 if any seed failed.
    Swarm {
        /// Seeds to run.
        #[arg(long, default_value_t = 200)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Fewest nodes per seed.
        #[arg(long, default_value_t = 20)]
        nodes_min: u32,
        /// Most nodes per seed.
        #[arg(long, default_value_t = 50)]
        nodes_max: u32,
        /// Fail on seeds a known defect explains, too.
        #[arg(long)]
        strict: bool,
    },
    /// Parse and validate scenario files, printing their parameters.
    Check {
        /// Scenario files.
        scenarios: Vec<PathBuf>,
    },
}

fn overrides(sets: &[String], seed: Option<u64>) -> Result<Vec<(String, Vec<toml::Value>)>, Error> {
    let mut out = Vec::new();
    for s in sets {
        out.push(scenario::parse_set_arg(s)?);
    }
    if let Some(seed) = seed {
        let v = i64::try_from(seed).map_err(|_| scenario::ScenarioError::Set {
            arg: format!("--seed {seed}"),
            reason: "seeds above 2^63 - 1 cannot be written in TOML".into(),
        })?;
        out.push(("seed".into(), vec![toml::Value::Integer(v)]));
    }
    Ok(out)
}

fn single(sets: Vec<(String, Vec<toml::Value>)>) -> Result<Vec<Override>, Error> {
    let mut out = Vec::new();
    for (key, values) in sets {
        let [value] =
            <[toml::Value; 1]>::try_from(values).map_err(|_| scenario::ScenarioError::Set {
                arg: key.clone(),
                reason: "`run` takes one value per key; use `sweep` for lists".into(),
            })?;
        out.push(Override { key, value });
    }
    Ok(out)
}

fn execute(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Run {
            scenario: path,
            seed,
            out,
            sets,
            check_invariants,
            quiet,
        } => {
            let ov = single(overrides(&sets, seed)?)?;
            let sc = scenario::load(&path, &ov)?;
            let out = out.unwrap_or_else(|| PathBuf::from("simnet-out").join(&sc.name));
            let opts = RunOptions {
                out: Some(out.clone()),
                progress: !quiet,
                preamble: true,
                check_invariants,
            };
            let (_, summary) = simnet::run_scenario(sc, &opts)?;
            eprintln!(
                "done: {} lookups, success {:.4}, exact {:.4}, hops mean {:.3}, {} events in {:.1} s; outputs in {}",
                summary.lookups,
                summary.lookup_success_rate,
                summary.lookup_exact_rate,
                summary.hops_mean,
                summary.events,
                summary.wall_seconds,
                out.display()
            );
            if let Some(soak) = &summary.soak {
                println!("{}", soak.line());
                if !soak.pass {
                    return Err(Error::SoakFailed {
                        violations: soak.violations,
                        worst_pct: soak.worst_change * 100.0,
                    });
                }
            }
        }
        Command::Sweep {
            scenario: path,
            sets,
            seed,
            out,
            check_invariants,
            quiet,
            jobs,
        } => {
            let axes = overrides(&sets, None)?;
            let common = single(overrides(&[], seed)?)?;
            let grid = scenario::expand_grid(&axes);
            let opts = RunOptions {
                out: None,
                progress: !quiet,
                preamble: !quiet,
                check_invariants,
            };
            let jobs = jobs.unwrap_or_else(simnet::sweep::default_jobs);
            simnet::sweep::sweep(&path, &grid, &common, &out, &opts, jobs)?;
            eprintln!(
                "done: {} runs; {}",
                grid.len(),
                out.join("sweep.csv").display()
            );
        }
        Command::Swarm {
            seeds,
            from,
            nodes_min,
            nodes_max,
            strict,
        } => {
            let bounds = Bounds {
                nodes_min,
                nodes_max,
            };
            let (mut failed, mut known, mut lookups, mut exact) = (0u64, 0u64, 0u64, 0u64);
            for seed in from..from.saturating_add(seeds) {
                let report = simnet::swarm::run_seed(seed, bounds)?;
                println!("{}", report.line(bounds));
                failed += u64::from(report.failed_unknown() || (strict && !report.passed()));
                known += u64::from(report.known.is_some());
                lookups += report.lookups;
                exact += report.exact;
            }
            eprintln!(
                "swarm: {seeds} seeds, {failed} failed, {known} with known defects; liveness lookups exact {exact}/{lookups}"
            );
            if failed > 0 {
                return Err(Error::SwarmFailed { failed });
            }
        }
        Command::Check { scenarios } => {
            for path in scenarios {
                let sc = scenario::load(&path, &[])?;
                println!("# {}", path.display());
                print!("{}", sc.describe());
            }
        }
    }
    Ok(())
}

/// The glibc tunable that backs malloc's heap with transparent huge pages where the
/// kernel offers them only on request (`madvise` mode, the common default).
#[cfg(target_os = "linux")]
const HUGE_PAGES_TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// Re-executes simnet with [`HUGE_PAGES_TUNABLE`] unless `GLIBC_TUNABLES` is already set
/// (by the user, or by this re-exec: so it happens at most once). A large run reads its
/// gigabytes of tables and links at random, and with 4 KiB pages nearly every such read
/// also misses the TLB: huge pages took 15–25 % off the user CPU of the static-100k proxy,
/// for a few seconds of the kernel zeroing 2 MiB pages (PERFORMANCE.md, "Issue 14 item 6:
/// simnet speed"); `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns them off. Nothing
/// simulated changes, only how the memory is mapped. glibc reads its tunables once, at
/// start, hence the exec rather than a call; where the tunable is unknown (another libc,
/// an older glibc) it is ignored, and where the exec fails simnet goes on with normal
/// pages.
#[cfg(target_os = "linux")]
fn with_huge_pages() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` returns only if it failed; then the run goes on as it is.
    let _ = std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", HUGE_PAGES_TUNABLE)
        .exec();
}

#[cfg(not(target_os = "linux"))]
fn with_huge_pages() {}

fn main() -> ExitCode {
    with_huge_pages();
    let cli = Cli::parse();
    match execute(cli).context("simnet failed") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = match e.downcast_ref::<Error>() {
                Some(Error::Scenario(_)) => 2,
                Some(Error::Sim(_) | Error::SwarmFailed { .. } | Error::SoakFailed { .. }) => 3,
                Some(Error::Output(_)) => 4,
                Some(Error::Swarm(_)) => 2,
                None => 1,
            };
            ExitCode::from(code)
        }
    }
}
