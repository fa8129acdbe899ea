//! Reading a container: open, inspect, decode chunks, tensors or the whole file.

use std::io::Write;

use rayon::prelude::*;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::codec::{PlaneCodec, decode_plane};
use crate::compress::Progress;
use crate::error::{Error, Region, Result};
use crate::format::{
    BaseRef, ChunkEntry, HEADER_LEN, Header, Index, Segment, SegmentKind, Transform,
};
use crate::planes;

/// Most original bytes decoded at once by [`Container::decompress_to`].
const BATCH_BYTES: u64 = 256 << 20;

thread_local! {
    /// Per-thread buffers for decoded planes, reused from chunk to chunk.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An opened container over its bytes (typically a memory map).
///
/// Opening checks the header and the index completely; chunk payloads are
/// checked (checksum, then decode) as they are read.
#[derive(Debug)]
pub struct Container<'a> {
    data: &'a [u8],
    header: Header,
    index: Index,
    /// The base's bytes, for a delta container once [`Container::with_base`] gave them.
    base: Option<&'a [u8]>,
}

impl<'a> Container<'a> {
    pub fn open(data: &'a [u8]) -> Result<Container<'a>> {
        let header = Header::parse(data)?;
        let index_start = HEADER_LEN as u64 + header.payload_len;
        // Header::parse checked that the header, payload and index tile the file.
        let index = Index::parse(&data[index_start as usize..], &header)?;
        Ok(Container {
            data,
            header,
            index,
            base: None,
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
        let found = xxhash_rust::xxh3::xxh3_128(base);
        if found != want.hash {
            return Err(Error::Base(format!(
                "wrong base: the container was coded against a file with XXH3-128 {:032x}, the base given hashes to {found:032x}",
                want.hash
            )));
        }
        self.base = Some(base);
        Ok(self)
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
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The stored bytes of chunk `i`.
    fn stored(&self, c: &ChunkEntry) -> &'a [u8] {
        // Index::parse checked that chunks tile the payload.
        &self.data[c.stored_offset as usize..(c.stored_offset + c.stored_len()) as usize]
    }

    /// Decodes chunk `i` into `out` (resized to the chunk's original length),
    /// checking its checksum first.
    pub fn decode_chunk(&self, i: usize, out: &mut Vec<u8>) -> Result<()> {
        let c = self.index.chunks.get(i).ok_or_else(|| {
            Error::InvalidInput(format!(
                "chunk {i} does not exist (the container has {})",
                self.index.chunks.len()
            ))
        })?;
        let seg = &self.index.segments[c.segment];
        let stored = self.stored(c);
        let sum = xxh3_64(stored);
        if sum != c.checksum {
            return Err(Error::ChunkChecksum {
                chunk: i,
                segment: seg.describe(),
                offset: c.stored_offset,
                expected: c.checksum,
                found: sum,
            });
        }
        // Every byte is overwritten; a reused buffer of the same size is not
        // cleared first.
        out.resize(c.raw_len as usize, 0);
        out.truncate(c.raw_len as usize);
        let plane_err = |plane: usize, detail: String| Error::PlaneDecode {
            chunk: i,
            segment: seg.describe(),
            plane,
            detail,
        };
        let base = match c.transform {
            Transform::None => None,
            Transform::Xor => {
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
        self.decode_planes(c, seg, stored, out, &plane_err)?;
        if let Some(base) = base {
            for (o, b) in out.iter_mut().zip(base) {
                *o ^= b;
            }
        }
        Ok(())
    }

    /// Decodes the planes of chunk `c` and merges them into `out`.
    fn decode_planes(
        &self,
        c: &ChunkEntry,
        seg: &Segment,
        stored: &[u8],
        out: &mut [u8],
        plane_err: &dyn Fn(usize, String) -> Error,
    ) -> Result<()> {
        let width = seg.kind.width();
        if width == 1 {
            let p = c.planes[0];
            return decode_plane(p.codec, stored, out).map_err(|d| plane_err(0, d));
        }
        let SegmentKind::Tensor { dtype, .. } = &seg.kind else {
            unreachable!("only tensors have more than one plane")
        };
        let plane_len = c.raw_len as usize / width;
        SCRATCH.with_borrow_mut(|scratch| {
            // Raw planes are merged straight from the container; the others
            // are decoded into per-thread scratch first.
            scratch.resize(plane_len * width, 0);
            let mut views: Vec<&[u8]> = Vec::with_capacity(width);
            let mut rest_stored = stored;
            let mut rest_scratch = scratch.as_mut_slice();
            for (k, p) in c.planes.iter().enumerate() {
                let (s, r) = rest_stored.split_at(p.stored_len as usize);
                rest_stored = r;
                let (buf, r) = std::mem::take(&mut rest_scratch).split_at_mut(plane_len);
                rest_scratch = r;
                if p.codec == PlaneCodec::Raw {
                    views.push(s);
                } else {
                    decode_plane(p.codec, s, buf).map_err(|d| plane_err(k, d))?;
                    views.push(buf);
                }
            }
            planes::merge(*dtype, &views, out);
            Ok(())
        })
    }

    /// Decodes every chunk in order, writing the original file to `out`,
    /// and checks the whole-file hash. Chunks are decoded in parallel on the
    /// current rayon pool, a few per thread at a time; while one batch is
    /// hashed and written, the next is decoded.
    pub fn decompress_to(
        &self,
        out: &mut (dyn Write + Send),
        progress: Progress<'_>,
    ) -> Result<()> {
        if let (Some(b), None) = (self.index.base, self.base) {
            return Err(Error::Base(format!(
                "this is a delta container: decoding it needs its base, a {}-byte file with XXH3-128 {:032x}",
                b.len, b.hash
            )));
        }
        let n = self.index.chunks.len();
        let per_batch = rayon::current_num_threads().max(1) * 4;
        // Batches: a few chunks a thread, and at most BATCH_BYTES of output
        // (plus one chunk), so a hostile file of huge chunks cannot make the
        // reader hold threads x 4 x 256 MiB at once.
        let mut batches = Vec::new();
        let mut start = 0;
        while start < n {
            let (mut end, mut bytes) = (start, 0u64);
            while end < n && end - start < per_batch && (end == start || bytes < BATCH_BYTES) {
                bytes += self.index.chunks[end].raw_len as u64;
                end += 1;
            }
            batches.push(start..end);
            start = end;
        }
        let decode_batch = |range: &std::ops::Range<usize>, bufs: &mut Vec<Vec<u8>>| {
            bufs.resize_with(range.len(), Vec::new);
            bufs.par_iter_mut()
                .zip(range.clone())
                .map(|(buf, i)| self.decode_chunk(i, buf))
                .collect::<Result<()>>()
        };
        let mut hasher = Xxh3::new();
        let mut done = 0u64;
        let (mut cur, mut next) = (Vec::new(), Vec::new());
        if let Some(first) = batches.first() {
            decode_batch(first, &mut cur)?;
        }
        for (b, range) in batches.iter().enumerate() {
            let (decoded, written) = rayon::join(
                || match batches.get(b + 1) {
                    Some(following) => decode_batch(following, &mut next),
                    None => Ok(()),
                },
                || -> Result<()> {
                    for buf in &cur[..range.len()] {
                        hasher.update(buf);
                        out.write_all(buf)?;
                        done += buf.len() as u64;
                    }
                    Ok(())
                },
            );
            written?;
            decoded?;
            std::mem::swap(&mut cur, &mut next);
            if !progress(done) {
                return Err(Error::Cancelled);
            }
        }
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
        out.flush()?;
        Ok(())
    }

    /// Decodes everything and checks every checksum, writing nothing.
    pub fn verify(&self, progress: Progress<'_>) -> Result<()> {
        self.decompress_to(&mut std::io::sink(), progress)
    }

    /// Decodes one tensor's bytes without touching the other tensors' chunks.
    pub fn read_tensor(&self, name: &str) -> Result<Vec<u8>> {
        let seg = self
            .index
            .segments
            .iter()
            .find(|s| matches!(&s.kind, SegmentKind::Tensor { name: n, .. } if n == name))
            .ok_or_else(|| Error::NoSuchTensor(name.to_string()))?;
        let mut parts: Vec<Vec<u8>> = vec![Vec::new(); seg.chunk_count];
        parts
            .par_iter_mut()
            .enumerate()
            .map(|(k, buf)| self.decode_chunk(seg.first_chunk + k, buf))
            .collect::<Result<()>>()?;
        Ok(parts.concat())
    }
}
