//! The replication planner on the in-memory network: objects converge to their RF closest
//! nodes, and back to RF closest live nodes after 20% of nodes vanish and tables evict them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use overlay::testnet::TestNet;
use overlay::{
    Config, FailureCause, Key, PlanEvent, Planner, ReplicationConfig, TransferFault,
    TransferOutcome,
};

const SEED: u64 = 0x5eed_0007;

struct Cluster {
    net: TestNet,
    planners: Vec<Planner<overlay::testnet::TestPeer>>,
    stores: Vec<BTreeSet<Key>>,
    /// Transfers that sent bytes.
    pushes: u64,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        println!("seed = {SEED:#x}, nodes = {n}");
        let config = Config {
            liveness_interval: Some(Duration::from_secs(10)),
            ..Config::default()
        };
        let mut net = TestNet::new(n, config, Duration::from_millis(5), SEED);
        net.ideal_tables();
        net.record_removals();
        let rc = ReplicationConfig {
            replan_interval: Duration::from_secs(30),
            ..ReplicationConfig::default()
        };
        let planners = (0..n)
            .map(|i| Planner::new(net.now(), net.peer(i).key, rc.clone()))
            .collect();
        Cluster {
            net,
            planners,
            stores: vec![BTreeSet::new(); n],
            pushes: 0,
        }
    }

    fn put(&mut self, at: usize, key: Key) {
        self.stores[at].insert(key);
        self.planners[at].add_object(self.net.now(), key, 1 << 20);
    }

    /// Advances the network and every live planner together, one second at a time.
    fn run(&mut self, seconds: u64) {
        for _ in 0..seconds {
            self.net.run_for(Duration::from_secs(1), 10_000_000);
            let now = self.net.now();
            for i in 0..self.net.len() {
                if !self.net.is_alive(i) {
                    continue;
                }
                self.planners[i].handle_table_changed(now);
                for gone in self.net.take_removed(i) {
                    self.planners[i].handle_peer_removed(now, &gone);
                }
                self.planners[i].handle_timeout(now, self.net.node(i).routing_table());
                while let Some(ev) = self.planners[i].poll_event() {
                    match ev {
                        PlanEvent::Transfer {
                            id,
                            key,
                            size,
                            to,
                            push,
                        } => {
                            let j = to.idx as usize;
                            let alive = self.net.is_alive(j);
                            let outcome = if !alive {
                                TransferOutcome::Failed(TransferFault::Exchange(
                                    FailureCause::Silent,
                                ))
                            } else if push {
                                self.pushes += 1;
                                if self.stores[j].insert(key) {
                                    self.planners[j].add_object(now, key, size);
                                    self.planners[j].handle_holder_confirmed(
                                        now,
                                        &key,
                                        &self.net.peer(i).key,
                                    );
                                }
                                TransferOutcome::Verified
                            } else if self.stores[j].contains(&key) {
                                TransferOutcome::Verified
                            } else {
                                TransferOutcome::Absent
                            };
                            self.planners[i].handle_transfer_done(now, id, outcome);
                        }
                        PlanEvent::Release { key } => {
                            self.stores[i].remove(&key);
                            self.planners[i].remove_object(&key);
                        }
                    }
                }
            }
        }
    }

    /// For each object: how many of its RF closest live nodes hold it.
    fn placement(&self, keys: &[Key], rf: usize) -> BTreeMap<Key, usize> {
        let by_key: BTreeMap<Key, usize> = (0..self.net.len())
            .map(|i| (self.net.peer(i).key, i))
            .collect();
        keys.iter()
            .map(|k| {
                let held = self
                    .net
                    .true_closest(k, rf)
                    .iter()
                    .filter(|nk| self.stores[by_key[nk]].contains(k))
                    .count();
                (*k, held)
            })
            .collect()
    }
}

#[test]
fn objects_converge_to_rf_closest_and_recover_after_removals() {
    let rf = ReplicationConfig::default().rf;
    let mut c = Cluster::new(300);
    let keys: Vec<Key> = (0..60).map(|_| c.net.random_key()).collect();
    for k in &keys {
        let at = c.net.random_index();
        c.put(at, *k);
    }
    c.run(20);
    let placed = c.placement(&keys, rf);
    let complete = placed.values().filter(|&&n| n == rf).count();
    println!(
        "after planning: {complete}/{} objects on all RF closest nodes",
        keys.len()
    );
    assert_eq!(
        complete,
        keys.len(),
        "every object on its RF closest nodes: {placed:?}"
    );
    let total_copies: usize = c.stores.iter().map(BTreeSet::len).sum();
    assert_eq!(
        total_copies,
        keys.len() * rf,
        "copies beyond RF are released"
    );

    // 20% vanish; liveness probes evict them from tables, then the planners repair.
    let mut killed = 0;
    while killed < 60 {
        let i = c.net.random_index();
        if c.net.is_alive(i) {
            c.net.kill(i);
            killed += 1;
        }
    }
    c.run(300);
    let placed = c.placement(&keys, rf);
    let complete = placed.values().filter(|&&n| n == rf).count();
    let lost = keys
        .iter()
        .filter(|k| (0..c.net.len()).all(|i| !c.net.is_alive(i) || !c.stores[i].contains(k)))
        .count();
    println!(
        "after 20% removed: {complete}/{} objects back on RF closest live nodes, {lost} lost",
        keys.len()
    );
    // An object whose RF holders all died with it is gone; the rest must be repaired.
    assert_eq!(complete + lost, keys.len(), "{placed:?}");
    assert!(
        lost <= 1,
        "{lost} objects lost with RF = {rf} and 20% removed"
    );
}
