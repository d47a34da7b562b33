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
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub [u8; 32]);

/// The XOR distance between two keys; smaller is closer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Distance(pub [u8; 32]);

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

    /// XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// Which of our buckets `other` falls in; `None` for ourselves.
    pub fn bucket_of(&self, other: &Key) -> Option<usize> {
        self.distance(other).bucket()
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
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
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
    fn node_key_is_blake3_of_the_public_key() {
        let id = NodeId([9; 32]);
        assert_eq!(Key::for_node(&id).0, *blake3::hash(&[9; 32]).as_bytes());
    }
}
