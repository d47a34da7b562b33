//! [`NodeProcess`]: one `macronode run` process, its temporary directory, its ports, and the
//! admin routes read as typed answers.
//!
//! A node owns a temporary directory holding its data directory (`data/`, where the key
//! lives), its log files and, when the spec has one, its `config.toml`. The directory
//! outlives restarts, so [`NodeProcess::restart`] brings the same node back: same key, same
//! ports, same flags. The child's environment is cleared of `MACRONODE_*` variables the test
//! process may carry; only the spec's own reach it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use overlay::Key;
use serde_json::Value;
use wire::NodeId;

use crate::http::{self, HttpResponse};
use crate::ports::{self, Proto};
use crate::process::ChildProc;
use crate::wait::poll_until_ok;
use crate::{HarnessError, binary};

/// Bound on one admin request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a `/v1/lookup` request: a lookup may wait out several RPC timeouts.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Set to keep every node's directory (data, logs) after the harness is done with it.
pub const KEEP_DIRS_ENV: &str = "MACRONODE_KEEP_DIRS";
/// How often readiness and tables are polled.
pub const POLL: Duration = Duration::from_millis(20);

/// How to start a node.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// Its name in logs and messages (`node-3`).
    pub name: String,
    /// `--bootstrap` values (`HOST:PORT` or `ID@HOST:PORT`).
    pub bootstrap: Vec<String>,
    /// `--rpc-timeout-ms`.
    pub rpc_timeout: Option<Duration>,
    /// `--liveness-ms`.
    pub liveness: Option<Duration>,
    /// More arguments after `run`.
    pub args: Vec<String>,
    /// Environment for the child (on top of the cleaned one).
    pub env: Vec<(String, String)>,
    /// A `config.toml` to write into the node's directory and pass with `--config`.
    pub config_toml: Option<String>,
    /// `None`: the harness picks the HTTP port and passes `--http`. `Some(addr)`: no
    /// `--http` flag; the env or config file of the spec puts the node there.
    pub http_elsewhere: Option<SocketAddr>,
    /// `--listen` at this address instead of a free loopback port: the chaos suite puts
    /// nodes on `0.0.0.0` behind its UDP proxy, or on a namespace's own address.
    pub listen_at: Option<SocketAddr>,
    /// `--http` at this address instead of a free loopback port (a namespace's address).
    pub http_at: Option<SocketAddr>,
    /// Where the admin plane listens (`--admin`).
    pub admin: AdminSpec,
    /// A command the node runs under, e.g. `["ip", "netns", "exec", "NS"]`: the chaos
    /// suite's namespaces. The wrapper must exec the node, so signals reach it.
    pub wrapper: Vec<String>,
}

/// Where a node's admin plane goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdminSpec {
    /// A free loopback port the harness picks and passes with `--admin`.
    #[default]
    Pick,
    /// `--admin` at this address (a namespace's address).
    At(SocketAddr),
    /// No `--admin` flag: the spec's arguments, env or config file decide.
    Unset,
}

impl NodeSpec {
    /// A spec with only a name.
    pub fn new(name: impl Into<String>) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            ..NodeSpec::default()
        }
    }

    /// Adds a bootstrap peer.
    pub fn bootstrap(mut self, peer: impl Into<String>) -> NodeSpec {
        self.bootstrap.push(peer.into());
        self
    }

    /// Short RPC timeout and liveness interval, so dead peers are noticed quickly.
    pub fn fast_liveness(mut self, every: Duration) -> NodeSpec {
        self.rpc_timeout = Some(every);
        self.liveness = Some(every);
        self
    }
}

/// One finished `/v1/lookup`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// The closest nodes found, nearest first.
    pub closest: Vec<NodeId>,
    /// Hops to the closest.
    pub hops: u64,
    /// RPCs sent.
    pub rpcs: u64,
    /// RPCs that failed or timed out.
    pub timeouts: u64,
}

/// A `macronode run` process.
#[derive(Debug)]
pub struct NodeProcess {
    // Dropped first (fields drop in order): the process dies and prints its log before its
    // directory, log included, is removed.
    proc: ChildProc,
    spec: NodeSpec,
    dir: tempfile::TempDir,
    quic: SocketAddr,
    http: SocketAddr,
    admin: Option<SocketAddr>,
    id: Option<NodeId>,
}

fn unexpected(what: &str, why: impl Into<String>) -> HarnessError {
    HarnessError::Unexpected {
        what: what.to_string(),
        why: why.into(),
    }
}

/// A `macronode` command with the test process's `MACRONODE_*` variables removed and
/// colourless logs.
pub fn macronode_command() -> Result<Command, HarnessError> {
    let mut cmd = Command::new(binary::macronode()?);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MACRONODE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    Ok(cmd)
}

/// Runs `macronode id --data-dir dir` and parses the id it prints.
pub fn id_on_disk(dir: &Path) -> Result<NodeId, HarnessError> {
    let out = macronode_command()?
        .arg("id")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .map_err(HarnessError::io("running macronode id"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(unexpected(
            "macronode id",
            format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        ));
    }
    text.trim()
        .parse()
        .map_err(|e| unexpected("macronode id", format!("{e}: {text:?}")))
}

fn parse_id(v: &Value, what: &str) -> Result<NodeId, HarnessError> {
    v.as_str()
        .ok_or_else(|| unexpected(what, format!("not a string: {v}")))?
        .parse()
        .map_err(|e| unexpected(what, format!("{e}: {v}")))
}

impl NodeProcess {
    /// Picks free ports, makes the node's directory, and starts it.
    pub fn start(spec: NodeSpec) -> Result<NodeProcess, HarnessError> {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("macronode-{}-", spec.name))
            .tempdir()
            .map_err(HarnessError::io("creating a temporary directory"))?;
        // To read a node's log and store after the run (the chaos suite's defects).
        if std::env::var_os(KEEP_DIRS_ENV).is_some() {
            dir.disable_cleanup(true);
        }
        let quic = match spec.listen_at {
            Some(a) => a,
            None => ports::free_addr(Proto::Udp)?,
        };
        let http = match (spec.http_elsewhere, spec.http_at) {
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => ports::free_addr(Proto::Tcp)?,
        };
        let admin = match spec.admin {
            AdminSpec::Pick => Some(ports::free_addr(Proto::Tcp)?),
            AdminSpec::At(a) => Some(a),
            AdminSpec::Unset => None,
        };
        if let Some(toml) = &spec.config_toml {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, toml)
                .map_err(HarnessError::io(format!("writing {}", path.display())))?;
        }
        println!(
            "harness: {} quic={quic} http={http} admin={admin:?} dir={} bootstrap={:?}",
            spec.name,
            dir.path().display(),
            spec.bootstrap
        );
        let cmd = Self::command(&spec, dir.path(), quic, http, admin)?;
        let proc = ChildProc::spawn(&spec.name, cmd, dir.path())?;
        Ok(NodeProcess {
            proc,
            spec,
            dir,
            quic,
            http,
            admin,
            id: None,
        })
    }

    fn command(
        spec: &NodeSpec,
        dir: &Path,
        quic: SocketAddr,
        http: SocketAddr,
        admin: Option<SocketAddr>,
    ) -> Result<Command, HarnessError> {
        let mut cmd = match spec.wrapper.split_first() {
            None => macronode_command()?,
            Some((program, args)) => {
                let inner = macronode_command()?;
                let mut cmd = Command::new(program);
                cmd.args(args).arg(inner.get_program());
                for (k, v) in inner.get_envs() {
                    match v {
                        Some(v) => cmd.env(k, v),
                        None => cmd.env_remove(k),
                    };
                }
                cmd
            }
        };
        cmd.arg("run")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(quic.to_string());
        if spec.http_elsewhere.is_none() {
            cmd.arg("--http").arg(http.to_string());
        }
        if let Some(a) = admin {
            cmd.arg("--admin").arg(a.to_string());
        }
        for b in &spec.bootstrap {
            cmd.arg("--bootstrap").arg(b);
        }
        if let Some(t) = spec.rpc_timeout {
            cmd.arg("--rpc-timeout-ms").arg(t.as_millis().to_string());
        }
        if let Some(t) = spec.liveness {
            cmd.arg("--liveness-ms").arg(t.as_millis().to_string());
        }
        if spec.config_toml.is_some() {
            cmd.arg("--config").arg(dir.join("config.toml"));
        }
        cmd.args(&spec.args);
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }

    /// Kills the process if it still runs and starts it again: same directory, key, ports
    /// and flags. The log file keeps the earlier runs.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        if self.proc.try_exit()?.is_none() {
            self.proc.sigkill()?;
        }
        println!("harness: restarting {}", self.spec.name);
        let cmd = Self::command(
            &self.spec,
            self.dir.path(),
            self.quic,
            self.http,
            self.admin,
        )?;
        self.proc = ChildProc::spawn(&self.spec.name, cmd, self.dir.path())?;
        Ok(())
    }

    /// The spec, to change before a [`restart`](Self::restart) (say, its bootstrap peers).
    pub fn spec_mut(&mut self) -> &mut NodeSpec {
        &mut self.spec
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The QUIC listen address.
    pub fn quic(&self) -> SocketAddr {
        self.quic
    }

    /// The HTTP address.
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    /// The admin plane's address, when the harness chose it (see [`AdminSpec`]).
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The data directory (key and store).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process.
    pub fn process(&mut self) -> &mut ChildProc {
        &mut self.proc
    }

    /// Everything the node logged so far (all runs).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// SIGKILL, and reap.
    pub fn sigkill(&mut self) -> Result<ExitStatus, HarnessError> {
        println!("harness: SIGKILL {}", self.spec.name);
        self.proc.sigkill()
    }

    /// SIGTERM (graceful shutdown); see [`ChildProc::wait_exit`].
    pub fn sigterm(&mut self) -> Result<(), HarnessError> {
        println!("harness: SIGTERM {}", self.spec.name);
        self.proc.sigterm()
    }

    /// `GET path` on the node's HTTP port.
    pub fn get(&self, path: &str) -> Result<HttpResponse, HarnessError> {
        http::get(self.http, path, HTTP_TIMEOUT)
    }

    /// `GET path`, which must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Result<Value, HarnessError> {
        self.get_json_within(path, HTTP_TIMEOUT)
    }

    /// `GET path` on the node's admin plane.
    pub fn admin_get(&self, path: &str) -> Result<HttpResponse, HarnessError> {
        http::get(self.admin_addr()?, path, HTTP_TIMEOUT)
    }

    /// `GET path` on the admin plane, which must answer 200 with JSON.
    pub fn admin_json(&self, path: &str) -> Result<Value, HarnessError> {
        self.json_within(self.admin_addr()?, path, HTTP_TIMEOUT)
    }

    fn admin_addr(&self) -> Result<SocketAddr, HarnessError> {
        self.admin.ok_or_else(|| {
            unexpected(
                &format!("{} admin plane", self.spec.name),
                "the spec did not let the harness place it",
            )
        })
    }

    fn get_json_within(&self, path: &str, timeout: Duration) -> Result<Value, HarnessError> {
        self.json_within(self.http, path, timeout)
    }

    fn json_within(
        &self,
        at: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<Value, HarnessError> {
        let r = http::get(at, path, timeout)?;
        if r.status != 200 {
            return Err(unexpected(
                &format!("{} GET {path}", self.spec.name),
                format!("status {}: {}", r.status, r.body),
            ));
        }
        r.json()
    }

    /// `/v1/status`.
    pub fn status(&self) -> Result<Value, HarnessError> {
        self.get_json("/v1/status")
    }

    /// The node id, from `/v1/status` (remembered after the first answer).
    pub fn node_id(&mut self) -> Result<NodeId, HarnessError> {
        if let Some(id) = self.id {
            return Ok(id);
        }
        let status = self.status()?;
        // Another test process may have raced us to a port: make sure the node answering
        // on our HTTP port is the one listening on our QUIC port.
        if status["listen"] != self.quic.to_string() {
            return Err(unexpected(
                &format!("{} /v1/status", self.spec.name),
                format!("another node answers on {}: {status}", self.http),
            ));
        }
        let id = parse_id(&status["node_id"], "/v1/status node_id")?;
        self.id = Some(id);
        Ok(id)
    }

    /// `macronode id --data-dir` on this node's data directory.
    pub fn id_on_disk(&self) -> Result<NodeId, HarnessError> {
        id_on_disk(&self.data_dir())
    }

    /// The ids in the node's routing table (`/v1/routing` on the admin plane).
    pub fn routing_ids(&self) -> Result<Vec<NodeId>, HarnessError> {
        let v = self.admin_json("/v1/routing")?;
        let peers = v["peers"]
            .as_array()
            .ok_or_else(|| unexpected("/v1/routing", format!("no peers list: {v}")))?;
        peers
            .iter()
            .map(|p| parse_id(&p["id"], "/v1/routing id"))
            .collect()
    }

    /// Runs `/v1/lookup/{key}` on the admin plane.
    pub fn lookup(&self, key: &Key) -> Result<Lookup, HarnessError> {
        let path = format!("/v1/lookup/{}", hex::encode(key.0));
        let v = self.json_within(self.admin_addr()?, &path, LOOKUP_TIMEOUT)?;
        let closest = v["closest"]
            .as_array()
            .ok_or_else(|| unexpected(&path, format!("no closest list: {v}")))?
            .iter()
            .map(|id| parse_id(id, "closest id"))
            .collect::<Result<Vec<_>, _>>()?;
        let n = |f: &str| v[f].as_u64().unwrap_or(u64::MAX);
        Ok(Lookup {
            closest,
            hops: n("hops"),
            rpcs: n("rpcs"),
            timeouts: n("timeouts"),
        })
    }

    /// The value of one sample in `/metrics`, e.g.
    /// `oap_rejects_total{reason="bad_version"}`; `None` if the node has not recorded it.
    pub fn metric(&self, sample: &str) -> Result<Option<f64>, HarnessError> {
        let r = self.get("/metrics")?;
        if r.status != 200 {
            return Err(unexpected("/metrics", format!("status {}", r.status)));
        }
        Ok(r.body.lines().find_map(|l| {
            let rest = l.strip_prefix(sample)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        }))
    }

    /// `/readyz`: `Ok(None)` when ready, else the list of what is missing.
    pub fn readiness(&self) -> Result<Option<Vec<String>>, HarnessError> {
        let r = self.get("/readyz")?;
        match r.status {
            200 => Ok(None),
            503 => {
                let v = r.json()?;
                let missing = v["missing"]
                    .as_array()
                    .ok_or_else(|| unexpected("/readyz", format!("503 without missing: {v}")))?
                    .iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect();
                Ok(Some(missing))
            }
            other => Err(unexpected("/readyz", format!("status {other}: {}", r.body))),
        }
    }

    /// Waits until `/healthz` answers 200; returns how long it took. Fails at once if the
    /// process exits.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<Duration, HarnessError> {
        let started = Instant::now();
        let what = format!("{} /healthz 200", self.spec.name);
        poll_until_ok(&what, timeout, POLL, || {
            self.proc.check_running()?;
            Ok(self
                .get("/healthz")
                .is_ok_and(|r| r.status == 200)
                .then_some(()))
        })?;
        self.node_id()?;
        Ok(started.elapsed())
    }

    /// Waits until `/readyz` answers 200; returns how long it took. Fails at once if the
    /// process exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, HarnessError> {
        let started = Instant::now();
        let what = format!("{} /readyz 200", self.spec.name);
        poll_until_ok(&what, timeout, POLL, || {
            self.proc.check_running()?;
            Ok(self
                .get("/readyz")
                .is_ok_and(|r| r.status == 200)
                .then_some(()))
        })?;
        self.node_id()?;
        Ok(started.elapsed())
    }
}
