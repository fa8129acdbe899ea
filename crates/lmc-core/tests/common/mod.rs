//! Helpers shared by the integration tests of lmc-core.

#![allow(dead_code)] // each test file uses its own subset

use lmc_core::{Dtype, SegmentKind, SegmentSpec};

/// A small deterministic generator (SplitMix64) for the explicit tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A tensor segment whose length follows from its shape and dtype.
pub fn tensor(name: &str, dtype: Dtype, shape: Vec<u64>) -> SegmentSpec {
    let len = shape.iter().product::<u64>() * dtype.width() as u64;
    SegmentSpec {
        kind: SegmentKind::Tensor {
            name: name.into(),
            dtype,
            shape,
        },
        len,
    }
}

/// One chunk of a [`craft`]ed container: its original length and each
/// plane's codec and stored bytes.
pub struct CraftChunk {
    pub raw_len: u32,
    pub planes: Vec<(lmc_core::codec::PlaneCodec, Vec<u8>)>,
}

/// A container built straight from its parts, as an attacker would: any
/// chunk lengths and plane contents, with every length and checksum in the
/// header and index right, so that a reader's limits are all that stands
/// between it and the work the file asks for. Each segment's length is
/// what its chunks hold (a tensor's shape is made to match); the
/// whole-file hash is `original_hash`, since the decoded bytes are not
/// known.
pub fn craft(
    flags: u16,
    segments: Vec<(SegmentKind, Vec<CraftChunk>)>,
    original_hash: u128,
) -> Vec<u8> {
    use lmc_core::format::{ChunkEntry, HEADER_LEN, Header, Index, PlaneEntry, Segment, Transform};
    let (mut segs, mut chunks, mut payload) = (Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0u64;
    for (si, (mut kind, cs)) in segments.into_iter().enumerate() {
        let len: u64 = cs.iter().map(|c| u64::from(c.raw_len)).sum();
        if let SegmentKind::Tensor { shape, dtype, .. } = &mut kind {
            *shape = vec![len / dtype.width() as u64];
        }
        segs.push(Segment {
            kind,
            base_offset: None,
            derived: None,
            offset,
            len,
            first_chunk: chunks.len(),
            chunk_count: cs.len(),
        });
        let mut raw_offset = offset;
        for c in cs {
            let stored_offset = (HEADER_LEN + payload.len()) as u64;
            let start = payload.len();
            let planes = c
                .planes
                .iter()
                .map(|(codec, bytes)| {
                    payload.extend_from_slice(bytes);
                    PlaneEntry {
                        codec: *codec,
                        stored_len: bytes.len() as u32,
                    }
                })
                .collect();
            chunks.push(ChunkEntry {
                raw_len: c.raw_len,
                transform: Transform::None,
                checksum: xxhash_rust::xxh3::xxh3_64(&payload[start..]),
                planes,
                stored_offset,
                raw_offset,
                segment: si,
            });
            raw_offset += u64::from(c.raw_len);
        }
        offset += len;
    }
    let index = Index {
        base: None,
        removed: Vec::new(),
        segments: segs,
        chunks,
        ..Default::default()
    }
    .to_bytes();
    let header = Header {
        version: lmc_core::format::VERSION_1,
        flags,
        original_len: offset,
        original_hash,
        payload_len: payload.len() as u64,
        index_len: index.len() as u64,
    };
    let mut file = header.to_bytes().to_vec();
    file.extend_from_slice(&payload);
    file.extend_from_slice(&index);
    file
}

/// Rewrites the index of `packed` (and the header's flags) through `f`.
pub fn rewrite(packed: &[u8], f: impl FnOnce(&mut lmc_core::format::Index, &mut u16)) -> Vec<u8> {
    use lmc_core::format::{HEADER_LEN, Header, Index};
    let mut header = Header::parse(packed).unwrap();
    let start = HEADER_LEN + header.payload_len as usize;
    let mut index = Index::parse(&packed[start..], &header).unwrap();
    f(&mut index, &mut header.flags);
    let bytes = index.to_bytes();
    header.index_len = bytes.len() as u64;
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(&packed[HEADER_LEN..start]);
    out.extend_from_slice(&bytes);
    out
}

/// The error of opening `file`, which must be refused.
pub fn refused(file: &[u8]) -> String {
    match lmc_core::Container::open(file) {
        Ok(_) => panic!("a bad reference was accepted"),
        Err(e) => e.to_string(),
    }
}
