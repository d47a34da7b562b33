//! Meshes of real node processes on loopback: joining through one bootstrap peer, exact
//! lookups, refusing a bootstrap peer that proves another key, and a node killed without
//! warning being evicted and then rejoining with the same key.
//!
//! Each test prints its ports and seeds (through the harness) so a failure can be rerun by
//! hand: `MESH_SEED=<printed seed> cargo test -p testing --test mesh` replays the lookup keys.
//! Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use node::dht::NetPeer;
use node::dht::contacts;
use overlay::Key;
use testing::{Mesh, NodeProcess, NodeSpec, expected_closest, poll_until, seed};
use wire::NodeId;

/// k of the nodes (the default); larger than every mesh here, so "the k closest" is
/// "every other node".
const K: usize = 20;

/// A key from a seed, printed so a failing lookup can be replayed.
fn key_from_seed(seed: u64) -> Key {
    println!("lookup key seed {seed}");
    let mut k = [0u8; 32];
    let mut x = seed | 1;
    for b in &mut k {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Key(k)
}

#[test]
fn ten_nodes_join_through_one_peer_and_lookups_are_exact() {
    let started = Instant::now();
    let mut mesh = Mesh::start(10, |_, _| {}).unwrap();
    let took = mesh.wait_ready(Duration::from_secs(20)).unwrap();
    println!(
        "all 10 ready after {:?} (per node {took:?})",
        started.elapsed()
    );

    let ids = mesh.ids().unwrap();
    for node in &mesh.nodes {
        let s = node.status().unwrap();
        assert!(s["peers"].as_u64().unwrap() > 0, "{}: {s}", node.name());
        assert!(
            s["routing_table_size"].as_u64().unwrap() > 0,
            "{}: {s}",
            node.name()
        );
        assert_eq!(s["ready"], true, "{}: {s}", node.name());
    }

    let seed = seed::seed(seed::MESH_SEED, "ten_nodes_join");
    // One key per node, and every node's own key looked up from elsewhere.
    for from in 0..mesh.nodes.len() {
        let key = key_from_seed(seed.wrapping_add(from as u64));
        let node = &mesh.nodes[from];
        let want = expected_closest(&key, &ids, &ids[from], K);
        assert_eq!(want.len(), 9);
        // Nodes that joined moments ago may not know every other node yet: the iterative
        // lookup must converge on the true set regardless.
        let got = node.lookup(&key).unwrap();
        assert_eq!(
            got.closest,
            want,
            "lookup from {} for {key:?}: {got:?}",
            node.name()
        );
        assert!(got.hops <= 5, "{got:?}");
        let of_node = Key::for_node(&ids[(from + 1) % ids.len()]);
        let got = node.lookup(&of_node).unwrap();
        assert_eq!(got.closest, expected_closest(&of_node, &ids, &ids[from], K));
    }
}

#[test]
fn a_bootstrap_peer_with_another_key_is_refused() {
    let mut a = NodeProcess::start(NodeSpec::new("a")).unwrap();
    a.wait_healthy(Duration::from_secs(10)).unwrap();
    let a_id = a.node_id().unwrap();
    // A well-formed id that is not a's.
    let mut wrong = a_id.0;
    wrong[0] ^= 0xff;
    let wrong = NodeId(wrong);
    let mut b =
        NodeProcess::start(NodeSpec::new("b").bootstrap(format!("{wrong}@{}", a.quic()))).unwrap();
    b.wait_healthy(Duration::from_secs(10)).unwrap();

    let mismatch = format!("dialed {wrong} but the peer is {a_id}");
    poll_until(
        "b to log the id mismatch",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || b.log().contains(&mismatch).then_some(()),
    )
    .unwrap();
    // b stays unready, missing peers, for as long as we watch (several bootstrap retries).
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(2) {
        let missing = b.readiness().unwrap().expect("b must not be ready");
        assert!(missing.iter().any(|m| m == "peers"), "{missing:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(a.routing_ids().unwrap().is_empty());
    assert_eq!(b.status().unwrap()["peers"], 0);

    // The same node, restarted with the right id, joins.
    let b_id = b.node_id().unwrap();
    b.spec_mut().bootstrap = vec![format!("{a_id}@{}", a.quic())];
    b.restart().unwrap();
    b.wait_ready(Duration::from_secs(10)).unwrap();
    a.wait_ready(Duration::from_secs(10)).unwrap();
    assert_eq!(b.status().unwrap()["node_id"], b_id.to_string());
    assert_eq!(a.routing_ids().unwrap(), vec![b_id]);
    assert_eq!(b.routing_ids().unwrap(), vec![a_id]);
}

#[test]
fn a_killed_node_is_evicted_and_rejoins_with_the_same_id() {
    let every = Duration::from_millis(500);
    let mut mesh = Mesh::start(4, |_, spec| *spec = spec.clone().fast_liveness(every)).unwrap();
    mesh.wait_ready(Duration::from_secs(20)).unwrap();
    let ids = mesh.ids().unwrap();
    let others = [0usize, 1, 3];
    // Generous: strangers enter a table only once they answered a request of ours, and
    // with every test of this file sharing two cores those requests can time out first.
    mesh.wait_tables_hold(&[0, 1, 2, 3], &ids, Duration::from_secs(30))
        .unwrap();

    let x = 2;
    let x_id = ids[x];
    let before = mesh.nodes[x].id_on_disk().unwrap();
    assert_eq!(before, x_id);
    mesh.nodes[x].sigkill().unwrap();
    let killed = Instant::now();
    poll_until(
        "the killed node to leave every routing table",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            others
                .iter()
                .all(|&i| !mesh.nodes[i].routing_ids().unwrap().contains(&x_id))
                .then_some(())
        },
    )
    .unwrap();
    println!("evicted everywhere {:?} after SIGKILL", killed.elapsed());

    assert_eq!(mesh.nodes[x].id_on_disk().unwrap(), before);
    mesh.nodes[x].restart().unwrap();
    let back = Instant::now();
    mesh.nodes[x].wait_ready(Duration::from_secs(10)).unwrap();
    assert_eq!(mesh.nodes[x].status().unwrap()["node_id"], x_id.to_string());
    mesh.wait_tables_hold(&others, &[x_id], Duration::from_secs(20))
        .unwrap();
    println!("back in every table {:?} after restart", back.elapsed());
    // And it stays there: the others' liveness probes (every 500 ms) reach the new process.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        for &i in &others {
            assert!(
                mesh.nodes[i].routing_ids().unwrap().contains(&x_id),
                "{} dropped the restarted node again after {:?}",
                mesh.nodes[i].name(),
                back.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let key = Key::for_node(&x_id);
    let asked = Instant::now();
    let got = mesh.nodes[0].lookup(&key).unwrap();
    println!(
        "lookup of the restarted node's key: {got:?} in {:?}",
        asked.elapsed()
    );
    assert_eq!(got.closest, expected_closest(&key, &ids, &ids[0], K));
}

/// D9 (RELIABILITY.md, fixed): the seed every other node joined through, killed and
/// restarted without a bootstrap peer, rejoins through the contacts it saved in its data
/// directory; before the fix it had nobody to return to, and the others found it again only
/// at their next bootstrap check (10 min).
#[test]
fn d9_a_restarted_seed_is_found_again() {
    let every = Duration::from_millis(500);
    let mut mesh = Mesh::start(4, |_, spec| *spec = spec.clone().fast_liveness(every)).unwrap();
    mesh.wait_ready(Duration::from_secs(20)).unwrap();
    let ids = mesh.ids().unwrap();
    mesh.wait_tables_hold(&[0, 1, 2, 3], &ids, Duration::from_secs(30))
        .unwrap();
    // The seed saves its contacts as soon as its table holds a peer: a SIGKILL right after
    // finds them on disk.
    let file = mesh.nodes[0].data_dir().join(contacts::CONTACTS_FILE);
    poll_until(
        "the seed to save its contacts",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let saved = contacts::load(&file).ok()??;
            saved.iter().any(|p| ids[1..].contains(&p.id)).then_some(())
        },
    )
    .unwrap();
    mesh.nodes[0].sigkill().unwrap();
    poll_until(
        "the seed to leave every routing table",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            (1..4)
                .all(|i| !mesh.nodes[i].routing_ids().unwrap().contains(&ids[0]))
                .then_some(())
        },
    )
    .unwrap();
    mesh.nodes[0].restart().unwrap();
    let back = Instant::now();
    mesh.wait_tables_hold(&[1, 2, 3], &[ids[0]], Duration::from_secs(30))
        .unwrap();
    println!(
        "the restarted seed is in every table {:?} after restart",
        back.elapsed()
    );
    mesh.wait_tables_hold(&[0], &ids, Duration::from_secs(10))
        .unwrap();
}

/// Two nodes, ready, each in the other's table.
fn two_joined_nodes() -> (Mesh, Vec<NodeId>) {
    let mut mesh = Mesh::start(2, |_, _| {}).unwrap();
    mesh.wait_ready(Duration::from_secs(20)).unwrap();
    let ids = mesh.ids().unwrap();
    mesh.wait_tables_hold(&[0, 1], &ids, Duration::from_secs(30))
        .unwrap();
    (mesh, ids)
}

/// A graceful stop, waited for: the node has said goodbye and saved its contacts.
fn stop(node: &mut NodeProcess) {
    node.sigterm().unwrap();
    node.process().wait_exit(Duration::from_secs(10)).unwrap();
}

/// A saved contact is dialed with the id it was saved with: a node at that address proving
/// another key is refused, as a `--bootstrap ID@HOST:PORT` would be; the right id joins.
#[test]
fn a_saved_contact_must_prove_its_id() {
    let (mut mesh, ids) = two_joined_nodes();
    let seed_addr = mesh.nodes[0].quic();
    let file = mesh.nodes[1].data_dir().join(contacts::CONTACTS_FILE);
    // Node 1 now depends on its saved contacts alone.
    stop(&mut mesh.nodes[1]);
    mesh.nodes[1].spec_mut().bootstrap.clear();
    let impostor = NodeId([0x5a; 32]);
    contacts::save(&file, &[NetPeer::new(impostor, seed_addr)]).unwrap();
    mesh.nodes[1].restart().unwrap();
    mesh.nodes[1].wait_ready(Duration::from_secs(10)).unwrap();
    // Long enough for a dial and a join on loopback (both take milliseconds).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(mesh.nodes[1].routing_ids().unwrap(), Vec::<NodeId>::new());
    assert!(!mesh.nodes[0].routing_ids().unwrap().contains(&ids[1]));
    assert!(
        mesh.nodes[1]
            .log()
            .contains("dialed saved contacts saved=1 reached=0"),
        "the impostor's address was not dialed, or was reached"
    );

    stop(&mut mesh.nodes[1]);
    contacts::save(&file, &[NetPeer::new(ids[0], seed_addr)]).unwrap();
    mesh.nodes[1].restart().unwrap();
    mesh.nodes[1].wait_ready(Duration::from_secs(10)).unwrap();
    mesh.wait_tables_hold(&[0, 1], &ids, Duration::from_secs(20))
        .unwrap();
}

/// A saved contacts file is untrusted input: torn, oversized, of another version or not
/// one at all, it is refused with a warning and a count, and the node starts, joins through
/// its bootstrap peer and answers `/readyz` 200 as if there were no file. A graceful stop
/// leaves a valid file holding the peer.
#[test]
fn a_node_with_a_garbage_contacts_file_still_starts() {
    let (mut mesh, ids) = two_joined_nodes();
    let file = mesh.nodes[1].data_dir().join(contacts::CONTACTS_FILE);
    stop(&mut mesh.nodes[1]);
    let good = std::fs::read(&file).unwrap();
    let saved = contacts::decode(&good).unwrap();
    assert!(saved.iter().any(|p| p.id == ids[0]), "{saved:?}");

    let mut wrong_version = good.clone();
    wrong_version[4] = 9;
    let cases: [(&str, Vec<u8>); 5] = [
        ("truncated", good[..good.len() - 7].to_vec()),
        ("too_large", vec![0u8; contacts::FILE_MAX as usize + 1]),
        ("bad_version", wrong_version),
        ("bad_magic", b"not a contacts file at all".to_vec()),
        ("checksum", {
            let mut b = good.clone();
            b[20] ^= 0x40;
            b
        }),
    ];
    for (reason, bytes) in cases {
        std::fs::write(&file, &bytes).unwrap();
        mesh.nodes[1].restart().unwrap();
        mesh.nodes[1].wait_ready(Duration::from_secs(10)).unwrap();
        let sample = format!("contacts_file_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(
            mesh.nodes[1].metric(&sample).unwrap(),
            Some(1.0),
            "{sample}"
        );
        mesh.wait_tables_hold(&[0, 1], &ids, Duration::from_secs(20))
            .unwrap();
        println!("{reason}: refused, and the node joined through its bootstrap peer");
        stop(&mut mesh.nodes[1]);
        // The graceful stop replaced the refused file with the table's contacts.
        let after = contacts::load(&file).unwrap().unwrap();
        assert!(after.iter().any(|p| p.id == ids[0]), "{after:?}");
    }
    assert!(
        mesh.nodes[1]
            .log()
            .contains("ignoring the saved contacts file")
    );
}

#[test]
fn a_node_that_shuts_down_leaves_the_others_tables_at_once() {
    // Default liveness (60 s): only the goodbye on shutdown can explain a prompt removal.
    let mut mesh = Mesh::start(3, |_, _| {}).unwrap();
    mesh.wait_ready(Duration::from_secs(20)).unwrap();
    let ids = mesh.ids().unwrap();
    mesh.wait_tables_hold(&[0, 1, 2], &ids, Duration::from_secs(30))
        .unwrap();
    let x_id = ids[2];
    mesh.nodes[2].sigterm().unwrap();
    let stopped = Instant::now();
    poll_until(
        "the stopped node to leave the other tables",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            [0usize, 1]
                .iter()
                .all(|&i| !mesh.nodes[i].routing_ids().unwrap().contains(&x_id))
                .then_some(())
        },
    )
    .unwrap();
    println!("removed everywhere {:?} after SIGTERM", stopped.elapsed());
}
