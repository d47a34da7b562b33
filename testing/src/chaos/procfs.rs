//! What a node process holds, read from `/proc`: resident memory (now and its peak), open
//! file descriptors, CPU time. The resource goals of the suite (RSS bounded, fds steady,
//! honest work not starved) are judged on these numbers.

use crate::HarnessError;

fn read(pid: u32, file: &str) -> Result<String, HarnessError> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::read_to_string(&path).map_err(HarnessError::io(format!("reading {path}")))
}

fn status_kib(pid: u32, field: &str) -> Result<u64, HarnessError> {
    let status = read(pid, "status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| HarnessError::Unexpected {
            what: format!("/proc/{pid}/status"),
            why: format!("no {field} line"),
        })
}

/// Resident set size now, bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, HarnessError> {
    Ok(status_kib(pid, "VmRSS:")? * 1024)
}

/// The peak resident set size since the process started (or since
/// [`reset_peak`]), bytes: it catches a spike between two samples.
pub fn peak_rss_bytes(pid: u32) -> Result<u64, HarnessError> {
    Ok(status_kib(pid, "VmHWM:")? * 1024)
}

/// Resets the peak RSS to the current RSS (`echo 5 > /proc/PID/clear_refs`), so a later
/// [`peak_rss_bytes`] measures one phase. `false` where the kernel does not allow it.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// How far the RSS rose above `rss0` in a phase that began with [`reset_peak`] (which
/// returned `reset`) and whose peak was `peak`. Without a reset, VmHWM may predate the
/// phase, so the current RSS is judged instead.
pub fn peak_growth(pid: u32, rss0: u64, peak: u64, reset: bool) -> Result<u64, HarnessError> {
    Ok(if reset {
        peak.saturating_sub(rss0)
    } else {
        rss_bytes(pid)?.saturating_sub(rss0)
    })
}

/// Open file descriptors.
pub fn fd_count(pid: u32) -> Result<usize, HarnessError> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .map_err(HarnessError::io(format!("listing {path}")))?
        .count())
}

/// CPU time used so far (user + system), seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, HarnessError> {
    let stat = read(pid, "stat")?;
    let bad = || HarnessError::Unexpected {
        what: format!("/proc/{pid}/stat"),
        why: format!("cannot parse {stat:?}"),
    };
    let after = stat.rsplit_once(')').ok_or_else(bad)?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad);
    // Fields after the command: state(0) ppid(1) ... utime(11) stime(12); 100 ticks/s.
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// Megabytes (MiB) as a float, for figures.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap_or(0) > 0);
        assert!(peak_rss_bytes(me).unwrap_or(0) >= rss_bytes(me).unwrap_or(u64::MAX) / 2);
        assert!(fd_count(me).unwrap_or(0) >= 3);
        assert!(cpu_seconds(me).is_ok());
    }
}
