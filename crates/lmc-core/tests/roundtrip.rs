//! Round-trip properties of the whole pipeline: `compress`, then
//! `Container::open`, `verify`, `decompress_to`, `decompress_into` and `read_tensor`, must give
//! back every input bit for bit, whatever the dtype, shape, chunk size or data.

mod common;
use common::{Rng, tensor};

use std::io::Cursor;

use lmc_core::codec::PlaneCodec;
use lmc_core::huffman::{self, MAX_CODE_LEN};
use lmc_core::{
    CompressOptions, Container, DEFAULT_CHUNK_SIZE, Dtype, Error, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
    SegmentKind, SegmentSpec, compress,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// The one helper every test goes through.
// ---------------------------------------------------------------------------

/// Compresses `input` (described by `layout`) with `chunk_size`, then checks
/// every way of reading it back. Returns the container bytes.
fn roundtrip(input: &[u8], layout: &[SegmentSpec], chunk_size: usize) -> Vec<u8> {
    let options = CompressOptions::default().chunk_size(chunk_size);
    let mut out = Cursor::new(Vec::new());
    let summary = compress(input, layout, &options, &mut out, &mut |_| true)
        .unwrap_or_else(|e| panic!("compress failed: {e}"));
    let packed = out.into_inner();
    assert_eq!(summary.original_len, input.len() as u64);
    assert_eq!(summary.compressed_len, packed.len() as u64);

    let container = Container::open(&packed).unwrap_or_else(|e| panic!("open failed: {e}"));
    assert_eq!(container.header().original_len, input.len() as u64);
    assert_eq!(container.chunks().len(), summary.chunks);
    assert_eq!(container.len(), packed.len() as u64);

    container
        .verify(&mut |_| true)
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    let mut restored = Vec::new();
    container
        .decompress_to(&mut restored, &mut |_| true)
        .unwrap_or_else(|e| panic!("decompress_to failed: {e}"));
    assert!(restored == input, "decompress_to changed the bytes");
    let mut into = vec![0xA5u8; input.len()];
    container
        .decompress_into(&mut into, &mut |_| true)
        .unwrap_or_else(|e| panic!("decompress_into failed: {e}"));
    assert!(into == input, "decompress_into changed the bytes");
    let mut wrong = vec![0u8; input.len() + 1];
    let err = container
        .decompress_into(&mut wrong, &mut |_| true)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");

    // The index describes the layout we gave, and chunks respect the chunk size.
    let segments = container.segments();
    assert_eq!(segments.len(), layout.len());
    let mut offset = 0u64;
    for (seg, spec) in segments.iter().zip(layout) {
        assert_eq!(seg.kind, spec.kind);
        assert_eq!(seg.len, spec.len);
        assert_eq!(seg.offset, offset);
        offset += spec.len;
        let width = spec.kind.width();
        // Tensors found to hold repeated strings get the tuning's longer
        // chunks instead (4 MiB by default).
        let lz = lmc_core::Tuning::DEFAULT
            .lz_chunk_size
            .unwrap_or(chunk_size);
        let step = [chunk_size, lz]
            .map(|c| (c / width).max(1) * width)
            .into_iter()
            .find(|&st| seg.chunk_count == (spec.len as usize).div_ceil(st))
            .unwrap_or_else(|| panic!("{} chunks for {} bytes", seg.chunk_count, spec.len));
        for c in &container.chunks()[seg.first_chunk..seg.first_chunk + seg.chunk_count] {
            assert!(c.raw_len as usize <= step && (c.raw_len as usize).is_multiple_of(width));
            assert_eq!(c.planes.len(), width);
        }
    }

    // Every tensor on its own.
    for (seg, spec) in segments.iter().zip(layout) {
        if let SegmentKind::Tensor { name, .. } = &spec.kind {
            let got = container
                .read_tensor(name)
                .unwrap_or_else(|e| panic!("read_tensor({name:?}) failed: {e}"));
            let want = &input[seg.offset as usize..(seg.offset + seg.len) as usize];
            assert!(got == want, "read_tensor({name:?}) changed the bytes");
        }
    }
    packed
}

/// A single-tensor layout over `data`, shape `[n]`.
fn flat(dtype: Dtype, data: &[u8]) -> Vec<SegmentSpec> {
    vec![tensor(
        "t",
        dtype,
        vec![(data.len() / dtype.width()) as u64],
    )]
}

/// The codecs chosen for every plane of every chunk.
fn codecs(packed: &[u8]) -> Vec<PlaneCodec> {
    let c = Container::open(packed).unwrap();
    c.chunks()
        .iter()
        .flat_map(|c| c.planes.iter().map(|p| p.codec))
        .collect()
}

// ---------------------------------------------------------------------------
// Data generators.
// ---------------------------------------------------------------------------

/// A standard normal value from two uniform u32s (Box-Muller).
fn box_muller(a: u32, b: u32) -> f64 {
    let u1 = (a as f64 + 1.0) / (u32::MAX as f64 + 2.0); // in (0, 1): ln is finite
    let u2 = b as f64 / (u32::MAX as f64 + 1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// f32 to IEEE half by truncation (flushes subnormals, saturates to infinity).
fn f32_to_f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xFF) as i32 - 127 + 15;
    let mant = ((b >> 13) & 0x3FF) as u16;
    if exp <= 0 {
        sign
    } else if exp >= 31 {
        sign | 0x7C00
    } else {
        sign | (exp as u16) << 10 | mant
    }
}

/// One element of `dtype` that looks like a trained weight of value `v`.
fn weight_like(dtype: Dtype, v: f64, out: &mut Vec<u8>) {
    match dtype {
        Dtype::F64 => out.extend_from_slice(&v.to_le_bytes()),
        Dtype::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        Dtype::BF16 => out.extend_from_slice(&(((v as f32).to_bits() >> 16) as u16).to_le_bytes()),
        Dtype::F16 => out.extend_from_slice(&f32_to_f16_bits(v as f32).to_le_bytes()),
        // E5M2 is the top byte of an F16; E4M3 gets a plausible byte too.
        Dtype::F8E5M2 | Dtype::F8E4M3 => out.push((f32_to_f16_bits(v as f32) >> 8) as u8),
        Dtype::Bool => out.push((v > 0.0) as u8),
        _ => {
            // Integers: small values around zero, two's complement, little-endian.
            let i = (v * 20.0).round() as i64;
            out.extend_from_slice(&i.to_le_bytes()[..dtype.width()]);
        }
    }
}

/// How the bytes of a generated tensor are made.
#[derive(Debug, Clone)]
enum Fill {
    /// Any bit pattern at all.
    Arbitrary(Vec<u8>),
    /// Mostly one element value, some others from a short list.
    Skewed {
        dominant: u64,
        others: Vec<u64>,
        picks: Vec<u8>,
    },
    /// Normal-ish values times `scale`, from Box-Muller on drawn u32 pairs.
    WeightLike { scale: f64, seeds: Vec<(u32, u32)> },
}

impl Fill {
    fn bytes(&self, dtype: Dtype, n: usize) -> Vec<u8> {
        let w = dtype.width();
        match self {
            Fill::Arbitrary(b) => b[..n * w].to_vec(),
            Fill::Skewed {
                dominant,
                others,
                picks,
            } => picks[..n]
                .iter()
                .flat_map(|&p| {
                    let v = if p < 230 || others.is_empty() {
                        *dominant
                    } else {
                        others[p as usize % others.len()]
                    };
                    v.to_le_bytes()[..w].to_vec()
                })
                .collect(),
            Fill::WeightLike { scale, seeds } => {
                let mut out = Vec::with_capacity(n * w);
                for &(a, b) in &seeds[..n] {
                    weight_like(dtype, box_muller(a, b) * scale, &mut out);
                }
                out
            }
        }
    }
}

fn fill(n: usize, width: usize) -> impl Strategy<Value = Fill> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), n * width).prop_map(Fill::Arbitrary),
        (
            any::<u64>(),
            prop::collection::vec(any::<u64>(), 0..6),
            prop::collection::vec(any::<u8>(), n)
        )
            .prop_map(|(dominant, others, picks)| Fill::Skewed {
                dominant,
                others,
                picks
            }),
        (
            prop_oneof![Just(1.0), Just(0.02), Just(1e-4), Just(300.0)],
            prop::collection::vec((any::<u32>(), any::<u32>()), n)
        )
            .prop_map(|(scale, seeds)| Fill::WeightLike { scale, seeds }),
    ]
}

fn dtype() -> impl Strategy<Value = Dtype> {
    prop::sample::select(Dtype::ALL.to_vec())
}

/// Shapes of 0..=3000 elements: 0-rank, empty (a zero dimension), 1-D to 4-D.
fn shape() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        1 => Just(vec![]),
        1 => (0..4usize, 0..20u64).prop_map(|(pos, d)| {
            let mut s = vec![d, d + 1, 3];
            s.insert(pos.min(s.len()), 0);
            s
        }),
        6 => (0..=3000u64).prop_map(|n| vec![n]),
        3 => (0..=60u64, 0..=50u64).prop_map(|(a, b)| vec![a, b]),
        2 => (1..=12u64, 0..=12u64, 1..=20u64).prop_map(|(a, b, c)| vec![a, b, c]),
        1 => (1..=6u64, 1..=6u64, 1..=6u64, 1..=12u64).prop_map(|(a, b, c, d)| vec![a, b, c, d]),
    ]
}

/// Chunk sizes from the smallest the encoder takes (4 KiB) to 64 KiB,
/// small and odd ones often.
fn chunk_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => MIN_CHUNK_SIZE..=MIN_CHUNK_SIZE + 16,
        2 => MIN_CHUNK_SIZE + 17..=8192usize,
        2 => 8193..=65536usize,
        1 => Just(65536usize),
        1 => prop::sample::select(vec![4096usize, 4097, 4099, 5000, 8191, 65535]),
    ]
}

/// One tensor: (dtype, shape, bytes).
fn tensor_data() -> impl Strategy<Value = (Dtype, Vec<u64>, Vec<u8>)> {
    (dtype(), shape()).prop_flat_map(|(d, s)| {
        let n = s.iter().product::<u64>() as usize;
        fill(n, d.width()).prop_map(move |f| (d, s.clone(), f.bytes(d, n)))
    })
}

/// One segment of a multi-segment layout.
#[derive(Debug, Clone)]
enum Piece {
    Bytes(Vec<u8>),
    Tensor(Dtype, Vec<u64>, Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        1 => prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            // Text-like, as a safetensors JSON header would be.
            "[ -~]{0,600}".prop_map(String::into_bytes),
        ]
        .prop_map(Piece::Bytes),
        3 => tensor_data().prop_map(|(d, s, b)| Piece::Tensor(d, s, b)),
    ]
}

fn assemble(pieces: &[Piece], names: &[String]) -> (Vec<u8>, Vec<SegmentSpec>) {
    let mut input = Vec::new();
    let mut layout = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        match p {
            Piece::Bytes(b) => {
                input.extend_from_slice(b);
                layout.push(SegmentSpec {
                    kind: SegmentKind::Bytes,
                    len: b.len() as u64,
                });
            }
            Piece::Tensor(d, s, b) => {
                input.extend_from_slice(b);
                // Unique names: the index makes them so, the rest is any Unicode.
                let name = format!("{i}.{}", names[i % names.len()]);
                layout.push(tensor(&name, *d, s.clone()));
            }
        }
    }
    (input, layout)
}

proptest! {
    #[test]
    fn any_single_tensor_round_trips(
        (d, s, data) in tensor_data(),
        chunk in chunk_size(),
    ) {
        roundtrip(&data, &[tensor("weight", d, s)], chunk);
    }

    #[test]
    fn arbitrary_bit_patterns_round_trip_for_every_dtype(
        bytes in prop::collection::vec(any::<u8>(), 0..=3000 * 8),
        chunk in chunk_size(),
    ) {
        for d in Dtype::ALL {
            let n = bytes.len() / d.width();
            let data = &bytes[..n * d.width()];
            roundtrip(data, &flat(d, data), chunk);
        }
    }

    #[test]
    fn weight_like_data_round_trips_for_every_dtype(
        seeds in prop::collection::vec((any::<u32>(), any::<u32>()), 0..=3000),
        scale in prop_oneof![Just(1.0f64), Just(0.02), Just(1e-3)],
        chunk in chunk_size(),
    ) {
        let f = Fill::WeightLike { scale, seeds: seeds.clone() };
        for d in Dtype::ALL {
            let data = f.bytes(d, seeds.len());
            roundtrip(&data, &flat(d, &data), chunk);
        }
    }

    #[test]
    fn multi_segment_layouts_round_trip(
        pieces in prop::collection::vec(piece(), 0..7),
        names in prop::collection::vec("\\PC{0,12}", 1..4),
        chunk in chunk_size(),
    ) {
        let (input, layout) = assemble(&pieces, &names);
        roundtrip(&input, &layout, chunk);
    }

    #[test]
    fn plain_bytes_round_trip(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..5000),
            prop::collection::vec(prop::sample::select(vec![0u8, 0, 0, 1, 2, b'{', b'"']), 0..5000),
        ],
        chunk in chunk_size(),
    ) {
        let layout = [SegmentSpec { kind: SegmentKind::Bytes, len: data.len() as u64 }];
        roundtrip(&data, &layout, chunk);
    }
}

// ---------------------------------------------------------------------------
// Special values.
// ---------------------------------------------------------------------------

const CHUNKS: [usize; 6] = [MIN_CHUNK_SIZE, 4097, 4099, 4103, 5000, DEFAULT_CHUNK_SIZE];

fn special_f64() -> Vec<u64> {
    vec![
        0x0000_0000_0000_0000, // +0
        0x8000_0000_0000_0000, // -0
        0x7FF0_0000_0000_0000, // +inf
        0xFFF0_0000_0000_0000, // -inf
        0x7FF8_0000_0000_0000, // quiet NaN
        0xFFF8_0000_0000_0000, // negative quiet NaN
        0x7FF0_0000_0000_0001, // signalling NaN, smallest payload
        0x7FF4_DEAD_BEEF_CAFE, // signalling NaN, payload
        0x7FFF_FFFF_FFFF_FFFF, // quiet NaN, all payload bits
        0xFFFF_FFFF_FFFF_FFFF, // all ones
        0x0000_0000_0000_0001, // smallest subnormal
        0x800F_FFFF_FFFF_FFFF, // largest negative subnormal
        0x0010_0000_0000_0000, // smallest normal
        0x7FEF_FFFF_FFFF_FFFF, // largest finite
        0xFFEF_FFFF_FFFF_FFFF, // most negative finite
        1.0f64.to_bits(),
        (-1.0f64).to_bits(),
        f64::EPSILON.to_bits(),
        std::f64::consts::PI.to_bits(),
    ]
}

fn special_f32() -> Vec<u64> {
    [
        0x0000_0000u32,
        0x8000_0000,
        0x7F80_0000,
        0xFF80_0000,
        0x7FC0_0000,
        0xFFC0_0000,
        0x7F80_0001,
        0x7FA5_5AA5,
        0x7FFF_FFFF,
        0xFFFF_FFFF,
        0x0000_0001,
        0x807F_FFFF,
        0x0080_0000,
        0x7F7F_FFFF,
        0xFF7F_FFFF,
        1.0f32.to_bits(),
        (-1.0f32).to_bits(),
        f32::EPSILON.to_bits(),
        std::f32::consts::PI.to_bits(),
    ]
    .into_iter()
    .map(u64::from)
    .collect()
}

fn special_bf16() -> Vec<u64> {
    [
        0x0000u16, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81, 0x7FA5, 0x7FFF, 0xFFFF, 0x0001,
        0x807F, 0x0080, 0x7F7F, 0xFF7F, 0x3F80, 0xBF80, 0x3C00, 0x4049,
    ]
    .into_iter()
    .map(u64::from)
    .collect()
}

fn special_f16() -> Vec<u64> {
    [
        0x0000u16, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x7D55, 0x7FFF, 0xFFFF, 0x0001,
        0x83FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00, 0x1400, 0x4248,
    ]
    .into_iter()
    .map(u64::from)
    .collect()
}

#[test]
fn special_float_bit_patterns_round_trip() {
    let lists = [
        (Dtype::BF16, special_bf16()),
        (Dtype::F16, special_f16()),
        (Dtype::F32, special_f32()),
        (Dtype::F64, special_f64()),
    ];
    for (d, values) in lists {
        let w = d.width();
        let once: Vec<u8> = values
            .iter()
            .flat_map(|v| v.to_le_bytes()[..w].to_vec())
            .collect();
        // Alone, repeated (so the planes are Huffman- or zstd-coded rather
        // than raw), and scattered in normal-looking weights.
        let repeated = once.repeat(500);
        let mut rng = Rng(d.code() as u64);
        let mut mixed = Vec::new();
        for i in 0..20_000 {
            if i % 97 == 0 {
                let v = values[(rng.next() % values.len() as u64) as usize];
                mixed.extend_from_slice(&v.to_le_bytes()[..w]);
            } else {
                weight_like(
                    d,
                    box_muller(rng.next() as u32, rng.next() as u32) * 0.02,
                    &mut mixed,
                );
            }
        }
        for data in [&once, &repeated, &mixed] {
            for chunk in CHUNKS {
                roundtrip(data, &flat(d, data), chunk);
            }
            // Every other dtype of the same width must carry them too.
            for other in Dtype::ALL.into_iter().filter(|o| o.width() == w) {
                roundtrip(data, &flat(other, data), 4096);
            }
        }
        let packed = roundtrip(&mixed, &flat(d, &mixed), DEFAULT_CHUNK_SIZE);
        assert!(
            codecs(&packed).contains(&PlaneCodec::Huffman),
            "{d}: weight-like data should exercise the Huffman path"
        );
    }
}

#[test]
fn every_16_bit_pattern_round_trips() {
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|v| v.to_le_bytes()).collect();
    for d in Dtype::ALL.into_iter().filter(|d| d.width() == 2) {
        for chunk in [MIN_CHUNK_SIZE, 5001, 65536, DEFAULT_CHUNK_SIZE] {
            roundtrip(&all, &flat(d, &all), chunk);
        }
    }
}

// ---------------------------------------------------------------------------
// Plane codecs and the Huffman coder at its edges.
// ---------------------------------------------------------------------------

#[test]
fn one_symbol_planes_are_constant() {
    for d in Dtype::ALL {
        for v in [0u64, u64::MAX, 0x7FC0_0000_7FC0_0000, 0x0123_4567_89AB_CDEF] {
            let data: Vec<u8> = (0..5000)
                .flat_map(|_| v.to_le_bytes()[..d.width()].to_vec())
                .collect();
            let packed = roundtrip(&data, &flat(d, &data), 4096);
            assert!(
                codecs(&packed).iter().all(|&c| c == PlaneCodec::Constant),
                "{d}: {:?}",
                codecs(&packed)
            );
        }
    }
}

#[test]
fn two_symbol_planes() {
    let mut rng = Rng(2);
    for (a, b, p) in [(0u8, 1u8, 2), (0x7F, 0x80, 2), (3, 250, 50), (0, 255, 1000)] {
        let data: Vec<u8> = (0..100_000)
            .map(|_| if rng.next().is_multiple_of(p) { b } else { a })
            .collect();
        // Direct to the Huffman coder: one bit a symbol.
        let hist = huffman::histogram(&data);
        let mut block = Vec::new();
        let lengths = huffman::encode(&data, &hist, &mut block).expect("two symbols");
        assert_eq!((lengths[a as usize], lengths[b as usize]), (1, 1));
        assert_eq!(lengths.iter().filter(|&&l| l > 0).count(), 2);
        let mut back = vec![0u8; data.len()];
        huffman::decode(&block, &mut back).unwrap();
        assert_eq!(back, data);
        // Through the container, as a U8 tensor and as BF16 planes.
        for chunk in [MIN_CHUNK_SIZE, 4777, 65536, DEFAULT_CHUNK_SIZE] {
            let packed = roundtrip(&data, &flat(Dtype::U8, &data), chunk);
            if chunk == DEFAULT_CHUNK_SIZE {
                let c = codecs(&packed);
                // One bit a symbol is what Huffman spends; rANS, runs or
                // zstd spend less where one symbol dominates.
                assert!(
                    matches!(
                        c[0],
                        PlaneCodec::Huffman
                            | PlaneCodec::Zstd
                            | PlaneCodec::Rans
                            | PlaneCodec::Rans32
                            | PlaneCodec::Runs
                    ),
                    "{c:?}"
                );
            }
            roundtrip(&data, &flat(Dtype::BF16, &data), chunk);
        }
    }
    // Two symbols only (n = 2, 3, ...): the smallest Huffman blocks.
    for n in 2..64 {
        let data: Vec<u8> = (0..n).map(|i| (i % 2) as u8 * 9).collect();
        let hist = huffman::histogram(&data);
        let mut block = Vec::new();
        huffman::encode(&data, &hist, &mut block).unwrap();
        let mut back = vec![0u8; n];
        huffman::decode(&block, &mut back).unwrap();
        assert_eq!(back, data);
        roundtrip(&data, &flat(Dtype::U8, &data), 1 << 20);
    }
}

#[test]
fn all_256_symbols() {
    let mut rng = Rng(256);
    // Uniform: incompressible, stored raw.
    let uniform = rng.bytes(200_000);
    let packed = roundtrip(&uniform, &flat(Dtype::U8, &uniform), DEFAULT_CHUNK_SIZE);
    assert_eq!(codecs(&packed), vec![PlaneCodec::Raw]);
    // Skewed over all 256 values: entropy-coded (Huffman, or rANS where its
    // fractional bits win) with every symbol in the table.
    let skewed: Vec<u8> = (0..200_000)
        .map(|i| {
            if i < 256 {
                i as u8
            } else {
                (rng.next() as u32).trailing_zeros().min(255) as u8 ^ (rng.next() % 4) as u8
            }
        })
        .collect();
    assert!(huffman::histogram(&skewed).iter().all(|&f| f > 0));
    let packed = roundtrip(&skewed, &flat(Dtype::U8, &skewed), DEFAULT_CHUNK_SIZE);
    assert!(
        matches!(
            codecs(&packed)[..],
            [PlaneCodec::Huffman | PlaneCodec::Rans | PlaneCodec::Rans32]
        ),
        "{:?}",
        codecs(&packed)
    );
    for d in Dtype::ALL {
        let n = skewed.len() / d.width() * d.width();
        for chunk in [4101, 4096, DEFAULT_CHUNK_SIZE] {
            roundtrip(&skewed[..n], &flat(d, &skewed[..n]), chunk);
        }
    }
}

/// `n` bytes: 32 common symbols in a geometric-ish mix, and every other byte
/// value a handful of times, so unlimited Huffman codes would be far longer
/// than 11 bits. Entropy is about 3 bits, too much for zstd to be tried on
/// a tensor plane (it is only tried below 2 bits), so the plane must be
/// Huffman-coded.
fn long_tail(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut data: Vec<u8> = (0..n)
        .map(|_| {
            let r = rng.next();
            ((r as u32 | 1 << 15).trailing_zeros() * 2 + (r >> 40) as u32 % 2) as u8
        })
        .collect();
    for s in 32..=255u8 {
        for _ in 0..(s as usize % 3 + 1) {
            let at = (rng.next() % n as u64) as usize;
            data[at] = s;
        }
    }
    data
}

#[test]
fn huffman_length_limit_is_hit_and_round_trips() {
    let n = 1 << 20;
    let data = long_tail(n, 11);
    let hist = huffman::histogram(&data);
    let unlimited = huffman::code_lengths(&hist, 15);
    let limited = huffman::code_lengths(&hist, MAX_CODE_LEN);
    assert!(*unlimited.iter().max().unwrap() as u32 > MAX_CODE_LEN);
    assert_eq!(*limited.iter().max().unwrap() as u32, MAX_CODE_LEN);
    assert_eq!(limited.iter().filter(|&&l| l > 0).count(), 256);

    // One chunk holding the whole plane, so the limit is hit inside it.
    let packed = roundtrip(&data, &flat(Dtype::U8, &data), n);
    assert!(
        matches!(
            codecs(&packed)[..],
            [PlaneCodec::Huffman | PlaneCodec::Rans | PlaneCodec::Rans32]
        ),
        "{:?}",
        codecs(&packed)
    );
    assert!(packed.len() < n / 2, "{}", packed.len());
    // Same bytes as the exponent plane of BF16 weights, and in odd chunks.
    let bf16: Vec<u8> = data.iter().flat_map(|&e| [0x5A, e]).collect();
    let packed = roundtrip(&bf16, &flat(Dtype::BF16, &bf16), DEFAULT_CHUNK_SIZE);
    assert!(codecs(&packed).iter().any(|c| matches!(
        c,
        PlaneCodec::Huffman | PlaneCodec::Rans | PlaneCodec::Rans32
    )));
    roundtrip(&data, &flat(Dtype::U8, &data), 100_003);

    // One dominant symbol and a long tail of rare ones, about 1M bytes: 1%
    // spread over 128 values, and 128 more that occur once each.
    let mut rng = Rng(12);
    let mut dominant: Vec<u8> = (0..1_000_000)
        .map(|_| {
            let r = rng.next() % 100_000;
            if r < 99_000 { 7 } else { (r % 128) as u8 }
        })
        .collect();
    for s in 128..=255u8 {
        let at = (rng.next() % dominant.len() as u64) as usize;
        dominant[at] = s;
    }
    let hist = huffman::histogram(&dominant);
    let unlimited = huffman::code_lengths(&hist, 15);
    let limited = huffman::code_lengths(&hist, MAX_CODE_LEN);
    assert!(*unlimited.iter().max().unwrap() as u32 > MAX_CODE_LEN);
    assert_eq!(*limited.iter().max().unwrap() as u32, MAX_CODE_LEN);
    let mut block = Vec::new();
    huffman::encode(&dominant, &hist, &mut block).unwrap();
    let mut back = vec![0u8; dominant.len()];
    huffman::decode(&block, &mut back).unwrap();
    assert_eq!(back, dominant);
    roundtrip(&dominant, &flat(Dtype::U8, &dominant), DEFAULT_CHUNK_SIZE);
    roundtrip(&dominant, &flat(Dtype::F16, &dominant), 65_537);
}

// ---------------------------------------------------------------------------
// Tensor sizes around the chunk size.
// ---------------------------------------------------------------------------

#[test]
fn one_element_tensors() {
    let mut rng = Rng(1);
    for d in Dtype::ALL {
        let w = d.width();
        for _ in 0..8 {
            let data = rng.bytes(w);
            for shape in [vec![], vec![1], vec![1, 1, 1]] {
                for chunk in [MIN_CHUNK_SIZE, 4097, 4103, DEFAULT_CHUNK_SIZE] {
                    let packed = roundtrip(&data, &[tensor("x", d, shape.clone())], chunk);
                    assert_eq!(Container::open(&packed).unwrap().chunks().len(), 1);
                }
            }
        }
    }
}

#[test]
fn empty_and_zero_rank_tensors() {
    for d in Dtype::ALL {
        for shape in [vec![0], vec![0, 5], vec![3, 0, 2], vec![1024, 0]] {
            let packed = roundtrip(&[], &[tensor("e", d, shape)], MIN_CHUNK_SIZE);
            assert_eq!(Container::open(&packed).unwrap().chunks().len(), 0);
        }
    }
    // Nothing at all.
    roundtrip(&[], &[], MIN_CHUNK_SIZE);
    roundtrip(
        &[],
        &[SegmentSpec {
            kind: SegmentKind::Bytes,
            len: 0,
        }],
        MIN_CHUNK_SIZE,
    );
    // Empty tensors between non-empty segments.
    let layout = [
        SegmentSpec {
            kind: SegmentKind::Bytes,
            len: 3,
        },
        tensor("a", Dtype::F32, vec![0]),
        tensor("b", Dtype::BF16, vec![]),
        tensor("c", Dtype::F64, vec![2, 0]),
        tensor("d", Dtype::U8, vec![5]),
    ];
    roundtrip(b"{}\0\x80\x3f\x01\x02\x03\x04\x05", &layout, MIN_CHUNK_SIZE);
}

#[test]
fn tensors_around_one_chunk() {
    let mut rng = Rng(7);
    for d in Dtype::ALL {
        let w = d.width();
        // A chunk size that is a multiple of every width, then odd ones,
        // which are rounded down to whole elements.
        for chunk in [MIN_CHUNK_SIZE, 4100, 4097, 4103, 5001] {
            let step = (chunk / w).max(1) * w;
            for (len, chunks) in [
                (w, 1),
                (step - w, 1),
                (step, 1),
                (step + w, 2),
                (2 * step, 2),
                (2 * step + w, 3),
            ] {
                if len == 0 {
                    continue;
                }
                let data = rng.bytes(len);
                let packed = roundtrip(&data, &flat(d, &data), chunk);
                let c = Container::open(&packed).unwrap();
                assert_eq!(c.chunks().len(), chunks, "{d} len {len} chunk {chunk}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Layouts that do not describe the input.
// ---------------------------------------------------------------------------

fn rejects(input: &[u8], layout: &[SegmentSpec], chunk_size: usize) {
    let mut out = Cursor::new(Vec::new());
    let options = CompressOptions::default().chunk_size(chunk_size);
    match compress(input, layout, &options, &mut out, &mut |_| true) {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("expected InvalidInput for {layout:?}, got {other:?}"),
    }
    assert!(
        out.get_ref().is_empty(),
        "nothing is written for a bad layout"
    );
}

#[test]
fn layouts_that_do_not_tile_the_input_are_rejected() {
    let input = [0u8; 64];
    let bytes = |len| SegmentSpec {
        kind: SegmentKind::Bytes,
        len,
    };
    // Too short: the layout stops before the end of the input.
    rejects(&input, &[], 4096);
    rejects(&input, &[bytes(63)], 4096);
    rejects(&input, &[tensor("t", Dtype::F32, vec![15])], 4096);
    rejects(&input, &[bytes(4), tensor("t", Dtype::F32, vec![14])], 4096);
    // Too long: it runs past the end.
    rejects(&input, &[bytes(65)], 4096);
    rejects(&input, &[bytes(64), bytes(1)], 4096);
    rejects(&input, &[tensor("t", Dtype::F64, vec![9])], 4096);
    rejects(&input, &[bytes(u64::MAX)], 4096);
    rejects(&input, &[bytes(60), bytes(u64::MAX - 30)], 4096);
    rejects(&[], &[bytes(1)], 4096);
    // A shape that does not match the segment's length.
    let mismatched = |dtype, shape: Vec<u64>, len| SegmentSpec {
        kind: SegmentKind::Tensor {
            name: "m".into(),
            dtype,
            shape,
        },
        len,
    };
    rejects(&input, &[mismatched(Dtype::F32, vec![4], 64)], 4096);
    rejects(&input, &[mismatched(Dtype::F32, vec![4, 4, 2], 64)], 4096);
    rejects(&input, &[mismatched(Dtype::BF16, vec![], 64)], 4096);
    rejects(&input, &[mismatched(Dtype::F32, vec![0], 64)], 4096);
    rejects(&input, &[mismatched(Dtype::U8, vec![63], 64)], 4096);
    rejects(
        &input,
        &[mismatched(Dtype::F64, vec![7], 63), bytes(1)],
        4096,
    );
    rejects(
        &input,
        &[mismatched(Dtype::U64, vec![1 << 32, 1 << 32], 64)],
        4096,
    );
    rejects(
        &input,
        &[mismatched(Dtype::U64, vec![1 << 61], 0), bytes(64)],
        4096,
    );
    rejects(&[], &[mismatched(Dtype::F32, vec![], 0)], 4096);
    // A rank the format cannot store.
    rejects(
        &input,
        &[mismatched(Dtype::U8, vec![1; 65], 1), bytes(63)],
        4096,
    );
    // Chunk sizes out of range.
    for size in [0, 1, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, (1 << 28) + 1] {
        rejects(&input, &[bytes(64)], size);
    }
}

// ---------------------------------------------------------------------------
// Thread-safety of the public types.
// ---------------------------------------------------------------------------

// Checked at compile time. Auto traits do not depend on lifetimes, so
// `Container<'static>` stands for every `Container<'_>`.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Container<'static>>();
    assert_send_sync::<CompressOptions>();
    assert_send_sync::<SegmentSpec>();
};

/// A flipped payload byte is caught by its chunk's checksum whichever way
/// the file is read, and the error names the chunk.
#[test]
fn corrupt_chunk_is_named_by_every_reader() {
    let mut rng = Rng(77);
    let mut data = Vec::new();
    for _ in 0..50_000 {
        let v = box_muller(rng.next() as u32, rng.next() as u32) * 0.02;
        weight_like(Dtype::F32, v, &mut data);
    }
    let layout = flat(Dtype::F32, &data);
    let mut packed = roundtrip(&data, &layout, 64 << 10);
    let c = Container::open(&packed).unwrap();
    let victim = 2;
    let at = c.chunks()[victim].stored_offset as usize + 5;
    packed[at] ^= 0x10;
    let c = Container::open(&packed).unwrap();
    let mut into = vec![0u8; data.len()];
    let errs = [
        c.decompress_into(&mut into, &mut |_| true).unwrap_err(),
        c.decompress_to(&mut Vec::new(), &mut |_| true).unwrap_err(),
        c.verify(&mut |_| true).unwrap_err(),
    ];
    for err in errs {
        assert!(
            matches!(err, Error::ChunkChecksum { chunk, .. } if chunk == victim),
            "{err}"
        );
    }
}

/// A tensor found to hold repeated strings is cut into the tuning's longer
/// chunks (4 MiB by default), the others into the container's chunk size;
/// the container round trips either way.
#[test]
fn tensors_with_repeated_strings_get_longer_chunks() {
    let mut rng = Rng(5);
    // 1M F32 elements whose low three bytes repeat a 1000-element pattern
    // (random order-0, LZ-friendly), then 64K plain weights.
    let pattern = rng.bytes(3000);
    let mut data = Vec::new();
    for i in 0..(1usize << 20) {
        let p = &pattern[(i % 1000) * 3..(i % 1000) * 3 + 3];
        data.extend_from_slice(&[p[0], p[1], p[2], 0x3C | (rng.next() as u8 & 1)]);
    }
    for _ in 0..(64 << 10) {
        let v = box_muller(rng.next() as u32, rng.next() as u32) * 0.02;
        weight_like(Dtype::F32, v, &mut data);
    }
    let layout = vec![
        tensor("repeats", Dtype::F32, vec![1 << 20]),
        tensor("weights", Dtype::F32, vec![64 << 10]),
    ];
    let mut packed = Cursor::new(Vec::new());
    compress(
        &data,
        &layout,
        &CompressOptions::default(),
        &mut packed,
        &mut |_| true,
    )
    .unwrap();
    let packed = packed.into_inner();
    let c = Container::open(&packed).unwrap();
    let segs = c.segments();
    assert_eq!(segs[0].chunk_count, 1, "4 MiB of repeats in one chunk");
    assert_eq!(segs[1].chunk_count, 1, "256 KiB of weights in one chunk");
    let mut back = vec![0u8; data.len()];
    c.decompress_into(&mut back, &mut |_| true).unwrap();
    assert!(back == data);
    // With the tuning's long chunks turned off, the container's size applies.
    let mut tuning = lmc_core::Tuning::DEFAULT;
    tuning.lz_chunk_size = None;
    let mut packed = Cursor::new(Vec::new());
    let opts = CompressOptions::default().tuning(tuning);
    compress(&data, &layout, &opts, &mut packed, &mut |_| true).unwrap();
    let packed = packed.into_inner();
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.segments()[0].chunk_count, 16);
    let mut back = vec![0u8; data.len()];
    c.decompress_into(&mut back, &mut |_| true).unwrap();
    assert!(back == data);
    // An impossible size is refused, not used.
    tuning.lz_chunk_size = Some(0);
    let err = compress(
        &data,
        &layout,
        &CompressOptions::default().tuning(tuning),
        &mut Cursor::new(Vec::new()),
        &mut |_| true,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

// ---------------------------------------------------------------------------
// Split planes (a plane coded given plane 0) on arbitrary planes.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the plane and its lead, encode_plane_led's output decodes
    /// back to the plane, split or not; a split plane is refused with
    /// another lead that changes its parts' sizes.
    #[test]
    fn led_planes_round_trip(
        seed in any::<u64>(),
        n in 0usize..20_000,
        key_share in 0u64..=100,
        spread in 1u64..=256,
        best in any::<bool>(),
    ) {
        use lmc_core::codec::{decode_plane, decode_split, encode_plane_led, split_key, PlaneKind};
        let mut rng = Rng(seed);
        let lead: Vec<u8> = (0..n)
            .map(|_| if rng.next() % 100 < key_share { 0 } else { (rng.next() % 8) as u8 })
            .collect();
        let data: Vec<u8> = lead
            .iter()
            .map(|&l| if l == 0 { (rng.next() % spread) as u8 } else { rng.next() as u8 })
            .collect();
        let tuning = if best { lmc_core::Tuning::BEST } else { lmc_core::Tuning::DEFAULT };
        let key = split_key(&lead);
        let mut out = Vec::new();
        let codec = encode_plane_led(&data, &lead, key, PlaneKind::Tensor, &tuning, &mut out);
        let mut back = vec![0u8; n];
        if codec == PlaneCodec::Split {
            decode_split(&out, &lead, &mut back).unwrap();
            let mut other = lead.clone();
            let i = other.iter().position(|&l| l == key).unwrap();
            other[i] = key.wrapping_add(1);
            let mut again = vec![0u8; n];
            prop_assert!(decode_split(&out, &other, &mut again).is_err() || again != data || n == 0);
        } else {
            decode_plane(codec, &out, &mut back).unwrap();
        }
        prop_assert!(back == data);
    }
}
