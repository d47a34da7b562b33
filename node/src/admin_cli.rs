//! Operator commands that ask a running node's admin plane: `macronode status` (its
//! `/v1/status` for a person), `macronode repair` (repair an object, or all, now, and
//! show its holders against the RF closest) and `macronode mail send|recv|ack` (the node's
//! mailbox).
//!
//! The node is found as the token commands find it: `--admin URL`, or the address it
//! recorded in `DATA_DIR/admin.addr`.

use std::path::PathBuf;

use std::io::Read;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use std::time::Duration;

use crate::cli::{ADMIN_QUICK_WAIT, admin_agent, admin_url};

/// How long `repair` waits for the node's answer (one object's transfers, or all).
const REPAIR_WAIT: Duration = Duration::from_secs(3600);

/// Options of `macronode status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The node's data directory (where it records its admin plane address).
    #[arg(long, env = "MACRONODE_DATA_DIR", default_value = "macronode-data")]
    pub data_dir: PathBuf,
    /// The node's admin plane, e.g. http://127.0.0.1:9080 (default: DATA_DIR/admin.addr).
    #[arg(long, env = "MACRONODE_ADMIN_URL")]
    pub admin: Option<String>,
}

/// Options of `macronode repair`.
#[derive(Debug, Clone, Args)]
pub struct RepairArgs {
    /// The object to repair, `b3:<64 hex>`.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Repair every object this node holds.
    #[arg(long)]
    pub all: bool,
    /// The node's data directory (where it records its admin plane address).
    #[arg(long, env = "MACRONODE_DATA_DIR", default_value = "macronode-data")]
    pub data_dir: PathBuf,
    /// The node's admin plane (default: DATA_DIR/admin.addr).
    #[arg(long, env = "MACRONODE_ADMIN_URL")]
    pub admin: Option<String>,
}

fn base(data_dir: &std::path::Path, admin: Option<&str>) -> anyhow::Result<String> {
    admin_url(data_dir, admin).with_context(|| {
        format!(
            "no admin plane recorded in {} (is the node running, with --admin on?); give --admin URL",
            data_dir.join(crate::app::ADMIN_ADDR_FILE).display()
        )
    })
}

fn call(req: ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> anyhow::Result<Value> {
    json_answer(req.call())
}

fn call_post(req: ureq::RequestBuilder<ureq::typestate::WithBody>) -> anyhow::Result<Value> {
    json_answer(req.send_empty())
}

/// The admin plane's JSON answer, or what went wrong (the node's own words on a non-2xx).
fn json_answer(
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<Value> {
    let mut resp = resp.context("asking the node's admin plane")?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if !(200..300).contains(&status) {
        bail!("the node answered {status}: {body}");
    }
    serde_json::from_str(&body).context("the node's answer is not JSON")
}

/// Prints the node's status for a person.
pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let base = base(&args.data_dir, args.admin.as_deref())?;
    let s = call(admin_agent(ADMIN_QUICK_WAIT).get(format!("{base}/v1/status")))?;
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    println!("node      {}", s["node_id"].as_str().unwrap_or("?"));
    println!(
        "version   {}   up {} s   {}",
        s["version"].as_str().unwrap_or("?"),
        n(&s["uptime_secs"]),
        if s["ready"] == true {
            "ready"
        } else {
            "NOT READY"
        }
    );
    println!(
        "listen    quic {}   http {}",
        s["listen"].as_str().unwrap_or("?"),
        s["http"].as_str().unwrap_or("?")
    );
    println!(
        "peers     {} connected, {} in the routing table",
        n(&s["peers"]),
        n(&s["routing_table_size"])
    );
    println!(
        "store     {} objects, {} of {} bytes",
        n(&s["objects"]),
        n(&s["bytes_stored"]),
        n(&s["store_quota_bytes"])
    );
    println!(
        "copies    {:.2} observed, {} target",
        s["rf_observed"].as_f64().unwrap_or(0.0),
        n(&s["rf_target"])
    );
    println!(
        "repair    {} transfers, {} bytes",
        n(&s["repair"]["transfers"]),
        n(&s["repair"]["bytes"])
    );
    let f = &s["integrity_failures"];
    println!(
        "integrity store {}  peer {}  push {}  proof {}",
        n(&f["store"]),
        n(&f["peer"]),
        n(&f["push"]),
        n(&f["proof"])
    );
    Ok(())
}

fn print_report(r: &Value) {
    println!(
        "{}: {} of {} copies{}",
        r["id"].as_str().unwrap_or("?"),
        r["copies"].as_u64().unwrap_or(0),
        r["rf"].as_u64().unwrap_or(0),
        if r["local_counts"] == true {
            " (this node holds one)"
        } else {
            ""
        }
    );
    for p in r["closest"].as_array().into_iter().flatten() {
        let what = if p["pushed"] == true {
            "holds (copied now)".to_string()
        } else if p["holds"] == true {
            "holds".to_string()
        } else {
            format!("MISSING: {}", p["error"].as_str().unwrap_or("?"))
        };
        println!("  {}  {what}", p["id"].as_str().unwrap_or("?"));
    }
}

/// Repairs one object or all now and prints their holders; fails if any stays short.
pub fn repair(args: &RepairArgs) -> anyhow::Result<()> {
    let base = base(&args.data_dir, args.admin.as_deref())?;
    let reports = match &args.id {
        Some(id) => vec![call_post(
            admin_agent(REPAIR_WAIT).post(format!("{base}/v1/repair/{id}")),
        )?],
        None => call_post(admin_agent(REPAIR_WAIT).post(format!("{base}/v1/repair")))?["objects"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    let mut short = 0;
    for r in &reports {
        print_report(r);
        if r["copies"].as_u64() < r["rf"].as_u64() {
            short += 1;
        }
    }
    if short > 0 {
        bail!("{short} object(s) still short of their copies");
    }
    Ok(())
}

/// How long `mail send` and `mail ack` wait for the node (a send waits for W holders).
const MAIL_WAIT: Duration = Duration::from_secs(60);

/// Where a running node's admin plane is, for the `mail` commands.
#[derive(Debug, Clone, Args)]
pub struct AdminAt {
    /// The node's data directory (where it records its admin plane address).
    #[arg(long, env = "MACRONODE_DATA_DIR", default_value = "macronode-data")]
    pub data_dir: PathBuf,
    /// The node's admin plane (default: DATA_DIR/admin.addr).
    #[arg(long, env = "MACRONODE_ADMIN_URL")]
    pub admin: Option<String>,
}

/// Options of `macronode mail send`.
#[derive(Debug, Clone, Args)]
pub struct MailSendArgs {
    /// The mailbox: the receiving node's id (64 hex digits).
    pub node_id: String,
    /// The idempotency key: a retried send with the same key is stored once (default: a
    /// random one, so every call is a new message).
    #[arg(long)]
    pub key: Option<String>,
    /// Time to live in seconds (default: the holders' default, 7 days).
    #[arg(long)]
    pub ttl: Option<u64>,
    /// Mark the message as end-to-end encrypted for the owner (APP_E2E): the caller
    /// encrypted the file; holders keep the mark and the owner's receive reports it.
    #[arg(long)]
    pub e2e: bool,
    /// The message: a file, or `-` for stdin (at most 64 KiB).
    pub file: PathBuf,
    /// The sending node.
    #[command(flatten)]
    pub at: AdminAt,
}

/// Options of `macronode mail recv`.
#[derive(Debug, Clone, Args)]
pub struct MailRecvArgs {
    /// Seconds to wait for a first message (at most 60).
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    /// The receiving node (whose own mailbox is read).
    #[command(flatten)]
    pub at: AdminAt,
}

/// Options of `macronode mail ack`.
#[derive(Debug, Clone, Args)]
pub struct MailAckArgs {
    /// The message ids (64 hex digits each, printed by `mail recv`).
    #[arg(required = true)]
    pub msg_ids: Vec<String>,
    /// The receiving node.
    #[command(flatten)]
    pub at: AdminAt,
}

/// Sends a message through the node's admin plane; prints its id once W holders have it.
pub fn mail_send(args: &MailSendArgs) -> anyhow::Result<()> {
    let base = base(&args.at.data_dir, args.at.admin.as_deref())?;
    let payload = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::take(std::io::stdin(), wire::mailbox::PAYLOAD_MAX as u64 + 1)
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        buf
    } else {
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    if payload.len() > wire::mailbox::PAYLOAD_MAX {
        bail!("a message is at most {} bytes", wire::mailbox::PAYLOAD_MAX);
    }
    let mut query = Vec::new();
    if let Some(t) = args.ttl {
        query.push(format!("ttl_ms={}", t.saturating_mul(1000)));
    }
    if args.e2e {
        query.push("e2e=true".to_string());
    }
    let mut url = format!("{base}/mb/{}", args.node_id);
    if !query.is_empty() {
        url.push_str(&format!("?{}", query.join("&")));
    }
    let mut req = admin_agent(MAIL_WAIT).post(url);
    if let Some(k) = &args.key {
        req = req.header(crate::gateway::mail::IDEMPOTENCY_HEADER, k);
    }
    let answer = json_answer(req.send(&payload[..]))?;
    println!("{}", answer["id"].as_str().unwrap_or("?"));
    if answer["duplicate"] == true {
        eprintln!("already held: stored once");
    }
    Ok(())
}

/// Receives this node's own mail: one JSON object per message on stdout (`id`, `sender`,
/// `payload` in base64, ...). Messages stay hidden for 30 s; ack them to delete them.
pub fn mail_recv(args: &MailRecvArgs) -> anyhow::Result<()> {
    let base = base(&args.at.data_dir, args.at.admin.as_deref())?;
    let wait = args.wait.min(crate::mail::WAIT_MAX.as_secs());
    let answer = json_answer(
        admin_agent(Duration::from_secs(wait) + ADMIN_QUICK_WAIT)
            .get(format!("{base}/mb?wait={wait}s"))
            .call(),
    )?;
    for m in answer["messages"].as_array().into_iter().flatten() {
        println!("{m}");
    }
    Ok(())
}

/// Acknowledges messages of this node's mailbox at every holder: one `DELETE` for one id
/// (404 when no holder holds it), one `POST /mb/ack` for several.
pub fn mail_ack(args: &MailAckArgs) -> anyhow::Result<()> {
    let base = base(&args.at.data_dir, args.at.admin.as_deref())?;
    let agent = admin_agent(MAIL_WAIT);
    let answer = match args.msg_ids.as_slice() {
        [one] => json_answer(agent.delete(format!("{base}/mb/{one}")).call())?,
        many => {
            let body = serde_json::json!({ "ids": many }).to_string();
            json_answer(
                agent
                    .post(format!("{base}/mb/ack"))
                    .header("Content-Type", "application/json")
                    .send(body.as_bytes()),
            )?
        }
    };
    println!("deleted at {} holder(s)", answer["deleted"]);
    Ok(())
}
