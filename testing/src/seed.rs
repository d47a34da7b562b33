//! Seeds for tests that draw random input: from an environment variable when it is set, so a
//! failure can be replayed exactly, else from the clock; printed either way, with the line
//! that replays it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Environment variable that replays a mesh test (`testing/tests/mesh.rs`,
/// `testing/tests/robustness.rs`, `testing/tests/gateway_limits.rs`).
pub const MESH_SEED: &str = "MESH_SEED";

/// The seed of test `test`: `$var` if set, else the clock. Panics on a `$var` that is not a
/// `u64`: a replay must not silently run with another seed.
pub fn seed(var: &str, test: &str) -> u64 {
    seed_from(var, std::env::var(var).ok(), test)
}

/// [`seed`] with the variable's value given (`None`: unset).
pub fn seed_from(var: &str, value: Option<String>, test: &str) -> u64 {
    let s = match value {
        Some(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a u64 seed")),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    println!("{test}: seed {s} (replay with {var}={s})");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_replays_and_the_clock_varies() {
        assert_eq!(seed_from(MESH_SEED, Some("42".into()), "t"), 42);
        assert_eq!(seed_from(MESH_SEED, Some(" 7\n".into()), "t"), 7);
        let a = seed_from(MESH_SEED, None, "t");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_ne!(a, seed_from(MESH_SEED, None, "t"));
    }

    #[test]
    #[should_panic(expected = "is not a u64 seed")]
    fn a_bad_value_is_refused_not_replaced() {
        seed_from(MESH_SEED, Some("abc".into()), "t");
    }
}
