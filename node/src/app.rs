//! One running node: identity, store, transport, DHT driver, objects, bootstrap, HTTP edge,
//! shutdown.
//!
//! [`start`] brings the pieces up in dependency order and returns a [`RunningNode`];
//! [`RunningNode::shutdown`] takes them down in reverse. The inbound handler is created
//! before the services it routes to exist (the transport needs it to bind), so it finds
//! them through a `OnceLock` and answers 503 until the node is wired.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use overlay::RejoinStep;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wire::Status;
use wire::dht::{APP_PROTO_DHT, DhtRequest};
use wire::mailbox::APP_PROTO_MAILBOX;
use wire::object::APP_PROTO_OBJECT;

use crate::config::{BootstrapPeer, NodeConfig};
use crate::dht::contacts::{self, ContactBook};
use crate::dht::{self, DhtHandle, NetPeer};
use crate::gateway::objects::GatewaySettings;
use crate::gateway::{self, GatewayLimits};
use crate::identity::Identity;
use crate::mail::{Mail, serve_mailbox};
use crate::objects::{Objects, serve_object};
use crate::quota::Quotas;
use crate::store::Store;
use crate::transport::{
    HandlerFuture, InboundExchange, InboundHandler, Transport, TransportConfig,
};

/// How often a changed store index is written to disk.
const INDEX_SAVE_EVERY: Duration = Duration::from_secs(60);
/// How often changed tenant accounts are written to disk.
const QUOTA_SAVE_EVERY: Duration = Duration::from_secs(5);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits to save the routing table's contacts.
const CONTACTS_SAVE_GRACE: Duration = Duration::from_secs(2);

/// What the HTTP handlers need to know about the node.
pub struct NodeContext {
    /// The DHT driver.
    pub dht: DhtHandle,
    /// The QUIC transport.
    pub transport: Transport,
    /// The object layer (store, replication, fetch).
    pub objects: Objects,
    /// The mailbox layer (this node's holder store; send, receive, ack).
    pub mail: Mail,
    /// Gateway settings for writes.
    pub gateway: GatewaySettings,
    /// The Prometheus recorder's handle, if this process installed one.
    pub metrics: Option<PrometheusHandle>,
    /// The HTTP address actually bound.
    pub http: SocketAddr,
    /// The admin plane's address actually bound (`None`: off).
    pub admin: Option<SocketAddr>,
    /// When the node started (uptime on the status page).
    pub started: std::time::Instant,
    /// Peers the routing table must hold before the node is ready.
    pub min_peers: usize,
    /// The negative cache and per-client search budgets for GETs of ids not held here.
    pub misses: gateway::misses::MissGuard,
}

impl NodeContext {
    /// What keeps the node from being ready (empty when ready).
    pub fn readiness_gaps(&self) -> Vec<&'static str> {
        let s = self.dht.status();
        let mut missing = Vec::new();
        if s.routing_table_size < self.min_peers {
            missing.push("peers");
        }
        // The first node of a new mesh (no peers required) has nobody to join.
        if self.min_peers > 0 && !s.ready {
            missing.push("dht_joined");
        }
        missing
    }

    /// Sets the gauges that are read rather than counted.
    pub fn publish_gauges(&self) {
        let s = self.dht.status();
        metrics::gauge!("dht_routing_table_peers").set(s.routing_table_size as f64);
        metrics::gauge!("dht_liars_denied").set(s.liars_denied as f64);
        metrics::gauge!("transport_connections").set(self.transport.connection_count() as f64);
        metrics::gauge!("store_bytes").set(self.objects.store.bytes() as f64);
        metrics::gauge!("store_objects").set(self.objects.store.len() as f64);
        metrics::gauge!("rf_target").set(self.objects.limits.rf as f64);
        metrics::gauge!("rf_observed").set(s.replicas_mean_milli as f64 / 1000.0);
        metrics::gauge!("repair_transfers_in_flight").set(s.transfers_in_flight as f64);
        metrics::gauge!("writes_in_flight").set(self.objects.writes_in_flight() as f64);
        metrics::gauge!("writes_committing").set(self.objects.commits_in_flight() as f64);
        metrics::gauge!("uploads_streaming").set(self.objects.uploads_streaming() as f64);
        self.mail.publish_gauges();
    }

    /// The `/v1/status` document.
    pub fn status_json(&self) -> Value {
        let s = self.dht.status();
        let o = &self.objects.stats;
        let t = self.transport.stats().snapshot();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        json!({
            "node_id": self.transport.node_id().to_string(),
            "listen": self.transport.local_addr().to_string(),
            "http": self.http.to_string(),
            "peers": self.transport.connection_count(),
            "routing_table_size": s.routing_table_size,
            "liars_denied": s.liars_denied,
            "provider_records": s.provider_records,
            "objects": self.objects.store.len(),
            "integrity_failures": {
                "store": self.objects.store.corrupt_found(),
                "peer": load(&o.integrity_fail_peer),
                "push": load(&o.integrity_fail_push),
                "proof": load(&o.holders_lied),
            },
            "repair": {
                "transfers": load(&o.repair_transfers),
                "bytes": load(&o.repair_bytes),
            },
            "pushes": {
                "stored": load(&o.pushes_stored),
                "refused": load(&o.pushes_refused),
            },
            "connections": {
                "dialed": t.connections_dialed,
                "accepted": t.connections_accepted,
                "refused": t.connections_refused,
                "handshakes_failed": t.handshakes_failed,
            },
            "bytes_stored": self.objects.store.bytes(),
            "store_quota_bytes": self.objects.store.quota(),
            "rf_target": self.objects.limits.rf,
            "rf_observed": s.replicas_mean_milli as f64 / 1000.0,
            "uptime_secs": self.started.elapsed().as_secs(),
            "buckets": s.buckets.iter().map(|(b, n)| json!({"bucket": b, "peers": n})).collect::<Vec<_>>(),
            "recent_lookups": s.recent_lookups.iter().map(|l| json!({
                "hops": l.hops,
                "ms": l.duration.as_secs_f64() * 1000.0,
            })).collect::<Vec<_>>(),
            "ready": s.ready,
            "version": env!("CARGO_PKG_VERSION"),
        })
    }
}

/// Routes inbound requests to the services above the transport.
struct NodeHandler {
    services: OnceLock<(DhtHandle, Transport, Objects, Mail)>,
}

impl InboundHandler for NodeHandler {
    fn app_protos(&self) -> Vec<u16> {
        vec![APP_PROTO_DHT, APP_PROTO_OBJECT, APP_PROTO_MAILBOX]
    }

    fn handle(&self, exchange: InboundExchange) -> HandlerFuture {
        // Each arm boxes its own future: one `async` block over all arms would be as large
        // as the object transfer's and be moved on every DHT request (18% of a DHT round
        // trip's instructions, measured with callgrind).
        // Only the service that serves the request is cloned (all of them, `Objects` the
        // dearest, had been cloned and dropped on every request).
        match (exchange.app_proto_id(), self.services.get()) {
            (APP_PROTO_DHT, Some((dht, transport, _, _))) => {
                Box::pin(dht::serve_dht(exchange, dht.clone(), transport.clone()))
            }
            (APP_PROTO_OBJECT, Some((_, _, objects, _))) => {
                Box::pin(serve_object(exchange, objects.clone()))
            }
            (APP_PROTO_MAILBOX, Some((_, _, _, mail))) => {
                Box::pin(serve_mailbox(exchange, mail.clone()))
            }
            _ => Box::pin(exchange.respond(Status::Unavailable, bytes::Bytes::new())),
        }
    }

    fn bounds_itself(&self, app_proto: u16) -> bool {
        // Object transfers end on idleness or a too-low rate, not after a fixed time.
        app_proto == APP_PROTO_OBJECT
    }

    fn replay_safe(&self, app_proto: u16, body: &[u8]) -> bool {
        // DHT reads: answered from the table, changing nothing but the sender's last-seen
        // time. Writes (ADD_PROVIDER), objects and mail wait for the handshake (see
        // `transport::tls`).
        app_proto == APP_PROTO_DHT
            && matches!(
                wire::message::decode::<DhtRequest>(body),
                Ok(DhtRequest::Ping
                    | DhtRequest::FindNode { .. }
                    | DhtRequest::GetProviders { .. })
            )
    }
}

/// A node that is up.
pub struct RunningNode {
    /// Shared with the HTTP handlers.
    pub ctx: Arc<NodeContext>,
    /// The saved contacts file (`None` with `--amnesia`).
    contacts: Option<Arc<ContactBook>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    http_tasks: Vec<JoinHandle<()>>,
}

/// Errors that stop a node from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The capability keys or the revocation list could not be read.
    #[error("capability keys: {0}")]
    CapKey(#[from] crate::keyring::KeyringError),
    /// The mailbox store could not be opened (its journals are corrupt, or unreadable).
    #[error("mailbox store: {0}")]
    Mailbox(#[from] mailbox::StoreError),
    /// The tenant accounts could not be read.
    #[error("tenant accounts: {0}")]
    Quotas(std::io::Error),
    /// The QUIC endpoint could not start.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// A bootstrap peer's name did not resolve.
    #[error("bootstrap peer {peer} does not resolve: {source}")]
    Bootstrap {
        /// The peer as configured.
        peer: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP port could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin plane could not be bound, or its address not recorded.
    #[error("admin plane on {addr}: {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The file in the data directory naming the admin plane's bound address, for the
/// operator commands (`macronode status`, `token revoke`) to find a running node.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// The mailbox store's directory inside the data directory.
pub const MAILBOX_DIR: &str = "mailbox";

/// Admin requests served at once: a few operators, never a crowd.
const ADMIN_REQUESTS_MAX: usize = 16;

/// Binds the admin plane and records where it listens (or removes a stale record when it
/// is off).
async fn bind_admin(config: &NodeConfig) -> Result<Option<(TcpListener, SocketAddr)>, StartError> {
    let record = config.data_dir.join(ADMIN_ADDR_FILE);
    let Some(addr) = config.admin else {
        let _ = std::fs::remove_file(&record);
        return Ok(None);
    };
    let err = |source| StartError::Admin { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    let tmp = record.with_extension("addr.tmp");
    // The record only saves the CLI an `--admin` flag: a node on a full disk must still
    // start and serve what it holds. A stale record would send the CLI elsewhere, so it
    // goes too (a removal needs no space).
    if let Err(e) =
        std::fs::write(&tmp, format!("{bound}\n")).and_then(|()| std::fs::rename(&tmp, &record))
    {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(&record);
        tracing::warn!(
            error = %e,
            path = %record.display(),
            "could not record the admin plane's address; the CLI needs --admin {bound}"
        );
    }
    Ok(Some((listener, bound)))
}

/// Starts a node from its configuration.
pub async fn start(
    config: NodeConfig,
    metrics: Option<PrometheusHandle>,
) -> Result<RunningNode, StartError> {
    let identity = Arc::new(Identity::load_or_create(&config.data_dir)?);
    // The contacts of the last run's table: extra bootstrap peers (D9). Memory-only nodes
    // neither read nor write them.
    let (contacts, saved) = if config.amnesia {
        (None, Vec::new())
    } else {
        let path = config.data_dir.join(contacts::CONTACTS_FILE);
        let saved = contacts::load_for_start(&path, &identity.node_id());
        (Some(Arc::new(ContactBook::new(path, &saved))), saved)
    };
    // A name that does not resolve now is a typo more often than an outage: say so at once.
    for p in &config.bootstrap {
        resolve(p).await.map_err(|source| StartError::Bootstrap {
            peer: p.to_string(),
            source,
        })?;
    }
    let store = if config.amnesia {
        Store::amnesia(config.store_quota_bytes)
    } else {
        Store::open(&config.data_dir, config.store_quota_bytes)?
    };
    store.set_direct_io(config.direct_io);
    let keyring = crate::keyring::Keyring::load(
        crate::keyring::KeyFiles {
            data_dir: config.data_dir.clone(),
            cap_key: config.cap_key.clone(),
        },
        identity.clone(),
    )?;
    let handler = Arc::new(NodeHandler {
        services: OnceLock::new(),
    });
    let tconfig = TransportConfig {
        listen: config.listen,
        zero_rtt: config.zero_rtt,
        ..TransportConfig::default()
    };
    let transport = Transport::bind(identity.clone(), tconfig, handler.clone())?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let seed = u64::from_le_bytes(rand_seed());
    let replication = config.replication.clone();
    let (dht, plans) = dht::spawn(
        transport.clone(),
        transport.local_addr(),
        config.dht.clone(),
        replication,
        seed,
        !config.bootstrap.is_empty() || !saved.is_empty(),
        shutdown_rx.clone(),
    );
    let quotas = if config.amnesia {
        Quotas::in_memory()
    } else {
        Quotas::open(config.data_dir.join("tenants.json")).map_err(StartError::Quotas)?
    };
    let objects = Objects::new(
        store.clone(),
        transport.clone(),
        dht.clone(),
        config.objects.clone(),
        keyring.clone(),
        quotas.clone(),
    );
    let mut mb_config = if config.amnesia {
        mailbox::Config::amnesia()
    } else {
        mailbox::Config::durable(config.data_dir.join(MAILBOX_DIR))
    };
    mb_config.quotas = config.mailbox_quotas.clone();
    // One bad byte in one shard's journal must not keep the node (its objects, its other
    // shards) down: the shard keeps what came before it, and the copies it lost come back
    // from the other holders (their repair, our own mail's drain at start).
    mb_config.salvage = true;
    let (mb_store, opened) = {
        let now = crate::mail::now();
        tokio::task::spawn_blocking(move || mailbox::MailboxStore::open(mb_config, now))
            .await
            .map_err(|e| StartError::Mailbox(mailbox::StoreError::BadConfig(e.to_string())))??
    };
    for cut in &opened.salvaged {
        tracing::error!(
            journal = %cut.journal.display(),
            at_byte = cut.offset,
            dropped_bytes = cut.dropped_bytes,
            why = cut.why,
            kept_at = %cut.copy.as_ref().map_or("nowhere (no room)".into(), |p| p.display().to_string()),
            "a mailbox journal was corrupt: kept the records before the bad one and cut the \
             rest (kept aside where there was room); the copies cut come back from the other \
             holders"
        );
        metrics::counter!("mailbox_journals_salvaged_total").increment(1);
    }
    if opened.records > 0 {
        tracing::info!(
            messages = opened.messages,
            records = opened.records,
            torn = opened.torn_records,
            "mailbox journals replayed"
        );
    }
    let mail = Mail::new(mb_store, objects.clone(), config.mailbox_repair_every);
    let _ = handler.services.set((
        dht.clone(),
        transport.clone(),
        objects.clone(),
        mail.clone(),
    ));
    // Objects already on disk are ours to replicate and announce: handed to the DHT in the
    // background, which announces them a few at a time (`announcements_max`), so a large
    // store neither delays start-up nor floods the mesh. A
    // store opened from its index snapshot first walks its files (it serves meanwhile).
    let announcing = {
        let objects = objects.clone();
        tokio::spawn(async move {
            if !objects.store.is_reconciled() {
                let store = objects.store.clone();
                let started = std::time::Instant::now();
                match tokio::task::spawn_blocking(move || store.reconcile()).await {
                    Ok(Ok(())) => tracing::info!(
                        objects = objects.store.len(),
                        took = ?started.elapsed(),
                        "store index reconciled with the files"
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "reconciling the store index failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "reconciling the store index failed"),
                }
            }
            let _ = objects.announce_stored().await;
        })
    };

    let listener = TcpListener::bind(config.http)
        .await
        .map_err(|source| StartError::Http {
            addr: config.http,
            source,
        })?;
    let http = listener.local_addr().map_err(|source| StartError::Http {
        addr: config.http,
        source,
    })?;
    let admin = bind_admin(&config).await?;
    let gateway = GatewaySettings {
        open_writes: config.open_writes,
        keyring,
        body_idle_timeout: config.http_body_timeout,
        response_budget: Arc::new(tokio::sync::Semaphore::new(
            config.response_buffer_bytes as usize,
        )),
    };
    let ctx = Arc::new(NodeContext {
        dht: dht.clone(),
        transport: transport.clone(),
        objects: objects.clone(),
        mail: mail.clone(),
        gateway,
        metrics,
        http,
        admin: admin.as_ref().map(|(_, a)| *a),
        started: std::time::Instant::now(),
        min_peers: config.min_peers,
        misses: gateway::misses::MissGuard::default(),
    });
    let router = gateway::admin::routes()
        .merge(gateway::objects::routes())
        .merge(gateway::mail::public_routes())
        .with_state(ctx.clone());
    let mut http_tasks = vec![tokio::spawn(gateway::serve(
        listener,
        router,
        GatewayLimits {
            concurrent_requests_max: config.http_requests_max,
            write_stall_timeout: config.write_stall_timeout,
            ..GatewayLimits::default()
        },
        shutdown_rx.clone(),
        SHUTDOWN_GRACE,
    ))];
    if let Some((listener, _)) = admin {
        let router = gateway::operator::routes()
            .merge(gateway::admin::routes())
            .merge(gateway::mail::admin_routes())
            .with_state(ctx.clone());
        http_tasks.push(tokio::spawn(gateway::serve(
            listener,
            router,
            GatewayLimits {
                concurrent_requests_max: ADMIN_REQUESTS_MAX,
                write_stall_timeout: config.write_stall_timeout,
                ..GatewayLimits::default()
            },
            shutdown_rx.clone(),
            SHUTDOWN_GRACE,
        )));
    }
    let mut tasks = vec![
        tokio::spawn(keep_joined(
            transport,
            dht.clone(),
            config.bootstrap.clone(),
            saved,
            shutdown_rx.clone(),
        )),
        tokio::spawn(objects.clone().run_repair(plans)),
        announcing,
        quotas.keep_saved(QUOTA_SAVE_EVERY),
        keep_index_saved(store.clone()),
        mail.keep_maintained(),
        mail.keep_repaired(),
        drain_on_start(mail.clone(), ctx.dht.clone()),
    ];
    if let Some(scrub) = crate::scrub::keep_scrubbed(store.clone(), config.scrub) {
        tasks.push(scrub);
    }
    if let Some(dropped) = store.watch_dropped() {
        tasks.push(tokio::spawn(objects.forget_dropped(dropped)));
    }
    if let Some(handle) = ctx.metrics.clone() {
        tasks.push(crate::telemetry::keep_up(handle));
    }
    if let Some(book) = &contacts {
        tasks.push(contacts::keep_saved(book.clone(), dht, shutdown_rx));
    }
    let admin = ctx
        .admin
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(node_id = %identity.node_id(), quic = %ctx.transport.local_addr(), %http, %admin, amnesia = config.amnesia, "node started");
    Ok(RunningNode {
        ctx,
        contacts,
        shutdown,
        tasks,
        http_tasks,
    })
}

impl RunningNode {
    /// Stops the node: HTTP and DHT first, then the transport closes its connections.
    pub async fn shutdown(self) {
        // The table as it is now, before the driver stops and the peers say goodbye.
        if let Some(book) = &self.contacts {
            let _ =
                tokio::time::timeout(CONTACTS_SAVE_GRACE, contacts::save_now(book, &self.ctx.dht))
                    .await;
        }
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            for t in self.http_tasks {
                let _ = t.await;
            }
        })
        .await;
        for t in self.tasks {
            t.abort();
        }
        let quotas = self.ctx.objects.quotas.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || quotas.save()).await {
            tracing::warn!(error = %e, "saving tenant accounts failed");
        }
        let store = self.ctx.objects.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.save_index()).await {
            tracing::warn!(error = %e, "saving the store index failed");
        }
        self.ctx.transport.close().await;
    }
}

fn rand_seed() -> [u8; 8] {
    let mut seed = [0u8; 8];
    // The node is not simulated: its DHT randomness may come from the OS. A failure leaves
    // a fixed seed, which costs nothing but refresh-key variety.
    let _ = getrandom::fill(&mut seed);
    seed
}

/// Writes the store's index snapshot when it changed, once a minute, so the next start
/// loads it instead of walking every file.
fn keep_index_saved(store: Store) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(INDEX_SAVE_EVERY).await;
            let s = store.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.save_index()).await {
                tracing::warn!(error = %e, "saving the store index failed");
            }
        }
    })
}

/// Once the node has joined (within a minute), pulls its own mail from its holders.
fn drain_on_start(mail: Mail, dht: DhtHandle) -> JoinHandle<()> {
    tokio::spawn(async move {
        if dht.wait_ready(Duration::from_secs(60)).await {
            mail.drain_own().await;
        }
    })
}

/// How long resolving a bootstrap peer's name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses of a bootstrap peer now, within [`RESOLVE_TIMEOUT`].
async fn resolve(peer: &BootstrapPeer) -> std::io::Result<Vec<SocketAddr>> {
    tokio::time::timeout(RESOLVE_TIMEOUT, peer.resolve())
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "name resolution timed out",
            ))
        })
}

/// Dials the bootstrap peers (names resolved again at each attempt) and the contacts saved
/// by the last run (with the ids they must prove) whenever the table is empty, when
/// `overlay::Rejoin` says so (its backoff, the saved contacts' rounds, when to stop): a node
/// without bootstrap peers (the seed of its mesh) rejoins through its saved contacts.
async fn keep_joined(
    transport: Transport,
    dht: DhtHandle,
    peers: Vec<BootstrapPeer>,
    saved: Vec<NetPeer>,
    mut shutdown: watch::Receiver<bool>,
) {
    if peers.is_empty() {
        // The first node of a mesh: nothing to dial; it becomes ready when a peer joins, or
        // when it reaches one of its saved contacts.
        let _ = dht.bootstrap(Vec::new()).await;
    }
    let clock = dht::Clock::new();
    let mut rejoin = overlay::Rejoin::new(clock.now(), !peers.is_empty(), !saved.is_empty());
    loop {
        let table_empty = dht.status().routing_table_size == 0;
        match rejoin.poll(clock.now(), table_empty) {
            RejoinStep::Done => return,
            RejoinStep::Wait(t) => {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = tokio::time::sleep_until(clock.deadline(t)) => {}
                }
            }
            RejoinStep::Dial { saved: with_saved } => {
                // The configured peers and the saved contacts at once: dead saved contacts
                // delay a join through a live bootstrap peer by `contacts::DIAL_WAIT` at most.
                let saved_now: &[NetPeer] = if with_saved { &saved } else { &[] };
                let (mut reached, from_saved) = tokio::join!(
                    dial_bootstrap(&transport, &peers),
                    contacts::dial(&transport, saved_now)
                );
                for p in from_saved {
                    if !reached.iter().any(|r: &NetPeer| r.id == p.id) {
                        reached.push(p);
                    }
                }
                let joined = !reached.is_empty()
                    && dht.bootstrap(reached).await.is_ok()
                    && dht.wait_ready(Duration::from_secs(10)).await;
                rejoin.handle_attempt(clock.now(), joined);
            }
        }
    }
}

/// Dials each configured bootstrap peer (every address of a name, until one answers);
/// returns those reached.
async fn dial_bootstrap(transport: &Transport, peers: &[BootstrapPeer]) -> Vec<NetPeer> {
    let mut reached = Vec::new();
    for p in peers {
        let addrs = match resolve(p).await {
            Ok(addrs) => addrs,
            Err(e) => {
                metrics::counter!("bootstrap_resolve_failures_total").increment(1);
                tracing::warn!(peer = %p, error = %e, "bootstrap peer does not resolve");
                continue;
            }
        };
        for addr in addrs {
            match transport.connect(addr, p.id).await {
                Ok(info) => {
                    reached.push(NetPeer::new(info.id, addr));
                    break;
                }
                Err(e) => {
                    tracing::warn!(peer = %p, %addr, error = %e, "bootstrap peer unreachable");
                }
            }
        }
    }
    reached
}
