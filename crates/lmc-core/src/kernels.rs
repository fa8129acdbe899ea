//! The hot loops that profiles showed to need unchecked memory access, each
//! beside its safe twin. This is the only module of the crate allowed
//! `unsafe`; every `unsafe` block states why it is sound.
//!
//! Each kernel is written once, generic over a `CHECKED` flag: with `true`
//! every access is bounds-checked (the safe twin), with `false` the accesses
//! that the kernel's own preconditions already prove in bounds go
//! unchecked. The preconditions are established inside the kernel, from its
//! arguments, so no caller can break them. Tests run both forms on the same
//! inputs, valid and corrupt, and compare their outputs byte for byte.
//!
//! The build picks the unchecked form unless the `safe-kernels` feature is
//! on (`cargo test --features safe-kernels` runs everything on the twins).
//!
//! What is here:
//! - the Huffman decode loop ([`huffman_decode`]), checked and unchecked;
//! - SSE2 forms of the byte-plane split and merge (x86-64 only; elsewhere,
//!   and with `safe-kernels`, the scalar twins run);
//! - BMI2 builds of the Huffman decode and encode loops, chosen at run time
//!   where the CPU has BMI2 (the only `unsafe` there is calling a function
//!   compiled for a CPU feature, after checking the CPU has it).

#![allow(unsafe_code)]

/// Whether the crate uses the checked twins (feature `safe-kernels`).
pub(crate) const CHECKED: bool = cfg!(feature = "safe-kernels");

/// Index width of the Huffman decode tables.
pub(crate) const HUFFMAN_TABLE_BITS: u32 = 11;
const TABLE_MASK: u64 = (1 << HUFFMAN_TABLE_BITS) - 1;
/// Lookups per stream between refills: 5 x 11 bits = 55, within the 57
/// bits a refill guarantees.
const BURST: usize = 5;
/// Most symbols one multi-symbol table entry emits (the bytes stored per lookup).
pub(crate) const MULTI: usize = 4;
/// Most symbols one stream emits between refills.
const OUT_PER_ROUND: usize = MULTI * BURST;
/// Most input bytes one stream's bit position advances between refills:
/// (7 + 55) / 8.
const IN_PER_ROUND: usize = 7;

/// Where one Huffman stream stands: its next bit, counted from the start
/// of the whole block of streams, and its next output position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamPos {
    pub bit: u64,
    pub out: usize,
}

/// Whether to call the kernels' BMI2 builds (x86-64 CPUs since 2013). With
/// BMI2, shifts by a register amount (SHLX, SHRX) no longer tie up the
/// count register, which the Huffman loops' state otherwise spills for:
/// measured +10-20% on Huffman decoding of MiniLM's BF16 exponent plane.
#[inline]
fn has_bmi2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("bmi2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`huffman_decode`], compiled for BMI2 where the CPU has it.
#[inline]
pub(crate) fn huffman_decode_best<const N: usize, const CHECKED: bool>(
    table: &[u64; 1 << HUFFMAN_TABLE_BITS],
    data: &[u8],
    limit: [usize; N],
    out: &mut [u8],
    end: [usize; N],
    pos: &mut [StreamPos; N],
) {
    #[cfg(target_arch = "x86_64")]
    if has_bmi2() {
        // SAFETY: the CPU has BMI2 (checked just above), the only
        // requirement of calling a function compiled for it.
        unsafe { huffman_decode_bmi2::<N, CHECKED>(table, data, limit, out, end, pos) };
        return;
    }
    huffman_decode::<N, CHECKED>(table, data, limit, out, end, pos)
}

/// The same code as [`huffman_decode`] (inlined), built with BMI2. A direct
/// call is what gets it inlined; through a closure it was not.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2")]
fn huffman_decode_bmi2<const N: usize, const CHECKED: bool>(
    table: &[u64; 1 << HUFFMAN_TABLE_BITS],
    data: &[u8],
    limit: [usize; N],
    out: &mut [u8],
    end: [usize; N],
    pos: &mut [StreamPos; N],
) {
    huffman_decode::<N, CHECKED>(table, data, limit, out, end, pos)
}

/// The Huffman encoder's stream loop ([`crate::huffman::encoder`]),
/// compiled for BMI2 where the CPU has it.
#[inline]
pub(crate) fn huffman_encode_best(
    symbols: &[u8],
    lengths: &[u8; 256],
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    pairs: &mut Vec<u32>,
) {
    #[cfg(target_arch = "x86_64")]
    if has_bmi2() {
        // SAFETY: the CPU has BMI2 (checked just above), the only
        // requirement of calling a function compiled for it.
        unsafe { huffman_encode_bmi2(symbols, lengths, out, scratch, pairs) };
        return;
    }
    crate::huffman::encoder::encode_streams(symbols, lengths, out, scratch, pairs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2")]
fn huffman_encode_bmi2(
    symbols: &[u8],
    lengths: &[u8; 256],
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    pairs: &mut Vec<u32>,
) {
    crate::huffman::encoder::encode_streams(symbols, lengths, out, scratch, pairs)
}

/// Decodes `N` interleaved Huffman streams with a multi-symbol table
/// (entry: `bits | count << 8 | symbols << 32`, first symbol lowest, at
/// most [`MULTI`] symbols and [`HUFFMAN_TABLE_BITS`] bits), for as long as
/// every stream has 8 bytes ahead of it within `limit[k]` and room for a
/// whole round of output before `end[k]`. Stream `k` reads `data` up to
/// `limit[k]` and writes `out` up to `end[k]`. Returns with `pos` where each
/// stream stopped; the caller decodes the rest one symbol at a time.
///
/// Bits are read least significant first: a refill loads the 8 bytes at
/// the stream's byte position and shifts out the bits already used, which
/// leaves at least 57 fresh bits, enough for [`BURST`] lookups.
#[inline(always)]
pub(crate) fn huffman_decode<const N: usize, const CHECKED: bool>(
    table: &[u64; 1 << HUFFMAN_TABLE_BITS],
    data: &[u8],
    limit: [usize; N],
    out: &mut [u8],
    end: [usize; N],
    pos: &mut [StreamPos; N],
) {
    // The preconditions of the unchecked accesses below, checked once.
    // Positions past their limits simply mean no rounds run.
    let limit = limit.map(|l| l.min(data.len()));
    let end = end.map(|e| e.min(out.len()));
    let mut bit = pos.map(|p| p.bit);
    let mut o = pos.map(|p| p.out);
    let mut b = [0u64; N];
    loop {
        // Rounds every stream can do: each reads 8 bytes at a byte
        // position that then advances by at most IN_PER_ROUND, and writes
        // at most OUT_PER_ROUND bytes.
        let mut rounds = usize::MAX;
        for k in 0..N {
            let byte = (bit[k] >> 3) as usize;
            let in_rounds = match limit[k].checked_sub(byte + 8) {
                Some(room) => room / IN_PER_ROUND + 1,
                None => 0,
            };
            let out_rounds = end[k].saturating_sub(o[k]) / OUT_PER_ROUND;
            rounds = rounds.min(in_rounds).min(out_rounds);
        }
        if rounds == 0 {
            break;
        }
        for _ in 0..rounds {
            for k in 0..N {
                let byte = (bit[k] >> 3) as usize;
                let word = if CHECKED {
                    u64::from_le_bytes(data[byte..byte + 8].try_into().unwrap())
                } else {
                    // SAFETY: byte + 8 <= limit[k] <= data.len(): `rounds`
                    // allows this round, and each earlier round of this
                    // batch advanced `byte` by at most IN_PER_ROUND.
                    u64::from_le(unsafe {
                        std::ptr::read_unaligned(data.as_ptr().add(byte).cast::<u64>())
                    })
                };
                b[k] = word >> (bit[k] & 7);
            }
            for _ in 0..BURST {
                for k in 0..N {
                    let e = table[(b[k] & TABLE_MASK) as usize];
                    let syms = ((e >> 32) as u32).to_le_bytes();
                    if CHECKED {
                        out[o[k]..o[k] + MULTI].copy_from_slice(&syms);
                    } else {
                        // SAFETY: o[k] + MULTI <= end[k] <= out.len():
                        // `rounds` left OUT_PER_ROUND bytes before end[k]
                        // for this round, and this round has emitted at
                        // most MULTI * (BURST - 1) of them so far.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                syms.as_ptr(),
                                out.as_mut_ptr().add(o[k]),
                                MULTI,
                            );
                        }
                    }
                    o[k] += ((e >> 8) & 0xFF) as usize;
                    let used = e & 0xFF;
                    b[k] >>= used;
                    bit[k] += used;
                }
            }
        }
    }
    for k in 0..N {
        pos[k] = StreamPos {
            bit: bit[k],
            out: o[k],
        };
    }
}

/// Splits elements of 2 bytes (little-endian, each rotated left one bit if
/// `ROTATE`) into their high and low bytes: `hi[i]`, `lo[i]` from element `i`.
/// `input.len()` must be `2 * hi.len()` and `lo.len() == hi.len()`.
pub(crate) fn split2<const ROTATE: bool>(input: &[u8], hi: &mut [u8], lo: &mut [u8]) {
    assert!(input.len() == 2 * hi.len() && hi.len() == lo.len());
    let done = if CHECKED {
        0
    } else {
        sse2::split2::<ROTATE>(input, hi, lo)
    };
    split2_scalar::<ROTATE>(&input[2 * done..], &mut hi[done..], &mut lo[done..]);
}

fn split2_scalar<const ROTATE: bool>(input: &[u8], hi: &mut [u8], lo: &mut [u8]) {
    for ((e, a), b) in input.chunks_exact(2).zip(hi.iter_mut()).zip(lo.iter_mut()) {
        let mut v = u16::from_le_bytes([e[0], e[1]]);
        if ROTATE {
            v = v.rotate_left(1);
        }
        *a = (v >> 8) as u8;
        *b = v as u8;
    }
}

/// Splits elements of 4 bytes (little-endian, each rotated left one bit if
/// `ROTATE`) into four planes, most significant byte first.
/// `input.len()` must be `4 * n` with every plane `n` long.
pub(crate) fn split4<const ROTATE: bool>(input: &[u8], planes: [&mut [u8]; 4]) {
    let n = planes[0].len();
    assert!(input.len() == 4 * n && planes.iter().all(|p| p.len() == n));
    let [p0, p1, p2, p3] = planes;
    let done = if CHECKED {
        0
    } else {
        sse2::split4::<ROTATE>(input, [&mut *p0, &mut *p1, &mut *p2, &mut *p3])
    };
    split4_scalar::<ROTATE>(
        &input[4 * done..],
        [
            &mut p0[done..],
            &mut p1[done..],
            &mut p2[done..],
            &mut p3[done..],
        ],
    );
}

fn split4_scalar<const ROTATE: bool>(input: &[u8], planes: [&mut [u8]; 4]) {
    let [p0, p1, p2, p3] = planes;
    let it = input
        .chunks_exact(4)
        .zip(p0.iter_mut())
        .zip(p1.iter_mut())
        .zip(p2.iter_mut())
        .zip(p3.iter_mut());
    for ((((e, a), b), c), d) in it {
        let mut v = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        if ROTATE {
            v = v.rotate_left(1);
        }
        [*a, *b, *c, *d] = v.to_be_bytes();
    }
}

/// The inverse of [`split4`]: merges four planes into little-endian elements.
pub(crate) fn merge4<const ROTATE: bool>(planes: [&[u8]; 4], out: &mut [u8]) {
    let n = planes[0].len();
    assert!(out.len() == 4 * n && planes.iter().all(|p| p.len() == n));
    let done = if CHECKED {
        0
    } else {
        sse2::merge4::<ROTATE>(planes, out)
    };
    merge4_scalar::<ROTATE>(planes.map(|p| &p[done..]), &mut out[4 * done..]);
}

fn merge4_scalar<const ROTATE: bool>(planes: [&[u8]; 4], out: &mut [u8]) {
    let it = out
        .chunks_exact_mut(4)
        .zip(planes[0])
        .zip(planes[1])
        .zip(planes[2])
        .zip(planes[3]);
    for ((((o, a), b), c), d) in it {
        let mut v = u32::from_be_bytes([*a, *b, *c, *d]);
        if ROTATE {
            v = v.rotate_right(1);
        }
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// SSE2 forms of the byte-plane kernels (SSE2 is part of every x86_64
/// CPU, so no run-time check is needed). Each returns how many elements it
/// did, a multiple of its block; the scalar twin does the rest. Elsewhere
/// they do nothing.
mod sse2 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// 16 elements a step: two loads, one-bit rotation per 16-bit lane,
    /// then the high and the low bytes packed into one vector each.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn split2<const ROTATE: bool>(input: &[u8], hi: &mut [u8], lo: &mut [u8]) -> usize {
        let blocks = hi.len().min(lo.len()).min(input.len() / 2) / 16;
        for i in 0..blocks {
            // SAFETY: SSE2 is always available on x86_64. Block i reads
            // input[32i..32i+32] and writes hi/lo[16i..16i+16], inside the
            // slices since i < blocks (computed from their lengths above);
            // loadu/storeu take unaligned pointers.
            unsafe {
                let src = input.as_ptr().add(32 * i);
                let mut x = _mm_loadu_si128(src.cast());
                let mut y = _mm_loadu_si128(src.add(16).cast());
                if ROTATE {
                    x = _mm_or_si128(_mm_slli_epi16(x, 1), _mm_srli_epi16(x, 15));
                    y = _mm_or_si128(_mm_slli_epi16(y, 1), _mm_srli_epi16(y, 15));
                }
                let low = _mm_set1_epi16(0xFF);
                let h = _mm_packus_epi16(_mm_srli_epi16(x, 8), _mm_srli_epi16(y, 8));
                let l = _mm_packus_epi16(_mm_and_si128(x, low), _mm_and_si128(y, low));
                _mm_storeu_si128(hi.as_mut_ptr().add(16 * i).cast(), h);
                _mm_storeu_si128(lo.as_mut_ptr().add(16 * i).cast(), l);
            }
        }
        16 * blocks
    }

    /// 16 elements a step: for each plane, the byte of every 32-bit lane
    /// shifted down, masked, and packed (signed packing is exact on
    /// values below 256).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn split4<const ROTATE: bool>(input: &[u8], planes: [&mut [u8]; 4]) -> usize {
        let n = planes
            .iter()
            .map(|p| p.len())
            .min()
            .unwrap_or(0)
            .min(input.len() / 4);
        let blocks = n / 16;
        let [p0, p1, p2, p3] = planes;
        for i in 0..blocks {
            // SAFETY: SSE2 is always available on x86_64. Block i reads
            // input[64i..64i+64] and writes each plane's [16i..16i+16],
            // inside the slices since i < blocks <= n / 16.
            unsafe {
                let src = input.as_ptr().add(64 * i);
                let mut v = [0; 4].map(|_| _mm_setzero_si128());
                for (k, vk) in v.iter_mut().enumerate() {
                    let x = _mm_loadu_si128(src.add(16 * k).cast());
                    *vk = if ROTATE {
                        _mm_or_si128(_mm_slli_epi32(x, 1), _mm_srli_epi32(x, 31))
                    } else {
                        x
                    };
                }
                let mask = _mm_set1_epi32(0xFF);
                let byte = |shift: i32| {
                    let s = _mm_cvtsi32_si128(shift);
                    let t = v.map(|x| _mm_and_si128(_mm_srl_epi32(x, s), mask));
                    _mm_packus_epi16(_mm_packs_epi32(t[0], t[1]), _mm_packs_epi32(t[2], t[3]))
                };
                _mm_storeu_si128(p0.as_mut_ptr().add(16 * i).cast(), byte(24));
                _mm_storeu_si128(p1.as_mut_ptr().add(16 * i).cast(), byte(16));
                _mm_storeu_si128(p2.as_mut_ptr().add(16 * i).cast(), byte(8));
                _mm_storeu_si128(p3.as_mut_ptr().add(16 * i).cast(), byte(0));
            }
        }
        16 * blocks
    }

    /// 16 elements a step: bytes interleaved low plane first (planes 3
    /// and 2, then 1 and 0), the pairs interleaved into 32-bit lanes, then
    /// rotated back.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn merge4<const ROTATE: bool>(planes: [&[u8]; 4], out: &mut [u8]) -> usize {
        let n = planes
            .iter()
            .map(|p| p.len())
            .min()
            .unwrap_or(0)
            .min(out.len() / 4);
        let blocks = n / 16;
        for i in 0..blocks {
            // SAFETY: SSE2 is always available on x86_64. Block i reads
            // each plane's [16i..16i+16] and writes out[64i..64i+64],
            // inside the slices since i < blocks <= n / 16.
            unsafe {
                let [a, b, c, d] = planes.map(|p| _mm_loadu_si128(p.as_ptr().add(16 * i).cast()));
                let dc_lo = _mm_unpacklo_epi8(d, c);
                let dc_hi = _mm_unpackhi_epi8(d, c);
                let ba_lo = _mm_unpacklo_epi8(b, a);
                let ba_hi = _mm_unpackhi_epi8(b, a);
                let mut w = [
                    _mm_unpacklo_epi16(dc_lo, ba_lo),
                    _mm_unpackhi_epi16(dc_lo, ba_lo),
                    _mm_unpacklo_epi16(dc_hi, ba_hi),
                    _mm_unpackhi_epi16(dc_hi, ba_hi),
                ];
                if ROTATE {
                    w = w.map(|x| _mm_or_si128(_mm_srli_epi32(x, 1), _mm_slli_epi32(x, 31)));
                }
                let dst = out.as_mut_ptr().add(64 * i);
                for (k, x) in w.into_iter().enumerate() {
                    _mm_storeu_si128(dst.add(16 * k).cast(), x);
                }
            }
        }
        16 * blocks
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn split2<const ROTATE: bool>(_: &[u8], _: &mut [u8], _: &mut [u8]) -> usize {
        0
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn split4<const ROTATE: bool>(_: &[u8], _: [&mut [u8]; 4]) -> usize {
        0
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn merge4<const ROTATE: bool>(_: [&[u8]; 4], _: &mut [u8]) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::lcg;

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut rnd = lcg(seed);
        (0..n).map(|_| rnd() as u8).collect()
    }

    /// The vector forms give what the scalar ones give, at every length
    /// around their block sizes, rotated or not.
    #[test]
    fn plane_twins_agree() {
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 100, 1000, 4099] {
            let input = bytes(4 * n, n as u64);
            // Width 2.
            let e2 = &input[..2 * n];
            let (mut h1, mut l1, mut h2, mut l2) = (vec![0; n], vec![0; n], vec![1; n], vec![1; n]);
            split2_scalar::<true>(e2, &mut h1, &mut l1);
            split2::<true>(e2, &mut h2, &mut l2);
            assert_eq!((&h1, &l1), (&h2, &l2), "split2 rotated, {n}");
            split2_scalar::<false>(e2, &mut h1, &mut l1);
            split2::<false>(e2, &mut h2, &mut l2);
            assert_eq!((&h1, &l1), (&h2, &l2), "split2, {n}");
            // Width 4, both ways.
            for rotate in [false, true] {
                let mut a = vec![vec![0u8; n]; 4];
                let mut b = vec![vec![1u8; n]; 4];
                let [a0, a1, a2, a3] = &mut a[..] else {
                    unreachable!()
                };
                let [b0, b1, b2, b3] = &mut b[..] else {
                    unreachable!()
                };
                if rotate {
                    split4_scalar::<true>(&input, [a0, a1, a2, a3]);
                    split4::<true>(&input, [b0, b1, b2, b3]);
                } else {
                    split4_scalar::<false>(&input, [a0, a1, a2, a3]);
                    split4::<false>(&input, [b0, b1, b2, b3]);
                }
                assert_eq!(a, b, "split4 rotate {rotate}, {n}");
                let planes: [&[u8]; 4] = std::array::from_fn(|k| &a[k][..]);
                let (mut o1, mut o2) = (vec![0u8; 4 * n], vec![1u8; 4 * n]);
                if rotate {
                    merge4_scalar::<true>(planes, &mut o1);
                    merge4::<true>(planes, &mut o2);
                } else {
                    merge4_scalar::<false>(planes, &mut o1);
                    merge4::<false>(planes, &mut o2);
                }
                assert_eq!(o1, input, "merge4 scalar rotate {rotate}, {n}");
                assert_eq!(o2, input, "merge4 rotate {rotate}, {n}");
            }
        }
    }

    /// Both forms agree on arbitrary tables, data and positions: the
    /// unchecked form never reads or writes where the checked one would
    /// have panicked (it would have, had the bounds been wrong).
    #[test]
    fn huffman_twins_agree() {
        let mut rnd = lcg(7);
        for case in 0..300 {
            let mut table = [0u64; 1 << HUFFMAN_TABLE_BITS];
            for e in table.iter_mut() {
                let count = rnd() % 5;
                let bits = 1 + rnd() % 11;
                *e = bits | count << 8 | (rnd() & 0xFFFF_FFFF) << 32;
            }
            let dlen = (rnd() % 400) as usize;
            let data: Vec<u8> = (0..dlen).map(|_| rnd() as u8).collect();
            let olen = (rnd() % 600) as usize;
            let limit = [0; 4].map(|_| rnd() as usize % (dlen + 20));
            let end = [0; 4].map(|_| rnd() as usize % (olen + 40));
            let start = [0; 4].map(|_| StreamPos {
                bit: rnd() % (8 * dlen as u64 + 64),
                out: rnd() as usize % (olen + 10),
            });
            let (mut out1, mut out2) = (vec![0u8; olen], vec![0u8; olen]);
            let (mut p1, mut p2) = (start, start);
            huffman_decode::<4, true>(&table, &data, limit, &mut out1, end, &mut p1);
            huffman_decode_best::<4, false>(&table, &data, limit, &mut out2, end, &mut p2);
            assert_eq!(p1, p2, "case {case}");
            assert_eq!(out1, out2, "case {case}");
            let (mut q1, mut q2) = ([start[0]], [start[0]]);
            huffman_decode::<1, true>(&table, &data, [limit[0]], &mut out1, [end[0]], &mut q1);
            huffman_decode_best::<1, false>(
                &table,
                &data,
                [limit[0]],
                &mut out2,
                [end[0]],
                &mut q2,
            );
            assert_eq!(q1, q2, "case {case}, one stream");
            assert_eq!(out1, out2, "case {case}, one stream");
        }
    }
}
