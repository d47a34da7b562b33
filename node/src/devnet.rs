//! `macronode devnet`: a local mesh of real node processes on loopback, for newcomers and
//! for trying things out.
//!
//! Node 0 starts a new mesh; every other node bootstraps off node 0 by address (its id is
//! learned from the handshake). Each node gets its own data directory, QUIC port, HTTP
//! port and admin port (9080 + i by default, clear of the HTTP ports 8080 + i). The command waits until every node answers `/readyz` 200, prints their URLs, and
//! stops them all (SIGTERM, then SIGKILL after a grace period) on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Options of `macronode devnet`.
#[derive(Debug, Clone, Args)]
pub struct DevnetArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 5)]
    pub nodes: u16,
    /// Directory holding one data directory per node (kept across runs: same ids).
    #[arg(long, default_value = "devnet-data")]
    pub dir: PathBuf,
    /// QUIC port of node 0; node i uses this + i.
    #[arg(long, default_value_t = 7400)]
    pub quic_port: u16,
    /// HTTP port of node 0; node i uses this + i.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Admin plane port of node 0; node i uses this + i (loopback only).
    #[arg(long, default_value_t = 9080)]
    pub admin_port: u16,
    /// Seconds to wait for every node to be ready.
    #[arg(long, default_value_t = 30)]
    pub ready_timeout: u64,
}

/// Answers `GET path` on `addr` with the status code and body, within `timeout`. Enough
/// HTTP/1.1 for readiness probes, without an HTTP client dependency.
pub async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}

struct DevNode {
    child: Child,
    http: SocketAddr,
    admin: SocketAddr,
}

fn spawn_node(args: &DevnetArgs, i: u16, bootstrap: Option<SocketAddr>) -> anyhow::Result<DevNode> {
    let exe = std::env::current_exe().context("locating the macronode binary")?;
    let quic = SocketAddr::from(([127, 0, 0, 1], args.quic_port + i));
    let http = SocketAddr::from(([127, 0, 0, 1], args.http_port + i));
    let admin = SocketAddr::from(([127, 0, 0, 1], args.admin_port + i));
    let dir = args.dir.join(format!("node-{i}"));
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg("--data-dir")
        .arg(&dir)
        .arg("--listen")
        .arg(quic.to_string())
        .arg("--http")
        .arg(http.to_string())
        .arg("--admin")
        .arg(admin.to_string());
    if let Some(b) = bootstrap {
        cmd.arg("--bootstrap").arg(b.to_string());
    }
    // One capability key for the whole devnet, so one token writes through any gateway.
    cmd.arg("--cap-key").arg(args.dir.join("cap.key"));
    // The children log to files so the devnet's own output stays readable.
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = std::fs::File::create(dir.join("node.log")).context("creating node.log")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("starting node {i}"))?;
    Ok(DevNode { child, http, admin })
}

async fn stop_all(nodes: &mut [DevNode]) {
    for n in nodes.iter() {
        if let Some(pid) = n.child.id() {
            // SIGTERM asks for the graceful shutdown path.
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
    for n in nodes.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), n.child.wait())
            .await
            .is_err()
        {
            let _ = n.child.kill().await;
        }
    }
}

/// Runs the devnet until Ctrl-C or SIGTERM.
pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cap_key = args.dir.join("cap.key");
    if !cap_key.exists() {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k)
            .map_err(|e| anyhow::anyhow!("no entropy for the devnet key: {e}"))?;
        write_private(&cap_key, hex::encode(k).as_bytes())
            .with_context(|| format!("writing {}", cap_key.display()))?;
    }
    let first = SocketAddr::from(([127, 0, 0, 1], args.quic_port));
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let bootstrap = (i > 0).then_some(first);
        match spawn_node(&args, i, bootstrap) {
            Ok(n) => nodes.push(n),
            Err(e) => {
                stop_all(&mut nodes).await;
                return Err(e);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.ready_timeout);
    let mut ready = vec![false; nodes.len()];
    while ready.iter().any(|r| !r) && tokio::time::Instant::now() < deadline {
        for (i, n) in nodes.iter_mut().enumerate() {
            if let Ok(Some(status)) = n.child.try_wait() {
                let log = args.dir.join(format!("node-{i}/node.log"));
                stop_all(&mut nodes).await;
                bail!("node {i} exited with {status}; see {}", log.display());
            }
            if !ready[i] {
                ready[i] = matches!(
                    http_get(n.http, "/readyz", Duration::from_secs(1)).await,
                    Some((200, _))
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(i) = ready.iter().position(|r| !r) {
        stop_all(&mut nodes).await;
        bail!(
            "node {i} did not become ready within {} s; see {}",
            args.ready_timeout,
            args.dir.display()
        );
    }
    println!("devnet: {} nodes ready", nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        println!("  node {i}: http://{}  admin http://{}", n.http, n.admin);
    }
    let token = crate::cli::mint(&crate::cli::MintArgs {
        data_dir: args.dir.join("node-0"),
        cap_key: Some(cap_key),
        expires_in: 7 * 86_400,
        methods: vec!["PUT".into()],
        max_bytes: None,
        tenant: None,
        quota_bytes: None,
        rate: None,
        mail_messages_max: None,
        mail_bytes_max: None,
    })?;
    println!(
        "write token (any node, 7 days): {}\n  its id (for `token revoke`): {}",
        token.token, token.id
    );
    println!(
        "try:  curl -X PUT --data-binary @FILE -H \"Authorization: Bearer $TOKEN\" http://{}/o",
        nodes[0].http
    );
    println!("Ctrl-C stops them all.");
    crate::signals::wait_for_shutdown().await;
    println!("stopping");
    stop_all(&mut nodes).await;
    Ok(())
}

/// Writes a secret file readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
