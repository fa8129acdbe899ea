//! Measurements of tensor bytes: order-0 entropy of byte planes, zeros,
//! change against a previous snapshot. `lmc bench` and `lmc analyze` report
//! these; they are plain definitions, kept here so both tools agree.
//!
//! The *order-0 bound* of a byte plane is `n * H` bits, where `H` is the
//! Shannon entropy of the plane's byte histogram: no coder that codes each
//! byte on its own with one fixed table for the plane can do better (table
//! cost not counted). Summed over the planes of a tensor (split by
//! [`crate::planes::split`]) it is the byte-plane bound that order-0 tools
//! such as ZipNN aim at, and that context modelling can beat.

use crate::dtype::Dtype;
use crate::planes;

/// A byte histogram with 64-bit counts (planes of huge tensors overflow u32).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram(pub [u64; 256]);

impl Default for Histogram {
    fn default() -> Self {
        Histogram([0; 256])
    }
}

impl Histogram {
    /// Adds the bytes of `data`.
    pub fn add(&mut self, data: &[u8]) {
        for (t, c) in self.0.iter_mut().zip(crate::huffman::histogram(data)) {
            *t += u64::from(c);
        }
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (t, c) in self.0.iter_mut().zip(other.0.iter()) {
            *t += c;
        }
    }

    /// Bytes counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Shannon entropy in bits per byte (0 for an empty histogram).
    pub fn entropy(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            return 0.0;
        }
        let n = n as f64;
        self.0
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.log2()
            })
            .sum()
    }

    /// The order-0 bound in bytes: `total * entropy / 8`.
    pub fn bound_bytes(&self) -> f64 {
        self.total() as f64 * self.entropy() / 8.0
    }

    /// Fraction of bytes that are zero (0 for an empty histogram).
    pub fn zero_fraction(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            0.0
        } else {
            self.0[0] as f64 / n as f64
        }
    }
}

/// Elements processed at a time by [`plane_histograms`], bounding its memory.
const BLOCK_ELEMS: usize = 1 << 16;

/// The histograms of each byte plane of `data`, little-endian elements of
/// `dtype` (plane 0 first, as [`crate::planes::split`] orders them). A
/// trailing partial element, which a well-formed tensor never has, is ignored.
pub fn plane_histograms(dtype: Dtype, data: &[u8]) -> Vec<Histogram> {
    let w = dtype.width();
    let mut hists = vec![Histogram::default(); w];
    let mut planes_buf: Vec<Vec<u8>> = vec![Vec::new(); w];
    let whole = data.len() / w * w;
    for block in data[..whole].chunks(BLOCK_ELEMS * w) {
        planes::split(dtype, block, &mut planes_buf);
        for (h, p) in hists.iter_mut().zip(&planes_buf) {
            h.add(p);
        }
    }
    hists
}

/// Sum of the order-0 bounds of the planes of `data`, in bytes.
pub fn plane_bound_bytes(dtype: Dtype, data: &[u8]) -> f64 {
    plane_histograms(dtype, data)
        .iter()
        .map(Histogram::bound_bytes)
        .sum()
}

/// `out[i] = a[i] ^ b[i]`; `out` is resized to the inputs' common length.
///
/// # Panics
/// If `a` and `b` differ in length (a programming error of the caller).
pub fn xor_into(a: &[u8], b: &[u8], out: &mut Vec<u8>) {
    assert_eq!(a.len(), b.len(), "xor of slices of different lengths");
    out.clear();
    out.extend(a.iter().zip(b).map(|(x, y)| x ^ y));
}

/// Fraction of `width`-byte elements equal in `a` and `b` (1 for empty input).
///
/// # Panics
/// If `a` and `b` differ in length or `width` is 0.
pub fn unchanged_fraction(a: &[u8], b: &[u8], width: usize) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "comparison of slices of different lengths"
    );
    assert!(width > 0);
    let n = a.len() / width;
    if n == 0 {
        return 1.0;
    }
    let same = a
        .chunks_exact(width)
        .zip(b.chunks_exact(width))
        .filter(|(x, y)| x == y)
        .count();
    same as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_known_distributions() {
        let mut h = Histogram::default();
        h.add(&[7u8; 1000]);
        assert_eq!(h.entropy(), 0.0);
        assert_eq!(h.bound_bytes(), 0.0);

        // Uniform over 256 symbols: 8 bits.
        let all: Vec<u8> = (0..=255u8).cycle().take(256 * 40).collect();
        let mut h = Histogram::default();
        h.add(&all);
        assert!((h.entropy() - 8.0).abs() < 1e-12);

        // p = (1/2, 1/4, 1/4): 1.5 bits.
        let mut h = Histogram::default();
        h.add(&[0, 0, 1, 2]);
        assert!((h.entropy() - 1.5).abs() < 1e-12);
        assert!((h.bound_bytes() - 4.0 * 1.5 / 8.0).abs() < 1e-12);
        assert_eq!(h.zero_fraction(), 0.5);
        assert_eq!(Histogram::default().entropy(), 0.0);
    }

    #[test]
    fn planes_of_bf16() {
        // 1.0 in bf16 is 0x3F80; rotated left by one bit: 0x7F00.
        let one = 0x3F80u16.to_le_bytes();
        let data: Vec<u8> = one.iter().copied().cycle().take(2 * 300_000).collect();
        let h = plane_histograms(Dtype::BF16, &data);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].0[0x7F], 300_000);
        assert_eq!(h[1].0[0x00], 300_000);
        assert_eq!(plane_bound_bytes(Dtype::BF16, &data), 0.0);
    }

    #[test]
    fn xor_and_unchanged() {
        let a = [1u8, 2, 3, 4, 5, 6];
        let b = [1u8, 2, 3, 5, 5, 6];
        let mut x = Vec::new();
        xor_into(&a, &b, &mut x);
        assert_eq!(x, [0, 0, 0, 1, 0, 0]);
        assert!((unchanged_fraction(&a, &b, 2) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(unchanged_fraction(&[], &[], 4), 1.0);
    }
}
