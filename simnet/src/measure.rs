//! The only place simnet reads the wall clock or the process's memory: to report how long a
//! run took and how much memory it needed, never to decide anything.
//!
//! These three numbers (`wall_seconds`, `events_per_wall_second`, `peak_rss_bytes`) are the
//! only ones in a run's outputs that may differ between two runs of the same seed.

/// Wall-clock time since it was started.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// Starts timing now.
    #[allow(clippy::disallowed_methods)] // the one sanctioned read of the wall clock
    pub fn start() -> Stopwatch {
        Stopwatch(std::time::Instant::now())
    }

    /// Seconds elapsed.
    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// The process's peak resident set size (VmHWM in /proc/self/status), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
