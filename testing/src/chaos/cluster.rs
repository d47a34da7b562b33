//! [`Cluster`]: the nodes of one scenario, on one of three networks, sharing a capability
//! key, with a write token, and the ground truth of who holds what (their files on disk).
//!
//! - [`NetKind::Loopback`]: plain loopback, as the other multi-process tests run.
//! - [`NetKind::Proxy`]: every node listens on `0.0.0.0` and reaches the others through the
//!   seeded [`UdpProxy`] (see `proxy.rs` for why that routes all traffic through it).
//! - [`NetKind::Netns`]: every node in its own namespace on a bridge ([`NetnsLab`]).
//!
//! Fields drop in order: the node processes die first, then the proxy stops and the
//! namespaces go, then the directory holding the key.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use overlay::Key;
use wire::NodeId;

use super::netns::{self, NetnsLab};
use super::proxy::{Impairment, UdpProxy};
use super::seed::Seed;
use crate::HarnessError;
use crate::node::{AdminSpec, NodeProcess, NodeSpec, macronode_command};
use crate::ports::{self, Proto};
use crate::process::orphans_with;

/// Which network the nodes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetKind {
    /// Loopback, no faults but the ones signals make.
    Loopback,
    /// Through the seeded UDP proxy.
    Proxy,
    /// One network namespace per node.
    Netns,
}

impl NetKind {
    /// `loopback`, `proxy`, `netns`.
    pub fn name(self) -> &'static str {
        match self {
            NetKind::Loopback => "loopback",
            NetKind::Proxy => "proxy",
            NetKind::Netns => "netns",
        }
    }
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Scenario name, part of every node's name and directory.
    pub name: String,
    /// Nodes.
    pub n: usize,
    /// `--rf`.
    pub rf: usize,
    /// `--w` (the node's default when `None`).
    pub w: Option<usize>,
    /// The network.
    pub net: NetKind,
    /// `--rpc-timeout-ms` and `--liveness-ms` both, when set.
    pub liveness: Option<Duration>,
    /// More `run` arguments for every node.
    pub args: Vec<String>,
    /// The scenario's seed (the capability key and the proxy's streams derive from it).
    pub seed: Seed,
}

impl ClusterSpec {
    /// `n` nodes with RF `rf` on `net`, node defaults otherwise.
    pub fn new(name: &str, n: usize, rf: usize, net: NetKind, seed: Seed) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            n,
            rf,
            w: None,
            net,
            liveness: None,
            args: Vec::new(),
            seed,
        }
    }
}

/// The running nodes of a scenario.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes, node 0 (everyone's bootstrap peer) first.
    pub nodes: Vec<NodeProcess>,
    proxy: Option<UdpProxy>,
    lab: Option<NetnsLab>,
    ids: Vec<NodeId>,
    token: String,
    cap_root: [u8; 32],
    rf: usize,
    net: NetKind,
    work: tempfile::TempDir,
}

/// Bound on a node starting (healthy) and a mesh being ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

fn unexpected(what: &str, why: impl Into<String>) -> HarnessError {
    HarnessError::Unexpected {
        what: what.into(),
        why: why.into(),
    }
}

impl Cluster {
    /// Starts the nodes, waits until every one answers `/readyz`, and mints a token.
    pub fn start(spec: ClusterSpec) -> Result<Cluster, HarnessError> {
        let started = Instant::now();
        sweep_orphans();
        let work = tempfile::Builder::new()
            .prefix(&format!("macronode-chaos-{}-", spec.name))
            .tempdir()
            .map_err(HarnessError::io("creating a work directory"))?;
        let key = work.path().join("cap.key");
        let mut cap_root = [0u8; 32];
        cap_root.copy_from_slice(&super::seed::object_bytes(spec.seed, u64::MAX, 32));
        std::fs::write(&key, format!("{}\n", hex::encode(cap_root)))
            .map_err(HarnessError::io(format!("writing {}", key.display())))?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            proxy: None,
            lab: None,
            ids: Vec::new(),
            token: String::new(),
            cap_root,
            rf: spec.rf,
            net: spec.net,
            work,
        };
        // Where each node listens, HTTP (None: a free loopback port), how it runs, and the
        // bootstrap address of node 0.
        let mut listen: Vec<SocketAddr> = Vec::new();
        let mut http: Vec<Option<SocketAddr>> = vec![None; spec.n];
        let mut admins: Vec<Option<SocketAddr>> = vec![None; spec.n];
        let mut wrappers: Vec<Vec<String>> = vec![Vec::new(); spec.n];
        let bootstrap: SocketAddr;
        match spec.net {
            NetKind::Loopback => {
                for _ in 0..spec.n {
                    listen.push(ports::free_addr(Proto::Udp)?);
                }
                bootstrap = listen[0];
            }
            NetKind::Proxy => {
                let mut real = Vec::new();
                for _ in 0..spec.n {
                    let port = ports::free_port(Proto::Udp)?;
                    listen.push(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
                    real.push(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
                }
                let proxy = UdpProxy::start(spec.seed, real)?;
                bootstrap = proxy.alias(0);
                cluster.proxy = Some(proxy);
            }
            NetKind::Netns => {
                let lab = NetnsLab::create(spec.n)?;
                for (i, h) in http.iter_mut().enumerate() {
                    listen.push(SocketAddr::from((lab.addr(i), netns::QUIC_PORT)));
                    *h = Some(SocketAddr::from((lab.addr(i), netns::HTTP_PORT)));
                    admins[i] = Some(SocketAddr::from((lab.addr(i), netns::ADMIN_PORT)));
                    wrappers[i] = lab.wrapper(i);
                }
                bootstrap = listen[0];
                cluster.lab = Some(lab);
            }
        }
        for i in 0..spec.n {
            let mut s = NodeSpec::new(format!("chaos-{}-n{i}", spec.name));
            if i > 0 {
                s = s.bootstrap(bootstrap.to_string());
            }
            if let Some(t) = spec.liveness {
                s = s.fast_liveness(t);
            }
            s.listen_at = Some(listen[i]);
            s.http_at = http[i];
            if let Some(a) = admins[i] {
                s.admin = AdminSpec::At(a);
            }
            s.wrapper = wrappers[i].clone();
            s.args = vec![
                "--cap-key".into(),
                key.display().to_string(),
                "--rf".into(),
                spec.rf.to_string(),
            ];
            // A node with RF 1 can only promise one copy.
            if let Some(w) = spec.w.or((spec.rf < 2).then_some(spec.rf)) {
                s.args.extend(["--w".into(), w.to_string()]);
            }
            s.args.extend(spec.args.iter().cloned());
            let mut node = NodeProcess::start(s)?;
            if i == 0 {
                node.wait_healthy(START_TIMEOUT)
                    .map_err(|e| with_log(e, &node))?;
            }
            cluster.nodes.push(node);
        }
        for node in &mut cluster.nodes {
            let left = START_TIMEOUT.saturating_sub(started.elapsed());
            // A lone node is never "ready" (it has no peers); healthy is all it can be.
            let waited = if spec.n == 1 {
                node.wait_healthy(left)
            } else {
                node.wait_ready(left)
            };
            waited.map_err(|e| with_log(e, node))?;
        }
        cluster.ids = cluster
            .nodes
            .iter_mut()
            .map(NodeProcess::node_id)
            .collect::<Result<_, _>>()?;
        cluster.token = mint_token(&cluster.nodes[0].data_dir(), &key)?;
        println!(
            "chaos: {} nodes on {} ready after {:?}",
            spec.n,
            spec.net.name(),
            started.elapsed()
        );
        Ok(cluster)
    }

    /// The write token (shared key, no expiry).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The shared capability key every node checks tokens with: a scenario mints its own
    /// tokens with it (`node::caps::Token::mint`), with caveats the CLI's token lacks.
    pub fn cap_root(&self) -> [u8; 32] {
        self.cap_root
    }

    /// Node ids, in node order.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Copies per object the nodes run with.
    pub fn rf(&self) -> usize {
        self.rf
    }

    /// The network.
    pub fn net(&self) -> NetKind {
        self.net
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn work_dir(&self) -> PathBuf {
        self.work.path().to_path_buf()
    }

    /// Node `i`'s HTTP address.
    pub fn http(&self, i: usize) -> SocketAddr {
        self.nodes[i].http()
    }

    /// Node `i`'s admin plane address (lookups, routing).
    pub fn admin(&self, i: usize) -> Result<SocketAddr, HarnessError> {
        self.nodes[i]
            .admin()
            .ok_or_else(|| HarnessError::Unexpected {
                what: format!("node {i} admin plane"),
                why: "not placed by the harness".into(),
            })
    }

    /// The proxy, on [`NetKind::Proxy`].
    pub fn proxy(&self) -> Option<&UdpProxy> {
        self.proxy.as_ref()
    }

    /// The namespaces, on [`NetKind::Netns`].
    pub fn lab(&self) -> Option<&NetnsLab> {
        self.lab.as_ref()
    }

    /// Node `i`'s process id (it changes on restart).
    pub fn pid(&mut self, i: usize) -> u32 {
        self.nodes[i].process().pid()
    }

    /// Cuts the nodes of `a` off from those of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<(), HarnessError> {
        println!("chaos: partition {a:?} | {b:?}");
        match (&self.proxy, &self.lab) {
            (Some(p), _) => {
                p.partition(a, b);
                Ok(())
            }
            (None, Some(l)) => l.partition(a, b),
            (None, None) => Err(unexpected("a partition", "loopback has no fault layer")),
        }
    }

    /// Ends every partition.
    pub fn heal(&self) -> Result<(), HarnessError> {
        println!("chaos: heal");
        match (&self.proxy, &self.lab) {
            (Some(p), _) => {
                p.heal();
                Ok(())
            }
            (None, Some(l)) => l.heal(),
            (None, None) => Err(unexpected("a heal", "loopback has no fault layer")),
        }
    }

    /// Every link loses a fraction `p` of its datagrams.
    pub fn set_loss(&self, p: f64) -> Result<(), HarnessError> {
        println!("chaos: loss {p}");
        match (&self.proxy, &self.lab) {
            (Some(x), _) => {
                x.set_all(Impairment::loss(p));
                Ok(())
            }
            (None, Some(l)) => l.set_loss(p),
            (None, None) => Err(unexpected("loss", "loopback has no fault layer")),
        }
    }

    /// Every link gets `rule` (the proxy only: delay needs it, there is no netem here).
    pub fn impair(&self, rule: Impairment) -> Result<(), HarnessError> {
        println!("chaos: every link {rule:?}");
        match &self.proxy {
            Some(p) => {
                p.set_all(rule);
                Ok(())
            }
            None => Err(unexpected(
                "delay",
                format!(
                    "{} cannot delay packets (no netem); use the proxy",
                    self.net.name()
                ),
            )),
        }
    }

    /// Where node `i` keeps object `id`'s bytes.
    pub fn object_file(&self, i: usize, id: &[u8; 32]) -> PathBuf {
        let hex = hex::encode(id);
        self.nodes[i]
            .data_dir()
            .join("objects")
            .join(&hex[..2])
            .join(hex)
    }

    /// The nodes among `among` with the object's file on disk.
    pub fn holders(&self, among: &[usize], id: &[u8; 32]) -> Vec<usize> {
        among
            .iter()
            .copied()
            .filter(|&i| self.object_file(i, id).is_file())
            .collect()
    }

    /// The `k` nodes of `among` closest to the object (XOR distance of their DHT keys):
    /// where it must live once replication settles.
    pub fn closest(&self, among: &[usize], id: &[u8; 32], k: usize) -> Vec<usize> {
        let key = Key(*id);
        let mut v = among.to_vec();
        v.sort_by_key(|&i| Key::for_node(&self.ids[i]).distance(&key));
        v.truncate(k);
        v
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        self.nodes[i].sigkill().map(|_| ())
    }

    /// Starts node `i` again (same key, ports, data) and waits for `/readyz`; how long
    /// from the start of the process to ready.
    pub fn restart(&mut self, i: usize, timeout: Duration) -> Result<Duration, HarnessError> {
        self.nodes[i].restart()?;
        self.nodes[i].wait_ready(timeout)
    }

    /// Nodes whose process ended although nobody stopped it: crashes.
    pub fn crashed(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Ok(Some(status)) = n.process().try_exit() {
                out.push((i, status.to_string()));
            }
        }
        out
    }
}

/// `e` with the last lines of the node's log, which goes with its directory.
fn with_log(e: HarnessError, node: &NodeProcess) -> HarnessError {
    let log = node.log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    unexpected(
        &e.to_string(),
        format!("last lines of {}'s log:\n{tail}", node.name()),
    )
}

/// `macronode token mint` for the shared key, valid for a week (longer than any run).
fn mint_token(data_dir: &std::path::Path, key: &std::path::Path) -> Result<String, HarnessError> {
    let out = macronode_command()?
        .args(["token", "mint", "--expires-in", "604800", "--data-dir"])
        .arg(data_dir)
        .arg("--cap-key")
        .arg(key)
        .output()
        .map_err(HarnessError::io("running macronode token mint"))?;
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !token.starts_with("mn1.") {
        return Err(unexpected(
            "macronode token mint",
            format!(
                "{}: {token} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    Ok(token)
}

/// SIGKILLs chaos node processes a killed run left behind: a `macronode` whose command line
/// names a `macronode-chaos-` directory and whose parent is gone (adopted by init).
pub fn sweep_orphans() -> usize {
    let mut killed = 0;
    for pid in orphans_with("macronode-chaos-") {
        if nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
        {
            killed += 1;
        }
    }
    if killed > 0 {
        println!("chaos: killed {killed} orphaned node processes of earlier runs");
    }
    killed
}
