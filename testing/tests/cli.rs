//! The `macronode` command as an operator uses it: `devnet` starting and stopping a local
//! mesh, the precedence of flags over `MACRONODE_*` environment over the `--config` file,
//! and a graceful exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use testing::node::macronode_command;
use testing::ports::{self, Proto};
use testing::{ChildProc, Mesh, NodeProcess, NodeSpec, poll_until, poll_until_ok};
use wire::NodeId;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn http_refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[test]
fn devnet_starts_ready_nodes_and_sigterm_stops_them_all() {
    let n = 5u16;
    let dir = tempfile::tempdir().unwrap();
    let quic = ports::free_range(n, Proto::Udp).unwrap();
    let http = ports::free_range(n, Proto::Tcp).unwrap();
    let admin = ports::free_range(n, Proto::Tcp).unwrap();
    println!(
        "devnet quic ports {quic}.., http ports {http}.., admin ports {admin}.., dir {}",
        dir.path().display()
    );
    let mut cmd = macronode_command().unwrap();
    cmd.arg("devnet")
        .args(["--nodes", &n.to_string()])
        .arg("--dir")
        .arg(dir.path().join("nodes"))
        .args(["--quic-port", &quic.to_string()])
        .args(["--http-port", &http.to_string()])
        .args(["--admin-port", &admin.to_string()]);
    let started = Instant::now();
    let mut devnet = ChildProc::spawn("devnet", cmd, dir.path()).unwrap();

    // Each line: `node I: http://HTTP  admin http://ADMIN`.
    let urls: Vec<(String, String)> = poll_until_ok(
        "devnet to print its nodes' URLs",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            devnet.check_running()?;
            let out = devnet.stdout();
            let urls: Vec<(String, String)> = out
                .lines()
                .filter(|l| l.trim_start().starts_with("node "))
                .filter_map(|l| {
                    let mut u = l
                        .split("http://")
                        .skip(1)
                        .map(|u| u.split_whitespace().next().unwrap_or_default().to_string());
                    Some((u.next()?, u.next()?))
                })
                .collect();
            Ok((urls.len() == usize::from(n)).then_some(urls))
        },
    )
    .unwrap();
    let addrs: Vec<SocketAddr> = urls.iter().map(|u| u.0.parse().unwrap()).collect();
    assert_eq!(addrs, (0..n).map(|i| local(http + i)).collect::<Vec<_>>());
    let admins: Vec<SocketAddr> = urls.iter().map(|u| u.1.parse().unwrap()).collect();
    assert_eq!(admins, (0..n).map(|i| local(admin + i)).collect::<Vec<_>>());
    for (addr, admin) in addrs.iter().zip(&admins) {
        let r = testing::http::get(*addr, "/readyz", Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 200, "{addr}: {}", r.body);
        let r = testing::http::get(*admin, "/v1/routing", Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 200, "{admin}: {}", r.body);
    }
    println!("devnet of {n} ready in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10));
    let children = devnet.children();
    assert_eq!(children.len(), usize::from(n), "{children:?}");

    devnet.sigterm().unwrap();
    let status = devnet.wait_exit(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status}");
    for pid in children {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "node process {pid} outlived the devnet"
        );
    }
    for i in 0..n {
        assert!(
            http_refused(local(http + i)),
            "HTTP port {} still open",
            http + i
        );
        assert!(
            UdpSocket::bind(local(quic + i)).is_ok(),
            "QUIC port {} still bound",
            quic + i
        );
    }
}

/// Starts a lone node whose HTTP address comes from the layers given, and returns it with
/// the address it must be on.
fn node_with_layers(
    name: &str,
    file: bool,
    env: bool,
    flag: bool,
) -> (NodeProcess, SocketAddr, Vec<SocketAddr>) {
    let file_addr = ports::free_addr(Proto::Tcp).unwrap();
    let env_addr = ports::free_addr(Proto::Tcp).unwrap();
    let mut spec = NodeSpec::new(name);
    let mut unused = Vec::new();
    if file {
        spec.config_toml = Some(format!("http = \"{file_addr}\"\nk = 16\n"));
    }
    if env {
        spec.env
            .push(("MACRONODE_HTTP".into(), env_addr.to_string()));
    }
    let expect = if flag {
        None
    } else if env {
        Some(env_addr)
    } else {
        Some(file_addr)
    };
    spec.http_elsewhere = expect;
    for (set, addr) in [(file, file_addr), (env, env_addr)] {
        if set && Some(addr) != expect {
            unused.push(addr);
        }
    }
    let node = NodeProcess::start(spec).unwrap();
    let at = node.http();
    (node, at, unused)
}

#[test]
fn flags_override_environment_which_overrides_the_config_file() {
    let mut cases = vec![
        node_with_layers("all-layers", true, true, true),
        node_with_layers("file-and-env", true, true, false),
        node_with_layers("file-only", true, false, false),
    ];
    for (node, at, unused) in &mut cases {
        node.wait_healthy(Duration::from_secs(10)).unwrap();
        let status = node.status().unwrap();
        assert_eq!(status["http"], at.to_string(), "{}", node.name());
        for addr in unused {
            assert!(http_refused(*addr), "{}: {addr} answers", node.name());
        }
    }
    // A bad value names its field and the node refuses to start (exit code non-zero).
    let mut spec = NodeSpec::new("bad-file");
    spec.config_toml = Some("htp = \"127.0.0.1:1\"\n".into());
    let mut bad = NodeProcess::start(spec).unwrap();
    let status = bad.process().wait_exit(Duration::from_secs(10)).unwrap();
    assert!(!status.success());
    assert!(bad.log().contains("htp"), "{}", bad.log());
}

#[test]
fn sigterm_shuts_a_node_down_gracefully() {
    let mut mesh = Mesh::start(2, |_, _| {}).unwrap();
    mesh.wait_ready(Duration::from_secs(20)).unwrap();
    assert_eq!(mesh.nodes[0].status().unwrap()["peers"], 1);

    let node = &mut mesh.nodes[1];
    node.sigterm().unwrap();
    let asked = Instant::now();
    let status = node.process().wait_exit(Duration::from_secs(10)).unwrap();
    let took = asked.elapsed();
    println!("SIGTERM to exit: {took:?}, {status}");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let log = node.log();
    assert!(
        log.contains("shutting down") && log.contains("transport closed"),
        "{log}"
    );
    assert!(http_refused(node.http()));
    assert!(UdpSocket::bind(node.quic()).is_ok());

    // The peer was told (QUIC CONNECTION_CLOSE), not left to time out.
    poll_until(
        "node-0 to see the connection closed",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || (mesh.nodes[0].status().unwrap()["peers"] == 0).then_some(()),
    )
    .unwrap();
    assert_eq!(mesh.nodes[0].get("/healthz").unwrap().status, 200);
}

/// A switch set in the config file can be turned off by the environment or a flag, and a
/// flag beats the environment, as for every other setting: an operator who ships
/// `open_writes = true` in a fleet's file can close one gateway without editing it.
#[test]
fn switches_can_be_turned_off_at_every_layer() {
    let put_status = |node: &NodeProcess| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["-X", "PUT", "--data-binary", "switch"])
            .arg(format!("http://{}/o", node.http()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // (name, MACRONODE_OPEN_WRITES, flag, expected status of a PUT without a token)
    let cases = [
        ("file-true", None, None, "201"),
        ("env-false", Some("false"), None, "401"),
        ("env-0", Some("0"), None, "401"),
        ("flag-false", None, Some("--open-writes=false"), "401"),
        (
            "flag-beats-env",
            Some("false"),
            Some("--open-writes=true"),
            "201",
        ),
        (
            "bare-flag-beats-env",
            Some("no"),
            Some("--open-writes"),
            "201",
        ),
    ];
    for (name, env, flag, want) in cases {
        let mut spec = NodeSpec::new(format!("switch-{name}"));
        spec.config_toml = Some("open_writes = true\n".into());
        if let Some(v) = env {
            spec.env.push(("MACRONODE_OPEN_WRITES".into(), v.into()));
        }
        spec.args.extend(flag.map(String::from));
        let mut node = NodeProcess::start(spec).unwrap();
        node.wait_healthy(Duration::from_secs(10)).unwrap();
        assert_eq!(put_status(&node), want, "{name}: {}", node.log());
    }
}

/// `token mint --expires-in 0` used to mint a token that never expires; it is refused with
/// a message that names the option, and nothing is printed as a token.
#[test]
fn a_token_that_never_expires_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = macronode_command().unwrap();
    cmd.args(["token", "mint", "--expires-in", "0", "--data-dir"])
        .arg(dir.path().join("data"));
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--expires-in"), "{err}");
    assert!(out.stdout.is_empty(), "printed a token: {out:?}");
}

/// A fleet names its bootstrap peers by DNS: `--bootstrap localhost:PORT` joins the node
/// listening there, and a name that does not resolve stops the node at start with a
/// message that names it (exit code non-zero).
#[test]
fn bootstrap_peers_can_be_named_by_dns() {
    let mut first = NodeProcess::start(NodeSpec::new("dns-first")).unwrap();
    first.wait_healthy(Duration::from_secs(10)).unwrap();
    let port = first.quic().port();
    let mut named =
        NodeProcess::start(NodeSpec::new("dns-named").bootstrap(format!("localhost:{port}")))
            .unwrap();
    named.wait_healthy(Duration::from_secs(10)).unwrap();
    let first_id = first.node_id().unwrap();
    poll_until(
        "the named bootstrap peer in the routing table",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            named
                .routing_ids()
                .is_ok_and(|ids| ids.contains(&first_id))
                .then_some(())
        },
    )
    .unwrap();

    let mut typo =
        NodeProcess::start(NodeSpec::new("dns-typo").bootstrap("no-such-host.invalid:4433"))
            .unwrap();
    let status = typo.process().wait_exit(Duration::from_secs(20)).unwrap();
    assert!(!status.success());
    assert!(
        typo.log()
            .contains("no-such-host.invalid:4433 does not resolve"),
        "{}",
        typo.log()
    );
}

/// `macronode doctor` with the options a node would run with: every check passes on a
/// good host with a live bootstrap peer (exit 0); a port in use and a bootstrap peer with
/// the wrong key each fail with a line that says what to do (exit 1).
#[test]
fn doctor_checks_a_host_before_a_run() {
    let mut peer = NodeProcess::start(NodeSpec::new("doctor-peer")).unwrap();
    peer.wait_healthy(Duration::from_secs(10)).unwrap();
    let peer_id = peer.node_id().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let doctor = |listen: SocketAddr, bootstrap: String, extra: &[String]| {
        let mut cmd = macronode_command().unwrap();
        cmd.arg("doctor")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &listen.to_string()])
            .args(["--http", &ports::free_addr(Proto::Tcp).unwrap().to_string()])
            .args(["--bootstrap", &bootstrap])
            .args(["--store-quota-bytes", "1048576"])
            .args(extra);
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let free = ports::free_addr(Proto::Udp).unwrap();
    let (ok, said) = doctor(free, format!("{peer_id}@{}", peer.quic()), &[]);
    assert!(said.contains("answered HELLO as"), "{said}");
    // The open-file limit is the host's: a low one fails here as it should, and is the
    // only failure this test tolerates.
    let fails: Vec<&str> = said.lines().filter(|l| l.starts_with("FAIL")).collect();
    let host_limit = fails.len() == 1 && fails[0].contains("open files");
    assert!(ok || host_limit, "{said}");
    assert!(
        ok == fails.is_empty(),
        "exit status and findings disagree: {said}"
    );

    let wrong = NodeId([7; 32]);
    let (ok, said) = doctor(peer.quic(), format!("{wrong}@{}", peer.quic()), &[]);
    assert!(!ok, "{said}");
    let fails: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("FAIL") && !l.contains("open files"))
        .collect();
    assert_eq!(fails.len(), 2, "{said}");
    assert!(
        fails[0].contains("QUIC port") && fails[0].contains("choose another --listen"),
        "{said}"
    );
    assert!(fails[1].contains("bootstrap peer"), "{said}");

    // A fixed admin plane port in use is named too.
    let taken = peer.admin().unwrap().to_string();
    let free = ports::free_addr(Proto::Udp).unwrap();
    let (ok, said) = doctor(
        free,
        format!("{peer_id}@{}", peer.quic()),
        &["--admin".into(), taken],
    );
    assert!(!ok, "{said}");
    assert!(
        said.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("choose another --admin")),
        "{said}"
    );
}

/// Large objects are written past the page cache by default and through it with
/// `--direct-io=false`, and the copy a write pushes to a peer is read the same way, while
/// a client's GET reads through the cache; either way the object comes back whole, and
/// `store_writes_total` and `store_reads_total` say which path each file took.
#[test]
fn direct_io_is_on_by_default_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let bytes: Vec<u8> = (0..9u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&body, &bytes).unwrap();
    let id = format!("b3:{}", blake3::hash(&bytes).to_hex());
    // The nodes' data directories are temporary directories too, on this file system.
    let takes_direct = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(dir.path().join("probe"))
            .is_ok()
    };
    for (name, flag, path) in [
        ("direct-default", None, "direct"),
        ("direct-off", Some("--direct-io=false"), "cached"),
    ] {
        // Two nodes, two copies, both before the answer: the second is pushed from the
        // gateway's store after its write (`PUT /o`: no copy streams beside the upload).
        let mut mesh = Mesh::start(2, |_, spec| {
            spec.config_toml = Some("open_writes = true\nrf = 2\nw = 2\n".into());
            spec.args.extend(flag.map(String::from));
        })
        .unwrap();
        mesh.wait_ready(Duration::from_secs(20)).unwrap();
        // A W = 2 write needs node 1 in node 0's table, which readiness does not wait for.
        let ids = mesh.ids().unwrap();
        mesh.wait_tables_hold(&[0, 1], &ids, Duration::from_secs(30))
            .unwrap();
        let node = &mesh.nodes[0];
        let put = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "30", "-T"])
            .arg(&body)
            .arg(format!("http://{}/o", node.http()))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&put.stdout);
        assert!(
            put.status.success() && said.contains(&id),
            "{name}: PUT failed ({said}): {}",
            node.log()
        );
        let got = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "30"])
            .arg(format!("http://{}/o/{id}", node.http()))
            .output()
            .unwrap();
        assert!(
            got.stdout == bytes,
            "{name}: the object came back different"
        );
        let counter = |what: &str, p: &str| {
            node.metric(&format!("{what}{{path=\"{p}\"}}"))
                .unwrap()
                .unwrap_or(0.0)
        };
        let count = |p: &str| counter("store_writes_total", p);
        let reads = |p: &str| counter("store_reads_total", p);
        // Where the node's file system refuses O_DIRECT at open, the default writes and
        // reads through the cache too, and says so.
        let path = if path == "direct" && !takes_direct {
            "cached"
        } else {
            path
        };
        assert_eq!(count(path), 1.0, "{name}: one object file written {path}");
        let other = if path == "direct" { "cached" } else { "direct" };
        assert_eq!(count(other), 0.0, "{name}: none {other}");
        let refused = if flag.is_none() && !takes_direct {
            1.0
        } else {
            0.0
        };
        assert_eq!(count("refused"), refused, "{name}: refusals counted");
        // The push read the object the way it was written (once, or again if a transient
        // fault made it try again); the GET through the cache.
        let (direct, cached) = if path == "direct" {
            (1.0, 1.0)
        } else {
            (0.0, 2.0)
        };
        assert!(
            reads("direct") >= direct && (direct > 0.0 || reads("direct") == 0.0),
            "{name}: reads past the cache"
        );
        assert!(reads("cached") >= cached, "{name}: reads through the cache");
        assert_eq!(reads("refused"), refused, "{name}: read refusals counted");
        let hex = &id[3..];
        let copy = mesh.nodes[1]
            .data_dir()
            .join(format!("objects/{}/{hex}", &hex[..2]));
        assert!(
            copy.exists(),
            "{name}: the pushed copy is at {}",
            copy.display()
        );
        for n in &mut mesh.nodes {
            n.sigterm().ok();
        }
    }
}
