//! The checks the fuzz targets run. They live in a library so that
//! `crates/lmc-core/tests/fuzz_corpus.rs` can replay the corpus and the saved
//! regressions through the very same code on stable, without cargo-fuzz (it
//! includes this file as a module). Each check panics only on a real bug.

use std::io::Cursor;

// The file-format checks need lmc-tensors and lmc-files, which the lmc-core
// test that includes this file cannot use; cargo-fuzz builds with
// `--cfg fuzzing`, and crates/lmc-files/tests/fuzz_parsers.rs includes
// parsers.rs itself.
#[cfg(fuzzing)]
pub mod parsers;

use lmc_core::format::{HEADER_LEN, Header, Index};
use lmc_core::huffman::{self, MAX_CODE_LEN};
use lmc_core::{CompressOptions, Container, Dtype, SegmentKind, SegmentSpec, compress};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

/// The decode check only decodes containers whose original is at most this
/// large. A few bytes of constant planes may legitimately claim chunks of up
/// to 4 MiB each; decoding many would only make the fuzzer slow.
const MAX_DECODED: u64 = 8 << 20;

/// Opens arbitrary bytes as a container and, if they open, decodes them
/// every way there is. Then does the same after repairing the header, index
/// and chunk checksums and the whole-file hash, so that mutated payloads
/// reach the plane decoders instead of stopping at a checksum.
pub fn decode(data: &[u8]) {
    exercise(data, false);
    if let Some((fixed, all_chunks_decode)) = repair(data) {
        exercise(&fixed, all_chunks_decode);
    }
}

/// `verify`, `read_tensor` of every tensor and `decompress_to` must agree
/// with each other; with `must_verify`, they must succeed.
fn exercise(data: &[u8], must_verify: bool) {
    let Ok(c) = Container::open(data) else {
        assert!(!must_verify, "a repaired container must open");
        return;
    };
    if c.header().original_len > MAX_DECODED {
        return;
    }
    // A delta container is decoded against a base of zeros of the length it
    // names, its hash taken as given, so that mutations reach the delta
    // paths (split planes among them) instead of stopping at a missing base.
    let base;
    let c = match c.base_ref() {
        Some(b) if b.len <= MAX_DECODED => {
            base = vec![0u8; b.len as usize];
            match c.with_base_hashed(&base, b.hash) {
                Ok(c) => c,
                Err(_) => return,
            }
        }
        Some(_) => return,
        None => c,
    };
    let verified = c.verify(&mut |_| true);
    if let (true, Err(e)) = (must_verify, &verified) {
        panic!("repaired container whose chunks all decode fails verify: {e}");
    }
    let mut out = Vec::new();
    let decompressed = c.decompress_to(&mut out, &mut |_| true);
    assert_eq!(verified.is_ok(), decompressed.is_ok());
    if decompressed.is_ok() {
        assert_eq!(out.len() as u64, c.header().original_len);
        assert_eq!(xxh3_128(&out), c.header().original_hash);
    }
    for seg in c.segments() {
        if let SegmentKind::Tensor { name, .. } = &seg.kind {
            let tensor = c.read_tensor(name);
            // Names may repeat in a crafted index; the first one is read.
            let first = c
                .segments()
                .iter()
                .find(|s| matches!(&s.kind, SegmentKind::Tensor { name: n, .. } if n == name))
                .unwrap();
            if let (Ok(t), true) = (&tensor, decompressed.is_ok()) {
                let range = first.offset as usize..(first.offset + first.len) as usize;
                assert!(
                    t[..] == out[range],
                    "read_tensor disagrees with decompress_to"
                );
            }
            if let Ok(t) = &tensor {
                assert_eq!(t.len() as u64, first.len);
            }
        }
    }
}

/// Rewrites `data` so that every checksum in it is right: the index length
/// (from the payload length), the header checksum, the index checksum, each
/// chunk's checksum, and the whole-file hash when every chunk decodes.
/// Returns the bytes and whether every chunk decoded; `None` where the
/// header's payload length does not even leave room for an index.
fn repair(data: &[u8]) -> Option<(Vec<u8>, bool)> {
    if data.len() < HEADER_LEN + 8 {
        return None;
    }
    let mut f = data.to_vec();
    let u64_at = |f: &[u8], o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
    let index_start = usize::try_from(u64_at(&f, 40))
        .ok()?
        .checked_add(HEADER_LEN)?;
    if index_start.checked_add(8)? > f.len() {
        return None;
    }
    let index_len = (f.len() - index_start) as u64;
    f[48..56].copy_from_slice(&index_len.to_le_bytes());
    let fix_header = |f: &mut [u8]| {
        let sum = xxh3_64(&f[..56]);
        f[56..64].copy_from_slice(&sum.to_le_bytes());
    };
    let fix_index = |f: &mut [u8]| {
        let end = f.len() - 8;
        let sum = xxh3_64(&f[index_start..end]);
        f[end..].copy_from_slice(&sum.to_le_bytes());
    };
    fix_header(&mut f);
    fix_index(&mut f);

    let (index_parts, original_len) = {
        let Ok(c) = Container::open(&f) else {
            return Some((f, false));
        };
        let index = Index {
            base: c.base_ref(),
            removed: c.removed().to_vec(),
            source_files: c.source_files().to_vec(),
            source_tensors: c.source_tensors().to_vec(),
            segments: c.segments().to_vec(),
            chunks: c.chunks().to_vec(),
        };
        // The index format is canonical: what parses serialises back to the same bytes.
        assert!(
            index.to_bytes() == f[index_start..],
            "a parsed index does not serialise back to its bytes"
        );
        (index, c.header().original_len)
    };
    let Index {
        base,
        removed,
        source_files,
        source_tensors,
        segments,
        chunks,
    } = index_parts;
    let chunks = chunks
        .into_iter()
        .map(|mut ch| {
            let start = ch.stored_offset as usize;
            ch.checksum = xxh3_64(&f[start..start + ch.stored_len() as usize]);
            ch
        })
        .collect();
    let index = Index {
        base,
        removed,
        source_files,
        source_tensors,
        segments,
        chunks,
    }
    .to_bytes();
    assert_eq!(index.len() as u64, index_len);
    f[index_start..].copy_from_slice(&index);

    if original_len > MAX_DECODED {
        return Some((f, false));
    }
    let c = Container::open(&f).expect("a container that opened still opens");
    let mut original = Vec::new();
    let mut buf = Vec::new();
    for i in 0..c.chunks().len() {
        if c.decode_chunk(i, &mut buf).is_err() {
            return Some((f, false));
        }
        assert_eq!(buf.len(), c.chunks()[i].raw_len as usize);
        original.extend_from_slice(&buf);
    }
    assert_eq!(original.len() as u64, original_len);
    let header = Header {
        original_hash: xxh3_128(&original),
        ..c.header().clone()
    };
    f[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    Some((f, true))
}

/// `huffman::decode` on arbitrary bytes, the output length taken from the
/// first two bytes; then the same bytes, as symbols, must survive
/// `huffman::encode` and `huffman::decode`.
pub fn huffman(data: &[u8]) {
    let Some((len, block)) = data.split_first_chunk::<2>() else {
        return;
    };
    let n = (u16::from_le_bytes(*len) as usize).min(1 << 20);
    let mut out = vec![0u8; n];
    let _ = huffman::decode(block, &mut out);

    let hist = huffman::histogram(block);
    let mut encoded = Vec::new();
    if let Some(lengths) = huffman::encode(block, &hist, &mut encoded) {
        assert!(lengths.iter().all(|&l| l as u32 <= MAX_CODE_LEN));
        assert!(encoded.len() <= huffman::encoded_size(&hist, &lengths));
        let mut back = vec![0u8; block.len()];
        huffman::decode(&encoded, &mut back).expect("a block we encoded decodes");
        assert!(back == block, "Huffman round trip changed the bytes");
    }
}

/// The `runs` target: a runs block (output length from the first two
/// bytes) decodes or is refused, never panics; the same bytes as a plane,
/// run coded by the sparse map's encoder where 0 fills half of them, decode
/// back to themselves.
pub fn runs(data: &[u8]) {
    use lmc_core::codec::{PlaneCodec, Tuning, decode_plane, encode_map};
    let Some((len, block)) = data.split_first_chunk::<2>() else {
        return;
    };
    let n = (u16::from_le_bytes(*len) as usize).min(1 << 20);
    let mut out = vec![0u8; n];
    let _ = decode_plane(PlaneCodec::Runs, block, &mut out);

    let mut encoded = Vec::new();
    let codec = encode_map(block, &Tuning::DEFAULT, &mut encoded);
    let mut back = vec![0u8; block.len()];
    decode_plane(codec, &encoded, &mut back).expect("a plane we encoded decodes");
    assert!(back == block, "runs round trip changed the bytes");
}

/// An rANS32 block (codec 7) on arbitrary bytes (output length from the
/// first two bytes): the SIMD decoder and the scalar reference give the
/// same result, never a panic; then the same bytes as a plane survive
/// `rans32::encode` + `decode`.
pub fn rans32(data: &[u8]) {
    use lmc_core::{huffman, rans32};
    let Some((len, block)) = data.split_first_chunk::<2>() else {
        return;
    };
    let n = u16::from_le_bytes(*len) as usize;
    let (mut fast, mut reference) = (vec![0u8; n], vec![0u8; n]);
    let got = rans32::decode(block, &mut fast);
    assert_eq!(got, rans32::decode_reference(block, &mut reference));
    if got.is_ok() {
        assert!(fast == reference, "the kernels and the reference differ");
    }

    let hist = huffman::histogram(block);
    if hist.iter().filter(|&&c| c > 0).count() >= 2 {
        let mut encoded = Vec::new();
        rans32::encode(block, &hist, &mut encoded);
        let mut back = vec![0u8; block.len()];
        rans32::decode(&encoded, &mut back).expect("a block we encoded decodes");
        assert!(back == block, "rANS32 round trip changed the bytes");
    }
}

/// Chunk sizes picked by the high nibble of the first byte.
/// The encoder takes 4 KiB to 4 MiB (`lmc_core::MIN_CHUNK_SIZE`..=`MAX_CHUNK_SIZE`).
const CHUNK_SIZES: [usize; 16] = [
    4096,
    4097,
    4098,
    4099,
    4100,
    4101,
    4103,
    4104,
    4111,
    4999,
    5000,
    8191,
    8192,
    65536,
    1 << 20,
    4 << 20,
];

/// Compress then decompress. The first byte picks the dtype (low nibble)
/// and the chunk size (high nibble); the rest is one tensor of that dtype,
/// followed by a plain-bytes segment with the bytes left over (fewer than
/// one element), then a copy of the tensor and, for F32, its roundings to
/// BF16 and F16 with their low bytes XORed with the input's first bytes
/// (derived tensors, FORMAT.md "Derived tensors", with residues).
pub fn roundtrip(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let dtype = Dtype::ALL[(sel & 0x0F) as usize % Dtype::ALL.len()];
    let chunk_size = CHUNK_SIZES[(sel >> 4) as usize];
    let n = input.len() / dtype.width();
    let tensor_len = (n * dtype.width()) as u64;
    let t = |name: &str, dtype: Dtype| SegmentSpec {
        kind: SegmentKind::Tensor {
            name: name.into(),
            dtype,
            shape: vec![n as u64],
        },
        len: (n * dtype.width()) as u64,
    };
    let mut layout = vec![
        t("t", dtype),
        SegmentSpec {
            kind: SegmentKind::Bytes,
            len: input.len() as u64 - tensor_len,
        },
        t("copy", dtype),
    ];
    let mut file = input.to_vec();
    file.extend_from_slice(&input[..tensor_len as usize]);
    if dtype == Dtype::F32 {
        for (name, dt, round) in [
            (
                "bf16",
                Dtype::BF16,
                lmc_core::derive::bf16_bits as fn(u32) -> u16,
            ),
            ("f16", Dtype::F16, lmc_core::derive::f16_bits),
        ] {
            layout.push(t(name, dt));
            for (k, e) in input[..tensor_len as usize].chunks_exact(4).enumerate() {
                let r = round(u32::from_le_bytes(e.try_into().unwrap()));
                file.extend_from_slice(&(r ^ u16::from(input[k % 7])).to_le_bytes());
            }
        }
    }
    let mut out = Cursor::new(Vec::new());
    let options = CompressOptions::default().chunk_size(chunk_size);
    compress(&file, &layout, &options, &mut out, &mut |_| true).expect("compress");
    let packed = out.into_inner();
    let c = Container::open(&packed).expect("open");
    let mut back = Vec::new();
    c.decompress_to(&mut back, &mut |_| true)
        .expect("decompress");
    assert!(back == file, "round trip changed the bytes");
    let mut at = 0usize;
    for spec in &layout {
        let end = at + spec.len as usize;
        if let SegmentKind::Tensor { name, .. } = &spec.kind {
            let t = c.read_tensor(name).expect("read_tensor");
            assert!(t[..] == file[at..end], "read_tensor changed the bytes");
        }
        at = end;
    }
}
