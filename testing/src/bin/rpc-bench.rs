//! `rpc-bench`: request/response round trips per second between two endpoints on loopback,
//! OAP/1 over the node's transport next to raw quinn in the same run, and the cold start
//! of a `macronode` process to `/readyz` 200.
//!
//! Three request loops, each with `--inflight` tasks (64) on one connection, one
//! bidirectional stream per request, counted over `--secs` after a warm-up:
//! - `quinn`: raw quinn (rustls + ring, as the node) echoing a `--payload`-byte body; the
//!   physical limit the others are held against;
//! - `oap1`: two node `Transport`s, the responder's handler echoing the same body on app
//!   protocol 1: OAP/1 framing, sequencing, HELLO-negotiated limits, request routing;
//! - `dht`: a `Transport` sending real DHT PINGs (the wire message of app protocol 1) to a
//!   full node started in-process (`node::app::start`), answered by its DHT driver task.
//!
//! The variants alternate (`oap1, quinn, dht`, then again) in short rounds, and each round's
//! ratio pairs measurements a second apart, so drift in machine load shows up as spread
//! instead of bias; the headline ratio is the median of the per-round ratios. Like the node binary, the process installs the Prometheus
//! recorder, so the transport's per-frame counters cost what they cost in production
//! (`--no-metrics` leaves it out). Then `--cold-runs` times start a fresh `macronode run`
//! (new data directory) that bootstraps off a running node, and time spawn → `/readyz` 200.
//!
//! Run it optimised: `cargo run --release -p testing --bin rpc-bench`; `--help`-less flags:
//! `--secs`, `--warmup`, `--rounds`, `--inflight`, `--payload`, `--cold-runs`, `--no-metrics`,
//! and `--only oap1|quinn|dht` to run one variant alone under a profiler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use node::config::{ConfigLayer, NodeConfig};
use node::transport::{HandlerFuture, NoApps};
use node::{Identity, InboundExchange, InboundHandler, Transport, TransportConfig};
use testing::benchkit::{loadavg, loopback, median};
use testing::node::{NodeProcess, NodeSpec};
use wire::dht::{APP_PROTO_DHT, DhtRequest, DhtResponse};
use wire::{NodeId, Status, message};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Options, from the command line.
#[derive(Debug, Clone)]
struct Opts {
    secs: f64,
    warmup: f64,
    rounds: usize,
    inflight: usize,
    payload: usize,
    cold_runs: usize,
    metrics: bool,
    /// Run only this variant (`oap1`, `quinn` or `dht`), for profiling.
    only: Option<String>,
}

impl Opts {
    fn parse() -> Result<Opts, String> {
        let mut o = Opts {
            secs: 1.0,
            warmup: 0.3,
            rounds: 15,
            inflight: 64,
            payload: 100,
            cold_runs: 5,
            metrics: true,
            only: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--no-metrics" {
                o.metrics = false;
                continue;
            }
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--secs" => o.secs = value.parse().map_err(|e| bad(&e))?,
                "--warmup" => o.warmup = value.parse().map_err(|e| bad(&e))?,
                "--rounds" => o.rounds = value.parse().map_err(|e| bad(&e))?,
                "--inflight" => o.inflight = value.parse().map_err(|e| bad(&e))?,
                "--payload" => o.payload = value.parse().map_err(|e| bad(&e))?,
                "--cold-runs" => o.cold_runs = value.parse().map_err(|e| bad(&e))?,
                "--only" => o.only = Some(value),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(o)
    }
}

/// Echoes app protocol 1 (the DHT's number, so frames look like DHT traffic).
struct Echo;

impl InboundHandler for Echo {
    fn app_protos(&self) -> Vec<u16> {
        vec![APP_PROTO_DHT]
    }

    fn handle(&self, mut ex: InboundExchange) -> HandlerFuture {
        Box::pin(async move {
            let body = ex.read_body(64 * 1024).await?;
            ex.respond(Status::Ok, body).await
        })
    }
}

/// One request of a variant; `true` when it completed as expected.
trait Client: Send + Sync + 'static {
    fn call(&self) -> impl std::future::Future<Output = bool> + Send;
}

struct OapClient {
    t: Transport,
    peer: NodeId,
    body: Bytes,
}

impl Client for OapClient {
    async fn call(&self) -> bool {
        match self
            .t
            .request(self.peer, APP_PROTO_DHT, self.body.clone())
            .await
        {
            Ok((Status::Ok, reply)) => reply.len() == self.body.len(),
            _ => false,
        }
    }
}

struct DhtClient {
    t: Transport,
    peer: NodeId,
    ping: Bytes,
}

impl Client for DhtClient {
    async fn call(&self) -> bool {
        match self
            .t
            .request(self.peer, APP_PROTO_DHT, self.ping.clone())
            .await
        {
            Ok((Status::Ok, reply)) => {
                matches!(
                    message::decode::<DhtResponse>(&reply),
                    Ok(DhtResponse::Pong)
                )
            }
            _ => false,
        }
    }
}

struct QuinnClient {
    conn: quinn::Connection,
    body: Bytes,
}

impl Client for QuinnClient {
    async fn call(&self) -> bool {
        let Ok((mut send, mut recv)) = self.conn.open_bi().await else {
            return false;
        };
        if send.write_all(&self.body).await.is_err() || send.finish().is_err() {
            return false;
        }
        matches!(recv.read_to_end(64 * 1024).await, Ok(r) if r.len() == self.body.len())
    }
}

/// Round trips per second of `client` with `inflight` tasks, over `secs` after `warmup`,
/// and failures in that window.
async fn measure<C: Client>(client: Arc<C>, o: &Opts) -> (f64, u64) {
    let (rate, failed, _) = measure_all(client, o).await;
    (rate, failed)
}

/// [`measure`], plus every round trip completed, warm-up and wind-down included (to divide
/// a whole-process instruction count by).
async fn measure_all<C: Client>(client: Arc<C>, o: &Opts) -> (f64, u64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..o.inflight {
        let (client, done, failed, stop) =
            (client.clone(), done.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = client.call().await;
                let counter = if ok { &done } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let (c0, f0, t0) = (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(o.secs)).await;
    let (c1, f1, t1) = (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let rate = (c1 - c0) as f64 / (t1 - t0).as_secs_f64();
    (rate, f1 - f0, done.load(Ordering::Relaxed))
}

async fn oap_pair(o: &Opts) -> Result<OapClient, BoxError> {
    let server = Transport::bind(
        Arc::new(Identity::generate()?),
        TransportConfig::with_listen(loopback()),
        Arc::new(Echo),
    )?;
    let t = Transport::bind(
        Arc::new(Identity::generate()?),
        TransportConfig::with_listen(loopback()),
        Arc::new(NoApps),
    )?;
    let info = t
        .connect(server.local_addr(), Some(server.node_id()))
        .await?;
    // The server lives as long as the client's connection: keep its handle in a task.
    tokio::spawn(async move {
        std::future::pending::<()>().await;
        drop(server);
    });
    Ok(OapClient {
        t,
        peer: info.id,
        body: Bytes::from(vec![0x5a; o.payload]),
    })
}

async fn dht_pair() -> Result<(DhtClient, node::app::RunningNode, tempfile::TempDir), BoxError> {
    let dir = tempfile::tempdir()?;
    let config = NodeConfig::resolve(ConfigLayer {
        data_dir: Some(dir.path().join("data")),
        listen: Some(loopback()),
        http: Some(loopback()),
        ..ConfigLayer::default()
    })?;
    let running = node::app::start(config, None).await?;
    let t = Transport::bind(
        Arc::new(Identity::generate()?),
        TransportConfig::with_listen(loopback()),
        Arc::new(NoApps),
    )?;
    let addr = running.ctx.transport.local_addr();
    let info = t
        .connect(addr, Some(running.ctx.transport.node_id()))
        .await?;
    let client = DhtClient {
        t,
        peer: info.id,
        ping: message::encode(&DhtRequest::Ping),
    };
    Ok((client, running, dir))
}

async fn quinn_pair(o: &Opts) -> Result<QuinnClient, BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)?;
    server_tls.alpn_protocols = vec![b"echo".to_vec()];
    let mut transport = quinn::TransportConfig::default();
    // As the node's transport allows: room for every request in flight.
    transport.max_concurrent_bidi_streams(128u32.into());
    let transport = Arc::new(transport);
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
    ));
    server_cfg.transport_config(transport.clone());
    let server = quinn::Endpoint::server(server_cfg, loopback())?;
    let server_addr = server.local_addr()?;
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let Ok(conn) = incoming.await else { continue };
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        if let Ok(body) = recv.read_to_end(64 * 1024).await {
                            let _ = send.write_all(&body).await;
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![b"echo".to_vec()];
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
    ));
    client_cfg.transport_config(transport);
    let mut client = quinn::Endpoint::client(loopback())?;
    client.set_default_client_config(client_cfg);
    let conn = client.connect(server_addr, "localhost")?.await?;
    Ok(QuinnClient {
        conn,
        body: Bytes::from(vec![0x5a; o.payload]),
    })
}

/// One variant alone, `rounds` times (for `perf record`).
async fn only(name: &str, o: &Opts) -> Result<(), BoxError> {
    for round in 1..=o.rounds {
        let (rate, failed, total) = match name {
            "oap1" => measure_all(Arc::new(oap_pair(o).await?), o).await,
            "quinn" => measure_all(Arc::new(quinn_pair(o).await?), o).await,
            "dht" => {
                let (client, _node, _dir) = dht_pair().await?;
                measure_all(Arc::new(client), o).await
            }
            other => return Err(format!("--only {other}: oap1, quinn or dht").into()),
        };
        println!("{round:>5}  {name} {rate:.0} req/s ({failed} failed; {total} done in all)");
    }
    Ok(())
}

async fn rpc_rates(o: &Opts) -> Result<(), BoxError> {
    if let Some(name) = &o.only {
        return only(name, o).await;
    }
    let oap = Arc::new(oap_pair(o).await?);
    let quinn = Arc::new(quinn_pair(o).await?);
    let (dht, _node, _dir) = dht_pair().await?;
    let dht = Arc::new(dht);
    let (mut a, mut b, mut d) = (Vec::new(), Vec::new(), Vec::new());
    println!("round  oap1 echo req/s  raw quinn req/s  dht ping req/s  (failures)  load avg");
    for round in 1..=o.rounds {
        let (ra, fa) = measure(oap.clone(), o).await;
        let (rb, fb) = measure(quinn.clone(), o).await;
        let (rd, fd) = measure(dht.clone(), o).await;
        println!(
            "{round:>5}  {ra:>15.0}  {rb:>15.0}  {rd:>14.0}  ({fa}/{fb}/{fd})  {}",
            loadavg()
        );
        a.push(ra);
        b.push(rb);
        d.push(rd);
    }
    let ratio_a: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    let ratio_d: Vec<f64> = d.iter().zip(&b).map(|(x, y)| x / y).collect();
    let shown = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("oap1/quinn per round: {}", shown(&ratio_a));
    println!("dht/quinn per round:  {}", shown(&ratio_d));
    let (ma, mb, md) = (median(&mut a), median(&mut b), median(&mut d));
    // Each round's ratio pairs measurements seconds apart, so load drift on the machine
    // cancels out; the median of those is the headline figure.
    println!(
        "median req/s: oap1 echo {ma:.0}, raw quinn {mb:.0}, dht ping {md:.0}; \
         median of per-round ratios: oap1/quinn {:.2}, dht/quinn {:.2}",
        median(&mut ratio_a.clone()),
        median(&mut ratio_d.clone()),
    );
    Ok(())
}

/// Spawn → `/readyz` 200 of fresh nodes that bootstrap off a running one. The nodes
/// measured stay up until the end, so each newcomer joins a live mesh (a node that left
/// would stay in the others' tables and make the next join wait out an RPC timeout).
fn cold_start(o: &Opts) -> Result<(), BoxError> {
    if o.cold_runs == 0 {
        return Ok(());
    }
    let mut first = NodeProcess::start(NodeSpec::new("cold-0"))?;
    first.wait_healthy(Duration::from_secs(10))?;
    let peer = first.quic().to_string();
    let mut times = Vec::new();
    let mut nodes = vec![first];
    for i in 0..o.cold_runs {
        let started = Instant::now();
        let mut node =
            NodeProcess::start(NodeSpec::new(format!("cold-{}", i + 1)).bootstrap(&peer))?;
        let deadline = started + Duration::from_secs(10);
        loop {
            let ready = testing::http::get(node.http(), "/readyz", Duration::from_secs(1))
                .is_ok_and(|r| r.status == 200);
            if ready {
                break;
            }
            node.process().check_running()?;
            if Instant::now() > deadline {
                return Err(format!("{} not ready within 10 s", node.name()).into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        nodes.push(node);
    }
    let shown: Vec<String> = times.iter().map(|t| format!("{t:.0}")).collect();
    println!(
        "cold start to /readyz 200 (ms, {} runs): {}; median {:.0} ms",
        times.len(),
        shown.join(", "),
        median(&mut times)
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let o = Opts::parse()?;
    println!(
        "rpc-bench: {} s x {} rounds per variant after {} s warm-up, {} in flight, {}-byte \
         echo body, metrics recorder {}; load avg {}",
        o.secs,
        o.rounds,
        o.warmup,
        o.inflight,
        o.payload,
        if o.metrics { "on" } else { "off" },
        loadavg()
    );
    if o.metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(rpc_rates(&o))?;
    drop(rt);
    cold_start(&o)
}
