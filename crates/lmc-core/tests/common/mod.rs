//! Helpers shared by the integration tests of lmc-core.

#![allow(dead_code)] // each test file uses its own subset

use lmc_core::{Dtype, SegmentKind, SegmentSpec};

/// A small deterministic generator (SplitMix64) for the explicit tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A tensor segment whose length follows from its shape and dtype.
pub fn tensor(name: &str, dtype: Dtype, shape: Vec<u64>) -> SegmentSpec {
    let len = shape.iter().product::<u64>() * dtype.width() as u64;
    SegmentSpec {
        kind: SegmentKind::Tensor {
            name: name.into(),
            dtype,
            shape,
        },
        len,
    }
}
