//! Operator commands that talk to a gateway or a data directory: `token mint`, `token
//! revoke`, `token rotate`, `put`, `get`.
//!
//! `token revoke` and `token rotate` write the capability files in the data directory
//! (`keyring`) and then ask the running node, through the admin plane address it recorded
//! in `admin.addr`, to re-read them, so they hold from its next request; a node that is not
//! running reads them when it starts.
//!
//! `put` streams a file to `PUT /o` and prints the id; `get` streams `GET /o/{id}` to a file
//! or stdout and checks the bytes against the id itself before keeping them, so a client
//! does not have to trust the gateway. Large transfers show a progress bar on a terminal.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::caps::{Caveat, Token};
use crate::keyring::{KeyFiles, Keys};
use crate::store::{id_string, parse_id};

/// Options of `macronode token mint`.
#[derive(Debug, Clone, Args)]
pub struct MintArgs {
    /// The node's data directory (its key is the token root, unless --cap-key is given).
    #[arg(long, env = "MACRONODE_DATA_DIR", default_value = "macronode-data")]
    pub data_dir: PathBuf,
    /// A shared capability key file (64 hex digits) instead of the node key.
    #[arg(long, env = "MACRONODE_CAP_KEY")]
    pub cap_key: Option<PathBuf>,
    /// Seconds until the token expires (at least 1: a token that never expires could
    /// never be taken back).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub expires_in: u64,
    /// Methods the token allows, comma-separated.
    #[arg(long, default_value = "PUT", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Largest body the token allows, in bytes.
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// The tenant whose write quota the token's writes count against.
    #[arg(long, requires_all = ["quota_bytes", "rate"])]
    pub tenant: Option<String>,
    /// The tenant's quota: bytes it may write in all.
    #[arg(long, requires = "tenant")]
    pub quota_bytes: Option<u64>,
    /// The tenant's quota: bytes per second it may write on average.
    #[arg(long, requires = "tenant")]
    pub rate: Option<u64>,
    /// Mail sent with the token (its tenant's, if it names one) holds at most this many
    /// messages in any one mailbox at a time; over it, 429 with Retry-After until the
    /// owner acks some.
    #[arg(long)]
    pub mail_messages_max: Option<u32>,
    /// Mail sent with the token holds at most this many payload bytes in any one mailbox.
    #[arg(long)]
    pub mail_bytes_max: Option<u64>,
}

/// A token just minted.
#[derive(Debug, Clone)]
pub struct Minted {
    /// Its id (32 hex digits), for `token revoke`.
    pub id: String,
    /// Its text, for `Authorization: Bearer`.
    pub token: String,
}

fn key_files(data_dir: &std::path::Path, cap_key: Option<&std::path::Path>) -> KeyFiles {
    KeyFiles {
        data_dir: data_dir.to_path_buf(),
        cap_key: cap_key.map(std::path::Path::to_path_buf),
    }
}

/// Makes a token from the capability root in force (see `keyring`) with the requested
/// caveats.
pub fn mint(args: &MintArgs) -> anyhow::Result<Minted> {
    let identity = crate::identity::Identity::load_or_create(&args.data_dir)?;
    let root = Keys::load(
        &key_files(&args.data_dir, args.cap_key.as_deref()),
        &identity,
    )
    .context("reading the capability key")?
    .root;
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce)
        .map_err(|e| anyhow::anyhow!("no entropy for a token nonce: {e}"))?;
    let mut caveats = vec![Caveat::Methods(args.methods.clone())];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    caveats.push(Caveat::ExpiresAt(
        now.saturating_add(args.expires_in.max(1)),
    ));
    if let Some(max) = args.max_bytes {
        caveats.push(Caveat::MaxBytes(max));
    }
    if let (Some(name), Some(bytes_max), Some(bytes_per_second)) =
        (&args.tenant, args.quota_bytes, args.rate)
    {
        if name.is_empty() || name.len() > crate::caps::TENANT_NAME_MAX {
            anyhow::bail!(
                "--tenant must be 1 to {} bytes",
                crate::caps::TENANT_NAME_MAX
            );
        }
        // Only the root key's holder can make a token a tenant's: its nonce says so.
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&nonce[..8]);
        nonce = crate::caps::tenant_nonce(&root, salt, name);
        caveats.push(Caveat::Tenant(crate::caps::TenantQuota {
            name: name.clone(),
            bytes_max,
            bytes_per_second,
        }));
    }
    if args.mail_messages_max.is_some() || args.mail_bytes_max.is_some() {
        caveats.push(Caveat::Mailbox(crate::caps::MailQuota {
            messages_max: args.mail_messages_max.unwrap_or(u32::MAX),
            bytes_max: args.mail_bytes_max.unwrap_or(u64::MAX),
        }));
    }
    let token = Token::mint(&root, nonce, caveats);
    Ok(Minted {
        id: hex::encode(token.id()),
        token: token.encode(),
    })
}

/// Options of `macronode token revoke`.
#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// The token's id (32 hex digits, printed by `token mint`).
    pub id: String,
    /// The node's data directory (the revocation list lives there).
    #[arg(long, env = "MACRONODE_DATA_DIR", default_value = "macronode-data")]
    pub data_dir: PathBuf,
    /// The running node's admin plane (default: the address in DATA_DIR/admin.addr).
    #[arg(long, env = "MACRONODE_ADMIN_URL")]
    pub admin: Option<String>,
}

/// Options of `macronode token rotate`.
#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    /// The node's data directory.
    #[arg(long, env = "MACRONODE_DATA_DIR", default_value = "macronode-data")]
    pub data_dir: PathBuf,
    /// The shared capability key file to rotate (default: DATA_DIR/cap.key).
    #[arg(long, env = "MACRONODE_CAP_KEY")]
    pub cap_key: Option<PathBuf>,
    /// Seconds the old root's tokens stay accepted (default one day, the default token
    /// lifetime).
    #[arg(long, default_value_t = 86_400)]
    pub grace: u64,
    /// The running node's admin plane (default: the address in DATA_DIR/admin.addr).
    #[arg(long, env = "MACRONODE_ADMIN_URL")]
    pub admin: Option<String>,
}

/// Adds a token id to the revocation list and has the running node re-read it.
pub fn revoke(args: &RevokeArgs) -> anyhow::Result<()> {
    let id = crate::keyring::parse_token_id(&args.id)
        .with_context(|| format!("{:?} is not a token id (32 hex digits)", args.id))?;
    crate::keyring::revoke(&key_files(&args.data_dir, None), id)?;
    println!("revoked {}", hex::encode(id));
    println!("{}", reload_node(&args.data_dir, args.admin.as_deref())?);
    Ok(())
}

/// Makes a new capability root; the old one's tokens are accepted for `--grace` seconds.
pub fn rotate(args: &RotateArgs) -> anyhow::Result<()> {
    let identity = crate::identity::Identity::load_or_create(&args.data_dir)?;
    let mut new = [0u8; 32];
    getrandom::fill(&mut new).map_err(|e| anyhow::anyhow!("no entropy for a new root: {e}"))?;
    let until = unix_now().saturating_add(args.grace);
    let files = key_files(&args.data_dir, args.cap_key.as_deref());
    let written = crate::keyring::rotate(&files, &identity, new, until)?;
    println!(
        "new capability root in {}; tokens of the old one are accepted until {until} (unix)",
        written.display()
    );
    println!("{}", reload_node(&args.data_dir, args.admin.as_deref())?);
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The admin plane's base URL: given, or recorded by the running node in its data dir.
pub fn admin_url(data_dir: &std::path::Path, given: Option<&str>) -> Option<String> {
    if let Some(u) = given {
        return Some(u.trim_end_matches('/').to_string());
    }
    let recorded = std::fs::read_to_string(data_dir.join(crate::app::ADMIN_ADDR_FILE)).ok()?;
    Some(format!("http://{}", recorded.trim()))
}

/// Asks the running node to re-read its capability files; says what happened.
fn reload_node(data_dir: &std::path::Path, admin: Option<&str>) -> anyhow::Result<String> {
    let Some(base) = admin_url(data_dir, admin) else {
        return Ok(format!(
            "no running node recorded in {}: it applies this when it starts",
            data_dir.join(crate::app::ADMIN_ADDR_FILE).display()
        ));
    };
    let url = format!("{base}/v1/tokens/reload");
    match admin_agent(ADMIN_QUICK_WAIT).post(&url).send_empty() {
        Err(e) => Ok(format!(
            "the node at {base} did not answer ({e}): it applies this when it starts"
        )),
        Ok(resp) if resp.status().as_u16() == 200 => Ok(format!("the node at {base} applied it")),
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            bail!("the node at {base} could not apply it ({status}): {body}")
        }
    }
}

/// Options of `macronode put`.
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// The file to upload.
    pub file: PathBuf,
    /// Gateway URL.
    #[arg(
        long,
        env = "MACRONODE_GATEWAY",
        default_value = "http://127.0.0.1:8080"
    )]
    pub gateway: String,
    /// Capability token (`macronode token mint`).
    #[arg(long, env = "MACRONODE_TOKEN")]
    pub token: Option<String>,
}

/// Options of `macronode get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The object id, `b3:<64 hex>`.
    pub id: String,
    /// Where to write the bytes (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Gateway URL.
    #[arg(
        long,
        env = "MACRONODE_GATEWAY",
        default_value = "http://127.0.0.1:8080"
    )]
    pub gateway: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// An agent for the admin plane: its answer is bounded by `wait` (a reload or a status
/// is quick; a repair waits for its transfers).
pub(crate) fn admin_agent(wait: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(wait))
        .build()
        .into()
}

/// How long a reload or a status may take to answer.
pub(crate) const ADMIN_QUICK_WAIT: Duration = Duration::from_secs(30);

fn progress(len: u64) -> ProgressBar {
    // Small transfers finish before a bar would help; a pipe gets no bar at all.
    if len < (8 << 20) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        pb.set_style(style);
    }
    pb
}

/// Uploads a file; prints the id the gateway answered (and checks it against our own hash).
pub fn put(args: &PutArgs) -> anyhow::Result<()> {
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let len = file.metadata()?.len();
    let pb = progress(len);
    let mut reader = HashingReader {
        inner: pb.wrap_read(file),
        hasher: blake3::Hasher::new(),
    };
    let url = format!("{}/o", args.gateway.trim_end_matches('/'));
    // 100-continue: the gateway refuses (401, 403, 413) before we send a byte of the body,
    // so a refusal is reported as itself, not as a broken pipe halfway through the upload.
    let mut req = agent()
        .put(&url)
        .header("Content-Length", len.to_string())
        .header("Expect", "100-continue");
    if let Some(t) = &args.token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req
        .send(ureq::SendBody::from_reader(&mut reader))
        .with_context(|| format!("PUT {url}"))?;
    pb.finish_and_clear();
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if status != 201 {
        bail!("gateway answered {status}: {body}");
    }
    let ours = id_string(reader.hasher.finalize().as_bytes());
    let answer: serde_json::Value =
        serde_json::from_str(&body).context("gateway answer is not JSON")?;
    if answer["id"] != ours.as_str() {
        bail!(
            "gateway stored the upload as {} but the file is {ours}",
            answer["id"]
        );
    }
    println!("{ours}");
    eprintln!("{} bytes, {} replicas", answer["size"], answer["replicas"]);
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Downloads an object and keeps it only if it hashes to its id.
pub fn get(args: &GetArgs) -> anyhow::Result<()> {
    let hash = parse_id(&args.id)
        .with_context(|| format!("{:?} is not an object id (b3:<64 hex>)", args.id))?;
    let url = format!(
        "{}/o/{}",
        args.gateway.trim_end_matches('/'),
        id_string(&hash)
    );
    let mut resp = agent()
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        bail!("gateway answered {status}: {body}");
    }
    let len = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let pb = progress(len);
    let mut reader = pb.wrap_read(resp.body_mut().with_config().limit(u64::MAX).reader());
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Into a temporary file beside the target (or memory for stdout), renamed once verified.
    let (mut sink, tmp): (Box<dyn Write>, Option<PathBuf>) = match &args.output {
        Some(out) => {
            let tmp = out.with_extension("macronode-partial");
            (
                Box::new(io::BufWriter::new(
                    File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
                )),
                Some(tmp),
            )
        }
        None => (Box::new(Vec::new()), None),
    };
    let mut kept: Vec<u8> = Vec::new();
    loop {
        let n = reader.read(&mut buf).context("reading the object")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if tmp.is_some() {
            sink.write_all(&buf[..n])?;
        } else {
            kept.extend_from_slice(&buf[..n]);
        }
    }
    sink.flush()?;
    drop(sink);
    pb.finish_and_clear();
    if *hasher.finalize().as_bytes() != hash {
        if let Some(t) = &tmp {
            let _ = std::fs::remove_file(t);
        }
        bail!(
            "the bytes received do not hash to {}: discarded",
            id_string(&hash)
        );
    }
    match (&args.output, tmp) {
        (Some(out), Some(t)) => {
            std::fs::rename(&t, out).with_context(|| format!("writing {}", out.display()))?
        }
        _ => io::stdout().write_all(&kept)?,
    }
    Ok(())
}
