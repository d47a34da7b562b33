//! `macronode`: the node daemon and its operator commands.
//!
//! - `macronode run`: one node (flags > `MACRONODE_*` env > `--config` TOML file).
//! - `macronode devnet --nodes N`: N node processes on loopback, joined, until Ctrl-C.
//! - `macronode id --data-dir D`: the node id kept in a data directory.
//! - `macronode token mint|revoke|rotate`: capability tokens and their root.
//! - `macronode status`, `macronode repair [ID|--all]`, `macronode mail send|recv|ack`: a
//!   running node, through its admin plane.

use std::path::PathBuf;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use node::config::{ConfigLayer, NodeConfig};

#[derive(Parser)]
#[command(
    name = "macronode",
    version,
    about = "A QUIC-native peer-to-peer overlay node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Run(Box<RunArgs>),
    /// Check this host before running a node with the same options as `run`: data
    /// directory, free space, ports, open-file limit, clock, bootstrap peers. Exit status 0
    /// only when every check passes.
    Doctor(Box<RunArgs>),
    /// Run a local mesh of N node processes on loopback until Ctrl-C.
    Devnet(node::devnet::DevnetArgs),
    /// Capability tokens for gateway writes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Upload a file through a gateway; prints its id.
    Put(node::cli::PutArgs),
    /// Download an object through a gateway, verified against its id.
    Get(node::cli::GetArgs),
    /// Print a running node's status for a person (through its admin plane).
    Status(node::admin_cli::StatusArgs),
    /// Repair an object (or --all) now: the RF closest nodes prove or receive a copy;
    /// prints the holders against the RF closest.
    Repair(node::admin_cli::RepairArgs),
    /// Mail to node ids, through a running node's admin plane.
    #[command(subcommand)]
    Mail(MailCommand),
    /// Print the node id kept in a data directory (creating the key if there is none).
    Id {
        /// The data directory.
        #[arg(long, env = "MACRONODE_DATA_DIR", default_value = "macronode-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a token from the capability root in force; prints the token on stdout and
    /// its id on stderr.
    Mint(node::cli::MintArgs),
    /// Revoke a token by id: the node refuses it from its next request on (and after
    /// restarts).
    Revoke(node::cli::RevokeArgs),
    /// Replace the capability root; the old root's tokens are accepted for --grace seconds.
    Rotate(node::cli::RotateArgs),
}

#[derive(Subcommand)]
enum MailCommand {
    /// Send a message (a file, or - for stdin) to NODE_ID's mailbox; prints its id once W
    /// holders have it.
    Send(node::admin_cli::MailSendArgs),
    /// Receive this node's own mail: one JSON line per message.
    Recv(node::admin_cli::MailRecvArgs),
    /// Acknowledge (delete at every holder) messages of this node's mailbox.
    Ack(node::admin_cli::MailAckArgs),
}

#[derive(Args)]
struct RunArgs {
    /// TOML config file; flags and environment override it.
    #[arg(long, env = "MACRONODE_CONFIG")]
    config: Option<PathBuf>,
    /// Where the key and the store live.
    #[arg(long, env = "MACRONODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// QUIC (UDP) listen address.
    #[arg(long, env = "MACRONODE_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// HTTP gateway address: objects, health, metrics, status (the public edge).
    #[arg(long, env = "MACRONODE_HTTP")]
    http: Option<std::net::SocketAddr>,
    /// Admin plane address (lookup, routing, repair, token revocation), or `off`; default
    /// 127.0.0.1:0 (a free loopback port, written to DATA_DIR/admin.addr).
    #[arg(long, env = "MACRONODE_ADMIN")]
    admin: Option<String>,
    /// Bootstrap peer, `ID@HOST:PORT` or `HOST:PORT`, HOST an IP address or a DNS name
    /// (resolved again at each join attempt); repeatable (env: comma-separated).
    #[arg(long, env = "MACRONODE_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<String>,
    /// Log JSON lines instead of text (`--json-logs=false` turns a file's `true` off; every
    /// switch below takes `=true`/`=false` the same way, and 1/0, yes/no, on/off).
    #[arg(long, env = "MACRONODE_JSON_LOGS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    json_logs: Option<bool>,
    /// DHT RPC timeout in milliseconds.
    #[arg(long, env = "MACRONODE_RPC_TIMEOUT_MS")]
    rpc_timeout_ms: Option<u64>,
    /// Liveness probe interval in milliseconds (0 disables).
    #[arg(long, env = "MACRONODE_LIVENESS_MS")]
    liveness_ms: Option<u64>,
    /// Keep objects in memory only; write nothing to disk but the node key.
    #[arg(long, env = "MACRONODE_AMNESIA", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    amnesia: Option<bool>,
    /// Accept gateway writes without a capability token (an explicit choice).
    #[arg(long, env = "MACRONODE_OPEN_WRITES", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    open_writes: Option<bool>,
    /// Resume TLS sessions with peers met before and send DHT reads as 0-RTT data: a first
    /// request to a known peer costs one round trip, not two.
    #[arg(long, env = "MACRONODE_ZERO_RTT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    zero_rtt: Option<bool>,
    /// Write objects of 4 MiB and more past the page cache (`O_DIRECT`; default on): turn
    /// it off where the disk is slow to take synchronous writes (a network volume).
    #[arg(long, env = "MACRONODE_DIRECT_IO", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    direct_io: Option<bool>,
    /// File holding the 64-hex-digit key capability tokens are checked with (shared by a
    /// fleet of gateways); default: derived from the node key.
    #[arg(long, env = "MACRONODE_CAP_KEY")]
    cap_key: Option<PathBuf>,
    /// Store quota in bytes.
    #[arg(long, env = "MACRONODE_STORE_QUOTA_BYTES")]
    store_quota_bytes: Option<u64>,
    /// Largest object accepted, in bytes.
    #[arg(long, env = "MACRONODE_OBJECT_MAX_BYTES")]
    object_max_bytes: Option<u64>,
    /// Copies per object.
    #[arg(long, env = "MACRONODE_RF")]
    rf: Option<usize>,
    /// Durable copies before a PUT is acknowledged.
    #[arg(long, env = "MACRONODE_W")]
    w: Option<usize>,
    /// HTTP requests served at once; more are answered 503 with Retry-After.
    #[arg(long, env = "MACRONODE_HTTP_REQUESTS_MAX")]
    http_requests_max: Option<usize>,
    /// Gateway writes run at once, each until its last copy is placed; more get 503 (429 past
    /// one token's or tenant's share, a quarter of them).
    #[arg(long, env = "MACRONODE_WRITES_MAX")]
    writes_max: Option<usize>,
    /// Longest client silence in the middle of a request body before 408, in milliseconds.
    #[arg(long, env = "MACRONODE_HTTP_BODY_TIMEOUT_MS")]
    http_body_timeout_ms: Option<u64>,
    /// Repair bandwidth for pushing copies, bytes per second.
    #[arg(long, env = "MACRONODE_REPAIR_BYTES_PER_SECOND")]
    repair_bytes_per_second: Option<u64>,
    /// Bytes of HTTP response bodies the gateway may hold waiting to be sent.
    #[arg(long, env = "MACRONODE_RESPONSE_BUFFER_BYTES")]
    response_buffer_bytes: Option<u64>,
    /// Disconnect a client that reads nothing of a response for this long, ms.
    #[arg(long, env = "MACRONODE_WRITE_STALL_MS")]
    write_stall_ms: Option<u64>,
    /// Peers the routing table must hold before /readyz says ready (default 1 with
    /// bootstrap peers, 0 without).
    #[arg(long, env = "MACRONODE_MIN_PEERS")]
    min_peers: Option<usize>,
    /// Messages one sender may hold in one mailbox at this node.
    #[arg(long, env = "MACRONODE_MAILBOX_SENDER_COUNT_MAX")]
    mailbox_sender_count_max: Option<usize>,
    /// Messages one mailbox may hold at this node.
    #[arg(long, env = "MACRONODE_MAILBOX_COUNT_MAX")]
    mailbox_count_max: Option<usize>,
    /// Payload bytes one sender may hold in one mailbox at this node (default 16 MiB).
    #[arg(long, env = "MACRONODE_MAILBOX_SENDER_BYTES_MAX")]
    mailbox_sender_bytes_max: Option<u64>,
    /// Payload bytes one mailbox may hold at this node (default 64 MiB).
    #[arg(long, env = "MACRONODE_MAILBOX_BYTES_MAX")]
    mailbox_bytes_max: Option<u64>,
    /// How often held mail is pushed to the mailbox's other holders, ms (default 15,000).
    #[arg(long, env = "MACRONODE_MAILBOX_REPAIR_MS")]
    mailbox_repair_ms: Option<u64>,
    /// Bytes per second the store's scrubber reads back and verifies at most (default
    /// 8 MiB/s; 0 turns it off).
    #[arg(long, env = "MACRONODE_SCRUB_BYTES_PER_SEC")]
    scrub_bytes_per_sec: Option<u64>,
    /// Seconds from one scrub pass's start to the next's (default 86,400).
    #[arg(long, env = "MACRONODE_SCRUB_EVERY_SECS")]
    scrub_every_secs: Option<u64>,
}

impl RunArgs {
    /// The configuration these options give: the file, then the environment and flags.
    fn config(&self) -> anyhow::Result<NodeConfig> {
        let file = match &self.config {
            Some(path) => ConfigLayer::from_file(path)?,
            None => ConfigLayer::default(),
        };
        Ok(NodeConfig::resolve(file.overlay(self.layer()))?)
    }

    fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            http: self.http,
            admin: self.admin.clone(),
            bootstrap: (!self.bootstrap.is_empty()).then(|| self.bootstrap.clone()),
            json_logs: self.json_logs,
            rpc_timeout_ms: self.rpc_timeout_ms,
            liveness_ms: self.liveness_ms,
            amnesia: self.amnesia,
            open_writes: self.open_writes,
            zero_rtt: self.zero_rtt,
            direct_io: self.direct_io,
            cap_key: self.cap_key.clone(),
            store_quota_bytes: self.store_quota_bytes,
            object_max_bytes: self.object_max_bytes,
            rf: self.rf,
            w: self.w,
            http_requests_max: self.http_requests_max,
            writes_max: self.writes_max,
            http_body_timeout_ms: self.http_body_timeout_ms,
            repair_bytes_per_second: self.repair_bytes_per_second,
            response_buffer_bytes: self.response_buffer_bytes,
            write_stall_ms: self.write_stall_ms,
            min_peers: self.min_peers,
            mailbox_sender_count_max: self.mailbox_sender_count_max,
            mailbox_count_max: self.mailbox_count_max,
            mailbox_repair_ms: self.mailbox_repair_ms,
            mailbox_sender_bytes_max: self.mailbox_sender_bytes_max,
            mailbox_bytes_max: self.mailbox_bytes_max,
            scrub_bytes_per_sec: self.scrub_bytes_per_sec,
            scrub_every_secs: self.scrub_every_secs,
            ..ConfigLayer::default()
        }
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    match cli.command {
        Command::Run(args) => {
            let config = args.config()?;
            init_logs(config.json_logs);
            rt.block_on(run(config))
        }
        Command::Doctor(args) => {
            let config = args.config()?;
            let findings = rt.block_on(node::doctor::check(&config));
            for f in &findings {
                println!("{f}");
            }
            let failed = findings.iter().filter(|f| !f.ok).count();
            if failed > 0 {
                eprintln!("{failed} of {} checks failed", findings.len());
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Devnet(args) => {
            init_logs(false);
            rt.block_on(node::devnet::run(args))
        }
        Command::Token(TokenCommand::Mint(args)) => {
            let minted = node::cli::mint(&args)?;
            println!("{}", minted.token);
            eprintln!("token id: {}", minted.id);
            Ok(())
        }
        Command::Token(TokenCommand::Revoke(args)) => node::cli::revoke(&args),
        Command::Token(TokenCommand::Rotate(args)) => node::cli::rotate(&args),
        Command::Put(args) => node::cli::put(&args),
        Command::Status(args) => node::admin_cli::status(&args),
        Command::Repair(args) => node::admin_cli::repair(&args),
        Command::Get(args) => node::cli::get(&args),
        Command::Mail(MailCommand::Send(args)) => node::admin_cli::mail_send(&args),
        Command::Mail(MailCommand::Recv(args)) => node::admin_cli::mail_recv(&args),
        Command::Mail(MailCommand::Ack(args)) => node::admin_cli::mail_ack(&args),
        Command::Id { data_dir } => {
            let id = node::Identity::load_or_create(&data_dir)?;
            println!("{}", id.node_id());
            Ok(())
        }
    }
}

async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let metrics = node::telemetry::install().context("installing the metrics recorder")?;
    let node = node::app::start(config, Some(metrics)).await?;
    node::signals::wait_for_shutdown().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
