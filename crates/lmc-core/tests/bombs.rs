//! Memory and time bombs: small containers, crafted with every checksum
//! right, that declare far more work than lmc's encoder would ever ask of
//! a reader. Each must be refused with an error naming where, before the
//! work is done (issue 15, item 5). `tests/decode_memory.rs` measures the
//! memory of the largest chunks the limits allow.
//!
//! `LMC_BOMBS_DIR=DIR cargo test -p lmc-core --test bombs -- --ignored`
//! writes the bombs to DIR, to measure a build's `lmc verify` on them.

mod common;
use common::{CraftChunk, craft};

use lmc_core::codec::PlaneCodec;
use lmc_core::format::{FLAG_RANS, FLAG_RANS32, Header, MAX_CHUNK_LEN};
use lmc_core::{
    ChunkFault, CompressOptions, Container, Corruption, DecodeError, Dtype, Error, Region,
    SegmentKind, SegmentSpec, TableFault,
};

fn bf16(name: &str) -> SegmentKind {
    SegmentKind::Tensor {
        name: name.into(),
        dtype: Dtype::BF16,
        shape: vec![],
    }
}

/// A chunk of `raw_len` bytes whose `planes` planes are each one constant byte.
fn constant(raw_len: u32, planes: usize) -> CraftChunk {
    CraftChunk {
        raw_len,
        planes: vec![(PlaneCodec::Constant, vec![0]); planes],
    }
}

/// A byte segment of `n` chunks of `raw_len` bytes, each one plane coded `block`.
fn bytes_of(
    n: usize,
    raw_len: u32,
    codec: PlaneCodec,
    block: &[u8],
) -> (SegmentKind, Vec<CraftChunk>) {
    let chunks = (0..n)
        .map(|_| CraftChunk {
            raw_len,
            planes: vec![(codec, block.to_vec())],
        })
        .collect();
    (SegmentKind::Bytes, chunks)
}

/// The reported 206-byte container: a BF16 tensor of two 256 MiB chunks,
/// both planes constant (1.05 GB of memory to verify, before).
fn huge_chunks() -> Vec<u8> {
    craft(
        0,
        vec![(bf16("w"), vec![constant(1 << 28, 2), constant(1 << 28, 2)])],
        0,
    )
}

/// The reported 78 KB container declaring 1.1 TB: 4100 constant chunks of
/// 256 MiB (43 s to verify, before).
fn terabyte() -> Vec<u8> {
    craft(
        0,
        vec![bytes_of(4100, 1 << 28, PlaneCodec::Constant, &[0])],
        0,
    )
}

/// An rANS block of one symbol, frequency 4096: the states never move, so
/// it decodes any number of symbols from no stream at all.
fn rans_one_symbol() -> Vec<u8> {
    let mut b = vec![0u8, 0x90, 0x00];
    for _ in 0..4 {
        b.extend_from_slice(&(1u32 << 23).to_le_bytes());
    }
    b
}

/// An rANS block of symbols 0 (frequency 4095) and 1 (frequency 1) with an
/// empty stream: valid for a few symbols, claimed for a whole chunk.
fn rans_skewed_empty() -> Vec<u8> {
    let mut b = vec![1u8, 0x8F, 0xFF, 1];
    for _ in 0..4 {
        b.extend_from_slice(&(1u32 << 23).to_le_bytes());
    }
    b
}

/// The reported 685-byte rANS container, at its old size: 16 chunks of
/// 256 MiB, each an rANS block of one symbol (4.5 s, before).
fn rans_bomb() -> Vec<u8> {
    craft(
        FLAG_RANS,
        vec![bytes_of(16, 1 << 28, PlaneCodec::Rans, &rans_one_symbol())],
        0,
    )
}

fn open_err(file: &[u8]) -> Error {
    Container::open(file).expect_err("the bomb must be refused at open")
}

#[test]
fn chunks_above_the_limit_are_refused_at_open() {
    for (file, chunk) in [(huge_chunks(), 0), (terabyte(), 0), (rans_bomb(), 0)] {
        match open_err(&file) {
            Error::Corrupt {
                region: Region::Index,
                reason:
                    Corruption::Chunk {
                        chunk: c,
                        fault: ChunkFault::TooLarge { len, limit, .. },
                        ..
                    },
            } => assert_eq!((c, limit), (chunk, 4194304), "length {len}"),
            e => panic!("wrong error: {e}"),
        }
    }
    // One byte (one element) past the limit, after a chunk at it.
    let file = craft(
        0,
        vec![(
            bf16("w"),
            vec![constant(MAX_CHUNK_LEN, 2), constant(MAX_CHUNK_LEN + 2, 2)],
        )],
        0,
    );
    let e = open_err(&file);
    assert!(
        matches!(
            &e,
            Error::Corrupt {
                reason: Corruption::Chunk {
                    chunk: 1,
                    fault: ChunkFault::TooLarge { len: 4194306, .. },
                    ..
                },
                ..
            }
        ),
        "{e}"
    );
    let e = e.to_string();
    assert!(
        e.contains("chunk 1 (tensor \"w\")") && e.contains("index byte"),
        "{e}"
    );
}

#[test]
fn a_chunk_at_the_limit_decodes() {
    let chunks = vec![constant(MAX_CHUNK_LEN, 2)];
    let probe = craft(0, vec![(bf16("w"), chunks)], 0);
    let mut bytes = Vec::new();
    Container::open(&probe)
        .unwrap()
        .decode_chunk(0, &mut bytes)
        .unwrap();
    assert_eq!(bytes.len(), MAX_CHUNK_LEN as usize);
    let file = craft(
        0,
        vec![(bf16("w"), vec![constant(MAX_CHUNK_LEN, 2)])],
        xxhash_rust::xxh3::xxh3_128(&bytes),
    );
    Container::open(&file)
        .unwrap()
        .verify(&mut |_| true)
        .unwrap();
}

/// The declared original length must be what the index's chunks add up to.
#[test]
fn an_original_length_the_chunks_do_not_cover_is_refused() {
    let mut file = craft(0, vec![bytes_of(2, 4096, PlaneCodec::Constant, &[7])], 0);
    let mut header = Header::parse(&file).unwrap();
    header.original_len = 1 << 40;
    file[..64].copy_from_slice(&header.to_bytes());
    match open_err(&file) {
        Error::Corrupt {
            region: Region::Index,
            reason: Corruption::Coverage { covered, original },
        } => assert_eq!((covered, original), (8192, 1 << 40)),
        e => panic!("wrong error: {e}"),
    }
}

/// The plane error of verifying `file`, whose chunks are each one plane
/// of `block_len` stored bytes; checks the offset it names. (Chunks decode
/// in parallel: any of the identical ones may be the one reported.)
fn verify_err(file: &[u8], block_len: u64) -> (usize, usize, DecodeError) {
    let c = Container::open(file).unwrap();
    match c.verify(&mut |_| true).unwrap_err() {
        Error::PlaneDecode {
            chunk,
            plane,
            offset,
            reason,
            ..
        } => {
            assert_eq!(offset, 64 + chunk as u64 * block_len, "chunk {chunk}");
            (chunk, plane, *reason)
        }
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn hostile_rans_blocks_fail_before_decoding() {
    // Within the chunk limit, the one-symbol block is refused outright
    // (before, it decoded: a constant plane under another name).
    let file = craft(
        FLAG_RANS,
        vec![bytes_of(
            3,
            MAX_CHUNK_LEN,
            PlaneCodec::Rans,
            &rans_one_symbol(),
        )],
        0,
    );
    let (chunk, plane, reason) = verify_err(&file, rans_one_symbol().len() as u64);
    assert!(chunk < 3 && plane == 0, "chunk {chunk}, plane {plane}");
    assert_eq!(
        reason,
        DecodeError::BadTable {
            codec: PlaneCodec::Rans,
            fault: TableFault::SingleSymbol {
                symbol: 0,
                frequency: 4096
            }
        }
    );
    // A skewed block with no stream cannot hold a chunk of symbols: refused
    // up front (before, after decoding them all).
    let file = craft(
        FLAG_RANS,
        vec![bytes_of(
            3,
            MAX_CHUNK_LEN,
            PlaneCodec::Rans,
            &rans_skewed_empty(),
        )],
        0,
    );
    let (chunk, plane, reason) = verify_err(&file, rans_skewed_empty().len() as u64);
    assert!(chunk < 3 && plane == 0, "chunk {chunk}, plane {plane}");
    assert!(
        matches!(
            reason,
            DecodeError::TooManySymbols {
                codec: PlaneCodec::Rans,
                bytes: 0,
                symbols: 4194304,
                ..
            }
        ),
        "{reason}"
    );
}

/// An rANS32 block of `freqs` (a table as in rANS blocks) with every state
/// at its final value and an empty stream.
fn rans32_empty(freqs: &[u8]) -> Vec<u8> {
    let mut b = freqs.to_vec();
    for _ in 0..32 {
        b.extend_from_slice(&(1u32 << 15).to_le_bytes());
    }
    b
}

#[test]
fn hostile_rans32_blocks_fail_before_decoding() {
    // One symbol: refused outright.
    let one = rans32_empty(&[0, 0x90, 0x00]);
    let file = craft(
        FLAG_RANS32,
        vec![bytes_of(3, MAX_CHUNK_LEN, PlaneCodec::Rans32, &one)],
        0,
    );
    let (chunk, plane, reason) = verify_err(&file, one.len() as u64);
    assert!(chunk < 3 && plane == 0, "chunk {chunk}, plane {plane}");
    assert_eq!(
        reason,
        DecodeError::BadTable {
            codec: PlaneCodec::Rans32,
            fault: TableFault::SingleSymbol {
                symbol: 0,
                frequency: 4096
            }
        }
    );
    // Symbols 0 (4095) and 1 (1) and no stream, claimed for a whole chunk:
    // refused before any symbol is decoded.
    let skewed = rans32_empty(&[1, 0x8F, 0xFF, 1]);
    let file = craft(
        FLAG_RANS32,
        vec![bytes_of(3, MAX_CHUNK_LEN, PlaneCodec::Rans32, &skewed)],
        0,
    );
    let (chunk, plane, reason) = verify_err(&file, skewed.len() as u64);
    assert!(chunk < 3 && plane == 0, "chunk {chunk}, plane {plane}");
    assert!(
        matches!(
            reason,
            DecodeError::TooManySymbols {
                codec: PlaneCodec::Rans32,
                bytes: 0,
                symbols: 4194304,
                limit: 3_328_000,
                ..
            }
        ),
        "{reason}"
    );
}

#[test]
fn hostile_huffman_streams_fail_before_decoding() {
    // Symbols 0 and 1, one bit each; three empty streams and one of a byte,
    // claimed for 4 MiB of symbols.
    let block = [1u8, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xAA];
    let file = craft(
        0,
        vec![bytes_of(1, MAX_CHUNK_LEN, PlaneCodec::Huffman, &block)],
        0,
    );
    let (chunk, plane, reason) = verify_err(&file, block.len() as u64);
    assert!(chunk < 3 && plane == 0, "chunk {chunk}, plane {plane}");
    assert_eq!(
        reason,
        DecodeError::TooManySymbols {
            codec: PlaneCodec::Huffman,
            stream: 0,
            bytes: 0,
            symbols: 1048576,
            limit: 0
        }
    );
}

/// Every front end compresses through these checks.
#[test]
fn chunk_sizes_and_threads_outside_the_limits_are_refused() {
    use lmc_core::{MAX_CHUNK_SIZE, MAX_THREADS, MIN_CHUNK_SIZE, check_threads, max_threads};
    let data = vec![0u8; 10_000];
    let layout = [SegmentSpec {
        kind: SegmentKind::Bytes,
        len: data.len() as u64,
    }];
    let run = |size: usize| {
        let mut out = std::io::Cursor::new(Vec::new());
        let o = CompressOptions::default().chunk_size(size);
        lmc_core::compress(&data, &layout, &o, &mut out, &mut |_| true)
    };
    for bad in [0, 1, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, 1 << 28] {
        match run(bad) {
            Err(Error::InvalidInput(d)) => assert!(d.contains("outside 4 KiB..=4 MiB"), "{d}"),
            other => panic!("chunk size {bad}: {other:?}"),
        }
    }
    for good in [MIN_CHUNK_SIZE, 5000, MAX_CHUNK_SIZE] {
        run(good).unwrap();
    }
    let max = max_threads();
    assert!((1..=MAX_THREADS).contains(&max));
    assert_eq!(check_threads(1).unwrap(), 1);
    assert_eq!(check_threads(max).unwrap(), max);
    for bad in [0, max + 1, 100_000] {
        assert!(matches!(check_threads(bad), Err(Error::InvalidInput(_))));
    }
}

/// Writes the bombs to `$LMC_BOMBS_DIR`, to measure a build on them.
#[test]
#[ignore]
fn write_bombs() {
    let dir = std::path::PathBuf::from(std::env::var("LMC_BOMBS_DIR").expect("LMC_BOMBS_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let within = |n| {
        craft(
            0,
            vec![bytes_of(n, MAX_CHUNK_LEN, PlaneCodec::Constant, &[0])],
            0,
        )
    };
    for (name, file) in [
        ("huge-chunks.lmc", huge_chunks()),
        ("terabyte.lmc", terabyte()),
        ("rans.lmc", rans_bomb()),
        // The most output a 78 KB file can claim within the limits.
        ("terabyte-within.lmc", within(4100)),
    ] {
        std::fs::write(dir.join(name), file).unwrap();
    }
}

/// Index errors about a tensor quote a hostile 60 KB name by its start.
#[test]
fn index_errors_quote_long_names_short() {
    let name = "n".repeat(60_000);
    let file = craft(0, vec![(bf16(&name), vec![constant(4096, 2)])], 0);
    let header = Header::parse(&file).unwrap();
    let start = 64 + header.payload_len as usize;
    let at = start
        + file[start..]
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap()
        + name.len();
    let refix = |f: &mut Vec<u8>| {
        let n = f.len();
        let sum = xxhash_rust::xxh3::xxh3_64(&f[start..n - 8]);
        f[n - 8..].copy_from_slice(&sum.to_le_bytes());
    };
    // A shape that does not match the length.
    let mut f = file.clone();
    f[at + 1] ^= 1;
    refix(&mut f);
    // A rank above the limit (the dimensions then run on into the chunk table).
    let mut g = file.clone();
    g[at] = 65;
    refix(&mut g);
    for (f, what) in [(f, "does not match"), (g, "rank 65 exceeds 64")] {
        let e = open_err(&f);
        assert!(
            matches!(
                e,
                Error::Corrupt {
                    region: Region::Index,
                    ..
                }
            ),
            "{e}"
        );
        let e = e.to_string();
        assert!(e.len() < 400, "{} bytes: {}", e.len(), &e[..400]);
        assert!(e.contains("(60000 bytes)") && e.contains(what), "{e}");
    }
}
