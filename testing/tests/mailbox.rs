//! Mailboxes with real node processes (issue 17): a lone node's sends (tokens, idempotency,
//! quotas with `Retry-After`, TTL expiry, no mail on the public edge, a token's byte limit
//! and tenant quota), and a five-node mesh
//! where mail sent to an offline node survives a SIGKILLed holder and is delivered exactly
//! once after acks, a stranger can neither read, ack, forge nor replicate another node's
//! mail over OAP/1, and a send short of its W holders is refused; a node far from a
//! mailbox refuses to hold its mail (no copy where the owner's receive never asks); repair
//! pushes a message it passed over while in flight to its owner once it is visible again;
//! a full disk at the owner fails its ack there only, and heals once freed; a corrupt
//! journal at the owner is cut, and refilled from the other holders.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use node::Transport;
use serde_json::Value;
use testing::curl::{Reply, curl};
use testing::node::macronode_command;
use testing::{Mesh, NodeProcess, NodeSpec};
use wire::NodeId;
use wire::mailbox::{Envelope, MailboxRequest, MailboxResponse, MsgId, Refusal};

const START: Duration = Duration::from_secs(20);

/// `POST http://{addr}/mb/{to}{query}` with `body`, an idempotency key and a token.
fn send(
    addr: SocketAddr,
    to: &NodeId,
    key: &str,
    token: Option<&str>,
    query: &str,
    body: &str,
) -> Reply {
    let mut args = vec![
        "-X".to_string(),
        "POST".into(),
        "-H".into(),
        format!("Idempotency-Key: {key}"),
        "--data-binary".into(),
        body.to_string(),
    ];
    if let Some(t) = token {
        args.push("-H".into());
        args.push(format!("Authorization: Bearer {t}"));
    }
    args.push(format!("http://{addr}/mb/{to}{query}"));
    curl(&args)
}

/// The node's own mail through its admin plane: (id, payload base64) in order.
fn recv(node: &NodeProcess, wait: &str) -> Vec<(String, String)> {
    let r = curl(&[format!("http://{}/mb?wait={wait}", node.admin().unwrap())]);
    assert_eq!(r.status, 200, "GET /mb: {}", r.body);
    r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["payload"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn ack(node: &NodeProcess, id: &str) -> Reply {
    curl(&[
        "-X".into(),
        "DELETE".into(),
        format!("http://{}/mb/{id}", node.admin().unwrap()),
    ])
}

fn mint(data_dir: &std::path::Path, methods: &str) -> String {
    mint_with(data_dir, &["--methods", methods])
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn a_lone_node_checks_tokens_dedupes_enforces_quotas_and_expires_mail() {
    let mut spec = NodeSpec::new("mb-lone");
    spec.args = vec!["--mailbox-sender-count-max".into(), "3".into()];
    let mut node = NodeProcess::start(spec).unwrap();
    node.wait_ready(START).unwrap();
    let me = node.node_id().unwrap();
    let http = node.http();
    let admin = node.admin().unwrap();

    // The public edge wants a token allowing `send`.
    let r = send(http, &me, "k0", None, "", "no token");
    assert_eq!(r.status, 401, "{}", r.body);
    let put_only = mint(&node.data_dir(), "PUT");
    let r = send(http, &me, "k0", Some(&put_only), "", "wrong method");
    assert_eq!(r.status, 403, "{}", r.body);
    let token = mint(&node.data_dir(), "send");

    // A retried send is the same message, stored once.
    let first = send(http, &me, "a", Some(&token), "", "hello");
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.json()["id"].as_str().unwrap().to_string();
    assert_eq!(first.json()["duplicate"], false);
    let again = send(http, &me, "a", Some(&token), "", "hello");
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.json()["id"].as_str(), Some(id.as_str()));
    assert_eq!(again.json()["duplicate"], true);
    let got = recv(&node, "2s");
    assert_eq!(got, vec![(id.clone(), b64("hello"))]);

    // The sender may hold 3 messages in this mailbox: the 4th is 429 with Retry-After.
    for k in ["b", "c"] {
        let r = send(http, &me, k, Some(&token), "", k);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let over = send(http, &me, "d", Some(&token), "", "one too many");
    assert_eq!(over.status, 429, "{}", over.body);
    assert_eq!(over.json()["code"], "quota_exceeded", "{}", over.body);
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");

    // Per-sender FIFO: while the first message is in flight (delivered, not acked), the
    // same sender's later ones wait behind it.
    assert_eq!(recv(&node, "0s"), vec![]);
    // Acks free the quota; an id acked twice is 404 the second time.
    assert_eq!(ack(&node, &id).status, 200);
    assert_eq!(ack(&node, &id).status, 404);
    let all = recv(&node, "0s");
    assert_eq!(
        all.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        vec![b64("b"), b64("c")],
        "in send order"
    );
    // Both at once.
    let ids: Vec<&String> = all.iter().map(|(m, _)| m).collect();
    let r = curl(&[
        "-X".into(),
        "POST".into(),
        "--data-binary".into(),
        serde_json::json!({ "ids": ids }).to_string(),
        format!("http://{admin}/mb/ack"),
    ]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["deleted"], 2, "{}", r.body);
    let r = send(http, &me, "d", Some(&token), "", "fits now");
    assert_eq!(r.status, 201, "{}", r.body);
    let d = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(recv(&node, "1s"), vec![(d.clone(), b64("fits now"))]);
    assert_eq!(ack(&node, &d).status, 200);

    // TTL: a message asked to live 1 s is gone 1.5 s later, never delivered.
    let r = send(http, &me, "e", Some(&token), "?ttl_ms=1000", "short-lived");
    assert_eq!(r.status, 201, "{}", r.body);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(recv(&node, "500ms"), vec![]);

    // The public edge has no way to read mail: only the admin plane does.
    let r = curl(&[format!("http://{http}/mb?wait=1s")]);
    assert!(
        r.status == 404 || r.status == 405,
        "GET /mb on the public edge: {} {}",
        r.status,
        r.body
    );
    let r = curl(&[
        "-X".into(),
        "DELETE".into(),
        format!("http://{http}/mb/{d}"),
    ]);
    assert!(r.status == 404 || r.status == 405, "{}", r.status);
    assert_eq!(
        curl(&[format!("http://{admin}/mb?wait=soon")]).status,
        400,
        "a bad wait"
    );

    // The CLI, through the admin plane recorded in the data directory.
    let dir = node.data_dir();
    let out = mail_cli(
        &["send", &me.to_string(), "--key", "cli", "-"],
        &dir,
        b"via the cli",
    );
    assert!(out.status.success(), "mail send: {out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let out = mail_cli(&["recv", "--wait", "2"], &dir, b"");
    assert!(out.status.success(), "mail recv: {out:?}");
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["id"].as_str(), Some(id.as_str()));
    assert_eq!(line["payload"].as_str(), Some(b64("via the cli").as_str()));
    assert!(mail_cli(&["ack", &id], &dir, b"").status.success());
    let again = mail_cli(&["ack", &id], &dir, b"");
    assert!(
        !again.status.success(),
        "a second ack finds nothing: {again:?}"
    );
}

/// `macronode mail ARGS --data-dir DIR` with `stdin`, bounded.
/// `token mint` with these flags (methods, a byte limit, a tenant with its quota).
fn mint_with(data_dir: &std::path::Path, flags: &[&str]) -> String {
    let out = macronode_command()
        .unwrap()
        .args(["token", "mint"])
        .args(flags)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "token mint: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_public_send_keeps_its_tokens_limits_and_its_e2e_mark() {
    let mut node = NodeProcess::start(NodeSpec::new("mb-token")).unwrap();
    node.wait_ready(START).unwrap();
    let me = node.node_id().unwrap();
    let http = node.http();
    let dir = node.data_dir();

    // A byte limit holds for a body that declares no size (chunked), not only for a
    // Content-Length checked before reading.
    let small = mint_with(&dir, &["--methods", "send", "--max-bytes", "100"]);
    let chunked = |key: &str, body: &str| {
        curl(&[
            "-X".into(),
            "POST".into(),
            "-H".into(),
            "Transfer-Encoding: chunked".into(),
            "-H".into(),
            format!("Idempotency-Key: {key}"),
            "-H".into(),
            format!("Authorization: Bearer {small}"),
            "--data-binary".into(),
            body.to_string(),
            format!("http://{http}/mb/{me}"),
        ])
    };
    let r = chunked("big", &"x".repeat(200));
    assert_eq!(
        r.status, 403,
        "a chunked 200-byte body under a 100-byte token: {}",
        r.body
    );
    let r = send(
        http,
        &me,
        "big-declared",
        Some(&small),
        "",
        &"x".repeat(200),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = chunked("fits", &"x".repeat(100));
    assert_eq!(r.status, 201, "{}", r.body);

    // A tenant's sends count against its write quota, as its object PUTs do; a retried
    // send (the same key) is not counted twice.
    let tenant = mint_with(
        &dir,
        &[
            "--methods",
            "send",
            "--tenant",
            "mail-t",
            "--quota-bytes",
            "300",
            "--rate",
            "1000000",
        ],
    );
    for key in ["t1", "t2", "t1", "t3"] {
        let r = send(http, &me, key, Some(&tenant), "", &"y".repeat(100));
        assert_eq!(r.status, 201, "send {key}: {}", r.body);
    }
    let r = send(http, &me, "t4", Some(&tenant), "", &"y".repeat(100));
    assert_eq!(r.status, 429, "the tenant's 301st..400th byte: {}", r.body);
    assert_eq!(r.json()["code"], "quota_exceeded", "{}", r.body);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    let got = recv(&node, "1s");
    assert_eq!(
        got.len(),
        4,
        "fits, t1, t2, t3 delivered; the refused ones not: {got:?}"
    );
    for (id, _) in got {
        assert_eq!(ack(&node, &id).status, 200);
    }

    // The APP_E2E mark a sender sets (`?e2e=true`, `mail send --e2e`) reaches the owner
    // with the message; a message without it is not marked.
    let e2e = mint(&dir, "send");
    let r = send(http, &me, "sealed", Some(&e2e), "?e2e=true", "ciphertext");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = send(http, &me, "plain", Some(&e2e), "", "plaintext");
    assert_eq!(r.status, 201, "{}", r.body);
    let out = mail_cli(
        &["send", &me.to_string(), "--e2e", "-"],
        &dir,
        b"sealed too",
    );
    assert!(out.status.success(), "mail send --e2e: {out:?}");
    let r = curl(&[format!("http://{}/mb?wait=1s", node.admin().unwrap())]);
    let marks: Vec<(String, bool)> = r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["payload"].as_str().unwrap().to_string(),
                m["e2e"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        marks,
        vec![
            (b64("ciphertext"), true),
            (b64("plaintext"), false),
            (b64("sealed too"), true)
        ],
        "{}",
        r.body
    );
}

fn mail_cli(args: &[&str], dir: &std::path::Path, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = macronode_command()
        .unwrap()
        .arg("mail")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    out
}

/// A stranger's key for OAP/1, from a printed seed.
fn stranger() -> (Transport, tokio::runtime::Runtime) {
    let seed = testing::seed::seed(testing::seed::MESH_SEED, "mailbox stranger key");
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    testing::stranger::stranger(key).unwrap()
}

/// One mailbox request from the stranger to a node: (status, decoded answer).
fn ask(
    rt: &tokio::runtime::Runtime,
    t: &Transport,
    to: (SocketAddr, NodeId),
    req: &MailboxRequest,
) -> (u16, Option<MailboxResponse>) {
    testing::stranger::ask_mailbox(rt, t, to, req).unwrap()
}

fn refused(answer: &(u16, Option<MailboxResponse>)) -> Option<Refusal> {
    match answer {
        (403, Some(MailboxResponse::Refused { reason, .. })) => Some(*reason),
        _ => None,
    }
}

fn queue_depth(node: &NodeProcess) -> f64 {
    node.metric("mailbox_queue_depth").unwrap().unwrap_or(0.0)
}

#[test]
fn mail_to_an_offline_node_survives_a_killed_holder_and_is_delivered_once() {
    let mut mesh = Mesh::start(5, |_, spec| {
        *spec = std::mem::take(spec).fast_liveness(Duration::from_millis(500));
        spec.args.push("--open-writes".into());
    })
    .unwrap();
    mesh.wait_ready(START).unwrap();
    let ids = mesh.ids().unwrap();
    let to = ids[4];
    let started = Instant::now();

    // The recipient goes offline; node 1 sends it 12 messages, 3 of them twice.
    mesh.nodes[4].sigterm().unwrap();
    mesh.nodes[4]
        .process()
        .wait_exit(Duration::from_secs(10))
        .unwrap();
    let via = mesh.nodes[1].http();
    let mut sent: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..12 {
        let body = format!("message {i}");
        let r = send(via, &to, &format!("k{i}"), None, "", &body);
        assert_eq!(r.status, 201, "send {i}: {}", r.body);
        assert!(r.json()["copies"].as_u64() >= r.json()["want"].as_u64());
        sent.insert(r.json()["id"].as_str().unwrap().to_string(), b64(&body));
    }
    for i in [0, 5, 11] {
        let body = format!("message {i}");
        let r = send(via, &to, &format!("k{i}"), None, "", &body);
        assert_eq!(r.status, 201, "resend {i}: {}", r.body);
        assert!(sent.contains_key(r.json()["id"].as_str().unwrap()));
    }
    assert_eq!(sent.len(), 12);

    // A stranger reaches a holder over OAP/1: it can neither read nor ack the mail, nor
    // send in another's name, nor push replicas.
    let holder = (0..4)
        .find(|&i| queue_depth(&mesh.nodes[i]) >= 12.0)
        .expect("a node holds the mail");
    let at = (mesh.nodes[holder].quic(), ids[holder]);
    let (t, rt) = stranger();
    let fetch = MailboxRequest::Fetch {
        mailbox: to,
        after: 0,
        max_count: 16,
        max_bytes: 1 << 16,
        visibility_ms: 60_000,
    };
    assert_eq!(refused(&ask(&rt, &t, at, &fetch)), Some(Refusal::NotOwner));
    let some: Vec<MsgId> = sent
        .keys()
        .map(|h| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(h, &mut b).unwrap();
            MsgId(b)
        })
        .collect();
    let ack_req = MailboxRequest::Ack {
        mailbox: to,
        ids: some,
    };
    assert_eq!(
        refused(&ask(&rt, &t, at, &ack_req)),
        Some(Refusal::NotOwner)
    );
    let forged = Envelope {
        mailbox: to,
        sender: ids[1],
        idempotency_key: b"forged".to_vec(),
        ttl_ms: 0,
        e2e: false,
        payload: b"in node 1's name".to_vec(),
    };
    let r = ask(&rt, &t, at, &MailboxRequest::Send(forged.clone()));
    assert_eq!(refused(&r), Some(Refusal::BadSender));
    let r = ask(
        &rt,
        &t,
        at,
        &MailboxRequest::Replicate {
            messages: vec![forged],
        },
    );
    assert_eq!(refused(&r), Some(Refusal::NotHolder));
    rt.block_on(t.close());
    assert!(
        queue_depth(&mesh.nodes[holder]) >= 12.0,
        "the stranger deleted mail"
    );

    // A holder other than the bootstrap node is SIGKILLed; the recipient comes back.
    let victim = (1..4)
        .find(|&i| queue_depth(&mesh.nodes[i]) >= 12.0)
        .expect("a holder besides node 0");
    println!("killing holder node-{victim}");
    mesh.nodes[victim].sigkill().unwrap();
    mesh.nodes[4].restart().unwrap();
    mesh.nodes[4].wait_ready(START).unwrap();

    // Drain on start: the recipient pulls copies of its mail from the holders.
    testing::poll_until(
        "drain on start",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (queue_depth(&mesh.nodes[4]) >= 12.0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("the recipient did not drain its mail: {e}"));
    // Repair: the holders push to the closest set as it is now, so besides the recipient
    // at least two live nodes hold every message again.
    let live: Vec<usize> = (0..4).filter(|&i| i != victim).collect();
    testing::poll_until(
        "mailbox repair",
        Duration::from_secs(40),
        Duration::from_millis(500),
        || {
            let holding = live
                .iter()
                .filter(|&&i| queue_depth(&mesh.nodes[i]) >= 12.0)
                .count();
            (holding >= 2).then_some(holding)
        },
    )
    .unwrap_or_else(|e| panic!("copies were not repaired: {e}"));
    println!("repaired after {:?}", started.elapsed());

    // Every message arrives, once, and is gone after its ack.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(25);
    while seen.len() < sent.len() && Instant::now() < deadline {
        for (id, payload) in recv(&mesh.nodes[4], "2s") {
            assert!(
                seen.insert(id.clone(), payload).is_none(),
                "{id} delivered twice before its visibility timeout"
            );
            let r = ack(&mesh.nodes[4], &id);
            assert_eq!(r.status, 200, "ack {id}: {}", r.body);
        }
    }
    assert_eq!(seen, sent, "mail lost or altered");
    let left = recv(&mesh.nodes[4], "1500ms");
    assert!(left.is_empty(), "delivered again after its ack: {left:?}");

    // The killed holder missed the acks: it comes back still holding all 12 copies. The
    // recipient does not take them as new mail, and sends that holder the acks it missed.
    mesh.nodes[victim].restart().unwrap();
    mesh.nodes[victim].wait_ready(START).unwrap();
    assert!(
        queue_depth(&mesh.nodes[victim]) >= 12.0,
        "the killed holder's copies survived its restart"
    );
    testing::poll_until(
        "the missed acks reach the returned holder",
        Duration::from_secs(40),
        Duration::from_millis(100),
        || {
            let again = recv(&mesh.nodes[4], "500ms");
            assert!(
                again.is_empty(),
                "a holder that missed the acks delivered again: {again:?}"
            );
            (queue_depth(&mesh.nodes[victim]) == 0.0).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("the returned holder kept acknowledged mail: {e}"));

    // Fewer than W holders reachable: node 0 alone refuses the send, with its count.
    for i in 1..5 {
        mesh.nodes[i].sigkill().unwrap();
    }
    let r = send(
        mesh.nodes[0].http(),
        &to,
        "alone",
        None,
        "",
        "nobody to hold it",
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["code"], "insufficient_replicas", "{}", r.body);
    assert!(r.json()["copies"].as_u64() < r.json()["want"].as_u64());
    let peers: BTreeSet<_> = ids.iter().collect();
    assert_eq!(peers.len(), 5);
    println!("mesh scenario took {:?}", started.elapsed());
}

/// Messages all nodes pushed in repair rounds so far.
fn repair_pushed(mesh: &Mesh) -> f64 {
    mesh.nodes
        .iter()
        .map(|n| {
            n.metric("mailbox_repair_pushed_total")
                .unwrap()
                .unwrap_or(0.0)
        })
        .sum()
}

/// Four open nodes whose mail repair runs every 300 ms (a few seconds hold many rounds),
/// ready, with their ids.
fn repairing_mesh() -> (Mesh, Vec<NodeId>) {
    let mut mesh = Mesh::start(4, |_, spec| {
        *spec = std::mem::take(spec).fast_liveness(Duration::from_millis(500));
        spec.args
            .extend(["--open-writes", "--mailbox-repair-ms", "300"].map(String::from));
    })
    .unwrap();
    mesh.wait_ready(START).unwrap();
    let ids = mesh.ids().unwrap();
    (mesh, ids)
}

#[test]
fn repair_pushes_a_holder_only_what_it_lacks() {
    let (mesh, ids) = repairing_mesh();
    let to = ids[3];
    for i in 0..20 {
        let r = send(mesh.nodes[1].http(), &to, &format!("r{i}"), None, "", "x");
        assert_eq!(r.status, 201, "send {i}: {}", r.body);
    }
    let holders = |mesh: &Mesh| {
        (0..4)
            .filter(|&i| queue_depth(&mesh.nodes[i]) >= 20.0)
            .count()
    };
    assert!(holders(&mesh) >= 2, "W holders after the sends");
    // Repair settles: every holder confirmed, the counters stop moving.
    let settled = testing::poll_until(
        "repair settles",
        Duration::from_secs(20),
        Duration::from_millis(1500),
        {
            let mut last = -1.0;
            let mesh = &mesh;
            move || {
                let now = repair_pushed(mesh);
                let done = now == last;
                last = now;
                done.then_some(now)
            }
        },
    )
    .unwrap_or_else(|e| panic!("repair kept pushing the same mail: {e}"));
    assert_eq!(holders(&mesh), 3, "all RF holders hold the mail");
    // Ten more rounds with nothing new push nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        repair_pushed(&mesh),
        settled,
        "a steady mailbox cost pushes"
    );
    // New mail is pushed, and only it: at most once per other holder per holder.
    let r = send(mesh.nodes[1].http(), &to, "new", None, "", "y");
    assert_eq!(r.status, 201, "{}", r.body);
    std::thread::sleep(Duration::from_secs(2));
    let after = repair_pushed(&mesh);
    assert!(
        after - settled <= 6.0,
        "one new message pushed {} times",
        after - settled
    );
}

#[test]
fn an_amnesia_node_keeps_mail_in_memory_only() {
    let mut spec = NodeSpec::new("mb-amnesia");
    spec.args = vec!["--amnesia".into()];
    let mut node = NodeProcess::start(spec).unwrap();
    node.wait_ready(START).unwrap();
    let me = node.node_id().unwrap();
    // The admin plane sends as the operator: no token.
    let r = send(node.admin().unwrap(), &me, "m", None, "", "kept in memory");
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(recv(&node, "1s"), vec![(id.clone(), b64("kept in memory"))]);
    assert_eq!(ack(&node, &id).status, 200);

    // Several messages in one request, the second repeated: stored once, in order.
    let batch = serde_json::json!({"messages": [
        {"key": "b1", "payload": b64("first")},
        {"key": "b2", "payload": b64("second")},
        {"key": "b2", "payload": b64("second")},
    ]});
    let r = curl(&[
        "-X".into(),
        "POST".into(),
        "--data-binary".into(),
        batch.to_string(),
        format!("http://{}/mb/{me}/batch", node.admin().unwrap()),
    ]);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["duplicates"], 1, "{}", r.body);
    let ids: Vec<String> = r.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids[1], ids[2]);
    // An empty batch is the client's mistake, not a send short of copies.
    let r = curl(&[
        "-X".into(),
        "POST".into(),
        "--data-binary".into(),
        r#"{"messages": []}"#.into(),
        format!("http://{}/mb/{me}/batch", node.admin().unwrap()),
    ]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("empty_batch"), "{}", r.body);
    assert_eq!(
        recv(&node, "1s"),
        vec![
            (ids[0].clone(), b64("first")),
            (ids[1].clone(), b64("second"))
        ]
    );
    assert!(
        !node.data_dir().join("mailbox").exists(),
        "an amnesia node wrote a mailbox journal"
    );
    node.restart().unwrap();
    node.wait_ready(START).unwrap();
    assert_eq!(
        recv(&node, "500ms"),
        vec![],
        "mail outlived an amnesia node"
    );
}

#[test]
fn a_durable_node_keeps_acknowledged_mail_across_a_sigkill() {
    let mut node = NodeProcess::start(NodeSpec::new("mb-durable")).unwrap();
    node.wait_ready(START).unwrap();
    let me = node.node_id().unwrap();
    let r = send(node.admin().unwrap(), &me, "d", None, "", "on disk");
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    node.sigkill().unwrap();
    node.restart().unwrap();
    node.wait_ready(START).unwrap();
    assert_eq!(recv(&node, "1s"), vec![(id, b64("on disk"))]);
}

/// A SEND is a copy only where the owner's receive will look: a node stores mail for a
/// mailbox only when its table puts it among the 2·RF closest to the mailbox's key (the
/// set a receive asks). A sender with a stale view got `Stored` from any node, counted it
/// toward W, and the acknowledged message sat where its owner never asked (audit A6).
#[test]
fn a_send_to_a_node_far_from_the_mailbox_is_refused() {
    let mut mesh = Mesh::start(4, |_, spec| {
        spec.args
            .extend(["--rf", "1", "--w", "1", "--open-writes"].map(String::from));
    })
    .unwrap();
    mesh.wait_ready(START).unwrap();
    let ids = mesh.ids().unwrap();
    let all: Vec<usize> = (0..4).collect();
    mesh.wait_tables_hold(&all, &ids, START).unwrap();
    // The mailbox is node 0's; with RF 1 the receive asks the 2 closest to its key, so the
    // node farthest from it (4th of 4 in every table) is no holder, the nearest other one is.
    let key = |id: &NodeId| overlay::Key::for_node(id);
    let mailbox = ids[0];
    let mut by_distance: Vec<usize> = (1..4).collect();
    by_distance.sort_by_key(|&i| key(&ids[i]).distance(&key(&mailbox)));
    let (near, far) = (by_distance[0], by_distance[2]);
    println!("mailbox of node-0: nearest other node-{near}, farthest node-{far}");

    let (t, rt) = stranger();
    let me = t.node_id();
    let letter = |k: &str| Envelope {
        mailbox,
        sender: me,
        idempotency_key: k.as_bytes().to_vec(),
        ttl_ms: 0,
        e2e: false,
        payload: b"for node 0".to_vec(),
    };
    let at = |i: usize| (mesh.nodes[i].quic(), ids[i]);
    let r = ask(&rt, &t, at(far), &MailboxRequest::Send(letter("far")));
    assert_eq!(
        refused(&r),
        Some(Refusal::NotHolder),
        "node-{far}, 4th closest of 4 to the mailbox, answered {r:?}"
    );
    assert_eq!(
        queue_depth(&mesh.nodes[far]),
        0.0,
        "node-{far} kept the copy"
    );
    let r = ask(&rt, &t, at(near), &MailboxRequest::Send(letter("near")));
    assert!(
        matches!(r, (200, Some(MailboxResponse::Stored { duplicate: false }))),
        "node-{near}, 2nd closest to the mailbox, answered {r:?}"
    );
    rt.block_on(t.close());

    // A control, not the fix: through the far node's own gateway the send goes to the
    // holders its walk finds, and the owner receives it.
    let r = send(
        mesh.nodes[far].http(),
        &mailbox,
        "via-far",
        None,
        "",
        "hello",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        queue_depth(&mesh.nodes[far]),
        0.0,
        "node-{far} holds mail it is far from"
    );
    let got = recv(&mesh.nodes[0], "2s");
    assert!(
        got.iter().any(|(_, p)| *p == b64("hello")),
        "node-0 did not receive the message: {got:?}"
    );
}

/// A message in flight to its owner (hidden by a receive) when a repair batch passed it
/// over is pushed to the holder that lacks it once it is visible again. Before, the batch's
/// other messages moved that holder's cursor past it, and it went unpushed until the next
/// full push, five minutes on, one holder short all the while.
#[test]
fn repair_pushes_a_message_it_passed_over_in_flight_once_visible() {
    let (mut mesh, ids) = repairing_mesh();
    let all: Vec<usize> = (0..4).collect();
    mesh.wait_tables_hold(&all, &ids, START).unwrap();
    // The mailbox is node-0's: node-0 holds it, and the node brought down is one of the
    // others (it returns through node-0, every node's bootstrap). Its RF = 3 holders are
    // node-0 and the two others nearest it; the farthest holds copies too while one of
    // those is down (its sends find it among the closest).
    let owner = 0;
    let key = |id: &NodeId| overlay::Key::for_node(id);
    let mut others: Vec<usize> = (1..4).collect();
    others.sort_by_key(|&i| key(&ids[i]).distance(&key(&ids[owner])));
    let (lagging, holder, far) = (others[0], others[1], others[2]);
    println!("holders of node-{owner}'s mail: node-{owner}, node-{lagging} (down), node-{holder}");

    // Down, not paused: a paused process would still read the sends queued for it.
    mesh.nodes[lagging].sigkill().unwrap();
    let r = send(mesh.nodes[far].http(), &ids[owner], "m1", None, "", "first");
    assert_eq!(r.status, 201, "m1 with a holder down: {}", r.body);
    // The owner takes m1: it is in flight (hidden for 30 s) at every holder.
    let got = recv(&mesh.nodes[owner], "2s");
    assert!(got.iter().any(|(_, p)| *p == b64("first")), "{got:?}");
    let taken = Instant::now();
    // m2 from another sender (another share: not held back behind m1).
    let r = send(
        mesh.nodes[holder].http(),
        &ids[owner],
        "m2",
        None,
        "",
        "second",
    );
    assert_eq!(r.status, 201, "m2: {}", r.body);
    mesh.nodes[lagging].restart().unwrap();
    mesh.nodes[lagging].wait_ready(START).unwrap();
    let depth = |i: usize| queue_depth(&mesh.nodes[i]);

    // Repair pushes m2 at once; m1 once its visibility ends (30 s after the receive).
    testing::poll_until(
        "the returned holder to get m2",
        Duration::from_secs(25),
        Duration::from_millis(200),
        || (depth(lagging) >= 1.0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The test means something only if m2 came while m1 was still in flight: a batch with
    // m2 then passed m1 over.
    assert!(
        taken.elapsed() < Duration::from_secs(28) && depth(lagging) == 1.0,
        "node-{lagging} holds {} {:?} after the receive: the case was not reached",
        depth(lagging),
        taken.elapsed()
    );
    testing::poll_until(
        "the returned holder to get m1, passed over in flight",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || (depth(lagging) >= 2.0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}; node-{lagging} holds {}", depth(lagging)));
    println!(
        "node-{lagging} held both {:?} after the receive hid m1",
        taken.elapsed()
    );
}

/// Three open-writes nodes, ready; node 2 is the mailbox owner of the tests below.
fn three_nodes() -> (Mesh, NodeId) {
    let mut mesh = Mesh::start(3, |_, spec| spec.args.push("--open-writes".into())).unwrap();
    mesh.wait_ready(START).unwrap();
    let to = mesh.ids().unwrap()[2];
    (mesh, to)
}

/// Sends `n` messages to `to` through node 0 and waits until all three nodes hold them;
/// returns their ids in order.
fn send_held_everywhere(mesh: &Mesh, to: &NodeId, n: usize) -> Vec<String> {
    let via = mesh.nodes[0].http();
    let mut sent = Vec::new();
    for i in 0..n {
        let r = send(via, to, &format!("k{i}"), None, "", &format!("m{i}"));
        assert_eq!(r.status, 201, "send {i}: {}", r.body);
        sent.push(r.json()["id"].as_str().unwrap().to_string());
    }
    testing::poll_until(
        "every node holds every message",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            (0..3)
                .all(|i| queue_depth(&mesh.nodes[i]) >= n as f64)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("copies missing: {e}"));
    sent
}

/// Stops node `i` and waits for it to exit.
fn stop(mesh: &mut Mesh, i: usize) {
    mesh.nodes[i].sigterm().unwrap();
    mesh.nodes[i]
        .process()
        .wait_exit(Duration::from_secs(10))
        .unwrap();
}

/// A full disk at a mailbox's owner (its mailbox directory on a 4 MiB tmpfs, filled): the
/// owner's ack fails on its own disk with 503 and still reaches the other holders
/// (RELIABILITY.md D17); once the space is freed, the owner's store takes writes again
/// without a restart (D33), and after a restart nothing acknowledged comes back.
#[test]
fn a_full_disk_fails_the_owners_ack_there_only_and_heals_once_freed() {
    if let Some(why) = testing::small_disk::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let (mut mesh, to) = three_nodes();
    let owner = 2;

    // The owner's mailbox directory moves onto a small disk.
    stop(&mut mesh, owner);
    let dir = mesh.nodes[owner].data_dir().join("mailbox");
    let disk = testing::small_disk::SmallDisk::mount_over(&dir, 4 << 20).unwrap();
    mesh.nodes[owner].restart().unwrap();
    mesh.nodes[owner].wait_ready(START).unwrap();

    // 100 messages, held by all three nodes.
    let via = mesh.nodes[0].http();
    let sent = send_held_everywhere(&mesh, &to, 100);

    // The disk fills; acking all 100 writes ~5 KiB to the owner's journal, more than any
    // page it has left.
    let filled = disk.fill().unwrap();
    println!("filled the owner's disk with {filled} bytes");
    let ack_all = |ids: &[String]| {
        curl(&[
            "-X".into(),
            "POST".into(),
            "--data-binary".into(),
            serde_json::json!({ "ids": ids }).to_string(),
            format!("http://{}/mb/ack", mesh.nodes[owner].admin().unwrap()),
        ])
    };
    let r = ack_all(&sent);
    assert_eq!(r.status, 503, "an ack the owner's disk refused: {}", r.body);
    assert_eq!(r.json()["code"], "store_unavailable", "{}", r.body);
    // The client's retry is not told "done" while the owner's removal is still unwritten.
    let r = ack_all(&sent);
    assert_eq!(r.status, 503, "a retry while the disk is full: {}", r.body);
    testing::poll_until(
        "the other holders take the ack",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            (0..2)
                .all(|i| queue_depth(&mesh.nodes[i]) == 0.0)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("the owner's disk stopped the acks at the others: {e}"));
    let failed = || {
        mesh.nodes[owner]
            .metric("mailbox_journals_failed")
            .unwrap()
            .unwrap_or(0.0)
    };
    assert_eq!(failed(), 1.0, "the failed journal is shown");

    // Space again: within a few maintenance rounds the shard takes writes, no restart.
    disk.free().unwrap();
    testing::poll_until(
        "the failed journal is rewritten",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (failed() == 0.0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("the owner's mailbox stayed failed after the disk freed: {e}"));
    let r = send(via, &to, "after", None, "", "after the disk freed");
    assert_eq!(r.status, 201, "{}", r.body);
    let after = r.json()["id"].as_str().unwrap().to_string();
    testing::poll_until(
        "the owner holds the new message",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (queue_depth(&mesh.nodes[owner]) == 1.0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("the owner did not store its copy: {e}"));
    let r = ack_all(std::slice::from_ref(&after));
    assert_eq!(r.status, 200, "{}", r.body);

    // A restart replays what the rewrite made durable: the acks the disk had refused too.
    stop(&mut mesh, owner);
    mesh.nodes[owner].restart().unwrap();
    mesh.nodes[owner].wait_ready(START).unwrap();
    assert_eq!(
        queue_depth(&mesh.nodes[owner]),
        0.0,
        "acknowledged mail came back"
    );
    let again = recv(&mesh.nodes[owner], "1s");
    assert!(again.is_empty(), "delivered again after its ack: {again:?}");
    drop(disk);
}

/// A corrupt byte in the owner's mailbox journal: the node still starts (its objects and
/// other shards are unharmed), keeps the shard's records before the bad one, copies the
/// file aside, and gets the lost copies back from the other holders (its drain at start).
#[test]
fn a_corrupt_mailbox_journal_is_cut_and_refilled_from_the_other_holders() {
    let (mut mesh, to) = three_nodes();
    let owner = 2;
    let sent: BTreeSet<String> = send_held_everywhere(&mesh, &to, 2).into_iter().collect();
    stop(&mut mesh, owner);
    let dir = mesh.nodes[owner].data_dir().join("mailbox");
    let journal = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "journal") && p.metadata().unwrap().len() > 0)
        .expect("the owner's journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[30] ^= 1; // inside the first record's body
    std::fs::write(&journal, &bytes).unwrap();

    mesh.nodes[owner].restart().unwrap();
    mesh.nodes[owner].wait_ready(START).unwrap();
    assert!(
        mesh.nodes[owner]
            .log()
            .contains("a mailbox journal was corrupt"),
        "the cut is logged"
    );
    assert_eq!(
        mesh.nodes[owner]
            .metric("mailbox_journals_salvaged_total")
            .unwrap(),
        Some(1.0)
    );
    let copies: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(copies.len(), 1, "the file as found is kept: {copies:?}");
    testing::poll_until(
        "the owner's copies come back",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (queue_depth(&mesh.nodes[owner]) >= 2.0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("the lost copies did not come back: {e}"));
    let got: BTreeSet<String> = recv(&mesh.nodes[owner], "2s")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, sent, "both messages, none lost");
}
