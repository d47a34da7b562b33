//! `simnet sweep`: one run per point of a parameter grid, one row per run in `sweep.csv`.
//!
//! The grid is the product of the `--set key=v1,v2` lists (first list slowest); every run
//! gets the scenario file with its point's overrides applied and its own output directory
//! `run-NNN/`. Points run on `jobs` threads at once (each run is single-threaded and owns all
//! its state, so a point's outputs do not depend on what runs beside it); a thread takes
//! the next point of the grid when its run ends. `sweep.csv` is rewritten each time the
//! finished runs extend the grid-order prefix, so an interrupted sweep keeps the rows it
//! finished in order. Rows come in grid order and hold the parameter values and then every
//! summary column; like the summaries, they differ between two sweeps of the same grid only
//! in the three columns that measure the runs (with `jobs > 1` the peak RSS is the whole
//! process's, shared by the runs beside it).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Error;
use crate::output::{OutputError, Summary};
use crate::run::{RunOptions, run_scenario};
use crate::scenario::{self, Override};

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// How many points a sweep runs at once by default: one per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What the threads of a sweep share: the next point to take, and each point's outcome.
struct Shared {
    next: AtomicUsize,
    done: Mutex<Done>,
}

/// Finished points by grid index, and the first error.
struct Done {
    summaries: Vec<Option<Summary>>,
    /// Rows of the grid-order prefix already written.
    written: usize,
    error: Option<Error>,
}

/// Runs every point of the grid over `scenario_path`, `jobs` at a time, and writes
/// `out/sweep.csv`. The first error stops the hand-out of new points and is returned once
/// the running ones end.
pub fn sweep(
    scenario_path: &Path,
    grid: &[Vec<Override>],
    common: &[Override],
    out: &Path,
    opts: &RunOptions,
    jobs: usize,
) -> Result<Vec<Summary>, Error> {
    std::fs::create_dir_all(out).map_err(|source| OutputError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let jobs = jobs.clamp(1, grid.len().max(1));
    // Progress bars of runs side by side would overwrite each other.
    let opts = RunOptions {
        progress: opts.progress && jobs == 1,
        ..opts.clone()
    };
    let shared = Shared {
        next: AtomicUsize::new(0),
        done: Mutex::new(Done {
            summaries: (0..grid.len()).map(|_| None).collect(),
            written: 0,
            error: None,
        }),
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| worker(scenario_path, grid, common, out, &opts, &shared));
        }
    });
    let done = shared.done.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = done.error {
        return Err(e);
    }
    Ok(done.summaries.into_iter().flatten().collect())
}

/// One thread of a sweep: takes points until none is left or a run failed.
fn worker(
    scenario_path: &Path,
    grid: &[Vec<Override>],
    common: &[Override],
    out: &Path,
    opts: &RunOptions,
    shared: &Shared,
) {
    let lock = || shared.done.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let i = shared.next.fetch_add(1, Ordering::SeqCst);
        if i >= grid.len() || lock().error.is_some() {
            return;
        }
        let point = &grid[i];
        let outcome = run_point(scenario_path, point, common, out, opts, i, grid.len());
        let mut done = lock();
        match outcome {
            Ok(summary) => {
                done.summaries[i] = Some(summary);
                let prefix = done.summaries.iter().take_while(|s| s.is_some()).count();
                if prefix > done.written {
                    let rows: Vec<(&Vec<Override>, &Summary)> = grid
                        .iter()
                        .zip(done.summaries.iter().flatten())
                        .take(prefix)
                        .collect();
                    match write_csv(&out.join("sweep.csv"), &rows) {
                        Ok(()) => done.written = prefix,
                        Err(e) => {
                            done.error.get_or_insert(e.into());
                        }
                    }
                }
            }
            Err(e) => {
                done.error.get_or_insert(e);
            }
        }
    }
}

/// Runs point `i` of the grid into `out/run-NNN/`.
fn run_point(
    scenario_path: &Path,
    point: &[Override],
    common: &[Override],
    out: &Path,
    opts: &RunOptions,
    i: usize,
    total: usize,
) -> Result<Summary, Error> {
    let mut overrides = common.to_vec();
    overrides.extend(point.iter().cloned());
    let sc = scenario::load(scenario_path, &overrides)?;
    let label: Vec<String> = point
        .iter()
        .map(|o| format!("{}={}", o.key, o.value_text()))
        .collect();
    eprintln!("simnet sweep: run {}/{}: {}", i + 1, total, label.join(" "));
    let run_opts = RunOptions {
        out: Some(out.join(format!("run-{i:03}"))),
        ..opts.clone()
    };
    let (_, summary) = run_scenario(sc, &run_opts)?;
    Ok(summary)
}

fn write_csv(path: &Path, rows: &[(&Vec<Override>, &Summary)]) -> Result<(), OutputError> {
    let mut text = String::new();
    if let Some((point, summary)) = rows.first() {
        let mut header = vec!["run".to_string()];
        header.extend(point.iter().map(|o| csv_escape(&o.key)));
        header.extend(summary.columns().into_iter().map(|(k, _)| k.to_string()));
        text.push_str(&header.join(","));
        text.push('\n');
    }
    for (i, (point, summary)) in rows.iter().enumerate() {
        let mut cells = vec![i.to_string()];
        cells.extend(point.iter().map(|o| csv_escape(&o.value_text())));
        cells.extend(summary.columns().into_iter().map(|(_, v)| csv_escape(&v)));
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })
}
