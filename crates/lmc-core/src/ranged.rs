//! Reading a container in ranges: from a source that is read at offsets
//! (an object in remote storage) rather than mapped whole. The header and
//! the index are read first; then only the stored bytes of the chunks a
//! read needs, several ranges at a time.

use std::io::Write;
use std::ops::Range;

use rayon::prelude::*;

use crate::compress::Progress;
use crate::container::{Container, Stored};
use crate::error::{Error, Result};
use crate::format::{HEADER_LEN, Header, Index};
use crate::hash::Xxh3_128;

/// Bytes readable at any offset: a container in memory, or an object in
/// remote storage read by ranged requests.
pub trait ReadAt: Sync {
    /// The source's length in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads each of `ranges` (all within [`ReadAt::len`]), several at once
    /// where the source allows. Every range read MUST be returned whole: a
    /// source that gets fewer bytes than asked for (a truncated answer)
    /// returns an error.
    fn read_ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Vec<u8>>>;
}

/// Reads all of `buf` from `file` at `offset`, without moving the file's
/// cursor (so threads can share the file): the positional read that the
/// [`ReadAt`] sources over local files (`lmc_files::FileAt`, a download
/// spooled to a temporary file) share.
pub fn read_file_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            )?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

impl ReadAt for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Vec<u8>>> {
        ranges
            .iter()
            .map(|r| {
                self.get(r.start as usize..r.end as usize)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "bytes {}..{} asked for, the source has {}",
                                r.start,
                                r.end,
                                <[u8]>::len(self)
                            ),
                        )
                    })
            })
            .collect()
    }
}

/// A boxed source (`Box<dyn ReadAt + Send + Sync>`: a file or an object
/// chosen at run time) reads as what it holds.
impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Vec<u8>>> {
        (**self).read_ranges(ranges)
    }
}

/// Stored bytes fetched for one read are cut into requests of at most this
/// size, so that a large read goes out as several ranged requests at once.
pub const RANGE_REQUEST_BYTES: u64 = 8 << 20;

/// [`Container::decompress_from`] fetches about this many stored bytes at a
/// time (while the previous ones are decoded): the memory it holds is about
/// twice this plus what they decode to.
const FETCH_GROUP_BYTES: u64 = 32 << 20;

/// Reads exactly `range` from `src`, refusing a short answer.
fn read_one(src: &dyn ReadAt, range: Range<u64>) -> Result<Vec<u8>> {
    let mut got = src.read_ranges(std::slice::from_ref(&range))?;
    let bytes = got.pop().unwrap_or_default();
    check_len(&range, &bytes)?;
    Ok(bytes)
}

fn check_len(range: &Range<u64>, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != range.end - range.start {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "bytes {}..{} asked for, {} came back (a truncated answer)",
                range.start,
                range.end,
                bytes.len()
            ),
        )));
    }
    Ok(())
}

impl Container<'_> {
    /// Opens the container that `src` holds by reading its header and then
    /// its index alone (two ranged reads); chunks are read by the `_from`
    /// methods as they are needed. The lifetime is free: only a base given
    /// with [`Container::with_base`] is borrowed.
    pub fn open_from<'a>(src: &dyn ReadAt) -> Result<Container<'a>> {
        let file_len = src.len();
        let head = read_one(src, 0..(HEADER_LEN as u64).min(file_len))?;
        let header = Header::parse_prefix(&head, file_len)?;
        // parse_prefix checked that header, payload and index tile the file.
        let index_start = HEADER_LEN as u64 + header.payload_len;
        let index = read_one(src, index_start..file_len)?;
        let index = Index::parse(&index, &header)?;
        Ok(Container {
            data: Stored::Parts(&[]),
            file_len,
            header,
            index: std::sync::Arc::new(index),
            base: None,
            sources: Vec::new(),
        })
    }

    /// This container over `parts` (fetched stored bytes, each with its
    /// offset in the file, in order): the same index, shared.
    fn over<'b>(&'b self, parts: &'b [(u64, Vec<u8>)]) -> Container<'b> {
        Container {
            data: Stored::Parts(parts),
            file_len: self.file_len,
            header: self.header.clone(),
            index: self.index.clone(),
            base: self.base,
            sources: self.sources.clone(),
        }
    }

    /// The chunks whose stored bytes decoding chunk `i` reads: `i`, and for a
    /// chunk of a derived tensor the source chunks it follows from.
    fn needs(&self, i: usize, out: &mut Vec<usize>) {
        out.push(i);
        let c = &self.index.chunks[i];
        let seg = &self.index.segments[c.segment];
        let (Some(d), crate::format::SegmentKind::Tensor { dtype, .. }) = (&seg.derived, &seg.kind)
        else {
            return;
        };
        let (w, sw) = (dtype.width() as u64, d.op.source_width(*dtype) as u64);
        let e0 = (c.raw_offset - seg.offset) / w;
        for span in d.spans(e0, e0 + u64::from(c.raw_len) / w) {
            // A tensor of another file needs no chunk of this one.
            let Some(src) = self.index.segments.get(span.source) else {
                continue;
            };
            let first = span.source_elem * sw;
            let end = first + span.elems * sw;
            let chunks = &self.index.chunks[src.first_chunk..src.first_chunk + src.chunk_count];
            let k0 = chunks
                .partition_point(|s| s.raw_offset - src.offset + u64::from(s.raw_len) <= first);
            for (k, sc) in chunks.iter().enumerate().skip(k0) {
                if sc.raw_offset - src.offset >= end {
                    break;
                }
                out.push(src.first_chunk + k);
            }
        }
    }

    /// Fetches the stored bytes of `chunks` (and of the chunks they are
    /// derived from) from `src`: neighbours merged into one range, ranges
    /// cut at [`RANGE_REQUEST_BYTES`], all asked for at once.
    fn fetch(&self, src: &dyn ReadAt, chunks: &[usize]) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut all = Vec::with_capacity(chunks.len());
        for &i in chunks {
            self.needs(i, &mut all);
        }
        all.sort_unstable();
        all.dedup();
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for &i in &all {
            let c = &self.index.chunks[i];
            let (start, end) = (c.stored_offset, c.stored_offset + c.stored_len());
            match ranges.last_mut() {
                Some(r) if r.end == start && end - r.start <= RANGE_REQUEST_BYTES => r.end = end,
                _ => ranges.push(start..end),
            }
        }
        // A chunk's stored bytes are never empty (raw_len >= 1 and each
        // plane stores at least a codec's header), but an empty range is
        // harmless to skip.
        ranges.retain(|r| r.end > r.start);
        let got = src.read_ranges(&ranges)?;
        if got.len() != ranges.len() {
            return Err(Error::InvalidInput(format!(
                "{} ranges asked for, {} came back",
                ranges.len(),
                got.len()
            )));
        }
        ranges
            .into_iter()
            .zip(got)
            .map(|(r, bytes)| {
                check_len(&r, &bytes)?;
                Ok((r.start, bytes))
            })
            .collect()
    }

    /// [`Container::read_tensor_range_into`] over `src`: fetches only the
    /// stored bytes of the chunks that hold the range (and their sources,
    /// for a derived tensor).
    pub fn read_tensor_range_from(
        &self,
        src: &dyn ReadAt,
        name: &str,
        start: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let chunks: Vec<usize> = self.tensor_chunks(name, start, out.len() as u64)?.collect();
        let parts = self.fetch(src, &chunks)?;
        self.over(&parts).read_tensor_range_into(name, start, out)
    }

    /// [`Container::decode_chunk`] over `src`: fetches that chunk alone
    /// (and its sources, for a derived tensor's).
    pub fn decode_chunk_from(&self, src: &dyn ReadAt, i: usize, out: &mut Vec<u8>) -> Result<()> {
        if i >= self.index.chunks.len() {
            // Named by decode_chunk's own error.
            return self.decode_chunk(i, out);
        }
        let parts = self.fetch(src, &[i])?;
        self.over(&parts).decode_chunk(i, out)
    }

    /// [`Container::read_tensor_into`] over `src`: `out` must be exactly
    /// the tensor's length.
    pub fn read_tensor_into_from(
        &self,
        src: &dyn ReadAt,
        name: &str,
        out: &mut [u8],
    ) -> Result<()> {
        self.check_tensor_buffer(name, out.len())?;
        self.read_tensor_range_from(src, name, 0, out)
    }

    /// [`Container::read_tensor`] over `src`.
    pub fn read_tensor_from(&self, src: &dyn ReadAt, name: &str) -> Result<Vec<u8>> {
        let len = self.tensor_len(name)?;
        let mut out = vec![0u8; len as usize];
        self.read_tensor_range_from(src, name, 0, &mut out)?;
        Ok(out)
    }

    /// [`Container::decompress_to`] over `src`: the chunks are fetched in
    /// groups of about 32 MiB of stored bytes, the next group while the
    /// current one is decoded and written, so memory stays bounded whatever
    /// the file's size. Each chunk is checked against its checksum before
    /// its bytes are written, and the whole-file hash at the end.
    pub fn decompress_from(
        &self,
        src: &dyn ReadAt,
        out: &mut (dyn Write + Send),
        progress: Progress<'_>,
    ) -> Result<()> {
        self.check_base_given()?;
        if src.len() != self.file_len {
            return Err(Error::InvalidInput(format!(
                "the source has {} bytes, the container opened had {}",
                src.len(),
                self.file_len
            )));
        }
        let groups = self.fetch_groups();
        let mut hasher = Xxh3_128::new();
        let mut done = 0u64;
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        let mut cur = match groups.first() {
            Some(g) => self.fetch(src, &g.clone().collect::<Vec<_>>())?,
            None => Vec::new(),
        };
        for (g, range) in groups.iter().enumerate() {
            let (written, next) = std::thread::scope(|s| {
                let next = groups
                    .get(g + 1)
                    .map(|n| s.spawn(move || self.fetch(src, &n.clone().collect::<Vec<_>>())));
                let view = self.over(&cur);
                let written = (|| -> Result<()> {
                    bufs.resize_with(range.len(), Vec::new);
                    bufs.par_iter_mut()
                        .zip(range.clone())
                        .map(|(buf, i)| view.decode_chunk(i, buf))
                        .collect::<Vec<Result<()>>>()
                        .into_iter()
                        .collect::<Result<()>>()?;
                    for buf in &bufs[..range.len()] {
                        hasher.update(buf);
                        out.write_all(buf)?;
                        done += buf.len() as u64;
                    }
                    Ok(())
                })();
                let next = next.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                (written, next)
            });
            written?;
            if let Some(next) = next {
                cur = next?;
            }
            if !progress(done) {
                return Err(Error::Cancelled);
            }
        }
        self.check_file(&hasher, done)?;
        out.flush()?;
        Ok(())
    }

    /// [`Container::verify`] over `src`.
    pub fn verify_from(&self, src: &dyn ReadAt, progress: Progress<'_>) -> Result<()> {
        self.decompress_from(src, &mut std::io::sink(), progress)
    }

    /// Consecutive chunks cut into groups of about [`FETCH_GROUP_BYTES`]
    /// stored bytes, counting what each fetches and holds: its own stored
    /// bytes, its sources' (a derived chunk stores a few bytes but reads
    /// its source's) and its decoded bytes, so a group of derived chunks
    /// does not hold many times the budget.
    fn fetch_groups(&self) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut bytes) = (0usize, 0u64);
        let mut need = Vec::new();
        for (i, c) in self.index.chunks.iter().enumerate() {
            if i > start && bytes >= FETCH_GROUP_BYTES {
                out.push(start..i);
                (start, bytes) = (i, 0);
            }
            need.clear();
            self.needs(i, &mut need);
            bytes += u64::from(c.raw_len)
                + need
                    .iter()
                    .map(|&k| self.index.chunks[k].stored_len())
                    .sum::<u64>();
        }
        if start < self.index.chunks.len() {
            out.push(start..self.index.chunks.len());
        }
        out
    }
}
