//! Reading a container: open, inspect, decode chunks, tensors or the whole file.

use std::io::Write;
use std::ops::Range;

use crate::hash::{Xxh3_128, xxh3_64};
use rayon::prelude::*;

use crate::codec::{PlaneCodec, decode_plane, decode_split};
use crate::compress::Progress;
use crate::error::{DecodeError, Error, Region, Result};
use crate::format::{
    BaseRef, ChunkEntry, HEADER_LEN, Header, Index, Segment, SegmentKind, Transform,
};
use crate::planes;

thread_local! {
    /// Per-thread buffers for decoded planes, reused from chunk to chunk.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread buffer for a source chunk of a derived tensor. A source
    /// is never derived itself (Index::parse checked), so decoding it never
    /// needs this buffer again while it is borrowed.
    static SOURCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An error met while decoding a source chunk of derived chunk `i`: kept
/// as it is when it names the damage (a checksum or plane of the source's
/// chunk), with the derived tensor named in front otherwise.
fn source_error(i: usize, seg: &Segment, e: Error) -> Error {
    match e {
        Error::ChunkChecksum { .. }
        | Error::PlaneDecode { .. }
        | Error::Cancelled
        | Error::Base(_) => e,
        other => Error::corrupt(
            Region::Payload,
            format!(
                "chunk {i} ({}, derived): its source could not be decoded: {other}",
                seg.describe()
            ),
        ),
    }
}

/// An opened container over its bytes (typically a memory map), or over
/// its header and index alone, for a file read in ranges (see
/// [`crate::ranged`]).
///
/// Opening checks the header and the index completely; chunk payloads are
/// checked (checksum, then decode) as they are read.
/// Cloning is cheap: the index is shared, the bytes borrowed.
#[derive(Debug, Clone)]
pub struct Container<'a> {
    pub(crate) data: Stored<'a>,
    /// The whole file's length (`data` may hold only part of it).
    pub(crate) file_len: u64,
    pub(crate) header: Header,
    /// Shared by the views that [`crate::ranged`] opens over fetched parts.
    pub(crate) index: std::sync::Arc<Index>,
    /// The base's bytes, for a delta container once [`Container::with_base`] gave them.
    pub(crate) base: Option<&'a [u8]>,
    /// The source files' bytes, one per [`Index::source_files`], once
    /// [`Container::with_sources_hashed`] gave them; empty before.
    pub(crate) sources: Vec<&'a [u8]>,
}

impl<'a> Container<'a> {
    pub fn open(data: &'a [u8]) -> Result<Container<'a>> {
        let header = Header::parse(data)?;
        let index_start = HEADER_LEN as u64 + header.payload_len;
        // Header::parse checked that the header, payload and index tile the file.
        let index = Index::parse(&data[index_start as usize..], &header)?;
        Ok(Container {
            data: Stored::File(data),
            file_len: data.len() as u64,
            header,
            index: std::sync::Arc::new(index),
            base: None,
            sources: Vec::new(),
        })
    }

    /// The base this container is a delta against (version 2), if any.
    pub fn base_ref(&self) -> Option<BaseRef> {
        self.index.base
    }

    /// Names of base tensors the file no longer has (delta containers).
    pub fn removed(&self) -> &[String] {
        &self.index.removed
    }

    /// Gives a delta container its base: the original file it was coded
    /// against, checked by length and XXH3-128 before it is used.
    pub fn with_base(mut self, base: &'a [u8]) -> Result<Container<'a>> {
        let Some(want) = self.index.base else {
            return Err(Error::Base(
                "this container is not a delta: it needs no base".into(),
            ));
        };
        if base.len() as u64 != want.len {
            return Err(Error::Base(format!(
                "wrong base: the container was coded against a {}-byte file, the base given has {} bytes",
                want.len,
                base.len()
            )));
        }
        let found = crate::hash::xxh3_128(base);
        if found != want.hash {
            return Err(Error::Base(format!(
                "wrong base: the container was coded against a file with XXH3-128 {:032x}, the base given hashes to {found:032x}",
                want.hash
            )));
        }
        self.base = Some(base);
        Ok(self)
    }

    /// Gives a delta container its base, whose XXH3-128 the caller already
    /// knows (typically because it was just decoded from a container that
    /// checked it): the length and that hash are compared with the ones
    /// recorded, and the base is not hashed again. A false claim cannot
    /// pass silently: decoding still checks the result's own hash.
    pub fn with_base_hashed(mut self, base: &'a [u8], hash: u128) -> Result<Container<'a>> {
        let Some(want) = self.index.base else {
            return Err(Error::Base(
                "this container is not a delta: it needs no base".into(),
            ));
        };
        if base.len() as u64 != want.len || hash != want.hash {
            return Err(Error::Base(format!(
                "wrong base: the container was coded against a {}-byte file with XXH3-128 {:032x}, the base given is a {}-byte file with {hash:032x}",
                want.len,
                want.hash,
                base.len()
            )));
        }
        self.base = Some(base);
        Ok(self)
    }

    /// The other files this container's derived tensors take source
    /// elements from (FORMAT.md, "Sources in other files"); empty for most.
    pub fn source_files(&self) -> &[crate::format::SourceFile] {
        &self.index.source_files
    }

    /// The tensors of the source files that derived tensors name: piece
    /// source `segments().len() + k` is tensor `k` of this list.
    pub fn source_tensors(&self) -> &[crate::format::SourceTensor] {
        &self.index.source_tensors
    }

    /// Names a derived piece's source (its index, as in
    /// [`crate::derive::Piece::source`]): `tensor "w"`, or for a tensor of
    /// another file, `tensor "w" of "master.safetensors"`.
    pub fn describe_source(&self, source: usize) -> String {
        let segs = &self.index.segments;
        match source.checked_sub(segs.len()) {
            None => segs[source].describe(),
            Some(k) => match self.index.source_tensors.get(k) {
                Some(t) => format!(
                    "{} of {}",
                    t.segment.describe(),
                    crate::error::quote_name(&self.index.source_files[t.file].name)
                ),
                None => format!("source {source}"),
            },
        }
    }

    /// Gives the container its source files (one per
    /// [`Container::source_files`], in order), whose XXH3-128 the caller
    /// knows (typically because each was just decoded from a container
    /// that checked it): each length and hash is compared with the ones
    /// recorded before anything is used, and a mismatch names the file.
    pub fn with_sources_hashed(mut self, files: &[(&'a [u8], u128)]) -> Result<Container<'a>> {
        let want = &self.index.source_files;
        if files.len() != want.len() {
            return Err(Error::Source(format!(
                "the container takes source elements from {} other files ({}), {} were given",
                want.len(),
                want.iter()
                    .map(|f| crate::error::quote_name(&f.name))
                    .collect::<Vec<_>>()
                    .join(", "),
                files.len()
            )));
        }
        for (w, &(bytes, hash)) in want.iter().zip(files) {
            if bytes.len() as u64 != w.len || hash != w.hash {
                return Err(Error::Source(format!(
                    "wrong source file {}: the container was coded against a {}-byte file with XXH3-128 {:032x}, the one given is a {}-byte file with {hash:032x}",
                    crate::error::quote_name(&w.name),
                    w.len,
                    w.hash,
                    bytes.len()
                )));
            }
        }
        self.sources = files.iter().map(|&(b, _)| b).collect();
        Ok(self)
    }

    /// [`Container::with_sources_hashed`] for files whose hashes are not
    /// known: each is hashed first.
    pub fn with_sources(self, files: &[&'a [u8]]) -> Result<Container<'a>> {
        let hashed: Vec<(&'a [u8], u128)> = files
            .iter()
            .map(|&b| (b, crate::hash::xxh3_128(b)))
            .collect();
        self.with_sources_hashed(&hashed)
    }

    /// Whether decoding needs source files that have not been given.
    pub fn needs_sources(&self) -> bool {
        !self.index.source_files.is_empty() && self.sources.is_empty()
    }

    /// Whether decoding needs a base that has not been given.
    pub fn needs_base(&self) -> bool {
        self.index.base.is_some() && self.base.is_none()
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn segments(&self) -> &[Segment] {
        &self.index.segments
    }

    pub fn chunks(&self) -> &[ChunkEntry] {
        &self.index.chunks
    }

    /// Total size of the container in bytes.
    pub fn len(&self) -> u64 {
        self.file_len
    }

    pub fn is_empty(&self) -> bool {
        self.file_len == 0
    }

    /// The stored bytes of chunk `i`.
    fn stored(&self, i: usize, c: &ChunkEntry) -> Result<&'a [u8]> {
        let (start, end) = (c.stored_offset, c.stored_offset + c.stored_len());
        match self.data {
            // Index::parse checked that chunks tile the payload.
            Stored::File(data) => Ok(&data[start as usize..end as usize]),
            Stored::Parts(parts) => {
                // The last part that starts at or before the chunk.
                let k = parts.partition_point(|(at, _)| *at <= start);
                k.checked_sub(1)
                    .and_then(|k| {
                        let (at, bytes) = &parts[k];
                        bytes.get((start - at) as usize..(end - at) as usize)
                    })
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "chunk {i}'s stored bytes {start}..{end} were not read (only the header and index, or other chunks)"
                        ))
                    })
            }
        }
    }

    /// Decodes chunk `i` into `out` (resized to the chunk's original length),
    /// checking its checksum first.
    pub fn decode_chunk(&self, i: usize, out: &mut Vec<u8>) -> Result<()> {
        let c = self.chunk(i)?;
        // Every byte is overwritten; a reused buffer of the same size is not
        // cleared first.
        out.resize(c.raw_len as usize, 0);
        out.truncate(c.raw_len as usize);
        self.decode_chunk_into(i, out)
    }

    fn chunk(&self, i: usize) -> Result<&ChunkEntry> {
        self.index.chunks.get(i).ok_or_else(|| {
            Error::InvalidInput(format!(
                "chunk {i} does not exist (the container has {})",
                self.index.chunks.len()
            ))
        })
    }

    /// Decodes chunk `i` into `out`, which must be exactly the chunk's
    /// original length, checking its checksum first.
    pub fn decode_chunk_into(&self, i: usize, out: &mut [u8]) -> Result<()> {
        self.check_chunk(i)?;
        self.decode_chunk_trusting(i, out)
    }

    /// Checks chunk `i`'s stored bytes against its checksum.
    fn check_chunk(&self, i: usize) -> Result<()> {
        let c = self.chunk(i)?;
        let sum = xxh3_64(self.stored(i, c)?);
        if sum != c.checksum {
            return Err(Error::ChunkChecksum {
                chunk: i,
                segment: self.index.segments[c.segment].describe(),
                offset: c.stored_offset,
                expected: c.checksum,
                found: sum,
            });
        }
        Ok(())
    }

    /// The first chunk whose checksum fails, as an error, if any.
    fn find_bad_chunk(&self) -> Result<()> {
        (0..self.index.chunks.len())
            .into_par_iter()
            .try_for_each(|i| self.check_chunk(i))
    }

    /// After decoding the whole file failed with `err`: if a chunk's stored
    /// bytes are damaged, that is the error to report (it names the chunk);
    /// otherwise `err` stands.
    fn explain(&self, err: Error) -> Error {
        match err {
            Error::Cancelled | Error::Io(_) | Error::InvalidInput(_) | Error::Base(_) => err,
            _ => self.find_bad_chunk().err().unwrap_or(err),
        }
    }

    /// Decodes chunk `i` without checking its checksum first: for reading
    /// the whole file, whose hash is checked at the end (a damaged chunk is
    /// then found and named by [`Container::explain`]). The decoders never
    /// panic on damaged input.
    fn decode_chunk_trusting(&self, i: usize, out: &mut [u8]) -> Result<()> {
        let c = self.chunk(i)?;
        if out.len() != c.raw_len as usize {
            return Err(Error::InvalidInput(format!(
                "chunk {i} holds {} bytes, a buffer of {} was given",
                c.raw_len,
                out.len()
            )));
        }
        let seg = &self.index.segments[c.segment];
        let stored = self.stored(i, c)?;
        let plane_err = |plane: usize, offset: u64, reason: DecodeError| Error::PlaneDecode {
            chunk: i,
            segment: seg.describe(),
            plane,
            offset,
            reason: Box::new(reason),
        };
        let base = match c.transform {
            Transform::None => None,
            Transform::Xor | Transform::XorSparse | Transform::XorBitmap => {
                let (Some(base), Some(off)) = (self.base, seg.base_offset) else {
                    return Err(Error::Base(format!(
                        "chunk {i} ({}) is a delta against a base file of {} bytes that was not given",
                        seg.describe(),
                        self.index.base.map_or(0, |b| b.len)
                    )));
                };
                // Index::parse checked that the segment's range lies in the base.
                let start = (off + (c.raw_offset - seg.offset)) as usize;
                Some(&base[start..start + c.raw_len as usize])
            }
        };
        let width = seg.kind.width();
        match (c.transform, base) {
            (Transform::XorSparse, Some(base)) => {
                let n = c.raw_len as usize / width;
                let (map, rest) = stored.split_at(c.planes[0].stored_len as usize);
                let at = c.stored_offset + map.len() as u64;
                CHANGED.with_borrow_mut(|(positions, values)| {
                    changed_positions(c.planes[0].codec, map, n, positions)
                        .map_err(|d| plane_err(0, c.stored_offset, d))?;
                    values.resize(positions.len() * width, 0);
                    let shifted = |k: usize, off: u64, d: DecodeError| plane_err(k + 1, off, d);
                    decode_planes(&c.planes[1..], seg, rest, at, None, values, &shifted)?;
                    out.copy_from_slice(base);
                    xor_at(width, positions, values, out);
                    Ok(())
                })
            }
            (Transform::XorBitmap, Some(base)) => {
                let n = c.raw_len as usize / width;
                let (map, rest) = stored.split_at(c.planes[0].stored_len as usize);
                let at = c.stored_offset + map.len() as u64;
                // The bitmap in the map buffer, the values in the sparse
                // chunks' (this path needs no positions).
                MAP.with_borrow_mut(|bits| {
                    CHANGED.with_borrow_mut(|(_, values)| {
                        bits.resize(n.div_ceil(8), 0);
                        decode_plane(c.planes[0].codec, map, bits)
                            .map_err(|d| plane_err(0, c.stored_offset, d))?;
                        let m = crate::kernels::bitmap_count(bits, n).ok_or_else(|| {
                            plane_err(
                                0,
                                c.stored_offset,
                                DecodeError::BitmapPadding { elements: n },
                            )
                        })?;
                        values.resize(m * width, 0);
                        let shifted = |k: usize, off: u64, d: DecodeError| plane_err(k + 1, off, d);
                        decode_planes(&c.planes[1..], seg, rest, at, None, values, &shifted)?;
                        if !crate::kernels::expand_xor(width, bits, values, base, out) {
                            // Not reached: the lengths were set above.
                            let d = DecodeError::BitmapPadding { elements: n };
                            return Err(plane_err(0, c.stored_offset, d));
                        }
                        Ok(())
                    })
                })
            }
            (_, base) => {
                // The base is XORed in as the planes are merged; a derived
                // tensor's source after (XORs commute).
                decode_planes(
                    &c.planes,
                    seg,
                    stored,
                    c.stored_offset,
                    base,
                    out,
                    &plane_err,
                )?;
                if let Some(d) = &seg.derived {
                    self.apply_source(i, c, seg, d, out)?;
                }
                Ok(())
            }
        }
    }

    /// For chunk `i` of a derived tensor, whose residue is in `out`: XORs in
    /// its sources' elements transformed by the op, decoding only the
    /// source chunks that hold them, one at a time (each checked against
    /// its checksum first).
    fn apply_source(
        &self,
        i: usize,
        c: &ChunkEntry,
        seg: &Segment,
        d: &crate::derive::Derivation,
        out: &mut [u8],
    ) -> Result<()> {
        let SegmentKind::Tensor { dtype, .. } = &seg.kind else {
            unreachable!("only tensors are derived")
        };
        let (w, sw) = (dtype.width() as u64, d.op.source_width(*dtype) as u64);
        let e0 = (c.raw_offset - seg.offset) / w;
        for span in d.spans(e0, e0 + u64::from(c.raw_len) / w) {
            // Index::parse checked each source: a tensor that is not derived
            // (a delta's chunks need the base, which decoding them checks),
            // holding every element asked for, whose chunks tile it.
            let first = span.source_elem * sw;
            let end = first + span.elems * sw;
            let out = &mut out[(span.at * w) as usize..((span.at + span.elems) * w) as usize];
            let nseg = self.index.segments.len();
            if let Some(k) = span.source.checked_sub(nseg) {
                // A tensor of another file: its bytes as given (Index::parse
                // checked that it lies inside the file, with_sources that
                // the file is the one recorded).
                let t = &self.index.source_tensors[k];
                let Some(file) = self.sources.get(t.file) else {
                    return Err(self.sources_missing(seg));
                };
                let at = (t.segment.offset + first) as usize;
                d.op.xor_into(&file[at..at + (end - first) as usize], out);
                continue;
            }
            let src = &self.index.segments[span.source];
            let chunks = &self.index.chunks[src.first_chunk..src.first_chunk + src.chunk_count];
            let k0 = chunks
                .partition_point(|s| s.raw_offset - src.offset + u64::from(s.raw_len) <= first);
            SOURCE.with_borrow_mut(|buf| {
                for (k, sc) in chunks.iter().enumerate().skip(k0) {
                    let at = sc.raw_offset - src.offset;
                    if at >= end {
                        break;
                    }
                    buf.resize(sc.raw_len as usize, 0);
                    self.decode_chunk_into(src.first_chunk + k, buf)
                        .map_err(|e| source_error(i, seg, e))?;
                    let (lo, hi) = (first.max(at), end.min(at + u64::from(sc.raw_len)));
                    let o = ((lo - first) / sw * w) as usize;
                    let n = ((hi - lo) / sw * w) as usize;
                    d.op.xor_into(
                        &buf[(lo - at) as usize..(hi - at) as usize],
                        &mut out[o..o + n],
                    );
                }
                Ok::<(), Error>(())
            })?;
        }
        Ok(())
    }

    /// The error of decoding derived tensor `seg` without the source files.
    fn sources_missing(&self, seg: &Segment) -> Error {
        Error::Source(format!(
            "{} takes source elements from other files, which were not given: {}",
            seg.describe(),
            self.index
                .source_files
                .iter()
                .map(|f| format!(
                    "{} ({} bytes, XXH3-128 {:032x})",
                    crate::error::quote_name(&f.name),
                    f.len,
                    f.hash
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// Refuses to decode a delta container whose base was not given, or a
    /// container whose source files were not.
    pub(crate) fn check_base_given(&self) -> Result<()> {
        if self.needs_sources()
            && let Some(seg) = self.index.segments.iter().find(|s| {
                s.derived.as_ref().is_some_and(|d| {
                    d.pieces
                        .iter()
                        .any(|p| p.source >= self.index.segments.len())
                })
            })
        {
            return Err(self.sources_missing(seg));
        }
        if let (Some(b), None) = (self.index.base, self.base) {
            return Err(Error::Base(format!(
                "this is a delta container: decoding it needs its base, a {}-byte file with XXH3-128 {:032x}",
                b.len, b.hash
            )));
        }
        Ok(())
    }

    /// The chunks cut into batches (see [`crate::compress::batches`]), so
    /// a file of the largest chunks makes the reader hold about one chunk a
    /// thread in each of two batches, not four.
    fn batches(&self) -> Vec<std::ops::Range<usize>> {
        crate::compress::batches(self.index.chunks.iter().map(|c| c.raw_len as u64))
    }

    /// Checks the whole-file hash and length once every chunk is decoded.
    pub(crate) fn check_file(&self, hasher: &Xxh3_128, done: u64) -> Result<()> {
        let found = hasher.digest128();
        if found != self.header.original_hash {
            return Err(Error::FileHash {
                expected: self.header.original_hash,
                found,
            });
        }
        if done != self.header.original_len {
            return Err(Error::corrupt(
                Region::File,
                format!(
                    "decoded {done} bytes, header says {}",
                    self.header.original_len
                ),
            ));
        }
        Ok(())
    }

    /// Decodes every chunk in order, writing the original file to `out`,
    /// and checks the whole-file hash. Chunks are decoded in parallel on the
    /// current rayon pool, a few per thread at a time; while one batch is
    /// hashed and written, the next is decoded. Each chunk's checksum is
    /// checked before its bytes are decoded, so `out` never receives bytes
    /// of a damaged chunk (on error it may have received the chunks before).
    pub fn decompress_to(
        &self,
        out: &mut (dyn Write + Send),
        progress: Progress<'_>,
    ) -> Result<()> {
        self.check_base_given()?;
        let batches = self.batches();
        let decode_batch = |range: &std::ops::Range<usize>, bufs: &mut Vec<Vec<u8>>| {
            bufs.resize_with(range.len(), Vec::new);
            // The error of the first damaged chunk, whichever thread ends
            // first: the same report on every run.
            bufs.par_iter_mut()
                .zip(range.clone())
                .map(|(buf, i)| self.decode_chunk(i, buf))
                .collect::<Vec<Result<()>>>()
                .into_iter()
                .collect::<Result<()>>()
        };
        let mut hasher = Xxh3_128::new();
        let mut done = 0u64;
        let (mut cur, mut next) = (Vec::new(), Vec::new());
        if let Some(first) = batches.first() {
            decode_batch(first, &mut cur)?;
        }
        for (b, range) in batches.iter().enumerate() {
            // Written first: on one thread, the batch is hashed while it is
            // still in cache.
            let (written, decoded) = rayon::join(
                || -> Result<()> {
                    for buf in &cur[..range.len()] {
                        hasher.update(buf);
                        out.write_all(buf)?;
                        done += buf.len() as u64;
                    }
                    Ok(())
                },
                || match batches.get(b + 1) {
                    Some(following) => decode_batch(following, &mut next),
                    None => Ok(()),
                },
            );
            written?;
            decoded?;
            std::mem::swap(&mut cur, &mut next);
            if !progress(done) {
                return Err(Error::Cancelled);
            }
        }
        self.check_file(&hasher, done)?;
        out.flush()?;
        Ok(())
    }

    /// Decodes every chunk straight into its place in `out`, which must be
    /// exactly the original file's length, and checks the whole-file hash.
    /// Faster than [`Container::decompress_to`] where the whole file is
    /// wanted in memory: no copy from per-chunk buffers. While one batch is
    /// hashed, the next is decoded.
    ///
    /// Chunk checksums are not checked up front: the whole-file hash at the
    /// end catches any damage, and only then are the checksums checked, to
    /// name the damaged chunk in the error (a profile of decoding BF16
    /// weights had put 15% of the time in them). On error, `out` holds a
    /// partial result, possibly with damaged bytes.
    pub fn decompress_into(&self, out: &mut [u8], progress: Progress<'_>) -> Result<()> {
        self.decompress_into_inner(out, progress)
            .map_err(|e| self.explain(e))
    }

    fn decompress_into_inner(&self, out: &mut [u8], progress: Progress<'_>) -> Result<()> {
        self.check_base_given()?;
        if out.len() as u64 != self.header.original_len {
            return Err(Error::InvalidInput(format!(
                "the container holds a {}-byte file, a buffer of {} bytes was given",
                self.header.original_len,
                out.len()
            )));
        }
        // One slice of `out` per chunk (chunks tile the file in order, as
        // Index::parse checked), then one group of them per batch.
        let mut pieces: Vec<&mut [u8]> = Vec::with_capacity(self.index.chunks.len());
        let mut rest = out;
        for c in &self.index.chunks {
            let (piece, r) = std::mem::take(&mut rest).split_at_mut(c.raw_len as usize);
            pieces.push(piece);
            rest = r;
        }
        let batches = self.batches();
        let mut groups: Vec<(usize, &mut [&mut [u8]])> = Vec::with_capacity(batches.len());
        let mut rest = pieces.as_mut_slice();
        for range in &batches {
            let (group, r) = std::mem::take(&mut rest).split_at_mut(range.len());
            groups.push((range.start, group));
            rest = r;
        }
        let decode_group = |(first, group): &mut (usize, &mut [&mut [u8]])| {
            group
                .par_iter_mut()
                .enumerate()
                .map(|(k, piece)| self.decode_chunk_trusting(*first + k, piece))
                .collect::<Result<()>>()
        };
        let mut hasher = Xxh3_128::new();
        let mut done = 0u64;
        let mut groups = groups.into_iter();
        let mut cur = groups.next();
        if let Some(g) = cur.as_mut() {
            decode_group(g)?;
        }
        while let Some((_, group)) = cur {
            let mut next = groups.next();
            // Hashed first: on one thread, the batch is still in cache.
            let ((), decoded) = rayon::join(
                || {
                    for piece in group.iter() {
                        hasher.update(piece);
                        done += piece.len() as u64;
                    }
                },
                || next.as_mut().map_or(Ok(()), decode_group),
            );
            decoded?;
            if !progress(done) {
                return Err(Error::Cancelled);
            }
            cur = next;
        }
        self.check_file(&hasher, done)
    }

    /// Decodes everything and checks every checksum, writing nothing.
    pub fn verify(&self, progress: Progress<'_>) -> Result<()> {
        self.decompress_to(&mut std::io::sink(), progress)
    }

    /// The chunks that hold bytes `start..start + len` of tensor `name`
    /// (none for an empty range). A range past the tensor's end is an error.
    pub fn tensor_chunks(&self, name: &str, start: u64, len: u64) -> Result<Range<usize>> {
        let seg = self.tensor_segment(name)?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= seg.len)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "tensor {}: bytes {start}..{} asked for, it has {}",
                    crate::error::quote_name(name),
                    start.saturating_add(len),
                    seg.len
                ))
            })?;
        let chunks = &self.index.chunks[seg.first_chunk..seg.first_chunk + seg.chunk_count];
        let first =
            chunks.partition_point(|c| c.raw_offset - seg.offset + u64::from(c.raw_len) <= start);
        let last = chunks.partition_point(|c| c.raw_offset - seg.offset < end);
        if len == 0 || first >= last {
            return Ok(seg.first_chunk..seg.first_chunk);
        }
        Ok(seg.first_chunk + first..seg.first_chunk + last)
    }

    /// Decodes one tensor's bytes without touching the other tensors' chunks.
    pub fn read_tensor(&self, name: &str) -> Result<Vec<u8>> {
        let len = self.tensor_len(name)?;
        let mut out = vec![0u8; len as usize];
        self.read_tensor_into(name, &mut out)?;
        Ok(out)
    }

    /// The length in bytes of the tensor `name`.
    pub fn tensor_len(&self, name: &str) -> Result<u64> {
        Ok(self.tensor_segment(name)?.len)
    }

    fn tensor_segment(&self, name: &str) -> Result<&crate::format::Segment> {
        self.index
            .segments
            .iter()
            .find(|s| matches!(&s.kind, SegmentKind::Tensor { name: n, .. } if n == name))
            .ok_or_else(|| Error::NoSuchTensor(name.to_string()))
    }

    /// [`Container::read_tensor`] into `out`, which must be exactly the
    /// tensor's length: a caller's buffer (a tensor being loaded) is filled
    /// in place, without a copy. Chunks are decoded in parallel, each
    /// checked against its checksum first.
    pub fn read_tensor_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        self.check_tensor_buffer(name, out.len())?;
        self.read_tensor_range_into(name, 0, out)
    }

    /// Fails unless tensor `name` is exactly `len` bytes long (a buffer for
    /// all of it).
    pub(crate) fn check_tensor_buffer(&self, name: &str, len: usize) -> Result<()> {
        let seg = self.tensor_segment(name)?;
        if len as u64 != seg.len {
            return Err(Error::InvalidInput(format!(
                "tensor {}: {} bytes, the buffer for it has {len}",
                crate::error::quote_name(name),
                seg.len,
            )));
        }
        Ok(())
    }

    /// Bytes `start..start + out.len()` of tensor `name` into `out` (a
    /// slice of rows, for a reader that wants part of a tensor), decoding
    /// only the chunks that hold them, in parallel, each checked against
    /// its checksum first. A range past the tensor's end is an error.
    pub fn read_tensor_range_into(&self, name: &str, start: u64, out: &mut [u8]) -> Result<()> {
        let seg = self.tensor_segment(name)?;
        // Checks that the range lies within the tensor (no overflow) first.
        let held = self.tensor_chunks(name, start, out.len() as u64)?;
        let end = start + out.len() as u64;
        // The chunks overlapping the range, with the part of `out` each fills.
        let mut jobs = Vec::new();
        let mut rest = out;
        for i in held {
            let c = &self.index.chunks[i];
            let at = c.raw_offset - seg.offset;
            let (lo, hi) = (start.max(at), end.min(at + u64::from(c.raw_len)));
            let (piece, r) = std::mem::take(&mut rest).split_at_mut((hi - lo) as usize);
            rest = r;
            jobs.push((i, (lo - at) as usize, piece));
        }
        jobs.par_iter_mut()
            .map(|(i, from, piece)| {
                if *from == 0 && piece.len() == self.index.chunks[*i].raw_len as usize {
                    return self.decode_chunk_into(*i, piece);
                }
                // Part of a chunk: decoded whole, the part copied.
                RANGE.with_borrow_mut(|buf| {
                    buf.resize(self.index.chunks[*i].raw_len as usize, 0);
                    self.decode_chunk_into(*i, buf)?;
                    piece.copy_from_slice(&buf[*from..*from + piece.len()]);
                    Ok(())
                })
            })
            .collect::<Vec<Result<()>>>()
            .into_iter()
            .collect::<Result<()>>()
    }
}

thread_local! {
    /// Per-thread buffer for a chunk of which a range read wants a part.
    static RANGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread buffers for a sparse chunk's changed positions and values.
    static CHANGED: std::cell::RefCell<(Vec<u32>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    /// Per-thread buffer for a sparse chunk's map, where it must be decoded
    /// (a bitmap always is).
    static MAP: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The elements a sparse chunk's map (a plane of `n` bytes, nonzero where
/// an element changed, stored with `codec`) marks, into `positions`. A map
/// run coded with constant literals (what lmc writes) is read from its run
/// lengths; any other is decoded and scanned.
fn changed_positions(
    codec: PlaneCodec,
    stored: &[u8],
    n: usize,
    positions: &mut Vec<u32>,
) -> Result<(), DecodeError> {
    if codec == PlaneCodec::Runs && crate::runs::literal_positions(stored, n, positions)? {
        return Ok(());
    }
    MAP.with_borrow_mut(|map| {
        map.resize(n, 0);
        decode_plane(codec, stored, map)?;
        // Branch-free: every position is written, the count moves past
        // the changed ones.
        positions.clear();
        positions.resize(n + 1, 0);
        let mut m = 0usize;
        for (e, &b) in map.iter().enumerate() {
            positions[m] = e as u32;
            m += usize::from(b != 0);
        }
        positions.truncate(m);
        Ok(())
    })
}

/// XORs element `values[i]` (of `width` bytes) into element `positions[i]`
/// of `out`, for each `i`. The positions come from a map of `out`'s
/// elements, so each is in range.
fn xor_at(width: usize, positions: &[u32], values: &[u8], out: &mut [u8]) {
    match width {
        2 => {
            for (&p, v) in positions.iter().zip(values.chunks_exact(2)) {
                let o = p as usize * 2;
                if let Some(e) = out.get_mut(o..o + 2) {
                    e[0] ^= v[0];
                    e[1] ^= v[1];
                }
            }
        }
        4 => {
            for (&p, v) in positions.iter().zip(values.chunks_exact(4)) {
                let o = p as usize * 4;
                if let Some(e) = out.get_mut(o..o + 4) {
                    let x = u32::from_ne_bytes([e[0], e[1], e[2], e[3]])
                        ^ u32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
                    e.copy_from_slice(&x.to_ne_bytes());
                }
            }
        }
        _ => {
            for (&p, v) in positions.iter().zip(values.chunks_exact(width)) {
                let o = p as usize * width;
                if let Some(e) = out.get_mut(o..o + width) {
                    for (a, b) in e.iter_mut().zip(v) {
                        *a ^= b;
                    }
                }
            }
        }
    }
}

/// Where a container's stored bytes are.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stored<'a> {
    /// The whole file.
    File(&'a [u8]),
    /// Parts of it, each with its offset in the file, in order and not
    /// overlapping: the chunks a ranged read fetched (none: the header and
    /// index alone).
    Parts(&'a [(u64, Vec<u8>)]),
}

/// Decodes the planes `entries` (stored back to back in `stored`, from
/// container offset `offset`) of a chunk of segment `seg` and merges them
/// into `out`, whose length sets the planes' length, XORed with `base`
/// (as long as `out`) where given.
fn decode_planes(
    entries: &[crate::format::PlaneEntry],
    seg: &Segment,
    stored: &[u8],
    offset: u64,
    base: Option<&[u8]>,
    out: &mut [u8],
    plane_err: &dyn Fn(usize, u64, DecodeError) -> Error,
) -> Result<()> {
    let width = seg.kind.width();
    let plane_len = out.len() / width;
    // A sparse chunk's planes are as long as its map says, which the
    // index could not check for raw ones.
    let raw_mismatch = |found: usize| DecodeError::LengthMismatch {
        codec: PlaneCodec::Raw,
        what: "stored block",
        expected: plane_len,
        found,
    };
    if width == 1 {
        let p = entries[0];
        let s = &stored[..p.stored_len as usize];
        if p.codec == PlaneCodec::Raw && s.len() != plane_len {
            return Err(plane_err(0, offset, raw_mismatch(s.len())));
        }
        decode_plane(p.codec, s, out).map_err(|d| plane_err(0, offset, d))?;
        if let Some(base) = base {
            for (o, b) in out.iter_mut().zip(base) {
                *o ^= b;
            }
        }
        return Ok(());
    }
    let SegmentKind::Tensor { dtype, .. } = &seg.kind else {
        unreachable!("only tensors have more than one plane")
    };
    SCRATCH.with_borrow_mut(|scratch| {
        // Raw planes are merged straight from the container; the others
        // are decoded into per-thread scratch first.
        scratch.resize(plane_len * width, 0);
        let mut views: Vec<&[u8]> = Vec::with_capacity(width);
        let mut rest_stored = stored;
        let mut rest_scratch = scratch.as_mut_slice();
        let mut offset = offset;
        for (k, p) in entries.iter().enumerate() {
            let at = offset;
            offset += u64::from(p.stored_len);
            let (s, r) = rest_stored.split_at(p.stored_len as usize);
            rest_stored = r;
            let (buf, r) = std::mem::take(&mut rest_scratch).split_at_mut(plane_len);
            rest_scratch = r;
            match p.codec {
                PlaneCodec::Raw if s.len() != plane_len => {
                    return Err(plane_err(k, at, raw_mismatch(s.len())));
                }
                PlaneCodec::Raw => views.push(s),
                // Index::parse refused split on plane 0, so views[0]
                // is there.
                PlaneCodec::Split => {
                    decode_split(s, views[0], buf).map_err(|d| plane_err(k, at, d))?;
                    views.push(buf);
                }
                _ => {
                    decode_plane(p.codec, s, buf).map_err(|d| plane_err(k, at, d))?;
                    views.push(buf);
                }
            }
        }
        planes::merge_xor(*dtype, &views, base, out);
        Ok(())
    })
}
