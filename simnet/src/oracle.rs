//! The global view: every live node, sorted by key, for the answers a lookup should have
//! found and for ideal routing tables.
//!
//! The nodes sharing a prefix with a key form one contiguous range of the sorted array, so
//! both questions are answered by binary partitions instead of scans: the members of bucket
//! i of node x are the keys that agree with x on the first 255 − i bits and differ at the
//! next (one range), and the n XOR-closest keys to a target are found by descending the
//! implicit binary trie, taking the target's side of each split first (every key on that
//! side is closer than every key on the other). Both cost O(log n) per level touched, never
//! O(n). The array is kept sorted on every change; changes (churn) are rare next to queries.

use std::ops::Range;

use overlay::Key;

/// Bit `depth` of `key`, counting from the most significant.
fn bit(key: &Key, depth: u32) -> u8 {
    (key.0[(depth / 8) as usize] >> (7 - depth % 8)) & 1
}

fn flip(mut key: Key, depth: u32) -> Key {
    key.0[(depth / 8) as usize] ^= 1 << (7 - depth % 8);
    key
}

/// The live nodes, sorted by key.
#[derive(Debug, Default, Clone)]
pub struct LiveSet {
    nodes: Vec<(Key, u32)>,
}

impl LiveSet {
    /// An empty set.
    pub fn new() -> LiveSet {
        LiveSet::default()
    }

    /// A set of the given `(key, slot)` pairs (keys must be distinct).
    pub fn from_nodes(mut nodes: Vec<(Key, u32)>) -> LiveSet {
        nodes.sort_unstable();
        LiveSet { nodes }
    }

    /// Live nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nobody is live.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `i`-th live node in key order.
    pub fn get(&self, i: usize) -> Option<(Key, u32)> {
        self.nodes.get(i).copied()
    }

    /// The nodes in `range` (as returned by [`buckets_of`](Self::buckets_of)).
    pub fn slice(&self, range: Range<usize>) -> &[(Key, u32)] {
        self.nodes.get(range).unwrap_or(&[])
    }

    /// Adds a node; `false` if its key is already live.
    pub fn insert(&mut self, key: Key, slot: u32) -> bool {
        match self.nodes.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(_) => false,
            Err(pos) => {
                self.nodes.insert(pos, (key, slot));
                true
            }
        }
    }

    /// Removes a node; `false` if it was not live.
    pub fn remove(&mut self, key: &Key) -> bool {
        match self.nodes.binary_search_by(|(k, _)| k.cmp(key)) {
            Ok(pos) => {
                self.nodes.remove(pos);
                true
            }
            Err(_) => false,
        }
    }

    /// Splits `range` (keys sharing `depth` bits) at bit `depth`: the 0-half, the 1-half.
    fn split(&self, range: Range<usize>, depth: u32) -> (Range<usize>, Range<usize>) {
        let slice = self.slice(range.clone());
        let mid = range.start + slice.partition_point(|(k, _)| bit(k, depth) == 0);
        (range.start..mid, mid..range.end)
    }

    /// For each non-empty bucket of `x`: its index and the range of live nodes in it.
    pub fn buckets_of(&self, x: &Key) -> Vec<(usize, Range<usize>)> {
        let mut out = Vec::new();
        let mut range = 0..self.nodes.len();
        let mut depth = 0;
        while range.len() > 1 && depth < 256 {
            let (zero, one) = self.split(range, depth);
            let (mine, other) = if bit(x, depth) == 0 {
                (zero, one)
            } else {
                (one, zero)
            };
            if !other.is_empty() {
                out.push((255 - depth as usize, other));
            }
            range = mine;
            depth += 1;
        }
        out
    }

    /// The `n` live nodes XOR-closest to `target`, closest first, leaving out `exclude`.
    pub fn closest(&self, target: &Key, n: usize, exclude: Option<&Key>) -> Vec<(Key, u32)> {
        let want = n + usize::from(exclude.is_some());
        let mut out = Vec::with_capacity(want);
        self.collect(*target, 0, 0..self.nodes.len(), want, &mut out);
        out.sort_by_key(|(k, _)| k.distance(target));
        if let Some(x) = exclude {
            out.retain(|(k, _)| k != x);
        }
        out.truncate(n);
        out
    }

    /// The `need` keys of `range` (all sharing `depth` bits with `t`) closest to `t`.
    fn collect(
        &self,
        t: Key,
        depth: u32,
        range: Range<usize>,
        need: usize,
        out: &mut Vec<(Key, u32)>,
    ) {
        if need == 0 || range.is_empty() {
            return;
        }
        if range.len() <= need || depth >= 256 {
            out.extend_from_slice(self.slice(range));
            return;
        }
        let (zero, one) = self.split(range, depth);
        let (same, other) = if bit(&t, depth) == 0 {
            (zero, one)
        } else {
            (one, zero)
        };
        let took = same.len().min(need);
        self.collect(t, depth + 1, same, need, out);
        if took < need {
            // On the other side every key has this bit flipped relative to t: rank them
            // against t with that bit flipped, which orders them as t does.
            self.collect(flip(t, depth), depth + 1, other, need - took, out);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand::SeedableRng;

    fn set(n: usize) -> (LiveSet, Vec<Key>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let keys: Vec<Key> = (0..n).map(|_| Key::random(&mut rng)).collect();
        let nodes = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();
        (LiveSet::from_nodes(nodes), keys)
    }

    #[test]
    fn closest_matches_a_full_sort() {
        let (live, keys) = set(3000);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for i in 0..200 {
            let target = if i % 2 == 0 {
                Key::random(&mut rng)
            } else {
                keys[i]
            };
            let mut all = keys.clone();
            all.sort_by_key(|k| k.distance(&target));
            let got: Vec<Key> = live
                .closest(&target, 20, None)
                .iter()
                .map(|p| p.0)
                .collect();
            assert_eq!(got, all[..20]);
            let got: Vec<Key> = live
                .closest(&target, 5, Some(&all[0]))
                .iter()
                .map(|p| p.0)
                .collect();
            assert_eq!(got, all[1..6]);
        }
    }

    #[test]
    fn buckets_hold_exactly_the_keys_of_that_bucket() {
        let (live, keys) = set(2000);
        for x in keys.iter().take(50) {
            let mut seen = 0;
            for (b, range) in live.buckets_of(x) {
                for (k, _) in live.slice(range) {
                    assert_eq!(x.bucket_of(k), Some(b));
                    seen += 1;
                }
            }
            assert_eq!(
                seen,
                keys.len() - 1,
                "every other key is in exactly one bucket"
            );
        }
    }

    #[test]
    fn insert_and_remove_keep_order() {
        let (mut live, keys) = set(100);
        assert!(live.remove(&keys[5]));
        assert!(!live.remove(&keys[5]));
        assert_eq!(live.len(), 99);
        assert!(live.insert(keys[5], 5));
        assert!(!live.insert(keys[5], 5));
        let v: Vec<Key> = (0..live.len()).map(|i| live.get(i).unwrap().0).collect();
        assert!(v.windows(2).all(|w| w[0] < w[1]));
    }
}
