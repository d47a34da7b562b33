//! Seeds: every random choice of a scenario (object sizes and bytes, which node dies and
//! when, which datagram a link drops) comes from one printed `u64`, so a run can be
//! replayed with `--seed N` (runner) or `CHAOS_SEED=N` (tests).
//!
//! A scenario never shares one RNG between threads: it derives a stream per purpose with
//! [`Seed::rng`], so the draws of one purpose do not depend on how threads interleave.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Environment variable that fixes the seed of the chaos tests.
pub const SEED_ENV: &str = "CHAOS_SEED";

/// A scenario's seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub u64);

impl Seed {
    /// `CHAOS_SEED` if set (and a number), else one from the clock. Printed either way.
    pub fn from_env_or_clock(what: &str) -> Seed {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(clock_seed);
        println!("{what}: seed {seed} (replay with {SEED_ENV}={seed})");
        Seed(seed)
    }

    /// An RNG for one purpose (`"sizes"`, `"victims"`, a link's name): the same seed and
    /// purpose give the same stream.
    pub fn rng(self, purpose: &str) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.derive(purpose))
    }

    /// A `u64` derived from the seed and a purpose.
    pub fn derive(self, purpose: &str) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(&self.0.to_le_bytes());
        h.update(purpose.as_bytes());
        let mut out = [0u8; 8];
        out.copy_from_slice(&h.finalize().as_bytes()[..8]);
        u64::from_le_bytes(out)
    }
}

/// A seed from the wall clock's nanoseconds.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
}

/// `len` bytes determined by `(seed, index)`: object `index` of a run. BLAKE3's XOF makes
/// them at memory speed, and a verifier needs only the id, never a copy of the bytes.
pub fn object_bytes(seed: Seed, index: u64, len: usize) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&seed.0.to_le_bytes());
    h.update(&index.to_le_bytes());
    let mut out = vec![0u8; len];
    h.finalize_xof().fill(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn one_seed_one_stream_per_purpose() {
        let s = Seed(42);
        let a: Vec<u32> = (0..8).map(|_| s.rng("sizes").r#gen()).collect();
        let mut r = s.rng("sizes");
        let b: Vec<u32> = (0..8).map(|_| r.r#gen()).collect();
        assert_eq!(a[0], b[0]);
        assert_ne!(s.derive("sizes"), s.derive("victims"));
        assert_eq!(object_bytes(s, 3, 100), object_bytes(s, 3, 100));
        assert_ne!(object_bytes(s, 3, 100), object_bytes(s, 4, 100));
    }
}
