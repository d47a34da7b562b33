//! The 256-bit key space and its XOR metric.
//!
//! A node's key is BLAKE3 of its public key, an object's key is its BLAKE3 hash, so both
//! are uniform over the space and nobody picks their own position. Distances compare as
//! big-endian integers; bucket `i` holds the keys whose distance from us has its highest set
//! bit at position `i` (255 = the far half of the space).

use std::fmt;

use rand::RngCore;
use wire::NodeId;

/// A point in the DHT key space.
///
/// Ordered as a big-endian integer, compared as machine words (see [`words`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

/// The XOR distance between two keys; smaller is closer.
///
/// Ordered as a big-endian integer, compared as machine words (see [`words`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Distance(pub [u8; 32]);

/// 32 bytes as two big-endian `u128`s, high half first: the pair orders exactly as the
/// bytes do lexicographically, but compares in a few instructions instead of a call to
/// `memcmp`. Every lookup, table query and walk step compares distances, so this is the
/// overlay's hottest comparison (simnet's profile put `memcmp` first).
#[inline]
pub fn words(bytes: &[u8; 32]) -> (u128, u128) {
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    hi.copy_from_slice(&bytes[..16]);
    lo.copy_from_slice(&bytes[16..]);
    (u128::from_be_bytes(hi), u128::from_be_bytes(lo))
}

/// Orders a 32-byte newtype as its big-endian integer, through [`words`].
macro_rules! word_order {
    ($t:ty) => {
        impl Ord for $t {
            #[inline]
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                words(&self.0).cmp(&words(&other.0))
            }
        }

        impl PartialOrd for $t {
            #[inline]
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
    };
}

word_order!(Key);
word_order!(Distance);

impl Key {
    /// The key of a node: BLAKE3 of its public key.
    pub fn for_node(id: &NodeId) -> Key {
        Key(*blake3::hash(id.as_bytes()).as_bytes())
    }

    /// The key of an object whose BLAKE3 hash is `hash` (the hash is the key).
    pub fn for_object(hash: [u8; 32]) -> Key {
        Key(hash)
    }

    /// A uniformly random key.
    pub fn random(rng: &mut impl RngCore) -> Key {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        Key(k)
    }

    /// XOR distance to `other` as two big-endian words (see [`words`]): ordered as
    /// [`distance`](Self::distance), computed and compared without byte loops.
    #[inline]
    pub fn distance_words(&self, other: &Key) -> (u128, u128) {
        let (a, b) = (words(&self.0), words(&other.0));
        (a.0 ^ b.0, a.1 ^ b.1)
    }

    /// XOR distance to `other`.
    #[inline]
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// Which of our buckets `other` falls in; `None` for ourselves.
    ///
    /// On the distance's machine words: every table operation and every invariant check
    /// asks this of each entry it touches, and going through [`distance`](Self::distance)'s
    /// bytes and back into words cost the lookup benchmark a fifth more instructions.
    #[inline]
    pub fn bucket_of(&self, other: &Key) -> Option<usize> {
        let lz = leading_zeros(self.distance_words(other));
        (lz < 256).then(|| 255 - lz as usize)
    }

    /// A random key that falls in our bucket `bucket` (for bucket refresh).
    pub fn random_in_bucket(&self, bucket: usize, rng: &mut impl RngCore) -> Key {
        let bucket = bucket.min(255);
        let mut d = [0u8; 32];
        rng.fill_bytes(&mut d);
        // Highest set bit of the distance at position `bucket`: clear everything above it.
        let bit_from_top = 255 - bucket;
        let byte = bit_from_top / 8;
        let bit = 7 - (bit_from_top % 8);
        for b in d.iter_mut().take(byte) {
            *b = 0;
        }
        let keep_below = (1u16 << bit) as u8 - 1;
        d[byte] = (d[byte] & keep_below) | (1 << bit);
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = self.0[i] ^ d[i];
        }
        Key(k)
    }
}

impl Distance {
    /// Bucket index (position of the highest set bit), `None` for distance zero.
    pub fn bucket(&self) -> Option<usize> {
        let lz = self.leading_zeros();
        if lz == 256 {
            None
        } else {
            Some(255 - lz as usize)
        }
    }

    /// Number of leading zero bits (256 for distance zero).
    #[inline]
    pub fn leading_zeros(&self) -> u32 {
        leading_zeros(words(&self.0))
    }
}

/// Leading zero bits of a 256-bit number given as [`words`].
#[inline]
fn leading_zeros((hi, lo): (u128, u128)) -> u32 {
    if hi != 0 {
        hi.leading_zeros()
    } else {
        128 + lo.leading_zeros()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Key({:02x}{:02x}{:02x}{:02x})",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_in_bucket_lands_in_that_bucket() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let me = Key::random(&mut rng);
        for bucket in 0..256 {
            for _ in 0..4 {
                let k = me.random_in_bucket(bucket, &mut rng);
                assert_eq!(me.bucket_of(&k), Some(bucket));
            }
        }
        assert_eq!(me.bucket_of(&me), None);
    }

    #[test]
    fn word_order_is_byte_order() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut keys: Vec<Key> = (0..200).map(|_| Key::random(&mut rng)).collect();
        // Keys that differ only late, and in single bytes, test the word boundaries.
        for i in [0, 7, 8, 15, 16, 23, 24, 31] {
            let mut k = [0u8; 32];
            k[i] = 1;
            keys.push(Key(k));
        }
        keys.push(Key([0; 32]));
        keys.push(Key([0xff; 32]));
        for a in &keys {
            for b in &keys {
                assert_eq!(a.cmp(b), a.0.cmp(&b.0));
                let t = keys[3];
                let (da, db) = (a.distance(&t), b.distance(&t));
                assert_eq!(da.cmp(&db), da.0.cmp(&db.0));
                assert_eq!(a.distance_words(&t), words(&da.0));
                let lz =
                    da.0.iter()
                        .position(|&x| x != 0)
                        .map_or(256, |i| i as u32 * 8 + da.0[i].leading_zeros());
                assert_eq!(da.leading_zeros(), lz);
                assert_eq!(t.bucket_of(a), da.bucket());
            }
        }
    }

    #[test]
    fn node_key_is_blake3_of_the_public_key() {
        let id = NodeId([9; 32]);
        assert_eq!(Key::for_node(&id).0, *blake3::hash(&[9; 32]).as_bytes());
    }
}
