//! Small helpers the wall-clock benchmark binaries (`rpc-bench`, `obj-bench`) share: an
//! ephemeral loopback address, the median of per-round ratios, and the load average that
//! every report prints beside its numbers (these 2-core machines are noisy).

use std::net::SocketAddr;

/// `127.0.0.1:0`: let the OS pick a port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The median of `v` (sorted in place); NaN when empty.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` prints them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU time (user + system) this process has used so far, in seconds: beside a wall-clock
/// rate it says what the work cost, which other load on the machine barely moves.
pub fn cpu_seconds() -> f64 {
    used(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

/// CPU time (user + system) the calling thread has used so far, in seconds: the cost of
/// one thread's work while others run beside it.
pub fn thread_cpu_seconds() -> f64 {
    used(nix::sys::resource::UsageWho::RUSAGE_THREAD)
}

fn used(who: nix::sys::resource::UsageWho) -> f64 {
    nix::sys::resource::getrusage(who).map_or(f64::NAN, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}
