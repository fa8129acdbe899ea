//! What the store's integration tests share.
#![allow(dead_code)] // each test binary uses part of it

/// SplitMix64: deterministic unit-test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A normal sample times 0.02 (Box-Muller), like a weight.
    pub fn normal_f32(&mut self) -> f32 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let v = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * (u + 1e-12).ln()).sqrt() * (std::f64::consts::TAU * v).cos() * 0.02) as f32
    }

    /// Uniform in [-0.02, 0.02).
    pub fn small(&mut self) -> f32 {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.04
    }
}
