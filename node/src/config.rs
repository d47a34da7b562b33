//! The node's configuration: a TOML file, then `MACRONODE_*` environment variables, then
//! command-line flags, each layer overriding the one before.
//!
//! [`NodeConfig`] is the merged result with every default filled in; [`ConfigLayer`] is one
//! partial layer (all fields optional) as the file or the command line gives it. Bad input
//! is a typed error that names the field or the file, never a panic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wire::NodeId;

use crate::scrub::ScrubConfig;

/// The longest scrub period taken: a year (a timer past it would overflow the clock).
const SCRUB_EVERY_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// A bootstrap peer: an address, with the id we expect there if the operator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapPeer {
    /// The id the peer must prove; `None` learns it from the handshake.
    pub id: Option<NodeId>,
    /// Where to dial: an address, or a DNS name resolved at each attempt.
    pub target: BootstrapTarget,
}

/// Where a bootstrap peer is: a socket address, or a host name and port that a fleet's DNS
/// resolves (every address it gives is tried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapTarget {
    /// An IP address and port.
    Addr(SocketAddr),
    /// A DNS name and port.
    Name {
        /// The host name.
        host: String,
        /// The UDP port.
        port: u16,
    },
}

impl BootstrapPeer {
    /// The addresses to dial now: the address itself, or what the name resolves to.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        match &self.target {
            BootstrapTarget::Addr(a) => Ok(vec![*a]),
            BootstrapTarget::Name { host, port } => {
                let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                    .await?
                    .collect();
                if found.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{host} has no address"),
                    ));
                }
                Ok(found)
            }
        }
    }
}

impl std::str::FromStr for BootstrapPeer {
    type Err = ConfigError;
    /// `ID@HOST:PORT` or `HOST:PORT`; HOST is an IP address (`[v6]` in brackets) or a DNS
    /// name.
    fn from_str(s: &str) -> Result<BootstrapPeer, ConfigError> {
        let bad = |why: &str| ConfigError::Invalid {
            field: "bootstrap",
            why: format!("{s:?}: {why}"),
        };
        let (id, addr) = match s.split_once('@') {
            Some((id, addr)) => (
                Some(id.parse::<NodeId>().map_err(|e| bad(&e.to_string()))?),
                addr,
            ),
            None => (None, s),
        };
        if let Ok(a) = addr.parse::<SocketAddr>() {
            return Ok(BootstrapPeer {
                id,
                target: BootstrapTarget::Addr(a),
            });
        }
        let shape = "expected ID@HOST:PORT or HOST:PORT (HOST an IP address or a DNS name)";
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad(shape))?;
        let port: u16 = port.parse().map_err(|_| bad(shape))?;
        let is_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-')
            })
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !is_name || port == 0 {
            return Err(bad(shape));
        }
        Ok(BootstrapPeer {
            id,
            target: BootstrapTarget::Name {
                host: host.to_ascii_lowercase(),
                port,
            },
        })
    }
}

impl std::fmt::Display for BootstrapPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(id) = self.id {
            write!(f, "{id}@")?;
        }
        match &self.target {
            BootstrapTarget::Addr(a) => write!(f, "{a}"),
            BootstrapTarget::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (it names the key and line).
        message: String,
    },
    /// A value is out of its domain.
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// One layer of configuration; unset fields leave the layer below in force.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Where the key, the store and the state live.
    pub data_dir: Option<PathBuf>,
    /// QUIC (UDP) listen address.
    pub listen: Option<SocketAddr>,
    /// HTTP gateway (public edge) listen address.
    pub http: Option<SocketAddr>,
    /// Admin plane listen address, or `off`.
    pub admin: Option<String>,
    /// Bootstrap peers, `ID@HOST:PORT` or `HOST:PORT`.
    pub bootstrap: Option<Vec<String>>,
    /// Logs as JSON lines instead of text.
    pub json_logs: Option<bool>,
    /// DHT bucket size.
    pub k: Option<usize>,
    /// DHT lookup parallelism.
    pub alpha: Option<usize>,
    /// DHT RPC timeout, milliseconds.
    pub rpc_timeout_ms: Option<u64>,
    /// Liveness probe interval, milliseconds (0 disables).
    pub liveness_ms: Option<u64>,
    /// Keep everything in memory; write nothing to disk but the node key.
    pub amnesia: Option<bool>,
    /// Accept gateway writes without a capability token.
    pub open_writes: Option<bool>,
    /// TLS session resumption and 0-RTT DHT reads between nodes.
    pub zero_rtt: Option<bool>,
    /// Write large objects past the page cache (`O_DIRECT`).
    pub direct_io: Option<bool>,
    /// File with the 64-hex-digit key capability tokens are checked with.
    pub cap_key: Option<PathBuf>,
    /// Store quota in bytes.
    pub store_quota_bytes: Option<u64>,
    /// Largest object accepted, bytes.
    pub object_max_bytes: Option<u64>,
    /// Copies per object.
    pub rf: Option<usize>,
    /// Durable copies before a PUT is acknowledged.
    pub w: Option<usize>,
    /// HTTP requests served at once; more are answered 503 with `Retry-After`.
    pub http_requests_max: Option<usize>,
    /// Gateway writes run at once, each until its last copy's placement reported; more
    /// are answered 503 `writes_busy` (429 past a token's share, a quarter of them).
    pub writes_max: Option<usize>,
    /// Longest silence of a client in the middle of a request body before 408, milliseconds.
    pub http_body_timeout_ms: Option<u64>,
    /// Repair bandwidth this node may use to push copies, bytes per second.
    pub repair_bytes_per_second: Option<u64>,
    /// Bytes of HTTP response bodies the gateway may hold waiting to be sent.
    pub response_buffer_bytes: Option<u64>,
    /// A client that reads nothing of a response for this long is disconnected, ms.
    pub write_stall_ms: Option<u64>,
    /// Peers the routing table must hold before `/readyz` says ready.
    pub min_peers: Option<usize>,
    /// Messages one sender may hold in one mailbox at this node (mailbox quota).
    pub mailbox_sender_count_max: Option<usize>,
    /// Messages one mailbox may hold at this node (mailbox quota).
    pub mailbox_count_max: Option<usize>,
    /// Payload bytes one sender may hold in one mailbox at this node (mailbox quota).
    pub mailbox_sender_bytes_max: Option<u64>,
    /// Payload bytes one mailbox may hold at this node (mailbox quota).
    pub mailbox_bytes_max: Option<u64>,
    /// How often held mail is pushed to the mailbox's other holders, ms.
    pub mailbox_repair_ms: Option<u64>,
    /// Bytes per second the store's scrubber reads and verifies at most (0: off).
    pub scrub_bytes_per_sec: Option<u64>,
    /// Seconds from one scrub pass's start to the next's.
    pub scrub_every_secs: Option<u64>,
}

impl ConfigLayer {
    /// The layer in a TOML file.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// `self` with every field `over` sets replaced by `over`'s.
    pub fn overlay(self, over: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            data_dir: over.data_dir.or(self.data_dir),
            listen: over.listen.or(self.listen),
            http: over.http.or(self.http),
            admin: over.admin.or(self.admin),
            bootstrap: over.bootstrap.or(self.bootstrap),
            json_logs: over.json_logs.or(self.json_logs),
            k: over.k.or(self.k),
            alpha: over.alpha.or(self.alpha),
            rpc_timeout_ms: over.rpc_timeout_ms.or(self.rpc_timeout_ms),
            liveness_ms: over.liveness_ms.or(self.liveness_ms),
            amnesia: over.amnesia.or(self.amnesia),
            open_writes: over.open_writes.or(self.open_writes),
            zero_rtt: over.zero_rtt.or(self.zero_rtt),
            direct_io: over.direct_io.or(self.direct_io),
            cap_key: over.cap_key.or(self.cap_key),
            store_quota_bytes: over.store_quota_bytes.or(self.store_quota_bytes),
            object_max_bytes: over.object_max_bytes.or(self.object_max_bytes),
            rf: over.rf.or(self.rf),
            w: over.w.or(self.w),
            http_requests_max: over.http_requests_max.or(self.http_requests_max),
            writes_max: over.writes_max.or(self.writes_max),
            http_body_timeout_ms: over.http_body_timeout_ms.or(self.http_body_timeout_ms),
            repair_bytes_per_second: over
                .repair_bytes_per_second
                .or(self.repair_bytes_per_second),
            response_buffer_bytes: over.response_buffer_bytes.or(self.response_buffer_bytes),
            write_stall_ms: over.write_stall_ms.or(self.write_stall_ms),
            min_peers: over.min_peers.or(self.min_peers),
            mailbox_sender_count_max: over
                .mailbox_sender_count_max
                .or(self.mailbox_sender_count_max),
            mailbox_count_max: over.mailbox_count_max.or(self.mailbox_count_max),
            mailbox_repair_ms: over.mailbox_repair_ms.or(self.mailbox_repair_ms),
            mailbox_sender_bytes_max: over
                .mailbox_sender_bytes_max
                .or(self.mailbox_sender_bytes_max),
            mailbox_bytes_max: over.mailbox_bytes_max.or(self.mailbox_bytes_max),
            scrub_bytes_per_sec: over.scrub_bytes_per_sec.or(self.scrub_bytes_per_sec),
            scrub_every_secs: over.scrub_every_secs.or(self.scrub_every_secs),
        }
    }
}

/// The node's configuration with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Where the key, the store and the state live (default `./macronode-data`).
    pub data_dir: PathBuf,
    /// QUIC listen address (default `127.0.0.1:4433`).
    pub listen: SocketAddr,
    /// HTTP gateway address, the public edge (default `127.0.0.1:8080`).
    pub http: SocketAddr,
    /// Admin plane address (`None`: off). Default `127.0.0.1:0`: loopback, a port the
    /// kernel picks, so any number of nodes share a host; the bound address is logged and
    /// written to `data_dir/admin.addr`, where the operator commands find it.
    pub admin: Option<SocketAddr>,
    /// Bootstrap peers (default none: start a new mesh).
    pub bootstrap: Vec<BootstrapPeer>,
    /// JSON logs (default off).
    pub json_logs: bool,
    /// DHT parameters.
    pub dht: overlay::Config,
    /// Memory-only store (default off).
    pub amnesia: bool,
    /// Writes without a capability (default off: writes need a token).
    pub open_writes: bool,
    /// Session resumption and 0-RTT DHT reads between nodes (default off;
    /// `TransportConfig::zero_rtt`).
    pub zero_rtt: bool,
    /// Objects of 4 MiB and more are written past the page cache (default on;
    /// `Store::set_direct_io`).
    pub direct_io: bool,
    /// Key file for capability tokens (default: derived from the node key).
    pub cap_key: Option<PathBuf>,
    /// Store quota (default 10 GiB).
    pub store_quota_bytes: u64,
    /// Object limits and replication (defaults: 1 GiB, RF 3, W 2).
    pub objects: crate::objects::ObjectLimits,
    /// HTTP requests served at once (default 1,024); more get 503 with `Retry-After`.
    pub http_requests_max: usize,
    /// Longest client silence in the middle of a request body before 408 (default 30 s).
    pub http_body_timeout: Duration,
    /// The replication planner and the replica admission rule (RF as `objects.rf`; repair
    /// paced at 16 MiB/s by default).
    pub replication: overlay::ReplicationConfig,
    /// Bytes of HTTP response bodies held waiting to be sent, at most (default 256 MiB).
    pub response_buffer_bytes: u64,
    /// A client that reads nothing of a response for this long is disconnected (30 s).
    pub write_stall_timeout: Duration,
    /// Peers the routing table must hold before the node is ready (default 1 when
    /// bootstrap peers are configured, 0 for the first node of a new mesh, which is ready
    /// once it listens and its store is open).
    pub min_peers: usize,
    /// What one sender and one mailbox may hold at this node (the mailbox store's
    /// defaults unless set).
    pub mailbox_quotas: mailbox::Quotas,
    /// How often held mail is pushed to the mailbox's other holders (default 15 s).
    pub mailbox_repair_every: Duration,
    /// The store's background re-verification (default 8 MiB/s, a pass a day; rate 0
    /// turns it off).
    pub scrub: ScrubConfig,
}

impl NodeConfig {
    /// Fills in defaults and checks every value.
    pub fn resolve(layer: ConfigLayer) -> Result<NodeConfig, ConfigError> {
        let mut dht = overlay::Config::default();
        if let Some(k) = layer.k {
            dht.k = k;
            dht.replacement_cache_size = k;
            // Saturating: a k far out of range is refused by validate() below, not by an
            // overflow panic here (found by the config_toml fuzz target's harness).
            dht.lookup_rpcs_max = k.saturating_mul(8);
            dht.lookup_candidates_max = k.saturating_mul(8);
        }
        if let Some(a) = layer.alpha {
            dht.alpha = a;
        }
        if let Some(ms) = layer.rpc_timeout_ms {
            dht.rpc_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = layer.liveness_ms {
            dht.liveness_interval = (ms > 0).then(|| Duration::from_millis(ms));
        }
        dht.validate().map_err(|why| ConfigError::Invalid {
            field: "dht",
            why: why.into(),
        })?;
        let mut objects = crate::objects::ObjectLimits::default();
        if let Some(max) = layer.object_max_bytes {
            objects.object_max = max;
        }
        if let Some(n) = layer.writes_max {
            if !(1..=1 << 16).contains(&n) {
                return Err(ConfigError::Invalid {
                    field: "writes_max",
                    why: format!("{n} is outside 1 ..= 65536"),
                });
            }
            objects.writes_max = n;
        }
        objects.rf = layer.rf.unwrap_or(objects.rf);
        objects.w = layer.w.unwrap_or(objects.w);
        if objects.rf == 0 || objects.w == 0 || objects.w > objects.rf {
            let why = format!(
                "need 1 <= w <= rf, got rf = {}, w = {}",
                objects.rf, objects.w
            );
            return Err(ConfigError::Invalid { field: "rf/w", why });
        }
        let http_requests_max = layer
            .http_requests_max
            .unwrap_or(crate::gateway::GatewayLimits::default().concurrent_requests_max);
        if http_requests_max == 0 {
            let why = "at least one request must be served at a time".to_string();
            return Err(ConfigError::Invalid {
                field: "http_requests_max",
                why,
            });
        }
        let http_body_timeout = Duration::from_millis(layer.http_body_timeout_ms.unwrap_or(30_000));
        if http_body_timeout.is_zero() {
            let why = "must be positive".to_string();
            return Err(ConfigError::Invalid {
                field: "http_body_timeout_ms",
                why,
            });
        }
        let mut replication = overlay::ReplicationConfig {
            rf: objects.rf,
            ..overlay::ReplicationConfig::default()
        };
        if let Some(rate) = layer.repair_bytes_per_second {
            if rate == 0 {
                return Err(ConfigError::Invalid {
                    field: "repair_bytes_per_second",
                    why: "must be positive: repair that cannot run loses copies".into(),
                });
            }
            replication.bytes_per_second = rate;
        }
        let bootstrap = layer
            .bootstrap
            .unwrap_or_default()
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<BootstrapPeer>, _>>()?;
        let mut mailbox_quotas = mailbox::Quotas::default();
        if let Some(n) = layer.mailbox_sender_count_max {
            mailbox_quotas.sender_count_max = n;
        }
        if let Some(n) = layer.mailbox_count_max {
            mailbox_quotas.mailbox_count_max = n;
        }
        if let Some(n) = layer.mailbox_sender_bytes_max {
            mailbox_quotas.sender_bytes_max = n;
        }
        if let Some(n) = layer.mailbox_bytes_max {
            mailbox_quotas.mailbox_bytes_max = n;
        }
        if mailbox_quotas.sender_count_max == 0
            || mailbox_quotas.mailbox_count_max == 0
            || mailbox_quotas.sender_bytes_max == 0
            || mailbox_quotas.mailbox_bytes_max == 0
        {
            return Err(ConfigError::Invalid {
                field: "mailbox quotas",
                why: "must be positive: a mailbox that holds nothing cannot work".into(),
            });
        }
        let mailbox_repair_every = Duration::from_millis(layer.mailbox_repair_ms.unwrap_or(15_000));
        if mailbox_repair_every < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                field: "mailbox_repair_ms",
                why: "must be at least 100: repair rounds back to back would starve the node"
                    .into(),
            });
        }
        let defaults = ScrubConfig::default();
        let scrub = ScrubConfig {
            rate: layer.scrub_bytes_per_sec.unwrap_or(defaults.rate),
            every: layer
                .scrub_every_secs
                .map_or(defaults.every, Duration::from_secs),
        };
        if scrub.every.is_zero() || scrub.every > SCRUB_EVERY_MAX {
            return Err(ConfigError::Invalid {
                field: "scrub_every_secs",
                why: format!(
                    "must be 1 to {} (a year): passes back to back would read the store for \
                     ever, and a longer period is no scrub (turn it off with \
                     scrub_bytes_per_sec = 0)",
                    SCRUB_EVERY_MAX.as_secs()
                ),
            });
        }
        Ok(NodeConfig {
            mailbox_quotas,
            mailbox_repair_every,
            scrub,
            data_dir: layer
                .data_dir
                .unwrap_or_else(|| PathBuf::from("macronode-data")),
            listen: layer
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 4433))),
            http: layer
                .http
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            admin: parse_admin(layer.admin.as_deref())?,
            json_logs: layer.json_logs.unwrap_or(false),
            dht,
            amnesia: layer.amnesia.unwrap_or(false),
            open_writes: layer.open_writes.unwrap_or(false),
            zero_rtt: layer.zero_rtt.unwrap_or(false),
            direct_io: layer.direct_io.unwrap_or(true),
            cap_key: layer.cap_key,
            store_quota_bytes: layer.store_quota_bytes.unwrap_or(10 << 30),
            objects,
            http_requests_max,
            http_body_timeout,
            replication,
            response_buffer_bytes: match layer.response_buffer_bytes {
                Some(b) if !(1 << 20..=1 << 32).contains(&b) => {
                    return Err(ConfigError::Invalid {
                        field: "response_buffer_bytes",
                        why: format!("{b} is outside 1 MiB ..= 4 GiB"),
                    });
                }
                Some(b) => b,
                None => 256 << 20,
            },
            write_stall_timeout: match layer.write_stall_ms {
                Some(0) => {
                    return Err(ConfigError::Invalid {
                        field: "write_stall_ms",
                        why: "must be positive: 0 would cut every response".into(),
                    });
                }
                Some(ms) => Duration::from_millis(ms),
                None => Duration::from_secs(30),
            },
            min_peers: layer
                .min_peers
                .unwrap_or(if bootstrap.is_empty() { 0 } else { 1 }),
            bootstrap,
        })
    }
}

/// The default admin plane address: loopback, any free port (see [`NodeConfig::admin`]).
pub const ADMIN_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// `--admin`: an address, or `off` to serve no admin plane.
fn parse_admin(value: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    match value.map(str::trim) {
        None => Ok(Some(ADMIN_DEFAULT)),
        Some(v) if v.eq_ignore_ascii_case("off") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ConfigError::Invalid {
            field: "admin",
            why: format!("{v:?}: expected IP:PORT or off"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_specs_parse_with_and_without_id() {
        let id = NodeId([0xab; 32]);
        let with: BootstrapPeer = format!("{id}@127.0.0.1:4433")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(with.id, Some(id));
        let without: BootstrapPeer = "[::1]:9".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(without.id, None);
        assert!("nohost".parse::<BootstrapPeer>().is_err());
        assert!("zz@127.0.0.1:1".parse::<BootstrapPeer>().is_err());
        let named: BootstrapPeer = "Boot-1.Example.org:4433"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            named.target,
            BootstrapTarget::Name {
                host: "boot-1.example.org".into(),
                port: 4433
            }
        );
        assert_eq!(named.to_string(), "boot-1.example.org:4433");
        for bad in [
            "-x.org:1",
            "a..b:1",
            "a b:1",
            "host:0",
            "host:",
            ":1",
            "host:99999",
        ] {
            assert!(bad.parse::<BootstrapPeer>().is_err(), "{bad}");
        }
    }

    #[test]
    fn later_layers_win_and_defaults_fill_the_rest() {
        let file = ConfigLayer {
            listen: Some("127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}"))),
            k: Some(8),
            ..Default::default()
        };
        let flags = ConfigLayer {
            listen: Some("127.0.0.1:2".parse().unwrap_or_else(|e| panic!("{e}"))),
            ..Default::default()
        };
        let c = NodeConfig::resolve(file.overlay(flags)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.dht.k, 8);
        assert_eq!(c.http.port(), 8080);
        assert_eq!(c.admin, Some(ADMIN_DEFAULT));
        assert!(
            c.direct_io,
            "large objects skip the page cache unless told not to"
        );
        let off: ConfigLayer =
            toml::from_str("direct_io = false").unwrap_or_else(|e| panic!("{e}"));
        let c = NodeConfig::resolve(off).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.direct_io);
    }

    #[test]
    fn admin_is_an_address_or_off() {
        let with = |v: &str| {
            NodeConfig::resolve(ConfigLayer {
                admin: Some(v.into()),
                ..Default::default()
            })
        };
        assert_eq!(
            with("127.0.0.1:9100").map(|c| c.admin).ok().flatten(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        assert!(with("OFF").is_ok_and(|c| c.admin.is_none()));
        assert!(matches!(
            with("nowhere"),
            Err(ConfigError::Invalid { field: "admin", .. })
        ));
    }

    #[test]
    fn bad_values_and_unknown_keys_are_named() {
        let err = NodeConfig::resolve(ConfigLayer {
            k: Some(0),
            ..Default::default()
        });
        assert!(matches!(
            err,
            Err(ConfigError::Invalid { field: "dht", .. })
        ));
        // A k whose derived limits (8k) overflow is refused like any other bad k.
        let huge = toml::from_str::<ConfigLayer>("k = 4611686018427387904");
        let err = NodeConfig::resolve(huge.unwrap_or_else(|e| panic!("{e}")));
        assert!(matches!(
            err,
            Err(ConfigError::Invalid { field: "dht", .. })
        ));
        let err =
            toml::from_str::<ConfigLayer>("listn = \"127.0.0.1:1\"").map_err(|e| e.to_string());
        assert!(err.is_err_and(|e| e.contains("listn")));
        // No write could run (a node that answers every PUT 503), or more than a
        // semaphore holds.
        for n in [0, 1 << 20] {
            let err = NodeConfig::resolve(ConfigLayer {
                writes_max: Some(n),
                ..Default::default()
            });
            assert!(matches!(
                err,
                Err(ConfigError::Invalid {
                    field: "writes_max",
                    ..
                })
            ));
        }
        for every in [0, u64::MAX] {
            let err = NodeConfig::resolve(ConfigLayer {
                scrub_every_secs: Some(every),
                ..Default::default()
            });
            assert!(matches!(
                err,
                Err(ConfigError::Invalid {
                    field: "scrub_every_secs",
                    ..
                })
            ));
        }
        let off: ConfigLayer = toml::from_str("scrub_bytes_per_sec = 0\nscrub_every_secs = 3600")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = NodeConfig::resolve(off).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.scrub,
            ScrubConfig {
                rate: 0,
                every: Duration::from_secs(3600)
            }
        );
        assert_eq!(
            NodeConfig::resolve(ConfigLayer::default())
                .unwrap_or_else(|e| panic!("{e}"))
                .scrub,
            ScrubConfig::default(),
            "on by default"
        );
        let err = NodeConfig::resolve(ConfigLayer {
            mailbox_repair_ms: Some(10),
            ..Default::default()
        });
        assert!(matches!(
            err,
            Err(ConfigError::Invalid {
                field: "mailbox_repair_ms",
                ..
            })
        ));
    }
}
