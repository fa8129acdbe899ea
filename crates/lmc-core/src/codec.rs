//! Plane codecs and the per-plane choice between them.
//!
//! Every plane of every chunk is coded independently with whichever codec
//! gives the fewest bytes: stored raw, a single repeated byte, Huffman,
//! rANS32, rANS or zstd. The entropy coders are chosen between on their
//! estimates (rANS32 where it saves 0.04 bits a symbol over Huffman, the
//! slower four-state rANS only where it saves 10% more), so a plane is
//! entropy-coded once. zstd is only tried where it can win: on generic
//! byte segments (the safetensors JSON header), on planes so skewed that Huffman spends under
//! two bits a symbol (long zero runs) where zstd on a sample of the plane
//! comes close (see `zstd_sample_promising`), and on the planes of large tensors in
//! which a sample showed repeated strings ([`lz_planes`]).
//!
//! One codec looks beyond its plane: a split plane ([`encode_plane_led`])
//! is cut in two by the chunk's plane 0 (the exponents), each part coded
//! alone, a first-order context model with two contexts. The encoder uses it
//! on XOR deltas, where an element whose exponent did not change has changed
//! in its low mantissa bits only. (Contexts for the exponent plane itself,
//! the previous element's or the row above's, were measured and do not pay;
//! see docs/BENCHMARKS.md, "Context modeling".)

use crate::error::DecodeError;
use crate::{huffman, kernels, rans, rans32, runs};

/// The codec of one plane, as stored in the chunk table (FORMAT.md, "Plane codecs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PlaneCodec {
    /// The bytes as they are.
    Raw = 0,
    /// One byte, repeated for the whole plane.
    Constant = 1,
    /// A Huffman block (see [`crate::huffman`]).
    Huffman = 2,
    /// A zstd frame.
    Zstd = 3,
    /// An rANS block (see [`crate::rans`]); only in containers whose header
    /// has the [`crate::format::FLAG_RANS`] flag.
    Rans = 4,
    /// The plane cut in two parts by its elements' plane-0 byte, each part
    /// coded alone (see [`encode_plane_led`]); only on planes 1.. of a
    /// chunk, in containers whose header has the
    /// [`crate::format::FLAG_SPLIT`] flag.
    Split = 5,
    /// Runs of one byte value and the other bytes, each coded alone (see
    /// [`crate::runs`]); only in containers whose header has the
    /// [`crate::format::FLAG_RUNS`] flag.
    Runs = 6,
    /// An rANS32 block (see [`crate::rans32`]): rANS with 32 states,
    /// decoded 32 symbols a step in SIMD lanes; only in containers whose
    /// header has the [`crate::format::FLAG_RANS32`] flag.
    Rans32 = 7,
}

impl PlaneCodec {
    pub fn from_code(c: u8) -> Option<PlaneCodec> {
        Some(match c {
            0 => PlaneCodec::Raw,
            1 => PlaneCodec::Constant,
            2 => PlaneCodec::Huffman,
            3 => PlaneCodec::Zstd,
            4 => PlaneCodec::Rans,
            5 => PlaneCodec::Split,
            6 => PlaneCodec::Runs,
            7 => PlaneCodec::Rans32,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PlaneCodec::Raw => "raw",
            PlaneCodec::Constant => "constant",
            PlaneCodec::Huffman => "huffman",
            PlaneCodec::Zstd => "zstd",
            PlaneCodec::Rans => "rans",
            PlaneCodec::Split => "split",
            PlaneCodec::Runs => "runs",
            PlaneCodec::Rans32 => "rans32",
        }
    }
}

/// What kind of bytes a plane holds; steers which codecs are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneKind {
    /// A byte plane of a tensor.
    Tensor,
    /// Bytes with no known structure (headers, metadata, gaps).
    Generic,
    /// A byte plane of a tensor in which a sample showed repeated byte
    /// strings that an LZ coder finds and an order-0 coder cannot (see
    /// [`lz_planes`]): zstd is always tried.
    TensorLz,
}

/// zstd level for generic bytes: small, text-like, worth a stronger level.
const ZSTD_LEVEL_GENERIC: i32 = 9;
/// zstd level for skewed tensor planes: speed matters there.
const ZSTD_LEVEL_PLANE: i32 = 1;
/// Huffman must save at least 1/64 of a plane to be worth its decode time.
const MIN_GAIN_DIVISOR: usize = 64;
/// The four-state rANS decodes one symbol a step on one stream, rANS32 32
/// in SIMD lanes: the former is used only where it saves at least this
/// fraction of what the best other coder would take, which is on planes
/// that code to about a kilobyte or less, where rANS32's 128 bytes of
/// states weigh.
const RANS_MIN_GAIN: f64 = 0.10;
/// rANS32 is used where its estimate beats Huffman's (or raw storage) by
/// this fraction of the plane's length, 0.04 bits a symbol: it decodes at
/// about half Huffman's speed on the exponent planes of weights, where it
/// saves 0.6% of the plane (1.7% of Huffman's size). Measured on the
/// generated series and MiniLM (docs/BENCHMARKS.md, "rANS32"): at 0 plain
/// BF16 weights code 0.3% smaller but decode 11-21% slower; at 0.005 plain
/// files decode as before and deltas keep nearly all of the gain (the
/// fine-tune BF16 delta 7.294 at 0, 7.288 here, 7.185 with Huffman); at
/// 0.01 deltas lose a third of it.
const RANS32_MIN_GAIN: f64 = 0.005;

/// The default [`Tuning::runs_slack`] and [`Tuning::runs_slack_bytes`].
const RUNS_SLACK: f64 = 0.02;
const RUNS_SLACK_BYTES: usize = 64;

/// The default [`Tuning::sparse_max`]: a delta chunk is sparse (a bitmap of
/// the changed elements and their values alone) where at most 80% of its
/// elements changed. Measured on the fine-tune BF16 delta 80 vs 70
/// (docs/BENCHMARKS.md, "Bitmap sparse chunks"), against at most half:
/// 0.1% smaller, decoded 1.1x faster (the bitmap's expand costs less than
/// the whole planes' entropy decoding of a dense chunk); at 100% the
/// pre-training BF16 delta (88% changed) coded 0.3% larger.
const SPARSE_MAX: f64 = 0.8;

/// How the encoder trades decoding speed and its own time for ratio. The
/// decoder is the same whatever the tuning: it only changes which codec
/// each plane gets, within the same format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// rANS32 replaces Huffman (or raw storage) on a plane where its
    /// estimate is smaller by at least this fraction of the plane's length
    /// (and, against raw storage, by Huffman's bar of 1/64 of it): it
    /// decodes slower than Huffman, a cost per symbol, so it must save
    /// some bits a symbol.
    pub rans32_min_gain: f64,
    /// The four-state rANS replaces the best of the others (rANS32
    /// included) only where its estimate is smaller by at least this
    /// fraction: it decodes several times slower than rANS32, and is
    /// smaller only by rANS32's larger states (112 bytes), on small planes.
    pub rans_min_gain: f64,
    /// zstd level for tensor planes where zstd is tried.
    pub zstd_level: i32,
    /// Tensors of at least this many elements (and at least 64K) are
    /// sampled for repeated strings ([`lz_planes_with`]).
    pub lz_min_elems: usize,
    /// Chunk size for the tensors found to have repeated strings (at most
    /// [`crate::format::MAX_CHUNK_LEN`]), if not the container's: longer
    /// chunks let zstd find repeats further apart. Used for a tensor only
    /// where its middle `lz_chunk_size` bytes code smaller that way.
    pub lz_chunk_size: Option<usize>,
    /// A plane is split by its elements' plane-0 byte ([`encode_plane_led`])
    /// only where the estimate of the two parts is smaller than that of the
    /// whole plane by at least this fraction.
    pub split_min_gain: f64,
    /// A plane where one byte value fills at least half is also judged as
    /// [`PlaneCodec::Runs`], which is used where its estimate is at most
    /// this fraction larger than the best entropy coder's (runs decode a
    /// step per literal, not per byte).
    pub runs_slack: f64,
    /// ... plus this many bytes: on a plane that codes to a few dozen
    /// bytes, runs' two tables outweigh what they save, yet a step a
    /// byte of rANS is the slowest part of decoding the plane.
    pub runs_slack_bytes: usize,
    /// A delta chunk in which at most this fraction of the elements
    /// changed is coded sparse ([`crate::format::Transform::XorBitmap`]).
    pub sparse_max: f64,
    /// A sparse chunk's map is also coded as the runs of its unchanged
    /// elements (transform 2), and that form kept where smaller: maps
    /// 0.8-2.1% smaller on the fine-tune deltas measured, whose positions
    /// decode a step a changed element instead of a block at a time.
    pub runs_maps: bool,
}

impl Tuning {
    /// The default: rANS32 where it saves 0.04 bits a symbol over Huffman,
    /// the four-state rANS only where it saves 10% more, zstd level 1,
    /// repeated strings looked for in tensors of 1M elements or more, and such tensors cut into
    /// 4 MiB chunks where a 4 MiB sample codes smaller so (measured:
    /// finetune AdamW state, step 80, 1.237 -> 1.246; the XOR delta of the
    /// finetune word embeddings, coded as a plain file, would lose 3% with
    /// 4 MiB chunks: the sample keeps it at 256 KiB).
    pub const DEFAULT: Tuning = Tuning {
        rans32_min_gain: RANS32_MIN_GAIN,
        rans_min_gain: RANS_MIN_GAIN,
        zstd_level: ZSTD_LEVEL_PLANE,
        lz_min_elems: LZ_MIN_ELEMS,
        lz_chunk_size: Some(4 << 20),
        split_min_gain: SPLIT_MIN_GAIN,
        runs_slack: RUNS_SLACK,
        runs_slack_bytes: RUNS_SLACK_BYTES,
        sparse_max: SPARSE_MAX,
        runs_maps: false,
    };
    /// The smallest output (`lmc compress --best`): rANS wherever its
    /// estimate is smaller at all, zstd level 9, repeated strings looked for
    /// in tensors of 64K elements or more, delta planes split wherever the
    /// parts' estimate is smaller at all (docs/BENCHMARKS.md, "lmc
    /// --best", has the ratios and speeds). Decoding runs at rANS speed on
    /// most exponent planes, several times slower.
    pub const BEST: Tuning = Tuning {
        rans32_min_gain: 0.0,
        rans_min_gain: 0.0,
        zstd_level: 9,
        lz_min_elems: 64 << 10,
        lz_chunk_size: Some(4 << 20),
        split_min_gain: 0.0,
        runs_slack: 0.0,
        runs_slack_bytes: 0,
        sparse_max: SPARSE_MAX,
        runs_maps: true,
    };
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning::DEFAULT
    }
}

/// Planes at least this long are first judged on a sample: the byte planes
/// of the default 256 KiB chunks (64 KiB for 4-byte elements) included.
const SAMPLE_MIN_PLANE: usize = 32 << 10;
/// The sample: this many blocks of `SAMPLE_BLOCK` bytes, evenly spaced
/// (16 KiB, an eighth of a BF16 chunk's plane).
const SAMPLE_BLOCKS: usize = 8;
const SAMPLE_BLOCK: usize = 2048;

/// Whether a sample of the plane says Huffman coding would not come near
/// paying for itself: its codes would save under 1/256 of the sample (a
/// quarter of the 1/64 bar the whole plane must clear; the table's size is
/// left out, since it would weigh eight times more on the sample than on
/// the plane). Most mantissa planes of weights are like this, and skip
/// their full histogram. A plane that passes is judged again on its full
/// histogram, so the sample can only send a plane to raw storage when even
/// its sample looks random.
fn clearly_incompressible(data: &[u8]) -> bool {
    let stride = data.len() / SAMPLE_BLOCKS;
    let mut hist = [0u32; 256];
    for b in 0..SAMPLE_BLOCKS {
        let block = &data[b * stride..b * stride + SAMPLE_BLOCK];
        let h = huffman::histogram(block);
        for (t, x) in hist.iter_mut().zip(h) {
            *t += x;
        }
    }
    let m = (SAMPLE_BLOCKS * SAMPLE_BLOCK) as u64;
    let lengths = huffman::code_lengths(&hist, huffman::MAX_CODE_LEN);
    let bits: u64 = hist
        .iter()
        .zip(&lengths)
        .map(|(&f, &l)| u64::from(f) * u64::from(l))
        .sum();
    bits / 8 + m / 256 >= m
}

/// Sample blocks [`lz_planes`] takes from a tensor, and their size in elements.
const LZ_SAMPLES: usize = 4;
const LZ_SAMPLE_ELEMS: usize = 16 << 10;
/// Only tensors of at least this many elements are judged: the samples then
/// cost at most 1/16 of the tensor's coding time. (Measured: judging every
/// tensor of 64K elements or more made compressing MiniLM 40% slower, for
/// no gain there; the gains seen are in large embedding tensors.)
const LZ_MIN_ELEMS: usize = 1 << 20;
/// zstd must beat Huffman (or raw storage) on the sample by this fraction.
const LZ_MIN_GAIN: f64 = 0.04;

/// Which byte planes of a tensor (`data`, elements of `dtype`) are worth
/// trying zstd on in every chunk: bit *k* set for plane *k*. Order-0 coding
/// cannot see repeated byte strings; some tensors have them (in Adam moments
/// of embeddings, rows that got the same kind of gradient). Judged once per
/// tensor on a few evenly spaced samples, so tensors without such structure
/// pay nothing in their chunks.
pub fn lz_planes(dtype: crate::Dtype, data: &[u8]) -> u64 {
    lz_planes_with(dtype, data, &Tuning::DEFAULT)
}

/// [`lz_planes`] with the encoder's tuning (which sets the smallest tensor judged).
pub fn lz_planes_with(dtype: crate::Dtype, data: &[u8], tuning: &Tuning) -> u64 {
    let w = dtype.width();
    let n = data.len() / w;
    // The samples need room: LZ_SAMPLES blocks of LZ_SAMPLE_ELEMS.
    let min = tuning.lz_min_elems.max(LZ_SAMPLES * LZ_SAMPLE_ELEMS);
    if w == 0 || w > 64 || n < min {
        return 0;
    }
    let mut planes: Vec<Vec<u8>> = vec![Vec::new(); w];
    let (mut lz, mut best) = (vec![0usize; w], vec![0usize; w]);
    for s in 0..LZ_SAMPLES {
        let start = (n / LZ_SAMPLES) * s + (n / LZ_SAMPLES - LZ_SAMPLE_ELEMS) / 2;
        let block = &data[start * w..(start + LZ_SAMPLE_ELEMS) * w];
        crate::planes::split(dtype, block, &mut planes);
        for (k, p) in planes.iter().enumerate() {
            let hist = huffman::histogram(p);
            let lengths = huffman::code_lengths(&hist, huffman::MAX_CODE_LEN);
            best[k] += huffman::encoded_size(&hist, &lengths).min(p.len());
            lz[k] += zstd_compress(p, ZSTD_LEVEL_PLANE).map_or(usize::MAX / 8, |z| z.len());
        }
    }
    (0..w)
        .filter(|&k| (lz[k] as f64) < best[k] as f64 * (1.0 - LZ_MIN_GAIN))
        .fold(0, |m, k| m | 1 << k)
}

thread_local! {
    /// Per-thread zstd context, reused from plane to plane (creating one
    /// for each trial was 2% of a delta's coding time).
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `data` as one zstd frame at `level`.
fn zstd_compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    ZSTD.with_borrow_mut(|z| {
        let c = match z {
            Some(c) => {
                c.set_compression_level(level)?;
                c
            }
            None => z.insert(zstd::bulk::Compressor::new(level)?),
        };
        c.compress(data)
    })
}

/// Tensor planes at least this long that run coding took are not tried
/// with zstd: the runs coder already has their long runs, and there zstd
/// lost on every plane of this size of the generated series' deltas
/// (pretrain, finetune and finetune at lr 2e-5: BF16 weights, fp32
/// masters, AdamW state), while its samples took about a tenth of the
/// coding time of a dense BF16 delta. Skipping them grew those nine deltas
/// by 0 to 0.007% (docs/BENCHMARKS.md, "Dense deltas").
const RUNS_NO_ZSTD_MIN_PLANE: usize = 4096;
/// Planes at least this long have zstd tried on a sample first.
const ZSTD_SAMPLE_MIN_PLANE: usize = 64 << 10;
/// zstd is tried on the whole plane only if the sample comes out at most
/// this much larger, per byte, than the plane's best size so far. Measured
/// on the XOR deltas and the snapshots of the generated series (pretrain
/// and finetune: BF16 weights, fp32 master weights, AdamW state, 2007
/// planes where zstd was tried): 1.2 keeps 150 of 1700 whole-plane trials
/// on skewed tensor planes and loses 0.017% of the compressed size (at most
/// 0.055%, on the fine-tuning AdamW delta); 1.0 loses 0.05%.
const ZSTD_SAMPLE_SLACK: f64 = 1.2;

/// Whether zstd might beat `best` bytes on `data`: judged on its middle
/// eighth (zstd's gains on skewed planes come from long runs, which a
/// sample shows), so most skewed planes, where it loses, cost an eighth of
/// a trial.
fn zstd_sample_promising(data: &[u8], best: usize) -> bool {
    let n = data.len();
    if n < ZSTD_SAMPLE_MIN_PLANE {
        return true;
    }
    let m = n / 8;
    let start = (n - m) / 2;
    match zstd_compress(&data[start..start + m], ZSTD_LEVEL_PLANE) {
        Ok(z) => (z.len() as f64 / m as f64) <= ZSTD_SAMPLE_SLACK * best as f64 / n as f64,
        Err(_) => false,
    }
}

/// Encodes `data` with the best codec, appends the result to `out`, and
/// returns the codec chosen.
pub fn encode_plane(data: &[u8], kind: PlaneKind, out: &mut Vec<u8>) -> PlaneCodec {
    encode_plane_with(data, kind, &Tuning::DEFAULT, out)
}

/// [`encode_plane`] with the encoder's tuning.
pub fn encode_plane_with(
    data: &[u8],
    kind: PlaneKind,
    tuning: &Tuning,
    out: &mut Vec<u8>,
) -> PlaneCodec {
    let n = data.len();
    if n == 0 {
        return PlaneCodec::Raw;
    }
    // Generic bytes always get zstd tried: a sample of byte frequencies says
    // nothing of the repeated strings zstd finds there.
    if n >= SAMPLE_MIN_PLANE && kind == PlaneKind::Tensor && clearly_incompressible(data) {
        out.extend_from_slice(data);
        return PlaneCodec::Raw;
    }
    let hist = huffman::histogram(data);
    encode_counted(data, &hist, None, kind, tuning, out)
}

/// What [`estimate`] found for a plane.
#[derive(Clone, Copy)]
struct Estimate {
    /// The entropy coder to use (Constant, Huffman, rANS or Raw).
    codec: PlaneCodec,
    /// Its estimated size in bytes.
    size: usize,
    /// Huffman's estimated size, and its code lengths.
    huffman: usize,
    lengths: [u8; 256],
}

/// The entropy coder [`encode_counted`] picks for a plane of `n` bytes
/// with histogram `hist` (zstd aside), its estimated size, and Huffman's.
fn estimate(hist: &[u32; 256], n: usize, tuning: &Tuning) -> Estimate {
    let mut e = Estimate {
        codec: PlaneCodec::Constant,
        size: 1,
        huffman: 1,
        lengths: [0; 256],
    };
    if hist.iter().filter(|&&c| c > 0).count() <= 1 {
        return e;
    }
    e.lengths = huffman::code_lengths(hist, huffman::MAX_CODE_LEN);
    e.huffman = huffman::encoded_size(hist, &e.lengths);
    // Huffman must save 1/64 of the plane to be worth its decode time, and
    // so must rANS32 against raw storage; rANS32 must save
    // `rans32_min_gain` of the plane's length against Huffman, and the
    // four-state rANS `rans_min_gain` of what the best of those takes.
    let huffman_ok = e.huffman + n / MIN_GAIN_DIVISOR < n;
    (e.codec, e.size) = if huffman_ok {
        (PlaneCodec::Huffman, e.huffman)
    } else {
        (PlaneCodec::Raw, n)
    };
    let mut needed32 = e.size as f64 - tuning.rans32_min_gain * n as f64;
    if !huffman_ok {
        needed32 = needed32.min((n - n / MIN_GAIN_DIVISOR) as f64);
    }
    let needed4 = e.size as f64 * (1.0 - tuning.rans_min_gain);
    // rANS cannot code below the plane's order-0 entropy: where that is
    // already above what rANS would have to reach, its estimate (which
    // scales the frequencies, a loop of up to 256 steps on flat planes) is
    // skipped. The choice is the same either way.
    if entropy_bytes(hist, n) < needed32.max(needed4)
        && let Some(c) = rans::coded_size(hist)
    {
        let r32 = rans32::size_of_coded(c);
        if (r32 as f64) < needed32 {
            (e.codec, e.size) = (PlaneCodec::Rans32, r32);
        }
        let r4 = c.stream + c.table + 4 * 4 + 4;
        // e.size is now the best of the others, rANS32 included.
        if (r4 as f64) < e.size as f64 * (1.0 - tuning.rans_min_gain) {
            (e.codec, e.size) = (PlaneCodec::Rans, r4);
        }
    }
    e
}

/// The order-0 entropy of a plane of `n` bytes with histogram `hist`, in bytes.
fn entropy_bytes(hist: &[u32; 256], n: usize) -> f64 {
    let nf = n as f64;
    let bits: f64 = hist
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let c = f64::from(c);
            c * (nf / c).log2()
        })
        .sum();
    bits / 8.0
}

/// [`encode_plane_with`] once the plane's histogram is known (and its
/// [`estimate`], if made already).
fn encode_counted(
    data: &[u8],
    hist: &[u32; 256],
    est: Option<&Estimate>,
    kind: PlaneKind,
    tuning: &Tuning,
    out: &mut Vec<u8>,
) -> PlaneCodec {
    let n = data.len();
    if n == 0 {
        return PlaneCodec::Raw;
    }
    if hist[data[0] as usize] as usize == n {
        out.push(data[0]);
        return PlaneCodec::Constant;
    }
    let start = out.len();
    // Choose between Huffman and rANS on their estimates, then code once.
    let est = match est {
        Some(e) => *e,
        None => estimate(hist, n, tuning),
    };
    // Runs where one byte fills the plane and they code about as small;
    // else the entropy coder the estimate chose (raw: stored below).
    let runs = runs_fill(hist, n).and_then(|fill| encode_runs(data, hist, fill, &est, tuning, out));
    let mut best = match runs {
        Some(size) => (PlaneCodec::Runs, size),
        None if est.codec == PlaneCodec::Raw => (PlaneCodec::Raw, n),
        None => {
            encode_entropy(data, hist, &est, out);
            (est.codec, out.len() - start)
        }
    };

    let try_zstd = match kind {
        PlaneKind::Generic | PlaneKind::TensorLz => true,
        PlaneKind::Tensor => {
            est.huffman < n / 4
                && !(best.0 == PlaneCodec::Runs && n >= RUNS_NO_ZSTD_MIN_PLANE)
                && zstd_sample_promising(data, best.1)
        }
    };
    if try_zstd {
        let level = match kind {
            PlaneKind::Generic => ZSTD_LEVEL_GENERIC,
            PlaneKind::Tensor | PlaneKind::TensorLz => tuning.zstd_level,
        };
        if let Ok(z) = zstd_compress(data, level)
            && z.len() < best.1
        {
            out.truncate(start);
            out.extend_from_slice(&z);
            best = (PlaneCodec::Zstd, z.len());
        }
    }

    if best.0 == PlaneCodec::Raw {
        out.truncate(start);
        out.extend_from_slice(data);
    }
    best.0
}

/// Codes `data` with the entropy coder `est` chose (constant, Huffman,
/// rANS, or nothing for raw: the caller stores the bytes).
fn encode_entropy(data: &[u8], hist: &[u32; 256], est: &Estimate, out: &mut Vec<u8>) {
    match est.codec {
        PlaneCodec::Constant => out.push(data[0]),
        PlaneCodec::Rans => rans::encode(data, hist, out),
        PlaneCodec::Rans32 => rans32::encode(data, hist, out),
        PlaneCodec::Huffman => huffman::encoder::encode_with(data, &est.lengths, out),
        _ => {}
    }
}

/// Run codes `map` by its byte 0 whatever its size beside the order-0
/// coders' (a map that is all one byte, or too short for runs, gets the
/// usual choice). A sparse chunk's map (one byte an element, 1 where it
/// changed) is coded so, from its positions, by [`encode_positions`]:
/// decoding then reads the changed positions straight from the run
/// lengths, where an rANS map was decoded and scanned. The fuzz target and
/// the criterion benchmark use this form on any plane.
pub fn encode_map(map: &[u8], tuning: &Tuning, out: &mut Vec<u8>) -> PlaneCodec {
    let hist = huffman::histogram(map);
    if map.len() >= RUNS_MIN_PLANE && hist[0] < map.len() as u32 && hist[1] < map.len() as u32 {
        let est = estimate(&hist, map.len(), tuning);
        let always = Tuning {
            runs_slack: f64::INFINITY,
            ..*tuning
        };
        if encode_runs(map, &hist, 0, &est, &always, out).is_some() {
            return PlaneCodec::Runs;
        }
    }
    encode_counted(map, &hist, None, PlaneKind::Tensor, tuning, out)
}

/// Planes shorter than this are not run coded: the streams' two tables
/// would weigh too much.
const RUNS_MIN_PLANE: usize = 1024;

/// The byte a plane of `n` bytes with histogram `hist` is worth run coding
/// by: its most frequent, if it fills at least half the plane.
fn runs_fill(hist: &[u32; 256], n: usize) -> Option<u8> {
    if n < RUNS_MIN_PLANE {
        return None;
    }
    let (fill, &count) = hist.iter().enumerate().max_by_key(|&(_, c)| *c)?;
    (2 * count as usize >= n).then_some(fill as u8)
}

thread_local! {
    /// Per-thread room for a runs plane's tokens, extra bits and literals.
    static RUNS: std::cell::RefCell<[Vec<u8>; 3]> = const {
        std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()])
    };
}

/// Codes `data` as a [`PlaneCodec::Runs`] block of runs of `fill` into
/// `out` if its estimate is within [`Tuning::runs_slack`] of `est`, the
/// best entropy coder's; returns the bytes written, or `None` (and writes
/// nothing) if it is not.
fn encode_runs(
    data: &[u8],
    hist: &[u32; 256],
    fill: u8,
    est: &Estimate,
    tuning: &Tuning,
    out: &mut Vec<u8>,
) -> Option<usize> {
    RUNS.with_borrow_mut(|[tokens, extra, literals]| {
        runs::tokenize(data, fill, tokens, extra, literals);
        let th = huffman::histogram(tokens);
        let mut lh = *hist;
        lh[fill as usize] = 0;
        let n = data.len();
        // A stream's coder is chosen by the same bars as a plane's: the
        // four-state rANS decodes a stream's symbols as slowly as a plane's
        // (scaling its bar down by the stream's share of the plane had it
        // chosen for 0.02% of a dense BF16 delta's size and 8% of its
        // decoding time; docs/BENCHMARKS.md, "Dense deltas").
        let te = estimate(&th, tokens.len(), tuning);
        let le = estimate(&lh, literals.len(), tuning);
        let size = runs::OVERHEAD
            + stored_size(&te, tokens.len())
            + extra.len()
            + stored_size(&le, literals.len());
        let rival = stored_size(est, n);
        if size as f64 > rival as f64 * (1.0 + tuning.runs_slack) + tuning.runs_slack_bytes as f64 {
            return None;
        }
        let start = out.len();
        let streams = RunsStreams {
            tokens,
            token_hist: &th,
            token_est: &te,
            extra,
            literals,
            literal_hist: &lh,
            literal_est: &le,
        };
        write_runs(fill, literals.len(), &streams, out);
        Some(out.len() - start)
    })
}

/// The bytes a plane of `len` bytes takes with the coder `e` chose.
fn stored_size(e: &Estimate, len: usize) -> usize {
    if e.codec == PlaneCodec::Raw {
        len
    } else {
        e.size
    }
}

/// A runs block's streams and the coders chosen for them.
struct RunsStreams<'a> {
    tokens: &'a [u8],
    token_hist: &'a [u32; 256],
    token_est: &'a Estimate,
    extra: &'a [u8],
    literals: &'a [u8],
    literal_hist: &'a [u32; 256],
    literal_est: &'a Estimate,
}

/// Appends a runs block (FORMAT.md, "Runs plane") of `count` literals.
fn write_runs(fill: u8, count: usize, s: &RunsStreams, out: &mut Vec<u8>) {
    out.push(fill);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    let stream = |data: &[u8], hist: &[u32; 256], e: &Estimate, out: &mut Vec<u8>| {
        encode_entropy(data, hist, e, out);
        if e.codec == PlaneCodec::Raw {
            out.extend_from_slice(data);
        }
        e.codec as u8
    };
    let at = out.len();
    out.extend_from_slice(&[0; 5]);
    out[at] = stream(s.tokens, s.token_hist, s.token_est, out);
    let a = (out.len() - at - 5) as u32;
    out[at + 1..at + 5].copy_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&(s.extra.len() as u32).to_le_bytes());
    out.extend_from_slice(s.extra);
    let at = out.len();
    out.push(0);
    out[at] = stream(s.literals, s.literal_hist, s.literal_est, out);
}

/// Codes the map of a sparse delta chunk of `n` elements whose changed
/// elements are `positions` (increasing) into `out`, as [`encode_map`]
/// codes the map's bytes but from the positions: the tokens come from
/// their gaps, with no pass over the map.
pub fn encode_positions(
    n: usize,
    positions: &[u32],
    tuning: &Tuning,
    out: &mut Vec<u8>,
) -> PlaneCodec {
    let m = positions.len();
    if m == 0 || m == n {
        out.push(u8::from(m == n));
        return PlaneCodec::Constant;
    }
    RUNS.with_borrow_mut(|[tokens, extra, _]| {
        runs::tokens_at(positions, tokens, extra);
        let th = huffman::histogram(tokens);
        let te = estimate(&th, m, tuning);
        let mut lh = [0u32; 256];
        lh[1] = m as u32;
        let le = estimate(&lh, m, tuning);
        let streams = RunsStreams {
            tokens,
            token_hist: &th,
            token_est: &te,
            extra,
            literals: &[1],
            literal_hist: &lh,
            literal_est: &le,
        };
        write_runs(0, m, &streams, out);
    });
    PlaneCodec::Runs
}

/// The header flags a plane stored with `codec` as `stored` needs
/// (FORMAT.md: a writer sets bit 2 wherever codec 6 appears, split parts
/// included, and bit 3 wherever codec 7 appears, split parts and runs
/// streams included).
pub fn flags_needed(codec: PlaneCodec, stored: &[u8]) -> u16 {
    use crate::format::{FLAG_RANS, FLAG_RANS32, FLAG_RUNS, FLAG_SPLIT};
    match codec {
        PlaneCodec::Rans => FLAG_RANS,
        PlaneCodec::Rans32 => FLAG_RANS32,
        PlaneCodec::Runs => {
            // Its streams' codecs (a block the encoder just wrote parses).
            let inner = runs::parse(stored, usize::MAX).map_or(0, |p| {
                let of = |c| {
                    if c == PlaneCodec::Rans32 {
                        FLAG_RANS32
                    } else {
                        0
                    }
                };
                of(p.token_codec) | of(p.literal_codec)
            });
            FLAG_RUNS | inner
        }
        PlaneCodec::Split => {
            let mut f = FLAG_SPLIT;
            let part = |code: u8, part: &[u8]| match PlaneCodec::from_code(code) {
                Some(c @ (PlaneCodec::Rans | PlaneCodec::Runs | PlaneCodec::Rans32)) => {
                    flags_needed(c, part)
                }
                _ => 0,
            };
            if let [_, ca, l0, l1, l2, l3, rest @ ..] = stored {
                let la = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
                if let Some((a, b)) = rest.split_at_checked(la) {
                    f |= part(*ca, a);
                    if let [cb, b @ ..] = b {
                        f |= part(*cb, b);
                    }
                }
            }
            f
        }
        _ => 0,
    }
}

/// Planes shorter than this are never split: the parts' two tables would
/// weigh too much.
const SPLIT_MIN_PLANE: usize = 4096;
/// Bytes a split plane adds to its parts' stored bytes.
const SPLIT_OVERHEAD: usize = 7;
/// The default [`Tuning::split_min_gain`]. Splitting costs an interleave
/// when decoding (`decode_split` is 5% of a profile of BF16 delta
/// decompression; deltas code and decode 10-16% slower end to end,
/// docs/BENCHMARKS.md). Measured with the `context_study` example on the
/// pretrain series (step 300 against 280), the XOR delta's ratio goes from
/// 2.602 to 2.695 for BF16 weights and from 1.439 to 1.455 for fp32 master
/// weights; a 2% margin would keep only 1.446 of the latter, 4% only 2.613
/// of the former.
const SPLIT_MIN_GAIN: f64 = 0.01;

thread_local! {
    /// Per-thread buffer for a split plane's two parts.
    static PARTS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most frequent byte of `lead`, judged on every 16th byte: the byte
/// whose elements [`encode_plane_led`] puts in part A. Any value decodes
/// correctly; a frequent one splits usefully.
pub fn split_key(lead: &[u8]) -> u8 {
    let mut h = [0u32; 256];
    for &b in lead.iter().step_by(16) {
        h[b as usize] += 1;
    }
    (0..=255u8)
        .max_by_key(|&s| (h[s as usize], std::cmp::Reverse(s)))
        .unwrap_or(0)
}

/// [`encode_plane_with`] for a plane other than plane 0 of a tensor chunk,
/// whose plane 0 is `lead` (for floats, the exponents) and `key` its
/// [`split_key`]: where the estimate says so, codes the plane as
/// [`PlaneCodec::Split`], part A the bytes of the elements whose plane-0
/// byte is `key` and part B the others, each coded alone. In an XOR delta,
/// the mantissa of an element whose exponent did not change (plane-0 byte
/// 0) changed in its low bits only, while the others changed at random: one
/// table for both wastes bits on each.
pub fn encode_plane_led(
    data: &[u8],
    lead: &[u8],
    key: u8,
    kind: PlaneKind,
    tuning: &Tuning,
    out: &mut Vec<u8>,
) -> PlaneCodec {
    let n = data.len();
    assert_eq!(lead.len(), n, "plane 0 and the plane differ in length");
    if n < SPLIT_MIN_PLANE || kind != PlaneKind::Tensor {
        return encode_plane_with(data, kind, tuning, out);
    }
    if n >= SAMPLE_MIN_PLANE && clearly_incompressible(data) {
        out.extend_from_slice(data);
        return PlaneCodec::Raw;
    }
    let parts = split_histograms(data, lead, key);
    let mut hist = [0u32; 256];
    for (h, (a, b)) in hist.iter_mut().zip(parts[0].iter().zip(&parts[1])) {
        *h = a + b;
    }
    let na = parts[0].iter().map(|&c| c as usize).sum::<usize>();
    let nb = n - na;
    let whole = estimate(&hist, n, tuning);
    let ests = (na > 0 && nb > 0).then(|| {
        (
            estimate(&parts[0], na, tuning),
            estimate(&parts[1], nb, tuning),
        )
    });
    let Some((ea, eb)) = ests.filter(|(ea, eb)| {
        ((ea.size + eb.size + SPLIT_OVERHEAD) as f64)
            < whole.size as f64 * (1.0 - tuning.split_min_gain)
    }) else {
        return encode_counted(data, &hist, Some(&whole), kind, tuning, out);
    };
    PARTS.with_borrow_mut(|buf| {
        buf.resize(n + 2 * kernels::PART_PAD, 0);
        let (a, b) = buf.split_at_mut(na + kernels::PART_PAD);
        kernels::partition(data, lead, key, a, b);
        let (a, b) = (&a[..na], &b[..nb]);
        out.push(key);
        let at = out.len();
        out.extend_from_slice(&[0; 5]);
        let ca = encode_counted(a, &parts[0], Some(&ea), kind, tuning, out);
        let la = (out.len() - at - 5) as u32;
        out[at] = ca as u8;
        out[at + 1..at + 5].copy_from_slice(&la.to_le_bytes());
        let at = out.len();
        out.push(0);
        out[at] = encode_counted(b, &parts[1], Some(&eb), kind, tuning, out) as u8;
    });
    PlaneCodec::Split
}

/// Histograms of `data`'s bytes whose `lead` byte is `key` (`[0]`) and is
/// not (`[1]`).
fn split_histograms(data: &[u8], lead: &[u8], key: u8) -> [[u32; 256]; 2] {
    // Four sets of counters, one for each byte of a 4-byte group, so that
    // runs of one value do not wait on the same counter; each set counts
    // part A's bytes in its first half and part B's in its second.
    let mut h = [[0u32; 512]; 4];
    let mut groups = data.chunks_exact(4).zip(lead.chunks_exact(4));
    for (d, l) in &mut groups {
        for (k, hk) in h.iter_mut().enumerate() {
            hk[usize::from(l[k] != key) << 8 | usize::from(d[k])] += 1;
        }
    }
    let tail = data.len() / 4 * 4;
    for (&d, &l) in data[tail..].iter().zip(&lead[tail..]) {
        h[0][usize::from(l != key) << 8 | usize::from(d)] += 1;
    }
    let mut out = [[0u32; 256]; 2];
    for i in 0..512 {
        out[i >> 8][i & 255] = h.iter().map(|hk| hk[i]).sum();
    }
    out
}

/// Decodes a [`PlaneCodec::Split`] plane whose chunk's plane 0 decoded to
/// `lead` into `out`. Malformed input gives an error, never a panic.
pub fn decode_split(stored: &[u8], lead: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let n = out.len();
    if lead.len() != n {
        return Err(DecodeError::LengthMismatch {
            codec: PlaneCodec::Split,
            what: "plane 0 leading it",
            expected: n,
            found: lead.len(),
        });
    }
    let &[key, ca, l0, l1, l2, l3, ref rest @ ..] = stored else {
        return Err(DecodeError::Truncated {
            codec: PlaneCodec::Split,
            part: "header",
            needed: 6,
            available: stored.len(),
        });
    };
    let la = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if la >= rest.len() {
        return Err(DecodeError::PartOverrun {
            claimed: la,
            available: rest.len(),
        });
    }
    let (sa, rest) = rest.split_at(la);
    let (cb, sb) = (rest[0], &rest[1..]);
    let part_codec = |code: u8, part: char| match PlaneCodec::from_code(code) {
        Some(PlaneCodec::Split) | None => Err(DecodeError::PartCodec { part, code }),
        Some(c) => Ok(c),
    };
    let (ca, cb) = (part_codec(ca, 'A')?, part_codec(cb, 'B')?);
    // Counted in byte-wide sums of up to 255 (they vectorise 16 or 32 lanes a step).
    let na: usize = lead
        .chunks(255)
        .map(|c| usize::from(c.iter().map(|&l| u8::from(l == key)).sum::<u8>()))
        .sum();
    if na == 0 || na == n {
        return Err(DecodeError::EmptyPart {
            key,
            count: na,
            len: n,
        });
    }
    PARTS.with_borrow_mut(|buf| {
        buf.resize(n + 2 * kernels::PART_PAD, 0);
        let (a, b) = buf.split_at_mut(na + kernels::PART_PAD);
        let in_part = |part| {
            move |e| DecodeError::InPart {
                part,
                source: Box::new(e),
            }
        };
        decode_plane(ca, sa, &mut a[..na]).map_err(in_part('A'))?;
        decode_plane(cb, sb, &mut b[..n - na]).map_err(in_part('B'))?;
        kernels::interleave(a, b, lead, key, out);
        Ok(())
    })
}

/// Decodes a plane stored with `codec` into `out` (whose length is the
/// plane's length). Malformed input gives an error, never a panic.
pub fn decode_plane(codec: PlaneCodec, stored: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let mismatch = |what, expected, found| DecodeError::LengthMismatch {
        codec,
        what,
        expected,
        found,
    };
    match codec {
        PlaneCodec::Raw => {
            if stored.len() != out.len() {
                return Err(mismatch("stored block", out.len(), stored.len()));
            }
            out.copy_from_slice(stored);
        }
        PlaneCodec::Constant => match stored {
            [b] => out.fill(*b),
            _ => {
                return Err(mismatch("stored block", 1, stored.len()));
            }
        },
        PlaneCodec::Huffman => huffman::decode(stored, out)?,
        PlaneCodec::Rans => rans::decode(stored, out)?,
        PlaneCodec::Rans32 => rans32::decode(stored, out)?,
        PlaneCodec::Runs => runs::decode(stored, out)?,
        PlaneCodec::Split => {
            return Err(DecodeError::NeedsLead);
        }
        PlaneCodec::Zstd => {
            let got = zstd::bulk::decompress_to_buffer(stored, out)
                .map_err(|e| DecodeError::Zstd(e.to_string()))?;
            if got != out.len() {
                return Err(mismatch("decoded output", out.len(), got));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8], kind: PlaneKind) -> (PlaneCodec, usize) {
        let mut out = vec![7u8; 3];
        let codec = encode_plane(data, kind, &mut out);
        let mut back = vec![0u8; data.len()];
        decode_plane(codec, &out[3..], &mut back).unwrap();
        assert_eq!(back, data);
        (codec, out.len() - 3)
    }

    /// xorshift bytes: no structure an order-0 or LZ coder can use.
    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn lz_planes_finds_repeated_strings_only() {
        let n = LZ_MIN_ELEMS; // elements
        // F32 elements whose low three bytes repeat a 1000-element pattern
        // (random order-0, but LZ-friendly), exponent bytes random.
        let pattern = noise(4000, 1);
        let expo = noise(n, 2);
        let mut data = Vec::with_capacity(n * 4);
        for i in 0..n {
            let p = &pattern[(i % 1000) * 4..(i % 1000) * 4 + 3];
            data.extend_from_slice(&[p[0], p[1], p[2], expo[i]]);
        }
        let m = lz_planes(crate::Dtype::F32, &data);
        // Plane 0 holds the top byte (with rotation, mostly expo): not LZ.
        assert_eq!(m & 1, 0, "{m:#b}");
        assert_eq!(m & 0b1110, 0b1110, "{m:#b}");
        assert_eq!(lz_planes(crate::Dtype::F32, &noise(n * 4, 3)), 0);
        // Too small to judge.
        assert_eq!(lz_planes(crate::Dtype::F32, &data[..4096]), 0);
        // The hinted kind round trips and picks zstd on such a plane.
        let plane: Vec<u8> = pattern.iter().copied().cycle().take(65536).collect();
        assert_eq!(round_trip(&plane, PlaneKind::TensorLz).0, PlaneCodec::Zstd);
    }

    #[test]
    fn picks_the_right_codec() {
        assert_eq!(round_trip(&[], PlaneKind::Tensor).0, PlaneCodec::Raw);
        assert_eq!(
            round_trip(&[0; 1000], PlaneKind::Tensor),
            (PlaneCodec::Constant, 1)
        );
        let uniform: Vec<u8> = (0..=255).cycle().take(65536).collect::<Vec<u8>>();
        // Uniform over all bytes, in a pattern zstd would find, but not tried on tensors.
        assert_eq!(round_trip(&uniform, PlaneKind::Tensor).0, PlaneCodec::Raw);
        assert_eq!(round_trip(&uniform, PlaneKind::Generic).0, PlaneCodec::Zstd);
        let skewed: Vec<u8> = (0..65536u32)
            .map(|i| (i.trailing_zeros() * 3) as u8)
            .collect();
        let (c, size) = round_trip(&skewed, PlaneKind::Tensor);
        assert!(
            matches!(c, PlaneCodec::Huffman | PlaneCodec::Zstd | PlaneCodec::Runs),
            "{c:?}"
        );
        assert!(size < 65536 / 2);
    }

    /// A delta-like plane: 92% zeros, the rest small values.
    fn sparse_plane(n: usize, seed: u64) -> Vec<u8> {
        noise(2 * n, seed)
            .chunks(2)
            .map(|r| if r[0] < 236 { 0 } else { 1 + (r[1] & 7) })
            .collect()
    }

    #[test]
    fn sparse_planes_are_run_coded_smaller_than_rans() {
        // (On iid bytes like these runs gain nothing over order-0 rANS; they
        // are chosen within the slack for their decoding speed.)
        for n in [65536, 1 << 20] {
            let d = sparse_plane(n, n as u64);
            let (c, size) = round_trip(&d, PlaneKind::Tensor);
            assert_eq!(c, PlaneCodec::Runs, "{n}");
            let mut r = Vec::new();
            rans::encode(&d, &huffman::histogram(&d), &mut r);
            // Within the default slack of rANS, and far below Huffman's bit a byte.
            assert!(
                size as f64 <= r.len() as f64 * 1.02 + 16.0,
                "{n}: {size} vs {}",
                r.len()
            );
            assert!(size < n / 8, "{n}: {size}");
        }
        // Runs of a byte other than 0, and runs longer than 255.
        let mut d = vec![0x7Fu8; 100_000];
        for i in (0..d.len()).step_by(997) {
            d[i] = (i % 5) as u8;
        }
        assert_eq!(round_trip(&d, PlaneKind::Tensor).0, PlaneCodec::Runs);
        // Too small to be worth two tables.
        assert_ne!(
            round_trip(&sparse_plane(500, 1), PlaneKind::Tensor).0,
            PlaneCodec::Runs
        );
    }

    /// Truncations and byte changes of a runs block give an error or some
    /// bytes, never a panic; streams with a codec they may not use and
    /// tokens that run past the plane are errors.
    #[test]
    fn damaged_runs_planes_are_errors() {
        let n = 65536;
        let d = sparse_plane(n, 9);
        let mut block = Vec::new();
        assert_eq!(
            encode_plane(&d, PlaneKind::Tensor, &mut block),
            PlaneCodec::Runs
        );
        let mut back = vec![0u8; n];
        for len in 0..block.len() {
            assert!(
                decode_plane(PlaneCodec::Runs, &block[..len], &mut back).is_err(),
                "{len}"
            );
        }
        for i in 0..block.len() {
            for x in [1u8, 0x80, 0xFF] {
                let mut b = block.clone();
                b[i] ^= x;
                if decode_plane(PlaneCodec::Runs, &b, &mut back).is_ok() && i > 0 {
                    // Only the fill byte's value and the streams' bytes can change
                    // the result without an error; the chunk checksum catches those.
                }
            }
        }
        for (at, code) in [(5, 5u8), (5, 6), (5, 200)] {
            let mut b = block.clone();
            b[at] = code;
            assert_eq!(
                decode_plane(PlaneCodec::Runs, &b, &mut back),
                Err(DecodeError::StreamCodec {
                    stream: "tokens",
                    code
                })
            );
        }
        // A token count beyond the plane is refused before any allocation.
        let mut b = block.clone();
        b[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_plane(PlaneCodec::Runs, &b, &mut back),
            Err(DecodeError::LengthMismatch {
                what: "literal count",
                ..
            })
        ));
        // The same block for a shorter plane: its tokens overflow it.
        assert!(decode_plane(PlaneCodec::Runs, &block, &mut back[..n / 2]).is_err());
    }

    /// rANS32 is chosen where it saves bits a symbol over Huffman, not on
    /// planes where it saves less than the default's bar, and every
    /// container holding it, as a plane or a runs stream, gets its flag.
    #[test]
    fn rans32_is_chosen_where_it_saves_and_flagged_wherever_it_is() {
        use crate::format::{FLAG_RANS32, FLAG_RUNS};
        let n = 65536;
        let r = noise(2 * n, 3);
        // 48% zeros, 48% ones, 4% anything: Huffman spends a bit or more on each.
        let d: Vec<u8> = (0..n)
            .map(|i| {
                if r[2 * i] < 10 {
                    r[2 * i + 1]
                } else {
                    r[2 * i] & 1
                }
            })
            .collect();
        let mut out = Vec::new();
        let c = encode_plane(&d, PlaneKind::Tensor, &mut out);
        assert_eq!(c, PlaneCodec::Rans32);
        assert_eq!(flags_needed(c, &out), FLAG_RANS32);
        let mut back = vec![0u8; n];
        decode_plane(c, &out, &mut back).unwrap();
        assert_eq!(back, d);
        // Four symbols at 25% each: Huffman's two bits each are exact.
        let flat: Vec<u8> = r[..n].iter().map(|b| b & 3).collect();
        assert_eq!(round_trip(&flat, PlaneKind::Tensor).0, PlaneCodec::Huffman);
        // 60% zeros, the other bytes mostly 1 (70%) or 2 (25%): run coded,
        // its literals in rANS32.
        let d: Vec<u8> = (0..n)
            .map(|i| match (r[2 * i], r[2 * i + 1]) {
                (0..154, _) => 0,
                (_, 0..179) => 1,
                (_, 179..243) => 2,
                (_, x) => x,
            })
            .collect();
        let mut out = Vec::new();
        let c = encode_plane(&d, PlaneKind::Tensor, &mut out);
        assert_eq!(c, PlaneCodec::Runs);
        let parsed = runs::parse(&out, n).unwrap();
        assert_eq!(parsed.literal_codec, PlaneCodec::Rans32);
        assert_eq!(flags_needed(c, &out), FLAG_RUNS | FLAG_RANS32);
        decode_plane(c, &out, &mut back).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn flags_cover_runs_in_split_parts() {
        use crate::format::{FLAG_RUNS, FLAG_SPLIT};
        let n = 65536;
        let (lead, _) = led_planes(n, 3);
        // Part A (lead 0) sparse, part B random: A is run coded.
        let r = noise(n, 4);
        let sparse = sparse_plane(n, 5);
        let data: Vec<u8> = (0..n)
            .map(|i| if lead[i] == 0 { sparse[i] } else { r[i] })
            .collect();
        let mut out = Vec::new();
        let c = encode_plane_led(
            &data,
            &lead,
            0,
            PlaneKind::Tensor,
            &Tuning::DEFAULT,
            &mut out,
        );
        assert_eq!(c, PlaneCodec::Split);
        assert_eq!(out[1], PlaneCodec::Runs as u8);
        assert_eq!(flags_needed(c, &out), FLAG_SPLIT | FLAG_RUNS);
        let mut back = vec![0u8; n];
        decode_split(&out, &lead, &mut back).unwrap();
        assert_eq!(back, data);
    }

    /// A delta-like pair of planes: `lead` mostly 0 (exponent unchanged),
    /// and `data` small where lead is 0, random elsewhere.
    fn led_planes(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let r = noise(2 * n, seed);
        let lead: Vec<u8> = (0..n).map(|i| if r[i] < 230 { 0 } else { r[i] }).collect();
        let data: Vec<u8> = (0..n)
            .map(|i| if lead[i] == 0 { r[n + i] & 3 } else { r[n + i] })
            .collect();
        (lead, data)
    }

    #[test]
    fn split_planes_round_trip_and_pay() {
        for n in [4096, 5000, 65536] {
            let (lead, data) = led_planes(n, n as u64);
            let key = split_key(&lead);
            assert_eq!(key, 0);
            let mut whole = Vec::new();
            encode_plane(&data, PlaneKind::Tensor, &mut whole);
            let mut out = vec![9u8; 2];
            let c = encode_plane_led(
                &data,
                &lead,
                key,
                PlaneKind::Tensor,
                &Tuning::DEFAULT,
                &mut out,
            );
            assert_eq!(c, PlaneCodec::Split);
            assert!(
                out.len() - 2 < whole.len() * 9 / 10,
                "{} vs {}",
                out.len(),
                whole.len()
            );
            let mut back = vec![0u8; n];
            decode_split(&out[2..], &lead, &mut back).unwrap();
            assert_eq!(back, data);
            // Without a lead the plane cannot be decoded, and says so.
            assert!(decode_plane(PlaneCodec::Split, &out[2..], &mut back).is_err());
        }
        // A plane that gains nothing from its lead is not split.
        let n = 65536;
        let (lead, _) = led_planes(n, 1);
        let data: Vec<u8> = noise(n, 2).iter().map(|b| b & 7).collect();
        let mut out = Vec::new();
        let c = encode_plane_led(
            &data,
            &lead,
            0,
            PlaneKind::Tensor,
            &Tuning::DEFAULT,
            &mut out,
        );
        assert_ne!(c, PlaneCodec::Split);
        // Nor one whose lead is all the key (a part would be empty).
        let c = encode_plane_led(
            &data,
            &vec![0; n],
            0,
            PlaneKind::Tensor,
            &Tuning::DEFAULT,
            &mut out,
        );
        assert_ne!(c, PlaneCodec::Split);
    }

    /// Truncations and single-byte changes of a split plane give an error
    /// or some bytes, never a panic; a wrong key, an empty part, a nested
    /// split and lengths that do not fit are errors.
    #[test]
    fn damaged_split_planes_are_errors() {
        let n = 8192;
        let (lead, data) = led_planes(n, 5);
        let mut block = Vec::new();
        let c = encode_plane_led(
            &data,
            &lead,
            0,
            PlaneKind::Tensor,
            &Tuning::DEFAULT,
            &mut block,
        );
        assert_eq!(c, PlaneCodec::Split);
        let mut back = vec![0u8; n];
        for len in 0..block.len().min(64) {
            assert!(
                decode_split(&block[..len], &lead, &mut back).is_err(),
                "{len}"
            );
        }
        for i in 0..block.len().min(300) {
            for x in [1u8, 0x80, 0xFF] {
                let mut b = block.clone();
                b[i] ^= x;
                let _ = decode_split(&b, &lead, &mut back);
            }
        }
        let mut b = block.clone();
        b[1] = PlaneCodec::Split as u8;
        assert_eq!(
            decode_split(&b, &lead, &mut back),
            Err(DecodeError::PartCodec { part: 'A', code: 5 })
        );
        let mut b = block.clone();
        b[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_split(&b, &lead, &mut back),
            Err(DecodeError::PartOverrun {
                claimed: 0xFFFF_FFFF,
                ..
            })
        ));
        // Every element led by the key: part B would be empty.
        assert_eq!(
            decode_split(&block, &vec![block[0]; n], &mut back),
            Err(DecodeError::EmptyPart {
                key: block[0],
                count: n,
                len: n
            })
        );
        // A lead of the wrong length.
        assert_eq!(
            decode_split(&block, &lead[1..], &mut back),
            Err(DecodeError::LengthMismatch {
                codec: PlaneCodec::Split,
                what: "plane 0 leading it",
                expected: n,
                found: n - 1
            })
        );
    }

    #[test]
    fn bad_stored_sizes_are_errors() {
        let mut out = [0u8; 4];
        assert!(decode_plane(PlaneCodec::Raw, &[1, 2, 3], &mut out).is_err());
        assert!(decode_plane(PlaneCodec::Constant, &[], &mut out).is_err());
        assert!(decode_plane(PlaneCodec::Zstd, &[1, 2, 3], &mut out).is_err());
        assert!(decode_plane(PlaneCodec::Huffman, &[], &mut out).is_err());
    }
}
