//! Mailbox quotas carried by capability caveats (issue 17), with real node processes: on
//! one gateway every public client's messages leave with the gateway's node id as sender,
//! so the holders count them per principal (the token's tenant, else the token) and not
//! as one sender: one client filling its share must not starve another. A token's
//! `--mail-messages-max` caps what its principal holds in one mailbox, and holders other
//! than the gateway enforce it. A holder repaired after missing the sends counts each
//! copy in its principal's share, so copies admitted elsewhere are not refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use node::{Identity, Transport};
use overlay::Key;
use testing::curl::{Reply, curl};
use testing::node::macronode_command;
use testing::{Mesh, NodeProcess, NodeSpec};
use wire::NodeId;
use wire::mailbox::{Envelope, MailboxRequest, MailboxResponse, Refusal};

const START: Duration = Duration::from_secs(20);

/// `POST http://{addr}/mb/{to}` with `body`, an idempotency key and a token.
fn send(addr: SocketAddr, to: &NodeId, key: &str, token: &str, body: &str) -> Reply {
    curl(&[
        "-X".into(),
        "POST".into(),
        "-H".into(),
        format!("Idempotency-Key: {key}"),
        "-H".into(),
        format!("Authorization: Bearer {token}"),
        "--data-binary".into(),
        body.to_string(),
        format!("http://{addr}/mb/{to}"),
    ])
}

/// The node's own mail through its admin plane: ids in order.
fn recv(node: &NodeProcess, wait: &str) -> Vec<String> {
    let r = curl(&[format!("http://{}/mb?wait={wait}", node.admin().unwrap())]);
    assert_eq!(r.status, 200, "GET /mb: {}", r.body);
    r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Acknowledges `ids` through the admin plane.
fn ack_all(node: &NodeProcess, ids: &[String]) {
    let r = curl(&[
        "-X".into(),
        "POST".into(),
        "--data-binary".into(),
        serde_json::json!({ "ids": ids }).to_string(),
        format!("http://{}/mb/ack", node.admin().unwrap()),
    ]);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `token mint --methods send` with these extra flags, under `data_dir`'s node key.
fn mint(data_dir: &std::path::Path, flags: &[&str]) -> String {
    let out = macronode_command()
        .unwrap()
        .args(["token", "mint", "--methods", "send"])
        .args(flags)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "token mint: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The 429 of a quota: a JSON reason naming the sender quota and a `Retry-After`.
fn assert_over_quota(r: &Reply) {
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["code"], "quota_exceeded", "{}", r.body);
    assert_eq!(r.json()["reason"], "mailbox_sender_quota", "{}", r.body);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}

#[test]
fn a_tokens_mail_quota_binds_it_alone_on_a_shared_gateway() {
    // The holder's own sender share is 5 messages: before principals, two tokens on one
    // gateway shared it.
    let mut spec = NodeSpec::new("mq-lone");
    spec.args = vec!["--mailbox-sender-count-max".into(), "5".into()];
    let mut node = NodeProcess::start(spec).unwrap();
    node.wait_ready(START).unwrap();
    let me = node.node_id().unwrap();
    let http = node.http();
    let a = mint(&node.data_dir(), &["--mail-messages-max", "3"]);
    let b = mint(&node.data_dir(), &[]);

    for i in 0..3 {
        let r = send(http, &me, &format!("a{i}"), &a, "from a");
        assert_eq!(r.status, 201, "a{i}: {}", r.body);
    }
    assert_over_quota(&send(http, &me, "a3", &a, "one too many"));
    // B is another principal: A's messages do not count against it, and B's share is the
    // holder's sender quota (5), whole.
    for i in 0..5 {
        let r = send(http, &me, &format!("b{i}"), &b, "from b");
        assert_eq!(r.status, 201, "b{i}: {}", r.body);
    }
    assert_over_quota(&send(http, &me, "b5", &b, "one too many"));

    // Acks release A's share.
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(recv(&node, "1s"));
        if got.len() >= 8 {
            break;
        }
    }
    assert_eq!(got.len(), 8, "{got:?}");
    ack_all(&node, &got);
    let r = send(http, &me, "a3", &a, "fits now");
    assert_eq!(r.status, 201, "{}", r.body);
}

/// A stranger's key for OAP/1.
fn stranger() -> (Transport, tokio::runtime::Runtime) {
    testing::stranger::stranger([7; 32]).unwrap()
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

#[test]
fn remote_holders_enforce_a_tokens_mail_quota() {
    let mut mesh = Mesh::start(4, |_, spec| {
        *spec = std::mem::take(spec).fast_liveness(Duration::from_millis(500));
    })
    .unwrap();
    mesh.wait_ready(START).unwrap();
    let ids = mesh.ids().unwrap();
    mesh.wait_tables_hold(&[0, 1, 2, 3], &ids, Duration::from_secs(30))
        .unwrap();
    let owner = 3;
    let to = ids[owner];
    // RF = 3 of 4 nodes: the one farthest from the mailbox's key holds none of it; it is
    // the gateway, so every check is made by a remote holder.
    let key = Key::for_node(&to);
    let gateway = (0..4)
        .max_by_key(|&i| Key::for_node(&ids[i]).distance(&key))
        .unwrap();
    assert_ne!(gateway, owner);
    let via = mesh.nodes[gateway].http();
    let a = mint(
        &mesh.nodes[gateway].data_dir(),
        &["--mail-messages-max", "2"],
    );
    let b = mint(&mesh.nodes[gateway].data_dir(), &[]);
    for i in 0..2 {
        let r = send(via, &to, &format!("a{i}"), &a, "from a");
        assert_eq!(r.status, 201, "a{i}: {}", r.body);
    }
    assert_over_quota(&send(via, &to, "a2", &a, "one too many"));
    let r = send(via, &to, "b0", &b, "from b");
    assert_eq!(r.status, 201, "{}", r.body);
    let held: f64 = (0..4)
        .filter(|&i| i != gateway)
        .map(|i| {
            mesh.nodes[i]
                .metric("mailbox_queue_depth")
                .unwrap()
                .unwrap_or(0.0)
        })
        .sum();
    assert!(held >= 6.0, "3 messages on at least 2 holders: {held}");
    assert_eq!(
        mesh.nodes[gateway]
            .metric("mailbox_queue_depth")
            .unwrap()
            .unwrap_or(0.0),
        0.0,
        "the gateway holds none"
    );

    // Over OAP/1: a holder counts a principal's messages per the limits the request
    // carries, and another principal of the same sender is not affected.
    let holder = (0..4).find(|&i| i != gateway).unwrap();
    let at = (mesh.nodes[holder].quic(), ids[holder]);
    let (t, rt) = stranger();
    let me = Identity::from_seed([7; 32]).unwrap().node_id();
    let send_for = |k: &str, principal: u8| MailboxRequest::SendFor {
        message: Envelope {
            mailbox: to,
            sender: me,
            idempotency_key: k.as_bytes().to_vec(),
            ttl_ms: 0,
            e2e: false,
            payload: b"direct".to_vec(),
        },
        principal: [principal; 32],
        messages_max: 1,
        bytes_max: 1 << 20,
    };
    let stored = |a: &(u16, Option<MailboxResponse>)| {
        matches!(a, (200, Some(MailboxResponse::Stored { .. })))
    };
    assert!(stored(&ask(&rt, &t, at, &send_for("p1", 1))));
    let over = ask(&rt, &t, at, &send_for("p1b", 1));
    assert!(
        matches!(
            over,
            (
                429,
                Some(MailboxResponse::Refused {
                    reason: Refusal::SenderQuota,
                    ..
                })
            )
        ),
        "{over:?}"
    );
    assert!(stored(&ask(&rt, &t, at, &send_for("p2", 2))));
}

fn queue_depth(node: &NodeProcess) -> f64 {
    node.metric("mailbox_queue_depth").unwrap().unwrap_or(0.0)
}

#[test]
fn a_repaired_copy_keeps_its_principal() {
    // Every holder lets one sender (or one principal) hold 3 messages per mailbox, and
    // repairs every 300 ms.
    let mut mesh = Mesh::start(4, |_, spec| {
        *spec = std::mem::take(spec).fast_liveness(Duration::from_millis(500));
        spec.args.extend(
            [
                "--mailbox-sender-count-max",
                "3",
                "--mailbox-repair-ms",
                "300",
            ]
            .map(String::from),
        );
    })
    .unwrap();
    mesh.wait_ready(START).unwrap();
    let ids = mesh.ids().unwrap();
    mesh.wait_tables_hold(&[0, 1, 2, 3], &ids, Duration::from_secs(30))
        .unwrap();
    let owner = 3;
    let to = ids[owner];
    let key = Key::for_node(&to);
    let mut by_distance: Vec<usize> = (0..4).collect();
    by_distance.sort_by_key(|&i| Key::for_node(&ids[i]).distance(&key));
    let gateway = by_distance[3];
    // Not node 0: the others joined through it and it through none, so before D9 was fixed
    // (RELIABILITY.md) it waited, restarted, for their bootstrap check (10 min) to be found
    // again; it now rejoins through its saved contacts, but this test is about quotas.
    let victim = by_distance[..3]
        .iter()
        .copied()
        .find(|&i| i != owner && i != 0)
        .unwrap();
    println!("gateway node {gateway}, missing holder node {victim}");

    // A holder is down while two clients of the gateway each fill their share (3).
    mesh.nodes[victim].sigkill().unwrap();
    let via = mesh.nodes[gateway].http();
    let a = mint(&mesh.nodes[gateway].data_dir(), &[]);
    let b = mint(&mesh.nodes[gateway].data_dir(), &[]);
    for (name, token) in [("a", &a), ("b", &b)] {
        for i in 0..3 {
            let r = send(via, &to, &format!("{name}{i}"), token, "copy me");
            assert_eq!(r.status, 201, "{name}{i}: {}", r.body);
        }
    }

    // Back, it gets all six by repair: each copy in its principal's share. Counted as
    // the gateway's own (3), three would be refused.
    mesh.nodes[victim].restart().unwrap();
    mesh.nodes[victim].wait_ready(START).unwrap();
    testing::poll_until(
        "the returned holder is repaired",
        Duration::from_secs(40),
        Duration::from_millis(300),
        || (queue_depth(&mesh.nodes[victim]) >= 6.0).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "the returned holder holds {} of 6: {e}",
            queue_depth(&mesh.nodes[victim])
        )
    });
}
