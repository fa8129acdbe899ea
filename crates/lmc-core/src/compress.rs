//! The compression pipeline: cut segments into chunks, code the chunks in
//! parallel, write them in order.

use std::cell::RefCell;
use std::io::{Seek, SeekFrom, Write};

use crate::hash::Xxh3_128;
use rayon::prelude::*;

use crate::codec::{
    PlaneKind, Tuning, encode_plane_led, encode_plane_with, lz_planes_with, split_key,
};
use crate::error::{Error, Result};
use crate::format::{
    BaseRef, ChunkEntry, HEADER_LEN, Header, Index, MAX_CHUNK_LEN, PlaneEntry, Segment,
    SegmentKind, Transform,
};
use crate::planes;

/// Default original bytes per chunk: 256 KiB. Measured on MiniLM-L6
/// (docs/BENCHMARKS.md, "Chunk size"): the ratio is best at 256 KiB (a code
/// table per chunk follows local statistics; smaller chunks pay for more
/// tables), speed is the same from 256 KiB to 16 MiB within the noise of
/// the machine, and small chunks give the threads more pieces to share.
pub const DEFAULT_CHUNK_SIZE: usize = 256 << 10;

/// Smallest chunk size the encoder accepts: 4 KiB. A chunk costs 13 + 5
/// bytes a plane of index and a code table a plane, which below a few KiB
/// outweighs what coding saves (1-byte chunks made a file 12 times larger),
/// and the index held in memory while compressing grows as input / chunk size.
pub const MIN_CHUNK_SIZE: usize = 4 << 10;
/// Largest chunk size the encoder accepts: the format's
/// [`MAX_CHUNK_LEN`] (4 MiB), which readers enforce.
pub const MAX_CHUNK_SIZE: usize = MAX_CHUNK_LEN as usize;

/// Checks a chunk size against [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
/// [`compress_parts`] (so every front end: the CLI, the store, Python)
/// refuses options outside it; front ends may call it early to say so
/// before reading any input.
pub fn check_chunk_size(bytes: usize) -> Result<usize> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(Error::InvalidInput(format!(
            "chunk size {bytes} is outside {} KiB..={} MiB",
            MIN_CHUNK_SIZE >> 10,
            MAX_CHUNK_SIZE >> 20
        )))
    }
}

/// Most worker threads a front end starts, whatever the machine: beyond a
/// few per core they only add memory (each holds a few chunks in flight)
/// and start-up time (`-t 100000` ran for minutes).
pub const MAX_THREADS: usize = 256;

/// The most worker threads worth starting here: 4 per core, at most
/// [`MAX_THREADS`].
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(4).min(MAX_THREADS)
}

/// Checks a thread count asked for against 1..=[`max_threads`].
pub fn check_threads(n: usize) -> Result<usize> {
    let max = max_threads();
    if (1..=max).contains(&n) {
        Ok(n)
    } else {
        Err(Error::InvalidInput(format!(
            "{n} threads asked for; between 1 and {max} allowed here (4 per core, at most {MAX_THREADS})"
        )))
    }
}

/// Options for [`compress`].
#[derive(Debug, Clone)]
pub struct CompressOptions {
    chunk_size: usize,
    tuning: Tuning,
    cross_tensor: bool,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            tuning: Tuning::DEFAULT,
            cross_tensor: true,
        }
    }
}

impl CompressOptions {
    /// Original bytes per chunk (rounded down to whole elements). Must be
    /// within [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`] (4 KiB to 4 MiB):
    /// [`compress`] refuses others ([`check_chunk_size`]).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    pub fn get_chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// With `true`, the smallest output ([`Tuning::BEST`]) at the cost of
    /// slower decoding and compression; with `false`, [`Tuning::DEFAULT`].
    pub fn best(self, on: bool) -> Self {
        self.tuning(if on { Tuning::BEST } else { Tuning::DEFAULT })
    }

    /// How the encoder chooses codecs (see [`Tuning`]).
    pub fn tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    pub fn get_tuning(&self) -> Tuning {
        self.tuning
    }

    /// With `true` (the default), tensors that are a copy or a rounding of
    /// another tensor of the same file are stored as derived tensors (a
    /// reference plus a residue; see [`crate::derive`]), in delta
    /// containers ([`compress_delta`]) too, where such a tensor is coded
    /// against its source or against the base, whichever its middle chunk
    /// codes smaller (an exact rounding or copy always against its source).
    /// With `false`, every tensor
    /// is coded alone (or against the base), as lmc did before.
    pub fn cross_tensor(mut self, on: bool) -> Self {
        self.cross_tensor = on;
        self
    }

    pub fn get_cross_tensor(&self) -> bool {
        self.cross_tensor
    }
}

/// One piece of the input: its kind and length. A layout is a list of
/// these that tiles the input from start to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpec {
    pub kind: SegmentKind,
    pub len: u64,
}

/// What [`compress`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressSummary {
    pub original_len: u64,
    /// XXH3-128 of the original file (as recorded in the header).
    pub original_hash: u128,
    /// For a delta: XXH3-128 of its base (as recorded in the index).
    pub base_hash: Option<u128>,
    pub compressed_len: u64,
    pub chunks: usize,
    /// Of the source files given ([`compress_with_sources`]), the ones the
    /// container takes source elements from (indices, in increasing
    /// order): decoding needs these, in this order.
    pub sources: Vec<usize>,
}

/// Another file whose tensors the derived tensors of a new container may
/// take their source elements from (FORMAT.md, "Sources in other files"):
/// in a snapshot store, another file of the same checkpoint, such as the
/// fp32 master weights of a BF16 weights file.
#[derive(Debug, Clone)]
pub struct SourceInput<'a> {
    /// Recorded in the container and named in its errors (in a store, the
    /// file's path in its checkpoint).
    pub name: String,
    /// The file as pieces, one slice per segment of `layout`.
    pub parts: Vec<&'a [u8]>,
    pub layout: Vec<SegmentSpec>,
}

/// Reports progress (bytes of input done so far) and asks whether to go
/// on: returning `false` cancels the work with [`Error::Cancelled`].
pub type Progress<'a> = &'a mut dyn FnMut(u64) -> bool;

/// The base a delta container is coded against: typically the previous
/// snapshot of the same checkpoint.
#[derive(Debug, Clone)]
pub struct DeltaBase<'a> {
    /// The base's original file.
    pub bytes: &'a [u8],
    /// For each segment of the new file's layout: where its counterpart
    /// starts in `bytes` (same length), or `None` to store it whole.
    pub offsets: Vec<Option<u64>>,
    /// Names of the base's tensors that the new file lacks (recorded in the
    /// container, informative).
    pub removed: Vec<String>,
}

impl<'a> DeltaBase<'a> {
    /// Pairs the tensors of `layout` with those of `base_layout` (the
    /// layout of `bytes`) that have the same name, dtype and shape. Tensors
    /// without such a counterpart are stored whole; base tensors without
    /// one are listed as removed.
    pub fn matching(
        bytes: &'a [u8],
        base_layout: &[SegmentSpec],
        layout: &[SegmentSpec],
    ) -> DeltaBase<'a> {
        let mut by_name = std::collections::HashMap::new();
        let mut off = 0u64;
        for s in base_layout {
            if let SegmentKind::Tensor { name, .. } = &s.kind {
                by_name.insert(name.as_str(), (s, off));
            }
            off += s.len;
        }
        let mut used = std::collections::HashSet::new();
        let offsets = layout
            .iter()
            .map(|s| match &s.kind {
                SegmentKind::Tensor { name, .. } => {
                    let found = by_name.get(name.as_str()).filter(|(b, _)| b.kind == s.kind);
                    if by_name.contains_key(name.as_str()) {
                        used.insert(name.as_str());
                    }
                    found.map(|&(_, o)| o).filter(|_| s.len > 0)
                }
                SegmentKind::Bytes => None,
            })
            .collect();
        let removed = base_layout
            .iter()
            .filter_map(|s| match &s.kind {
                SegmentKind::Tensor { name, .. } if !used.contains(name.as_str()) => {
                    Some(name.clone())
                }
                _ => None,
            })
            .collect();
        DeltaBase {
            bytes,
            offsets,
            removed,
        }
    }

    /// How many segments are coded against the base.
    pub fn matched(&self) -> usize {
        self.offsets.iter().filter(|o| o.is_some()).count()
    }
}

struct Job {
    segment: usize,
    /// Byte range within the segment.
    start: usize,
    end: usize,
}

/// Compresses `input`, described by `layout`, into `out`.
///
/// Chunks are coded in parallel on the current rayon pool, in batches of a
/// few chunks a thread, and written in order; while one batch is written
/// (and the input hashed), the next is coded. Memory stays bounded by two
/// batches whatever the input size.
pub fn compress<W: Write + Seek + Send>(
    input: &[u8],
    layout: &[SegmentSpec],
    options: &CompressOptions,
    out: &mut W,
    progress: Progress<'_>,
) -> Result<CompressSummary> {
    let parts = tile(input, layout)?;
    compress_parts(&parts, layout, None, options, out, progress)
}

/// Compresses `input` as a delta against `base` (a version 2 container):
/// each tensor with a counterpart in the base is coded as its XOR with it.
/// Decoding needs the same base (checked by length and hash).
pub fn compress_delta<W: Write + Seek + Send>(
    input: &[u8],
    layout: &[SegmentSpec],
    base: &DeltaBase<'_>,
    options: &CompressOptions,
    out: &mut W,
    progress: Progress<'_>,
) -> Result<CompressSummary> {
    let parts = tile(input, layout)?;
    compress_parts(&parts, layout, Some(base), options, out, progress)
}

/// Cuts `input` into one slice per segment of `layout`.
fn tile<'a>(input: &'a [u8], layout: &[SegmentSpec]) -> Result<Vec<&'a [u8]>> {
    let mut parts = Vec::with_capacity(layout.len());
    let mut rest = input;
    for (i, spec) in layout.iter().enumerate() {
        let len = usize::try_from(spec.len)
            .ok()
            .filter(|&l| l <= rest.len())
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "segment {i} ({} bytes at offset {}) runs past the end of the {}-byte input",
                    spec.len,
                    input.len() - rest.len(),
                    input.len()
                ))
            })?;
        let (part, r) = rest.split_at(len);
        parts.push(part);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(Error::InvalidInput(format!(
            "layout covers {} bytes of a {}-byte input",
            input.len() - rest.len(),
            input.len()
        )));
    }
    Ok(parts)
}

/// The general form of [`compress`] and [`compress_delta`]: the original
/// file is the concatenation of `parts`, one slice per segment of `layout`
/// (so a file can be compressed from tensors in memory without assembling
/// it first), optionally coded against `base`.
pub fn compress_parts<W: Write + Seek + Send>(
    parts: &[&[u8]],
    layout: &[SegmentSpec],
    base: Option<&DeltaBase<'_>>,
    options: &CompressOptions,
    out: &mut W,
    progress: Progress<'_>,
) -> Result<CompressSummary> {
    compress_with_sources(parts, layout, base, &[], options, out, progress)
}

/// [`compress_parts`] where derived tensors may also take their source
/// elements from the tensors of other files, `sources` (FORMAT.md,
/// "Sources in other files"): [`crate::derive`]'s search runs over the
/// sources' tensors and the file's together, the sources' never derived.
/// The container records the source files it uses (by name, length and
/// XXH3-128) and the tensors it takes from them; decoding needs those
/// files ([`Container::with_sources_hashed`](crate::Container::with_sources_hashed)).
/// With cross-tensor search off, the sources are not used.
pub fn compress_with_sources<W: Write + Seek + Send>(
    parts: &[&[u8]],
    layout: &[SegmentSpec],
    base: Option<&DeltaBase<'_>>,
    sources: &[SourceInput<'_>],
    options: &CompressOptions,
    out: &mut W,
    progress: Progress<'_>,
) -> Result<CompressSummary> {
    check_chunk_size(options.chunk_size)?;
    if let Some(big) = options.tuning.lz_chunk_size {
        check_chunk_size(big)
            .map_err(|e| Error::InvalidInput(format!("for tensors with repeated strings: {e}")))?;
    }
    let (mut segments, mut jobs) = plan(parts, layout, base, &|_| options.chunk_size)?;
    // After plan(), which checked the parts against the layout.
    let (mut derived, external) = if options.cross_tensor {
        derive_with_sources(parts, layout, sources)?
    } else {
        (vec![None; layout.len()], External::default())
    };
    // Every part a piece may name: the segments, then the source tensors.
    let all_parts: Vec<&[u8]> = parts
        .iter()
        .copied()
        .chain(external.parts.iter().copied())
        .collect();
    // A tensor both derived and matched in the base is coded whichever way
    // is smaller, judged on a chunk coded both ways (an exact rounding's
    // residue, all zeros, always wins; a stochastic rounding's low bits may
    // lose to a delta in which few elements changed).
    if let Some(b) = base {
        let keep: Vec<bool> = segments
            .par_iter()
            .zip(&derived)
            .zip(parts.par_iter())
            .map(|((s, d), p)| match (d, s.base_offset) {
                (Some(d), Some(off)) => {
                    let at = off as usize;
                    derived_pays(
                        &s.kind,
                        p,
                        &b.bytes[at..at + p.len()],
                        d,
                        &all_parts,
                        options,
                    )
                }
                _ => true,
            })
            .collect();
        for (d, k) in derived.iter_mut().zip(keep) {
            if !k {
                *d = None;
            }
        }
    }
    // A derived tensor is coded against its source, not the base.
    let apply = |segments: &mut [Segment]| {
        for (s, d) in segments.iter_mut().zip(&derived) {
            if d.is_some() {
                s.derived = d.clone();
                s.base_offset = None;
            }
        }
    };
    // Whether every tensor matched in the base is derived instead.
    let on_base = |derived_too: bool| {
        segments
            .iter()
            .zip(&derived)
            .any(|(s, d)| s.base_offset.is_some() && d.is_some() == derived_too)
    };
    let base_only_derived = on_base(true) && !on_base(false);
    apply(&mut segments);
    // Planes that get zstd tried in every chunk, judged once per tensor.
    // Delta tensors are not judged: their XOR planes are mostly zero runs,
    // for which zstd is tried anyway.
    let lz: Vec<u64> = segments
        .par_iter()
        .zip(parts.par_iter())
        .map(|(s, p)| match &s.kind {
            SegmentKind::Tensor { dtype, .. } if s.base_offset.is_none() && s.derived.is_none() => {
                lz_planes_with(*dtype, p, &options.tuning)
            }
            _ => 0,
        })
        .collect();
    // Tensors with repeated strings may get longer chunks, so zstd sees
    // repeats further apart (chunks of one container need not be equal).
    // Only where a sample says so: on a tensor whose zero runs come and go
    // (rows that changed and rows that did not), short chunks let whole
    // chunks of zeros cost nothing, which long ones lose.
    if let Some(big) = options.tuning.lz_chunk_size
        && big != options.chunk_size
        && lz.iter().any(|&m| m != 0)
    {
        let long: Vec<bool> = segments
            .par_iter()
            .zip(parts.par_iter())
            .zip(lz.par_iter())
            .map(|((sg, p), &m)| {
                m != 0
                    && p.len() > options.chunk_size
                    && longer_chunks_pay(&sg.kind, p, m, options.chunk_size, big, &options.tuning)
            })
            .collect();
        if long.iter().any(|&l| l) {
            let size = |i: usize| if long[i] { big } else { options.chunk_size };
            (segments, jobs) = plan(parts, layout, base, &size)?;
            apply(&mut segments);
        }
    }
    let total_len: u64 = segments.iter().map(|s| s.len).sum();
    // The base slice each job is coded against, if any.
    let base_of = |j: &Job| -> Option<&[u8]> {
        let (b, s) = (base?, &segments[j.segment]);
        let off = s.base_offset? as usize;
        Some(&b.bytes[off + j.start..off + j.end])
    };
    // What each job of a derived tensor is a residue against.
    let source_of = |j: &Job| -> Option<Residue<'_>> {
        let s = &segments[j.segment];
        Residue::of(&s.kind, s.derived.as_ref()?, j.start, j.end, &all_parts)
    };

    out.write_all(&[0u8; HEADER_LEN])?;
    let mut hasher = Xxh3_128::new();
    let mut chunks: Vec<ChunkEntry> = Vec::with_capacity(jobs.len());
    let mut payload_len = 0u64;
    // The header flags the chunks' codecs need (FORMAT.md, "Header").
    let mut flags = 0u16;
    let groups: Vec<&[Job]> = batches(jobs.iter().map(|j| (j.end - j.start) as u64))
        .into_iter()
        .map(|r| &jobs[r])
        .collect();
    let encode_group = |group: &[Job], bufs: &mut Vec<EncodedChunk>| {
        bufs.resize_with(group.len(), Default::default);
        bufs.par_iter_mut().zip(group).for_each(|(buf, j)| {
            let data = &parts[j.segment][j.start..j.end];
            encode_chunk(
                &segments[j.segment].kind,
                data,
                base_of(j),
                source_of(j),
                lz[j.segment],
                &options.tuning,
                buf,
            )
        });
    };
    // Output buffers of the batch being written and of the one being coded,
    // reused from batch to batch.
    let (mut cur, mut next) = (Vec::new(), Vec::new());
    if let Some(first) = groups.first() {
        encode_group(first, &mut cur);
    }
    let mut done = 0u64;
    for (g, group) in groups.iter().enumerate() {
        // Written (and the input hashed) first: on one thread, the batch's
        // input is still in cache.
        let (written, ()) = rayon::join(
            || -> Result<()> {
                for (job, enc) in group.iter().zip(&cur) {
                    hasher.update(&parts[job.segment][job.start..job.end]);
                    out.write_all(&enc.bytes)?;
                    chunks.push(ChunkEntry {
                        raw_len: (job.end - job.start) as u32,
                        transform: enc.transform,
                        checksum: enc.checksum,
                        planes: enc.planes.clone(),
                        stored_offset: HEADER_LEN as u64 + payload_len,
                        raw_offset: segments[job.segment].offset + job.start as u64,
                        segment: job.segment,
                    });
                    payload_len += enc.bytes.len() as u64;
                    flags |= enc.flags;
                    done += (job.end - job.start) as u64;
                }
                Ok(())
            },
            || {
                if let Some(following) = groups.get(g + 1) {
                    encode_group(following, &mut next);
                }
            },
        );
        written?;
        std::mem::swap(&mut cur, &mut next);
        if !progress(done) {
            return Err(Error::Cancelled);
        }
    }
    // Jobs tile the segments (only empty segments have none), so the
    // batches hashed above covered all of the input.
    debug_assert_eq!(done, total_len);

    // A delta whose every matched tensor became derived needs no base: it
    // records none (a version 1 container), so decoding it does not need
    // the base decoded first.
    let base = base.filter(|_| !base_only_derived);
    let index = Index {
        base: base.map(|b| BaseRef {
            len: b.bytes.len() as u64,
            hash: crate::hash::xxh3_128(b.bytes),
        }),
        removed: base.map(|b| b.removed.clone()).unwrap_or_default(),
        source_files: external.files,
        source_tensors: external.tensors,
        segments,
        chunks,
    };
    for name in &index.removed {
        if name.len() > u16::MAX as usize {
            return Err(Error::InvalidInput(format!(
                "removed tensor name of {} bytes is longer than 65535",
                name.len()
            )));
        }
    }
    let index_bytes = index.to_bytes();
    out.write_all(&index_bytes)?;
    if index.segments.iter().any(|s| s.derived.is_some()) {
        flags |= crate::format::FLAG_DERIVED;
    }
    if !index.source_files.is_empty() {
        flags |= crate::format::FLAG_SOURCES;
    }
    let header = Header {
        version: index.version(),
        flags,
        original_len: total_len,
        original_hash: hasher.digest128(),
        payload_len,
        index_len: index_bytes.len() as u64,
    };
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header.to_bytes())?;
    out.seek(SeekFrom::End(0))?;
    out.flush()?;
    Ok(CompressSummary {
        original_len: total_len,
        original_hash: header.original_hash,
        base_hash: index.base.map(|b| b.hash),
        compressed_len: HEADER_LEN as u64 + payload_len + index_bytes.len() as u64,
        chunks: index.chunks.len(),
        sources: external.used,
    })
}

/// The tensors of other files that a container's derived tensors use.
#[derive(Default)]
struct External<'a> {
    /// The source files used, as recorded.
    files: Vec<crate::format::SourceFile>,
    /// Their tensors used, as recorded (piece source `segments + k`).
    tensors: Vec<crate::format::SourceTensor>,
    /// Each tensor's bytes, as `tensors`.
    parts: Vec<&'a [u8]>,
    /// Indices of the used files among the sources given.
    used: Vec<usize>,
}

/// Runs [`crate::derive::find_among`] over the tensors of `sources` and
/// then those of the file, and keeps what the file's tensors take from
/// the sources: the files and tensors used (in order), with the pieces'
/// sources renumbered (the file's segments first, then the tensors used).
fn derive_with_sources<'a>(
    parts: &[&[u8]],
    layout: &[SegmentSpec],
    sources: &[SourceInput<'a>],
) -> Result<(Vec<Option<crate::derive::Derivation>>, External<'a>)> {
    if sources.is_empty() {
        return Ok((crate::derive::find(parts, layout), External::default()));
    }
    // Each source tensor: (its file, its offset in the file, its part).
    let mut at: Vec<(usize, u64, usize)> = Vec::new();
    let mut all_parts: Vec<&[u8]> = Vec::new();
    let mut all_layout: Vec<SegmentSpec> = Vec::new();
    for (f, s) in sources.iter().enumerate() {
        if s.parts.len() != s.layout.len()
            || s.parts
                .iter()
                .zip(&s.layout)
                .any(|(p, l)| p.len() as u64 != l.len)
        {
            return Err(Error::InvalidInput(format!(
                "source file {}: {} parts for a layout of {} segments, or a part of another length",
                crate::error::quote_name(&s.name),
                s.parts.len(),
                s.layout.len()
            )));
        }
        if s.name.len() > u16::MAX as usize {
            return Err(Error::InvalidInput(format!(
                "source file {}: its name is longer than 65535 bytes",
                crate::error::quote_name(&s.name)
            )));
        }
        let mut off = 0u64;
        for (k, (p, l)) in s.parts.iter().zip(&s.layout).enumerate() {
            // Only tensors may be sources.
            if matches!(l.kind, SegmentKind::Tensor { .. }) {
                at.push((f, off, k));
                all_parts.push(p);
                all_layout.push(l.clone());
            }
            off += l.len;
        }
    }
    let e = at.len();
    all_parts.extend_from_slice(parts);
    all_layout.extend_from_slice(layout);
    let found = crate::derive::find_among(&all_parts, &all_layout, e);
    // Source tensors used, in order of first use -> their number.
    let mut number: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut external = External::default();
    let mut file_number: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut derived = Vec::with_capacity(layout.len());
    for d in found.into_iter().skip(e) {
        derived.push(d.map(|mut d| {
            for p in &mut d.pieces {
                p.source = match p.source.checked_sub(e) {
                    Some(own) => own,
                    None => {
                        let t = p.source;
                        let n = *number.entry(t).or_insert_with(|| {
                            let (f, offset, k) = at[t];
                            let nf = *file_number.entry(f).or_insert_with(|| {
                                external.used.push(f);
                                external.used.len() - 1
                            });
                            external.tensors.push(crate::format::SourceTensor {
                                file: nf,
                                segment: Segment {
                                    kind: all_layout[t].kind.clone(),
                                    base_offset: None,
                                    derived: None,
                                    offset,
                                    len: all_layout[t].len,
                                    first_chunk: 0,
                                    chunk_count: 0,
                                },
                            });
                            external.parts.push(sources[f].parts[k]);
                            external.tensors.len() - 1
                        });
                        layout.len() + n
                    }
                };
            }
            d
        }));
    }
    // The files in the order given (decoders take them so), their tensors
    // renumbered to match.
    let mut order: Vec<usize> = (0..external.used.len()).collect();
    order.sort_by_key(|&k| external.used[k]);
    let mut renumber = vec![0usize; order.len()];
    for (new, &old) in order.iter().enumerate() {
        renumber[old] = new;
    }
    for t in &mut external.tensors {
        t.file = renumber[t.file];
    }
    external.used.sort_unstable();
    external.files = external
        .used
        .iter()
        .map(|&f| {
            let s = &sources[f];
            let mut h = Xxh3_128::new();
            for p in &s.parts {
                h.update(p);
            }
            crate::format::SourceFile {
                name: s.name.clone(),
                len: s.parts.iter().map(|p| p.len() as u64).sum(),
                hash: h.digest128(),
            }
        })
        .collect();
    Ok((derived, external))
}

/// Bytes a batch aims at per thread: four default chunks.
const BATCH_BYTES_PER_THREAD: u64 = 4 * DEFAULT_CHUNK_SIZE as u64;
/// Most bytes in a batch, whatever the thread count (one chunk at least).
const BATCH_BYTES_MAX: u64 = 256 << 20;

/// Cuts a run of chunks (their lengths, in order) into the batches both
/// directions work in: up to four chunks a thread, but no more than
/// [`BATCH_BYTES_PER_THREAD`] a thread once every thread has a chunk, and
/// never over [`BATCH_BYTES_MAX`] (after its first chunk). Memory then
/// stays near two batches whatever the chunk size: longer chunks (4 MiB for
/// tensors with repeated strings, the most a reader accepts) make
/// batches of fewer chunks.
pub(crate) fn batches(lens: impl Iterator<Item = u64>) -> Vec<std::ops::Range<usize>> {
    let threads = rayon::current_num_threads().max(1);
    let mut out = Vec::new();
    let (mut start, mut count, mut bytes) = (0usize, 0usize, 0u64);
    for (i, len) in lens.enumerate() {
        let full = count >= 4 * threads
            || (count >= threads && bytes >= BATCH_BYTES_PER_THREAD * threads as u64)
            || (count >= 1 && bytes >= BATCH_BYTES_MAX);
        if full {
            out.push(start..i);
            (start, count, bytes) = (i, 0, 0);
        }
        count += 1;
        bytes += len;
    }
    if count > 0 {
        out.push(start..start + count);
    }
    out
}

/// Checks `parts` against `layout` (and `base`), and cuts the segments into chunk jobs.
/// `chunk_size(i)`: the chunk size for segment `i`.
fn plan(
    parts: &[&[u8]],
    layout: &[SegmentSpec],
    base: Option<&DeltaBase<'_>>,
    chunk_size: &dyn Fn(usize) -> usize,
) -> Result<(Vec<Segment>, Vec<Job>)> {
    if parts.len() != layout.len() {
        return Err(Error::InvalidInput(format!(
            "{} parts for a layout of {} segments",
            parts.len(),
            layout.len()
        )));
    }
    if let Some(b) = base
        && b.offsets.len() != layout.len()
    {
        return Err(Error::InvalidInput(format!(
            "delta base has offsets for {} segments, the layout has {}",
            b.offsets.len(),
            layout.len()
        )));
    }
    let mut segments = Vec::with_capacity(layout.len());
    let mut jobs = Vec::new();
    let mut offset = 0u64;
    for (i, (spec, part)) in layout.iter().zip(parts).enumerate() {
        if part.len() as u64 != spec.len {
            return Err(Error::InvalidInput(format!(
                "segment {i} is described as {} bytes but {} were given",
                spec.len,
                part.len()
            )));
        }
        let seg_len = part.len();
        let base_offset = base.and_then(|b| b.offsets[i]);
        if let Some(off) = base_offset {
            let blen = base.map_or(0, |b| b.bytes.len() as u64);
            if !matches!(spec.kind, SegmentKind::Tensor { .. })
                || off.checked_add(spec.len).is_none_or(|e| e > blen)
            {
                return Err(Error::InvalidInput(format!(
                    "segment {i}: base range {off}+{} is not a tensor inside the {blen}-byte base",
                    spec.len
                )));
            }
        }
        let width = spec.kind.width();
        if let SegmentKind::Tensor { name, dtype, shape } = &spec.kind {
            let elems = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            if elems.and_then(|e| e.checked_mul(width as u64)) != Some(spec.len) {
                return Err(Error::InvalidInput(format!(
                    "tensor {}: shape {shape:?} of {dtype} does not match its {} bytes",
                    crate::error::quote_name(name),
                    spec.len
                )));
            }
            if name.len() > u16::MAX as usize {
                return Err(Error::InvalidInput(format!(
                    "tensor {}: its name is longer than the 65535 bytes the format allows",
                    crate::error::quote_name(name)
                )));
            }
            if shape.len() > crate::format::MAX_RANK {
                return Err(Error::InvalidInput(format!(
                    "tensor {}: rank {} exceeds {}",
                    crate::error::quote_name(name),
                    shape.len(),
                    crate::format::MAX_RANK
                )));
            }
        }
        let step = (chunk_size(i) / width).max(1) * width;
        let first_chunk = jobs.len();
        let mut start = 0;
        while start < seg_len {
            let end = (start + step).min(seg_len);
            jobs.push(Job {
                segment: i,
                start,
                end,
            });
            start = end;
        }
        segments.push(Segment {
            kind: spec.kind.clone(),
            base_offset,
            derived: None,
            offset,
            len: spec.len,
            first_chunk,
            chunk_count: jobs.len() - first_chunk,
        });
        offset += spec.len;
    }
    if segments.len() > u32::MAX as usize || jobs.len() > u32::MAX as usize {
        return Err(Error::InvalidInput("too many segments or chunks".into()));
    }
    Ok((segments, jobs))
}

thread_local! {
    /// Per-thread plane buffers, reused from chunk to chunk.
    static PLANES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Per-thread buffer for a chunk XORed with its base.
    static DELTA: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One coded chunk: its stored bytes, their checksum, and its planes.
#[derive(Default)]
struct EncodedChunk {
    bytes: Vec<u8>,
    transform: Transform,
    checksum: u64,
    planes: Vec<PlaneEntry>,
    /// The header flags its planes need.
    flags: u16,
}

/// Whether a tensor (`data`, planes `lz` to have zstd tried) codes smaller
/// in chunks of `big` bytes than of `small`, judged on its middle `big`
/// bytes coded both ways.
fn longer_chunks_pay(
    kind: &SegmentKind,
    data: &[u8],
    lz: u64,
    small: usize,
    big: usize,
    tuning: &Tuning,
) -> bool {
    let width = kind.width();
    let len = (big.min(data.len()) / width) * width;
    let start = ((data.len() - len) / 2 / width) * width;
    let sample = &data[start..start + len];
    let mut enc = EncodedChunk::default();
    encode_chunk(kind, sample, None, None, lz, tuning, &mut enc);
    let long = enc.bytes.len();
    let step = (small / width).max(1) * width;
    let short: usize = sample
        .chunks(step)
        .map(|c| {
            encode_chunk(kind, c, None, None, lz, tuning, &mut enc);
            enc.bytes.len()
        })
        .sum();
    long < short
}

/// What a chunk of a derived tensor is XORed with: the op, and the source
/// bytes for each run of its elements (byte offset and length in the
/// chunk, source bytes).
struct Residue<'a> {
    op: crate::derive::DeriveOp,
    spans: Vec<(usize, usize, &'a [u8])>,
}

impl<'a> Residue<'a> {
    /// The residue of bytes `start..end` of a tensor of `kind` derived by
    /// `d`, whose pieces name `parts` (the segments, then the source
    /// tensors); `None` for bytes.
    fn of(
        kind: &SegmentKind,
        d: &crate::derive::Derivation,
        start: usize,
        end: usize,
        parts: &[&'a [u8]],
    ) -> Option<Residue<'a>> {
        let SegmentKind::Tensor { dtype, .. } = kind else {
            return None;
        };
        let (w, sw) = (dtype.width(), d.op.source_width(*dtype));
        // derive::find checked that the pieces hold these elements.
        let spans = d
            .spans((start / w) as u64, (end / w) as u64)
            .into_iter()
            .map(|sp| {
                let first = sp.source_elem as usize * sw;
                let bytes = &parts[sp.source][first..first + sp.elems as usize * sw];
                (sp.at as usize * w, sp.elems as usize * w, bytes)
            })
            .collect();
        Some(Residue { op: d.op, spans })
    }
}

/// Whether a tensor (`data`, of `kind`) derived by `d` codes no larger as
/// its residue than as its XOR with `base`, judged on its middle chunk
/// coded both ways.
fn derived_pays(
    kind: &SegmentKind,
    data: &[u8],
    base: &[u8],
    d: &crate::derive::Derivation,
    parts: &[&[u8]],
    options: &CompressOptions,
) -> bool {
    let width = kind.width();
    let len = (options.chunk_size.min(data.len()) / width) * width;
    let start = ((data.len() - len) / 2 / width) * width;
    let Some(residue) = Residue::of(kind, d, start, start + len, parts) else {
        return true;
    };
    let sample = &data[start..start + len];
    let mut enc = EncodedChunk::default();
    encode_chunk(
        kind,
        sample,
        None,
        Some(residue),
        0,
        &options.tuning,
        &mut enc,
    );
    let derived = enc.bytes.len();
    // Constant planes (an exact rounding or copy): no delta is smaller.
    if derived <= 4 * width {
        return true;
    }
    encode_chunk(
        kind,
        sample,
        Some(&base[start..start + len]),
        None,
        0,
        &options.tuning,
        &mut enc,
    );
    derived <= enc.bytes.len()
}

/// Codes one chunk into `enc` (its buffers reused): XORs it with `base`
/// if given, or with its source transformed by the op for a derived
/// tensor (the residue), splits it into planes, codes each plane, and
/// checksums the result. A delta chunk in which few elements changed is
/// coded sparse: a map of the changed elements, then the planes of those
/// elements alone.
fn encode_chunk(
    kind: &SegmentKind,
    data: &[u8],
    base: Option<&[u8]>,
    source: Option<Residue<'_>>,
    lz: u64,
    tuning: &Tuning,
    enc: &mut EncodedChunk,
) {
    enc.bytes.clear();
    enc.planes.clear();
    enc.flags = 0;
    match base {
        None if source.is_some() => DELTA.with_borrow_mut(|x| {
            let r = source.expect("checked");
            x.clear();
            x.extend_from_slice(data);
            for (at, len, src) in r.spans {
                r.op.xor_into(src, &mut x[at..at + len]);
            }
            enc.transform = Transform::None;
            encode_planes(kind, x, lz, tuning, false, enc);
        }),
        None => {
            enc.transform = Transform::None;
            encode_planes(kind, data, lz, tuning, false, enc);
        }
        Some(base) => DELTA.with_borrow_mut(|x| {
            SPARSE.with_borrow_mut(|(bits, changed)| {
                let width = kind.width();
                let n = data.len() / width;
                x.resize(data.len(), 0);
                bits.resize(n.div_ceil(8), 0);
                // The XOR and the map of the changed elements in one pass.
                let m = crate::kernels::xor_bitmap(width, data, base, x, bits)
                    .expect("a chunk holds whole elements, its base as many bytes");
                let sparse = matches!(kind, SegmentKind::Tensor { .. })
                    && m as f64 <= n as f64 * tuning.sparse_max;
                if sparse {
                    enc.transform = Transform::XorBitmap;
                    enc.flags |= crate::format::FLAG_BITMAP;
                    changed.resize(m * width, 0);
                    let done = crate::kernels::compact(width, x, bits, changed);
                    assert!(done, "the map counted m elements");
                    // The map has a symbol for 8 elements, so the slower
                    // coders cost little a chunk: the smallest is taken.
                    let map_tuning = Tuning {
                        rans32_min_gain: 0.0,
                        runs_slack: 0.0,
                        runs_slack_bytes: 0,
                        ..*tuning
                    };
                    let start = enc.bytes.len();
                    push_plane(bits, PlaneKind::Tensor, None, &map_tuning, enc);
                    if tuning.runs_maps {
                        runs_map_if_smaller(bits, n, start, tuning, enc);
                    }
                    encode_planes(kind, changed, lz, tuning, true, enc);
                } else {
                    enc.transform = Transform::Xor;
                    encode_planes(kind, x, lz, tuning, true, enc);
                }
            })
        }),
    }
    enc.checksum = crate::hash::xxh3_64(&enc.bytes);
}

thread_local! {
    /// Per-thread buffers for a sparse chunk's map (a bit an element) and
    /// changed elements.
    static SPARSE: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Replaces the bitmap map just coded (from `start` in `enc`) by the runs
/// of the unchanged elements (transform 2), if that is smaller.
fn runs_map_if_smaller(
    bits: &[u8],
    n: usize,
    start: usize,
    tuning: &Tuning,
    enc: &mut EncodedChunk,
) {
    let positions: Vec<u32> = crate::kernels::set_bits(bits).map(|e| e as u32).collect();
    let mut runs = Vec::new();
    let codec = crate::codec::encode_positions(n, &positions, tuning, &mut runs);
    if runs.len() < enc.bytes.len() - start {
        enc.bytes.truncate(start);
        enc.bytes.extend_from_slice(&runs);
        enc.flags |= crate::codec::flags_needed(codec, &runs);
        *enc.planes.last_mut().expect("the map's entry") = PlaneEntry {
            codec,
            stored_len: runs.len() as u32,
        };
        enc.transform = Transform::XorSparse;
    }
}

/// Codes one plane with `tuning`'s choice of codec (split by `lead`, its
/// plane 0 and split key, if given) and appends it to `enc`.
fn push_plane(
    plane: &[u8],
    pk: PlaneKind,
    lead: Option<(&[u8], u8)>,
    tuning: &Tuning,
    enc: &mut EncodedChunk,
) {
    let out = &mut enc.bytes;
    let start = out.len();
    let codec = match lead {
        Some((lead, key)) => encode_plane_led(plane, lead, key, pk, tuning, out),
        None => encode_plane_with(plane, pk, tuning, out),
    };
    enc.flags |= crate::codec::flags_needed(codec, &out[start..]);
    enc.planes.push(PlaneEntry {
        codec,
        stored_len: (out.len() - start) as u32,
    });
}

/// Appends the planes of `data` to `enc`. `lz`: bit *k* set if plane *k*
/// is to have zstd tried (see [`lz_planes`]). `delta`: the data is an XOR
/// delta, whose planes 1.. are split by plane 0 where it pays (0.5% to
/// 3.9% of the delta's size on the generated series, docs/BENCHMARKS.md);
/// on plain files it gained under 0.3% (AdamW state) and made compressing
/// MiniLM 15-19% slower in an alternating run.
fn encode_planes(
    kind: &SegmentKind,
    data: &[u8],
    lz: u64,
    tuning: &Tuning,
    delta: bool,
    enc: &mut EncodedChunk,
) {
    let kind_of = |k: usize| {
        if lz >> k & 1 == 1 {
            PlaneKind::TensorLz
        } else {
            PlaneKind::Tensor
        }
    };
    match kind {
        SegmentKind::Bytes => push_plane(data, PlaneKind::Generic, None, tuning, enc),
        SegmentKind::Tensor { dtype, .. } if dtype.width() == 1 => {
            push_plane(data, kind_of(0), None, tuning, enc)
        }
        SegmentKind::Tensor { dtype, .. } => PLANES.with_borrow_mut(|planes| {
            planes.resize_with(dtype.width(), Vec::new);
            planes::split(*dtype, data, planes);
            let (lead, rest) = planes.split_first().expect("width >= 2");
            push_plane(lead, kind_of(0), None, tuning, enc);
            let led = delta.then(|| (&lead[..], split_key(lead)));
            for (k, p) in rest.iter().enumerate() {
                push_plane(p, kind_of(k + 1), led, tuning, enc);
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_threads(n: usize, lens: &[u64]) -> Vec<std::ops::Range<usize>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap();
        pool.install(|| batches(lens.iter().copied()))
    }

    #[test]
    fn batches_hold_four_chunks_a_thread_and_a_bounded_size() {
        let k = 256 << 10;
        // Default chunks: four a thread.
        assert_eq!(on_threads(1, &[k; 10]), [0..4, 4..8, 8..10]);
        assert_eq!(on_threads(2, &[k; 10]), [0..8, 8..10]);
        // 4 MiB chunks: one a thread (1 MiB a thread is reached at once).
        assert_eq!(on_threads(2, &[4 << 20; 5]), [0..2, 2..4, 4..5]);
        // Mixed: small chunks fill up until the bytes say stop.
        assert_eq!(on_threads(1, &[k, 4 << 20, k, k]), [0..2, 2..4]);
        // Huge chunks: one a batch past the cap, whatever the threads.
        assert_eq!(on_threads(4, &[300 << 20; 3]), [0..1, 1..2, 2..3]);
        assert!(on_threads(3, &[]).is_empty());
    }
}
