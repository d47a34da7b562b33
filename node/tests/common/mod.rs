//! Helpers shared by the in-process node tests: start nodes on loopback with temp stores,
//! join them into a mesh, and speak HTTP to their gateways with a real client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use node::app::{self, RunningNode};
use node::config::{ConfigLayer, NodeConfig};
use node::dht::NetPeer;

/// The configuration of node `i` under `dir`: loopback ports the OS picks, open writes,
/// quick RPC timeouts; `bootstrap` if given.
pub fn config(dir: &Path, i: usize, bootstrap: Option<SocketAddr>) -> NodeConfig {
    let layer = ConfigLayer {
        data_dir: Some(dir.join(format!("n{i}"))),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        http: Some("127.0.0.1:0".parse().unwrap()),
        bootstrap: bootstrap.map(|b| vec![b.to_string()]),
        open_writes: Some(true),
        rpc_timeout_ms: Some(1000),
        ..ConfigLayer::default()
    };
    NodeConfig::resolve(layer).unwrap()
}

/// Starts a node from `config`.
pub async fn start_with(config: NodeConfig) -> RunningNode {
    app::start(config, None).await.unwrap()
}

/// A lone node under `dir` whose gateway needs a capability for writes (adjusted by
/// `tweak`), and the root key its tokens are minted under.
pub async fn gated_node(dir: &Path, tweak: impl Fn(&mut NodeConfig)) -> (RunningNode, [u8; 32]) {
    let mut c = config(dir, 0, None);
    c.open_writes = false;
    tweak(&mut c);
    let node = start_with(c).await;
    let identity = node::Identity::load_or_create(&dir.join("n0")).unwrap();
    (node, node::caps::derived_root(&identity))
}

/// Starts node `i` with the default test configuration.
pub async fn start(dir: &Path, i: usize, bootstrap: Option<SocketAddr>) -> RunningNode {
    start_with(config(dir, i, bootstrap)).await
}

/// `n` nodes joined through the first, each adjusted by `tweak`, all ready and each
/// knowing every other in its routing table.
pub async fn mesh_with(dir: &Path, n: usize, tweak: impl Fn(&mut NodeConfig)) -> Vec<RunningNode> {
    let mut c = config(dir, 0, None);
    tweak(&mut c);
    let first = start_with(c).await;
    let boot = first.ctx.transport.local_addr();
    let mut nodes = vec![first];
    for i in 1..n {
        let mut c = config(dir, i, Some(boot));
        tweak(&mut c);
        nodes.push(start_with(c).await);
    }
    for (i, node) in nodes.iter().enumerate() {
        assert!(
            node.ctx.dht.wait_ready(Duration::from_secs(10)).await,
            "node {i} not ready"
        );
    }
    // Strangers enter a table only once they answered a request: give the verification
    // pings a moment, then insist on full tables so the tests are about what they test.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut full = true;
        for node in &nodes {
            full &= node.ctx.dht.routing_table().await.unwrap().len() == n - 1;
        }
        if full {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tables did not fill"
        );
        // A lookup from each node makes it ask (and so be verified by) the others.
        for node in &nodes {
            let _ = node.ctx.dht.find_node(node.ctx.dht.local().key).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes
}

/// `n` nodes with the default test configuration.
pub async fn mesh(dir: &Path, n: usize) -> Vec<RunningNode> {
    mesh_with(dir, n, |_| {}).await
}

/// A node as its peers name it.
pub fn peer(node: &RunningNode) -> NetPeer {
    NetPeer::new(
        node.ctx.transport.node_id(),
        node.ctx.transport.local_addr(),
    )
}

/// A response as a test reads it.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP request with a real client (ureq): `method` to `url` with `headers` and `body`.
pub async fn request(
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Reply {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = match method {
            "PUT" => {
                // 100-continue: a refusal (401, 413, 429) comes before the body is sent,
                // instead of a broken pipe while sending it.
                let mut r = agent.put(&url).header("Expect", "100-continue");
                for (k, v) in &headers {
                    r = r.header(*k, v);
                }
                r.send(&body[..]).unwrap()
            }
            _ => {
                let mut r = agent.get(&url);
                for (k, v) in &headers {
                    r = r.header(*k, v);
                }
                r.call().unwrap()
            }
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .unwrap();
        Reply {
            status,
            headers,
            body,
        }
    })
    .await
    .unwrap()
}

/// `PUT`/`GET` without extra headers: the status and the body.
pub async fn http(method: &'static str, url: String, body: Vec<u8>) -> (u16, Vec<u8>) {
    let r = request(method, url, Vec::new(), body).await;
    (r.status, r.body)
}

/// Logs to the test's output at `RUST_LOG` (default warn).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Flips the bits `mask` of the byte at `at` of a file in place (same size, same inode),
/// as a disk's rot would. Rewriting the file instead (truncate, then write) would let a
/// background read in between find it short, a different fault from the one meant.
pub fn flip_in_place(path: &Path, at: u64, mask: u8) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= mask;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
}
