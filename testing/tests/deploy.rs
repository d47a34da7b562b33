//! `deploy/macronode.service`, the systemd unit an operator installs: it keeps the
//! sandboxing it promises, and its `ExecStart` line, with its `Environment=` values and a
//! state directory substituted as systemd would, starts a real node that answers `/readyz`
//! and exits cleanly on the unit's `KillSignal` within `TimeoutStopSec`. When the host has
//! `systemd-analyze`, the unit also passes `systemd-analyze verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use testing::ports::{self, Proto};
use testing::{ChildProc, http, poll_until};

const UNIT: &str = include_str!("../../deploy/macronode.service");

/// `Key=value` lines of the unit (the last value of a key wins, `Environment` collected).
fn parse(unit: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut keys = BTreeMap::new();
    let mut env = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap();
        if k == "Environment" {
            let (ek, ev) = v.split_once('=').unwrap();
            env.insert(ek.to_string(), ev.to_string());
        } else {
            keys.insert(k.to_string(), v.to_string());
        }
    }
    (keys, env)
}

#[test]
fn the_systemd_unit_is_sandboxed_and_its_command_runs_a_node() {
    let (keys, mut env) = parse(UNIT);
    for (k, v) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "macronode"),
        ("NoNewPrivileges", "yes"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(keys.get(k).map(String::as_str), Some(v), "{k}");
    }
    let nofile: u64 = keys["LimitNOFILE"].parse().unwrap();
    assert!(
        nofile >= 4096,
        "LimitNOFILE {nofile}: below the gateway's connection cap"
    );
    let stop: u64 = keys["TimeoutStopSec"].parse().unwrap();

    // What systemd would run, on free loopback ports and a scratch state directory.
    let state = tempfile::tempdir().unwrap();
    let http_addr = ports::free_addr(Proto::Tcp).unwrap();
    env.insert("STATE_DIRECTORY".into(), state.path().display().to_string());
    env.insert("MACRONODE_HTTP_ADDR".into(), http_addr.to_string());
    env.insert(
        "MACRONODE_QUIC".into(),
        ports::free_addr(Proto::Udp).unwrap().to_string(),
    );
    let line = &keys["ExecStart"];
    let mut words = line.split_whitespace().map(|w| {
        let mut w = w.to_string();
        for (k, v) in &env {
            w = w.replace(&format!("${{{k}}}"), v);
        }
        assert!(!w.contains("${"), "unset variable in {line:?}");
        w
    });
    assert_eq!(words.next().as_deref(), Some("/usr/local/bin/macronode"));
    let mut cmd = Command::new(testing::binary::macronode().unwrap());
    cmd.args(words);
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("MACRONODE_")) {
        cmd.env(k, v);
    }
    let mut node = ChildProc::spawn("unit", cmd, state.path()).unwrap();
    poll_until(
        "the unit's node to answer /readyz",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || {
            http::get(http_addr, "/readyz", Duration::from_secs(2))
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .unwrap();
    assert!(
        state.path().join("node.key").exists(),
        "state not under STATE_DIRECTORY"
    );
    node.sigterm().unwrap();
    let status = node.wait_exit(Duration::from_secs(stop)).unwrap();
    assert!(status.success(), "exit on SIGTERM: {status:?}");

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("macronode.service");
        std::fs::write(&unit, UNIT).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        // The binary is not installed on a build host; everything else must verify.
        let rest: Vec<&str> = said
            .lines()
            .filter(|l| !l.contains("/usr/local/bin/macronode") && !l.trim().is_empty())
            .collect();
        assert!(rest.is_empty(), "systemd-analyze verify: {said}");
    }
}
