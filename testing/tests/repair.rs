//! `macronode repair` and `macronode status` against real node processes, through the
//! admin plane: an object written to a 2-node mesh (RF 3) is short a copy once a third
//! node joins; `macronode repair ID` has the RF closest prove or receive it, lists the
//! holders, and the newcomer holds the object's file afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use testing::chaos::client;
use testing::node::macronode_command;
use testing::{Mesh, NodeProcess, NodeSpec};

const START: Duration = Duration::from_secs(20);

fn macronode(args: &[&str], data_dir: &Path) -> Output {
    let mut cmd = macronode_command().unwrap();
    cmd.args(args).arg("--data-dir").arg(data_dir);
    cmd.output().unwrap()
}

fn object_file(node: &NodeProcess, id: &str) -> std::path::PathBuf {
    let hex = id.strip_prefix("b3:").unwrap();
    node.data_dir().join("objects").join(&hex[..2]).join(hex)
}

#[test]
fn repair_restores_the_copies_and_lists_the_holders() {
    let open = |_: usize, s: &mut NodeSpec| s.args = vec!["--open-writes".into()];
    let mut mesh = Mesh::start(2, open).unwrap();
    mesh.wait_ready(START).unwrap();
    let put = client::put(
        mesh.nodes[0].http(),
        None,
        b"an object the newcomer never had",
        Duration::from_secs(10),
    );
    let client::Outcome::Answered(a) = put.outcome else {
        panic!("PUT: {}", put.outcome.describe())
    };
    assert_eq!(a.status, 201, "{}", a.text());
    let id = a.json()["id"].as_str().unwrap().to_string();

    let mut spec = NodeSpec::new("newcomer").bootstrap(mesh.nodes[0].quic().to_string());
    open(2, &mut spec);
    let mut newcomer = NodeProcess::start(spec).unwrap();
    newcomer.wait_ready(START).unwrap();
    let newcomer_id = newcomer.node_id().unwrap().to_string();
    let ids = mesh.ids().unwrap();
    let dir0 = mesh.nodes[0].data_dir();

    let out = macronode(&["repair", &id], &dir0);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(&format!("{id}: 3 of 3 copies")), "{said}");
    for holder in [&newcomer_id, &ids[1].to_string()] {
        assert!(
            said.contains(holder.as_str()),
            "{holder} not listed: {said}"
        );
    }
    println!("repair said:\n{said}");
    assert!(object_file(&newcomer, &id).is_file(), "newcomer lacks {id}");

    let out = macronode(&["repair", "--all"], &dir0);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains(&format!("{id}: 3 of 3 copies")), "{said}");

    // A node without the object says so, and fails.
    let missing = format!("b3:{}", "00".repeat(32));
    let out = macronode(&["repair", &missing], &newcomer.data_dir());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no copy"),
        "{out:?}"
    );

    let out = macronode(&["status"], &dir0);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains(&ids[0].to_string()), "{said}");
    assert!(said.contains("peers     2 connected"), "{said}");
}
