//! Reproducible random streams (docs/architecture.md, "Allocation").
//!
//! Each stream is ChaCha20 keyed by SHA-256 of (algorithm version, stream
//! key, master seed). Uniform integers, unit draws and shuffles are written
//! here rather than taken from `rand`, whose algorithms may change between
//! versions: a statistician must be able to regenerate a list bit for bit
//! years later.

pub use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// Bumped whenever any algorithm here, in the randomisation methods or in
/// the blinding service's code generation changes its output.
/// Recorded with each trial at activation.
pub const ALGORITHM_VERSION: u32 = 1;

/// A trial's 32-byte master seed. Never logged, never sent to a blinded caller.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterSeed(pub [u8; 32]);

impl std::fmt::Debug for MasterSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSeed(..)")
    }
}

impl MasterSeed {
    /// Draws a seed from the operating system's random source.
    pub fn from_os() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| format!("seed is not hex: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "seed must be 32 bytes (64 hex digits)".to_owned())?;
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The stream of one stratum (or of the whole trial, for minimisation).
pub fn derive_stream(master: &MasterSeed, stream_key: &str, algorithm_version: u32) -> ChaCha20Rng {
    let mut hasher = Sha256::new();
    hasher.update(b"equipoise/stream");
    hasher.update(algorithm_version.to_le_bytes());
    hasher.update((stream_key.len() as u64).to_le_bytes());
    hasher.update(stream_key.as_bytes());
    hasher.update(master.0);
    ChaCha20Rng::from_seed(hasher.finalize().into())
}

/// A stream whose draws depend only on a 64-bit seed: for simulation.
pub fn simulation_stream(seed: u64, label: &str) -> ChaCha20Rng {
    let mut master = [0u8; 32];
    master[..8].copy_from_slice(&seed.to_le_bytes());
    derive_stream(&MasterSeed(master), label, ALGORITHM_VERSION)
}

/// Uniform integer in `0..n` by rejection, so every value is exactly equally
/// likely. `n` must be at least 1.
pub fn uniform_below(rng: &mut ChaCha20Rng, n: u32) -> u32 {
    debug_assert!(n > 0);
    let n = n.max(1);
    // Largest multiple of n that fits: values at or above it are redrawn.
    let zone = u32::MAX - (u32::MAX % n + 1) % n;
    loop {
        let x = rng.next_u32();
        if x <= zone {
            return x % n;
        }
    }
}

/// Uniform in [0, 1) with 53 bits of precision, from one u64.
pub fn unit_interval(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Fisher–Yates, drawing from the end.
pub fn shuffle<T>(rng: &mut ChaCha20Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = uniform_below(rng, (i + 1) as u32) as usize;
        items.swap(i, j);
    }
}

/// The index whose cumulative probability first exceeds `u`. Rounding can
/// leave the total a hair under 1, so the last positive entry takes the rest.
pub fn pick(probabilities: &[f64], u: f64) -> usize {
    let mut cumulative = 0.0;
    for (index, p) in probabilities.iter().enumerate() {
        cumulative += p;
        if u < cumulative {
            return index;
        }
    }
    probabilities.iter().rposition(|p| *p > 0.0).unwrap_or(0)
}

/// The `draw`-th unit draw of a stream, without consuming the ones before.
/// Each unit draw uses exactly two 32-bit words.
pub fn nth_unit_draw(rng: &mut ChaCha20Rng, draw: u64) -> f64 {
    rng.set_word_pos(u128::from(draw) * 2);
    unit_interval(rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> MasterSeed {
        MasterSeed([7u8; 32])
    }

    #[test]
    fn golden_stream_prefix() {
        let mut rng = derive_stream(&seed(), "site=FR-MTP,baseline_pain=severe", 1);
        let draws: Vec<u32> = (0..8).map(|_| uniform_below(&mut rng, 1000)).collect();
        assert_eq!(draws, GOLDEN_UNIFORM_BELOW_1000);
    }

    const GOLDEN_UNIFORM_BELOW_1000: [u32; 8] = [38, 809, 903, 765, 982, 871, 959, 263];

    #[test]
    fn streams_differ_by_key_and_version() {
        let a = derive_stream(&seed(), "a", 1).next_u64();
        assert_ne!(a, derive_stream(&seed(), "b", 1).next_u64());
        assert_ne!(a, derive_stream(&seed(), "a", 2).next_u64());
        assert_eq!(a, derive_stream(&seed(), "a", 1).next_u64());
    }

    #[test]
    fn uniform_below_is_in_range_and_covers_it() {
        let mut rng = derive_stream(&seed(), "uniform", 1);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[uniform_below(&mut rng, 6) as usize] += 1;
        }
        // Each face expects 10,000; 5 standard deviations is about 456.
        assert!(
            counts.iter().all(|c| c.abs_diff(10_000) < 460),
            "{counts:?}"
        );
        assert_eq!(uniform_below(&mut rng, 1), 0);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = derive_stream(&seed(), "shuffle", 1);
        let mut items: Vec<u32> = (0..50).collect();
        shuffle(&mut rng, &mut items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }

    #[test]
    fn nth_unit_draw_matches_sequential_draws() {
        let mut sequential = derive_stream(&seed(), "minimisation", 1);
        let draws: Vec<f64> = (0..5).map(|_| unit_interval(&mut sequential)).collect();
        let mut random_access = derive_stream(&seed(), "minimisation", 1);
        for (n, expected) in draws.iter().enumerate().rev() {
            assert_eq!(nth_unit_draw(&mut random_access, n as u64), *expected);
        }
    }

    #[test]
    fn pick_follows_cumulative_probabilities() {
        assert_eq!(pick(&[0.5, 0.5], 0.0), 0);
        assert_eq!(pick(&[0.5, 0.5], 0.5), 1);
        assert_eq!(pick(&[0.0, 1.0], 0.2), 1);
        assert_eq!(pick(&[1.0 / 3.0; 3], 0.999_999_999_999_999_9), 2);
    }

    #[test]
    fn seeds_round_trip_through_hex() {
        let seed = MasterSeed::from_os().expect("os randomness");
        assert_eq!(MasterSeed::from_hex(&seed.to_hex()), Ok(seed));
        assert!(MasterSeed::from_hex("abcd").is_err());
    }
}
