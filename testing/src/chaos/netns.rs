//! Nodes in their own network namespaces, one veth pair each on a bridge, so a partition or
//! loss is a real packet drop between real addresses rather than a rule about ports.
//!
//! Layout of one lab (`k` is a free index 1..=250, `i` the node):
//! - bridge `mncbr<k>` in the host namespace with `10.201.<k>.1/24`, from where the test
//!   process reaches every node's HTTP port;
//! - namespace `mnchaos-<pid>-<k>-<i>`, whose `eth0` (a veth peer of `mncv<k>x<i>` on the
//!   bridge) has `10.201.<k>.<i+2>/24`; the node listens there on fixed ports.
//!
//! Faults: a partition adds `blackhole` routes for the other side's addresses in each
//! node's namespace (iproute2 only: packets die at the sender's routing step, silently as
//! far as QUIC is concerned); loss adds an iptables `statistic` DROP rule on UDP arriving in
//! every namespace (kernel randomness: not replayable by seed; the UDP proxy is the seeded
//! alternative). There is no netem on these kernels, so no delay here: use the proxy.
//!
//! Cleanup: dropping a lab kills whatever runs in its namespaces and deletes them and the
//! bridge (the veth pairs go with their namespaces). A lab left behind by a killed process
//! is swept by the next one: names carry the owner's pid, and a dead owner's namespaces
//! and bridges are removed before anything is created.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::HarnessError;

/// Prefix of every namespace the suite creates.
pub const NS_PREFIX: &str = "mnchaos-";
/// Prefix of every bridge the suite creates.
pub const BRIDGE_PREFIX: &str = "mncbr";
/// Bound on one `ip`/`iptables` command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// The QUIC port every node listens on inside its namespace.
pub const QUIC_PORT: u16 = 7400;
/// The HTTP port every node listens on inside its namespace.
pub const HTTP_PORT: u16 = 8080;
/// The admin plane port inside each namespace.
pub const ADMIN_PORT: u16 = 9080;

/// Serialises lab creation within this process (choosing `k`).
static CREATE: Mutex<()> = Mutex::new(());

/// Why namespaces cannot be used here, or `None` when they can: we must be root and have
/// `ip`. Tests that need namespaces skip, printing this, only when it is `Some`.
pub fn unavailable() -> Option<String> {
    let uid = effective_uid();
    if uid != Some(0) {
        return Some(format!(
            "network namespaces need root (running as uid {uid:?}); the netns scenarios are \
             skipped, run them as root (scripts/chaos-ci.sh does)"
        ));
    }
    match run_bounded("ip", &["netns", "list"]) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "`ip netns` does not work here ({e}); install iproute2"
        )),
    }
}

/// This process's effective uid (the owner of `/proc/self`).
pub(crate) fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Runs `program args`, bounded; its stdout on success, its stderr in the error.
pub(crate) fn run_bounded(program: &str, args: &[&str]) -> Result<String, HarnessError> {
    let what = format!("{program} {}", args.join(" "));
    let dir = tempfile::tempdir().map_err(HarnessError::io("a temporary directory"))?;
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let out = std::fs::File::create(&out_path).map_err(HarnessError::io("creating a file"))?;
    let err = std::fs::File::create(&err_path).map_err(HarnessError::io("creating a file"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(HarnessError::io(format!("starting {what}")))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::Timeout {
                    what,
                    after: COMMAND_TIMEOUT,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                return Err(HarnessError::Io {
                    what: format!("waiting for {what}"),
                    source: e,
                });
            }
        }
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(HarnessError::Unexpected {
            what,
            why: format!(
                "{status}: {}",
                std::fs::read_to_string(&err_path)
                    .unwrap_or_default()
                    .trim()
            ),
        })
    }
}

fn ip(args: &[&str]) -> Result<String, HarnessError> {
    run_bounded("ip", args)
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Namespaces and bridges of the suite whose owner `gone(pid)` says is gone: their
/// processes are killed and they are deleted. Returns what was removed.
fn sweep(gone: impl Fn(u32) -> bool) -> Vec<String> {
    let mut removed = Vec::new();
    let list = ip(&["netns", "list"]).unwrap_or_default();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if owner.is_none_or(&gone) {
            kill_inside(name);
            if ip(&["netns", "del", name]).is_ok() {
                removed.push(name.to_string());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(BRIDGE_PREFIX) {
                continue;
            }
            let alias = std::fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
            let owner = alias
                .trim()
                .strip_prefix("mnchaos-pid=")
                .and_then(|p| p.parse::<u32>().ok());
            if owner.is_none_or(&gone) && ip(&["link", "del", &name]).is_ok() {
                removed.push(name);
            }
        }
    }
    removed
}

/// SIGKILLs every process in namespace `name`.
fn kill_inside(name: &str) {
    let pids = ip(&["netns", "pids", name]).unwrap_or_default();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes what earlier, killed runs left: namespaces and bridges whose owner process is
/// gone, with anything still running inside. Called before every lab is created.
pub fn sweep_stale() -> Vec<String> {
    let removed = sweep(|pid| !alive(pid));
    if !removed.is_empty() {
        println!("netns: swept leftovers of dead runs: {removed:?}");
    }
    removed
}

/// Removes every namespace and bridge of this process (the runner calls it on Ctrl-C).
pub fn sweep_own() -> Vec<String> {
    let me = std::process::id();
    sweep(|pid| pid == me)
}

/// A bridge and `n` namespaces, one node's each.
#[derive(Debug)]
pub struct NetnsLab {
    k: u8,
    bridge: String,
    names: Vec<String>,
    blocked: Mutex<BTreeSet<(usize, usize)>>,
}

impl NetnsLab {
    /// Creates the bridge and `n` namespaces (sweeping dead runs' leftovers first).
    pub fn create(n: usize) -> Result<NetnsLab, HarnessError> {
        if let Some(why) = unavailable() {
            return Err(HarnessError::Unexpected {
                what: "network namespaces".into(),
                why,
            });
        }
        if n == 0 || n > 200 {
            return Err(HarnessError::Unexpected {
                what: "a netns lab".into(),
                why: format!("{n} nodes: 1..=200 fit a /24"),
            });
        }
        sweep_stale();
        let _guard = CREATE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut lab = None;
        for k in 1..=250u8 {
            let bridge = format!("{BRIDGE_PREFIX}{k}");
            if std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists() {
                continue;
            }
            let subnet = format!("10.201.{k}.0/24");
            if ip(&["route", "show", &subnet]).is_ok_and(|r| !r.trim().is_empty()) {
                continue;
            }
            if ip(&["link", "add", &bridge, "type", "bridge"]).is_ok() {
                lab = Some(NetnsLab {
                    k,
                    bridge,
                    names: Vec::new(),
                    blocked: Mutex::new(BTreeSet::new()),
                });
                break;
            }
        }
        let mut lab = lab.ok_or_else(|| HarnessError::Unexpected {
            what: "a netns lab".into(),
            why: "no free bridge index in 1..=250".into(),
        })?;
        // From here on, dropping `lab` removes whatever was made.
        let k = lab.k;
        let bridge = lab.bridge.clone();
        let owner = format!("mnchaos-pid={}", std::process::id());
        ip(&["link", "set", "dev", &bridge, "alias", &owner])?;
        ip(&["addr", "add", &format!("10.201.{k}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let name = format!("{NS_PREFIX}{}-{k}-{i}", std::process::id());
            ip(&["netns", "add", &name])?;
            lab.names.push(name.clone());
            let host = format!("mncv{k}x{i}");
            let peer = format!("mncp{k}x{i}");
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &name])?;
            ip(&["link", "set", &host, "master", &bridge, "up"])?;
            let addr = format!("{}/24", lab.addr(i));
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            ip(&["-n", &name, "link", "set", &peer, "name", "eth0"])?;
            ip(&["-n", &name, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
        }
        println!(
            "netns: lab {k}: bridge {bridge} 10.201.{k}.1, namespaces {:?}",
            lab.names
        );
        Ok(lab)
    }

    /// How many namespaces.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.k, (i + 2) as u8)
    }

    /// The bridge's address: where the test process's packets to the nodes come from.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.k, 1)
    }

    /// Namespace `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The command prefix that runs a program in namespace `i`.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.names[i]]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn route(&self, verb: &str, at: usize, to: usize) -> Result<(), HarnessError> {
        let dst = format!("{}/32", self.addr(to));
        ip(&["-n", &self.names[at], "route", verb, "blackhole", &dst]).map(|_| ())
    }

    /// Drops every packet between a node of `a` and a node of `b`, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<(), HarnessError> {
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &x in a {
            for &y in b {
                for (from, to) in [(x, y), (y, x)] {
                    if blocked.insert((from, to)) {
                        self.route("add", from, to)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&self) -> Result<(), HarnessError> {
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut first_err = None;
        for (from, to) in std::mem::take(&mut *blocked) {
            if let Err(e) = self.route("del", from, to) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Drops a fraction `p` of the UDP packets arriving in every namespace from the other
    /// nodes (iptables `statistic`; 0 removes the rule). Needs `iptables`.
    pub fn set_loss(&self, p: f64) -> Result<(), HarnessError> {
        if run_bounded("iptables", &["--version"]).is_err() {
            return Err(HarnessError::Unexpected {
                what: "loss in a netns lab".into(),
                why: "iptables is not installed (apt-get install iptables; \
                      scripts/chaos-ci.sh installs it)"
                    .into(),
            });
        }
        let subnet = format!("10.201.{}.0/24", self.k);
        let prob = format!("{p:.4}");
        for name in &self.names {
            run_bounded("ip", &["netns", "exec", name, "iptables", "-F", "INPUT"])?;
            if p > 0.0 {
                run_bounded(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        name,
                        "iptables",
                        "-A",
                        "INPUT",
                        "-p",
                        "udp",
                        "-s",
                        &subnet,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &prob,
                        "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        for name in &self.names {
            kill_inside(name);
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("netns: could not delete {name}: {e}");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            eprintln!("netns: could not delete {}: {e}", self.bridge);
        }
    }
}
