//! A node's one timer over its two clocked state machines, the [`Dht`] and the replication
//! [`Planner`]: when it is due, and the order their timeouts run in.
//!
//! Both drivers (the node's DHT task and simnet's nodes) arm one timer per node. The order
//! matters: the DHT's timeouts run first, because they change the table (evictions,
//! refreshes) that the planner reads when it decides which copies belong where. Written once
//! here, a driver cannot run them the other way round or forget one.

use crate::dht::Dht;
use crate::peer::Peer;
use crate::replication::Planner;
use crate::time::Instant;

/// When the node's timer is due next: the earlier of the DHT's and the planner's deadlines
/// (a node that holds no objects may have no planner).
pub fn next_timeout<P: Peer>(dht: &Dht<P>, planner: Option<&Planner<P>>) -> Option<Instant> {
    match (dht.poll_timeout(), planner.and_then(Planner::poll_timeout)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The node's timer fired at `now`: the DHT's timeouts, then the planner's over the table
/// they left.
pub fn handle_timeout<P: Peer>(now: Instant, dht: &mut Dht<P>, planner: Option<&mut Planner<P>>) {
    dht.handle_timeout(now);
    if let Some(planner) = planner {
        planner.handle_timeout(now, dht.routing_table());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ReplicationConfig};
    use crate::key::Key;
    use crate::testnet::TestPeer;
    use std::time::Duration;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    /// The earlier deadline of the two, and the DHT's alone without a planner.
    #[test]
    fn the_timer_is_due_at_the_earlier_deadline() {
        let me = TestPeer {
            key: Key([7; 32]),
            idx: 0,
        };
        let dht = Dht::new(at(0), me, Config::default(), 1);
        let Some(d) = dht.poll_timeout() else {
            panic!("the DHT keeps timers");
        };
        assert_eq!(next_timeout(&dht, None), Some(d));
        // A planner due before the DHT, and one due after it.
        for (replan_ms, want) in [(1, at(1)), (d.as_duration().as_millis() as u64 + 5_000, d)] {
            let config = ReplicationConfig {
                replan_interval: Duration::from_millis(replan_ms),
                ..ReplicationConfig::default()
            };
            let planner = Planner::new(at(0), me.key, config);
            assert!(planner.poll_timeout().is_some());
            assert_eq!(
                next_timeout(&dht, Some(&planner)),
                Some(want),
                "replan {replan_ms} ms"
            );
        }
    }
}
