//! The saved contacts file (`data_dir/contacts.dat`, RELIABILITY.md D9) with real nodes in
//! one process: a node writes its table's contacts, and a memory-only node (`--amnesia`)
//! writes none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use node::dht::contacts::{self, CONTACTS_FILE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_saves_its_contacts_and_an_amnesiac_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_with(dir.path(), 2, |_| {}).await;
    let ids: Vec<_> = nodes.iter().map(|n| n.ctx.transport.node_id()).collect();
    // The first save comes within a poll of the table's first peer. (A node whose only
    // peer stopped before that, and which stops with an empty table, writes nothing: an
    // empty table never overwrites the file.)
    tokio::time::sleep(contacts::FIRST_SAVE_POLL * 2).await;
    for n in nodes {
        n.shutdown().await;
    }
    for (i, other) in [(0, ids[1]), (1, ids[0])] {
        let file = dir.path().join(format!("n{i}")).join(CONTACTS_FILE);
        let saved = contacts::load(&file).unwrap().expect("a contacts file");
        assert_eq!(
            saved.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![other],
            "node {i}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_with(dir.path(), 2, |c| c.amnesia = true).await;
    // Past the first save's poll, then a graceful stop: neither may write.
    tokio::time::sleep(contacts::FIRST_SAVE_POLL * 2).await;
    for n in nodes {
        n.shutdown().await;
    }
    for i in 0..2 {
        let file = dir.path().join(format!("n{i}")).join(CONTACTS_FILE);
        assert!(!file.exists(), "{} written with --amnesia", file.display());
    }
}
