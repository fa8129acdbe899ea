//! Byte grouping: split elements into byte planes and merge them back.
//!
//! A tensor of `n` elements of width `w` becomes `w` planes of `n` bytes.
//! Plane 0 holds the most significant byte of each element, so for floats it
//! holds the exponent: the byte with almost all the redundancy (ZipNN,
//! arXiv 2411.05239; DFloat11, arXiv 2504.11651). For floats the element is
//! first rotated left by one bit, which moves the sign from the top bit to the
//! bottom one: BF16 and F32 then have their whole 8-bit exponent in plane 0
//! and the sign beside the low mantissa bits in the last plane.
//!
//! Both directions are pure bit permutations, so every bit pattern (NaN
//! payloads, -0.0, denormals, infinities) survives unchanged.

use crate::dtype::{Dtype, Grouping};
use crate::kernels;

/// Splits `input` (little-endian elements of `dtype`) into `dtype.width()`
/// planes. `planes[i]` must have length `input.len() / width`.
///
/// # Panics
/// If `input.len()` is not a multiple of the width or a plane has the wrong length:
/// both are programming errors of the caller, checked here.
pub fn split(dtype: Dtype, input: &[u8], planes: &mut [Vec<u8>]) {
    let w = dtype.width();
    assert_eq!(
        input.len() % w,
        0,
        "input is not a whole number of elements"
    );
    assert_eq!(planes.len(), w);
    let n = input.len() / w;
    for p in planes.iter_mut() {
        // Every byte is overwritten below; resizing a reused buffer to the
        // same length costs nothing.
        p.resize(n, 0);
        p.truncate(n);
    }
    let rotate = dtype.grouping() == Grouping::RotateSign;
    match (w, rotate) {
        (1, _) => planes[0].copy_from_slice(input),
        (2, _) => {
            let [p0, p1] = planes else { unreachable!() };
            if rotate {
                kernels::split2::<true>(input, p0, p1);
            } else {
                kernels::split2::<false>(input, p0, p1);
            }
        }
        (4, _) => {
            let [p0, p1, p2, p3] = planes else {
                unreachable!()
            };
            let ps = [&mut p0[..], &mut p1[..], &mut p2[..], &mut p3[..]];
            if rotate {
                kernels::split4::<true>(input, ps);
            } else {
                kernels::split4::<false>(input, ps);
            }
        }
        _ => {
            for (i, e) in input.chunks_exact(w).enumerate() {
                let be = element_be(e, rotate);
                for (k, p) in planes.iter_mut().enumerate() {
                    p[i] = be[k];
                }
            }
        }
    }
}

/// Merges planes produced by [`split`] back into little-endian elements.
/// `out.len()` must be `planes[0].len() * width`.
pub fn merge(dtype: Dtype, planes: &[&[u8]], out: &mut [u8]) {
    merge_xor(dtype, planes, None, out);
}

/// [`merge`], and XORs the merged elements with `base` (as long as `out`)
/// on the way out: an XOR delta chunk is restored in the pass that merges
/// its planes, not in a second one over the chunk.
pub fn merge_xor(dtype: Dtype, planes: &[&[u8]], base: Option<&[u8]>, out: &mut [u8]) {
    let w = dtype.width();
    assert_eq!(planes.len(), w);
    let n = out.len() / w;
    assert_eq!(out.len() % w, 0);
    assert!(planes.iter().all(|p| p.len() == n), "plane length mismatch");
    assert!(
        base.is_none_or(|b| b.len() == out.len()),
        "base length mismatch"
    );
    let rotate = dtype.grouping() == Grouping::RotateSign;
    match (w, rotate) {
        (1, _) => out.copy_from_slice(planes[0]),
        (2, false) => kernels::merge2::<false>(planes[0], planes[1], base, out),
        (2, true) => kernels::merge2::<true>(planes[0], planes[1], base, out),
        (4, _) => {
            let ps = [planes[0], planes[1], planes[2], planes[3]];
            if rotate {
                kernels::merge4::<true>(ps, base, out);
            } else {
                kernels::merge4::<false>(ps, base, out);
            }
            return;
        }
        _ => {
            for (i, o) in out.chunks_exact_mut(w).enumerate() {
                let mut be = [0u8; 8];
                for (k, p) in planes.iter().enumerate() {
                    be[k] = p[i];
                }
                let v = u64::from_be_bytes(be);
                let v = if rotate { v.rotate_right(1) } else { v };
                o.copy_from_slice(&v.to_le_bytes()[..w]);
            }
        }
    }
    if let Some(b) = base
        && w != 2
    {
        for (o, b) in out.iter_mut().zip(b) {
            *o ^= b;
        }
    }
}

/// One element of width `e.len()` (at most 8), optionally rotated, as
/// big-endian bytes in the first `e.len()` positions.
fn element_be(e: &[u8], rotate: bool) -> [u8; 8] {
    let mut le = [0u8; 8];
    le[..e.len()].copy_from_slice(e);
    let v = u64::from_le_bytes(le);
    // Only width 8 reaches here with rotation (F64); widths below 8 are plain bytes.
    let v = if rotate { v.rotate_left(1) } else { v };
    let be = v.to_be_bytes();
    let mut out = [0u8; 8];
    out[..e.len()].copy_from_slice(&be[8 - e.len()..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(dtype: Dtype, input: &[u8]) -> Vec<Vec<u8>> {
        let mut planes = vec![Vec::new(); dtype.width()];
        split(dtype, input, &mut planes);
        let refs: Vec<&[u8]> = planes.iter().map(|p| p.as_slice()).collect();
        let mut out = vec![0xAA; input.len()];
        merge(dtype, &refs, &mut out);
        assert_eq!(out, input, "{dtype}");
        // With a base: the merge XORed with it, byte for byte.
        let base: Vec<u8> = (0..input.len()).map(|i| (i * 37 + 11) as u8).collect();
        merge_xor(dtype, &refs, Some(&base), &mut out);
        let want: Vec<u8> = input.iter().zip(&base).map(|(x, b)| x ^ b).collect();
        assert_eq!(out, want, "{dtype} with a base");
        planes
    }

    #[test]
    fn bf16_exponent_fills_plane_zero() {
        // 1.0 in bf16 is 0x3F80: sign 0, exponent 0x7F, mantissa 0.
        // -1.0 is 0xBF80: same exponent, sign in the low bit of plane 1.
        let input = [0x80, 0x3F, 0x80, 0xBF];
        let planes = round_trip(Dtype::BF16, &input);
        assert_eq!(planes[0], vec![0x7F, 0x7F]);
        assert_eq!(planes[1], vec![0x00, 0x01]);
    }

    #[test]
    fn f32_exponent_fills_plane_zero() {
        let input = [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat();
        let planes = round_trip(Dtype::F32, &input);
        assert_eq!(planes[0], vec![0x7F, 0x80]);
        assert_eq!(planes[3], vec![0x00, 0x01]);
    }

    #[test]
    fn every_u16_pattern_survives() {
        let input: Vec<u8> = (0..=u16::MAX).flat_map(|v| v.to_le_bytes()).collect();
        for d in [Dtype::BF16, Dtype::F16, Dtype::I16, Dtype::U16] {
            round_trip(d, &input);
        }
    }

    #[test]
    fn wide_types_survive_special_values() {
        let f64s = [
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE / 2.0,
            1e300,
        ];
        let mut input: Vec<u8> = f64s.iter().flat_map(|v| v.to_le_bytes()).collect();
        input.extend_from_slice(&f64::from_bits(0x7FF8_DEAD_BEEF_0001).to_le_bytes());
        for d in [Dtype::F64, Dtype::I64, Dtype::U64] {
            round_trip(d, &input);
        }
        let f32s = [0.0f32, -0.0, f32::NAN, -f32::INFINITY, 1e-45];
        let input: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
        for d in [Dtype::F32, Dtype::I32, Dtype::U32] {
            round_trip(d, &input);
        }
    }

    #[test]
    fn empty_input() {
        for d in Dtype::ALL {
            round_trip(d, &[]);
        }
    }
}
