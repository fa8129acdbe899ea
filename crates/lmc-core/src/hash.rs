//! The two hashes of the format: XXH3-64 for headers, indexes and chunk
//! checksums, XXH3-128 for whole files (FORMAT.md, "Checksums").
//!
//! Computed with the `twox-hash` crate, which picks its AVX2 or SSE2 kernel
//! at run time; measured on this project's 2-core Xeon on 256 KiB buffers in
//! cache, in a throwaway program timing both crates side by side, about 1.5x
//! the speed of `xxhash-rust` built for the default target (XXH3-64: 23.4
//! against 15.4 GB/s; `cargo bench -p lmc-core --bench kernels` times ours
//! alone). The values are the standard ones:
//! a test checks them against the reference implementation in `xxhash-rust`.

/// XXH3-64 (seed 0) of `data`.
#[inline]
pub fn xxh3_64(data: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(data)
}

/// XXH3-128 (seed 0) of `data`.
#[inline]
pub fn xxh3_128(data: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(data)
}

/// Streaming XXH3-128, for data that arrives in pieces.
#[derive(Clone)]
pub struct Xxh3_128(twox_hash::XxHash3_128);

impl Default for Xxh3_128 {
    fn default() -> Self {
        Self::new()
    }
}

impl Xxh3_128 {
    pub fn new() -> Self {
        Xxh3_128(twox_hash::XxHash3_128::new())
    }

    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        self.0.write(data);
    }

    /// The hash of everything given so far.
    pub fn digest128(&self) -> u128 {
        self.0.finish_128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values are XXH3's, as the reference implementation computes
    /// them, at every size class the algorithm treats apart (0, 1-3, 4-8,
    /// 9-16, 17-128, 129-240, long, several stripes and blocks).
    #[test]
    fn matches_the_reference() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for n in [
            0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 1025, 4096, 65_537, 70_000,
        ] {
            let d = &data[..n];
            assert_eq!(xxh3_64(d), xxhash_rust::xxh3::xxh3_64(d), "64, {n} bytes");
            assert_eq!(
                xxh3_128(d),
                xxhash_rust::xxh3::xxh3_128(d),
                "128, {n} bytes"
            );
            // Streaming, in uneven pieces.
            let mut h = Xxh3_128::new();
            for piece in d.chunks(977) {
                h.update(piece);
            }
            assert_eq!(
                h.digest128(),
                xxhash_rust::xxh3::xxh3_128(d),
                "stream, {n} bytes"
            );
        }
    }
}
