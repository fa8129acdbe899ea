//! The compression pipeline: cut segments into chunks, code the chunks in
//! parallel, write them in order.

use std::cell::RefCell;
use std::io::{Seek, SeekFrom, Write};

use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::codec::{PlaneKind, encode_plane};
use crate::error::{Error, Result};
use crate::format::{
    ChunkEntry, HEADER_LEN, Header, Index, MAX_CHUNK_LEN, PlaneEntry, Segment, SegmentKind,
};
use crate::planes;

/// Default original bytes per chunk: 256 KiB. Measured on MiniLM-L6
/// (docs/BENCHMARKS.md, "Chunk size"): the ratio is best at 256 KiB (a code
/// table per chunk follows local statistics; smaller chunks pay for more
/// tables), speed is the same from 256 KiB to 16 MiB within the noise of
/// the machine, and small chunks give the threads more pieces to share.
pub const DEFAULT_CHUNK_SIZE: usize = 256 << 10;

/// Options for [`compress`].
#[derive(Debug, Clone)]
pub struct CompressOptions {
    chunk_size: usize,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl CompressOptions {
    /// Original bytes per chunk (rounded down to whole elements, at least one).
    /// Must be between 1 and 256 MiB.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    pub fn get_chunk_size(&self) -> usize {
        self.chunk_size
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
    pub compressed_len: u64,
    pub chunks: usize,
}

/// Reports progress (bytes of input done so far) and asks whether to go
/// on: returning `false` cancels the work with [`Error::Cancelled`].
pub type Progress<'a> = &'a mut dyn FnMut(u64) -> bool;

struct Job {
    segment: usize,
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
    if options.chunk_size == 0 || options.chunk_size > MAX_CHUNK_LEN as usize {
        return Err(Error::InvalidInput(format!(
            "chunk size {} is outside 1..={MAX_CHUNK_LEN}",
            options.chunk_size
        )));
    }
    let (segments, jobs) = plan(input.len(), layout, options.chunk_size)?;

    out.write_all(&[0u8; HEADER_LEN])?;
    let mut hasher = Xxh3::new();
    let mut chunks: Vec<ChunkEntry> = Vec::with_capacity(jobs.len());
    let mut payload_len = 0u64;
    let batch = rayon::current_num_threads().max(1) * 4;
    let groups: Vec<&[Job]> = jobs.chunks(batch).collect();
    let encode_group = |group: &[Job], bufs: &mut Vec<EncodedChunk>| {
        bufs.resize_with(group.len(), Default::default);
        bufs.par_iter_mut().zip(group).for_each(|(buf, j)| {
            encode_chunk(&segments[j.segment].kind, &input[j.start..j.end], buf)
        });
    };
    // Output buffers of the batch being written and of the one being coded,
    // reused from batch to batch.
    let (mut cur, mut next) = (Vec::new(), Vec::new());
    if let Some(first) = groups.first() {
        encode_group(first, &mut cur);
    }
    for (g, group) in groups.iter().enumerate() {
        let (start, end) = (group[0].start, group[group.len() - 1].end);
        let ((), written) = rayon::join(
            || {
                if let Some(following) = groups.get(g + 1) {
                    encode_group(following, &mut next);
                }
            },
            || -> Result<()> {
                hasher.update(&input[start..end]);
                for (job, enc) in group.iter().zip(&cur) {
                    out.write_all(&enc.bytes)?;
                    chunks.push(ChunkEntry {
                        raw_len: (job.end - job.start) as u32,
                        checksum: enc.checksum,
                        planes: enc.planes.clone(),
                        stored_offset: HEADER_LEN as u64 + payload_len,
                        raw_offset: job.start as u64,
                        segment: job.segment,
                    });
                    payload_len += enc.bytes.len() as u64;
                }
                Ok(())
            },
        );
        written?;
        std::mem::swap(&mut cur, &mut next);
        if !progress(end as u64) {
            return Err(Error::Cancelled);
        }
    }
    // Jobs tile the input (only empty segments have none), so the batches
    // hashed above covered all of it.
    debug_assert_eq!(groups.last().map_or(0, |g| g[g.len() - 1].end), input.len());

    let index = Index { segments, chunks };
    let index_bytes = index.to_bytes();
    out.write_all(&index_bytes)?;
    let header = Header {
        original_len: input.len() as u64,
        original_hash: hasher.digest128(),
        payload_len,
        index_len: index_bytes.len() as u64,
    };
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header.to_bytes())?;
    out.seek(SeekFrom::End(0))?;
    out.flush()?;
    Ok(CompressSummary {
        original_len: input.len() as u64,
        compressed_len: HEADER_LEN as u64 + payload_len + index_bytes.len() as u64,
        chunks: index.chunks.len(),
    })
}

/// Checks that `layout` tiles `len` bytes and cuts it into chunk jobs.
fn plan(len: usize, layout: &[SegmentSpec], chunk_size: usize) -> Result<(Vec<Segment>, Vec<Job>)> {
    let mut segments = Vec::with_capacity(layout.len());
    let mut jobs = Vec::new();
    let mut offset = 0usize;
    for (i, spec) in layout.iter().enumerate() {
        let seg_len = usize::try_from(spec.len)
            .ok()
            .filter(|l| offset.checked_add(*l).is_some_and(|e| e <= len))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "segment {i} ({} bytes at offset {offset}) runs past the end of the {len}-byte input",
                    spec.len
                ))
            })?;
        let width = spec.kind.width();
        if let SegmentKind::Tensor { name, dtype, shape } = &spec.kind {
            let elems = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            if elems.and_then(|e| e.checked_mul(width as u64)) != Some(spec.len) {
                return Err(Error::InvalidInput(format!(
                    "tensor {name:?}: shape {shape:?} of {dtype} does not match its {} bytes",
                    spec.len
                )));
            }
            if name.len() > u16::MAX as usize || shape.len() > crate::format::MAX_RANK {
                return Err(Error::InvalidInput(format!(
                    "tensor {name:?}: name longer than 65535 bytes or rank above {}",
                    crate::format::MAX_RANK
                )));
            }
        }
        let step = (chunk_size / width).max(1) * width;
        let first_chunk = jobs.len();
        let mut start = offset;
        while start < offset + seg_len {
            let end = (start + step).min(offset + seg_len);
            jobs.push(Job {
                segment: i,
                start,
                end,
            });
            start = end;
        }
        segments.push(Segment {
            kind: spec.kind.clone(),
            offset: offset as u64,
            len: spec.len,
            first_chunk,
            chunk_count: jobs.len() - first_chunk,
        });
        offset += seg_len;
    }
    if offset != len {
        return Err(Error::InvalidInput(format!(
            "layout covers {offset} bytes of a {len}-byte input"
        )));
    }
    if segments.len() > u32::MAX as usize || jobs.len() > u32::MAX as usize {
        return Err(Error::InvalidInput("too many segments or chunks".into()));
    }
    Ok((segments, jobs))
}

thread_local! {
    /// Per-thread plane buffers, reused from chunk to chunk.
    static PLANES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// One coded chunk: its stored bytes, their checksum, and its planes.
#[derive(Default)]
struct EncodedChunk {
    bytes: Vec<u8>,
    checksum: u64,
    planes: Vec<PlaneEntry>,
}

/// Codes one chunk into `enc` (its buffers reused): splits the chunk into
/// planes, codes each plane, and checksums the result.
fn encode_chunk(kind: &SegmentKind, data: &[u8], enc: &mut EncodedChunk) {
    let EncodedChunk {
        bytes: out,
        checksum,
        planes: entries,
    } = enc;
    out.clear();
    entries.clear();
    let mut push = |plane: &[u8], pk: PlaneKind, out: &mut Vec<u8>| {
        let start = out.len();
        let codec = encode_plane(plane, pk, out);
        entries.push(PlaneEntry {
            codec,
            stored_len: (out.len() - start) as u32,
        });
    };
    match kind {
        SegmentKind::Bytes => push(data, PlaneKind::Generic, out),
        SegmentKind::Tensor { dtype, .. } if dtype.width() == 1 => {
            push(data, PlaneKind::Tensor, out)
        }
        SegmentKind::Tensor { dtype, .. } => PLANES.with_borrow_mut(|planes| {
            planes.resize_with(dtype.width(), Vec::new);
            planes::split(*dtype, data, planes);
            for p in planes.iter() {
                push(p, PlaneKind::Tensor, out);
            }
        }),
    }
    *checksum = xxhash_rust::xxh3::xxh3_64(out);
}
