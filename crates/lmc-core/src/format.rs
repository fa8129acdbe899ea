//! The container format, versions 1 and 2: byte layout, serialisation, validation.
//!
//! Version 2 adds delta containers: tensors coded against a *base*, the
//! previous snapshot of the same checkpoint. Writers write version 1 for
//! containers without a base, so that those stay readable by every reader.
//!
//! FORMAT.md at the repository root is the normative description; the
//! tables here mirror it. All integers are little-endian.
//!
//! ```text
//! +--------------------+  offset 0
//! | header (64 bytes)  |
//! +--------------------+  64
//! | payload            |  chunk payloads, in chunk order, back to back
//! +--------------------+  64 + payload_len
//! | index              |  segments, chunk table, index checksum
//! +--------------------+  64 + payload_len + index_len = file length
//! ```
//!
//! Header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 8  | magic `89 4C 4D 43 0D 0A 1A 0A` ("\x89LMC\r\n\x1a\n") |
//! | 8  | 2  | format version (1, or 2 for a delta container) |
//! | 10 | 2  | flags: bit 0 [`FLAG_RANS`], bit 1 [`FLAG_SPLIT`], bit 2 [`FLAG_RUNS`], bit 3 [`FLAG_RANS32`], bit 4 [`FLAG_BITMAP`], bit 14 [`FLAG_SOURCES`], bit 15 [`FLAG_DERIVED`]; readers reject others |
//! | 12 | 4  | reserved (0) |
//! | 16 | 8  | original file length |
//! | 24 | 16 | XXH3-128 of the original file |
//! | 40 | 8  | payload length |
//! | 48 | 8  | index length |
//! | 56 | 8  | XXH3-64 of header bytes 0..56 |
//!
//! Every count and length read here is checked against the bytes actually
//! present before anything is allocated for it.

use crate::codec::PlaneCodec;
use crate::derive::{Derivation, DeriveOp, Piece};
use crate::dtype::Dtype;
use crate::error::{ChunkFault, Corruption, Error, Region, Result, quote_name};
use crate::hash::xxh3_64;

pub const MAGIC: [u8; 8] = *b"\x89LMC\r\n\x1a\n";
/// The version of containers without a base.
pub const VERSION_1: u16 = 1;
/// The version of delta containers (a base reference in the index).
pub const VERSION_2: u16 = 2;
/// The newest version this crate reads and writes.
pub const VERSION: u16 = VERSION_2;
pub const HEADER_LEN: usize = 64;
/// Header flag: planes may use the rANS codec ([`PlaneCodec::Rans`]).
/// Readers that do not know it reject the file, as they must.
pub const FLAG_RANS: u16 = 1;
/// Header flag: planes may use the split codec ([`PlaneCodec::Split`]).
/// Readers that do not know it reject the file, as they must.
pub const FLAG_SPLIT: u16 = 2;
/// Header flag: planes (and split parts) may use the runs codec ([`PlaneCodec::Runs`]).
pub const FLAG_RUNS: u16 = 4;
/// Header flag: planes (and split parts, and runs streams) may use the
/// rANS32 codec ([`PlaneCodec::Rans32`]). Readers that do not know it
/// reject the file, as they must.
pub const FLAG_RANS32: u16 = 8;
/// Header flag: delta chunks may be bitmap sparse chunks
/// ([`Transform::XorBitmap`]). Readers that do not know it reject the
/// file, as they must.
pub const FLAG_BITMAP: u16 = 16;
/// Header flag: segments may be derived tensors (kind 3, FORMAT.md
/// "Derived tensors"). The highest bit, so that flags for new plane codecs
/// take the low ones. Readers that do not know it reject the file.
pub const FLAG_DERIVED: u16 = 1 << 15;
/// Header flag: the index holds a table of *source files*, other files
/// whose tensors derived tensors take their source elements from
/// (FORMAT.md, "Sources in other files"). Readers that do not know it
/// reject the file, as they must.
pub const FLAG_SOURCES: u16 = 1 << 14;
/// Every flag this crate knows.
const KNOWN_FLAGS: u16 =
    FLAG_RANS | FLAG_SPLIT | FLAG_RUNS | FLAG_RANS32 | FLAG_BITMAP | FLAG_SOURCES | FLAG_DERIVED;

/// Largest original size of one chunk: 4 MiB, the largest chunk lmc's
/// encoder writes (its `--chunk-size` maximum, and the chunk size of tensors
/// with repeated strings). Bounds what a reader allocates for one chunk, and
/// how much output one constant-coded chunk of a few bytes can claim.
pub const MAX_CHUNK_LEN: u32 = 1 << 22;
/// Largest tensor rank accepted.
pub const MAX_RANK: usize = 64;

/// The fixed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// [`VERSION_1`] or [`VERSION_2`].
    pub version: u16,
    /// Feature flags ([`FLAG_RANS`], [`FLAG_SPLIT`]).
    pub flags: u16,
    pub original_len: u64,
    pub original_hash: u128,
    pub payload_len: u64,
    pub index_len: u64,
}

impl Header {
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.original_len.to_le_bytes());
        b[24..40].copy_from_slice(&self.original_hash.to_le_bytes());
        b[40..48].copy_from_slice(&self.payload_len.to_le_bytes());
        b[48..56].copy_from_slice(&self.index_len.to_le_bytes());
        let sum = xxh3_64(&b[..56]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses and checks the header against the length of the whole file.
    pub fn parse(file: &[u8]) -> Result<Header> {
        Header::parse_prefix(file, file.len() as u64)
    }

    /// Parses the header from `head`, the first bytes (at least
    /// [`HEADER_LEN`]) of a file of `file_len` bytes that is read in
    /// ranges (from object storage): the same checks as [`Header::parse`].
    pub fn parse_prefix(head: &[u8], file_len: u64) -> Result<Header> {
        let file = head;
        let h = |reason| Error::Corrupt {
            region: Region::Header,
            reason,
        };
        let b = file
            .get(..HEADER_LEN)
            .ok_or(h(Corruption::ShortFile { len: file.len() }))?;
        if b[0..8] != MAGIC {
            return Err(h(Corruption::BadMagic));
        }
        // The checksum first: a flipped bit in the version field is damage,
        // not a container from a newer lmc. (A newer version could move
        // the checksum; a mismatch then names both possibilities.)
        let version = u16::from_le_bytes([b[8], b[9]]);
        let known = version == VERSION_1 || version == VERSION_2;
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let stored_sum = u64_at(56);
        let sum = xxh3_64(&b[..56]);
        if stored_sum != sum {
            return Err(h(Corruption::Checksum {
                what: "header",
                stored: stored_sum,
                computed: sum,
                unknown_version: (!known).then_some(version),
            }));
        }
        if !known {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let flags = u16::from_le_bytes([b[10], b[11]]);
        if flags & !KNOWN_FLAGS != 0 || b[12..16] != [0; 4] {
            return Err(h(Corruption::Flags { flags }));
        }
        let header = Header {
            version,
            flags,
            original_len: u64_at(16),
            original_hash: u128::from_le_bytes(b[24..40].try_into().unwrap()),
            payload_len: u64_at(40),
            index_len: u64_at(48),
        };
        let expected = (HEADER_LEN as u64)
            .checked_add(header.payload_len)
            .and_then(|x| x.checked_add(header.index_len));
        if expected != Some(file_len) {
            return Err(Error::Corrupt {
                region: Region::File,
                reason: Corruption::FileLength {
                    len: file_len,
                    described: expected,
                    payload: header.payload_len,
                    index: header.index_len,
                },
            });
        }
        Ok(header)
    }
}

/// What a segment of the original file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentKind {
    /// Bytes with no tensor structure (file headers, metadata, padding).
    Bytes,
    /// The data of one tensor.
    Tensor {
        name: String,
        dtype: Dtype,
        shape: Vec<u64>,
    },
}

impl SegmentKind {
    /// Element width in bytes (1 for plain bytes); also the number of planes.
    pub fn width(&self) -> usize {
        match self {
            SegmentKind::Bytes => 1,
            SegmentKind::Tensor { dtype, .. } => dtype.width(),
        }
    }
}

/// A delta container's reference to its base: the original file whose
/// bytes its delta tensors were coded against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseRef {
    /// Length of the base file in bytes.
    pub len: u64,
    /// XXH3-128 of the base file.
    pub hash: u128,
}

/// Another file that derived tensors of a container take source elements
/// from (FORMAT.md, "Sources in other files"): known by its length and
/// hash, as a base is, and by a name for the errors (in a store, its path
/// in the snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    /// Length of the file in bytes.
    pub len: u64,
    /// XXH3-128 of the file.
    pub hash: u128,
}

/// A tensor of a [`SourceFile`] that a derived tensor names as its source:
/// piece source `segment_count + k` is the container's source tensor `k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTensor {
    /// Index of its file in [`Index::source_files`].
    pub file: usize,
    /// A tensor segment (never derived, no base, no chunks) whose `offset`
    /// is where the tensor starts in its file.
    pub segment: Segment,
}

/// How the chunks of a delta tensor are coded against the base (FORMAT.md,
/// "Transforms").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Transform {
    /// The chunk's own bytes (every chunk outside delta tensors).
    #[default]
    None = 0,
    /// The chunk's bytes XORed with the base's bytes at the same position.
    Xor = 1,
    /// The chunk XORed with the base, coded as a map of the elements that
    /// changed (plane entry 0) and the byte planes of those elements' XOR
    /// values alone (entries 1 to width): decoding copies the base and
    /// XORs in the changed elements (FORMAT.md, "Transforms").
    XorSparse = 2,
    /// As [`Transform::XorSparse`], with the map a bitmap: plane entry 0
    /// holds one bit an element (`ceil(n / 8)` bytes), so that decoding
    /// expands the changed elements into the base copy a block at a time
    /// instead of walking their positions (FORMAT.md, "Transforms").
    XorBitmap = 3,
}

impl Transform {
    pub fn from_code(c: u8) -> Option<Transform> {
        match c {
            0 => Some(Transform::None),
            1 => Some(Transform::Xor),
            2 => Some(Transform::XorSparse),
            3 => Some(Transform::XorBitmap),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::Xor => "xor",
            Transform::XorSparse => "xor-sparse",
            Transform::XorBitmap => "xor-bitmap",
        }
    }

    /// Whether the chunk stores a map of the changed elements (plane entry
    /// 0) before the planes of those elements alone.
    pub fn is_sparse(self) -> bool {
        matches!(self, Transform::XorSparse | Transform::XorBitmap)
    }
}

/// A contiguous range of the original file. Segments tile the file in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub kind: SegmentKind,
    /// For a delta tensor: where its counterpart starts in the base file
    /// (the counterpart has the same length). `None` for everything else.
    pub base_offset: Option<u64>,
    /// For a derived tensor (kind 3): its source and how it follows from
    /// it; its chunks hold the residue. `None` for everything else.
    pub derived: Option<Derivation>,
    /// Offset of the segment in the original file (derived, not stored).
    pub offset: u64,
    pub len: u64,
    /// Index of the segment's first chunk (derived, not stored).
    pub first_chunk: usize,
    pub chunk_count: usize,
}

impl Segment {
    /// A short description for error messages: `tensor "a.weight"` or `bytes at 0`.
    pub fn describe(&self) -> String {
        match &self.kind {
            SegmentKind::Bytes => format!("bytes at offset {}", self.offset),
            SegmentKind::Tensor { name, .. } => {
                format!("tensor {}", crate::error::quote_name(name))
            }
        }
    }
}

/// One plane of one chunk in the chunk table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneEntry {
    pub codec: PlaneCodec,
    pub stored_len: u32,
}

/// One chunk in the chunk table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Bytes of the original file this chunk holds.
    pub raw_len: u32,
    /// How the chunk is coded against the base (always `None` outside delta tensors).
    pub transform: Transform,
    /// XXH3-64 of the chunk's stored bytes.
    pub checksum: u64,
    pub planes: Vec<PlaneEntry>,
    /// Offset of the chunk's stored bytes from the start of the container (derived).
    pub stored_offset: u64,
    /// Offset of the chunk's bytes in the original file (derived).
    pub raw_offset: u64,
    /// Index of the segment the chunk belongs to (derived).
    pub segment: usize,
}

impl ChunkEntry {
    pub fn stored_len(&self) -> u64 {
        self.planes.iter().map(|p| p.stored_len as u64).sum()
    }
}

/// The index: what the original file held and where its chunks are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Index {
    /// The base of a delta container (version 2); `None` in version 1.
    pub base: Option<BaseRef>,
    /// Names of the base's tensors that this file no longer has (delta
    /// containers only; informative).
    pub removed: Vec<String>,
    /// Other files that derived tensors take source elements from (with
    /// header flag [`FLAG_SOURCES`]); empty otherwise.
    pub source_files: Vec<SourceFile>,
    /// The tensors of `source_files` that derived tensors name.
    pub source_tensors: Vec<SourceTensor>,
    pub segments: Vec<Segment>,
    pub chunks: Vec<ChunkEntry>,
}

const SEGMENT_MIN_LEN: usize = 1 + 8 + 4;
/// Bytes of one piece of a derived tensor's record.
const PIECE_LEN: usize = 4 + 8 + 8;
/// Most pieces a derived tensor may have. lmc writes 1 or 2 (a tensor
/// straddling two partitions of a flat buffer); the limit keeps the pieces
/// a reader looks through for each chunk few.
pub const MAX_PIECES: usize = 256;
const CHUNK_MIN_LEN: usize = 4 + 8 + 1;
/// Most source files a container may name: the other files of one
/// checkpoint that its derived tensors come from are few.
pub const MAX_SOURCE_FILES: usize = 256;
/// Smallest source tensor record: file, offset, dtype, name length, rank.
const SOURCE_TENSOR_MIN_LEN: usize = 4 + 8 + 1 + 2 + 1;

impl Index {
    /// The container version this index needs: 2 with a base, else 1.
    pub fn version(&self) -> u16 {
        if self.base.is_some() {
            VERSION_2
        } else {
            VERSION_1
        }
    }

    /// Serialises the index, checksum included, in the version that
    /// [`Index::version`] names.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        if let Some(base) = &self.base {
            b.extend_from_slice(&base.len.to_le_bytes());
            b.extend_from_slice(&base.hash.to_le_bytes());
            b.extend_from_slice(&(self.removed.len() as u32).to_le_bytes());
            for name in &self.removed {
                b.extend_from_slice(&(name.len() as u16).to_le_bytes());
                b.extend_from_slice(name.as_bytes());
            }
        }
        if !self.source_files.is_empty() {
            b.extend_from_slice(&(self.source_files.len() as u32).to_le_bytes());
            for f in &self.source_files {
                b.extend_from_slice(&f.len.to_le_bytes());
                b.extend_from_slice(&f.hash.to_le_bytes());
                b.extend_from_slice(&(f.name.len() as u16).to_le_bytes());
                b.extend_from_slice(f.name.as_bytes());
            }
            b.extend_from_slice(&(self.source_tensors.len() as u32).to_le_bytes());
            for t in &self.source_tensors {
                b.extend_from_slice(&(t.file as u32).to_le_bytes());
                b.extend_from_slice(&t.segment.offset.to_le_bytes());
                write_tensor_kind(&t.segment.kind, &mut b);
            }
        }
        b.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for s in &self.segments {
            match (&s.kind, s.base_offset, &s.derived) {
                (SegmentKind::Bytes, _, _) => b.push(0),
                (SegmentKind::Tensor { .. }, _, Some(_)) => b.push(3),
                (SegmentKind::Tensor { .. }, None, None) => b.push(1),
                (SegmentKind::Tensor { .. }, Some(_), None) => b.push(2),
            }
            b.extend_from_slice(&s.len.to_le_bytes());
            b.extend_from_slice(&(s.chunk_count as u32).to_le_bytes());
            write_tensor_kind(&s.kind, &mut b);
            if let Some(d) = &s.derived {
                b.push(d.op as u8);
                b.extend_from_slice(&(d.pieces.len() as u32).to_le_bytes());
                for p in &d.pieces {
                    b.extend_from_slice(&(p.source as u32).to_le_bytes());
                    b.extend_from_slice(&p.source_elem.to_le_bytes());
                    b.extend_from_slice(&p.elems.to_le_bytes());
                }
            } else if let Some(off) = s.base_offset {
                b.extend_from_slice(&off.to_le_bytes());
            }
        }
        b.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for c in &self.chunks {
            b.extend_from_slice(&c.raw_len.to_le_bytes());
            if self.segments[c.segment].base_offset.is_some() {
                b.push(c.transform as u8);
            }
            b.extend_from_slice(&c.checksum.to_le_bytes());
            b.push(c.planes.len() as u8);
            for p in &c.planes {
                b.push(p.codec as u8);
                b.extend_from_slice(&p.stored_len.to_le_bytes());
            }
        }
        let sum = xxh3_64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses and validates the index of a container whose header is `header`.
    pub fn parse(bytes: &[u8], header: &Header) -> Result<Index> {
        let bad = |d: String| Error::corrupt(Region::Index, d);
        let index = |reason| Error::Corrupt {
            region: Region::Index,
            reason,
        };
        let too_many = |what, count| {
            index(Corruption::CountTooLarge {
                what,
                count,
                index_len: bytes.len().saturating_sub(8),
            })
        };
        if bytes.len() < 8 {
            return Err(bad(format!("index is {} bytes, too short", bytes.len())));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let stored = u64::from_le_bytes(sum.try_into().unwrap());
        let computed = xxh3_64(body);
        if stored != computed {
            return Err(index(Corruption::Checksum {
                what: "index",
                stored,
                computed,
                unknown_version: None,
            }));
        }
        let mut r = Reader { b: body, pos: 0 };

        let (mut base, mut removed) = (None, Vec::new());
        if header.version >= VERSION_2 {
            let len = r.u64("base length")?;
            let hash = u128::from_le_bytes(r.take(16, "base hash")?.try_into().unwrap());
            base = Some(BaseRef { len, hash });
            let n = r.u32("removed tensor count")? as usize;
            if n > body.len() / 2 {
                return Err(too_many("removed tensor count", n));
            }
            removed.reserve(n);
            for k in 0..n {
                let len = r.u16("removed tensor name length")? as usize;
                let name = std::str::from_utf8(r.take(len, "removed tensor name")?)
                    .map_err(|_| bad(format!("removed tensor {k}: name is not UTF-8")))?;
                removed.push(name.to_string());
            }
        }

        let (mut source_files, mut source_tensors) = (Vec::new(), Vec::new());
        if header.flags & FLAG_SOURCES != 0 {
            let n = r.u32("source file count")? as usize;
            if n == 0 || n > MAX_SOURCE_FILES {
                return Err(bad(format!(
                    "{n} source files (1 to {MAX_SOURCE_FILES} allowed)"
                )));
            }
            for k in 0..n {
                let len = r.u64("source file length")?;
                let hash = u128::from_le_bytes(r.take(16, "source file hash")?.try_into().unwrap());
                let name_len = r.u16("source file name length")? as usize;
                let name = std::str::from_utf8(r.take(name_len, "source file name")?)
                    .map_err(|_| bad(format!("source file {k}: name is not UTF-8")))?
                    .to_string();
                source_files.push(SourceFile { name, len, hash });
            }
            let n = r.u32("source tensor count")? as usize;
            if n > body.len() / SOURCE_TENSOR_MIN_LEN {
                return Err(too_many("source tensor count", n));
            }
            source_tensors.reserve(n);
            for k in 0..n {
                let file = r.u32("source tensor file")? as usize;
                let offset = r.u64("source tensor offset")?;
                let (kind, len) = read_tensor_kind(&mut r, &format!("source tensor {k}"))?;
                let Some(f) = source_files.get(file) else {
                    return Err(bad(format!(
                        "source tensor {k}: file {file} does not exist ({} source files)",
                        source_files.len()
                    )));
                };
                let Some(len) = len.filter(|&l| offset.checked_add(l).is_some_and(|e| e <= f.len))
                else {
                    return Err(bad(format!(
                        "source tensor {k} ({}): it does not lie inside the {}-byte source file {}",
                        describe_kind(&kind, offset),
                        f.len,
                        quote_name(&f.name)
                    )));
                };
                source_tensors.push(SourceTensor {
                    file,
                    segment: Segment {
                        kind,
                        base_offset: None,
                        derived: None,
                        offset,
                        len,
                        first_chunk: 0,
                        chunk_count: 0,
                    },
                });
            }
        }

        let nseg = r.u32("segment count")? as usize;
        if nseg > body.len() / SEGMENT_MIN_LEN {
            return Err(too_many("segment count", nseg));
        }
        let mut segments = Vec::with_capacity(nseg);
        let (mut offset, mut first_chunk) = (0u64, 0usize);
        for i in 0..nseg {
            let kind_code = r.u8("segment kind")?;
            let len = r.u64("segment length")?;
            let chunk_count = r.u32("segment chunk count")? as usize;
            let kind = match kind_code {
                0 => SegmentKind::Bytes,
                1..=3
                    if kind_code == 1
                        || (kind_code == 2 && base.is_some())
                        || (kind_code == 3 && header.flags & FLAG_DERIVED != 0) =>
                {
                    let (kind, bytes) = read_tensor_kind(&mut r, &format!("segment {i}"))?;
                    if bytes != Some(len) {
                        let SegmentKind::Tensor { name, dtype, shape } = &kind else {
                            unreachable!("a tensor record")
                        };
                        return Err(bad(format!(
                            "tensor {}: shape {shape:?} of {dtype} does not match its length {len}",
                            quote_name(name)
                        )));
                    }
                    kind
                }
                k => {
                    return Err(bad(format!(
                        "segment {i}: unknown kind {k} for a version {} container",
                        header.version
                    )));
                }
            };
            let base_offset = match (kind_code, base) {
                (2, Some(b)) => {
                    let off = r.u64("base offset")?;
                    if off.checked_add(len).is_none_or(|end| end > b.len) {
                        return Err(bad(format!(
                            "segment {i}: base range {off}+{len} runs past the {}-byte base",
                            b.len
                        )));
                    }
                    Some(off)
                }
                _ => None,
            };
            let derived = if kind_code == 3 {
                let code = r.u8("derive op")?;
                let op = DeriveOp::from_code(code).ok_or_else(|| {
                    bad(format!(
                        "{}: unknown derive op {code}",
                        describe_kind(&kind, offset)
                    ))
                })?;
                let count = r.u32("derived piece count")? as usize;
                // Checked against the limit and the bytes left before
                // anything is allocated.
                let room = (body.len() - r.pos) / PIECE_LEN;
                if count == 0 || count > MAX_PIECES || count > room {
                    return Err(bad(format!(
                        "{}: {count} pieces of sources (1 to {MAX_PIECES} allowed), the index has room for {room}",
                        describe_kind(&kind, offset),
                    )));
                }
                let mut pieces = Vec::with_capacity(count);
                for _ in 0..count {
                    pieces.push(Piece {
                        source: r.u32("derived source")? as usize,
                        source_elem: r.u64("derived source element")?,
                        elems: r.u64("derived piece length")?,
                    });
                }
                Some(Derivation { op, pieces })
            } else {
                None
            };
            let seg = Segment {
                kind,
                base_offset,
                derived,
                offset,
                len,
                first_chunk,
                chunk_count,
            };
            offset = offset
                .checked_add(len)
                .ok_or_else(|| bad("segment lengths overflow".into()))?;
            first_chunk = first_chunk
                .checked_add(chunk_count)
                .ok_or_else(|| bad("chunk counts overflow".into()))?;
            segments.push(seg);
        }
        for seg in &segments {
            check_derived(seg, &segments, &source_files, &source_tensors)?;
        }
        if offset != header.original_len {
            return Err(index(Corruption::Coverage {
                covered: offset,
                original: header.original_len,
            }));
        }

        let nchunks = r.u32("chunk count")? as usize;
        if nchunks != first_chunk {
            return Err(bad(format!(
                "chunk table has {nchunks} chunks, segments claim {first_chunk}"
            )));
        }
        if nchunks > body.len() / CHUNK_MIN_LEN {
            return Err(too_many("chunk count", nchunks));
        }
        let mut chunks = Vec::with_capacity(nchunks);
        let mut stored_offset = HEADER_LEN as u64;
        for (si, seg) in segments.iter().enumerate() {
            let width = seg.kind.width();
            let mut raw_offset = seg.offset;
            for ci in seg.first_chunk..seg.first_chunk + seg.chunk_count {
                let ctx = |fault| {
                    index(Corruption::Chunk {
                        chunk: ci,
                        segment: seg.describe(),
                        fault,
                    })
                };
                let raw_at = r.pos;
                let raw_len = r.u32("chunk length")?;
                let transform = if seg.base_offset.is_some() {
                    let code = r.u8("chunk transform")?;
                    Transform::from_code(code)
                        .ok_or_else(|| ctx(ChunkFault::UnknownTransform(code)))?
                } else {
                    Transform::None
                };
                if transform == Transform::XorBitmap && header.flags & FLAG_BITMAP == 0 {
                    return Err(ctx(ChunkFault::TransformNotFlagged));
                }
                let checksum = r.u64("chunk checksum")?;
                let nplanes = r.u8("plane count")? as usize;
                // Checked before anything is allocated or decoded for it.
                if raw_len > MAX_CHUNK_LEN {
                    return Err(ctx(ChunkFault::TooLarge {
                        len: raw_len,
                        at: raw_at,
                        limit: MAX_CHUNK_LEN,
                    }));
                }
                if raw_len == 0 || !(raw_len as usize).is_multiple_of(width) {
                    return Err(ctx(ChunkFault::BadLength {
                        len: raw_len,
                        at: raw_at,
                        width,
                    }));
                }
                // A sparse chunk has its change map before its planes.
                let sparse = transform.is_sparse();
                let expected = width + usize::from(sparse);
                if nplanes != expected
                    || (sparse && !matches!(seg.kind, SegmentKind::Tensor { .. }))
                {
                    return Err(ctx(ChunkFault::PlaneCount {
                        found: nplanes,
                        expected,
                    }));
                }
                let plane_len = raw_len / width as u32;
                // A bitmap map holds a bit an element.
                let len_of = |p: usize| {
                    if p == 0 && transform == Transform::XorBitmap {
                        plane_len.div_ceil(8)
                    } else {
                        plane_len
                    }
                };
                let mut planes = Vec::with_capacity(nplanes);
                for p in 0..nplanes {
                    let plane_len = len_of(p);
                    let code = r.u8("plane codec")?;
                    let codec = PlaneCodec::from_code(code)
                        .ok_or_else(|| ctx(ChunkFault::UnknownCodec { plane: p, code }))?;
                    let stored_len = r.u32("plane length")?;
                    // The planes of a sparse chunk's changed elements are
                    // as long as the map says, at most the plane length:
                    // decoding checks the rest.
                    let changed_planes = sparse && p > 0;
                    let ok = match codec {
                        PlaneCodec::Raw if changed_planes => stored_len <= plane_len,
                        PlaneCodec::Raw => stored_len == plane_len,
                        PlaneCodec::Constant => stored_len == 1,
                        PlaneCodec::Rans if header.flags & FLAG_RANS == 0 => {
                            return Err(ctx(ChunkFault::CodecNotFlagged { plane: p, codec }));
                        }
                        PlaneCodec::Split if header.flags & FLAG_SPLIT == 0 => {
                            return Err(ctx(ChunkFault::CodecNotFlagged { plane: p, codec }));
                        }
                        PlaneCodec::Runs if header.flags & FLAG_RUNS == 0 => {
                            return Err(ctx(ChunkFault::CodecNotFlagged { plane: p, codec }));
                        }
                        PlaneCodec::Rans32 if header.flags & FLAG_RANS32 == 0 => {
                            return Err(ctx(ChunkFault::CodecNotFlagged { plane: p, codec }));
                        }
                        PlaneCodec::Split if p == 0 || (sparse && p == 1) => {
                            return Err(ctx(ChunkFault::SplitFirst));
                        }
                        // Key, part A's codec and length, part B's codec.
                        PlaneCodec::Split => stored_len >= 7,
                        PlaneCodec::Runs => stored_len as usize >= crate::runs::OVERHEAD,
                        PlaneCodec::Huffman
                        | PlaneCodec::Zstd
                        | PlaneCodec::Rans
                        | PlaneCodec::Rans32 => stored_len > 0,
                    };
                    if !ok {
                        return Err(ctx(ChunkFault::StoredLength {
                            plane: p,
                            codec,
                            stored: stored_len,
                            plane_len,
                        }));
                    }
                    planes.push(PlaneEntry { codec, stored_len });
                }
                let entry = ChunkEntry {
                    raw_len,
                    transform,
                    checksum,
                    planes,
                    stored_offset,
                    raw_offset,
                    segment: si,
                };
                stored_offset = stored_offset
                    .checked_add(entry.stored_len())
                    .ok_or_else(|| bad("chunk lengths overflow".into()))?;
                raw_offset += raw_len as u64;
                chunks.push(entry);
            }
            if raw_offset - seg.offset != seg.len {
                return Err(bad(format!(
                    "{}: chunks hold {} bytes, the segment has {}",
                    seg.describe(),
                    raw_offset - seg.offset,
                    seg.len
                )));
            }
        }
        if stored_offset - HEADER_LEN as u64 != header.payload_len {
            return Err(bad(format!(
                "chunks store {} bytes, the header says the payload has {}",
                stored_offset - HEADER_LEN as u64,
                header.payload_len
            )));
        }
        if r.pos != body.len() {
            return Err(bad(format!(
                "{} unexpected bytes at the end",
                body.len() - r.pos
            )));
        }
        Ok(Index {
            base,
            removed,
            source_files,
            source_tensors,
            segments,
            chunks,
        })
    }
}

/// Appends a tensor record's fields after its kind, length and chunk count
/// (dtype, name, rank, dimensions); nothing for bytes.
fn write_tensor_kind(kind: &SegmentKind, b: &mut Vec<u8>) {
    if let SegmentKind::Tensor { name, dtype, shape } = kind {
        b.push(dtype.code());
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.push(shape.len() as u8);
        for d in shape {
            b.extend_from_slice(&d.to_le_bytes());
        }
    }
}

/// Reads what [`write_tensor_kind`] writes (for `what`, in the errors):
/// the tensor and its length in bytes (`None` if that overflows).
fn read_tensor_kind(r: &mut Reader<'_>, what: &str) -> Result<(SegmentKind, Option<u64>)> {
    let bad = |d: String| Error::corrupt(Region::Index, d);
    let code = r.u8("dtype")?;
    let dtype =
        Dtype::from_code(code).ok_or_else(|| bad(format!("{what}: unknown dtype code {code}")))?;
    let name_len = r.u16("name length")? as usize;
    let name = std::str::from_utf8(r.take(name_len, "tensor name")?)
        .map_err(|_| bad(format!("{what}: tensor name is not UTF-8")))?
        .to_string();
    let rank = r.u8("rank")? as usize;
    if rank > MAX_RANK {
        return Err(bad(format!(
            "tensor {}: rank {rank} exceeds {MAX_RANK}",
            quote_name(&name)
        )));
    }
    let mut shape = Vec::with_capacity(rank);
    for _ in 0..rank {
        shape.push(r.u64("dimension")?);
    }
    let elems = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let bytes = elems.and_then(|e| e.checked_mul(dtype.width() as u64));
    Ok((SegmentKind::Tensor { name, dtype, shape }, bytes))
}

fn describe_kind(kind: &SegmentKind, offset: u64) -> String {
    match kind {
        SegmentKind::Bytes => format!("bytes at offset {offset}"),
        SegmentKind::Tensor { name, .. } => format!("tensor {}", quote_name(name)),
    }
}

/// Checks a derived segment's reference (FORMAT.md, "Derived tensors"): the
/// source exists, is a tensor (plain or delta) that is not derived (so
/// there are no chains and no cycles), the op fits both dtypes, and the
/// source holds every element the derived tensor takes from it. The errors
/// name both tensors.
fn check_derived(
    seg: &Segment,
    segments: &[Segment],
    files: &[SourceFile],
    external: &[SourceTensor],
) -> Result<()> {
    let Some(d) = &seg.derived else {
        return Ok(());
    };
    let SegmentKind::Tensor { name, dtype, .. } = &seg.kind else {
        unreachable!("only tensor records have kind 3")
    };
    let bad = |what: String| {
        Error::corrupt(
            Region::Index,
            format!("derived tensor {}: {what}", quote_name(name)),
        )
    };
    let elems = seg.len / dtype.width() as u64;
    let mut covered = 0u64;
    for (k, p) in d.pieces.iter().enumerate() {
        // A source past the segments is a tensor of another file.
        let (src, file) = match segments.get(p.source) {
            Some(s) => (s, None),
            None => match external.get(p.source - segments.len()) {
                Some(t) => (&t.segment, Some(&files[t.file])),
                None => {
                    return Err(bad(format!(
                        "the source of piece {k}, segment {}, does not exist (the container has {} segments and {} source tensors)",
                        p.source,
                        segments.len(),
                        external.len()
                    )));
                }
            },
        };
        let SegmentKind::Tensor {
            name: sname,
            dtype: sdtype,
            ..
        } = &src.kind
        else {
            return Err(bad(format!(
                "the source of piece {k}, segment {} ({}), is not a tensor",
                p.source,
                src.describe()
            )));
        };
        let sq = match file {
            None => quote_name(sname),
            Some(f) => format!(
                "{} of source file {}",
                quote_name(sname),
                quote_name(&f.name)
            ),
        };
        if std::ptr::eq(src, seg) {
            return Err(bad("it names itself as its source (a cycle)".into()));
        }
        if let Some(sd) = &src.derived {
            let far = segments
                .get(sd.source())
                .map_or_else(|| format!("segment {}", sd.source()), Segment::describe);
            return Err(bad(format!(
                "its source, tensor {sq}, is itself derived (from {far}); chains and cycles are refused"
            )));
        }
        if !d.op.allows(*dtype, *sdtype) {
            return Err(bad(format!(
                "op {} does not derive a {dtype} tensor from tensor {sq} of {sdtype}",
                d.op.name()
            )));
        }
        let src_elems = src.len / sdtype.width() as u64;
        if p.elems == 0
            || p.source_elem
                .checked_add(p.elems)
                .is_none_or(|end| end > src_elems)
        {
            return Err(bad(format!(
                "piece {k} takes elements {}..{}+{} of tensor {sq}, which has {src_elems}",
                p.source_elem, p.source_elem, p.elems
            )));
        }
        covered = covered.saturating_add(p.elems);
    }
    if covered != elems {
        return Err(bad(format!(
            "its pieces cover {covered} elements, the tensor has {elems}"
        )));
    }
    Ok(())
}

/// A bounds-checked little-endian reader over the index bytes.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.b.get(self.pos..end))
            .ok_or(Error::Corrupt {
                region: Region::Index,
                reason: Corruption::Truncated {
                    at: self.pos,
                    field: what,
                },
            })?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
}
