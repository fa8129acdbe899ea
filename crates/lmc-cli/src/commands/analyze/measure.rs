//! Measurements of one segment of a checkpoint (a tensor, or bytes that are
//! not a tensor such as the safetensors header), in one pass over its bytes.
//!
//! The segment is read in blocks of lmc's chunk size
//! ([`lmc_core::DEFAULT_CHUNK_SIZE`]), so each block is also exactly the
//! chunk lmc would code: the lmc size is the sum of
//! [`lmc_core::codec::encode_plane`] over the planes of every block, as
//! `lmc compress` stores them (container header and index not counted).
//! zstd runs as a stream over the whole segment, raw and plane by plane, so
//! memory stays at a few blocks whatever the tensor size.

use std::io::{self, Write};

use lmc_core::codec::{PlaneKind, encode_plane, encode_plane_led, split_key};
use lmc_core::stats::{Histogram, xor_into};
use lmc_core::{DEFAULT_CHUNK_SIZE, Dtype, SegmentKind, Tuning, planes};
use rayon::prelude::*;

/// zstd level of the baselines (the everyday default).
pub const ZSTD_LEVEL: i32 = 3;

/// One byte plane, or the single plane of a byte segment.
#[derive(Clone, Debug, Default)]
pub struct PlaneStats {
    /// Bytes in the plane (one per element).
    pub len: u64,
    /// Order-0 entropy, bits per byte.
    pub entropy: f64,
    /// Bytes equal to zero.
    pub zero_bytes: u64,
    /// Bytes lmc stores for the plane.
    pub lmc_bytes: u64,
}

impl PlaneStats {
    fn from_histogram(h: &Histogram, lmc_bytes: u64) -> PlaneStats {
        PlaneStats {
            len: h.total(),
            entropy: h.entropy(),
            zero_bytes: h.0[0],
            lmc_bytes,
        }
    }
}

/// How a tensor relates to the previous snapshot of a series.
#[derive(Clone, Debug)]
pub enum Change {
    /// The first file, or a segment that is not a tensor: nothing to compare.
    NotCompared,
    /// The previous file has no tensor of this name, dtype and shape.
    New,
    /// Compared element by element with the previous snapshot's tensor.
    Matched {
        unchanged_elements: u64,
        /// The planes of `current XOR previous`.
        xor_planes: Vec<PlaneStats>,
    },
}

/// The histogram of the exponent field of a float tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exponents {
    /// Width of the field: BF16 and F32 8, F16 5, F64 11, F8_E4M3 4, F8_E5M2 5.
    pub bits: u32,
    /// The exponent bias (field value of 1.0).
    pub bias: i32,
    /// `counts[e]`: elements whose exponent field is `e` (0: zeros and
    /// subnormals; all ones: infinities and NaN).
    pub counts: Vec<u64>,
}

impl Exponents {
    pub fn new(dtype: Dtype) -> Option<Exponents> {
        let (bits, bias) = exponent_field(dtype)?;
        Some(Exponents {
            bits,
            bias,
            counts: vec![0; 1 << bits],
        })
    }

    pub fn merge(&mut self, other: &Exponents) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Counts the exponent fields of the little-endian elements of `data`.
    fn add(&mut self, dtype: Dtype, data: &[u8]) {
        let c = &mut self.counts;
        match dtype {
            Dtype::BF16 | Dtype::F16 => {
                let shift = if dtype == Dtype::BF16 { 7 } else { 10 };
                let mask = (1u16 << self.bits) - 1;
                for e in data.chunks_exact(2) {
                    let v = u16::from_le_bytes([e[0], e[1]]);
                    c[((v >> shift) & mask) as usize] += 1;
                }
            }
            Dtype::F32 => {
                for e in data.chunks_exact(4) {
                    let v = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                    c[((v >> 23) & 0xFF) as usize] += 1;
                }
            }
            Dtype::F64 => {
                for e in data.chunks_exact(8) {
                    let v = u64::from_le_bytes(e.try_into().unwrap_or_default());
                    c[((v >> 52) & 0x7FF) as usize] += 1;
                }
            }
            Dtype::F8E4M3 => data.iter().for_each(|&b| c[((b >> 3) & 0xF) as usize] += 1),
            Dtype::F8E5M2 => data
                .iter()
                .for_each(|&b| c[((b >> 2) & 0x1F) as usize] += 1),
            _ => {}
        }
    }
}

/// Width and bias of the exponent field of a float dtype.
fn exponent_field(dtype: Dtype) -> Option<(u32, i32)> {
    Some(match dtype {
        Dtype::BF16 | Dtype::F32 => (8, 127),
        Dtype::F16 => (5, 15),
        Dtype::F64 => (11, 1023),
        Dtype::F8E4M3 => (4, 7),
        Dtype::F8E5M2 => (5, 15),
        _ => return None,
    })
}

/// Everything measured on one segment.
#[derive(Clone, Debug)]
pub struct SegmentStats {
    pub kind: SegmentKind,
    /// Offset of the segment in its file.
    pub offset: u64,
    pub bytes: u64,
    /// Elements of a tensor; bytes of a byte segment.
    pub elements: u64,
    /// Elements whose bytes are all zero.
    pub zero_elements: u64,
    pub planes: Vec<PlaneStats>,
    /// zstd -3 on the bytes as they are.
    pub zstd_raw: u64,
    /// zstd -3 on each byte plane on its own, summed.
    pub zstd_grouped: u64,
    pub exponents: Option<Exponents>,
    pub change: Change,
}

impl SegmentStats {
    pub fn dtype(&self) -> Option<Dtype> {
        match &self.kind {
            SegmentKind::Tensor { dtype, .. } => Some(*dtype),
            SegmentKind::Bytes => None,
        }
    }

    /// Bytes lmc stores for the segment's chunks.
    pub fn lmc_bytes(&self) -> u64 {
        self.planes.iter().map(|p| p.lmc_bytes).sum()
    }

    /// The order-0 bound of the byte planes, in bytes.
    pub fn bound_bytes(&self) -> f64 {
        self.planes
            .iter()
            .map(|p| p.len as f64 * p.entropy / 8.0)
            .sum()
    }

    pub fn zero_bytes(&self) -> u64 {
        self.planes.iter().map(|p| p.zero_bytes).sum()
    }

    /// Bytes lmc stores for the XOR delta, where there is one.
    pub fn xor_lmc_bytes(&self) -> Option<u64> {
        match &self.change {
            Change::Matched { xor_planes, .. } => {
                Some(xor_planes.iter().map(|p| p.lmc_bytes).sum())
            }
            _ => None,
        }
    }

    /// What a delta-coding lmc would store: the XOR delta where the tensor
    /// was matched, the segment itself otherwise.
    pub fn delta_or_plain_lmc_bytes(&self) -> u64 {
        self.xor_lmc_bytes().unwrap_or_else(|| self.lmc_bytes())
    }
}

/// Counts written bytes and throws them away.
#[derive(Default)]
struct ByteCount(u64);

impl Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A zstd stream over `len` bytes that only counts its output.
fn zstd_counter(len: u64) -> io::Result<zstd::stream::write::Encoder<'static, ByteCount>> {
    let mut enc = zstd::stream::write::Encoder::new(ByteCount::default(), ZSTD_LEVEL)?;
    // Like a one-shot compression: the size goes in the frame header and
    // zstd picks its parameters for an input of this size.
    enc.set_pledged_src_size(Some(len))?;
    Ok(enc)
}

/// Elements of `width` bytes in `data` whose bytes are all zero.
fn zero_elements(data: &[u8], width: usize) -> u64 {
    data.chunks_exact(width)
        .filter(|e| e.iter().all(|&b| b == 0))
        .count() as u64
}

/// What the chunk-by-chunk pass gathers; partial sums over some chunks,
/// merged at the end. Holds its scratch buffers too.
struct ChunkTotals {
    hists: Vec<Histogram>,
    lmc: Vec<u64>,
    xor_hists: Vec<Histogram>,
    xor_lmc: Vec<u64>,
    unchanged: u64,
    zeros: u64,
    exponents: Option<Exponents>,
    planes: Vec<Vec<u8>>,
    xor: Vec<u8>,
    coded: Vec<u8>,
}

impl ChunkTotals {
    fn new(dtype: Option<Dtype>, width: usize) -> ChunkTotals {
        ChunkTotals {
            hists: vec![Histogram::default(); width],
            lmc: vec![0; width],
            xor_hists: vec![Histogram::default(); width],
            xor_lmc: vec![0; width],
            unchanged: 0,
            zeros: 0,
            exponents: dtype.and_then(Exponents::new),
            planes: Vec::new(),
            xor: Vec::new(),
            coded: Vec::new(),
        }
    }

    fn merge(mut self, other: ChunkTotals) -> ChunkTotals {
        let sum = |a: &mut Vec<u64>, b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        for (a, b) in self.hists.iter_mut().zip(&other.hists) {
            a.merge(b);
        }
        for (a, b) in self.xor_hists.iter_mut().zip(&other.xor_hists) {
            a.merge(b);
        }
        sum(&mut self.lmc, &other.lmc);
        sum(&mut self.xor_lmc, &other.xor_lmc);
        self.unchanged += other.unchanged;
        self.zeros += other.zeros;
        if let (Some(a), Some(b)) = (self.exponents.as_mut(), other.exponents.as_ref()) {
            a.merge(b);
        }
        self
    }

    /// Histograms and lmc sizes of the planes of one chunk (of the tensor,
    /// or, `delta`, of its XOR delta: there lmc codes the planes after the
    /// first given it, as split planes where that pays).
    #[allow(clippy::too_many_arguments)]
    fn code_planes(
        dtype: Option<Dtype>,
        kind: PlaneKind,
        delta: bool,
        chunk: &[u8],
        buf: &mut Vec<Vec<u8>>,
        coded: &mut Vec<u8>,
        hists: &mut [Histogram],
        lmc: &mut [u64],
    ) {
        with_planes(dtype, chunk, buf, |planes| {
            let key = if delta { split_key(planes[0]) } else { 0 };
            for (k, p) in planes.iter().enumerate() {
                hists[k].add(p);
                coded.clear();
                if delta && k > 0 {
                    encode_plane_led(p, planes[0], key, kind, &Tuning::DEFAULT, coded);
                } else {
                    encode_plane(p, kind, coded);
                }
                lmc[k] += coded.len() as u64;
            }
        });
    }
}

/// Splits `block` into planes (or takes it whole for one-byte elements and
/// byte segments) and hands them to `f`.
fn with_planes<R>(
    dtype: Option<Dtype>,
    block: &[u8],
    buf: &mut Vec<Vec<u8>>,
    f: impl FnOnce(&[&[u8]]) -> R,
) -> R {
    match dtype {
        Some(d) if d.width() > 1 => {
            buf.resize_with(d.width(), Vec::new);
            planes::split(d, block, buf);
            let refs: Vec<&[u8]> = buf.iter().map(Vec::as_slice).collect();
            f(&refs)
        }
        _ => f(&[block]),
    }
}

/// Size of zstd -3 on `data`, streamed.
fn zstd_size(data: &[u8]) -> io::Result<u64> {
    let mut z = zstd_counter(data.len() as u64)?;
    for block in data.chunks(1 << 20) {
        z.write_all(block)?;
    }
    Ok(z.finish()?.0)
}

/// Size of zstd -3 on each byte plane of `data` on its own, summed; the
/// planes are cut from the data block by block and fed to one stream each.
fn zstd_planes_size(dtype: Dtype, data: &[u8]) -> io::Result<u64> {
    let width = dtype.width();
    let mut streams = (0..width)
        .map(|_| zstd_counter((data.len() / width) as u64))
        .collect::<io::Result<Vec<_>>>()?;
    let mut buf = Vec::new();
    let step = (DEFAULT_CHUNK_SIZE / width).max(1) * width;
    for block in data.chunks(step) {
        with_planes(Some(dtype), block, &mut buf, |planes| {
            streams
                .iter_mut()
                .zip(planes)
                .try_for_each(|(z, p)| z.write_all(p))
        })?;
    }
    let mut total = 0;
    for z in streams {
        total += z.finish()?.0;
    }
    Ok(total)
}

/// Measures one segment. `data` is its bytes; `previous` the bytes of the
/// matching tensor of the previous snapshot (same dtype and shape, so the
/// same length), `first` whether there is no previous snapshot at all.
///
/// Three parts run side by side on the rayon pool, so that one huge tensor
/// (an embedding) is not measured by a single thread: lmc's chunks in
/// parallel (histograms, lmc sizes, zeros, exponents, the XOR delta), and
/// the two zstd streams.
///
/// The caller guarantees that a tensor's length is a multiple of its width
/// (checked against its shape when the layout was read).
pub fn measure(
    kind: &SegmentKind,
    offset: u64,
    data: &[u8],
    previous: Option<&[u8]>,
    first: bool,
) -> io::Result<SegmentStats> {
    let dtype = match kind {
        SegmentKind::Tensor { dtype, .. } => Some(*dtype),
        SegmentKind::Bytes => None,
    };
    let (width, plane_kind) = match dtype {
        Some(d) => (d.width(), PlaneKind::Tensor),
        None => (1, PlaneKind::Generic),
    };
    let previous = previous.filter(|p| p.len() == data.len());
    let n_elems = (data.len() / width) as u64;

    // The chunks are lmc's chunks of this segment.
    let step = (DEFAULT_CHUNK_SIZE / width).max(1) * width;
    let by_chunk = || {
        data.par_chunks(step)
            .enumerate()
            .fold(
                || ChunkTotals::new(dtype, width),
                |mut t, (b, chunk)| {
                    t.zeros += zero_elements(chunk, width);
                    if let (Some(e), Some(d)) = (t.exponents.as_mut(), dtype) {
                        e.add(d, chunk);
                    }
                    let ChunkTotals {
                        hists,
                        lmc,
                        xor_hists,
                        xor_lmc,
                        unchanged,
                        planes,
                        xor,
                        coded,
                        ..
                    } = &mut t;
                    ChunkTotals::code_planes(
                        dtype, plane_kind, false, chunk, planes, coded, hists, lmc,
                    );
                    if let Some(prev) = previous {
                        let start = b * step;
                        xor_into(chunk, &prev[start..start + chunk.len()], xor);
                        *unchanged += zero_elements(xor, width);
                        ChunkTotals::code_planes(
                            dtype, plane_kind, true, xor, planes, coded, xor_hists, xor_lmc,
                        );
                    }
                    t
                },
            )
            .reduce(|| ChunkTotals::new(dtype, width), ChunkTotals::merge)
    };
    let (t, (zstd_raw, zstd_grouped)) = rayon::join(by_chunk, || {
        rayon::join(
            || zstd_size(data),
            || match dtype {
                Some(d) if width > 1 => zstd_planes_size(d, data).map(Some),
                _ => Ok(None),
            },
        )
    });
    let zstd_raw = zstd_raw?;
    let zstd_grouped = zstd_grouped?.unwrap_or(zstd_raw);
    let ChunkTotals {
        hists,
        lmc,
        xor_hists,
        xor_lmc,
        unchanged,
        zeros,
        exponents,
        ..
    } = t;

    let planes = hists
        .iter()
        .zip(&lmc)
        .map(|(h, &l)| PlaneStats::from_histogram(h, l))
        .collect();
    let change = match (dtype, previous) {
        (None, _) => Change::NotCompared,
        (Some(_), Some(_)) => Change::Matched {
            unchanged_elements: unchanged,
            xor_planes: xor_hists
                .iter()
                .zip(&xor_lmc)
                .map(|(h, &l)| PlaneStats::from_histogram(h, l))
                .collect(),
        },
        (Some(_), None) if first => Change::NotCompared,
        (Some(_), None) => Change::New,
    };
    Ok(SegmentStats {
        kind: kind.clone(),
        offset,
        bytes: data.len() as u64,
        elements: n_elems,
        zero_elements: zeros,
        planes,
        zstd_raw,
        zstd_grouped,
        exponents,
        change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dtype: Dtype, n: u64) -> SegmentKind {
        SegmentKind::Tensor {
            name: "t".into(),
            dtype,
            shape: vec![n],
        }
    }

    #[test]
    fn exponent_fields() {
        // 1.0, 2.0, 0.5 and 0.0 in each float format.
        let bf16: Vec<u8> = [0x3F80u16, 0x4000, 0x3F00, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let s = measure(&tensor(Dtype::BF16, 4), 0, &bf16, None, true).unwrap();
        let e = s.exponents.unwrap();
        assert_eq!((e.bits, e.bias, e.counts.len()), (8, 127, 256));
        assert_eq!(
            (e.counts[127], e.counts[128], e.counts[126], e.counts[0]),
            (1, 1, 1, 1)
        );

        let f16: Vec<u8> = [0x3C00u16, 0x4000, 0x3800, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let e = measure(&tensor(Dtype::F16, 4), 0, &f16, None, true)
            .unwrap()
            .exponents
            .unwrap();
        assert_eq!(
            (
                e.bits,
                e.counts[15],
                e.counts[16],
                e.counts[14],
                e.counts[0]
            ),
            (5, 1, 1, 1, 1)
        );

        let f64s: Vec<u8> = [1.0f64, 2.0, 0.5, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let e = measure(&tensor(Dtype::F64, 4), 0, &f64s, None, true)
            .unwrap()
            .exponents
            .unwrap();
        assert_eq!(
            (e.counts[1023], e.counts[1024], e.counts[1022], e.counts[0]),
            (1, 1, 1, 1)
        );
        assert!(Exponents::new(Dtype::I32).is_none());
    }

    #[test]
    fn blocks_add_up_across_chunks() {
        // Three lmc chunks of F32, the second snapshot changing every 3rd element.
        let n = 3 * DEFAULT_CHUNK_SIZE / 4 + 5;
        let a: Vec<u8> = (0..n)
            .flat_map(|i| ((i % 97) as f32).to_le_bytes())
            .collect();
        let b: Vec<u8> = (0..n)
            .flat_map(|i| (((i % 97) + usize::from(i % 3 == 0)) as f32).to_le_bytes())
            .collect();
        let s = measure(&tensor(Dtype::F32, n as u64), 0, &b, Some(&a), false).unwrap();
        let Change::Matched {
            unchanged_elements,
            xor_planes,
        } = &s.change
        else {
            panic!("not matched")
        };
        assert_eq!(*unchanged_elements, (n - n.div_ceil(3)) as u64);
        assert_eq!(xor_planes.iter().map(|p| p.len).sum::<u64>(), 4 * n as u64);
        assert_eq!(s.planes.iter().map(|p| p.len).sum::<u64>(), 4 * n as u64);
        // 0.0 where i % 97 == 0, unless the element was incremented.
        let zeros = (0..n).filter(|i| i % 97 == 0 && i % 3 != 0).count();
        assert_eq!(s.zero_elements, zeros as u64);
        assert!(s.lmc_bytes() < s.bytes && s.zstd_raw < s.bytes);
        assert!(s.xor_lmc_bytes().unwrap() < s.lmc_bytes());
        // A changed length is not a match.
        let s = measure(&tensor(Dtype::F32, 1), 0, &b[..4], Some(&a), false).unwrap();
        assert!(matches!(s.change, Change::New));
    }
}
