//! Every random stream of a run, derived from the one master seed.
//!
//! TigerBeetle's VOPR rule: a run is reproduced from its seed alone. Each consumer of
//! randomness gets its own stream, named by a [`Stream`] tag and indices (slot, incarnation,
//! draw number), mixed with SplitMix64. Streams are independent of the order in which the
//! engine happens to draw from them, so changing one knob (say `dht.k`) leaves the churn
//! schedule, the node ids and the workload's targets exactly as they were: sweeps compare
//! like with like.

use overlay::Key;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The engine's random number generator (fast, portable, seedable).
pub type SimRng = ChaCha8Rng;

/// Names one family of random streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Node ids, per (slot, incarnation).
    NodeKey = 1,
    /// Each node's own `Dht` seed, per (slot, incarnation).
    DhtSeed = 2,
    /// Each message's jitter and loss, per (sender, receiver, message number).
    Network = 3,
    /// Churn periods, per (slot, draw).
    Churn = 4,
    /// Lookup times, sources and targets.
    Lookups = 5,
    /// Ideal routing tables.
    Ideal = 6,
    /// Which nodes the mass failure removes.
    Failure = 7,
    /// Node placement for the regions and coordinates latency models.
    Placement = 8,
    /// Bootstrap contacts of joining nodes.
    Join = 9,
    /// Object puts and gets.
    Objects = 10,
    /// Each pair of slots' stable base delay.
    Pairs = 11,
    /// The swarm's fault profile of a seed (not in a scenario's preamble: the swarm prints
    /// its profile itself).
    Swarm = 12,
    /// A swarm liar's made-up answers, per (slot, event number).
    Liar = 13,
}

/// Every stream with its name, for the run's preamble (each printed at indices 0, 0; a
/// node's own streams are derived at its slot and incarnation).
pub const STREAMS: [(&str, Stream); 11] = [
    ("node_key", Stream::NodeKey),
    ("dht_seed", Stream::DhtSeed),
    ("network", Stream::Network),
    ("churn", Stream::Churn),
    ("lookups", Stream::Lookups),
    ("ideal", Stream::Ideal),
    ("failure", Stream::Failure),
    ("placement", Stream::Placement),
    ("join", Stream::Join),
    ("objects", Stream::Objects),
    ("pairs", Stream::Pairs),
];

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of stream `stream`, indices `a` and `b`, under `master`.
pub fn derive(master: u64, stream: Stream, a: u64, b: u64) -> u64 {
    let s = splitmix64(master ^ splitmix64(stream as u64));
    splitmix64(splitmix64(s ^ a) ^ b.rotate_left(32))
}

/// An RNG for stream `stream`, indices `a` and `b`.
pub fn rng(master: u64, stream: Stream, a: u64, b: u64) -> SimRng {
    SimRng::seed_from_u64(derive(master, stream, a, b))
}

/// The DHT key of incarnation `incarnation` of slot `slot`.
pub fn node_key(master: u64, slot: u32, incarnation: u32) -> Key {
    Key::random(&mut rng(
        master,
        Stream::NodeKey,
        slot.into(),
        incarnation.into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_and_repeat() {
        assert_eq!(
            derive(1, Stream::Churn, 3, 4),
            derive(1, Stream::Churn, 3, 4)
        );
        assert_ne!(
            derive(1, Stream::Churn, 3, 4),
            derive(1, Stream::Churn, 4, 3)
        );
        assert_ne!(
            derive(1, Stream::Churn, 3, 4),
            derive(2, Stream::Churn, 3, 4)
        );
        assert_ne!(
            derive(1, Stream::Churn, 3, 4),
            derive(1, Stream::Lookups, 3, 4)
        );
        assert_ne!(node_key(1, 0, 0), node_key(1, 0, 1));
    }
}
