//! `simnet sweep`: one run per point of a parameter grid, one row per run in `sweep.csv`.
//!
//! The grid is the product of the `--set key=v1,v2` lists (first list slowest); every run
//! gets the scenario file with its point's overrides applied and its own output directory
//! `run-NNN/`. `sweep.csv` is rewritten after each run, so an interrupted sweep keeps the rows
//! it finished. Rows come in grid order and hold the parameter values and then every
//! summary column; like the summaries, they differ between two sweeps of the same grid only
//! in the three columns that measure the runs.

use std::path::Path;

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

/// Runs every point of the grid over `scenario_path` and writes `out/sweep.csv`.
pub fn sweep(
    scenario_path: &Path,
    grid: &[Vec<Override>],
    common: &[Override],
    out: &Path,
    opts: &RunOptions,
) -> Result<Vec<Summary>, Error> {
    std::fs::create_dir_all(out).map_err(|source| OutputError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut rows: Vec<(Vec<Override>, Summary)> = Vec::new();
    for (i, point) in grid.iter().enumerate() {
        let mut overrides = common.to_vec();
        overrides.extend(point.iter().cloned());
        let sc = scenario::load(scenario_path, &overrides)?;
        let label: Vec<String> = point
            .iter()
            .map(|o| format!("{}={}", o.key, o.value_text()))
            .collect();
        eprintln!(
            "simnet sweep: run {}/{}: {}",
            i + 1,
            grid.len(),
            label.join(" ")
        );
        let run_opts = RunOptions {
            out: Some(out.join(format!("run-{i:03}"))),
            ..opts.clone()
        };
        let (_, summary) = run_scenario(sc, &run_opts)?;
        rows.push((point.clone(), summary));
        write_csv(&out.join("sweep.csv"), &rows)?;
    }
    Ok(rows.into_iter().map(|(_, s)| s).collect())
}

fn write_csv(path: &Path, rows: &[(Vec<Override>, Summary)]) -> Result<(), OutputError> {
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
