//! A small deterministic generator for the unit tests.

/// A linear congruential generator (Knuth's MMIX constants), high bits.
pub(crate) fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    }
}
