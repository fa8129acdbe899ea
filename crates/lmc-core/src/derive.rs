//! Redundancy across tensors: derived tensors (FORMAT.md, "Derived tensors").
//!
//! Mixed-precision checkpoints hold BF16 (or F16) weights that are the fp32
//! master weights rounded to nearest even, and tied or copied tensors that
//! are byte-identical to another. A *derived* tensor is stored as a
//! reference to its source tensor plus a *residue*: its bytes XORed with
//! the source transformed by an [`DeriveOp`] (rounded, or copied as is).
//! An exact rounding or copy leaves a residue of zeros, which the plane
//! codecs store as constant planes; a stochastic rounding leaves a few low
//! bits.
//!
//! [`find`] decides which tensors of a layout are derived: byte-identical
//! duplicates by hash, roundings by name and shape (a sampled check, then a
//! full one), and the rest by content, so that slices of flat fp32 buffers
//! (DeepSpeed ZeRO partitions, Megatron's distributed-optimizer buckets)
//! are found wherever they start.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::compress::SegmentSpec;
use crate::dtype::Dtype;
use crate::format::SegmentKind;

/// How a derived tensor's elements follow from its source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DeriveOp {
    /// The source's bytes as they are (same dtype).
    Copy = 0,
    /// An F32 source rounded to BF16, nearest with ties to even.
    RoundBf16 = 1,
    /// An F32 source rounded to F16, nearest with ties to even.
    RoundF16 = 2,
}

impl DeriveOp {
    pub fn from_code(c: u8) -> Option<DeriveOp> {
        match c {
            0 => Some(DeriveOp::Copy),
            1 => Some(DeriveOp::RoundBf16),
            2 => Some(DeriveOp::RoundF16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DeriveOp::Copy => "copy",
            DeriveOp::RoundBf16 => "round-bf16",
            DeriveOp::RoundF16 => "round-f16",
        }
    }

    /// Whether a tensor of `dtype` may be derived by this op from a source
    /// of `source`.
    pub fn allows(self, dtype: Dtype, source: Dtype) -> bool {
        match self {
            DeriveOp::Copy => dtype == source,
            DeriveOp::RoundBf16 => dtype == Dtype::BF16 && source == Dtype::F32,
            DeriveOp::RoundF16 => dtype == Dtype::F16 && source == Dtype::F32,
        }
    }

    /// Bytes of source per element of the derived tensor of `dtype`.
    pub fn source_width(self, dtype: Dtype) -> usize {
        match self {
            DeriveOp::Copy => dtype.width(),
            DeriveOp::RoundBf16 | DeriveOp::RoundF16 => 4,
        }
    }

    /// The rounding of a round op (BF16's for copy, which has none).
    pub fn round(self) -> fn(u32) -> u16 {
        match self {
            DeriveOp::RoundF16 => f16_bits,
            _ => bf16_bits,
        }
    }

    /// `out[i] ^= op(source)[i]`, element by element; `source` holds as
    /// many elements as `out` (checked by the callers).
    pub fn xor_into(self, source: &[u8], out: &mut [u8]) {
        // Each rounding monomorphised, so that the loop vectorises.
        fn rounded(round: impl Fn(u32) -> u16, source: &[u8], out: &mut [u8]) {
            for (o, s) in out.chunks_exact_mut(2).zip(source.chunks_exact(4)) {
                let r = round(u32::from_le_bytes([s[0], s[1], s[2], s[3]])).to_le_bytes();
                o[0] ^= r[0];
                o[1] ^= r[1];
            }
        }
        match self {
            DeriveOp::Copy => {
                for (o, s) in out.iter_mut().zip(source) {
                    *o ^= s;
                }
            }
            DeriveOp::RoundBf16 => rounded(bf16_bits, source, out),
            DeriveOp::RoundF16 => rounded(f16_bits, source, out),
        }
    }
}

/// BF16 bits of the F32 with bits `x`, rounded to nearest with ties to
/// even, as PyTorch's `tensor.to(torch.bfloat16)`: overflow rounds to
/// infinity; a NaN keeps its sign and top payload bits and is made quiet.
#[inline]
pub fn bf16_bits(x: u32) -> u16 {
    // Adding 0x7FFF plus the lowest kept bit rounds half to even; a carry
    // into the exponent is exactly rounding up. Both results are computed
    // and one chosen, so that loops over this vectorise.
    let rounded = (x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16) as u16;
    let nan = ((x >> 16) as u16) | 0x0040;
    if x & 0x7FFF_FFFF > 0x7F80_0000 {
        nan
    } else {
        rounded
    }
}

/// F16 bits of the F32 with bits `x`, rounded to nearest with ties to even
/// (IEEE 754 convertFormat): overflow gives infinity, values below half the
/// smallest subnormal give zero; a NaN keeps its sign and top 10 payload
/// bits and is made quiet.
#[inline]
pub fn f16_bits(x: u32) -> u16 {
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xFF) as i32;
    let man = x & 0x7F_FFFF;
    if exp == 0xFF {
        return if man == 0 {
            sign | 0x7C00
        } else {
            sign | 0x7E00 | (man >> 13) as u16
        };
    }
    let e = exp - 127 + 15;
    if e >= 0x1F {
        return sign | 0x7C00;
    }
    // The kept bits, the dropped ones and where they are cut.
    let (kept, full, shift) = if e <= 0 {
        // A subnormal F16: the implicit bit joins the mantissa.
        let shift = (14 - e) as u32;
        if shift >= 25 {
            return sign;
        }
        let full = man | 0x80_0000;
        (full >> shift, full, shift)
    } else {
        (((e as u32) << 10) | (man >> 13), man, 13)
    };
    let rem = full & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    // A carry out of the mantissa moves to the next exponent (or to
    // infinity), which is the correctly rounded result.
    let up = rem > half || (rem == half && kept & 1 == 1);
    sign | (kept + up as u32) as u16
}

/// A run of a derived tensor's elements taken from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Index of the source segment in the layout (a tensor that is not
    /// itself derived; it may be a delta tensor).
    pub source: usize,
    /// Element of the source where the run starts.
    pub source_elem: u64,
    /// Elements in the run (at least 1).
    pub elems: u64,
}

/// A derived tensor's reference: the op, and the pieces of sources its
/// elements come from, in order (one piece, unless the tensor straddles two
/// partitions of a flat buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    pub op: DeriveOp,
    pub pieces: Vec<Piece>,
}

/// Part of a [`Piece`] that a range of derived elements covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub source: usize,
    pub source_elem: u64,
    /// The first derived element covered, counted from the range's start.
    pub at: u64,
    pub elems: u64,
}

impl Derivation {
    /// The whole tensor from one source, from element `source_elem` on.
    pub fn whole(op: DeriveOp, source: usize, source_elem: u64, elems: u64) -> Derivation {
        Derivation {
            op,
            pieces: vec![Piece {
                source,
                source_elem,
                elems,
            }],
        }
    }

    /// The first piece's source (the only one of a whole-tensor reference).
    pub fn source(&self) -> usize {
        self.pieces[0].source
    }

    /// The spans of source elements that derived elements `start..end` come
    /// from, in order. The pieces must cover `end` (checked by
    /// `Index::parse` and [`find`]).
    pub fn spans(&self, start: u64, end: u64) -> Vec<Span> {
        let mut out = Vec::new();
        let mut first = 0u64;
        for p in &self.pieces {
            let last = first + p.elems;
            let (lo, hi) = (start.max(first), end.min(last));
            if lo < hi {
                out.push(Span {
                    source: p.source,
                    source_elem: p.source_elem + (lo - first),
                    at: lo - start,
                    elems: hi - lo,
                });
            }
            first = last;
        }
        out
    }
}

/// Smallest tensor worth deriving: below this a reference saves less than
/// it costs (a segment record grows by 13 bytes, each chunk keeps its table).
pub const MIN_DERIVED_LEN: u64 = 256;

/// Elements compared before a full check.
const SAMPLES: usize = 64;

/// Whether `a` and `b` (16-bit float bits) are equal or neighbours: what
/// stochastic rounding leaves.
#[inline]
fn near(a: u16, b: u16) -> bool {
    a == b || a.wrapping_add(1) == b || b.wrapping_add(1) == a
}

/// Elements of `data` (16-bit floats) that are neither equal to nor a
/// neighbour of `round(source)`. Branch-free and monomorphised for each
/// rounding, so that it vectorises.
fn far_count(op: DeriveOp, data: &[u8], source: &[u8]) -> usize {
    match op {
        DeriveOp::RoundF16 => far_count_with(f16_bits, data, source),
        _ => far_count_with(bf16_bits, data, source),
    }
}

fn far_count_with(round: impl Fn(u32) -> u16, data: &[u8], source: &[u8]) -> usize {
    data.chunks_exact(2)
        .zip(source.chunks_exact(4))
        .map(|(d, s)| {
            let d = u16::from_le_bytes([d[0], d[1]]);
            let r = round(u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            // Equal, one more or one less.
            usize::from(d.wrapping_sub(r).wrapping_add(1) > 2)
        })
        .sum()
}

/// Whether `data` is a rounding of `source` (same element count) worth a
/// residue: at most 1 element in 100 further than a neighbour from the
/// rounding. Checks [`SAMPLES`] spread elements before all of them.
fn rounds_to(op: DeriveOp, data: &[u8], source: &[u8]) -> bool {
    let round = op.round();
    let n = data.len() / 2;
    debug_assert_eq!(source.len(), 4 * n);
    if n == 0 {
        return false;
    }
    let mut far = 0;
    for k in 0..SAMPLES.min(n) {
        let i = k * n / SAMPLES.min(n);
        let d = u16::from_le_bytes([data[2 * i], data[2 * i + 1]]);
        let s = &source[4 * i..4 * i + 4];
        if !near(d, round(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))) {
            far += 1;
        }
    }
    if far > SAMPLES / 16 {
        return false;
    }
    let limit = n / 100;
    // Checked in parallel pieces: the masters of a large model are large.
    const PIECE: usize = 1 << 18;
    let far: usize = data
        .par_chunks(2 * PIECE)
        .zip(source.par_chunks(4 * PIECE))
        .map(|(d, s)| far_count(op, d, s))
        .sum();
    far <= limit
}

fn tensor(spec: &SegmentSpec) -> Option<(&str, Dtype, &[u64])> {
    match &spec.kind {
        SegmentKind::Tensor { name, dtype, shape } => Some((name, *dtype, shape)),
        SegmentKind::Bytes => None,
    }
}

/// The tensor's own name without the `PATH:` of a directory stream, so that
/// `weights-bf16/step-300.safetensors:w` meets `master-fp32/step-300.safetensors:w`.
fn short_name(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, n)| n)
}

/// Decides which tensors of `layout` (the original's pieces in `parts`) are
/// derived from another, and how. Every decision is verified on all bytes:
/// a copy is byte-identical, a rounding is within the residue bound of
/// [`rounds_to`]. Sources are never derived themselves.
pub fn find(parts: &[&[u8]], layout: &[SegmentSpec]) -> Vec<Option<Derivation>> {
    find_among(parts, layout, 0)
}

/// [`find`] where the segments before `first` are sources only (the
/// tensors of other files, [`crate::compress_with_sources`]): they are
/// never derived, and a tensor byte-identical to one of them is a copy of
/// it.
pub fn find_among(
    parts: &[&[u8]],
    layout: &[SegmentSpec],
    first: usize,
) -> Vec<Option<Derivation>> {
    let mut derived: Vec<Option<Derivation>> = vec![None; layout.len()];
    let big = |i: usize| layout[i].len >= MIN_DERIVED_LEN && tensor(&layout[i]).is_some();

    // 1. Byte-identical tensors: grouped by dtype and length, then by a
    // hash of samples (so that the optimizer's many tensors of one shape
    // are not read whole), then compared in full; the first of each group
    // is the source.
    let mut groups: HashMap<(Dtype, u64), Vec<usize>> = HashMap::new();
    for i in (0..layout.len()).filter(|&i| big(i)) {
        let (_, dtype, _) = tensor(&layout[i]).expect("a tensor");
        groups.entry((dtype, layout[i].len)).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    for g in groups {
        // Sample hash -> the distinct tensors seen with it.
        let mut seen: HashMap<u64, Vec<usize>> = HashMap::new();
        for i in g {
            let kept = seen.entry(sample_hash(parts[i])).or_default();
            // Groups are in index order: sources-only tensors come first.
            match kept.iter().find(|&&j| i >= first && parts[j] == parts[i]) {
                Some(&j) => {
                    let n = layout[i].len / tensor(&layout[i]).expect("a tensor").1.width() as u64;
                    derived[i] = Some(Derivation::whole(DeriveOp::Copy, j, 0, n));
                }
                None => kept.push(i),
            }
        }
    }

    // 2. Roundings, by name and shape first.
    let op_of = |d: Dtype| match d {
        Dtype::BF16 => Some(DeriveOp::RoundBf16),
        Dtype::F16 => Some(DeriveOp::RoundF16),
        _ => None,
    };
    let sources: Vec<usize> = (0..layout.len())
        .filter(|&i| {
            big(i) && derived[i].is_none() && tensor(&layout[i]).is_some_and(|t| t.1 == Dtype::F32)
        })
        .collect();
    let mut by_name: HashMap<(&str, &[u64]), Vec<usize>> = HashMap::new();
    for &i in &sources {
        let (name, _, shape) = tensor(&layout[i]).expect("a tensor");
        by_name
            .entry((short_name(name), shape))
            .or_default()
            .push(i);
    }
    let candidates: Vec<usize> = (first..layout.len())
        .filter(|&i| {
            big(i)
                && derived[i].is_none()
                && tensor(&layout[i]).is_some_and(|t| op_of(t.1).is_some())
        })
        .collect();
    let mut unmatched = Vec::new();
    for &i in &candidates {
        let (name, dtype, shape) = tensor(&layout[i]).expect("a tensor");
        let op = op_of(dtype).expect("a candidate");
        let found = by_name
            .get(&(short_name(name), shape))
            .into_iter()
            .flatten()
            .find(|&&s| rounds_to(op, parts[i], parts[s]));
        match found {
            Some(&s) => {
                derived[i] = Some(Derivation::whole(op, s, 0, parts[i].len() as u64 / 2));
            }
            None => unmatched.push(i),
        }
    }

    // 3. The rest by content: each candidate is keyed by windows of WINDOW
    // elements that are not constant (a constant window, such as a
    // LayerNorm's ones, would match everywhere), one in each class of
    // positions modulo STRIDE; one position in STRIDE of every F32 source
    // is looked up by the rounding of its window.
    if !unmatched.is_empty() {
        by_content(parts, layout, &sources, &unmatched, &mut derived);
    }

    // A copy of a tensor that became a rounding is the same rounding (no
    // chains: sources are never derived).
    for i in 0..derived.len() {
        if let Some(d) = &derived[i]
            && let Some(sd) = derived[d.source()].clone()
        {
            derived[i] = Some(sd);
        }
    }
    derived
}

/// XXH3-64 of 4 KiB at the start, the middle and the end of `data`.
fn sample_hash(data: &[u8]) -> u64 {
    const N: usize = 4096;
    if data.len() <= 3 * N {
        return crate::hash::xxh3_64(data);
    }
    let mid = data.len() / 2;
    let mut h = [0u8; 24];
    for (k, piece) in [&data[..N], &data[mid..mid + N], &data[data.len() - N..]]
        .into_iter()
        .enumerate()
    {
        h[8 * k..8 * k + 8].copy_from_slice(&crate::hash::xxh3_64(piece).to_le_bytes());
    }
    crate::hash::xxh3_64(&h)
}

/// Elements in a content key.
const WINDOW: usize = 8;

/// Content keys: the window's elements -> (candidate, where its window starts).
type KeyMap = HashMap<[u16; WINDOW], Vec<(usize, usize)>>;

/// Source positions probed: one in STRIDE. Each candidate is keyed by a
/// window in each of the STRIDE classes of start positions modulo STRIDE,
/// so that wherever it starts in a source, one of its windows lies at a
/// probed position: the scan rounds and looks up a sixteenth of the
/// positions.
const STRIDE: usize = 16;

/// Most places [`by_content`] checks for one candidate.
const MAX_TRIES: u32 = 64;
/// Most key matches [`by_content`] keeps from one block of positions.
const MAX_BLOCK_HITS: usize = 256;

/// Step 3 of [`find`]: finds `unmatched` candidates (BF16 or F16 tensors)
/// inside the F32 `sources` by content, at any element offset.
fn by_content(
    parts: &[&[u8]],
    layout: &[SegmentSpec],
    sources: &[usize],
    unmatched: &[usize],
    derived: &mut [Option<Derivation>],
) {
    let elem16 = |b: &[u8], i: usize| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]);
    // Key -> (candidate, where its window starts), per op; and how many
    // candidates of each op have keys.
    let mut keys: [KeyMap; 2] = Default::default();
    let mut left = [0usize; 2];
    // Places tried per candidate: a key found in many places (periodic
    // data) must not make the search quadratic.
    let mut tries = vec![0u32; layout.len()];
    for &i in unmatched {
        let (_, dtype, _) = tensor(&layout[i]).expect("a tensor");
        let t = usize::from(dtype == Dtype::F16);
        let n = parts[i].len() / 2;
        // Windows that are not constant (a constant window, such as a
        // LayerNorm's ones, would match everywhere).
        let varied = |j: usize| (1..WINDOW).any(|k| elem16(parts[i], j + k) != elem16(parts[i], j));
        let Some(first) = (0..n.saturating_sub(WINDOW - 1)).find(|&j| varied(j)) else {
            continue;
        };
        // For each class of positions modulo STRIDE, the first varied
        // window from `first` on.
        let mut any = false;
        for c in 0..STRIDE {
            let Some(at) = (first + c..n.saturating_sub(WINDOW - 1))
                .step_by(STRIDE)
                .find(|&j| varied(j))
            else {
                continue;
            };
            let key: [u16; WINDOW] = std::array::from_fn(|k| elem16(parts[i], at + k));
            keys[t].entry(key).or_default().push((i, at));
            any = true;
        }
        left[t] += usize::from(any);
    }
    for (t, keys) in keys.iter_mut().enumerate() {
        let op = if t == 0 {
            DeriveOp::RoundBf16
        } else {
            DeriveOp::RoundF16
        };
        let round = op.round();
        // A 2^20-bit filter on the first four elements of a key keeps the
        // hash map out of the scan's inner loop.
        let mut filter = vec![0u64; 1 << 14];
        let slot = |w: u64| (w.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44) as usize;
        for key in keys.keys() {
            let w = key[..4].iter().fold(0u64, |a, &x| a << 16 | x as u64);
            filter[slot(w) >> 6] |= 1 << (slot(w) & 63);
        }
        for &s in sources {
            if left[t] == 0 {
                break;
            }
            let src = parts[s];
            let n = src.len() / 4;
            if n < WINDOW {
                continue;
            }
            let r = |q: usize| {
                round(u32::from_le_bytes([
                    src[4 * q],
                    src[4 * q + 1],
                    src[4 * q + 2],
                    src[4 * q + 3],
                ]))
            };
            // Probed positions in parallel blocks; each reports its hits in order.
            const BLOCK: usize = 1 << 18;
            let last = n - WINDOW;
            let hits: Vec<(usize, [u16; WINDOW])> = (0..=last)
                .step_by(BLOCK)
                .collect::<Vec<_>>()
                .into_par_iter()
                .flat_map_iter(|b| {
                    let mut found = Vec::new();
                    for p in (b..=last.min(b + BLOCK - 1)).step_by(STRIDE) {
                        let w = (r(p) as u64) << 48
                            | (r(p + 1) as u64) << 32
                            | (r(p + 2) as u64) << 16
                            | r(p + 3) as u64;
                        let h = slot(w);
                        if filter[h >> 6] >> (h & 63) & 1 == 1 {
                            let key: [u16; WINDOW] = std::array::from_fn(|k| r(p + k));
                            if keys.contains_key(&key) {
                                found.push((p, key));
                                // Periodic data can match everywhere: a
                                // block reports a bounded number of hits.
                                if found.len() == MAX_BLOCK_HITS {
                                    break;
                                }
                            }
                        }
                    }
                    found.into_iter()
                })
                .collect();
            for (p, key) in hits {
                let Some(list) = keys.get(&key) else {
                    continue;
                };
                for &(i, at) in list {
                    if derived[i].is_some() || tries[i] >= MAX_TRIES {
                        continue;
                    }
                    tries[i] += 1;
                    if let Some(pieces) = place(parts, sources, op, parts[i], s, p, at) {
                        derived[i] = Some(Derivation { op, pieces });
                        left[t] -= 1;
                    }
                }
            }
        }
    }
}

/// Where a candidate `data` (16-bit floats) whose window at element `at`
/// was found at element `p` of source `s` comes from: the one piece of `s`
/// it lies in, or, where it runs past the end of `s` (or starts before its
/// beginning), that piece and the rest at the start (or the end) of another
/// of the `sources`, as a tensor straddling two partitions of a flat buffer
/// does (ZeRO, Megatron's distributed optimizer). `None` if the elements do
/// not round to the data.
fn place(
    parts: &[&[u8]],
    sources: &[usize],
    round: DeriveOp,
    data: &[u8],
    s: usize,
    p: usize,
    at: usize,
) -> Option<Vec<Piece>> {
    let (m, n) = (data.len() / 2, parts[s].len() / 4);
    let src = parts[s];
    let piece = |source, source_elem: usize, elems: usize| Piece {
        source,
        source_elem: source_elem as u64,
        elems: elems as u64,
    };
    let others = || sources.iter().copied().filter(move |&o| o != s);
    if p >= at {
        let start = p - at;
        if start + m <= n {
            return rounds_to(round, data, &src[4 * start..4 * (start + m)])
                .then(|| vec![piece(s, start, m)]);
        }
        // The head here, the rest at the start of another source.
        let head = n - start;
        if !rounds_to(round, &data[..2 * head], &src[4 * start..]) {
            return None;
        }
        let rest = m - head;
        let o = others().find(|&o| {
            parts[o].len() / 4 >= rest && rounds_to(round, &data[2 * head..], &parts[o][..4 * rest])
        })?;
        Some(vec![piece(s, start, head), piece(o, 0, rest)])
    } else {
        // The tail here, the first `before` elements at the end of another.
        let before = at - p;
        if m - before > n || !rounds_to(round, &data[2 * before..], &src[..4 * (m - before)]) {
            return None;
        }
        let o = others().find(|&o| {
            let n2 = parts[o].len() / 4;
            n2 >= before && rounds_to(round, &data[..2 * before], &parts[o][4 * (n2 - before)..])
        })?;
        let n2 = parts[o].len() / 4;
        Some(vec![piece(o, n2 - before, before), piece(s, 0, m - before)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_the_half_crate() {
        // Every exponent, with mantissas around each rounding boundary and
        // a spread of others; NaNs and infinities included.
        let mut xs = Vec::new();
        for exp in 0u32..256 {
            for sign in [0u32, 1] {
                for m in [
                    0u32, 1, 0x0FFF, 0x1000, 0x1001, 0x2FFF, 0x3000, 0x7FFF, 0x8000, 0x8001,
                ]
                .into_iter()
                .chain((0..64).map(|k| k * 0x1_FFFF + 0x1357))
                .chain([0x7F_FFFF, 0x40_0000, 0x18000, 0x17FFF])
                {
                    xs.push(sign << 31 | exp << 23 | (m & 0x7F_FFFF));
                }
            }
        }
        // Subnormal F16 boundaries: every shift with a half-way remainder.
        for exp in 100u32..=113 {
            for m in 0..4096u32 {
                xs.push(exp << 23 | m << 11);
            }
        }
        for x in xs {
            let f = f32::from_bits(x);
            assert_eq!(
                bf16_bits(x),
                half::bf16::from_f32(f).to_bits(),
                "bf16 of {x:08x}"
            );
            assert_eq!(
                f16_bits(x),
                half::f16::from_f32(f).to_bits(),
                "f16 of {x:08x}"
            );
        }
    }

    #[test]
    fn xor_into_applies_the_op() {
        let src: Vec<u8> = [1.0f32, -2.5, 3.0e-7, 65519.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut out = vec![0u8; 8];
        DeriveOp::RoundF16.xor_into(&src, &mut out);
        let want: Vec<u8> = [1.0f32, -2.5, 3.0e-7, 65519.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        assert_eq!(out, want);
        let mut out = want.clone();
        DeriveOp::Copy.xor_into(&want, &mut out);
        assert_eq!(out, [0; 8]);
    }
}
