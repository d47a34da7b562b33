//! Objects end to end, as a client and an operator see them: real `macronode` processes on
//! loopback, real `curl` against their gateways, real `b3sum` for the ids, and the node's
//! files on disk as the ground truth of who holds what.
//!
//! - `five_nodes_serve_objects_with_tokens_cli_and_integrity`: one 5-node mesh sharing a
//!   `--cap-key`: capability tokens (401/403 cases); a 10 MiB PUT through one gateway and
//!   GET/HEAD/Range/If-None-Match/400/404 through others; `macronode put`/`get`; corrupted
//!   copies caught (by the reading peer and by the holder itself) with correct bytes served.
//! - `a_killed_holder_is_read_around_repaired_and_comes_back_intact`: SIGKILL a holder, read
//!   from every other node, wait for repair back to RF copies, restart it with its data.
//! - `puts_acknowledged_while_a_node_dies_all_stay_readable`: a PUT load with a node killed
//!   in the middle; every 201 must read back byte for byte through another node.
//! - `an_open_writes_node_takes_puts_without_a_token`.
//! - `a_full_disk_refuses_puts_serves_what_it_held_and_takes_puts_once_freed` (root: a
//!   real full disk, a tmpfs).
//!
//! `curl` and `b3sum` are required (not skipped): `scripts/install-test-deps.sh` installs
//! them. Every test prints its seed; `OBJECTS_SEED=<n>` replays the same bytes. Node 0 of
//! the harness is "node 1" of the issue, node 4 is "node 5".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use testing::{Mesh, NodeProcess, NodeSpec, poll_until};
use wire::NodeId;

use support::*;

/// Copies per object (the node default).
const RF: usize = 3;
/// Durable copies before a 201 (the node default with peers).
const W: u64 = 2;

mod support {
    //! Helpers: tools, seeds and bytes, curl, the CLI, and reading who holds an object.

    use std::fs::{File, OpenOptions};
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Command, ExitStatus, Stdio};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use overlay::Key;
    use serde_json::Value;
    use testing::node::macronode_command;
    use testing::{NodeProcess, poll_until};
    use wire::NodeId;

    /// What to do when a tool is missing.
    pub const INSTALL_HINT: &str =
        "run scripts/install-test-deps.sh (it installs curl and b3sum), then rerun the tests";

    /// Fails the test, with what to do, unless `curl` and `b3sum` run.
    pub fn require_tools() {
        static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
        let checked = CHECKED.get_or_init(|| {
            for tool in ["curl", "b3sum"] {
                match Command::new(tool)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                {
                    Ok(s) if s.success() => {}
                    Ok(s) => return Err(format!("`{tool} --version` exited with {s}")),
                    Err(e) => return Err(format!("`{tool}` cannot be run ({e})")),
                }
            }
            Ok(())
        });
        if let Err(e) = checked {
            panic!("{e}: these tests need real curl and b3sum; {INSTALL_HINT}");
        }
    }

    /// This test's seed: `OBJECTS_SEED` if set, else from the clock; printed either way.
    pub fn seed(test: &str) -> u64 {
        let s = std::env::var("OBJECTS_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{test}: seed {s} (replay with OBJECTS_SEED={s})");
        s
    }

    /// `len` pseudo-random bytes from `seed` (splitmix64).
    pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Writes `bytes` to `dir/name`.
    pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// A shared capability key file: 64 hex digits, mode 0600.
    pub fn cap_key_file(dir: &Path, seed: u64) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("cap.key");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        writeln!(f, "{}", hex::encode(pseudo_random(seed ^ 0xca9, 32))).unwrap();
        path
    }

    /// Where the first difference between two byte strings is, if any.
    pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .or((a.len() != b.len()).then(|| a.len().min(b.len())))
    }

    /// Asserts `got == want`, naming the first differing byte instead of dumping MiBs.
    #[track_caller]
    pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
        if let Some(at) = first_difference(got, want) {
            panic!(
                "{what}: got {} bytes, want {}; first difference at byte {at}",
                got.len(),
                want.len()
            );
        }
    }

    /// The object id `b3sum` prints for a file: `b3:` + its hex.
    pub fn b3sum(path: &Path) -> String {
        let out = Command::new("b3sum")
            .arg("--no-names")
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("running b3sum: {e}; {INSTALL_HINT}"));
        assert!(out.status.success(), "b3sum {}: {out:?}", path.display());
        format!("b3:{}", String::from_utf8_lossy(&out.stdout).trim())
    }

    /// `b3sum` over many files in one run: `b3:<hex>` per file, in order.
    pub fn b3sum_many(paths: &[PathBuf]) -> Vec<String> {
        let out = Command::new("b3sum")
            .args(paths)
            .output()
            .unwrap_or_else(|e| panic!("running b3sum: {e}; {INSTALL_HINT}"));
        assert!(out.status.success(), "b3sum: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let ids: Vec<String> = text
            .lines()
            .map(|l| format!("b3:{}", l.split_whitespace().next().unwrap_or_default()))
            .collect();
        assert_eq!(ids.len(), paths.len(), "b3sum printed {text}");
        ids
    }

    /// The 32-byte hash of `b3:<hex>`.
    pub fn hash_of(id: &str) -> [u8; 32] {
        let mut h = [0u8; 32];
        hex::decode_to_slice(id.strip_prefix("b3:").expect("b3: prefix"), &mut h).unwrap();
        h
    }

    /// A finished curl request.
    #[derive(Debug)]
    pub struct Reply {
        /// HTTP status (of the final response, after any `100 Continue`).
        pub status: u16,
        /// Headers of the final response, names lowercased.
        pub headers: Vec<(String, String)>,
        /// The body.
        pub body: Vec<u8>,
    }

    impl Reply {
        /// The first value of header `name`.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The body as text.
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The body as JSON (fails the test, showing the body, if it is not).
        #[track_caller]
        pub fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap_or_else(|e| {
                panic!(
                    "status {}: body is not JSON ({e}): {:?}",
                    self.status,
                    self.text()
                )
            })
        }

        /// Asserts the body is the gateway's error shape `{"code","message"}` with `code`.
        #[track_caller]
        pub fn assert_error(&self, status: u16, code: &str, what: &str) {
            assert_eq!(self.status, status, "{what}: {}", self.text());
            let v = self.json();
            assert_eq!(v["code"], code, "{what}: {v}");
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: no message in {v}"
            );
        }
    }

    static CALLS: AtomicU64 = AtomicU64::new(0);

    /// Runs `curl -sS` with `args`, the headers and body captured in files under `scratch`.
    /// `Err` when curl itself fails (refused, reset, timed out), with what it said.
    pub fn curl(scratch: &Path, args: &[String]) -> Result<Reply, String> {
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        let head = scratch.join(format!("curl-{n}.head"));
        let body = scratch.join(format!("curl-{n}.body"));
        let out = Command::new("curl")
            .args(["-sS", "--connect-timeout", "5", "--max-time", "60"])
            .arg("-D")
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running curl: {e}; {INSTALL_HINT}"));
        let raw_head = std::fs::read_to_string(&head).unwrap_or_default();
        let bytes = std::fs::read(&body).unwrap_or_default();
        let _ = std::fs::remove_file(&head);
        let _ = std::fs::remove_file(&body);
        if !out.status.success() {
            return Err(format!(
                "curl {args:?} exited with {}: {} (code {})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim(),
            ));
        }
        let status: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("curl printed no status ({e}): {out:?}"))?;
        // `-D` holds every response of the exchange (`100 Continue` first): keep the last.
        let last = raw_head
            .split("\r\n\r\n")
            .filter(|b| b.starts_with("HTTP/"))
            .last()
            .unwrap_or_default();
        let headers = last
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Reply {
            status,
            headers,
            body: bytes,
        })
    }

    /// `curl` that must get an answer.
    #[track_caller]
    pub fn curl_ok(scratch: &Path, args: &[String]) -> Reply {
        curl(scratch, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The gateway URL of a node.
    pub fn base(node: &NodeProcess) -> String {
        format!("http://{}", node.http())
    }

    /// `PUT /o` with the file as body (`curl -T`: streamed, with Content-Length).
    pub fn put(
        scratch: &Path,
        node: &NodeProcess,
        file: &Path,
        token: Option<&str>,
    ) -> Result<Reply, String> {
        let mut args = vec!["-T".to_string(), file.display().to_string()];
        if let Some(t) = token {
            args.push("-H".into());
            args.push(format!("Authorization: Bearer {t}"));
        }
        args.push(format!("{}/o", base(node)));
        curl(scratch, &args)
    }

    /// `GET path` with extra headers.
    #[track_caller]
    pub fn get(scratch: &Path, node: &NodeProcess, path: &str, headers: &[&str]) -> Reply {
        get_at(scratch, node.http(), path, headers)
    }

    /// `GET path` on a gateway address, with extra headers.
    #[track_caller]
    pub fn get_at(scratch: &Path, addr: SocketAddr, path: &str, headers: &[&str]) -> Reply {
        let mut args = Vec::new();
        for h in headers {
            args.push("-H".to_string());
            args.push(h.to_string());
        }
        args.push(format!("http://{addr}{path}"));
        curl(scratch, &args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A raw `HEAD` over TCP: the bytes the server sent after the header block (must be
    /// none) and the header block itself.
    pub fn raw_head(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("HEAD {path}: reading until close: {e}"));
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("HEAD {path}: no end of headers"));
        (
            String::from_utf8_lossy(&raw[..end]).into_owned(),
            raw[end + 4..].to_vec(),
        )
    }

    /// A finished command.
    #[derive(Debug)]
    pub struct Ran {
        /// How it exited.
        pub status: ExitStatus,
        /// Its stdout.
        pub stdout: String,
        /// Its stderr.
        pub stderr: String,
    }

    /// Runs `cmd` to completion within `timeout` (killed and failed past it).
    pub fn run(mut cmd: Command, scratch: &Path, timeout: Duration) -> Ran {
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        let out_path = scratch.join(format!("cmd-{n}.out"));
        let err_path = scratch.join(format!("cmd-{n}.err"));
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} did not finish within {timeout:?}; stderr: {}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ran {
            status,
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }

    /// `macronode token mint --data-dir D [--cap-key F] extra...`: the token it prints.
    pub fn mint(scratch: &Path, data_dir: &Path, cap_key: Option<&Path>, extra: &[&str]) -> String {
        let mut cmd = macronode_command().unwrap();
        cmd.args(["token", "mint", "--data-dir"]).arg(data_dir);
        if let Some(k) = cap_key {
            cmd.arg("--cap-key").arg(k);
        }
        cmd.args(extra);
        let ran = run(cmd, scratch, Duration::from_secs(30));
        assert!(ran.status.success(), "token mint {extra:?}: {ran:?}");
        let token = ran.stdout.trim().to_string();
        assert!(token.starts_with("mn1."), "token mint printed {ran:?}");
        token
    }

    /// Where a node keeps the bytes of an object.
    pub fn object_file(node: &NodeProcess, id: &str) -> PathBuf {
        let hex = id.strip_prefix("b3:").expect("b3: prefix");
        node.data_dir().join("objects").join(&hex[..2]).join(hex)
    }

    /// Waits (at most 10 s) until `node`'s `gauge` reads 0: what it counts has all ended,
    /// and gave back whatever permits it held.
    #[track_caller]
    pub fn wait_gauge_zero(node: &NodeProcess, gauge: &str) {
        poll_until(
            &format!("{gauge} to come back to 0"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || (node.metric(gauge).unwrap() == Some(0.0)).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The nodes among `among` with the object's data file on disk.
    pub fn holders(nodes: &[NodeProcess], among: &[usize], id: &str) -> Vec<usize> {
        among
            .iter()
            .copied()
            .filter(|&i| object_file(&nodes[i], id).is_file())
            .collect()
    }

    /// The `n` nodes among `among` closest to the object by XOR distance of their DHT keys:
    /// where the object must live once replication settles.
    pub fn closest(ids: &[NodeId], among: &[usize], id: &str, n: usize) -> Vec<usize> {
        let key = Key(hash_of(id));
        let mut v = among.to_vec();
        v.sort_by_key(|&i| Key::for_node(&ids[i]).distance(&key));
        v.truncate(n);
        v
    }

    /// Flips one byte in the middle of a file in place (same size, same inode); returns
    /// the offset.
    pub fn flip_middle_byte(path: &Path) -> u64 {
        let len = std::fs::metadata(path).unwrap().len();
        flip_byte(path, len / 2)
    }

    /// Flips the byte at `at` of a file in place; returns `at`.
    pub fn flip_byte(path: &Path, at: u64) -> u64 {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        b[0] ^= 0x55;
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&b).unwrap();
        f.sync_all().unwrap();
        at
    }

    /// `integrity_failures` of `/v1/status`: (store, peer, push).
    pub fn integrity(node: &NodeProcess) -> (u64, u64, u64) {
        let s = node.status().unwrap();
        let f = &s["integrity_failures"];
        let n = |k: &str| {
            f[k].as_u64()
                .unwrap_or_else(|| panic!("{}: no integrity_failures.{k} in {s}", node.name()))
        };
        (n("store"), n("peer"), n("push"))
    }

    /// `repair` of `/v1/status`: (transfers, bytes).
    pub fn repair(node: &NodeProcess) -> (u64, u64) {
        let s = node.status().unwrap();
        let n = |k: &str| {
            s["repair"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: no repair.{k} in {s}", node.name()))
        };
        (n("transfers"), n("bytes"))
    }

    /// `pushes` of `/v1/status`: (stored, refused).
    pub fn pushes(node: &NodeProcess) -> (u64, u64) {
        let s = node.status().unwrap();
        let n = |k: &str| {
            s["pushes"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: no pushes.{k} in {s}", node.name()))
        };
        (n("stored"), n("refused"))
    }

    /// A sample of `/metrics`, 0 if not recorded yet.
    pub fn metric(node: &NodeProcess, sample: &str) -> f64 {
        node.metric(sample).unwrap().unwrap_or(0.0)
    }

    /// The token with one base64url character in the middle of its payload changed.
    pub fn tamper(token: &str) -> String {
        let mut chars: Vec<char> = token.chars().collect();
        let at = 4 + (chars.len() - 4) / 2;
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect()
    }
}

/// A 5-node mesh whose gateways share one capability key, and a scratch directory.
struct Cluster {
    // Fields drop in order: the nodes die before the directory (holding the key) goes.
    mesh: Mesh,
    ids: Vec<NodeId>,
    key: PathBuf,
    seed: u64,
    /// Checks that failed without stopping the test, reported together at its end.
    findings: std::sync::Mutex<Vec<String>>,
    /// Copies per object the nodes run with.
    rf: usize,
    work: tempfile::TempDir,
}

impl Cluster {
    /// Records a failed check and goes on, so the later steps still run and report.
    fn check(&self, ok: bool, what: impl FnOnce() -> String) -> bool {
        if !ok {
            let what = what();
            println!("CHECK FAILED: {what}");
            self.findings.lock().unwrap().push(what);
        }
        ok
    }

    /// Fails the test if any [`check`](Self::check) failed.
    fn finish(&self) {
        let f = self.findings.lock().unwrap();
        assert!(f.is_empty(), "{} checks failed:\n{}", f.len(), f.join("\n"));
    }

    fn scratch(&self) -> &std::path::Path {
        self.work.path()
    }

    fn node(&self, i: usize) -> &NodeProcess {
        &self.mesh.nodes[i]
    }

    /// A token for the shared key, minted with node `i`'s data directory.
    fn token(&self, i: usize, extra: &[&str]) -> String {
        mint(
            self.scratch(),
            &self.node(i).data_dir(),
            Some(&self.key),
            extra,
        )
    }

    /// PUT a file through node `via`: must answer 201 with the `b3sum` id; returns the id.
    fn put_ok(&self, via: usize, file: &std::path::Path, token: &str) -> (String, Reply) {
        let want = b3sum(file);
        let r = put(self.scratch(), self.node(via), file, Some(token)).unwrap();
        assert_eq!(r.status, 201, "PUT via node-{via}: {}", r.text());
        let v = r.json();
        assert_eq!(v["id"], want.as_str(), "PUT via node-{via}: {v}");
        (want, r)
    }

    /// Waits until the RF closest of `live` hold the object on disk; returns every holder.
    fn wait_settled(&self, live: &[usize], id: &str, timeout: Duration) -> Vec<usize> {
        let rf = self.rf;
        let want = closest(&self.ids, live, id, rf);
        let nodes = &self.mesh.nodes;
        let started = Instant::now();
        let got = poll_until(
            &format!("{id} to be on disk at its {rf} closest live nodes {want:?}"),
            timeout,
            Duration::from_millis(50),
            || {
                let h = holders(nodes, live, id);
                want.iter().all(|w| h.contains(w)).then_some(h)
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}; held by {:?} (live {live:?})",
                holders(nodes, live, id)
            )
        });
        println!(
            "{id}: on disk at {got:?} after {:?} (closest {want:?})",
            started.elapsed()
        );
        got
    }
}

fn start_cluster(test: &str, customize: impl Fn(&mut NodeSpec)) -> Cluster {
    start_cluster_of(test, 5, RF, customize)
}

/// `n` nodes with `--rf rf`, sharing a capability key.
fn start_cluster_of(test: &str, n: usize, rf: usize, customize: impl Fn(&mut NodeSpec)) -> Cluster {
    require_tools();
    let seed = seed(test);
    let work = tempfile::Builder::new()
        .prefix(&format!("macronode-objects-{test}-"))
        .tempdir()
        .unwrap();
    let key = cap_key_file(work.path(), seed);
    let started = Instant::now();
    let mut mesh = Mesh::start(n, |_, spec| {
        spec.args.push("--cap-key".into());
        spec.args.push(key.display().to_string());
        spec.args.push("--rf".into());
        spec.args.push(rf.to_string());
        customize(spec);
    })
    .unwrap();
    mesh.wait_ready(Duration::from_secs(30)).unwrap();
    let ids = mesh.ids().unwrap();
    println!("{test}: {n} nodes ready after {:?}", started.elapsed());
    Cluster {
        mesh,
        ids,
        key,
        seed,
        findings: Default::default(),
        rf,
        work,
    }
}

// ---------------------------------------------------------------------------------------
// 1, 4, 5, 6: the gateway, tokens, the CLI and integrity on one mesh.
// ---------------------------------------------------------------------------------------

#[test]
fn five_nodes_serve_objects_with_tokens_cli_and_integrity() {
    let c = start_cluster("http", |_| {});
    println!("== capability tokens");
    tokens_are_checked(&c);
    println!("== a 10 MiB object over HTTP");
    let ten_mib = ten_mib_over_http(&c);
    println!("== the CLI");
    cli_put_and_get(&c, &ten_mib);
    println!("== corrupted copies");
    corrupted_copies_are_caught(&c);
    c.finish();
}

/// 401 for a missing, tampered or foreign token; 403 for a caveat that refuses.
fn tokens_are_checked(c: &Cluster) {
    let s = c.scratch();
    let node = c.node(1);
    let small = write_file(s, "small-2000", &pseudo_random(c.seed ^ 1, 2000));
    let put_with = |token: Option<&str>, file: &std::path::Path| put(s, node, file, token).unwrap();

    // Expiry first: mint now, and the 2 s it must age pass while the other cases run.
    let expiring = c.token(0, &["--expires-in", "1"]);
    let minted = Instant::now();

    put_with(None, &small).assert_error(401, "unauthorized", "PUT without a token");

    // A token of the shared key minted on another node's data directory works here.
    let good = c.token(3, &[]);
    let r = put_with(Some(&good), &small);
    assert_eq!(r.status, 201, "shared-key token: {}", r.text());

    let tampered = tamper(&good);
    assert_ne!(tampered, good);
    put_with(Some(&tampered), &small).assert_error(401, "unauthorized", "tampered token");

    // The node's own key is not the shared key this gateway checks.
    let foreign = mint(s, &node.data_dir(), None, &[]);
    put_with(Some(&foreign), &small).assert_error(
        401,
        "unauthorized",
        "token of the node key on a --cap-key node",
    );

    let capped = c.token(2, &["--max-bytes", "1000"]);
    put_with(Some(&capped), &small).assert_error(403, "forbidden", "2000 bytes, max-bytes 1000");
    let fits = write_file(s, "small-900", &pseudo_random(c.seed ^ 2, 900));
    let r = put_with(Some(&capped), &fits);
    assert_eq!(r.status, 201, "900 bytes, max-bytes 1000: {}", r.text());

    let get_only = c.token(4, &["--methods", "GET"]);
    put_with(Some(&get_only), &small).assert_error(403, "forbidden", "token for GET only");

    let age = Duration::from_secs(2).saturating_sub(minted.elapsed());
    std::thread::sleep(age);
    let r = put_with(Some(&expiring), &small);
    r.assert_error(
        403,
        "forbidden",
        "token expired 1 s after minting, used 2 s after",
    );
    assert!(r.text().contains("expired"), "{}", r.text());
}

/// PUT 10 MiB through node 0, read it through node 4 and others: bytes, headers, ranges,
/// conditional requests, and the error answers.
fn ten_mib_over_http(c: &Cluster) -> PathBuf {
    const LEN: usize = 10 << 20;
    let s = c.scratch();
    let data = pseudo_random(c.seed, LEN);
    let file = write_file(s, "ten-mib", &data);
    let token = c.token(0, &[]);

    let started = Instant::now();
    let (id, r) = c.put_ok(0, &file, &token);
    println!(
        "PUT 10 MiB via node-0: {:?}, {}",
        started.elapsed(),
        r.text()
    );
    let v = r.json();
    assert_eq!(v["size"], LEN as u64, "{v}");
    assert!(v["replicas"].as_u64().is_some_and(|n| n >= W), "{v}");
    assert_eq!(r.header("location"), Some(format!("/o/{id}").as_str()));
    let path = format!("/o/{id}");
    let etag = format!("\"{id}\"");

    let started = Instant::now();
    let r = get(s, c.node(4), &path, &[]);
    println!("GET 10 MiB via node-4: {:?}", started.elapsed());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_same_bytes(&r.body, &data, "GET via node-4");
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    // Ranges through node 4 and through one node of the other kind (holder / non-holder),
    // so both the local and the remote read paths answer them.
    let held = holders(&c.mesh.nodes, &[0, 1, 2, 3, 4], &id);
    let four_holds = held.contains(&4);
    let other = (1..4).find(|i| held.contains(i) != four_holds).unwrap_or(2);
    println!("held by {held:?}; ranges via node-4 and node-{other}");
    for via in [4, other] {
        let node = c.node(via);
        let what = |w: &str| format!("{w} via node-{via}");

        let r = curl_ok(s, &["-I".into(), format!("{}{path}", base(node))]);
        assert_eq!(r.status, 200, "{}", what("HEAD"));
        assert_eq!(r.header("content-length"), Some("10485760"), "{r:?}");
        assert_eq!(r.header("etag"), Some(etag.as_str()), "{r:?}");
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{r:?}"
        );
        assert_eq!(r.header("accept-ranges"), Some("bytes"), "{r:?}");
        let (head, after) = raw_head(node.http(), &path);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(after.is_empty(), "HEAD sent {} body bytes", after.len());

        let r = get(s, node, &path, &["Range: bytes=0-0"]);
        assert_eq!(r.status, 206, "{}", what("bytes=0-0"));
        assert_eq!(r.header("content-range"), Some("bytes 0-0/10485760"));
        assert_eq!(r.body, &data[..1], "{}", what("bytes=0-0"));

        let r = get(s, node, &path, &["Range: bytes=-1"]);
        assert_eq!(r.status, 206, "{}", what("bytes=-1"));
        assert_eq!(
            r.header("content-range"),
            Some("bytes 10485759-10485759/10485760")
        );
        assert_eq!(r.body, &data[LEN - 1..], "{}", what("bytes=-1"));

        let r = get(s, node, &path, &["Range: bytes=5-"]);
        assert_eq!(r.status, 206, "{}", what("bytes=5-"));
        assert_eq!(r.header("content-range"), Some("bytes 5-10485759/10485760"));
        assert_same_bytes(&r.body, &data[5..], &what("bytes=5-"));

        let r = get(s, node, &path, &["Range: bytes=20000000-"]);
        assert_eq!(r.status, 416, "{}: {}", what("bytes=20000000-"), r.text());
        assert_eq!(r.header("content-range"), Some("bytes */10485760"));

        let r = get(s, node, &path, &[&format!("If-None-Match: {etag}")]);
        assert_eq!(r.status, 304, "{}", what("If-None-Match"));
        assert!(r.body.is_empty());
    }

    // The id is checked before anything else; an unknown one is searched for, boundedly.
    for bad in ["nothex", "b3:xyz", "b3:0123", &id[3..]] {
        get(s, c.node(2), &format!("/o/{bad}"), &[]).assert_error(400, "bad_id", bad);
    }
    let unknown = b3sum(&write_file(s, "never-put", &pseudo_random(c.seed ^ 3, 100)));
    let asked = Instant::now();
    get(s, c.node(3), &format!("/o/{unknown}"), &[]).assert_error(404, "not_found", "unknown id");
    println!("404 for an unknown id after {:?}", asked.elapsed());
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    file
}

/// `macronode put` prints the id b3sum gives; `macronode get` through another node writes
/// the same bytes; an unknown id fails loudly.
fn cli_put_and_get(c: &Cluster, big: &std::path::Path) {
    let s = c.scratch();
    let data = pseudo_random(c.seed ^ 4, (700 << 10) + 17);
    let file = write_file(s, "cli-in", &data);
    let want = b3sum(&file);
    let token = c.token(1, &[]);
    let cli = || testing::node::macronode_command().unwrap();

    let mut cmd = cli();
    cmd.arg("put")
        .arg(&file)
        .args(["--gateway", &base(c.node(1)), "--token", &token]);
    let ran = run(cmd, s, Duration::from_secs(60));
    assert!(ran.status.success(), "macronode put: {ran:?}");
    assert_eq!(ran.stdout.trim(), want, "macronode put printed {ran:?}");

    let out = s.join("cli-out");
    let mut cmd = cli();
    cmd.args(["get", &want, "-o"])
        .arg(&out)
        .args(["--gateway", &base(c.node(3))]);
    let ran = run(cmd, s, Duration::from_secs(60));
    assert!(ran.status.success(), "macronode get: {ran:?}");
    assert_same_bytes(&std::fs::read(&out).unwrap(), &data, "macronode get output");

    let unknown = b3sum(&write_file(
        s,
        "cli-never-put",
        &pseudo_random(c.seed ^ 5, 64),
    ));
    let missing_out = s.join("cli-missing-out");
    let mut cmd = cli();
    cmd.args(["get", &unknown, "-o"])
        .arg(&missing_out)
        .args(["--gateway", &base(c.node(2))]);
    let ran = run(cmd, s, Duration::from_secs(60));
    assert!(
        !ran.status.success(),
        "get of an unknown id succeeded: {ran:?}"
    );
    assert!(
        ran.stderr.contains("404"),
        "the error should say what the gateway answered: {ran:?}"
    );
    assert!(
        !missing_out.exists(),
        "a failed get left {}",
        missing_out.display()
    );

    // And a put without a token says why it was refused, also for a file large enough that
    // the gateway answers (401, then closes) before the upload is through.
    let mut cmd = cli();
    cmd.arg("put")
        .arg(big)
        .args(["--gateway", &base(c.node(1))]);
    let ran = run(cmd, s, Duration::from_secs(60));
    assert!(
        !ran.status.success(),
        "put without a token succeeded: {ran:?}"
    );
    let said = ran.stderr.lines().next().unwrap_or_default().to_string();
    c.check(ran.stderr.contains("401"), || {
        format!(
            "`macronode put` of a 10 MiB file without a token should report the gateway's \
             401 (curl does); it said {said:?}"
        )
    });
}

/// Flip a byte in two of the three copies: every read still returns the right bytes; the
/// reading peer catches the bad holder and counts it; a bad holder's own gateway drops its
/// copy, counts it, and serves the bytes from the mesh.
fn corrupted_copies_are_caught(c: &Cluster) {
    let s = c.scratch();
    let all = [0, 1, 2, 3, 4];
    let data = pseudo_random(c.seed ^ 6, (4 << 20) + 4321);
    let file = write_file(s, "corrupt-me", &data);
    // Written through one of its closest nodes: no surplus copy, two nodes without one.
    let via = closest(&c.ids, &all, &b3sum(&file), 1)[0];
    let token = c.token(via, &[]);
    let (id, _) = c.put_ok(via, &file, &token);
    let path = format!("/o/{id}");
    let held = c.wait_settled(&all, &id, Duration::from_secs(20));
    let readers: Vec<usize> = all.iter().copied().filter(|i| !held.contains(i)).collect();
    assert!(!readers.is_empty(), "every node holds {id}: {held:?}");

    // Which holder does a reader fetch from first? The one whose outbound frames jump by
    // at least the object's 17 transfer pieces of 256 KiB. Corrupting that one (and one more, never all)
    // makes the reader meet a bad holder for sure.
    let frames = |i: usize| metric(c.node(i), "oap_frames_total{dir=\"out\"}");
    let before: Vec<f64> = held.iter().map(|&i| frames(i)).collect();
    let r = get(s, c.node(readers[0]), &path, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_same_bytes(&r.body, &data, "read before corruption");
    let jumps: Vec<(usize, f64)> = held
        .iter()
        .zip(&before)
        .map(|(&i, b)| (i, frames(i) - b))
        .collect();
    let served = jumps
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|j| j.0)
        .unwrap();
    // The object is at least 17 pieces of 256 KiB (the node's transfer piece; pieces are cut
    // between 16 KiB groups, so 18 of them); the other holders only answer a TAIL, a proof
    // or DHT requests (a lookup's RPCs count too: a dozen frames is not unusual), so the
    // server stands out by at least half the pieces.
    let pieces = data.len().div_ceil(256 << 10) as f64;
    let top = jumps.iter().find(|j| j.0 == served).map_or(0.0, |j| j.1);
    assert!(
        jumps.iter().all(|&(i, d)| if i == served {
            d >= pieces
        } else {
            d < top - pieces / 2.0
        }),
        "cannot tell which holder node-{} read from: frames out per holder {jumps:?}",
        readers[0]
    );
    println!(
        "node-{} read from node-{served} (frames out per holder: {jumps:?})",
        readers[0]
    );
    let bad: Vec<usize> = std::iter::once(served)
        .chain(held.iter().copied().filter(|&i| i != served).take(1))
        .collect();
    assert!(
        bad.len() < held.len(),
        "never all copies: bad {bad:?} of {held:?}"
    );
    for &b in &bad {
        let at = flip_middle_byte(&object_file(c.node(b), &id));
        println!("flipped byte {at} of node-{b}'s copy");
    }
    let sum =
        |f: fn((u64, u64, u64)) -> u64| all.iter().map(|&i| f(integrity(c.node(i)))).sum::<u64>();
    let (store0, peer0) = (sum(|t| t.0), sum(|t| t.1));

    // A whole read from a bad holder is a long read: the holder serves it raw and the reader
    // finds the bad group, counts a peer failure and asks the holder for that chunk alone,
    // so the holder checks itself and drops its copy. A short read (a Range, a proof) is
    // checked by the holder before it serves: it drops its copy first and answers "missing".
    // Either way the rot is caught; which side counts it depends on which read meets the
    // bad copy first. Holders are tried fastest-HAS-first, so a read may start at the honest
    // copy; with two of three copies bad, a few whole reads are all but sure to meet one.
    let caught = || {
        let peer = integrity(c.node(readers[0])).1;
        let holders: Vec<u64> = bad.iter().map(|&b| integrity(c.node(b)).0).collect();
        (peer, holders)
    };
    let mut seen = caught();
    for _ in 0..20 {
        if seen.0 >= 1 || seen.1.iter().any(|&n| n >= 1) {
            break;
        }
        let r = get(s, c.node(readers[0]), &path, &[]);
        assert_eq!(r.status, 200, "node-{}: {}", readers[0], r.text());
        assert_same_bytes(&r.body, &data, &format!("node-{} whole read", readers[0]));
        seen = caught();
    }
    let (peer_caught, holders_caught) = &seen;
    println!(
        "whole reads at node-{}: peer failures {peer_caught}, bad holders {bad:?} dropped \
         their own copies {holders_caught:?} times",
        readers[0]
    );
    assert!(
        *peer_caught >= 1 || holders_caught.iter().any(|&n| n >= 1),
        "node-{} read 2 of 3 corrupt copies (node-{served} first) and nobody caught the rot",
        readers[0]
    );
    assert_eq!(
        metric(c.node(readers[0]), "integrity_fail_total{source=\"peer\"}"),
        *peer_caught as f64,
        "the metric and /v1/status disagree on node-{}'s peer failures",
        readers[0]
    );

    let mid = data.len() / 2;
    for &r_i in &readers {
        for range in [None, Some((mid - 100, mid + 100))] {
            let hdr = range.map(|(a, b): (usize, usize)| format!("Range: bytes={a}-{b}"));
            let headers: Vec<&str> = hdr.iter().map(String::as_str).collect();
            let r = get(s, c.node(r_i), &path, &headers);
            let (a, b) = range.unwrap_or((0, data.len() - 1));
            assert!(
                r.status == 200 || r.status == 206,
                "node-{r_i} {hdr:?}: {}",
                r.text()
            );
            assert_same_bytes(&r.body, &data[a..=b], &format!("node-{r_i} {hdr:?}"));
        }
    }

    // The bad holders' own gateways: their copies fail verification, are dropped and
    // counted, and the reads are finished from the mesh.
    for &b in &bad {
        let r = get(s, c.node(b), &path, &[]);
        assert_eq!(r.status, 200, "node-{b} (corrupt copy): {}", r.text());
        assert_same_bytes(&r.body, &data, &format!("node-{b} with a corrupt copy"));
        let (store, ..) = integrity(c.node(b));
        assert!(
            store >= 1,
            "node-{b} served from its corrupt copy without noticing"
        );
        assert!(metric(c.node(b), "integrity_fail_total{source=\"store\"}") >= 1.0);
    }
    let (store1, peer1) = (sum(|t| t.0), sum(|t| t.1));
    println!(
        "integrity failures over all nodes: store {store0} -> {store1}, peer {peer0} -> {peer1}"
    );
    assert!(store1 + peer1 > store0 + peer0);
    assert!(
        store1 >= store0 + bad.len() as u64,
        "store {store0} -> {store1}"
    );
}

// ---------------------------------------------------------------------------------------
// 2: a holder killed, read around, repaired, restarted intact.
// ---------------------------------------------------------------------------------------

#[test]
fn a_killed_holder_is_read_around_repaired_and_comes_back_intact() {
    let mut c = start_cluster("kill", |spec| {
        *spec = spec.clone().fast_liveness(Duration::from_millis(500));
    });
    let s = c.scratch().to_path_buf();
    let data = pseudo_random(c.seed, (1 << 20) + 99);
    let file = write_file(&s, "kill-me", &data);
    let all = [0, 1, 2, 3, 4];
    // Written through the closest node, so the RF closest hold it and nobody else; the
    // victim is another of them (not node 0, the bootstrap), and the fourth closest must
    // then get a copy by repair.
    let order = closest(&c.ids, &all, &b3sum(&file), all.len());
    let via = order[0];
    let victim = order[1..RF].iter().copied().find(|&i| i != 0).unwrap();
    let heir = order[RF];
    println!(
        "closest first: {order:?}; PUT via node-{via}, victim node-{victim}, heir node-{heir}"
    );
    let token = c.token(via, &[]);
    let (id, _) = c.put_ok(via, &file, &token);
    let path = format!("/o/{id}");
    let held = c.wait_settled(&all, &id, Duration::from_secs(20));
    assert!(
        !held.contains(&heir),
        "node-{heir}, fourth closest, holds a copy before any node died: {held:?}"
    );
    let before: Vec<(u64, u64)> = all.iter().map(|&i| repair(c.node(i))).collect();
    println!("repair (transfers, bytes) per node before the kill: {before:?}");
    let victim_id = c.ids[victim];
    assert_eq!(c.node(victim).id_on_disk().unwrap(), victim_id);
    c.mesh.nodes[victim].sigkill().unwrap();
    let killed = Instant::now();
    let live: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    println!("killed node-{victim}, a holder ({held:?})");

    for &i in &live {
        let holds = object_file(c.node(i), &id).is_file();
        let asked = Instant::now();
        let r = get(&s, c.node(i), &path, &[]);
        let took = asked.elapsed();
        println!(
            "GET via node-{i} with node-{victim} dead: {} in {took:?}",
            r.status
        );
        if c.check(r.status == 200, || {
            format!(
                "GET via node-{i} (held a copy when asked: {holds}) {:?} after SIGKILL of \
                 holder node-{victim}, live copies now at {:?}: {} after {took:?}: {}",
                asked.duration_since(killed),
                holders(&c.mesh.nodes, &live, &id),
                r.status,
                r.text()
            )
        }) {
            let diff = first_difference(&r.body, &data);
            c.check(diff.is_none(), || {
                format!("GET via node-{i} with node-{victim} dead: bytes differ at {diff:?}")
            });
        }
    }

    let now_held = c.wait_settled(&live, &id, Duration::from_secs(30));
    println!(
        "back to {} copies among live nodes {:?} after the kill",
        now_held.len(),
        killed.elapsed()
    );
    assert!(now_held.len() >= RF, "{now_held:?}");
    assert!(now_held.contains(&heir), "{now_held:?}");
    let objects: Vec<u64> = live
        .iter()
        .map(|&i| c.node(i).status().unwrap()["objects"].as_u64().unwrap())
        .collect();
    let after: Vec<(u64, u64)> = live.iter().map(|&i| repair(c.node(i))).collect();
    println!("live nodes {live:?}: objects {objects:?}, repair (transfers, bytes) {after:?}");
    // `repair.bytes` is the bytes repair moved: one new copy moves the object once.
    let new_copies = now_held.iter().filter(|i| !held.contains(i)).count() as u64;
    let moved: u64 = live
        .iter()
        .zip(&after)
        .map(|(&i, a)| a.1 - before[i].1)
        .sum();
    // Only the lead holder pushes, and a receiver takes one transfer of an object at a
    // time: the new copy moved exactly once.
    let one = new_copies * data.len() as u64;
    c.check(moved == one, || {
        format!(
            "repair.bytes over the live nodes grew by {moved} for {new_copies} new copy of \
             {} bytes (per node (transfers, bytes): before {before:?}, after {after:?} for \
             {live:?}): a copy moved more than once, or bytes were counted that did not move",
            data.len()
        )
    });

    // Back with the same data directory: same id, its copy intact and served.
    let victim_file = object_file(c.node(victim), &id);
    assert_same_bytes(
        &std::fs::read(&victim_file).unwrap(),
        &data,
        "the killed node's file on disk",
    );
    c.mesh.nodes[victim].restart().unwrap();
    c.mesh.nodes[victim]
        .wait_ready(Duration::from_secs(20))
        .unwrap();
    let node = c.node(victim);
    let st = node.status().unwrap();
    assert_eq!(st["node_id"], victim_id.to_string(), "{st}");
    assert!(
        st["objects"].as_u64().unwrap() >= 1,
        "restarted node lost its object: {st}"
    );
    assert!(
        st["bytes_stored"].as_u64().unwrap() >= data.len() as u64,
        "{st}"
    );
    let r = get(&s, node, &path, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_same_bytes(&r.body, &data, "GET from the restarted node");
    assert_eq!(
        node.id_on_disk().unwrap(),
        victim_id,
        "macronode id after restart"
    );
    assert_eq!(
        integrity(node),
        (0, 0, 0),
        "the restarted node found its copy corrupt"
    );
    // It announces what it found on disk (`Dht::provide_paced`, a few at a time, once its
    // table holds a peer): its provider records go out again.
    let announced = poll_until(
        "the restarted node to announce its store",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let n = metric(
                c.node(victim),
                r#"dht_rpcs_sent_total{kind="add_provider"}"#,
            );
            (n >= 1.0).then_some(n)
        },
    );
    c.check(announced.is_ok(), || format!("{announced:?}"));
    c.finish();
}

// ---------------------------------------------------------------------------------------
// The write quorum is a promise; a lost copy is repaired exactly once.
// ---------------------------------------------------------------------------------------

#[test]
fn a_put_short_of_its_quorum_is_503_and_repair_completes_it() {
    let mut c = start_cluster_of("quorum", 3, RF, |spec| {
        *spec = spec.clone().fast_liveness(Duration::from_millis(500));
    });
    let s = c.scratch().to_path_buf();
    let data = pseudo_random(c.seed, 200_000);
    let file = write_file(&s, "quorum", &data);
    let token = c.token(0, &[]);
    c.mesh.nodes[1].sigkill().unwrap();
    c.mesh.nodes[2].sigkill().unwrap();
    println!("killed node-1 and node-2; PUT via node-0 with W = {W}");

    let asked = Instant::now();
    let r = put(&s, c.node(0), &file, Some(&token)).unwrap();
    println!(
        "PUT with both peers dead: {} after {:?}: {}",
        r.status,
        asked.elapsed(),
        r.text()
    );
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(v["code"], "insufficient_replicas", "{v}");
    assert_eq!(v["replicas"], 1, "{v}");
    assert_eq!(v["w"], W, "{v}");
    assert!(r.header("retry-after").is_some(), "503 says when to retry");
    let id = b3sum(&file);
    let got = get(&s, c.node(0), &format!("/o/{id}"), &[]);
    assert_eq!(
        got.status,
        200,
        "the local copy stays readable: {}",
        got.text()
    );
    assert_same_bytes(&got.body, &data, "GET of the unacknowledged object");

    // The peers come back: repair brings the object to RF without another PUT...
    for i in [1, 2] {
        c.mesh.nodes[i].restart().unwrap();
    }
    for i in [1, 2] {
        c.mesh.nodes[i].wait_ready(Duration::from_secs(20)).unwrap();
    }
    let held = c.wait_settled(&[0, 1, 2], &id, Duration::from_secs(30));
    assert_eq!(held.len(), RF, "{held:?}");
    // ...and a retried PUT is acknowledged, the copies already there proven, not re-sent.
    let (_, r) = c.put_ok(0, &file, &token);
    let v = r.json();
    assert!(v["replicas"].as_u64().unwrap() >= W, "{v}");
    c.finish();
}

#[test]
fn a_lost_copy_is_repaired_exactly_once() {
    const RF4: usize = 4;
    let mut c = start_cluster_of("repair-once", 5, RF4, |spec| {
        *spec = spec.clone().fast_liveness(Duration::from_millis(500));
    });
    let s = c.scratch().to_path_buf();
    let all = [0usize, 1, 2, 3, 4];
    let token = c.token(0, &[]);
    let mut objects = Vec::new();
    for i in 0..8u64 {
        let data = pseudo_random(c.seed.wrapping_add(i), 50_000 + 1000 * i as usize);
        let file = write_file(&s, &format!("once-{i}"), &data);
        let (id, _) = c.put_ok((i % 5) as usize, &file, &token);
        objects.push((id, data.len() as u64));
    }
    for (id, _) in &objects {
        c.wait_settled(&all, id, Duration::from_secs(30));
    }
    // The victim holds most objects (RF 4 of 5); each it held needs one new copy.
    let victim = 2;
    let lost: Vec<&(String, u64)> = objects
        .iter()
        .filter(|(id, _)| closest(&c.ids, &all, id, RF4).contains(&victim))
        .collect();
    let live: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    // Let the holders confirm each other (they check the other targets after a write) so
    // they agree on who leads the repair of each object.
    std::thread::sleep(Duration::from_secs(3));
    let before: Vec<(u64, u64)> = all.iter().map(|&i| repair(c.node(i))).collect();
    let stored_before: u64 = live.iter().map(|&i| pushes(c.node(i)).0).sum();
    c.mesh.nodes[victim].sigkill().unwrap();
    println!(
        "killed node-{victim}, a holder of {} of {} objects",
        lost.len(),
        objects.len()
    );
    for (id, _) in &objects {
        c.wait_settled(&live, id, Duration::from_secs(30));
    }
    // Settled on disk; let any duplicate that was going to happen happen.
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<(u64, u64)> = live.iter().map(|&i| repair(c.node(i))).collect();
    let transfers: u64 = live
        .iter()
        .zip(&after)
        .map(|(&i, a)| a.0 - before[i].0)
        .sum();
    let bytes: u64 = live
        .iter()
        .zip(&after)
        .map(|(&i, a)| a.1 - before[i].1)
        .sum();
    let stored: u64 = live.iter().map(|&i| pushes(c.node(i)).0).sum::<u64>() - stored_before;
    let want_bytes: u64 = lost.iter().map(|(_, n)| n).sum();
    println!(
        "repair after the kill: {transfers} transfers, {bytes} bytes, {stored} pushes stored; \
         {} copies lost, {want_bytes} bytes",
        lost.len()
    );
    assert_eq!(
        transfers,
        lost.len() as u64,
        "one repair transfer per lost copy"
    );
    assert_eq!(bytes, want_bytes, "each lost copy moved once");
    assert_eq!(
        stored,
        lost.len() as u64,
        "receivers stored each new copy once"
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------
// 3: a node killed in the middle of a PUT load.
// ---------------------------------------------------------------------------------------

/// One PUT of the load.
#[derive(Debug)]
struct Attempt {
    index: usize,
    outcome: Result<Reply, String>,
    took: Duration,
}

#[test]
fn puts_acknowledged_while_a_node_dies_all_stay_readable() {
    const PUTS: usize = 150;
    let mut c = start_cluster("load", |spec| {
        *spec = spec.clone().fast_liveness(Duration::from_millis(500));
    });
    let s = c.scratch().to_path_buf();
    let mut sizes = pseudo_random(c.seed ^ 7, PUTS * 2).into_iter();
    let files: Vec<(PathBuf, Vec<u8>)> = (0..PUTS)
        .map(|i| {
            let hi = usize::from(sizes.next().unwrap());
            let lo = usize::from(sizes.next().unwrap());
            let len = (4 << 10) + (((hi << 8) | lo) % (60 << 10));
            let data = pseudo_random(c.seed.wrapping_add(1000 + i as u64), len);
            (write_file(&s, &format!("load-{i}"), &data), data)
        })
        .collect();
    let ids = b3sum_many(&files.iter().map(|f| f.0.clone()).collect::<Vec<_>>());
    let token = c.token(0, &[]);
    let victim = 3;

    // The load: PUTs through node 0 on a thread, bounded as a whole.
    let done = Arc::new(AtomicUsize::new(0));
    let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
    let entry = c.node(0).http();
    let load = {
        let (done, s, token) = (done.clone(), s.clone(), token.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut out = Vec::new();
            for (index, p) in paths.iter().enumerate() {
                if Instant::now() > deadline {
                    break;
                }
                let started = Instant::now();
                let outcome = curl(
                    &s,
                    &[
                        "-T".into(),
                        p.display().to_string(),
                        "-H".into(),
                        format!("Authorization: Bearer {token}"),
                        format!("http://{entry}/o"),
                    ],
                );
                out.push(Attempt {
                    index,
                    outcome,
                    took: started.elapsed(),
                });
                done.fetch_add(1, Ordering::Relaxed);
            }
            out
        })
    };
    poll_until(
        &format!("{} of {PUTS} PUTs to finish before the kill", PUTS / 3),
        Duration::from_secs(60),
        Duration::from_millis(5),
        || (done.load(Ordering::Relaxed) >= PUTS / 3).then_some(()),
    )
    .unwrap();
    c.mesh.nodes[victim].sigkill().unwrap();
    let killed_at = done.load(Ordering::Relaxed);
    println!("SIGKILL node-{victim} after {killed_at} PUTs");
    let attempts = load.join().expect("the load thread panicked");
    assert_eq!(
        attempts.len(),
        PUTS,
        "the load ran out of time after {} PUTs",
        attempts.len()
    );

    let mut failed = Vec::new();
    let mut acked = Vec::new();
    let mut thin = Vec::new();
    for a in &attempts {
        match &a.outcome {
            Ok(r) if r.status == 201 => {
                let v = r.json();
                assert_eq!(v["id"], ids[a.index].as_str(), "PUT #{}: {v}", a.index);
                if v["replicas"].as_u64().unwrap_or(0) < W {
                    thin.push((a.index, v["replicas"].clone(), a.took));
                }
                acked.push(a.index);
            }
            Ok(r) => failed.push(format!(
                "#{} {} after {:?}: {}",
                a.index,
                r.status,
                a.took,
                r.text()
            )),
            Err(e) => failed.push(format!("#{} after {:?}: {e}", a.index, a.took)),
        }
    }
    let slowest = attempts.iter().map(|a| a.took).max().unwrap_or_default();
    println!(
        "{} of {PUTS} PUTs got 201, {} failed, slowest {slowest:?}",
        acked.len(),
        failed.len()
    );
    for f in &failed {
        println!("  failed PUT {f}");
    }
    // A 201 is a promise of W durable copies: never fewer.
    assert!(
        thin.is_empty(),
        "201 with fewer than W = {W} replicas (index, replicas, took): {thin:?}"
    );
    // One node of five dies: the other three peers still make W = 2 easy to reach. A PUT
    // may fail while the dead node is still a target, but only cleanly and rarely.
    assert!(
        failed.len() <= PUTS / 10,
        "{} of {PUTS} PUTs failed: {failed:?}",
        failed.len()
    );

    // Every acknowledged object reads back, byte for byte, through another live node: one
    // reader thread per live node other than the entry, each taking its share of objects.
    let live: Vec<usize> = (0..5).filter(|&i| i != victim).collect();
    let readers: Vec<usize> = live.iter().copied().filter(|&i| i != 0).collect();
    let unreadable: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = readers
            .iter()
            .enumerate()
            .map(|(k, &via)| {
                let (acked, files, ids, s) = (&acked, &files, &ids, &s);
                let addr = c.node(via).http();
                let stride = readers.len();
                scope.spawn(move || {
                    let mut bad = Vec::new();
                    for &i in acked.iter().skip(k).step_by(stride) {
                        let r = get_at(s, addr, &format!("/o/{}", ids[i]), &[]);
                        if r.status != 200 || r.body != files[i].1 {
                            bad.push((i, via, r));
                        }
                    }
                    bad
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("a reader thread panicked"))
            .map(|(i, via, r)| {
                format!(
                    "#{i} {} (PUT {} the kill) via node-{via}: {} ({} bytes, want {}) {}; \
                     copies now on live nodes {:?}, on node-{victim} (dead): {}",
                    ids[i],
                    if i < killed_at { "before" } else { "after" },
                    r.status,
                    r.body.len(),
                    files[i].1.len(),
                    if r.status == 200 {
                        String::new()
                    } else {
                        r.text()
                    },
                    holders(&c.mesh.nodes, &live, &ids[i]),
                    object_file(c.node(victim), &ids[i]).is_file(),
                )
            })
            .collect()
    });
    assert!(
        unreadable.is_empty(),
        "{} of {} acknowledged PUTs do not read back:\n{}",
        unreadable.len(),
        acked.len(),
        unreadable.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// 5 (last case): an operator's explicit --open-writes.
// ---------------------------------------------------------------------------------------

#[test]
fn an_open_writes_node_takes_puts_without_a_token() {
    require_tools();
    let seed = seed("open");
    let work = tempfile::tempdir().unwrap();
    let mut spec = NodeSpec::new("open");
    spec.args.push("--open-writes".into());
    let mut node = NodeProcess::start(spec).unwrap();
    node.wait_healthy(Duration::from_secs(10)).unwrap();
    let data = pseudo_random(seed, 5000);
    let file = write_file(work.path(), "open", &data);
    let r = put(work.path(), &node, &file, None).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let id = b3sum(&file);
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.json()["replicas"], 1, "a lone node holds the only copy");
    let r = get(work.path(), &node, &format!("/o/{id}"), &[]);
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &data, "GET from the open node");
}

/// A node whose data directory is a small disk (an 8 MiB tmpfs, root only), filled: a PUT
/// is refused with a 503 that says why, and leaves nothing on the disk; what it held
/// before is still served, byte for byte; once space is freed, PUTs are taken again
/// without a restart; and after a restart, on the full disk or a freed one, everything
/// acknowledged is there.
#[test]
fn a_full_disk_refuses_puts_serves_what_it_held_and_takes_puts_once_freed() {
    require_tools();
    if let Some(why) = testing::small_disk::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let seed = seed("full-disk");
    let work = tempfile::tempdir().unwrap();
    let mut spec = NodeSpec::new("full");
    spec.args.push("--open-writes".into());
    let mut node = NodeProcess::start(spec).unwrap();
    node.wait_healthy(Duration::from_secs(10)).unwrap();
    node.sigterm().unwrap();
    node.process().wait_exit(Duration::from_secs(10)).unwrap();
    let disk = testing::small_disk::SmallDisk::mount_over(&node.data_dir(), 8 << 20).unwrap();
    node.restart().unwrap();
    node.wait_healthy(Duration::from_secs(10)).unwrap();

    let held = pseudo_random(seed, 300_000);
    let held_file = write_file(work.path(), "held", &held);
    let held_id = b3sum(&held_file);
    let r = put(work.path(), &node, &held_file, None).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    let filled = disk.fill().unwrap();
    println!("filled the disk with {filled} bytes");
    let refused = pseudo_random(seed ^ 1, 300_000);
    let refused_file = write_file(work.path(), "refused", &refused);
    let refused_id = b3sum(&refused_file);
    let files = |dir: &std::path::Path| -> Vec<String> {
        walk(dir)
            .into_iter()
            .map(|p| p.display().to_string())
            .collect()
    };
    let before = files(&node.data_dir());
    for attempt in 0..2 {
        let r = put(work.path(), &node, &refused_file, None).unwrap();
        assert_eq!(
            r.status,
            503,
            "attempt {attempt} on a full disk: {}",
            r.text()
        );
        assert_eq!(r.json()["code"], "store_unavailable", "{}", r.text());
        assert!(r.header("retry-after").is_some(), "{}", r.text());
    }
    assert_eq!(
        files(&node.data_dir()),
        before,
        "a refused PUT left files on the full disk"
    );
    let r = get(work.path(), &node, &format!("/o/{held_id}"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_same_bytes(&r.body, &held, "GET of what the full disk held");
    let r = get(work.path(), &node, &format!("/o/{refused_id}"), &[]);
    assert_eq!(r.status, 404, "a refused PUT is not served: {}", r.text());

    disk.free().unwrap();
    let r = put(work.path(), &node, &refused_file, None).unwrap();
    assert_eq!(r.status, 201, "a PUT once the disk has room: {}", r.text());

    // Stopped and started again on a full disk (its index snapshot cannot be written),
    // then on a freed one: everything acknowledged is served each time.
    for full in [true, false] {
        if full {
            disk.fill().unwrap();
        } else {
            disk.free().unwrap();
        }
        node.sigterm().unwrap();
        node.process().wait_exit(Duration::from_secs(10)).unwrap();
        let temps: Vec<PathBuf> = walk(&node.data_dir())
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".tmp"))
            .collect();
        assert!(temps.is_empty(), "left on the disk at stop: {temps:?}");
        node.restart().unwrap();
        node.wait_healthy(Duration::from_secs(10)).unwrap();
        for (id, bytes) in [(&held_id, &held), (&refused_id, &refused)] {
            let r = get(work.path(), &node, &format!("/o/{id}"), &[]);
            assert_eq!(
                r.status,
                200,
                "{id} after a restart (full: {full}): {}",
                r.text()
            );
            assert_same_bytes(&r.body, bytes, "GET after a restart");
        }
    }
    drop(node);
    drop(disk);
}

/// Every file under `dir`, sorted.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A node started with a bootstrap peer it cannot reach yet belongs to a mesh: it is not a
/// mesh of one, so a PUT waits for W copies (503 with its own copy kept) and a GET of what
/// it lacks says it cannot search (503), not 404. Before, it acknowledged writes with its
/// own copy alone until it reached a peer: a restarted node whose peers were down answered
/// 201 with one copy.
#[test]
fn a_node_that_has_not_reached_its_peers_yet_is_not_a_mesh_of_one() {
    require_tools();
    let seed = seed("unreached");
    let work = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut spec = NodeSpec::new("unreached");
    spec.args.push("--open-writes".into());
    spec.args.push("--bootstrap".into());
    spec.args.push(dead.to_string());
    let mut node = NodeProcess::start(spec).unwrap();
    node.wait_healthy(Duration::from_secs(10)).unwrap();
    let data = pseudo_random(seed, 5000);
    let file = write_file(work.path(), "unreached", &data);
    let r = put(work.path(), &node, &file, None).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(v["code"], "insufficient_replicas", "{v}");
    assert_eq!(v["replicas"], 1, "{v}");
    let id = b3sum(&file);
    let r = get(work.path(), &node, &format!("/o/{id}"), &[]);
    assert_eq!(r.status, 200, "its own copy stays readable");
    assert_same_bytes(&r.body, &data, "GET of the kept copy");
    let absent = blake3::hash(b"never put anywhere").to_hex();
    let r = get(work.path(), &node, &format!("/o/b3:{absent}"), &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "no_peers", "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// A paused holder (SIGSTOP: a VM pause, a long GC) must not hold up a GET the other
// holders can serve: the search stops at the first holder that proves the object.
// ---------------------------------------------------------------------------------------

#[test]
fn a_paused_holder_does_not_hold_up_a_get() {
    use nix::sys::signal::Signal;
    let mut c = start_cluster("paused", |_| {});
    let s = c.scratch().to_path_buf();
    // Larger than one group, so the TAIL answer is not the whole object.
    let data = pseudo_random(c.seed, (2 << 20) + 7);
    let file = write_file(&s, "paused", &data);
    let all = [0, 1, 2, 3, 4];
    let order = closest(&c.ids, &all, &b3sum(&file), all.len());
    let (via, gateway) = (order[0], order[RF]);
    let paused = order[1];
    let token = c.token(via, &[]);
    let (id, _) = c.put_ok(via, &file, &token);
    let held = c.wait_settled(&all, &id, Duration::from_secs(20));
    assert!(!held.contains(&gateway), "{held:?}");
    let path = format!("/o/{id}");
    // Warm: the gateway's connections to the holders exist before the pause.
    let warm = get(&s, c.node(gateway), &path, &[]);
    assert_eq!(warm.status, 200, "{}", warm.text());

    c.mesh.nodes[paused]
        .process()
        .signal(Signal::SIGSTOP)
        .unwrap();
    println!("SIGSTOP node-{paused} (a holder of {held:?}); GETs via node-{gateway}");
    let mut took = Vec::new();
    for _ in 0..5 {
        let asked = Instant::now();
        let r = get(&s, c.node(gateway), &path, &[]);
        took.push(asked.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_same_bytes(&r.body, &data, "GET with a holder paused");
    }
    c.mesh.nodes[paused]
        .process()
        .signal(Signal::SIGCONT)
        .unwrap();
    took.sort();
    println!("GET times with node-{paused} paused: {took:?}");
    // Waiting for the paused holder costs the probe timeout (1.5 s) every time; the
    // median stays far below it when the first proof ends the search.
    assert!(
        took[2] < Duration::from_millis(1000),
        "median GET {:?} with one of {RF} holders paused: {took:?}",
        took[2]
    );
    c.finish();
}

/// A GET whose every holder fails before its first byte answers 503 with `Retry-After`,
/// not a 200 whose body is cut at byte 0. Here the only holder's copy rotted in its first
/// group while its final group, which proves the copy to the gateway's search, is intact:
/// the gateway finds the holder, and the fetch fails at the first group. Before, the
/// headers went out with the search's answer and the client got a 200 and a cut body (the
/// chaos tier's `loss20_unanswered` under 20 % loss).
#[test]
fn a_get_whose_holders_all_fail_before_the_first_byte_is_503() {
    let c = start_cluster_of("first-byte", 2, 1, |spec| {
        spec.args.extend(["--w", "1"].map(String::from));
    });
    let s = c.scratch().to_path_buf();
    // Larger than one group, so the search's TAIL does not carry the whole object.
    let data = pseudo_random(c.seed, (1 << 20) + 5);
    let file = write_file(&s, "first-byte", &data);
    let all = [0, 1];
    let order = closest(&c.ids, &all, &b3sum(&file), 2);
    let (holder, gateway) = (order[0], order[1]);
    let token = c.token(holder, &[]);
    let (id, _) = c.put_ok(holder, &file, &token);
    let held = c.wait_settled(&all, &id, Duration::from_secs(20));
    assert_eq!(held, vec![holder], "RF 1: node-{holder} alone holds {id}");
    let path = format!("/o/{id}");
    flip_byte(&object_file(c.node(holder), &id), 0);
    println!("flipped byte 0 of node-{holder}'s copy; GET via node-{gateway}");
    let r = get(&s, c.node(gateway), &path, &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("holders_failed"), "{}", r.text());
    assert!(
        r.headers.iter().any(|(n, _)| n == "retry-after"),
        "{:?}",
        r.headers
    );
    assert_eq!(
        metric(c.node(gateway), "rejected_total{reason=\"holders_failed\"}"),
        1.0
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------
// A holder whose copy rots while the other holders are unreachable fetches a good copy
// back once they answer again.
// ---------------------------------------------------------------------------------------

/// The other holders counted the rotten copy and will not repair it until their proof of
/// it lapses (an hour); the holder that dropped it fetches a good one back itself. It tried
/// once: with the other holders paused (a VM pause, a partition) the object stayed a copy
/// short for that hour. Now it tries again on a schedule (5 s, 20 s, 1 min, ...).
#[test]
fn a_dropped_copy_is_fetched_back_when_the_holders_answer_again() {
    use nix::sys::signal::Signal;
    let mut c = start_cluster_of("fetch-back", 3, 3, |_| {});
    let s = c.scratch().to_path_buf();
    // Over the hot cache's entries (64 KiB) and under the gateway's verified whole reads
    // (256 KiB): the GET finds the rot before it answers.
    let data = pseudo_random(c.seed, (200 << 10) + 7);
    let file = write_file(&s, "fetch-back", &data);
    let all = [0, 1, 2];
    let token = c.token(0, &[]);
    let (id, _) = c.put_ok(0, &file, &token);
    c.wait_settled(&all, &id, Duration::from_secs(20));

    for i in [1, 2] {
        c.mesh.nodes[i].process().signal(Signal::SIGSTOP).unwrap();
    }
    println!("SIGSTOP node-1 and node-2; node-0's copy rots");
    let copy = object_file(c.node(0), &id);
    flip_middle_byte(&copy);
    // node-0's gateway reads its copy, finds the rot and drops it; the mesh cannot serve.
    let r = get(&s, c.node(0), &format!("/o/{id}"), &[]);
    assert_ne!(
        r.status,
        200,
        "served with every good copy paused: {}",
        r.text()
    );
    poll_until(
        "node-0 to drop its rotten copy",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (!copy.is_file() && integrity(c.node(0)).0 >= 1).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let failed = "copies_fetched_back_total{outcome=\"failed\"}";
    poll_until(
        "node-0's first fetch back to fail",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || (metric(c.node(0), failed) >= 1.0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let resumed = Instant::now();
    for i in [1, 2] {
        c.mesh.nodes[i].process().signal(Signal::SIGCONT).unwrap();
    }
    // The paused holders may have left node-0's table meanwhile: the tries at 5 s and
    // 20 s can fail while they rejoin; the one at 1 min is inside the wait.
    poll_until(
        "node-0 to hold a good copy again",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || (copy.is_file() && b3sum(&copy) == id).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}; fetches back: {} failed, {} ok",
            metric(c.node(0), failed),
            metric(c.node(0), "copies_fetched_back_total{outcome=\"ok\"}")
        )
    });
    println!(
        "node-0 held a good copy {:?} after the holders resumed ({} failed fetches back)",
        resumed.elapsed(),
        metric(c.node(0), failed)
    );
    assert_eq!(
        metric(c.node(0), "copies_fetched_back_total{outcome=\"ok\"}"),
        1.0
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------
// A PUT that declares its id: copies pushed beside the upload, a false id stores nothing.
// ---------------------------------------------------------------------------------------

/// `PUT /o/b3:<hex>` with `curl -T`: the copies go out while the body arrives (the node's
/// `replica_pushes_streamed_total` says they were stored that way, not pushed again after
/// the upload), the object is on disk at all RF nodes and reads back through another. A
/// body that hashes to another id is refused (422 `id_mismatch`): nothing is stored under
/// either id at any node, no temporary file stays, and no receiver counts a corrupt push
/// (ours held back END, so no peer is blamed for our client's lie). Declaring the id of an
/// object the mesh already holds, with other bytes, is refused too, and leaves it intact. A
/// client that hangs up mid-body leaves nothing either.
#[test]
fn a_put_that_declares_its_id_pushes_beside_the_upload_and_a_false_id_stores_nothing() {
    const LEN: usize = 8 << 20;
    let c = start_cluster_of("declared", 3, RF, |_| {});
    let s = c.scratch();
    let token = c.token(0, &[]);
    let put_at = |file: &std::path::Path, id: &str| {
        let args = vec![
            "-T".to_string(),
            file.display().to_string(),
            "-H".into(),
            format!("Authorization: Bearer {token}"),
            format!("{}/o/{id}", base(c.node(0))),
        ];
        curl_ok(s, &args)
    };
    let streamed = |outcome: &str| {
        c.node(0)
            .metric(&format!(
                "replica_pushes_streamed_total{{outcome=\"{outcome}\"}}"
            ))
            .unwrap()
            .unwrap_or(0.0)
    };
    let corrupt_pushes = || -> f64 {
        c.mesh
            .nodes
            .iter()
            .map(|n| {
                n.metric("integrity_fail_total{source=\"push\"}")
                    .unwrap()
                    .unwrap_or(0.0)
            })
            .sum()
    };

    let data = pseudo_random(c.seed, LEN);
    let file = write_file(s, "declared", &data);
    let id = b3sum(&file);
    let r = put_at(&file, &id);
    assert_eq!(r.status, 201, "PUT /o/{id}: {}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    assert!(
        r.json()["replicas"].as_u64().is_some_and(|n| n >= W),
        "{}",
        r.text()
    );
    // The 201 may come from the copy pushed from the store to the target nobody streamed
    // to: the streamed copy's placement reports a moment later.
    println!(
        "at the 201: streamed stored {}, pushed again {}",
        streamed("stored"),
        streamed("pushed_again")
    );
    let ended = poll_until(
        "the streamed push's placement to report",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let (stored, again) = (streamed("stored"), streamed("pushed_again"));
            (stored + again >= (W - 1) as f64).then_some((stored, again))
        },
    );
    let (stored, again) = ended.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stored >= (W - 1) as f64,
        "copies pushed beside the upload: stored {stored}, pushed again {again}"
    );
    c.wait_settled(&[0, 1, 2], &id, Duration::from_secs(30));
    let r = get(s, c.node(2), &format!("/o/{id}"), &[]);
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &data, "GET through node-2");

    // A body that is not the declared id's: a fresh id nobody holds. Its copies are
    // streamed (and reset at the end).
    let other = write_file(s, "other", &pseudo_random(c.seed ^ 0x0dd, LEN));
    let other_id = b3sum(&other);
    let false_id = format!("b3:{}", hex::encode(pseudo_random(c.seed ^ 0x1d, 32)));
    let started = streamed("started");
    put_at(&other, &false_id).assert_error(422, "id_mismatch", "a body under a false id");
    assert!(
        streamed("started") > started,
        "no push was streamed for the false id"
    );
    // Declaring what the mesh holds, with other bytes: the holders already have it.
    put_at(&other, &id).assert_error(422, "id_mismatch", "other bytes under a held id");
    // A client that hangs up in the middle of its body: its pushes are reset too.
    let started = streamed("started");
    let cut = curl(
        s,
        &[
            "-T".to_string(),
            other.display().to_string(),
            "--limit-rate".into(),
            "2M".into(),
            "--max-time".into(),
            "1".into(),
            "-H".into(),
            format!("Authorization: Bearer {token}"),
            format!("{}/o/{other_id}", base(c.node(0))),
        ],
    );
    assert!(cut.is_err(), "curl was to give up mid-body: {cut:?}");
    assert!(
        streamed("started") > started,
        "no push was streamed for the cut upload"
    );
    // The receivers end their receptions when our resets reach them.
    let temporaries = |n: &NodeProcess| -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![n.data_dir()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() {
                    dirs.push(e.path());
                } else if name.starts_with(".tmp") {
                    found.push(e.path().display().to_string());
                }
            }
        }
        found
    };
    poll_until(
        "no temporary object file at any node",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            c.mesh
                .nodes
                .iter()
                .all(|n| temporaries(n).is_empty())
                .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        let left: Vec<_> = c.mesh.nodes.iter().flat_map(temporaries).collect();
        panic!("{e}: {left:?}")
    });
    for wrong in [&false_id, &other_id] {
        assert!(
            holders(&c.mesh.nodes, &[0, 1, 2], wrong).is_empty(),
            "{wrong} stored somewhere"
        );
    }
    assert_eq!(
        corrupt_pushes(),
        0.0,
        "a receiver was sent bytes that failed"
    );
    let r = get(s, c.node(1), &format!("/o/{id}"), &[]);
    assert_eq!(r.status, 200);
    assert_same_bytes(
        &r.body,
        &data,
        "the held object after a false PUT under its id",
    );

    // An id that is not one is 400 before any byte is read.
    let r = put_at(&other, "b3:not-hex");
    r.assert_error(400, "bad_id", "PUT /o/b3:not-hex");
    c.finish();
}

/// A declared-id PUT whose node's one write slot was taken while its body arrived answers
/// 503 `writes_busy` with its id (its copy is durable at the gateway), and its streamed push
/// is left to end by itself rather than reset: the nearest target holds the object though
/// the write never ran. The slot is held by a small PUT whose write still waits for the
/// paused node-2 when the upload's body ends.
#[test]
fn a_declared_put_refused_its_slot_leaves_its_streamed_copy_to_end() {
    use nix::sys::signal::Signal;
    // About 2 s at the rate below: it starts before the small PUT and ends while that
    // PUT's write waits for the paused node (5.0 s when this was written).
    const LEN: usize = 3 << 20;
    let mut c = start_cluster_of("detached", 3, RF, |spec| {
        spec.args.push("--writes-max".into());
        spec.args.push("1".into());
    });
    let s = &c.scratch().to_path_buf();
    let streamed = |node: &NodeProcess, outcome: &str| {
        node.metric(&format!(
            "replica_pushes_streamed_total{{outcome=\"{outcome}\"}}"
        ))
        .unwrap()
        .unwrap_or(0.0)
    };
    // An object whose streamed push (to the W - 1 = 1 nearest of node-0's two targets)
    // goes to node-1: node-2 is the one paused.
    let (data, id) = (0u64..64)
        .map(|i| pseudo_random(c.seed ^ (0xde7 + i), LEN))
        .map(|d| {
            let id = format!("b3:{}", blake3::hash(&d).to_hex());
            (d, id)
        })
        .find(|(_, id)| closest(&c.ids, &[1, 2], id, 1) == [1])
        .expect("one of 64 objects is nearer node-1");
    let file = write_file(s, "detached", &data);
    let (slow, quick) = (c.token(0, &[]), c.token(0, &[]));
    assert_ne!(slow, quick, "two principals, each with its own share");
    let url = format!("{}/o/{id}", base(c.node(0)));
    let upload = {
        let (s, file) = (s.clone(), file.clone());
        std::thread::spawn(move || {
            curl(
                &s,
                &[
                    "-T".to_string(),
                    file.display().to_string(),
                    "--limit-rate".into(),
                    "1500K".into(),
                    "-H".into(),
                    format!("Authorization: Bearer {slow}"),
                    url,
                ],
            )
        })
    };
    poll_until(
        "the declared PUT's push to start",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || (streamed(c.node(0), "started") >= 1.0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.mesh.nodes[2].process().signal(Signal::SIGSTOP).unwrap();
    println!("SIGSTOP node-2; a small PUT takes node-0's one write slot");
    let small = write_file(s, "slot", &pseudo_random(c.seed ^ 0x5107, 2000));
    let r = put(s, c.node(0), &small, Some(&quick)).unwrap();
    assert_eq!(r.status, 201, "the small PUT: {}", r.text());
    let r = upload.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    // 503 `writes_busy` with the id: refused its slot after the body, the premise.
    r.assert_error(503, "writes_busy", "the declared PUT after its body");
    assert_eq!(r.json()["id"], id.as_str(), "the 503 names the stored id");
    assert!(
        streamed(c.node(0), "detached") >= 1.0,
        "the push was left to end by itself"
    );
    poll_until(
        "node-1 to hold the object its detached push carried, and the push to count it",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let held = !holders(&c.mesh.nodes, &[1], &id).is_empty();
            (held && streamed(c.node(0), "stored") >= 1.0).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        streamed(c.node(0), "detached_stopped"),
        0.0,
        "nothing was stopped"
    );
    // The detached set gave the upload's streaming permit back once it ended.
    wait_gauge_zero(c.node(0), "uploads_streaming");
    // The detached push was registered with node-0's planner before the object was
    // announced, so the planner's own push to node-1 did not race it.
    let raced = c
        .node(1)
        .metric("oap_rejects_total{reason=\"push_in_progress\"}")
        .unwrap()
        .unwrap_or(0.0);
    assert_eq!(
        raced, 0.0,
        "node-1 refused a second push of the object while the first ran"
    );
    c.mesh.nodes[2].process().signal(Signal::SIGCONT).unwrap();
    let r = get(s, c.node(1), &format!("/o/{id}"), &[]);
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &data, "GET through node-1");
    c.finish();
}

/// A client that hangs up once its body is sent, without waiting for the answer, leaves no
/// copy behind unannounced: what follows the body (the hash check, the fsync, the write)
/// runs as a task of its own, not in the request's future, which is dropped with the
/// connection. Before, a hang-up during the final fsync left the copy durable on the
/// gateway's disk and announced to nobody (no provider record, no copies) until a restart
/// or the next day's republish.
///
/// Where the hang-up lands depends on the machine, so uploads hang up at a range of times
/// after their last byte: one cut in its body is stored nowhere (it was never answered),
/// one cut later must reach all its RF nodes. A copy on the gateway alone fails the test.
#[test]
fn a_client_that_hangs_up_after_its_body_leaves_no_copy_unplaced() {
    use std::io::Write;
    // Large enough that the final fsync takes a while after the last byte.
    const LEN: usize = 32 << 20;
    const AFTER_MS: [u64; 10] = [0, 5, 10, 15, 20, 25, 30, 40, 60, 300];
    let c = start_cluster_of("hangup", 3, RF, |_| {});
    let token = c.token(0, &[]);
    let mut ids = Vec::new();
    for (i, after) in AFTER_MS.into_iter().enumerate() {
        let data = pseudo_random(c.seed ^ (0x4a96 + i as u64), LEN);
        let id = format!("b3:{}", blake3::hash(&data).to_hex());
        let mut conn = std::net::TcpStream::connect(c.node(0).http()).unwrap();
        write!(
            conn,
            "PUT /o HTTP/1.1\r\nHost: node-0\r\nAuthorization: Bearer {token}\r\nContent-Length: {LEN}\r\n\r\n"
        )
        .unwrap();
        conn.write_all(&data).unwrap();
        std::thread::sleep(Duration::from_millis(after));
        drop(conn);
        std::thread::sleep(Duration::from_millis(300));
        ids.push((after, id));
    }
    // Whatever the gateway was still doing with a cut upload has ended once no upload's
    // temporary file is left (each is renamed into place or removed).
    let objects_dir = c.node(0).data_dir().join("objects");
    poll_until(
        "node-0's uploads to be stored or dropped",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let busy = std::fs::read_dir(&objects_dir)
                .unwrap()
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with(".tmp"));
            (!busy).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut placed = 0;
    for (after, id) in &ids {
        if holders(&c.mesh.nodes, &[0], id).is_empty() {
            let others = holders(&c.mesh.nodes, &[1, 2], id);
            assert!(
                others.is_empty(),
                "{id}: cut at +{after} ms, held by {others:?} but not by its gateway"
            );
            println!("{id}: cut at +{after} ms in its body: stored nowhere");
        } else {
            println!("{id}: cut at +{after} ms, stored by its gateway");
            c.wait_settled(&[0, 1, 2], id, Duration::from_secs(30));
            placed += 1;
        }
    }
    assert!(placed > 0, "no upload got as far as its gateway's store");
    // Every commit ended, and gave its permit back, clients or no clients.
    wait_gauge_zero(c.node(0), "writes_committing");
    c.finish();
}
