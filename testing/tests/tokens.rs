//! Tokens an operator manages, with real node processes: `token mint` prints an id,
//! `token revoke ID` makes the running node refuse the token at once (and after a restart),
//! and `token rotate --grace S` keeps the old root's tokens working for S seconds only
//! (judged by their own caveats meanwhile).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use testing::chaos::client;
use testing::node::macronode_command;
use testing::{NodeProcess, NodeSpec};

const START: Duration = Duration::from_secs(10);
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `macronode args...`, bounded; it must succeed.
fn macronode(args: &[&str], data_dir: &Path) -> Output {
    let mut cmd = macronode_command().unwrap();
    cmd.args(args).arg("--data-dir").arg(data_dir);
    let started = Instant::now();
    let out = cmd.output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(out.status.success(), "macronode {args:?}: {out:?}");
    out
}

/// `token mint`: (token, id).
fn mint(data_dir: &Path) -> (String, String) {
    mint_with(data_dir, &[])
}

/// `token mint` with more arguments (caveats): (token, id).
fn mint_with(data_dir: &Path, more: &[&str]) -> (String, String) {
    let out = macronode(&[&["token", "mint"], more].concat(), data_dir);
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("token id: "))
        .unwrap_or_else(|| panic!("no id printed: {stderr}"))
        .trim()
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    (token, id)
}

/// A PUT of `body` with `token`: (status, body text).
fn put(node: &NodeProcess, token: &str, body: &[u8]) -> (u16, String) {
    match client::put(node.http(), Some(token), body, PUT_TIMEOUT).outcome {
        client::Outcome::Answered(a) => (a.status, a.text()),
        other => panic!("PUT: {}", other.describe()),
    }
}

#[test]
fn a_revoked_token_is_refused_at_once_and_after_a_restart() {
    let mut node = NodeProcess::start(NodeSpec::new("revoke")).unwrap();
    node.wait_ready(START).unwrap();
    let dir = node.data_dir();
    let (token, id) = mint(&dir);
    let (other, _) = mint(&dir);
    assert_eq!(put(&node, &token, b"before").0, 201);

    let out = macronode(&["token", "revoke", &id], &dir);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("applied"), "{said}");
    let (status, body) = put(&node, &token, b"after");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked") && body.contains(&id), "{body}");
    assert_eq!(put(&node, &other, b"another token").0, 201);

    node.restart().unwrap();
    node.wait_ready(START).unwrap();
    let (status, body) = put(&node, &token, b"after a restart");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
    assert_eq!(put(&node, &other, b"another token again").0, 201);
}

#[test]
fn a_rotated_root_keeps_old_tokens_for_the_grace_only() {
    let mut node = NodeProcess::start(NodeSpec::new("rotate")).unwrap();
    node.wait_ready(START).unwrap();
    let dir = node.data_dir();
    let id_before = node.node_id().unwrap();
    let (old, _) = mint(&dir);
    let (old_small, _) = mint_with(&dir, &["--max-bytes", "4"]);
    assert_eq!(put(&node, &old, b"old root").0, 201);

    let grace = 3;
    let rotated = Instant::now();
    let out = macronode(&["token", "rotate", "--grace", &grace.to_string()], &dir);
    // The grace ends `grace` seconds (whole ones) after the command read the clock: between
    // `rotated` and `applied`.
    let applied = Instant::now();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("applied"), "{said}");
    let (new, _) = mint(&dir);
    assert_ne!(new, old);
    assert_eq!(put(&node, &new, b"new root").0, 201);
    assert_eq!(put(&node, &old, b"old root in its grace").0, 201);
    // In its grace an old token is judged by its own caveats (D24), not refused as a key
    // that does not verify.
    let (status, body) = put(&node, &old_small, b"more than four bytes");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("at most 4 bytes"), "{body}");
    assert!(
        rotated.elapsed() < Duration::from_secs(grace - 1),
        "too slow to test"
    );

    // Past the grace (whole seconds, so one more to be sure), counted from the latest the
    // command could have read the clock: a slow start of the command must not leave the
    // old root still in its grace here.
    std::thread::sleep(Duration::from_secs(grace + 1).saturating_sub(applied.elapsed()));
    let (status, body) = put(&node, &old, b"old root past its grace");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("rotated"), "{body}");
    assert_eq!(put(&node, &new, b"new root still").0, 201);

    // The root is apart from the identity: rotating it kept the node id.
    node.restart().unwrap();
    node.wait_ready(START).unwrap();
    assert_eq!(node.id_on_disk().unwrap(), id_before);
    assert_eq!(put(&node, &new, b"new root after a restart").0, 201);
    assert_eq!(put(&node, &old, b"old root after a restart").0, 401);
}
