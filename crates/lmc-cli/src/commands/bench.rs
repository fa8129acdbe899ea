//! `lmc bench`: lmc beside general-purpose compressors on the same bytes, in
//! memory, in one process.
//!
//! Each file (or, with `--base`, its XOR delta against the previous snapshot)
//! is measured with every method: a memcpy (the speed ceiling), byte grouping
//! alone, lmc, and zstd, xz, bzip2, lz4 and brotli, each of those twice: on the
//! bytes as they are and on the byte-grouped bytes (each tensor split into its
//! byte planes, as ZipNN and lmc do; arXiv 2411.05239). Every round trip is
//! compared byte for byte with what was compressed. Beside the measured rows
//! come the order-0 entropy bounds ([`lmc_core::stats`]) and the entropy of
//! each byte plane per dtype, so the table shows both how far each coder gets
//! and how far an order-0 coder could get.
//!
//! Times are medians of up to `--runs` runs; a method stops repeating once its
//! runs have taken `--budget` seconds (it always runs once), because xz or
//! zstd -19 on a 90 MB file take a minute a run.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lmc_core::stats::{self, Histogram};
use lmc_core::{
    CompressOptions, Container, DeltaBase, Dtype, SegmentKind, SegmentSpec, compress,
    compress_delta, planes,
};
use serde_json::{Value, json};

use super::{emit, human, layout_of};
use crate::io::Input;

/// Arguments of `lmc bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Files to measure: safetensors, or flat arrays with --dtype.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Measure each file's XOR delta against a base (one base a file, in the
    /// files' order; put --base after the files): tensors with the same name,
    /// dtype and shape in both are XORed, all other bytes kept as they are.
    /// lmc itself codes the file as a delta container against the base, as
    /// `lmc compress --base` does, the XOR inside its timing.
    #[arg(long, num_args = 1..)]
    base: Vec<PathBuf>,
    /// Most timed runs of each method; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds after which a method stops repeating (it always runs once).
    #[arg(long, default_value_t = 3.0)]
    budget: f64,
    /// Methods to run, comma-separated (default: all): memcpy, grouping, lmc,
    /// zstd-1, zstd-3, zstd-19, xz-6, bzip2-9, lz4, brotli-9. A codec's name
    /// selects it on raw and on byte-grouped bytes; NAME+raw or NAME+grouped
    /// selects one of them.
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Treat the inputs as flat arrays of this dtype.
    #[arg(long)]
    dtype: Option<String>,
    /// Original bytes per chunk for lmc, 4K to 4M, e.g. 256K, 1M (default 256K).
    #[arg(long, value_parser = crate::parse_chunk_size)]
    chunk_size: Option<usize>,
    /// Print JSON (one object a file, one a line) instead of tables.
    #[arg(long)]
    json: bool,
    /// Measure lmc with `lmc compress --best` (the smallest output).
    #[arg(long)]
    best: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(
        args.budget.is_finite() && args.budget >= 0.0,
        "--budget must be a number of seconds, 0 or more"
    );
    if !args.base.is_empty() && args.base.len() != args.files.len() {
        bail!(
            "--base takes one base a file: {} files but {} bases",
            args.files.len(),
            args.base.len()
        );
    }
    let methods = select(args.methods.as_deref())?;
    // Fail on a mistyped path now, not after minutes of measuring other files.
    for p in args.files.iter().chain(&args.base) {
        std::fs::metadata(p).with_context(|| format!("cannot open {}", p.display()))?;
    }
    let mut opts = CompressOptions::default().best(args.best);
    if let Some(c) = args.chunk_size {
        opts = opts.chunk_size(c);
    }
    let settings = Settings {
        runs: args.runs,
        budget: Duration::from_secs_f64(args.budget),
        dtype: args.dtype.as_deref(),
        opts,
        progress: std::io::stderr().is_terminal(),
    };
    for (i, file) in args.files.iter().enumerate() {
        let report = bench_file(
            file,
            args.base.get(i).map(PathBuf::as_path),
            &methods,
            &settings,
        )?;
        let text = if args.json {
            format!("{}\n", serde_json::to_string(&report.to_json())?)
        } else {
            let sep = if i > 0 { "\n" } else { "" };
            format!("{sep}{}", report.to_markdown())
        };
        emit(&text)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

/// A general-purpose codec, run on one thread.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Codec {
    Zstd(i32),
    Xz(u32),
    Bzip2(u32),
    Lz4,
    /// Quality; the window is [`BROTLI_WINDOW_LOG`].
    Brotli(u32),
}

const CODECS: [Codec; 7] = [
    Codec::Zstd(1),
    Codec::Zstd(3),
    Codec::Zstd(19),
    Codec::Xz(6),
    Codec::Bzip2(9),
    Codec::Lz4,
    Codec::Brotli(9),
];

/// Brotli's window, 4 MiB: the library's default.
const BROTLI_WINDOW_LOG: u32 = 22;

/// Buffer of the brotli decoder.
const BROTLI_BUFFER: usize = 1 << 16;

impl Codec {
    fn label(self) -> String {
        match self {
            Codec::Zstd(l) => format!("zstd -{l}"),
            Codec::Xz(l) => format!("xz -{l}"),
            Codec::Bzip2(l) => format!("bzip2 -{l}"),
            Codec::Lz4 => "lz4".into(),
            Codec::Brotli(q) => format!("brotli -{q}"),
        }
    }

    /// Compresses `src` into `out` (replacing what it held).
    fn compress(self, src: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        match self {
            Codec::Zstd(level) => {
                out.reserve(zstd::zstd_safe::compress_bound(src.len()));
                zstd::bulk::Compressor::new(level)?.compress_to_buffer(src, out)?;
            }
            Codec::Xz(level) => {
                let mut e = xz2::write::XzEncoder::new(&mut *out, level);
                e.write_all(src)?;
                e.finish()?;
            }
            Codec::Bzip2(level) => {
                let mut e = bzip2::write::BzEncoder::new(&mut *out, bzip2::Compression::new(level));
                e.write_all(src)?;
                e.finish()?;
            }
            Codec::Lz4 => {
                out.resize(lz4_flex::block::get_maximum_output_size(src.len()), 0);
                let n = lz4_flex::block::compress_into(src, out)
                    .map_err(|e| anyhow::anyhow!("lz4: {e}"))?;
                out.truncate(n);
            }
            Codec::Brotli(quality) => {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: quality as i32,
                    lgwin: BROTLI_WINDOW_LOG as i32,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &src[..], out, &params)?;
            }
        }
        Ok(())
    }

    /// Decompresses `src` into `out`, which must come out `len` bytes long.
    fn decompress(self, src: &[u8], out: &mut Vec<u8>, len: usize) -> Result<()> {
        if out.len() != len {
            out.clear();
            out.resize(len, 0);
        }
        let label = self.label();
        match self {
            Codec::Zstd(_) => {
                let n = zstd::bulk::Decompressor::new()?.decompress_to_buffer(src, &mut out[..])?;
                ensure!(n == len, "{label} gave {n} bytes, expected {len}");
            }
            Codec::Xz(_) => read_exactly(xz2::bufread::XzDecoder::new(src), out, &label)?,
            Codec::Bzip2(_) => read_exactly(bzip2::bufread::BzDecoder::new(src), out, &label)?,
            Codec::Lz4 => {
                let n = lz4_flex::block::decompress_into(src, out)
                    .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
                ensure!(n == len, "{label} gave {n} bytes, expected {len}");
            }
            Codec::Brotli(_) => {
                read_exactly(brotli::Decompressor::new(src, BROTLI_BUFFER), out, &label)?;
            }
        }
        Ok(())
    }
}

/// Fills `out` from a decoder and checks that the decoder has nothing more.
fn read_exactly<R: Read>(mut r: R, out: &mut [u8], label: &str) -> Result<()> {
    r.read_exact(out)
        .with_context(|| format!("{label}: the stream ended before {} bytes", out.len()))?;
    ensure!(
        r.read(&mut [0u8; 1])? == 0,
        "{label} gave more than the {} bytes compressed",
        out.len()
    );
    Ok(())
}

/// A row of the table.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Memcpy,
    /// Byte grouping alone (split / merge), no coding.
    Grouping,
    Lmc,
    Raw(Codec),
    Grouped(Codec),
}

impl Method {
    fn all() -> Vec<Method> {
        let mut v = vec![Method::Memcpy, Method::Grouping, Method::Lmc];
        for c in CODECS {
            v.push(Method::Raw(c));
            v.push(Method::Grouped(c));
        }
        v
    }

    fn label(self) -> String {
        match self {
            Method::Memcpy => "memcpy".into(),
            Method::Grouping => "byte grouping (split / merge)".into(),
            Method::Lmc => "lmc".into(),
            Method::Raw(c) => c.label(),
            Method::Grouped(c) => format!("{} +grouped", c.label()),
        }
    }

    /// Whether `token` (as normalised by [`key`]) selects this method.
    fn selected_by(self, token: &str) -> bool {
        match self {
            Method::Memcpy => token == "memcpy",
            Method::Grouping => token == "grouping",
            Method::Lmc => token == "lmc",
            Method::Raw(c) => {
                let k = key(&c.label());
                token == k || token == format!("{k}+raw")
            }
            Method::Grouped(c) => {
                let k = key(&c.label());
                token == k || token == format!("{k}+grouped")
            }
        }
    }

    fn needs_grouping(self) -> bool {
        matches!(self, Method::Grouping | Method::Grouped(_))
    }
}

/// A method's name as `--methods` takes it: lower case, without spaces.
fn key(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The methods `--methods` names, in the table's order.
fn select(list: Option<&[String]>) -> Result<Vec<Method>> {
    let all = Method::all();
    let Some(list) = list else { return Ok(all) };
    let mut chosen = vec![false; all.len()];
    for token in list {
        let t = key(token);
        if t.is_empty() {
            continue;
        }
        let mut hit = false;
        for (c, m) in chosen.iter_mut().zip(&all) {
            if t == "all" || m.selected_by(&t) {
                *c = true;
                hit = true;
            }
        }
        if !hit {
            let names: Vec<String> = [Method::Memcpy, Method::Grouping, Method::Lmc]
                .iter()
                .map(|m| {
                    if *m == Method::Grouping {
                        "grouping".into()
                    } else {
                        m.label()
                    }
                })
                .chain(CODECS.iter().map(|c| key(&c.label())))
                .collect();
            bail!(
                "unknown method {token:?} in --methods (known: {}, all; a codec also as NAME+raw or NAME+grouped)",
                names.join(", ")
            );
        }
    }
    ensure!(chosen.contains(&true), "--methods names no method");
    Ok(all
        .into_iter()
        .zip(chosen)
        .filter_map(|(m, c)| c.then_some(m))
        .collect())
}

// ---------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------

struct Settings<'a> {
    runs: usize,
    budget: Duration,
    dtype: Option<&'a str>,
    opts: CompressOptions,
    progress: bool,
}

#[derive(Clone, Copy, Debug)]
struct Timing {
    /// Median seconds a run.
    secs: f64,
    runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs `f` up to `s.runs` times, fewer once the runs took `s.budget`.
fn time<F: FnMut() -> Result<()>>(s: &Settings, mut f: F) -> Result<Timing> {
    let start = Instant::now();
    let mut t = Vec::with_capacity(s.runs);
    while t.len() < s.runs && (t.is_empty() || start.elapsed() < s.budget) {
        let run = Instant::now();
        f()?;
        t.push(run.elapsed().as_secs_f64());
    }
    let runs = t.len();
    Ok(Timing {
        secs: median(t),
        runs,
    })
}

struct Row {
    label: String,
    threads: usize,
    /// Bytes after compression (the input's length for memcpy and grouping).
    stored: u64,
    compress: Timing,
    decompress: Timing,
}

// ---------------------------------------------------------------------------
// The bytes measured
// ---------------------------------------------------------------------------

/// Each segment of `layout` with its byte range.
fn ranges(layout: &[SegmentSpec]) -> impl Iterator<Item = (&SegmentSpec, Range<usize>)> {
    layout.iter().scan(0usize, |off, s| {
        let start = *off;
        *off += s.len as usize;
        Some((s, start..*off))
    })
}

/// The dtype of a segment that byte grouping splits: a tensor of elements
/// wider than a byte, a whole number of them.
fn grouped_dtype(spec: &SegmentSpec) -> Option<Dtype> {
    match &spec.kind {
        SegmentKind::Tensor { dtype, .. }
            if dtype.width() > 1 && spec.len.is_multiple_of(dtype.width() as u64) =>
        {
            Some(*dtype)
        }
        _ => None,
    }
}

/// How the bytes measured relate to the file.
struct Delta {
    base: PathBuf,
    matched: usize,
    xored_bytes: u64,
}

/// Elements XORed or split at a time, bounding scratch memory.
const BLOCK: usize = 1 << 16;

/// The XOR delta of `file` against `base`: each tensor of `file` that `base`
/// has with the same name, dtype and shape is XORed with it; every other byte
/// (header, tensors without a match) is kept. Same length and layout as `file`.
/// The tensors are paired as delta containers pair them
/// ([`DeltaBase::matching`]; a tensor without elements counts as unmatched).
fn xor_delta(
    file: &[u8],
    layout: &[SegmentSpec],
    base: &[u8],
    base_layout: &[SegmentSpec],
) -> (Vec<u8>, usize, u64) {
    let pairs = DeltaBase::matching(base, base_layout, layout);
    let mut out = Vec::with_capacity(file.len());
    let mut scratch = Vec::with_capacity(BLOCK);
    let (mut matched, mut xored) = (0, 0u64);
    for ((spec, r), off) in ranges(layout).zip(&pairs.offsets) {
        let ours = &file[r];
        match off {
            Some(o) => {
                let b = &base[*o as usize..*o as usize + ours.len()];
                for (x, y) in ours.chunks(BLOCK).zip(b.chunks(BLOCK)) {
                    stats::xor_into(x, y, &mut scratch);
                    out.extend_from_slice(&scratch);
                }
                matched += 1;
                xored += spec.len;
            }
            None => out.extend_from_slice(ours),
        }
    }
    (out, matched, xored)
}

/// Byte-groups `data` into `out`: each tensor's planes one after the other
/// (plane 0 of all its elements, then plane 1, ...), other bytes as they are.
fn group(data: &[u8], layout: &[SegmentSpec], out: &mut Vec<u8>, scratch: &mut [Vec<u8>]) {
    if out.len() != data.len() {
        out.clear();
        out.resize(data.len(), 0);
    }
    for (spec, r) in ranges(layout) {
        let Some(dtype) = grouped_dtype(spec) else {
            out[r.clone()].copy_from_slice(&data[r]);
            continue;
        };
        let w = dtype.width();
        let n = r.len() / w;
        let src = &data[r.clone()];
        let dst = &mut out[r];
        for first in (0..n).step_by(BLOCK) {
            let end = (first + BLOCK).min(n);
            planes::split(dtype, &src[first * w..end * w], &mut scratch[..w]);
            for (p, plane) in scratch[..w].iter().enumerate() {
                dst[p * n + first..p * n + end].copy_from_slice(plane);
            }
        }
    }
}

/// The inverse of [`group`].
fn ungroup(grouped: &[u8], layout: &[SegmentSpec], out: &mut Vec<u8>) {
    if out.len() != grouped.len() {
        out.clear();
        out.resize(grouped.len(), 0);
    }
    for (spec, r) in ranges(layout) {
        let Some(dtype) = grouped_dtype(spec) else {
            out[r.clone()].copy_from_slice(&grouped[r]);
            continue;
        };
        let n = r.len() / dtype.width();
        let src = &grouped[r.clone()];
        let planes: Vec<&[u8]> = src.chunks_exact(n).collect();
        planes::merge(dtype, &planes, &mut out[r]);
    }
}

// ---------------------------------------------------------------------------
// Entropy
// ---------------------------------------------------------------------------

/// The byte planes of all tensors of one dtype.
struct DtypePlanes {
    dtype: Dtype,
    tensors: usize,
    planes: Vec<Histogram>,
}

/// Order-0 bounds of the bytes measured.
struct Entropy {
    /// Sum over tensors and planes of `n * H / 8`, plus `other_bound`.
    planes_bound: f64,
    /// Sum over tensors of `n * H / 8` of their bytes ungrouped, plus `other_bound`.
    bytes_bound: f64,
    /// Bytes outside tensors (header, padding) and their order-0 bound,
    /// one histogram a segment.
    other_bytes: u64,
    other_bound: f64,
    by_dtype: Vec<DtypePlanes>,
}

fn entropy(data: &[u8], layout: &[SegmentSpec]) -> Entropy {
    let mut e = Entropy {
        planes_bound: 0.0,
        bytes_bound: 0.0,
        other_bytes: 0,
        other_bound: 0.0,
        by_dtype: Vec::new(),
    };
    for (spec, r) in ranges(layout) {
        let bytes = &data[r];
        let mut whole = Histogram::default();
        whole.add(bytes);
        match &spec.kind {
            SegmentKind::Tensor { dtype, .. } => {
                let hists = stats::plane_histograms(*dtype, bytes);
                // A trailing partial element (never in a well-formed file) counts raw.
                let partial = (bytes.len() % dtype.width()) as f64;
                e.planes_bound += hists.iter().map(Histogram::bound_bytes).sum::<f64>() + partial;
                e.bytes_bound += whole.bound_bytes();
                let i = match e.by_dtype.iter().position(|d| d.dtype == *dtype) {
                    Some(i) => i,
                    None => {
                        e.by_dtype.push(DtypePlanes {
                            dtype: *dtype,
                            tensors: 0,
                            planes: vec![Histogram::default(); dtype.width()],
                        });
                        e.by_dtype.len() - 1
                    }
                };
                let d = &mut e.by_dtype[i];
                d.tensors += 1;
                for (t, h) in d.planes.iter_mut().zip(&hists) {
                    t.merge(h);
                }
            }
            SegmentKind::Bytes => {
                e.other_bytes += bytes.len() as u64;
                e.other_bound += whole.bound_bytes();
            }
        }
    }
    e.planes_bound += e.other_bound;
    e.bytes_bound += e.other_bound;
    e
}

// ---------------------------------------------------------------------------
// One file
// ---------------------------------------------------------------------------

struct Report {
    file: PathBuf,
    len: u64,
    tensors: usize,
    delta: Option<Delta>,
    runs: usize,
    budget: Duration,
    chunk_size: usize,
    rows: Vec<Row>,
    entropy: Entropy,
}

fn bench_file(
    path: &Path,
    base_path: Option<&Path>,
    methods: &[Method],
    s: &Settings,
) -> Result<Report> {
    let input = Input::open(path)?;
    let layout = layout_of(path, &input, s.dtype)?;
    let tiled: u64 = layout.iter().map(|x| x.len).sum();
    ensure!(
        tiled == input.len() as u64,
        "{}: the layout covers {tiled} of its {} bytes",
        path.display(),
        input.len()
    );
    let tensors = layout
        .iter()
        .filter(|x| matches!(x.kind, SegmentKind::Tensor { .. }))
        .count();

    // The base's bytes and layout, kept for lmc, which codes the delta itself.
    let mut base_kept: Option<(Input, Vec<SegmentSpec>)> = None;
    let (owned, delta) = match base_path {
        None => (None, None),
        Some(bp) => {
            let base = Input::open(bp)?;
            let base_layout = layout_of(bp, &base, s.dtype)?;
            let tiled: u64 = base_layout.iter().map(|x| x.len).sum();
            ensure!(
                tiled == base.len() as u64,
                "{}: the layout covers {tiled} of its {} bytes",
                bp.display(),
                base.len()
            );
            let (d, matched, xored_bytes) = xor_delta(&input, &layout, &base, &base_layout);
            let delta = Delta {
                base: bp.to_path_buf(),
                matched,
                xored_bytes,
            };
            base_kept = Some((base, base_layout));
            (Some(d), Some(delta))
        }
    };
    let data: &[u8] = owned.as_deref().unwrap_or(&input);
    let n = data.len();
    let show = |what: &str| {
        if s.progress {
            eprint!("\r\x1b[2Klmc bench {}: {what}", path.display());
        }
    };

    let mut grouped = Vec::new();
    if methods.iter().any(|m| m.needs_grouping()) {
        group(data, &layout, &mut grouped, &mut vec![Vec::new(); 8]);
    }
    // Reused by every method: compressed bytes and decompressed bytes.
    let mut packed: Vec<u8> = Vec::new();
    let mut back: Vec<u8> = Vec::new();
    let mut rows = Vec::new();
    for &m in methods {
        let label = m.label();
        show(&label);
        let row = match m {
            Method::Memcpy => {
                back.resize(n, 0);
                let t = time(s, || {
                    back.copy_from_slice(std::hint::black_box(data));
                    std::hint::black_box(&mut back);
                    Ok(())
                })?;
                Row {
                    label,
                    threads: 1,
                    stored: n as u64,
                    compress: t,
                    decompress: t,
                }
            }
            Method::Grouping => {
                let mut scratch = vec![Vec::new(); 8];
                let c = time(s, || {
                    group(data, &layout, &mut packed, &mut scratch);
                    Ok(())
                })?;
                let d = time(s, || {
                    ungroup(&packed, &layout, &mut back);
                    Ok(())
                })?;
                ensure!(packed == grouped, "byte grouping is not deterministic");
                ensure!(
                    back == data,
                    "byte grouping does not merge back to the input"
                );
                Row {
                    label,
                    threads: 1,
                    stored: n as u64,
                    compress: c,
                    decompress: d,
                }
            }
            Method::Lmc => {
                // With a base, lmc codes the file as a delta container, as
                // `lmc compress --base` does (the XOR inside its timing),
                // and decodes it against the base, whose hash it is given
                // (as a snapshot store's restore does). Its ratio is the
                // delta container's.
                let delta_base = base_kept
                    .as_ref()
                    .map(|(b, bl)| DeltaBase::matching(b, bl, &layout));
                let mut out = std::io::Cursor::new(std::mem::take(&mut packed));
                let mut base_hash = None;
                let c = time(s, || {
                    out.get_mut().clear();
                    out.set_position(0);
                    let summary = match &delta_base {
                        None => compress(data, &layout, &s.opts, &mut out, &mut |_| true)?,
                        Some(d) => {
                            compress_delta(&input, &layout, d, &s.opts, &mut out, &mut |_| true)?
                        }
                    };
                    base_hash = summary.base_hash;
                    Ok(())
                })?;
                packed = out.into_inner();
                let mut container = Container::open(&packed)?;
                if let (Some((b, _)), Some(h)) = (&base_kept, base_hash) {
                    container = container.with_base_hashed(b, h)?;
                }
                let want: &[u8] = if base_kept.is_some() { &input } else { data };
                // Into a buffer of the right size, as the other codecs do.
                back.clear();
                back.resize(n, 0);
                let d = time(s, || {
                    container.decompress_into(&mut back, &mut |_| true)?;
                    Ok(())
                })?;
                ensure!(back == want, "lmc round trip differs from the input");
                Row {
                    label: if s.opts.get_tuning() == lmc_core::Tuning::BEST {
                        "lmc --best".into()
                    } else {
                        label
                    },
                    threads: rayon::current_num_threads(),
                    stored: packed.len() as u64,
                    compress: c,
                    decompress: d,
                }
            }
            Method::Raw(codec) | Method::Grouped(codec) => {
                let src: &[u8] = if m.needs_grouping() { &grouped } else { data };
                let c = time(s, || codec.compress(src, &mut packed))?;
                let d = time(s, || codec.decompress(&packed, &mut back, n))?;
                ensure!(
                    back == src,
                    "{label} round trip differs from what it compressed"
                );
                Row {
                    label,
                    threads: 1,
                    stored: packed.len() as u64,
                    compress: c,
                    decompress: d,
                }
            }
        };
        rows.push(row);
    }
    show("entropy");
    let entropy = entropy(data, &layout);
    if s.progress {
        eprint!("\r\x1b[2K");
    }
    Ok(Report {
        file: path.to_path_buf(),
        len: n as u64,
        tensors,
        delta,
        runs: s.runs,
        budget: s.budget,
        chunk_size: s.opts.get_chunk_size(),
        rows,
        entropy,
    })
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// What `+grouped`, the bounds and the codecs are, under each table.
fn notes(e: &Entropy) -> String {
    format!(
        "+grouped: the same codec on the byte-grouped bytes (each tensor split into its byte \
         planes, floats rotated so that the exponent fills plane 0, the planes one after the \
         other; other bytes as they are); its speeds leave out the split and merge, which the \
         byte grouping row times on their own. Bounds: order-0 entropy (n·H/8, tables not \
         counted) of each byte plane of each tensor, or of each tensor's bytes ungrouped; the \
         {} bytes outside tensors count at their own order-0 bound ({:.0} bytes), one \
         histogram a segment. Codecs: zstd = libzstd, one thread; xz -6 = liblzma preset 6; \
         bzip2 -9 = libbz2-rs-sys; lz4 = lz4_flex block format; brotli -9 = the brotli crate at \
         quality 9, window 2^{BROTLI_WINDOW_LOG}. Every round trip was compared byte for byte.",
        e.other_bytes, e.other_bound
    )
}

/// MB/s for the table: whole numbers, one decimal below 10 (xz, bzip2).
fn speed(mbs: f64) -> String {
    if mbs < 10.0 {
        format!("{mbs:.1}")
    } else {
        format!("{mbs:.0}")
    }
}

fn ratio(len: u64, stored: f64) -> f64 {
    len as f64 / stored
}

impl Report {
    fn mbs(&self, t: Timing) -> f64 {
        self.len as f64 / 1e6 / t.secs.max(1e-12)
    }

    /// What was measured, in words.
    fn what(&self) -> String {
        match &self.delta {
            None => format!("the file as it is, {} tensors", self.tensors),
            Some(d) => format!(
                "the XOR delta against {}: {} of {} tensors matched by name, dtype and shape \
                 and XORed ({} bytes), the header and any other tensor as they are",
                d.base.display(),
                d.matched,
                self.tensors,
                d.xored_bytes
            ),
        }
    }

    fn to_markdown(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{}: {} bytes ({}), {}. Median of up to {} runs a method, fewer once a method's runs \
             took {} s (runs: compress/decompress); lmc chunk size {}.\n",
            self.file.display(),
            self.len,
            human(self.len),
            self.what(),
            self.runs,
            self.budget.as_secs_f64(),
            self.chunk_size
        );
        let _ = writeln!(
            t,
            "| method | threads | runs | ratio | compress MB/s | decompress MB/s |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|");
        for r in &self.rows {
            let runs = if r.compress.runs == r.decompress.runs {
                r.compress.runs.to_string()
            } else {
                format!("{}/{}", r.compress.runs, r.decompress.runs)
            };
            let _ = writeln!(
                t,
                "| {} | {} | {runs} | {:.3} | {} | {} |",
                r.label,
                r.threads,
                ratio(self.len, r.stored as f64),
                speed(self.mbs(r.compress)),
                speed(self.mbs(r.decompress))
            );
        }
        let e = &self.entropy;
        for (label, b) in [
            ("order-0 bound, byte planes", e.planes_bound),
            ("order-0 bound, bytes ungrouped", e.bytes_bound),
        ] {
            let _ = writeln!(t, "| {label} | | | {:.3} | | |", ratio(self.len, b));
        }
        let _ = writeln!(t, "\n{}\n", notes(e));
        let _ = writeln!(
            t,
            "Byte planes per dtype (all tensors of the dtype together; plane 0 holds the exponent of floats):\n"
        );
        let _ = writeln!(
            t,
            "| dtype | plane | tensors | bytes | entropy bits/byte | zero fraction |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|");
        for d in &e.by_dtype {
            for (i, h) in d.planes.iter().enumerate() {
                let _ = writeln!(
                    t,
                    "| {} | {i} | {} | {} | {:.3} | {:.4} |",
                    d.dtype,
                    d.tensors,
                    h.total(),
                    h.entropy().abs(),
                    h.zero_fraction()
                );
            }
        }
        t
    }

    fn to_json(&self) -> Value {
        let results: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "method": r.label,
                    "threads": r.threads,
                    "runs": r.compress.runs,
                    "decompress_runs": r.decompress.runs,
                    "compressed_bytes": r.stored,
                    "ratio": ratio(self.len, r.stored as f64),
                    "compress_mb_per_s": self.mbs(r.compress),
                    "decompress_mb_per_s": self.mbs(r.decompress),
                })
            })
            .collect();
        let e = &self.entropy;
        let bounds = [
            ("order-0 bound, byte planes", e.planes_bound),
            ("order-0 bound, bytes ungrouped", e.bytes_bound),
        ]
        .map(|(m, b)| json!({"method": m, "bytes": b, "ratio": ratio(self.len, b)}));
        let planes: Vec<Value> = e
            .by_dtype
            .iter()
            .flat_map(|d| {
                d.planes.iter().enumerate().map(|(i, h)| {
                    json!({
                        "dtype": d.dtype.name(),
                        "plane": i,
                        "tensors": d.tensors,
                        "bytes": h.total(),
                        "entropy_bits_per_byte": h.entropy().abs(),
                        "zero_fraction": h.zero_fraction(),
                    })
                })
            })
            .collect();
        json!({
            "file": self.file.display().to_string(),
            "measured": if self.delta.is_some() { "xor-delta" } else { "file" },
            "base": self.delta.as_ref().map(|d| d.base.display().to_string()),
            "bytes": self.len,
            "tensors": self.tensors,
            "matched_tensors": self.delta.as_ref().map(|d| d.matched),
            "xored_bytes": self.delta.as_ref().map(|d| d.xored_bytes),
            "runs": self.runs,
            "budget_s": self.budget.as_secs_f64(),
            "chunk_size": self.chunk_size,
            "results": results,
            "bounds": bounds,
            "non_tensor_bytes": e.other_bytes,
            "non_tensor_bound_bytes": e.other_bound,
            "non_tensor_counted_as": "order-0 bound, one histogram a segment",
            "planes": planes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dtype: Dtype, elems: u64) -> SegmentSpec {
        SegmentSpec {
            kind: SegmentKind::Tensor {
                name: name.into(),
                dtype,
                shape: vec![elems],
            },
            len: elems * dtype.width() as u64,
        }
    }

    #[test]
    fn group_and_ungroup_are_inverse() {
        let layout = vec![
            SegmentSpec {
                kind: SegmentKind::Bytes,
                len: 5,
            },
            tensor("a", Dtype::BF16, 100_003),
            tensor("b", Dtype::F32, 7),
            tensor("c", Dtype::U8, 9),
        ];
        let n: u64 = layout.iter().map(|s| s.len).sum();
        let data: Vec<u8> = (0..n).map(|i| ((i * 2_654_435_761) >> 13) as u8).collect();
        let mut g = Vec::new();
        group(&data, &layout, &mut g, &mut vec![Vec::new(); 8]);
        // Plane 0 of tensor "a" is the rotated high byte of each element.
        let a = &data[5..5 + 200_006];
        let hi: Vec<u8> = a
            .chunks_exact(2)
            .map(|e| (u16::from_le_bytes([e[0], e[1]]).rotate_left(1) >> 8) as u8)
            .collect();
        assert_eq!(&g[5..5 + 100_003], &hi[..]);
        assert_eq!(g[..5], data[..5]);
        let mut back = Vec::new();
        ungroup(&g, &layout, &mut back);
        assert_eq!(back, data);
    }

    #[test]
    fn methods_by_name() {
        let all = select(None).unwrap();
        assert_eq!(all.len(), 3 + 2 * CODECS.len());
        let s = |l: &[&str]| select(Some(&l.iter().map(|x| x.to_string()).collect::<Vec<_>>()));
        assert_eq!(
            s(&["lmc", "zstd-3", "memcpy"]).unwrap(),
            [
                Method::Memcpy,
                Method::Lmc,
                Method::Raw(Codec::Zstd(3)),
                Method::Grouped(Codec::Zstd(3))
            ]
        );
        assert_eq!(
            s(&["zstd -3 +grouped"]).unwrap(),
            [Method::Grouped(Codec::Zstd(3))]
        );
        assert_eq!(s(&["LZ4+raw"]).unwrap(), [Method::Raw(Codec::Lz4)]);
        assert!(s(&["zstd-4"]).is_err());
        assert!(s(&[""]).is_err());
    }

    #[test]
    fn codecs_round_trip() {
        let data: Vec<u8> = (0..50_000u32)
            .flat_map(|i| ((i % 17) as u16).to_le_bytes())
            .collect();
        for c in CODECS {
            let (mut packed, mut back) = (Vec::new(), Vec::new());
            c.compress(&data, &mut packed).unwrap();
            assert!(packed.len() < data.len() / 4, "{}", c.label());
            c.decompress(&packed, &mut back, data.len()).unwrap();
            assert_eq!(back, data, "{}", c.label());
            assert!(c.decompress(&packed, &mut back, data.len() + 1).is_err());
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
    }
}
