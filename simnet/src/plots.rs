//! SVG plots of a run: the hop histogram, the lookup-latency CDF, and live nodes and lookup
//! success over time.
//!
//! plotters with its SVG backend only: text goes into the SVG as `<text>` elements for the
//! viewer to render, so no font file is read and nothing depends on the machine's fonts.
//! Every point comes from the run's metrics (the CDF is sampled at fixed quantiles), so the
//! SVGs are as deterministic as the numbers.

use std::path::Path;

use plotters::prelude::*;

use crate::engine::Finished;
use crate::output::OutputError;

const SIZE: (u32, u32) = (720, 440);
const CDF_POINTS: usize = 500;

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn plot_err(path: &Path, e: &dyn std::fmt::Display) -> OutputError {
    OutputError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Draws `hops.svg`, `latency_cdf.svg` and `timeline.svg` into `dir`.
pub fn draw_all(dir: &Path, f: &Finished) -> Result<(), OutputError> {
    let hops = dir.join("hops.svg");
    hop_histogram(&hops, &f.metrics.hop_histogram).map_err(|e| plot_err(&hops, &e))?;
    let cdf = dir.join("latency_cdf.svg");
    latency_cdf(&cdf, &f.metrics.latencies).map_err(|e| plot_err(&cdf, &e))?;
    let timeline = dir.join("timeline.svg");
    draw_timeline(&timeline, f).map_err(|e| plot_err(&timeline, &e))?;
    Ok(())
}

fn hop_histogram(path: &Path, hist: &[u64]) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let bins = hist.len().max(1);
    let top = hist.iter().copied().max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("Lookup hops", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..bins as f64 - 0.5, 0u64..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bins + 1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("hops (QueryStats)")
        .y_desc("finished lookups")
        .draw()?;
    // Bars drawn one by one, in hop order: plotters' Histogram aggregates through a
    // HashMap and would emit them in a different order every run.
    let style = BLUE.mix(0.7).filled();
    chart.draw_series(hist.iter().enumerate().map(|(h, &c)| {
        let x = h as f64;
        Rectangle::new([(x - 0.4, 0), (x + 0.4, c)], style)
    }))?;
    root.present()?;
    Ok(())
}

fn latency_cdf(path: &Path, sorted_ns: &[u64]) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let max_ms = sorted_ns.last().map_or(1.0, |&v| v as f64 / 1e6).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption("Lookup latency CDF", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_ms * 1.05, 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, virtual)")
        .y_desc("fraction of finished lookups")
        .draw()?;
    let n = sorted_ns.len();
    let points: Vec<(f64, f64)> = if n == 0 {
        Vec::new()
    } else {
        (1..=CDF_POINTS)
            .map(|i| {
                let q = i as f64 / CDF_POINTS as f64;
                let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
                (sorted_ns[idx] as f64 / 1e6, q)
            })
            .collect()
    };
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

fn draw_timeline(path: &Path, f: &Finished) -> DrawResult {
    let m = &f.metrics;
    let root = SVGBackend::new(path, (SIZE.0, SIZE.1 * 2)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(SIZE.1);
    let end_s = f.scenario.duration.as_secs_f64();
    let mids: Vec<f64> = (0..m.rows.len())
        .map(|i| {
            let (a, b) = m.row_span(i);
            (a.as_duration().as_secs_f64() + b.as_duration().as_secs_f64()) / 2.0
        })
        .collect();
    let alive: Vec<(f64, f64)> = m
        .rows
        .iter()
        .zip(&mids)
        .enumerate()
        .map(|(i, (r, &t))| {
            let (a, b) = m.row_span(i);
            let span = (b - a).as_nanos().max(1) as f64;
            (t, r.alive_integral as f64 / span)
        })
        .collect();
    let top = alive.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&upper)
        .caption("Live nodes (interval mean)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("live nodes")
        .draw()?;
    chart.draw_series(LineSeries::new(alive, BLUE.stroke_width(2)))?;
    let success: Vec<(f64, f64)> = m
        .rows
        .iter()
        .zip(&mids)
        .filter(|(r, _)| r.lookups > 0)
        .map(|(r, &t)| (t, r.success as f64 / r.lookups as f64))
        .collect();
    let mut chart = ChartBuilder::on(&lower)
        .caption(
            "Lookup success rate (by start interval)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, 0f64..1.05)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("success rate")
        .draw()?;
    chart.draw_series(LineSeries::new(success.clone(), RED.stroke_width(2)))?;
    chart.draw_series(success.into_iter().map(|p| Circle::new(p, 2, RED.filled())))?;
    root.present()?;
    Ok(())
}
