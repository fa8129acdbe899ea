//! The hot loops that profiles showed to need unchecked memory access, each
//! beside its safe twin. This is the only module of the crate allowed
//! `unsafe`; every `unsafe` block states why it is sound.
//!
//! Each kernel is written once, generic over a `CHECKED` flag: with `true`
//! every access is bounds-checked (the safe twin), with `false` the accesses
//! that the kernel's own preconditions already prove in bounds go
//! unchecked. The preconditions are established inside the kernel, from its
//! arguments and their types (a Huffman table is a [`HuffmanDecodeTable`],
//! whose entries its constructor checked), so no caller can break them. Tests run both forms on the same
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
//!   compiled for a CPU feature, after checking the CPU has it);
//! - SSSE3 forms of the partition and interleave of a split plane's two
//!   parts ([`partition`], [`interleave`]), chosen at run time;
//! - AVX2 and AVX-512 forms of the rANS32 decode and encode loops
//!   ([`rans32_decode`], [`rans32_encode`]), chosen at run time, beside
//!   their scalar twins;
//! - the bitmap sparse delta chunk's passes: the XOR with its map
//!   ([`xor_bitmap`]) and the gathering of the changed elements
//!   ([`compact`]) in AVX-512, their expansion into the base copy
//!   ([`expand_xor`]) in AVX-512, SSSE3 (two-byte elements) and AVX2
//!   (four-byte), chosen at run time, beside their scalar twins.

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

/// A multi-symbol Huffman decode table that [`huffman_decode`] can trust:
/// entries `bits | count << 8 | symbols << 32` (first symbol lowest) with
/// `bits` in 1..=[`HUFFMAN_TABLE_BITS`] and `count` in 1..=[`MULTI`]. The
/// unchecked accesses of the kernel rely on those limits; the field is
/// private, so the only way to get a table is [`HuffmanDecodeTable::new`],
/// which checks every entry.
/// It borrows the entries (16 KiB, built on the decoder's stack): a copy
/// a block showed in profiles.
pub(crate) struct HuffmanDecodeTable<'a>(&'a [u64; 1 << HUFFMAN_TABLE_BITS]);

impl HuffmanDecodeTable<'_> {
    /// The table of `entries`, or `None` if an entry is outside the limits.
    pub(crate) fn new(entries: &[u64; 1 << HUFFMAN_TABLE_BITS]) -> Option<HuffmanDecodeTable<'_>> {
        // A fold, not `all`: without the early exit the check vectorises
        // (it is run on every block's table).
        let ok = entries.iter().fold(true, |ok, &e| {
            let (bits, count) = (e & 0xFF, e >> 8 & 0xFF);
            ok & (1..=u64::from(HUFFMAN_TABLE_BITS)).contains(&bits)
                & (1..=MULTI as u64).contains(&count)
        });
        ok.then_some(HuffmanDecodeTable(entries))
    }
}

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
    table: &HuffmanDecodeTable<'_>,
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
    table: &HuffmanDecodeTable<'_>,
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
/// (each lookup at most [`MULTI`] symbols and [`HUFFMAN_TABLE_BITS`] bits,
/// as [`HuffmanDecodeTable`] guarantees), for as long as
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
    table: &HuffmanDecodeTable<'_>,
    data: &[u8],
    limit: [usize; N],
    out: &mut [u8],
    end: [usize; N],
    pos: &mut [StreamPos; N],
) {
    // The preconditions of the unchecked accesses below, checked once.
    // Positions past their limits simply mean no rounds run.
    let table = &table.0;
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
                    // batch advanced `byte` by at most IN_PER_ROUND (BURST
                    // lookups of at most HUFFMAN_TABLE_BITS bits each, a
                    // limit HuffmanDecodeTable::new checked on every entry).
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
                        // most MULTI * (BURST - 1) of them so far (each
                        // entry's count is at most MULTI, a limit
                        // HuffmanDecodeTable::new checked).
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

/// The number of elements a bitmap marks (its set bits), if it is a map
/// of `n` elements: `ceil(n / 8)` bytes, bit `e % 8` of byte `e / 8` for
/// element `e`, no bit set at or past `n`. `None` otherwise.
pub(crate) fn bitmap_count(bits: &[u8], n: usize) -> Option<usize> {
    if bits.len() != n.div_ceil(8) {
        return None;
    }
    if !n.is_multiple_of(8) && bits.last().is_some_and(|&b| b >> (n % 8) != 0) {
        return None;
    }
    let words = bits.chunks_exact(8);
    let tail: u32 = words.remainder().iter().map(|b| b.count_ones()).sum();
    let ones: u32 = words
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")).count_ones())
        .sum();
    Some((ones + tail) as usize)
}

/// Decodes a bitmap sparse chunk: `out` gets `base`, with element `e` (of
/// `width` bytes) XORed with the next element of `values` wherever bit `e`
/// of `bits` is set. Returns `false`, leaving `out` as it was, unless
/// `base` and `out` hold the same `n` whole elements, `bits` is a map of
/// `n` elements ([`bitmap_count`]) and `values` holds one element for each
/// bit set: the kernel checks its own preconditions, whatever the caller.
///
/// AVX-512 (with VBMI2 for widths 1 and 2) where the CPU has it, else
/// SSSE3 (width 2) or AVX2 (width 4), chosen at run time: a block of
/// elements at a time, the changed ones moved into place by an expand or a
/// table shuffle; else (and with `safe-kernels`) the scalar twin.
pub(crate) fn expand_xor(
    width: usize,
    bits: &[u8],
    values: &[u8],
    base: &[u8],
    out: &mut [u8],
) -> bool {
    if width == 0 || base.len() != out.len() || !out.len().is_multiple_of(width) {
        return false;
    }
    let n = out.len() / width;
    if bitmap_count(bits, n).and_then(|m| m.checked_mul(width)) != Some(values.len()) {
        return false;
    }
    if !CHECKED {
        #[cfg(target_arch = "x86_64")]
        {
            let vbmi2 = || has_avx512_bw() && std::arch::is_x86_feature_detected!("avx512vbmi2");
            // SAFETY (each call): the CPU has the features the function is
            // compiled for (checked in the same condition), and the
            // lengths were checked above, as the functions require.
            match width {
                1 if vbmi2() => return unsafe { expand_simd::xor1(bits, values, base, out) },
                2 if vbmi2() => return unsafe { expand_simd::xor2(bits, values, base, out) },
                2 if has_ssse3() => {
                    let done = unsafe { expand_simd::xor2_ssse3(bits, values, base, out) };
                    finish_expand(2, done, bits, values, base, out);
                    return true;
                }
                4 if has_avx512_bw() => {
                    return unsafe { expand_simd::xor4(bits, values, base, out) };
                }
                4 if std::arch::is_x86_feature_detected!("avx2") => {
                    let done = unsafe { expand_simd::xor4_avx2(bits, values, base, out) };
                    finish_expand(4, done, bits, values, base, out);
                    return true;
                }
                8 if has_avx512_bw() => {
                    return unsafe { expand_simd::xor8(bits, values, base, out) };
                }
                _ => {}
            }
        }
    }
    expand_xor_scalar(width, bits, values, base, out);
    true
}

/// Finishes with the scalar twin what a vector form of [`expand_xor`] left:
/// it did the first `done.0` elements (a multiple of 8) and the first
/// `done.1` values.
#[cfg(target_arch = "x86_64")]
fn finish_expand(
    width: usize,
    done: (usize, usize),
    bits: &[u8],
    values: &[u8],
    base: &[u8],
    out: &mut [u8],
) {
    let (e, k) = done;
    expand_xor_scalar(
        width,
        &bits[e / 8..],
        &values[k * width..],
        &base[e * width..],
        &mut out[e * width..],
    );
}

/// The scalar twin of [`expand_xor`], for lengths it checked.
pub(crate) fn expand_xor_scalar(
    width: usize,
    bits: &[u8],
    values: &[u8],
    base: &[u8],
    out: &mut [u8],
) {
    out.copy_from_slice(base);
    for (e, v) in set_bits(bits).zip(values.chunks_exact(width)) {
        let Some(o) = out.get_mut(e * width..(e + 1) * width) else {
            return;
        };
        if width == 2 {
            let x = u16::from_ne_bytes([o[0], o[1]]) ^ u16::from_ne_bytes([v[0], v[1]]);
            o.copy_from_slice(&x.to_ne_bytes());
        } else {
            for (a, b) in o.iter_mut().zip(v) {
                *a ^= b;
            }
        }
    }
}

/// The elements a bitmap marks (bit `e % 8` of byte `e / 8` for element
/// `e`), in order.
pub(crate) fn set_bits(bits: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bits.chunks(8).enumerate().flat_map(|(i, w)| {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        let mut word = u64::from_le_bytes(b);
        std::iter::from_fn(move || {
            (word != 0).then(|| {
                let e = i * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                e
            })
        })
    })
}

/// The first passes of coding a delta chunk: `x` gets `data ^ base`, and
/// `bits` the map of the elements of `width` bytes of `x` that are not all
/// zero (bit `e % 8` of byte `e / 8`, the bits past the last element
/// zero). Returns their number, or `None`, writing nothing, unless
/// `data`, `base` and `x` hold the same `n` whole elements and `bits`
/// `ceil(n / 8)` bytes.
///
/// AVX-512 for widths 1, 2, 4 and 8 where the CPU has it (a test against
/// zero a block, its mask the block's bits), else the scalar twin.
pub(crate) fn xor_bitmap(
    width: usize,
    data: &[u8],
    base: &[u8],
    x: &mut [u8],
    bits: &mut [u8],
) -> Option<usize> {
    if width == 0
        || data.len() != base.len()
        || data.len() != x.len()
        || !data.len().is_multiple_of(width)
        || bits.len() != (data.len() / width).div_ceil(8)
    {
        return None;
    }
    if !CHECKED {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512_bw() {
                // SAFETY (each call): the CPU has AVX-512F and BW (checked
                // just above) and the lengths are as the functions require
                // (checked at the top).
                match width {
                    1 => return Some(unsafe { expand_simd::xor_map1(data, base, x, bits) }),
                    2 => return Some(unsafe { expand_simd::xor_map2(data, base, x, bits) }),
                    4 => return Some(unsafe { expand_simd::xor_map4(data, base, x, bits) }),
                    8 => return Some(unsafe { expand_simd::xor_map8(data, base, x, bits) }),
                    _ => {}
                }
            }
        }
    }
    Some(xor_bitmap_scalar(width, data, base, x, bits))
}

/// The scalar twin of [`xor_bitmap`], for lengths it checked.
pub(crate) fn xor_bitmap_scalar(
    width: usize,
    data: &[u8],
    base: &[u8],
    x: &mut [u8],
    bits: &mut [u8],
) -> usize {
    for ((o, a), b) in x.iter_mut().zip(data).zip(base) {
        *o = a ^ b;
    }
    let mut count = 0;
    for (block, b) in x.chunks(8 * width).zip(bits.iter_mut()) {
        let mut m = 0u8;
        for (j, e) in block.chunks_exact(width).enumerate() {
            m |= u8::from(e.iter().any(|&v| v != 0)) << j;
        }
        *b = m;
        count += m.count_ones() as usize;
    }
    count
}

/// Gathers the elements of `width` bytes of `x` that `bits` marks (a map
/// of its `n` elements, [`bitmap_count`]) into `changed`, in order.
/// Returns `false`, writing nothing, unless `changed` holds exactly one
/// element for each bit set.
///
/// AVX-512 for widths 1, 2, 4 and 8 where the CPU has it (a compress a
/// block, with VBMI2 for widths 1 and 2), else the scalar twin.
pub(crate) fn compact(width: usize, x: &[u8], bits: &[u8], changed: &mut [u8]) -> bool {
    if width == 0 || !x.len().is_multiple_of(width) {
        return false;
    }
    let n = x.len() / width;
    if bitmap_count(bits, n).and_then(|m| m.checked_mul(width)) != Some(changed.len()) {
        return false;
    }
    if !CHECKED {
        #[cfg(target_arch = "x86_64")]
        {
            let vbmi2 = || has_avx512_bw() && std::arch::is_x86_feature_detected!("avx512vbmi2");
            // SAFETY (each call): the CPU has the features the function is
            // compiled for (checked in the same condition), and the
            // lengths were checked above, as the functions require.
            match width {
                1 if vbmi2() => return unsafe { expand_simd::compact1(x, bits, changed) },
                2 if vbmi2() => return unsafe { expand_simd::compact2(x, bits, changed) },
                4 if has_avx512_bw() => {
                    return unsafe { expand_simd::compact4(x, bits, changed) };
                }
                8 if has_avx512_bw() => {
                    return unsafe { expand_simd::compact8(x, bits, changed) };
                }
                _ => {}
            }
        }
    }
    compact_scalar(width, x, bits, changed);
    true
}

/// The scalar twin of [`compact`], for lengths it checked.
pub(crate) fn compact_scalar(width: usize, x: &[u8], bits: &[u8], changed: &mut [u8]) {
    for (e, t) in set_bits(bits).zip(changed.chunks_exact_mut(width)) {
        let Some(v) = x.get(e * width..(e + 1) * width) else {
            return;
        };
        t.copy_from_slice(v);
    }
}

/// The AVX-512 forms of [`expand_xor`]: each takes `L` elements at a time,
/// their `L` bits of the map as a mask; loads as many values as bits are
/// set (a masked load, so never past them), expands them into the lanes
/// the mask names (the others zero) and XORs the base block with them. The
/// last, partial block goes through the same steps under a mask of the
/// elements left.
#[cfg(target_arch = "x86_64")]
mod expand_simd {
    use std::arch::x86_64::*;

    /// `L` bits of the map from element `e` (a multiple of 8) on, fewer if
    /// the map ends first (the rest zero).
    #[inline(always)]
    fn mask_at(bits: &[u8], e: usize, l: usize) -> u64 {
        let from = e / 8;
        let to = (from + l / 8).min(bits.len());
        let mut b = [0u8; 8];
        b[..to - from].copy_from_slice(&bits[from..to]);
        u64::from_le_bytes(b)
    }

    /// A mask of the low `k` lanes, `k` at most 64.
    #[inline(always)]
    fn low(k: usize) -> u64 {
        if k >= 64 { u64::MAX } else { (1u64 << k) - 1 }
    }

    /// The AVX-512 form of `partition`: 64 bytes a step, each part's bytes
    /// gathered by a compress and stored under a mask of their count. Stops
    /// before a step whose bytes would not fit a part (the scalar twin,
    /// which the caller runs next, then panics as the contract says).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    pub(super) fn partition(
        data: &[u8],
        lead: &[u8],
        key: u8,
        a: &mut [u8],
        b: &mut [u8],
    ) -> (usize, usize, usize) {
        let n = data.len().min(lead.len());
        let k = _mm512_set1_epi8(key as i8);
        let (mut i, mut ia, mut ib) = (0usize, 0usize, 0usize);
        while i < n {
            let lanes = (n - i).min(64);
            let all = low(lanes);
            // SAFETY: the masked loads read lanes bytes of lead and data
            // from i (i + lanes <= n, within both).
            let (m, d) = unsafe {
                let l = _mm512_maskz_loadu_epi8(all, lead.as_ptr().add(i).cast());
                let d = _mm512_maskz_loadu_epi8(all, data.as_ptr().add(i).cast());
                (_mm512_mask_cmpeq_epi8_mask(all, l, k), d)
            };
            let pa = m.count_ones() as usize;
            let pb = lanes - pa;
            if ia + pa > a.len() || ib + pb > b.len() {
                break;
            }
            // SAFETY: the masked stores write pa bytes of a from ia and pb
            // of b from ib, within them (checked just above).
            unsafe {
                let ca = _mm512_maskz_compress_epi8(m, d);
                let cb = _mm512_maskz_compress_epi8(!m & all, d);
                _mm512_mask_storeu_epi8(a.as_mut_ptr().add(ia).cast(), low(pa), ca);
                _mm512_mask_storeu_epi8(b.as_mut_ptr().add(ib).cast(), low(pb), cb);
            }
            i += lanes;
            ia += pa;
            ib += pb;
        }
        (i, ia, ib)
    }

    /// The AVX-512 form of `interleave`: 64 bytes a step, as many bytes
    /// read from each part as the step takes (masked loads) and expanded
    /// into the lanes the lead bytes name. Stops before a step whose bytes
    /// a part does not hold (the scalar twin then panics).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    pub(super) fn interleave(
        a: &[u8],
        b: &[u8],
        lead: &[u8],
        key: u8,
        out: &mut [u8],
    ) -> (usize, usize, usize) {
        let n = out.len().min(lead.len());
        let k = _mm512_set1_epi8(key as i8);
        let (mut i, mut ia, mut ib) = (0usize, 0usize, 0usize);
        while i < n {
            let lanes = (n - i).min(64);
            let all = low(lanes);
            // SAFETY: the masked load reads lanes bytes of lead from i.
            let m = unsafe {
                let l = _mm512_maskz_loadu_epi8(all, lead.as_ptr().add(i).cast());
                _mm512_mask_cmpeq_epi8_mask(all, l, k)
            };
            let pa = m.count_ones() as usize;
            let pb = lanes - pa;
            if ia + pa > a.len() || ib + pb > b.len() {
                break;
            }
            // SAFETY: the masked loads read pa bytes of a from ia and pb of
            // b from ib (checked just above); the store writes lanes bytes
            // of out from i (i + lanes <= n).
            unsafe {
                let xa = _mm512_maskz_loadu_epi8(low(pa), a.as_ptr().add(ia).cast());
                let xb = _mm512_maskz_loadu_epi8(low(pb), b.as_ptr().add(ib).cast());
                let o = _mm512_maskz_expand_epi8(!m & all, xb);
                let o = _mm512_mask_expand_epi8(o, m, xa);
                _mm512_mask_storeu_epi8(out.as_mut_ptr().add(i).cast(), all, o);
            }
            i += lanes;
            ia += pa;
            ib += pb;
        }
        (i, ia, ib)
    }

    macro_rules! expand_xor_kernel {
        ($name:ident, $features:literal, $w:literal, $lanes:literal, $mask:ty,
         $load:ident, $expand:ident, $store:ident) => {
            /// Requires: the CPU features named, `base.len() == out.len()
            /// == W * n`, `bits` a map of `n` elements whose set bits
            /// number `values.len() / W` (so every load below stays in
            /// its slice).
            #[target_feature(enable = $features)]
            pub(super) fn $name(bits: &[u8], values: &[u8], base: &[u8], out: &mut [u8]) -> bool {
                let n = out.len() / $w;
                let (mut e, mut k) = (0usize, 0usize);
                while e < n {
                    let lanes = (n - e).min($lanes);
                    let m = (mask_at(bits, e, $lanes) & low(lanes)) as $mask;
                    let pc = m.count_ones() as usize;
                    // SAFETY: the masked loads read the pc values from k
                    // (k + pc is at most the number of set bits, which
                    // values holds) and the lanes elements of base from e
                    // (e + lanes <= n); the masked store writes those of
                    // out. Lanes outside a mask are neither read nor
                    // written (AVX-512 masks suppress their faults).
                    unsafe {
                        let v = $load(low(pc) as $mask, values.as_ptr().add($w * k).cast());
                        let x = $expand(m, v);
                        let all = low(lanes) as $mask;
                        let b = $load(all, base.as_ptr().add($w * e).cast());
                        $store(
                            out.as_mut_ptr().add($w * e).cast(),
                            all,
                            _mm512_xor_si512(b, x),
                        );
                    }
                    e += lanes;
                    k += pc;
                }
                true
            }
        };
    }

    /// `SHUF2[m]`: the byte shuffle that moves the changed values of a
    /// block of 8 two-byte elements whose map byte is `m` into their lanes
    /// (lane `j`, if bit `j` is set, gets the value whose rank among the
    /// set bits is that of bit `j`; the other lanes zero).
    static SHUF2: [[u8; 16]; 256] = {
        let mut t = [[0x80u8; 16]; 256];
        let mut m = 0;
        while m < 256 {
            let (mut j, mut k) = (0, 0);
            while j < 8 {
                if m >> j & 1 == 1 {
                    t[m][2 * j] = 2 * k;
                    t[m][2 * j + 1] = 2 * k + 1;
                    k += 1;
                }
                j += 1;
            }
            m += 1;
        }
        t
    };

    /// SSSE3 form of the two-byte [`super::expand_xor`], 8 elements a step
    /// while 8 values are left to load; returns the elements and values
    /// done, for the scalar twin to finish. Requires: SSSE3, and the
    /// lengths `expand_xor` checks.
    #[target_feature(enable = "ssse3")]
    pub(super) fn xor2_ssse3(
        bits: &[u8],
        values: &[u8],
        base: &[u8],
        out: &mut [u8],
    ) -> (usize, usize) {
        let n = out.len() / 2;
        let m_total = values.len() / 2;
        let (mut e, mut k) = (0usize, 0usize);
        while e + 8 <= n && k + 8 <= m_total {
            let m = bits[e / 8];
            // SAFETY: 16 bytes of values from 2k (k + 8 <= m_total), of
            // base and out from 2e (e + 8 <= n); the table has 256 rows.
            unsafe {
                let v = _mm_loadu_si128(values.as_ptr().add(2 * k).cast());
                let x = _mm_shuffle_epi8(v, _mm_loadu_si128(SHUF2[m as usize].as_ptr().cast()));
                let b = _mm_loadu_si128(base.as_ptr().add(2 * e).cast());
                _mm_storeu_si128(out.as_mut_ptr().add(2 * e).cast(), _mm_xor_si128(b, x));
            }
            e += 8;
            k += m.count_ones() as usize;
        }
        (e, k)
    }

    /// AVX2 form of the four-byte [`super::expand_xor`], as
    /// [`xor2_ssse3`], the lanes whose bit is clear masked off after the
    /// permutation. Requires: AVX2, and the lengths `expand_xor` checks.
    #[target_feature(enable = "avx2")]
    pub(super) fn xor4_avx2(
        bits: &[u8],
        values: &[u8],
        base: &[u8],
        out: &mut [u8],
    ) -> (usize, usize) {
        let n = out.len() / 4;
        let m_total = values.len() / 4;
        let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let (mut e, mut k) = (0usize, 0usize);
        while e + 8 <= n && k + 8 <= m_total {
            let m = bits[e / 8];
            // SAFETY: 32 bytes of values from 4k (k + 8 <= m_total), of
            // base and out from 4e (e + 8 <= n); the table has 256 rows.
            unsafe {
                let v = _mm256_loadu_si256(values.as_ptr().add(4 * k).cast());
                let idx =
                    _mm256_loadu_si256(super::rans32_simd::EXPAND8[m as usize].as_ptr().cast());
                let mb = _mm256_set1_epi32(i32::from(m));
                let keep = _mm256_cmpeq_epi32(_mm256_and_si256(mb, lane_bits), lane_bits);
                let x = _mm256_and_si256(_mm256_permutevar8x32_epi32(v, idx), keep);
                let b = _mm256_loadu_si256(base.as_ptr().add(4 * e).cast());
                _mm256_storeu_si256(out.as_mut_ptr().add(4 * e).cast(), _mm256_xor_si256(b, x));
            }
            e += 8;
            k += m.count_ones() as usize;
        }
        (e, k)
    }

    macro_rules! xor_map_kernel {
        ($name:ident, $w:literal, $lanes:literal, $mask:ty, $load:ident, $test:ident, $store:ident) => {
            /// Requires: AVX-512F and BW, `data`, `base` and `x` of the
            /// same `W * n` bytes, `bits` of `ceil(n / 8)`.
            #[target_feature(enable = "avx512f,avx512bw")]
            pub(super) fn $name(data: &[u8], base: &[u8], x: &mut [u8], bits: &mut [u8]) -> usize {
                let n = x.len() / $w;
                let (mut e, mut count) = (0usize, 0usize);
                while e < n {
                    let lanes = (n - e).min($lanes);
                    let all = low(lanes) as $mask;
                    // SAFETY: the masked loads and store touch the lanes
                    // elements from e (e + lanes <= n) of slices of n.
                    let m = unsafe {
                        let a = $load(all, data.as_ptr().add($w * e).cast());
                        let b = $load(all, base.as_ptr().add($w * e).cast());
                        let v = _mm512_xor_si512(a, b);
                        $store(x.as_mut_ptr().add($w * e).cast(), all, v);
                        $test(v, v) & all
                    };
                    let m = u64::from(m);
                    count += m.count_ones() as usize;
                    // The block's bits: lanes / 8 bytes, rounded up at the end.
                    let from = e / 8;
                    let to = (from + lanes.div_ceil(8)).min(bits.len());
                    bits[from..to].copy_from_slice(&m.to_le_bytes()[..to - from]);
                    e += lanes;
                }
                count
            }
        };
    }

    xor_map_kernel!(
        xor_map1,
        1,
        64,
        u64,
        _mm512_maskz_loadu_epi8,
        _mm512_test_epi8_mask,
        _mm512_mask_storeu_epi8
    );
    xor_map_kernel!(
        xor_map2,
        2,
        32,
        u32,
        _mm512_maskz_loadu_epi16,
        _mm512_test_epi16_mask,
        _mm512_mask_storeu_epi16
    );
    xor_map_kernel!(
        xor_map4,
        4,
        16,
        u16,
        _mm512_maskz_loadu_epi32,
        _mm512_test_epi32_mask,
        _mm512_mask_storeu_epi32
    );
    xor_map_kernel!(
        xor_map8,
        8,
        8,
        u8,
        _mm512_maskz_loadu_epi64,
        _mm512_test_epi64_mask,
        _mm512_mask_storeu_epi64
    );

    macro_rules! compact_kernel {
        ($name:ident, $features:literal, $w:literal, $lanes:literal, $mask:ty,
         $load:ident, $compress:ident, $store:ident) => {
            /// Requires: the CPU features named, `bits` a map of the
            /// `x.len() / W` elements of `x` whose set bits number
            /// `changed.len() / W`.
            #[target_feature(enable = $features)]
            pub(super) fn $name(x: &[u8], bits: &[u8], changed: &mut [u8]) -> bool {
                let n = x.len() / $w;
                let (mut e, mut k) = (0usize, 0usize);
                while e < n {
                    let lanes = (n - e).min($lanes);
                    let m = (mask_at(bits, e, $lanes) & low(lanes)) as $mask;
                    let pc = m.count_ones() as usize;
                    // SAFETY: the masked load reads the lanes elements of x
                    // from e (e + lanes <= n); the masked store writes pc
                    // elements of changed from k (k + pc is at most the
                    // number of set bits, which changed holds).
                    unsafe {
                        let v = $load(low(lanes) as $mask, x.as_ptr().add($w * e).cast());
                        let c = $compress(m, v);
                        $store(changed.as_mut_ptr().add($w * k).cast(), low(pc) as $mask, c);
                    }
                    e += lanes;
                    k += pc;
                }
                true
            }
        };
    }

    compact_kernel!(
        compact1,
        "avx512f,avx512bw,avx512vbmi2",
        1,
        64,
        u64,
        _mm512_maskz_loadu_epi8,
        _mm512_maskz_compress_epi8,
        _mm512_mask_storeu_epi8
    );
    compact_kernel!(
        compact2,
        "avx512f,avx512bw,avx512vbmi2",
        2,
        32,
        u32,
        _mm512_maskz_loadu_epi16,
        _mm512_maskz_compress_epi16,
        _mm512_mask_storeu_epi16
    );
    compact_kernel!(
        compact4,
        "avx512f,avx512bw",
        4,
        16,
        u16,
        _mm512_maskz_loadu_epi32,
        _mm512_maskz_compress_epi32,
        _mm512_mask_storeu_epi32
    );
    compact_kernel!(
        compact8,
        "avx512f,avx512bw",
        8,
        8,
        u8,
        _mm512_maskz_loadu_epi64,
        _mm512_maskz_compress_epi64,
        _mm512_mask_storeu_epi64
    );

    expand_xor_kernel!(
        xor1,
        "avx512f,avx512bw,avx512vbmi2",
        1,
        64,
        u64,
        _mm512_maskz_loadu_epi8,
        _mm512_maskz_expand_epi8,
        _mm512_mask_storeu_epi8
    );
    expand_xor_kernel!(
        xor2,
        "avx512f,avx512bw,avx512vbmi2",
        2,
        32,
        u32,
        _mm512_maskz_loadu_epi16,
        _mm512_maskz_expand_epi16,
        _mm512_mask_storeu_epi16
    );
    expand_xor_kernel!(
        xor4,
        "avx512f,avx512bw",
        4,
        16,
        u16,
        _mm512_maskz_loadu_epi32,
        _mm512_maskz_expand_epi32,
        _mm512_mask_storeu_epi32
    );
    expand_xor_kernel!(
        xor8,
        "avx512f,avx512bw",
        8,
        8,
        u8,
        _mm512_maskz_loadu_epi64,
        _mm512_maskz_expand_epi64,
        _mm512_mask_storeu_epi64
    );
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
/// Merges two planes into 2-byte elements (`hi` the high bytes), XORed
/// with `base` where given (as long as `out`): AVX2 where the CPU has it,
/// 32 elements a step, else the scalar twin (which the compiler vectorises
/// for SSE2).
pub(crate) fn merge2<const ROTATE: bool>(
    hi: &[u8],
    lo: &[u8],
    base: Option<&[u8]>,
    out: &mut [u8],
) {
    let n = hi.len();
    assert!(lo.len() == n && out.len() == 2 * n);
    assert!(base.is_none_or(|b| b.len() == out.len()));
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if !CHECKED && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above); the kernel bounds
        // its own accesses by the slices' lengths.
        done = unsafe { avx2_merge::merge2::<ROTATE>(hi, lo, base, out) };
    }
    merge2_scalar::<ROTATE>(
        &hi[done..],
        &lo[done..],
        base.map(|b| &b[2 * done..]),
        &mut out[2 * done..],
    );
}

fn merge2_scalar<const ROTATE: bool>(hi: &[u8], lo: &[u8], base: Option<&[u8]>, out: &mut [u8]) {
    let elem = |a: u8, b: u8| {
        let v = (u16::from(a) << 8) | u16::from(b);
        if ROTATE { v.rotate_right(1) } else { v }
    };
    match base {
        None => {
            for ((o, &a), &b) in out.chunks_exact_mut(2).zip(hi).zip(lo) {
                o.copy_from_slice(&elem(a, b).to_le_bytes());
            }
        }
        Some(base) => {
            let it = out.chunks_exact_mut(2).zip(base.chunks_exact(2));
            for (((o, x), &a), &b) in it.zip(hi).zip(lo) {
                let v = elem(a, b) ^ u16::from_le_bytes([x[0], x[1]]);
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// The AVX2 form of [`merge2`].
#[cfg(target_arch = "x86_64")]
mod avx2_merge {
    use std::arch::x86_64::*;

    /// 32 elements a step: the bytes interleaved low plane first (within
    /// each 128-bit half), the halves put in order, rotated back, the base
    /// XORed in. Returns the elements done, a multiple of 32.
    #[target_feature(enable = "avx2")]
    pub(super) fn merge2<const ROTATE: bool>(
        hi: &[u8],
        lo: &[u8],
        base: Option<&[u8]>,
        out: &mut [u8],
    ) -> usize {
        let n = hi
            .len()
            .min(lo.len())
            .min(out.len() / 2)
            .min(base.map_or(usize::MAX, |b| b.len() / 2));
        let blocks = n / 32;
        for i in 0..blocks {
            // SAFETY: block i reads hi and lo [32i..32i+32] and base
            // [64i..64i+64], and writes out [64i..64i+64], inside the
            // slices since i < blocks <= n / 32.
            unsafe {
                let a = _mm256_loadu_si256(hi.as_ptr().add(32 * i).cast());
                let b = _mm256_loadu_si256(lo.as_ptr().add(32 * i).cast());
                let l = _mm256_unpacklo_epi8(b, a);
                let h = _mm256_unpackhi_epi8(b, a);
                let mut w = [
                    _mm256_permute2x128_si256::<0x20>(l, h),
                    _mm256_permute2x128_si256::<0x31>(l, h),
                ];
                if ROTATE {
                    w = w.map(|x| {
                        _mm256_or_si256(_mm256_srli_epi16::<1>(x), _mm256_slli_epi16::<15>(x))
                    });
                }
                let dst = out.as_mut_ptr().add(64 * i);
                for (k, mut x) in w.into_iter().enumerate() {
                    if let Some(b) = base {
                        let y = _mm256_loadu_si256(b.as_ptr().add(64 * i + 32 * k).cast());
                        x = _mm256_xor_si256(x, y);
                    }
                    _mm256_storeu_si256(dst.add(32 * k).cast(), x);
                }
            }
        }
        32 * blocks
    }
}

/// Merges four planes into 4-byte elements, XORed with `base` where given
/// (as long as `out`).
pub(crate) fn merge4<const ROTATE: bool>(planes: [&[u8]; 4], base: Option<&[u8]>, out: &mut [u8]) {
    let n = planes[0].len();
    assert!(out.len() == 4 * n && planes.iter().all(|p| p.len() == n));
    assert!(base.is_none_or(|b| b.len() == out.len()));
    let done = if CHECKED {
        0
    } else {
        sse2::merge4::<ROTATE>(planes, base, out)
    };
    merge4_scalar::<ROTATE>(
        planes.map(|p| &p[done..]),
        base.map(|b| &b[4 * done..]),
        &mut out[4 * done..],
    );
}

fn merge4_scalar<const ROTATE: bool>(planes: [&[u8]; 4], base: Option<&[u8]>, out: &mut [u8]) {
    let it = out
        .chunks_exact_mut(4)
        .zip(planes[0])
        .zip(planes[1])
        .zip(planes[2])
        .zip(planes[3]);
    for (e, ((((o, a), b), c), d)) in it.enumerate() {
        let mut v = u32::from_be_bytes([*a, *b, *c, *d]);
        if ROTATE {
            v = v.rotate_right(1);
        }
        if let Some(base) = base {
            v ^= u32::from_le_bytes([
                base[4 * e],
                base[4 * e + 1],
                base[4 * e + 2],
                base[4 * e + 3],
            ]);
        }
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// Spare bytes each part buffer of [`partition`] and [`interleave`] needs
/// past its part: their vector forms move 8 bytes a step.
pub(crate) const PART_PAD: usize = 8;

/// Writes the bytes of `data` whose `lead` byte is `key` to the front of
/// `a`, in order, and the others to the front of `b`. `lead` must be as
/// long as `data`; `a` and `b` must each be [`PART_PAD`] bytes longer than
/// the part written to it (what lies past a part on return is unspecified).
///
/// # Panics
/// If a buffer is too short (a caller's error).
pub(crate) fn partition(data: &[u8], lead: &[u8], key: u8, a: &mut [u8], b: &mut [u8]) {
    assert_eq!(data.len(), lead.len());
    let (done, ia, ib) = part_forms()
        .first()
        .map_or((0, 0, 0), |form| form.partition(data, lead, key, a, b));
    partition_scalar(
        &data[done..],
        &lead[done..],
        key,
        &mut a[ia..],
        &mut b[ib..],
    );
}

/// Branch-free: each byte goes to both parts and only one part's end moves
/// on (a branch would mispredict on every other-valued lead byte); the
/// byte past each part takes the spare writes.
fn partition_scalar(data: &[u8], lead: &[u8], key: u8, a: &mut [u8], b: &mut [u8]) {
    let (mut ia, mut ib) = (0, 0);
    for (&x, &l) in data.iter().zip(lead) {
        let sel = usize::from(l == key);
        a[ia] = x;
        b[ib] = x;
        ia += sel;
        ib += 1 - sel;
    }
}

/// The inverse of [`partition`]: `out[i]` is the next byte of `a` if
/// `lead[i]` is `key`, else the next byte of `b`. `a` and `b` must each be
/// at least [`PART_PAD`] bytes longer than the bytes taken from it.
///
/// # Panics
/// If a buffer is too short (a caller's error).
pub(crate) fn interleave(a: &[u8], b: &[u8], lead: &[u8], key: u8, out: &mut [u8]) {
    assert_eq!(out.len(), lead.len());
    let (done, ia, ib) = part_forms()
        .first()
        .map_or((0, 0, 0), |form| form.interleave(a, b, lead, key, out));
    interleave_scalar(&a[ia..], &b[ib..], &lead[done..], key, &mut out[done..]);
}

/// Branch-free, as [`partition_scalar`]: both parts are read at every step.
fn interleave_scalar(a: &[u8], b: &[u8], lead: &[u8], key: u8, out: &mut [u8]) {
    let (mut ia, mut ib) = (0, 0);
    for (o, &l) in out.iter_mut().zip(lead) {
        let sel = l == key;
        let (x, y) = (a[ia], b[ib]);
        *o = if sel { x } else { y };
        ia += usize::from(sel);
        ib += usize::from(!sel);
    }
}

/// The vector forms of [`partition`] and [`interleave`] this CPU has,
/// fastest first (none with `safe-kernels`). Each does whole blocks and
/// returns how many bytes it did and where it left each part; the scalar
/// twin does the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartForm {
    /// 64 bytes a step: a compare gives the step's mask, a compress (or
    /// expand) moves each part's bytes (AVX-512 VBMI2).
    Avx512,
    /// 8 bytes a step, a table shuffle a part (SSSE3).
    Ssse3,
}

fn part_forms() -> &'static [PartForm] {
    static FORMS: std::sync::OnceLock<Vec<PartForm>> = std::sync::OnceLock::new();
    FORMS.get_or_init(|| {
        let mut forms = Vec::new();
        if CHECKED {
            return forms;
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx512_bw() && std::arch::is_x86_feature_detected!("avx512vbmi2") {
            forms.push(PartForm::Avx512);
        }
        if has_ssse3() {
            forms.push(PartForm::Ssse3);
        }
        forms
    })
}

impl PartForm {
    /// Only for a form [`part_forms`] listed (its features are checked there).
    fn partition(
        self,
        data: &[u8],
        lead: &[u8],
        key: u8,
        a: &mut [u8],
        b: &mut [u8],
    ) -> (usize, usize, usize) {
        match self {
            // SAFETY: part_forms listed this form only where the CPU has
            // its features; the kernels bound their own reads and writes.
            #[cfg(target_arch = "x86_64")]
            PartForm::Avx512 => unsafe { expand_simd::partition(data, lead, key, a, b) },
            #[cfg(not(target_arch = "x86_64"))]
            PartForm::Avx512 => (0, 0, 0),
            // SAFETY: as above.
            PartForm::Ssse3 => unsafe { ssse3::partition(data, lead, key, a, b) },
        }
    }

    /// Only for a form [`part_forms`] listed.
    fn interleave(
        self,
        a: &[u8],
        b: &[u8],
        lead: &[u8],
        key: u8,
        out: &mut [u8],
    ) -> (usize, usize, usize) {
        match self {
            // SAFETY: as in partition.
            #[cfg(target_arch = "x86_64")]
            PartForm::Avx512 => unsafe { expand_simd::interleave(a, b, lead, key, out) },
            #[cfg(not(target_arch = "x86_64"))]
            PartForm::Avx512 => (0, 0, 0),
            // SAFETY: as in partition.
            PartForm::Ssse3 => unsafe { ssse3::interleave(a, b, lead, key, out) },
        }
    }
}

#[inline]
fn has_ssse3() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// SSSE3 forms of [`partition`] and [`interleave`]: 8 bytes a step, moved
/// with one byte shuffle a part, whose control comes from a table indexed
/// by the step's 8-bit mask of lead bytes equal to the key. Each returns
/// how many bytes it did and where it left each part; the scalar twin does
/// the rest.
mod ssse3 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// `COMPRESS[m]`: the positions of the set bits of `m`, lowest first,
    /// then 0x80 (a shuffle writes 0 there).
    const COMPRESS: [[u8; 8]; 256] = {
        let mut t = [[0x80u8; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let (mut j, mut k) = (0, 0);
            while j < 8 {
                if m >> j & 1 == 1 {
                    t[m][k] = j as u8;
                    k += 1;
                }
                j += 1;
            }
            m += 1;
        }
        t
    };

    /// `EXPAND[m][j]`: for a set bit `j` of `m`, how many set bits are
    /// below it; 0x80 for a clear one.
    const EXPAND: [[u8; 8]; 256] = {
        let mut t = [[0x80u8; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let (mut j, mut k) = (0, 0);
            while j < 8 {
                if m >> j & 1 == 1 {
                    t[m][j] = k;
                    k += 1;
                }
                j += 1;
            }
            m += 1;
        }
        t
    };

    /// The mask of the 8 lead bytes at `p` equal to `key`.
    ///
    /// # Safety
    /// `p` must be valid for reading 8 bytes; the CPU must have SSSE3.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "ssse3")]
    unsafe fn mask8(p: *const u8, key: __m128i) -> usize {
        // SAFETY: the caller guarantees 8 readable bytes at p.
        let l = unsafe { _mm_loadl_epi64(p.cast()) };
        (_mm_movemask_epi8(_mm_cmpeq_epi8(l, key)) & 0xFF) as usize
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3")]
    pub(super) fn partition(
        data: &[u8],
        lead: &[u8],
        key: u8,
        a: &mut [u8],
        b: &mut [u8],
    ) -> (usize, usize, usize) {
        let n = data.len().min(lead.len());
        let k = _mm_set1_epi8(key as i8);
        let (mut ia, mut ib) = (0usize, 0usize);
        let mut i = 0;
        // Each step writes 8 bytes at a[ia] and at b[ib], whatever their
        // parts receive: it runs only while both fit.
        while i + 8 <= n && ia + 8 <= a.len() && ib + 8 <= b.len() {
            // SAFETY: i + 8 <= n bounds the reads of data and lead;
            // ia + 8 <= a.len() and ib + 8 <= b.len() bound the writes.
            unsafe {
                let m = mask8(lead.as_ptr().add(i), k);
                let d = _mm_loadl_epi64(data.as_ptr().add(i).cast());
                let ca = _mm_loadl_epi64(COMPRESS[m].as_ptr().cast());
                let cb = _mm_loadl_epi64(COMPRESS[m ^ 0xFF].as_ptr().cast());
                _mm_storel_epi64(a.as_mut_ptr().add(ia).cast(), _mm_shuffle_epi8(d, ca));
                _mm_storel_epi64(b.as_mut_ptr().add(ib).cast(), _mm_shuffle_epi8(d, cb));
                let na = m.count_ones() as usize;
                ia += na;
                ib += 8 - na;
            }
            i += 8;
        }
        (i, ia, ib)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3")]
    pub(super) fn interleave(
        a: &[u8],
        b: &[u8],
        lead: &[u8],
        key: u8,
        out: &mut [u8],
    ) -> (usize, usize, usize) {
        let n = out.len().min(lead.len());
        let k = _mm_set1_epi8(key as i8);
        let (mut ia, mut ib) = (0usize, 0usize);
        let mut i = 0;
        // Each step reads 8 bytes at a[ia] and at b[ib]: it runs only while
        // both are there.
        while i + 8 <= n && ia + 8 <= a.len() && ib + 8 <= b.len() {
            // SAFETY: i + 8 <= n bounds the lead read and the out write;
            // ia + 8 <= a.len() and ib + 8 <= b.len() bound the part reads.
            unsafe {
                let m = mask8(lead.as_ptr().add(i), k);
                let xa = _mm_loadl_epi64(a.as_ptr().add(ia).cast());
                let xb = _mm_loadl_epi64(b.as_ptr().add(ib).cast());
                let ea = _mm_loadl_epi64(EXPAND[m].as_ptr().cast());
                let eb = _mm_loadl_epi64(EXPAND[m ^ 0xFF].as_ptr().cast());
                let o = _mm_or_si128(_mm_shuffle_epi8(xa, ea), _mm_shuffle_epi8(xb, eb));
                _mm_storel_epi64(out.as_mut_ptr().add(i).cast(), o);
                let na = m.count_ones() as usize;
                ia += na;
                ib += 8 - na;
            }
            i += 8;
        }
        (i, ia, ib)
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn partition(
        _: &[u8],
        _: &[u8],
        _: u8,
        _: &mut [u8],
        _: &mut [u8],
    ) -> (usize, usize, usize) {
        (0, 0, 0)
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn interleave(
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: u8,
        _: &mut [u8],
    ) -> (usize, usize, usize) {
        (0, 0, 0)
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
    pub(super) fn merge4<const ROTATE: bool>(
        planes: [&[u8]; 4],
        base: Option<&[u8]>,
        out: &mut [u8],
    ) -> usize {
        let n = planes
            .iter()
            .map(|p| p.len())
            .min()
            .unwrap_or(0)
            .min(out.len() / 4)
            .min(base.map_or(usize::MAX, |b| b.len() / 4));
        let blocks = n / 16;
        for i in 0..blocks {
            // SAFETY: SSE2 is always available on x86_64. Block i reads
            // each plane's [16i..16i+16] and base[64i..64i+64], and writes
            // out[64i..64i+64], inside the slices since i < blocks <= n / 16.
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
                for (k, mut x) in w.into_iter().enumerate() {
                    if let Some(b) = base {
                        x = _mm_xor_si128(
                            x,
                            _mm_loadu_si128(b.as_ptr().add(64 * i + 16 * k).cast()),
                        );
                    }
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
    pub(super) fn merge4<const ROTATE: bool>(
        _: [&[u8]; 4],
        _: Option<&[u8]>,
        _: &mut [u8],
    ) -> usize {
        0
    }
}

/// Interleaved states of an rANS32 block ([`crate::rans32`]): symbol `i`
/// uses state `i % RANS32_LANES`.
pub(crate) const RANS32_LANES: usize = 32;
/// Lower bound of a normalised rANS32 state: states live in [2^15, 2^31).
pub(crate) const RANS32_LOW: u32 = 1 << 15;
/// Slots of an rANS32 decode table (12-bit frequencies).
pub(crate) const RANS32_SLOTS: usize = 1 << 12;
/// Most stream bytes one round (one step of every lane) reads: a step of
/// a state in [2^15, 2^31) leaves it at least 2^3 (frequency >= 1), so one
/// 16-bit word brings it back above 2^15.
const RANS32_ROUND_BYTES: usize = 2 * RANS32_LANES;

/// An rANS32 decode table: for each slot, `symbol | freq << 8 | (slot -
/// cum[symbol]) << 20`. Built only by [`Rans32Table::new`] from frequencies
/// that sum to [`RANS32_SLOTS`], none of them all of it, so every field
/// fits its 12 bits. The kernels' memory safety does not rest on the
/// entries (a slot is a state's low 12 bits, always inside the table), but
/// their results agree with the scalar twin only for such entries.
pub(crate) struct Rans32Table([u32; RANS32_SLOTS]);

impl Rans32Table {
    /// The table of `freq`, or `None` if the frequencies do not sum to
    /// [`RANS32_SLOTS`] or one of them is all of it.
    pub(crate) fn new(freq: &[u32; 256]) -> Option<Rans32Table> {
        let total: u64 = freq.iter().map(|&f| u64::from(f)).sum();
        if total != RANS32_SLOTS as u64 || freq.iter().any(|&f| f as usize >= RANS32_SLOTS) {
            return None;
        }
        let mut t = [0u32; RANS32_SLOTS];
        let mut acc = 0usize;
        for (s, &f) in freq.iter().enumerate() {
            let f = f as usize;
            for (k, e) in t[acc..acc + f].iter_mut().enumerate() {
                *e = s as u32 | (f as u32) << 8 | (k as u32) << 20;
            }
            acc += f;
        }
        Some(Rans32Table(t))
    }
}

/// One rANS32 decode step of state `x`: the symbol, and the state before
/// renormalisation.
#[inline(always)]
pub(crate) fn rans32_step(table: &Rans32Table, x: u32) -> (u8, u32) {
    let e = table.0[(x & (RANS32_SLOTS as u32 - 1)) as usize];
    (e as u8, (e >> 8 & 0xFFF) * (x >> 12) + (e >> 20))
}

/// Decodes whole rounds of an rANS32 stream (symbol `i` from state `i %
/// 32`, a 16-bit little-endian word read from `stream` at `*pos` after a
/// step that leaves a state below 2^15) into `out`, from its start, while a
/// round has room: 32 bytes of `out` and the 64 bytes of `stream` a round
/// can read. Returns the symbols decoded (a multiple of 32), with the
/// states and position where the caller's checked loop takes over.
///
/// AVX-512 or AVX2 where the CPU has them (chosen at run time), else (and
/// with `safe-kernels`) the scalar twin; all give the same bytes, states
/// and position for any input.
pub(crate) fn rans32_decode(
    table: &Rans32Table,
    x: &mut [u32; RANS32_LANES],
    stream: &[u8],
    pos: &mut usize,
    out: &mut [u8],
) -> usize {
    if !CHECKED {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512() {
                // SAFETY: the CPU has AVX-512F (checked just above), the
                // only requirement of calling a function compiled for it.
                return unsafe { rans32_simd::decode_avx512(table, x, stream, pos, out) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { rans32_simd::decode_avx2(table, x, stream, pos, out) };
            }
        }
    }
    rans32_decode_scalar(table, x, stream, pos, out)
}

/// Whether to use the AVX-512 form of [`rans32_decode`].
#[inline]
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The scalar twin of [`rans32_decode`]: the same rounds, every access checked.
pub(crate) fn rans32_decode_scalar(
    table: &Rans32Table,
    x: &mut [u32; RANS32_LANES],
    stream: &[u8],
    pos: &mut usize,
    out: &mut [u8],
) -> usize {
    let mut p = *pos;
    let mut i = 0;
    while i + RANS32_LANES <= out.len() && p + RANS32_ROUND_BYTES <= stream.len() {
        for (xj, o) in x.iter_mut().zip(&mut out[i..i + RANS32_LANES]) {
            let (s, mut v) = rans32_step(table, *xj);
            if v < RANS32_LOW {
                v = v << 16 | u32::from(u16::from_le_bytes([stream[p], stream[p + 1]]));
                p += 2;
            }
            *o = s;
            *xj = v;
        }
        i += RANS32_LANES;
    }
    *pos = p;
    i
}

/// What the rANS32 encoder needs of each symbol, as two tables a SIMD
/// gather can read: `rcp[s]`, the fixed-point reciprocal of the symbol's
/// frequency, and `packed[s] = bias | freq << 13 | shift << 25` (see
/// [`crate::rans::EncSymbol`]). Any contents are memory-safe (a symbol is
/// a byte, always inside the tables); [`crate::rans32`] fills them.
pub(crate) struct Rans32EncTable {
    pub(crate) rcp: [u32; 256],
    pub(crate) packed: [u32; 256],
}

/// One rANS32 encode step of symbol `s` on state `x`: emits the state's
/// low word at `buf[*pos - 1]` if it is too large for the symbol, then
/// steps. The word is written either way (the position moves past it
/// only if it counts), so the step has no branch; `*pos` must be at least 1.
#[inline(always)]
pub(crate) fn rans32_put(
    t: &Rans32EncTable,
    x: u32,
    s: u8,
    buf: &mut [u16],
    pos: &mut usize,
) -> u32 {
    let (rcp, pk) = (t.rcp[s as usize], t.packed[s as usize]);
    let freq = pk >> 13 & 0xFFF;
    let emit = x >= freq << 19;
    buf[*pos - 1] = x as u16;
    *pos -= usize::from(emit);
    let x = x >> (16 * u32::from(emit));
    let q = ((u64::from(x) * u64::from(rcp)) >> 32) as u32 >> (pk >> 25);
    x.wrapping_add(pk & 0x1FFF)
        .wrapping_add(q.wrapping_mul(4096 - freq))
}

/// Encodes `symbols` (a whole number of rounds of 32) from last to first,
/// symbol `i` on state `x[i % 32]`, writing the words back to front below
/// `buf[*pos]`. `buf` must have room for one word a symbol and one more
/// (the encoder's scratch does). AVX-512 or AVX2 where the CPU has them,
/// else (and with `safe-kernels`) the scalar twin; all write the same words.
pub(crate) fn rans32_encode(
    t: &Rans32EncTable,
    symbols: &[u8],
    x: &mut [u32; RANS32_LANES],
    buf: &mut [u16],
    pos: &mut usize,
) {
    let mut symbols = symbols;
    if !CHECKED {
        #[cfg(target_arch = "x86_64")]
        {
            let done = if has_avx512_bw() {
                // SAFETY: the CPU has AVX-512F, BW and VL (checked just
                // above), the only requirement of calling a function
                // compiled for them.
                unsafe { rans32_simd::encode_avx512(t, symbols, x, buf, pos) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                unsafe { rans32_simd::encode_avx2(t, symbols, x, buf, pos) }
            } else {
                0
            };
            symbols = &symbols[..symbols.len() - done];
        }
    }
    rans32_encode_scalar(t, symbols, x, buf, pos);
}

/// Whether the AVX-512 rANS32 encoder can run (it stores 16-bit words
/// under a mask).
#[inline]
fn has_avx512_bw() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx512()
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The scalar twin of [`rans32_encode`].
pub(crate) fn rans32_encode_scalar(
    t: &Rans32EncTable,
    symbols: &[u8],
    x: &mut [u32; RANS32_LANES],
    buf: &mut [u16],
    pos: &mut usize,
) {
    for g in symbols.chunks_exact(RANS32_LANES).rev() {
        for (xj, &s) in x.iter_mut().zip(g).rev() {
            *xj = rans32_put(t, *xj, s, buf, pos);
        }
    }
}

/// The vector forms of [`rans32_decode`], after the 32x16 rANS of
/// htscodecs (Bonfield, "CRAM 3.1: advances in the CRAM file format",
/// Bioinformatics 2022): a table gather a lane, a multiply-add, a compare
/// for the lanes that renormalise, and their words moved into place from
/// one unaligned load (a permutation indexed by the compare's mask on
/// AVX2, an expand on AVX-512).
#[cfg(target_arch = "x86_64")]
mod rans32_simd {
    use super::{RANS32_LANES, RANS32_LOW, RANS32_ROUND_BYTES, Rans32Table};
    use std::arch::x86_64::*;

    /// `EXPAND8[m][j]`: for a set bit `j` of `m`, how many set bits are below it
    /// (also the lanes' sources of the AVX2 bitmap expand).
    pub(super) static EXPAND8: [[u32; 8]; 256] = {
        let mut t = [[0u32; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let (mut j, mut k) = (0, 0);
            while j < 8 {
                if m >> j & 1 == 1 {
                    t[m][j] = k;
                    k += 1;
                }
                j += 1;
            }
            m += 1;
        }
        t
    };

    /// AVX2: four vectors of eight lanes.
    #[target_feature(enable = "avx2")]
    pub(super) fn decode_avx2(
        table: &Rans32Table,
        x: &mut [u32; RANS32_LANES],
        stream: &[u8],
        pos: &mut usize,
        out: &mut [u8],
    ) -> usize {
        let tp = table.0.as_ptr().cast::<i32>();
        let slot_mask = _mm256_set1_epi32(0xFFF);
        let low = _mm256_set1_epi32(RANS32_LOW as i32);
        let byte_mask = _mm256_set1_epi32(0xFF);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        // SAFETY: x holds 32 u32, four vectors of eight.
        let mut xs: [__m256i; 4] =
            std::array::from_fn(|v| unsafe { _mm256_loadu_si256(x.as_ptr().add(8 * v).cast()) });
        let mut p = *pos;
        let mut i = 0;
        while i + RANS32_LANES <= out.len() && p + RANS32_ROUND_BYTES <= stream.len() {
            let mut syms = [_mm256_setzero_si256(); 4];
            for v in 0..4 {
                let slot = _mm256_and_si256(xs[v], slot_mask);
                // SAFETY: every slot is below 4096, the table's length in
                // u32 (scale 4 bytes).
                let e = unsafe { _mm256_i32gather_epi32::<4>(tp, slot) };
                syms[v] = _mm256_and_si256(e, byte_mask);
                let f = _mm256_and_si256(_mm256_srli_epi32::<8>(e), slot_mask);
                let k = _mm256_srli_epi32::<20>(e);
                // Below 2^31 for any entry: 12-bit f, 19-bit x >> 12, 12-bit k.
                let nx = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srli_epi32::<12>(xs[v])), k);
                let need = _mm256_cmpgt_epi32(low, nx);
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize & 0xFF;
                // SAFETY: p + 16 <= stream.len(): the loop condition left
                // 64 bytes from the round's start, and the earlier vectors
                // of this round read at most 2 bytes a lane, 48 in all.
                let w = unsafe { _mm_loadu_si128(stream.as_ptr().add(p).cast()) };
                let w = _mm256_cvtepu16_epi32(w);
                // SAFETY: EXPAND8 has 256 rows of 8 u32; m < 256.
                let perm = unsafe { _mm256_loadu_si256(EXPAND8[m].as_ptr().cast()) };
                let w = _mm256_permutevar8x32_epi32(w, perm);
                let renorm = _mm256_or_si256(_mm256_slli_epi32::<16>(nx), w);
                xs[v] = _mm256_blendv_epi8(nx, renorm, need);
                p += 2 * m.count_ones() as usize;
            }
            // Symbols in the low bytes of 32 lanes, to 32 bytes in lane order.
            let a = _mm256_packus_epi32(syms[0], syms[1]);
            let b = _mm256_packus_epi32(syms[2], syms[3]);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), order);
            // SAFETY: i + 32 <= out.len() (the loop condition).
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), bytes) };
            i += RANS32_LANES;
        }
        for (v, xv) in xs.iter().enumerate() {
            // SAFETY: x holds 32 u32, four vectors of eight.
            unsafe { _mm256_storeu_si256(x.as_mut_ptr().add(8 * v).cast(), *xv) };
        }
        *pos = p;
        i
    }

    /// AVX-512: two vectors of sixteen lanes.
    #[target_feature(enable = "avx512f")]
    pub(super) fn decode_avx512(
        table: &Rans32Table,
        x: &mut [u32; RANS32_LANES],
        stream: &[u8],
        pos: &mut usize,
        out: &mut [u8],
    ) -> usize {
        let tp = table.0.as_ptr().cast::<i32>();
        let slot_mask = _mm512_set1_epi32(0xFFF);
        let low = _mm512_set1_epi32(RANS32_LOW as i32);
        // SAFETY: x holds 32 u32, two vectors of sixteen.
        let mut xs: [__m512i; 2] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_si512(x.as_ptr().add(16 * v).cast()) });
        let mut p = *pos;
        let mut i = 0;
        while i + RANS32_LANES <= out.len() && p + RANS32_ROUND_BYTES <= stream.len() {
            for (v, xv) in xs.iter_mut().enumerate() {
                let slot = _mm512_and_si512(*xv, slot_mask);
                // SAFETY: every slot is below 4096, the table's length in
                // u32 (scale 4 bytes).
                let e = unsafe { _mm512_i32gather_epi32::<4>(slot, tp) };
                let f = _mm512_and_si512(_mm512_srli_epi32::<8>(e), slot_mask);
                let k = _mm512_srli_epi32::<20>(e);
                // Below 2^31 for any entry: 12-bit f, 19-bit x >> 12, 12-bit k.
                let nx = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srli_epi32::<12>(*xv)), k);
                let need = _mm512_cmplt_epu32_mask(nx, low);
                // SAFETY: p + 32 <= stream.len(): the loop condition left
                // 64 bytes from the round's start, and the first vector of
                // this round read at most 2 bytes a lane, 32 in all.
                let w = unsafe { _mm256_loadu_si256(stream.as_ptr().add(p).cast()) };
                let w = _mm512_maskz_expand_epi32(need, _mm512_cvtepu16_epi32(w));
                *xv = _mm512_mask_or_epi32(nx, need, _mm512_slli_epi32::<16>(nx), w);
                p += 2 * need.count_ones() as usize;
                let bytes = _mm512_cvtepi32_epi8(e);
                // SAFETY: i + 16 * v + 16 <= i + 32 <= out.len() (the loop condition).
                unsafe { _mm_storeu_si128(out.as_mut_ptr().add(i + 16 * v).cast(), bytes) };
            }
            i += RANS32_LANES;
        }
        for (v, xv) in xs.iter().enumerate() {
            // SAFETY: x holds 32 u32, two vectors of sixteen.
            unsafe { _mm512_storeu_si512(x.as_mut_ptr().add(16 * v).cast(), *xv) };
        }
        *pos = p;
        i
    }

    /// `TOP8[m]`: a permutation that puts the lanes of the set bits of `m`,
    /// lowest first, in the top `popcount(m)` of eight positions.
    static TOP8: [[u32; 8]; 256] = {
        let mut t = [[0u32; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let c = (m as u32).count_ones() as usize;
            let (mut j, mut k) = (0, 0);
            while j < 8 {
                if m >> j & 1 == 1 {
                    t[m][8 - c + k] = j as u32;
                    k += 1;
                }
                j += 1;
            }
            m += 1;
        }
        t
    };

    /// AVX2 encoding: four vectors of eight lanes, the last first. The
    /// words of the lanes that renormalise are permuted to the top of a
    /// vector and its eight words stored so that they end at the position:
    /// the ones below the kept words land where later words will go (or
    /// below the stream), so nothing written is overwritten. Returns the
    /// symbols done, from the end of `symbols` (whole rounds, while `buf`
    /// below `*pos` has room for one).
    #[target_feature(enable = "avx2")]
    pub(super) fn encode_avx2(
        t: &super::Rans32EncTable,
        symbols: &[u8],
        x: &mut [u32; RANS32_LANES],
        buf: &mut [u16],
        pos: &mut usize,
    ) -> usize {
        if *pos > buf.len() {
            return 0; // the scalar twin's checked access reports it
        }
        let rcp_t = t.rcp.as_ptr().cast::<i32>();
        let pk_t = t.packed.as_ptr().cast::<i32>();
        let m12 = _mm256_set1_epi32(0xFFF);
        let m13 = _mm256_set1_epi32(0x1FFF);
        let low16 = _mm256_set1_epi32(0xFFFF);
        let total = _mm256_set1_epi32(4096);
        // SAFETY: x holds 32 u32, four vectors of eight.
        let mut xs: [__m256i; 4] =
            std::array::from_fn(|v| unsafe { _mm256_loadu_si256(x.as_ptr().add(8 * v).cast()) });
        let mut p = *pos;
        let rounds = symbols.len() / RANS32_LANES;
        let mut done = 0;
        while done < rounds && p >= RANS32_LANES {
            let base = (rounds - 1 - done) * RANS32_LANES;
            for v in (0..4).rev() {
                // SAFETY: base + 8 * v + 8 <= rounds * 32 <= symbols.len().
                let s = unsafe { _mm_loadl_epi64(symbols.as_ptr().add(base + 8 * v).cast()) };
                let s = _mm256_cvtepu8_epi32(s);
                // SAFETY: every index is a byte, below the tables' 256
                // entries (scale 4 bytes).
                let (rcp, pk) = unsafe {
                    (
                        _mm256_i32gather_epi32::<4>(rcp_t, s),
                        _mm256_i32gather_epi32::<4>(pk_t, s),
                    )
                };
                let freq = _mm256_and_si256(_mm256_srli_epi32::<13>(pk), m12);
                let x_max = _mm256_slli_epi32::<19>(freq);
                // x >= x_max, unsigned: max(x, x_max) == x.
                let emit = _mm256_cmpeq_epi32(_mm256_max_epu32(xs[v], x_max), xs[v]);
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(emit)) as usize & 0xFF;
                let c = m.count_ones() as usize;
                // SAFETY: TOP8 has 256 rows of 8 u32; m < 256.
                let perm = unsafe { _mm256_loadu_si256(TOP8[m].as_ptr().cast()) };
                let w = _mm256_permutevar8x32_epi32(_mm256_and_si256(xs[v], low16), perm);
                let w = _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi32(w, w));
                // SAFETY: p >= 8 and p <= buf.len(): the loop condition
                // left 32 words below the round's start, and the later
                // vectors of this round took at most 8 each, 24 in all.
                unsafe {
                    _mm_storeu_si128(
                        buf.as_mut_ptr().add(p - 8).cast(),
                        _mm256_castsi256_si128(w),
                    )
                };
                p -= c;
                let xv = _mm256_blendv_epi8(xs[v], _mm256_srli_epi32::<16>(xs[v]), emit);
                // q = (x * rcp) >> 32 >> shift, even and odd lanes apart.
                let even = _mm256_srli_epi64::<32>(_mm256_mul_epu32(xv, rcp));
                let odd =
                    _mm256_mul_epu32(_mm256_srli_epi64::<32>(xv), _mm256_srli_epi64::<32>(rcp));
                let q = _mm256_blend_epi32::<0b1010_1010>(even, odd);
                let q = _mm256_srlv_epi32(q, _mm256_srli_epi32::<25>(pk));
                let bias = _mm256_and_si256(pk, m13);
                let step = _mm256_mullo_epi32(q, _mm256_sub_epi32(total, freq));
                xs[v] = _mm256_add_epi32(_mm256_add_epi32(xv, bias), step);
            }
            done += 1;
        }
        for (v, xv) in xs.iter().enumerate() {
            // SAFETY: x holds 32 u32, four vectors of eight.
            unsafe { _mm256_storeu_si256(x.as_mut_ptr().add(8 * v).cast(), *xv) };
        }
        *pos = p;
        done * RANS32_LANES
    }

    /// AVX-512 encoding: two vectors of sixteen lanes, lanes 16..32 first
    /// (their words lie after lanes 0..16's in the stream). The words of
    /// the lanes that renormalise are compressed to the bottom of a vector
    /// and stored under a mask, so nothing above them is touched. Returns
    /// the symbols done, from the end of `symbols` (whole rounds, while
    /// `buf` below `*pos` has room for one).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn encode_avx512(
        t: &super::Rans32EncTable,
        symbols: &[u8],
        x: &mut [u32; RANS32_LANES],
        buf: &mut [u16],
        pos: &mut usize,
    ) -> usize {
        let rcp_t = t.rcp.as_ptr().cast::<i32>();
        let pk_t = t.packed.as_ptr().cast::<i32>();
        let m12 = _mm512_set1_epi32(0xFFF);
        let m13 = _mm512_set1_epi32(0x1FFF);
        let total = _mm512_set1_epi32(4096);
        // SAFETY: x holds 32 u32, two vectors of sixteen.
        let mut xs: [__m512i; 2] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_si512(x.as_ptr().add(16 * v).cast()) });
        if *pos > buf.len() {
            return 0; // the scalar twin's checked access reports it
        }
        let mut p = *pos;
        let rounds = symbols.len() / RANS32_LANES;
        let mut done = 0;
        while done < rounds && p >= RANS32_LANES {
            let base = (rounds - 1 - done) * RANS32_LANES;
            for v in [1, 0] {
                // SAFETY: base + 16 * v + 16 <= rounds * 32 <= symbols.len().
                let s = unsafe { _mm_loadu_si128(symbols.as_ptr().add(base + 16 * v).cast()) };
                let s = _mm512_cvtepu8_epi32(s);
                // SAFETY: every index is a byte, below the tables' 256
                // entries (scale 4 bytes).
                let (rcp, pk) = unsafe {
                    (
                        _mm512_i32gather_epi32::<4>(s, rcp_t),
                        _mm512_i32gather_epi32::<4>(s, pk_t),
                    )
                };
                let freq = _mm512_and_si512(_mm512_srli_epi32::<13>(pk), m12);
                let x_max = _mm512_slli_epi32::<19>(freq);
                let emit = _mm512_cmpge_epu32_mask(xs[v], x_max);
                let c = emit.count_ones() as usize;
                let words = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(emit, xs[v]));
                p -= c;
                // SAFETY: p + c <= the position before this vector <=
                // buf.len(), and c <= 16 words are stored from p (p >= 0:
                // the loop condition left 32 words below the round's start).
                unsafe {
                    _mm256_mask_storeu_epi16(
                        buf.as_mut_ptr().add(p).cast(),
                        ((1u32 << c) - 1) as u16,
                        words,
                    )
                };
                let xv = _mm512_mask_srli_epi32(xs[v], emit, xs[v], 16);
                // q = (x * rcp) >> 32 >> shift, even and odd lanes apart.
                let even = _mm512_srli_epi64::<32>(_mm512_mul_epu32(xv, rcp));
                let odd =
                    _mm512_mul_epu32(_mm512_srli_epi64::<32>(xv), _mm512_srli_epi64::<32>(rcp));
                let q = _mm512_mask_blend_epi32(0xAAAA, even, odd);
                let q = _mm512_srlv_epi32(q, _mm512_srli_epi32::<25>(pk));
                let bias = _mm512_and_si512(pk, m13);
                let step = _mm512_mullo_epi32(q, _mm512_sub_epi32(total, freq));
                xs[v] = _mm512_add_epi32(_mm512_add_epi32(xv, bias), step);
            }
            done += 1;
        }
        for (v, xv) in xs.iter().enumerate() {
            // SAFETY: x holds 32 u32, two vectors of sixteen.
            unsafe { _mm512_storeu_si512(x.as_mut_ptr().add(16 * v).cast(), *xv) };
        }
        *pos = p;
        done * RANS32_LANES
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

    /// The vector forms of the bitmap expand give what the scalar twin and
    /// a plain reference give, for every width, at lengths around the
    /// vector blocks and densities from none to all; maps with a bit past
    /// the end, or values of the wrong length, are refused.
    #[test]
    fn expand_xor_twins_agree() {
        for width in [1usize, 2, 3, 4, 8] {
            for n in [
                0usize, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000, 4099,
            ] {
                let base = bytes(n * width, (n * width) as u64 + 3);
                for density in [0u64, 1, 50, 200, 256] {
                    let mut rnd = lcg(density * 31 + n as u64);
                    let changed: Vec<bool> = (0..n).map(|_| rnd() % 256 < density).collect();
                    let mut bits = vec![0u8; n.div_ceil(8)];
                    for (e, _) in changed.iter().enumerate().filter(|c| *c.1) {
                        bits[e / 8] |= 1 << (e % 8);
                    }
                    let m = changed.iter().filter(|&&c| c).count();
                    let values = bytes(m * width, density + 11);
                    let mut want = base.clone();
                    for (k, e) in (0..n).filter(|&e| changed[e]).enumerate() {
                        for j in 0..width {
                            want[e * width + j] ^= values[k * width + j];
                        }
                    }
                    let case = format!("width {width}, n {n}, density {density}");
                    assert_eq!(bitmap_count(&bits, n), Some(m), "{case}");
                    let mut out = vec![0xEEu8; n * width];
                    assert!(expand_xor(width, &bits, &values, &base, &mut out), "{case}");
                    assert!(out == want, "{case}");
                    let mut twin = vec![0u8; n * width];
                    expand_xor_scalar(width, &bits, &values, &base, &mut twin);
                    assert!(twin == want, "{case}");
                    // The SSSE3 and AVX2 forms, which the dispatch skips
                    // on a CPU with AVX-512.
                    #[cfg(target_arch = "x86_64")]
                    {
                        let mut v = vec![0u8; n * width];
                        let done = match width {
                            // SAFETY: the CPU has the feature (checked in
                            // the same condition); lengths as checked above.
                            2 if has_ssse3() => Some(unsafe {
                                expand_simd::xor2_ssse3(&bits, &values, &base, &mut v)
                            }),
                            4 if std::arch::is_x86_feature_detected!("avx2") => Some(unsafe {
                                expand_simd::xor4_avx2(&bits, &values, &base, &mut v)
                            }),
                            _ => None,
                        };
                        if let Some(done) = done {
                            finish_expand(width, done, &bits, &values, &base, &mut v);
                            assert!(v == want, "{case} (vector form)");
                        }
                    }
                    // One value too many or too few: refused, out untouched.
                    let mut out = vec![0xEEu8; n * width];
                    let longer = [values.clone(), vec![0; width]].concat();
                    assert!(
                        !expand_xor(width, &bits, &longer, &base, &mut out),
                        "{case}"
                    );
                    if m > 0 {
                        let shorter = &values[..values.len() - width];
                        assert!(
                            !expand_xor(width, &bits, shorter, &base, &mut out),
                            "{case}"
                        );
                    }
                    assert!(out.iter().all(|&b| b == 0xEE), "{case}");
                    // A bit set past the last element.
                    if n % 8 != 0 {
                        let mut bad = bits.clone();
                        *bad.last_mut().unwrap() |= 0x80;
                        assert_eq!(bitmap_count(&bad, n), None, "{case}");
                        let more = [values.clone(), vec![0; width]].concat();
                        assert!(!expand_xor(width, &bad, &more, &base, &mut out), "{case}");
                    }
                }
            }
        }
    }

    /// The vector forms of the XOR-and-map and the compaction give what
    /// their scalar twins give, and the compaction then the expand give
    /// back the XOR, for every width, at lengths around the vector blocks
    /// and densities from none to all.
    #[test]
    fn xor_bitmap_and_compact_twins_agree() {
        for width in [1usize, 2, 3, 4, 8] {
            for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 1000, 4099] {
                let base = bytes(n * width, (n * width) as u64 + 5);
                for density in [0u64, 1, 50, 200, 256] {
                    let mut rnd = lcg(density * 37 + n as u64);
                    let mut data = base.clone();
                    for e in data.chunks_exact_mut(width) {
                        if rnd() % 256 < density {
                            let k = rnd() as usize % width;
                            e[k] ^= 1 + (rnd() % 255) as u8;
                        }
                    }
                    let case = format!("width {width}, n {n}, density {density}");
                    let (mut x, mut bits) = (vec![0u8; n * width], vec![0xA5u8; n.div_ceil(8)]);
                    let m = xor_bitmap(width, &data, &base, &mut x, &mut bits).expect(&case);
                    let (mut sx, mut sbits) = (vec![0u8; n * width], vec![0u8; n.div_ceil(8)]);
                    assert_eq!(
                        xor_bitmap_scalar(width, &data, &base, &mut sx, &mut sbits),
                        m,
                        "{case}"
                    );
                    assert!(x == sx && bits == sbits, "{case}");
                    assert_eq!(bitmap_count(&bits, n), Some(m), "{case}");
                    let mut changed = vec![0u8; m * width];
                    assert!(compact(width, &x, &bits, &mut changed), "{case}");
                    let mut twin = vec![0u8; m * width];
                    compact_scalar(width, &x, &bits, &mut twin);
                    assert!(changed == twin, "{case}");
                    assert!(
                        changed
                            .chunks_exact(width.max(1))
                            .all(|e| e.iter().any(|&b| b != 0)),
                        "{case}"
                    );
                    let mut back = vec![0u8; n * width];
                    assert!(
                        expand_xor(width, &bits, &changed, &base, &mut back),
                        "{case}"
                    );
                    assert!(back == data, "{case}");
                    // Wrong lengths are refused.
                    assert!(
                        !compact(width, &x, &bits, &mut vec![0u8; (m + 1) * width]),
                        "{case}"
                    );
                    assert_eq!(
                        xor_bitmap(
                            width,
                            &data,
                            &base,
                            &mut x,
                            &mut vec![0u8; n.div_ceil(8) + 1]
                        ),
                        None
                    );
                }
            }
        }
    }

    /// The vector forms of partition and interleave give what the scalar
    /// ones give, and interleave undoes partition, at lengths around the
    /// block size and lead densities from none to all.
    #[test]
    fn part_twins_agree() {
        for n in [
            0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 1000, 4099,
        ] {
            let data = bytes(n, n as u64 + 1);
            for density in [0u64, 1, 50, 90, 255, 256] {
                let mut rnd = lcg(density + 7 * n as u64);
                let key = 0x5A;
                let lead: Vec<u8> = (0..n)
                    .map(|_| {
                        if rnd() % 256 < density {
                            key
                        } else {
                            rnd() as u8 | 1
                        }
                    })
                    .collect();
                let na = lead.iter().filter(|&&l| l == key).count();
                let nb = n - na;
                let mut a = vec![0u8; na + PART_PAD];
                let mut b = vec![0u8; nb + PART_PAD];
                partition(&data, &lead, key, &mut a, &mut b);
                for &form in part_forms() {
                    let (mut fa, mut fb) = (vec![0u8; na + PART_PAD], vec![0u8; nb + PART_PAD]);
                    let (done, ia, ib) = form.partition(&data, &lead, key, &mut fa, &mut fb);
                    partition_scalar(
                        &data[done..],
                        &lead[done..],
                        key,
                        &mut fa[ia..],
                        &mut fb[ib..],
                    );
                    assert_eq!(fa[..na], a[..na], "{form:?}, n {n}, density {density}");
                    assert_eq!(fb[..nb], b[..nb], "{form:?}, n {n}, density {density}");
                    let mut back = vec![3u8; n];
                    let (done, ia, ib) = form.interleave(&a, &b, &lead, key, &mut back);
                    interleave_scalar(&a[ia..], &b[ib..], &lead[done..], key, &mut back[done..]);
                    assert_eq!(back, data, "{form:?}, n {n}, density {density}");
                }
                let (mut sa, mut sb) = (vec![0u8; na + PART_PAD], vec![0u8; nb + PART_PAD]);
                partition_scalar(&data, &lead, key, &mut sa, &mut sb);
                assert_eq!(a[..na], sa[..na], "n {n}, density {density}");
                assert_eq!(b[..nb], sb[..nb], "n {n}, density {density}");
                let want_a: Vec<u8> = data
                    .iter()
                    .zip(&lead)
                    .filter(|(_, l)| **l == key)
                    .map(|(x, _)| *x)
                    .collect();
                assert_eq!(a[..na], want_a[..]);
                let mut back = vec![0u8; n];
                interleave(&a, &b, &lead, key, &mut back);
                assert_eq!(back, data, "n {n}, density {density}");
                let mut back2 = vec![1u8; n];
                interleave_scalar(&a, &b, &lead, key, &mut back2);
                assert_eq!(back2, data);
            }
        }
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
            // Width 2 merges, with and without a base, both ways.
            {
                let (hi, lo) = (&input[..n], &input[n..2 * n]);
                let base = bytes(2 * n, n as u64 + 5);
                for b in [None, Some(&base[..])] {
                    let (mut o1, mut o2, mut o3, mut o4) = (
                        vec![0u8; 2 * n],
                        vec![1u8; 2 * n],
                        vec![2u8; 2 * n],
                        vec![3u8; 2 * n],
                    );
                    merge2_scalar::<true>(hi, lo, b, &mut o1);
                    merge2::<true>(hi, lo, b, &mut o2);
                    merge2_scalar::<false>(hi, lo, b, &mut o3);
                    merge2::<false>(hi, lo, b, &mut o4);
                    assert_eq!(o1, o2, "merge2 rotate, {n}, base {}", b.is_some());
                    assert_eq!(o3, o4, "merge2, {n}, base {}", b.is_some());
                    let want: Vec<u8> = (0..n)
                        .flat_map(|e| {
                            let v = u16::from(hi[e]) << 8 | u16::from(lo[e]);
                            let x = b.map_or(0, |b| u16::from_le_bytes([b[2 * e], b[2 * e + 1]]));
                            (v ^ x).to_le_bytes()
                        })
                        .collect();
                    assert_eq!(o3, want, "merge2 against the definition, {n}");
                }
            }
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
                    merge4_scalar::<true>(planes, None, &mut o1);
                    merge4::<true>(planes, None, &mut o2);
                } else {
                    merge4_scalar::<false>(planes, None, &mut o1);
                    merge4::<false>(planes, None, &mut o2);
                }
                assert_eq!(o1, input, "merge4 scalar rotate {rotate}, {n}");
                assert_eq!(o2, input, "merge4 rotate {rotate}, {n}");
                // With a base XORed in.
                let base = bytes(4 * n, n as u64 + 9);
                let want: Vec<u8> = input.iter().zip(&base).map(|(x, b)| x ^ b).collect();
                if rotate {
                    merge4_scalar::<true>(planes, Some(&base), &mut o1);
                    merge4::<true>(planes, Some(&base), &mut o2);
                } else {
                    merge4_scalar::<false>(planes, Some(&base), &mut o1);
                    merge4::<false>(planes, Some(&base), &mut o2);
                }
                assert_eq!(o1, want, "merge4 scalar xor rotate {rotate}, {n}");
                assert_eq!(o2, want, "merge4 xor rotate {rotate}, {n}");
            }
        }
    }

    /// A table with one entry outside the limits the kernel relies on
    /// cannot be built.
    #[test]
    fn huffman_tables_outside_the_limits_are_refused() {
        let good = 3 | 2 << 8 | 0xABCD << 32;
        assert!(HuffmanDecodeTable::new(&[good; 1 << HUFFMAN_TABLE_BITS]).is_some());
        // (bits, count): no bits, too many bits, no symbols, too many.
        for bad in [
            1 << 8,
            12 | 1 << 8,
            255 | 1 << 8,
            5,
            5 | 5 << 8,
            5 | 255 << 8,
        ] {
            let mut entries = [good; 1 << HUFFMAN_TABLE_BITS];
            entries[1000] = bad;
            assert!(HuffmanDecodeTable::new(&entries).is_none(), "{bad:#x}");
        }
    }

    /// Both forms agree on arbitrary tables, data and positions: the
    /// unchecked form never reads or writes where the checked one would
    /// have panicked (it would have, had the bounds been wrong).
    #[test]
    fn huffman_twins_agree() {
        let mut rnd = lcg(7);
        for case in 0..300 {
            let mut entries = [0u64; 1 << HUFFMAN_TABLE_BITS];
            for e in entries.iter_mut() {
                let count = 1 + rnd() % 4;
                let bits = 1 + rnd() % 11;
                *e = bits | count << 8 | (rnd() & 0xFFFF_FFFF) << 32;
            }
            let table = HuffmanDecodeTable::new(&entries).expect("entries within the limits");
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

    /// Each vector form of the rANS32 decode loop this CPU has gives what
    /// the scalar twin gives, on arbitrary states and streams (valid
    /// tables), at every output length around a round and streams too
    /// short for one: the same bytes, states and position.
    #[test]
    fn rans32_twins_agree() {
        type Kernel =
            fn(&Rans32Table, &mut [u32; RANS32_LANES], &[u8], &mut usize, &mut [u8]) -> usize;
        #[allow(unused_mut)]
        let mut forms: Vec<(&str, Kernel)> = vec![("dispatch", rans32_decode)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                forms.push(("avx2", |t, x, s, p, o| unsafe {
                    rans32_simd::decode_avx2(t, x, s, p, o)
                }));
            }
            if has_avx512() {
                // SAFETY: the CPU has AVX-512F (checked just above).
                forms.push(("avx512", |t, x, s, p, o| unsafe {
                    rans32_simd::decode_avx512(t, x, s, p, o)
                }));
            }
        }
        let mut rnd = lcg(13);
        for case in 0..600u64 {
            let mut freq = [0u32; 256];
            // From two symbols to 256, flat to very skewed.
            let used = 2 + (rnd() % 255) as usize;
            let mut left = RANS32_SLOTS as u32 - used as u32;
            for f in freq.iter_mut().take(used) {
                let extra = if case % 2 == 0 {
                    left.min((rnd() % 64) as u32)
                } else {
                    left / 2
                };
                *f = 1 + extra;
                left -= extra;
            }
            freq[0] += left;
            let table = Rans32Table::new(&freq).expect("frequencies summing to 4096");
            let states: [u32; RANS32_LANES] =
                std::array::from_fn(|_| RANS32_LOW + (rnd() as u32 % ((1 << 31) - RANS32_LOW)));
            let slen = (rnd() % 700) as usize;
            let stream: Vec<u8> = (0..slen).map(|_| rnd() as u8).collect();
            let olen = if case < 300 {
                case as usize
            } else {
                (rnd() % 5000) as usize
            };
            let start = (rnd() % 5) as usize;
            let (mut want_x, mut want_p, mut want_o) = (states, start, vec![0u8; olen]);
            let want = rans32_decode_scalar(&table, &mut want_x, &stream, &mut want_p, &mut want_o);
            for (name, f) in &forms {
                let (mut x, mut p, mut o) = (states, start, vec![0u8; olen]);
                let got = f(&table, &mut x, &stream, &mut p, &mut o);
                assert_eq!((got, p, x), (want, want_p, want_x), "{name}, case {case}");
                assert_eq!(o[..got], want_o[..want], "{name}, case {case}");
            }
        }
        // Tables other than valid ones cannot be built.
        let mut freq = [0u32; 256];
        freq[0] = 4096;
        assert!(Rans32Table::new(&freq).is_none());
        freq[0] = 4095;
        assert!(Rans32Table::new(&freq).is_none());
        freq[1] = 2;
        assert!(Rans32Table::new(&freq).is_none());
    }

    /// The AVX-512 and AVX2 rANS32 encoders (where this CPU has them) write
    /// the words and leave the states and position the scalar twin does, on
    /// arbitrary tables, symbols and states, and stops where the buffer
    /// has no room for a round.
    #[test]
    fn rans32_encoder_twins_agree() {
        let mut rnd = lcg(17);
        for case in 0..300u64 {
            let mut t = Rans32EncTable {
                rcp: [0; 256],
                packed: [0; 256],
            };
            for s in 0..256 {
                t.rcp[s] = rnd() as u32 | (rnd() as u32) << 31;
                // Frequencies of 1..4096, biases and shifts in their fields.
                let f = 1 + (rnd() as u32 % 4095);
                t.packed[s] = (rnd() as u32 & 0x1FFF) | f << 13 | (rnd() as u32 % 12) << 25;
            }
            let rounds = (rnd() % 40) as usize;
            let symbols: Vec<u8> = (0..32 * rounds)
                .map(|_| (rnd() % (1 + case % 256)) as u8)
                .collect();
            let states: [u32; RANS32_LANES] =
                std::array::from_fn(|_| RANS32_LOW + (rnd() as u32 % ((1 << 31) - RANS32_LOW)));
            let cap = symbols.len() + 1;
            let (mut b1, mut b2) = (vec![0u16; cap], vec![0u16; cap]);
            let (mut x1, mut x2) = (states, states);
            let (mut p1, mut p2) = (cap, cap);
            rans32_encode(&t, &symbols, &mut x1, &mut b1, &mut p1);
            rans32_encode_scalar(&t, &symbols, &mut x2, &mut b2, &mut p2);
            assert_eq!((p1, x1), (p2, x2), "case {case}");
            assert_eq!(b1[p1..], b2[p2..], "case {case}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let (mut b, mut x, mut p) = (vec![0u16; cap], states, cap);
                // SAFETY: the CPU has AVX2 (checked just above).
                let done =
                    unsafe { rans32_simd::encode_avx2(&t, &symbols, &mut x, &mut b, &mut p) };
                rans32_encode_scalar(&t, &symbols[..symbols.len() - done], &mut x, &mut b, &mut p);
                assert_eq!((p, x), (p2, x2), "avx2, case {case}");
                assert_eq!(b[p..], b2[p2..], "avx2, case {case}");
                // Room for a few rounds only: it stops, done from the end.
                let room = 32 * (rounds / 2) + 5;
                let (mut b, mut x, mut p) = (vec![0u16; room], states, room);
                // SAFETY: the CPU has AVX2 (checked just above).
                let done =
                    unsafe { rans32_simd::encode_avx2(&t, &symbols, &mut x, &mut b, &mut p) };
                assert!(
                    done % 32 == 0 && done <= symbols.len() && p <= room,
                    "case {case}"
                );
                let (mut xs, mut bs, mut ps) = (
                    states,
                    vec![0u16; room + symbols.len()],
                    room + symbols.len(),
                );
                rans32_encode_scalar(
                    &t,
                    &symbols[symbols.len() - done..],
                    &mut xs,
                    &mut bs,
                    &mut ps,
                );
                assert_eq!(x, xs, "avx2, case {case}");
                assert_eq!(b[p..], bs[ps..], "avx2, case {case}");
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx512_bw() {
                // Room for a few rounds only: it stops, done from the end.
                let room = 32 * (rounds / 2) + 5;
                let mut b = vec![0u16; room];
                let (mut x, mut p) = (states, room);
                // SAFETY: the CPU has AVX-512F, BW and VL (checked just above).
                let done =
                    unsafe { rans32_simd::encode_avx512(&t, &symbols, &mut x, &mut b, &mut p) };
                assert!(
                    done % 32 == 0 && done <= symbols.len() && p <= room,
                    "case {case}"
                );
                let (mut xs, mut bs, mut ps) = (
                    states,
                    vec![0u16; room + symbols.len()],
                    room + symbols.len(),
                );
                rans32_encode_scalar(
                    &t,
                    &symbols[symbols.len() - done..],
                    &mut xs,
                    &mut bs,
                    &mut ps,
                );
                assert_eq!(x, xs, "case {case}");
                assert_eq!(b[p..], bs[ps..], "case {case}");
            }
        }
    }
}
