//! Seed derivation: the experiment's one seed names every RNG of a run through a label,
//! so adding a stage never shifts the random stream of another.

use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

/// A child seed for `label`, stable across platforms and Rust versions.
pub fn derive(seed: u64, label: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(label.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// A seeded RNG for `label`.
pub fn rng(seed: u64, label: &str) -> StdRng {
    StdRng::seed_from_u64(derive(seed, label))
}
