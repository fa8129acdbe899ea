//! Integration tests of the `lmc` binary: the v1 golden container, round
//! trips, corrupted and hostile containers, and the safety of the files lmc
//! touches.
//!
//! The golden files live in `tests/data/v1/` at the repository root and are
//! never regenerated (see the README there).

mod common;
use common::{lmc, text};

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tempfile::TempDir;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const HEADER_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"\x89LMC\r\n\x1a\n";

/// Facts about the golden files, fixed forever.
const SMALL_LEN: usize = 29_272;
const SMALL_LMC_LEN: usize = 25_352;
const SMALL_LMC_PAYLOAD_LEN: u64 = 23_378;
const SMALL_LMC_INDEX_LEN: u64 = 1_910;
const SMALL_LMC_CHUNKS: usize = 28;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/v1")
}

fn small() -> Vec<u8> {
    let b = fs::read(data_dir().join("small.safetensors")).unwrap();
    assert_eq!(b.len(), SMALL_LEN, "small.safetensors was changed");
    b
}

fn small_lmc() -> Vec<u8> {
    let b = fs::read(data_dir().join("small.safetensors.lmc")).unwrap();
    assert_eq!(b.len(), SMALL_LMC_LEN, "small.safetensors.lmc was changed");
    b
}

fn tmp() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// Runs `lmc ARGS`, asserts it succeeded with nothing on stderr, returns stdout.
fn ok<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> String {
    let out = lmc(dir, args);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "lmc {shown:?} failed:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "", "lmc {shown:?} wrote to stderr");
    text(&out.stdout)
}

/// Runs `lmc ARGS`, asserts it exited with status 1, nothing on stdout, and
/// an `lmc: error: ` line on stderr containing every one of `needles`.
/// Returns stderr.
fn fails<S: AsRef<OsStr>>(dir: &Path, args: &[S], needles: &[&str]) -> String {
    let out = lmc(dir, args);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "lmc {shown:?}: expected exit status 1\nstdout: {}\nstderr: {err}",
        text(&out.stdout)
    );
    assert_eq!(text(&out.stdout), "", "lmc {shown:?} wrote to stdout");
    assert!(
        err.starts_with("lmc: error: ") && err.ends_with('\n') && err.lines().count() == 1,
        "lmc {shown:?}: not one error line: {err:?}"
    );
    for n in needles {
        assert!(err.contains(n), "lmc {shown:?}: stderr lacks {n:?}: {err}");
    }
    err
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn info_json(dir: &Path, container: &str) -> Value {
    let out = ok(dir, &["info", "--json", container]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("info --json: {e}: {out}"))
}

/// Compresses `bytes` with `compress_args`, verifies the container,
/// decompresses it and checks the result is `bytes`; `global` (such as
/// `--threads 1`) goes to every command. Returns the container.
fn roundtrip_with(bytes: &[u8], global: &[&str], compress_args: &[&str]) -> Vec<u8> {
    let dir = tmp();
    let d = dir.path();
    fs::write(d.join("in.bin"), bytes).unwrap();
    let hash = xxh3_128(bytes);

    let mut args = global.to_vec();
    args.extend(["compress", "in.bin"]);
    args.extend(compress_args);
    let out = ok(d, &args);
    assert!(
        out.starts_with("in.bin -> in.bin.lmc: "),
        "compress summary: {out}"
    );
    assert_eq!(listing(d), names(&["in.bin", "in.bin.lmc"]));
    let container = fs::read(d.join("in.bin.lmc")).unwrap();
    assert_eq!(&container[..8], MAGIC);
    assert_eq!(
        u64::from_le_bytes(container[16..24].try_into().unwrap()),
        bytes.len() as u64
    );
    assert_eq!(
        u128::from_le_bytes(container[24..40].try_into().unwrap()),
        hash
    );

    let mut args = global.to_vec();
    args.extend(["verify", "in.bin.lmc"]);
    let out = ok(d, &args);
    assert!(out.starts_with("in.bin.lmc: OK ("), "verify: {out}");

    let mut args = global.to_vec();
    args.extend(["decompress", "in.bin.lmc", "-o", "out.bin"]);
    let out = ok(d, &args);
    assert!(
        out.starts_with("in.bin.lmc -> out.bin: "),
        "decompress summary: {out}"
    );
    let restored = fs::read(d.join("out.bin")).unwrap();
    assert!(restored == bytes, "round trip differs from the input");
    // The input was not touched, and no temporary files are left.
    assert_eq!(xxh3_128(&fs::read(d.join("in.bin")).unwrap()), hash);
    assert_eq!(listing(d), names(&["in.bin", "in.bin.lmc", "out.bin"]));
    container
}

fn roundtrip(bytes: &[u8]) -> Vec<u8> {
    roundtrip_with(bytes, &[], &[])
}

// ---------------------------------------------------------------------------
// A minimal reader of the container layout (FORMAT.md), to find the byte
// positions of each region in the tests below.
// ---------------------------------------------------------------------------

struct Chunk {
    /// Where the chunk's stored bytes are in the container.
    stored_offset: u64,
    stored_len: u64,
    /// Where the chunk's entry in the chunk table is in the container.
    entry_at: usize,
    /// `tensor "name"` or `bytes at offset N`, as lmc describes it.
    segment: String,
}

struct Layout {
    payload_len: u64,
    index_start: usize,
    /// Position of the chunk count (the start of the chunk table).
    chunk_table_at: usize,
    chunks: Vec<Chunk>,
}

fn rd<const N: usize>(b: &[u8], at: &mut usize) -> [u8; N] {
    let v = b[*at..*at + N].try_into().unwrap();
    *at += N;
    v
}

fn parse(c: &[u8]) -> Layout {
    let payload_len = u64::from_le_bytes(c[40..48].try_into().unwrap());
    let index_len = u64::from_le_bytes(c[48..56].try_into().unwrap());
    let index_start = HEADER_LEN + payload_len as usize;
    assert_eq!(index_start + index_len as usize, c.len());
    let mut at = index_start;
    let nseg = u32::from_le_bytes(rd(c, &mut at));
    let mut segs = Vec::new();
    let mut offset = 0u64;
    for _ in 0..nseg {
        let [kind] = rd(c, &mut at);
        let len = u64::from_le_bytes(rd(c, &mut at));
        let nchunks = u32::from_le_bytes(rd(c, &mut at));
        let desc = if kind == 1 {
            let [_dtype] = rd(c, &mut at);
            let name_len = u16::from_le_bytes(rd(c, &mut at)) as usize;
            let name = std::str::from_utf8(&c[at..at + name_len])
                .unwrap()
                .to_string();
            at += name_len;
            let [rank] = rd(c, &mut at);
            at += 8 * rank as usize;
            format!("tensor {name:?}")
        } else {
            assert_eq!(kind, 0);
            format!("bytes at offset {offset}")
        };
        offset += len;
        segs.push((desc, nchunks));
    }
    let chunk_table_at = at;
    let nchunks = u32::from_le_bytes(rd(c, &mut at));
    let mut chunks = Vec::new();
    let mut stored_offset = HEADER_LEN as u64;
    for (desc, n) in &segs {
        for _ in 0..*n {
            let entry_at = at;
            let _raw_len = u32::from_le_bytes(rd(c, &mut at));
            let _sum = u64::from_le_bytes(rd(c, &mut at));
            let [nplanes] = rd(c, &mut at);
            let mut stored_len = 0u64;
            for _ in 0..nplanes {
                let [_codec] = rd(c, &mut at);
                stored_len += u32::from_le_bytes(rd(c, &mut at)) as u64;
            }
            chunks.push(Chunk {
                stored_offset,
                stored_len,
                entry_at,
                segment: desc.clone(),
            });
            stored_offset += stored_len;
        }
    }
    assert_eq!(chunks.len(), nchunks as usize);
    assert_eq!(stored_offset, HEADER_LEN as u64 + payload_len);
    assert_eq!(at + 8, c.len(), "index checksum expected at the end");
    Layout {
        payload_len,
        index_start,
        chunk_table_at,
        chunks,
    }
}

/// Recomputes the index checksum after the index was edited.
fn rehash_index(c: &mut [u8], index_start: usize) {
    let end = c.len() - 8;
    let sum = xxh3_64(&c[index_start..end]);
    c[end..].copy_from_slice(&sum.to_le_bytes());
}

/// A header with a valid checksum.
fn header(original_len: u64, original_hash: u128, payload_len: u64, index_len: u64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    b[0..8].copy_from_slice(MAGIC);
    b[8..10].copy_from_slice(&1u16.to_le_bytes());
    b[16..24].copy_from_slice(&original_len.to_le_bytes());
    b[24..40].copy_from_slice(&original_hash.to_le_bytes());
    b[40..48].copy_from_slice(&payload_len.to_le_bytes());
    b[48..56].copy_from_slice(&index_len.to_le_bytes());
    let sum = xxh3_64(&b[..56]);
    b[56..64].copy_from_slice(&sum.to_le_bytes());
    b
}

/// An index (checksum appended) from its body.
fn index(body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    b.extend_from_slice(&xxh3_64(body).to_le_bytes());
    b
}

/// A container from an index body, with an empty payload and an empty
/// original.
fn container_with_index(original_len: u64, body: &[u8]) -> Vec<u8> {
    let idx = index(body);
    let mut c = header(original_len, xxh3_128(b""), 0, idx.len() as u64);
    c.extend_from_slice(&idx);
    c
}

/// Checks that `verify`, `info` (unless `info_too` is false) and
/// `decompress -o out` all refuse `container` with every one of `needles` in
/// the message, and leave nothing behind.
fn refused(container: &[u8], needles: &[&str], info_too: bool) -> String {
    let dir = tmp();
    let d = dir.path();
    fs::write(d.join("c.lmc"), container).unwrap();
    let err = fails(d, &["verify", "c.lmc"], needles);
    assert!(err.starts_with("lmc: error: c.lmc: "), "{err}");
    if info_too {
        fails(d, &["info", "c.lmc"], needles);
        fails(d, &["info", "--json", "c.lmc"], needles);
    }
    let err2 = fails(d, &["decompress", "c.lmc", "-o", "out"], needles);
    assert_eq!(err, err2, "verify and decompress disagree");
    // Without -o, the default output name is `c`.
    fails(d, &["decompress", "c.lmc"], needles);
    assert_eq!(
        listing(d),
        names(&["c.lmc"]),
        "output or temporary left behind"
    );
    assert!(fs::read(d.join("c.lmc")).unwrap() == container);
    err
}

/// Runs `lmc ARGS` with the address space capped at 1 GiB, so a reader that
/// trusts a length and allocates for it dies instead of succeeding slowly.
#[cfg(target_os = "linux")]
fn lmc_capped(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new("sh")
        .current_dir(dir)
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_lmc"))
        .args(args)
        .output()
        .unwrap()
}

/// Like [`refused`], with memory capped where possible.
fn refused_capped(container: &[u8], needles: &[&str]) -> String {
    #[cfg(target_os = "linux")]
    {
        let dir = tmp();
        let d = dir.path();
        fs::write(d.join("c.lmc"), container).unwrap();
        for cmd in [
            &["--threads", "1", "verify", "c.lmc"][..],
            &["--threads", "1", "info", "c.lmc"],
            &["--threads", "1", "decompress", "c.lmc", "-o", "out"],
        ] {
            let out = lmc_capped(d, cmd);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
            for n in needles {
                assert!(err.contains(n), "{cmd:?}: stderr lacks {n:?}: {err}");
            }
        }
        assert_eq!(listing(d), names(&["c.lmc"]));
    }
    refused(container, needles, true)
}

/// The golden container with byte `at` flipped.
fn flipped(at: usize) -> Vec<u8> {
    let mut c = small_lmc();
    c[at] ^= 0xFF;
    c
}

// ---------------------------------------------------------------------------
// Golden v1 container
// ---------------------------------------------------------------------------

/// The tensors of small.safetensors in data order: name, dtype, shape, chunks
/// at 4 KiB.
const SMALL_TENSORS: [(&str, &str, &[u64], u64); 24] = [
    ("model.embed_tokens.weight", "BF16", &[37, 61], 2),
    (
        "model.layers.0.self_attn.q_proj.weight",
        "F16",
        &[33, 65],
        2,
    ),
    ("model.layers.0.mlp.up_proj.weight", "F32", &[29, 71], 3),
    ("model.layers.0.mlp.empty_bias", "F32", &[0, 16], 0),
    (
        "model.layers.0.input_layernorm.weight",
        "F64",
        &[3, 7, 11],
        1,
    ),
    ("model.layers.1.fp8_e4m3.weight", "F8_E4M3", &[5001], 2),
    ("model.layers.1.fp8_e5m2.weight", "F8_E5M2", &[3, 333], 1),
    ("model.layers.1.empty.weight", "BF16", &[4, 0], 0),
    ("ints.i8", "I8", &[257], 1),
    ("ints.i16", "I16", &[129], 1),
    ("ints.i32", "I32", &[5, 13], 1),
    ("ints.i64", "I64", &[7, 3], 1),
    ("ints.u8", "U8", &[1023], 1),
    ("ints.u16", "U16", &[17], 1),
    ("ints.u32", "U32", &[31], 1),
    ("ints.u64", "U64", &[9], 1),
    ("mask", "BOOL", &[3, 11], 1),
    ("step", "I64", &[], 1),
    ("loss_scale", "F32", &[], 1),
    ("special.f32", "F32", &[13], 1),
    ("special.bf16", "BF16", &[11], 1),
    ("special.f16", "F16", &[11], 1),
    ("special.f64", "F64", &[9], 1),
    ("special.fp8", "F8_E4M3", &[7], 1),
];

#[test]
fn golden_decompresses_byte_exactly() {
    let original = small();
    let golden = small_lmc();
    let dir = tmp();
    let d = dir.path();
    fs::write(d.join("small.safetensors.lmc"), &golden).unwrap();

    let out = ok(d, &["verify", "small.safetensors.lmc"]);
    assert!(
        out.starts_with("small.safetensors.lmc: OK (28 chunks, 29.27 kB original, checked in "),
        "{out}"
    );

    // Default output name: the input's without .lmc.
    ok(d, &["decompress", "small.safetensors.lmc"]);
    assert!(fs::read(d.join("small.safetensors")).unwrap() == original);
    // Explicit output, one thread and two.
    for t in ["1", "2"] {
        let name = format!("out{t}");
        ok(
            d,
            &[
                "--threads",
                t,
                "decompress",
                "small.safetensors.lmc",
                "-o",
                name.as_str(),
            ],
        );
        assert!(fs::read(d.join(&name)).unwrap() == original);
    }
    assert_eq!(
        listing(d),
        names(&["small.safetensors.lmc", "small.safetensors", "out1", "out2"])
    );
    assert!(fs::read(d.join("small.safetensors.lmc")).unwrap() == golden);

    // The header records the original's length and XXH3-128.
    assert_eq!(&golden[..8], MAGIC);
    assert_eq!(
        u64::from_le_bytes(golden[16..24].try_into().unwrap()),
        SMALL_LEN as u64
    );
    assert_eq!(
        u128::from_le_bytes(golden[24..40].try_into().unwrap()),
        xxh3_128(&original)
    );
    let l = parse(&golden);
    assert_eq!(l.payload_len, SMALL_LMC_PAYLOAD_LEN);
    assert_eq!(l.chunks.len(), SMALL_LMC_CHUNKS);
}

#[test]
fn golden_info() {
    let dir = tmp();
    let d = dir.path();
    fs::write(d.join("small.lmc"), small_lmc()).unwrap();

    let table = ok(d, &["info", "small.lmc"]);
    assert!(
        table.starts_with(
            "small.lmc: lmc format v1, 29.27 kB -> 25.35 kB (ratio 1.155), 25 segments, 28 chunks\n"
        ),
        "{table}"
    );
    for (name, dtype, shape, _) in SMALL_TENSORS {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("info lacks {name}: {table}"));
        let cols: Vec<_> = line.split_whitespace().collect();
        assert_eq!(cols[1], dtype, "{line}");
        assert!(line.contains(&format!("{shape:?}")), "{line}");
    }

    let j = info_json(d, "small.lmc");
    assert_eq!(j["file"], "small.lmc");
    assert_eq!(j["format_version"], 1);
    assert_eq!(j["original_bytes"], SMALL_LEN);
    assert_eq!(j["compressed_bytes"], SMALL_LMC_LEN);
    assert_eq!(j["chunks"], SMALL_LMC_CHUNKS);
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 1 + SMALL_TENSORS.len());

    // The safetensors header and its length prefix: one byte segment.
    let original = small();
    let header_len = u64::from_le_bytes(original[..8].try_into().unwrap());
    assert_eq!(segs[0]["kind"], "bytes");
    assert_eq!(segs[0]["offset"], 0);
    assert_eq!(segs[0]["original_bytes"], 8 + header_len);
    assert_eq!(segs[0]["chunks"], 1);
    assert!(segs[0].get("name").is_none());

    // Every tensor, in data order, as the safetensors header describes it.
    let st: Value = serde_json::from_slice(&original[8..8 + header_len as usize]).unwrap();
    assert_eq!(
        st.as_object().unwrap().len(),
        SMALL_TENSORS.len() + 1,
        "tensors + __metadata__"
    );
    assert!(st["__metadata__"].is_object());
    let mut chunks = 1;
    for (seg, (name, dtype, shape, nchunks)) in segs[1..].iter().zip(SMALL_TENSORS) {
        assert_eq!(seg["kind"], "tensor");
        assert_eq!(seg["name"], name);
        assert_eq!(seg["dtype"], dtype, "{name}");
        assert_eq!(seg["shape"], serde_json::json!(shape), "{name}");
        assert_eq!(seg["chunks"], nchunks, "{name}");
        chunks += nchunks;
        // Cross-check with small.safetensors itself.
        let t = &st[name];
        assert_eq!(t["dtype"], dtype, "{name}");
        assert_eq!(t["shape"], serde_json::json!(shape), "{name}");
        let start = t["data_offsets"][0].as_u64().unwrap();
        let end = t["data_offsets"][1].as_u64().unwrap();
        assert_eq!(seg["offset"], 8 + header_len + start, "{name}");
        assert_eq!(seg["original_bytes"], end - start, "{name}");
        let width = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
            "BF16" | "F16" | "I16" | "U16" => 2,
            "F32" | "I32" | "U32" => 4,
            _ => 8,
        };
        assert_eq!(seg["planes"].as_array().unwrap().len(), width, "{name}");
    }
    assert_eq!(chunks, SMALL_LMC_CHUNKS as u64);
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[test]
fn roundtrip_small_safetensors() {
    let original = small();
    let plain = roundtrip(&original);
    for size in ["4K", "4097", "64K", "1M", "4M"] {
        let one = roundtrip_with(&original, &["--threads", "1"], &["--chunk-size", size]);
        let two = roundtrip_with(&original, &["--threads", "2"], &["--chunk-size", size]);
        assert!(
            one == two,
            "--chunk-size {size}: the container depends on the thread count"
        );
        if size == "1M" {
            // 1M is the default.
            assert!(one == plain);
        }
    }
    // Chunk counts follow the chunk size: 1M gives one chunk per non-empty
    // segment; 4K gives the golden file's 28.
    let dir = tmp();
    let d = dir.path();
    fs::write(d.join("s.safetensors"), &original).unwrap();
    for (size, chunks) in [("1M", 23), ("4K", SMALL_LMC_CHUNKS)] {
        ok(
            d,
            &[
                "compress",
                "s.safetensors",
                "--force",
                "-q",
                "--chunk-size",
                size,
            ],
        );
        assert_eq!(info_json(d, "s.safetensors.lmc")["chunks"], chunks);
    }
}

/// `--best` changes only the encoder's choices: its containers round trip
/// through the ordinary decoder and are never larger than the default ones
/// (here on weight-like BF16 and its XOR-like sparse counterpart).
#[test]
fn best_round_trips_and_is_no_larger() {
    let small = small();
    let default = roundtrip(&small);
    let best = roundtrip_with(&small, &[], &["--best"]);
    assert!(
        best.len() <= default.len(),
        "{} > {}",
        best.len(),
        default.len()
    );
    // 200K BF16 values, normal-ish exponents, and a sparse variant.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut weights = Vec::new();
    let mut sparse = Vec::new();
    for i in 0..200_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1 * (1.0 + (i % 7) as f32);
        let b = (v.to_bits() >> 16) as u16;
        weights.extend_from_slice(&b.to_le_bytes());
        let d: u16 = if x.is_multiple_of(10) {
            (x >> 20) as u16 & 0x0107
        } else {
            0
        };
        sparse.extend_from_slice(&d.to_le_bytes());
    }
    for data in [&weights, &sparse] {
        let default = roundtrip_with(data, &[], &["--dtype", "BF16"]);
        let best = roundtrip_with(data, &[], &["--dtype", "BF16", "--best"]);
        assert!(
            best.len() <= default.len(),
            "{} > {}",
            best.len(),
            default.len()
        );
    }
}

#[test]
fn roundtrip_raw_dtypes() {
    // 10001 bytes: not a multiple of any width above 1 (a trailing byte for BF16).
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let bytes: Vec<u8> = (0..10_001)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // BF16-like: a narrow exponent byte on odd positions.
            if i % 2 == 1 {
                0x3C + (x % 3) as u8
            } else {
                x as u8
            }
        })
        .collect();

    let c = roundtrip_with(&bytes, &[], &["--dtype", "bf16", "--chunk-size", "4K"]);
    let dir = tmp();
    fs::write(dir.path().join("c.lmc"), &c).unwrap();
    let j = info_json(dir.path(), "c.lmc");
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0]["kind"], "tensor");
    assert_eq!(segs[0]["name"], "data");
    assert_eq!(segs[0]["dtype"], "BF16");
    assert_eq!(segs[0]["shape"], serde_json::json!([5000]));
    assert_eq!(segs[0]["chunks"], 3);
    assert_eq!(segs[1]["kind"], "bytes");
    assert_eq!(segs[1]["offset"], 10_000);
    assert_eq!(segs[1]["original_bytes"], 1);
    assert!(c.len() < bytes.len(), "bf16-like data did not compress");

    // Every dtype name lmc accepts, in both spellings.
    for dtype in [
        "BF16", "F16", "F32", "F64", "F8_E4M3", "f8e5m2", "I8", "I16", "I32", "I64", "U8", "U16",
        "U32", "U64", "bool",
    ] {
        roundtrip_with(&bytes, &[], &["--dtype", dtype, "--chunk-size", "4K"]);
    }
}

#[test]
fn roundtrip_empty_raw() {
    let c = roundtrip_with(b"", &[], &["--dtype", "bf16"]);
    let l = parse(&c);
    assert_eq!(l.payload_len, 0);
    assert!(l.chunks.is_empty());
    let dir = tmp();
    fs::write(dir.path().join("e.lmc"), &c).unwrap();
    let j = info_json(dir.path(), "e.lmc");
    assert_eq!(j["original_bytes"], 0);
    assert_eq!(j["chunks"], 0);
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0]["shape"], serde_json::json!([0]));
}

// ---------------------------------------------------------------------------
// Corruption of the golden container
// ---------------------------------------------------------------------------

#[test]
fn corrupt_header() {
    for at in [20, 60] {
        refused(
            &flipped(at),
            &["c.lmc: corrupt header: header checksum mismatch (stored "],
            true,
        );
    }
    // The magic.
    refused(
        &flipped(1),
        &["c.lmc: corrupt header: bad magic bytes: not an lmc container"],
        true,
    );
    // A newer version (with a valid checksum): refused as such.
    let mut c = small_lmc();
    c[8] = 3;
    let sum = xxh3_64(&c[..56]);
    c[56..64].copy_from_slice(&sum.to_le_bytes());
    refused(
        &c,
        &["c.lmc: unsupported container version 3 (this lmc reads versions 1 to 2)"],
        true,
    );
    // A v1 file claiming to be v2 (a delta): its index does not parse as one.
    let mut c = small_lmc();
    c[8] = 2;
    let sum = xxh3_64(&c[..56]);
    c[56..64].copy_from_slice(&sum.to_le_bytes());
    refused(&c, &["c.lmc: corrupt index: "], true);
    // Unknown flags (with a valid checksum).
    let mut c = small_lmc();
    c[10] = 32;
    let sum = xxh3_64(&c[..56]);
    c[56..64].copy_from_slice(&sum.to_le_bytes());
    refused(
        &c,
        &["c.lmc: corrupt header: unknown flags 0x0020 or non-zero reserved bytes"],
        true,
    );
}

#[test]
fn corrupt_index() {
    let golden = small_lmc();
    let l = parse(&golden);
    assert_eq!(
        l.index_start,
        HEADER_LEN + u64::from_le_bytes(golden[40..48].try_into().unwrap()) as usize
    );
    // The segment count, a tensor name in the segment list, the checksum.
    for at in [l.index_start, l.index_start + 40, golden.len() - 1] {
        refused(
            &flipped(at),
            &["c.lmc: corrupt index: index checksum mismatch (stored "],
            true,
        );
    }
}

#[test]
fn corrupt_chunk_table() {
    let golden = small_lmc();
    let l = parse(&golden);
    // The chunk count and a byte in the middle of the table: the index
    // checksum covers them.
    let mid = (l.chunk_table_at + golden.len() - 8) / 2;
    for at in [l.chunk_table_at, mid] {
        refused(
            &flipped(at),
            &["c.lmc: corrupt index: index checksum mismatch (stored "],
            true,
        );
    }

    // Edits with the index checksum recomputed: the structural checks, or
    // the chunk checksums, still catch them.
    let c2 = &l.chunks[2]; // the second chunk of model.embed_tokens.weight
    assert_eq!(c2.segment, "tensor \"model.embed_tokens.weight\"");

    // The chunk's length: no longer a multiple of the BF16 width.
    let mut c = golden.clone();
    c[c2.entry_at] ^= 1;
    rehash_index(&mut c, l.index_start);
    refused(
        &c,
        &[
            "c.lmc: corrupt index: chunk 2 (tensor \"model.embed_tokens.weight\"): length ",
            " is zero or not a multiple of the element width 2",
        ],
        true,
    );

    // The chunk's checksum: found when the chunk is decoded.
    let mut c = golden.clone();
    c[c2.entry_at + 4] ^= 1;
    rehash_index(&mut c, l.index_start);
    refused(
        &c,
        &[&format!(
            "c.lmc: corrupt payload: chunk 2 (tensor \"model.embed_tokens.weight\") at byte offset {}: checksum mismatch (stored ",
            c2.stored_offset
        )],
        false,
    );

    // The plane count.
    let mut c = golden.clone();
    c[c2.entry_at + 12] = 3;
    rehash_index(&mut c, l.index_start);
    refused(
        &c,
        &[
            "c.lmc: corrupt index: chunk 2 (tensor \"model.embed_tokens.weight\"): 3 planes, 2 expected",
        ],
        true,
    );
}

#[test]
fn corrupt_payload() {
    let golden = small_lmc();
    let l = parse(&golden);
    for at in [
        HEADER_LEN,
        HEADER_LEN + l.payload_len as usize / 2,
        l.index_start - 1,
    ] {
        let k = l
            .chunks
            .iter()
            .position(|c| (c.stored_offset..c.stored_offset + c.stored_len).contains(&(at as u64)))
            .unwrap();
        let ch = &l.chunks[k];
        let err = refused(
            &flipped(at),
            &[&format!(
                "c.lmc: corrupt payload: chunk {k} ({}) at byte offset {}: checksum mismatch (stored ",
                ch.segment, ch.stored_offset
            )],
            false,
        );
        assert!(err.contains(", computed "), "{err}");
        // info reads only the index: it still works.
        let dir = tmp();
        fs::write(dir.path().join("c.lmc"), flipped(at)).unwrap();
        ok(dir.path(), &["info", "c.lmc"]);
    }
}

#[test]
fn truncated_and_extended() {
    let golden = small_lmc();
    let n = golden.len();
    for len in [0, 10, 63] {
        refused(
            &golden[..len],
            &[&format!(
                "c.lmc: corrupt header: file is {len} bytes, shorter than the 64-byte header (truncated, or not an lmc file)"
            )],
            true,
        );
    }
    for len in [64, 65, n / 2, n - 1] {
        refused(
            &golden[..len],
            &[&format!(
                "c.lmc: corrupt file: file is {len} bytes but its header describes {n} (header 64 + payload {SMALL_LMC_PAYLOAD_LEN} + index {SMALL_LMC_INDEX_LEN}): truncated or extended"
            )],
            true,
        );
    }
    for extra in [&[0u8][..], b"\n", &[0xAB; 4096]] {
        let mut c = golden.clone();
        c.extend_from_slice(extra);
        refused(
            &c,
            &[&format!(
                "c.lmc: corrupt file: file is {} bytes but its header describes {n} ",
                n + extra.len()
            )],
            true,
        );
    }
}

// ---------------------------------------------------------------------------
// Hostile containers: valid checksums, absurd numbers
// ---------------------------------------------------------------------------

#[test]
fn hostile_lengths_in_header() {
    // Header only; payload and index lengths far beyond the file.
    refused_capped(
        &header(1 << 40, 0, 1 << 40, 1 << 40),
        &[
            "c.lmc: corrupt file: file is 64 bytes but its header describes 2199023255616 (header 64 + payload 1099511627776 + index 1099511627776): truncated or extended",
        ],
    );
    // Lengths whose sum overflows.
    refused_capped(
        &header(u64::MAX, 0, u64::MAX - 10, 100),
        &[
            "c.lmc: corrupt file: file is 64 bytes but its header describes more than 2^64 (header 64 + payload 18446744073709551605 + index 100)",
        ],
    );
    // Lengths that tile the file, with a payload that no chunk accounts for.
    let idx = index(&[0u8; 8]);
    let mut c = header(0, xxh3_128(b""), 100, idx.len() as u64);
    c.extend_from_slice(&[0u8; 100]);
    c.extend_from_slice(&idx);
    refused_capped(
        &c,
        &["c.lmc: corrupt index: chunks store 0 bytes, the header says the payload has 100"],
    );
    // An index too short for its own checksum.
    let mut c = header(0, 0, 0, 4);
    c.extend_from_slice(&[0u8; 4]);
    refused_capped(&c, &["c.lmc: corrupt index: index is 4 bytes, too short"]);
}

#[test]
fn hostile_index() {
    let mut body = Vec::new();
    // 2^32 - 1 segments.
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    refused_capped(
        &container_with_index(0, &body),
        &["c.lmc: corrupt index: segment count 4294967295 cannot fit in a 8-byte index"],
    );

    // 2^32 - 1 segments in a longer index (still far too short).
    let mut body = u32::MAX.to_le_bytes().to_vec();
    body.extend_from_slice(&[0u8; 1000]);
    refused_capped(
        &container_with_index(0, &body),
        &["c.lmc: corrupt index: segment count 4294967295 cannot fit in a 1004-byte index"],
    );

    // No segments, 2^32 - 1 chunks.
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    refused_capped(
        &container_with_index(0, &body),
        &["c.lmc: corrupt index: chunk table has 4294967295 chunks, segments claim 0"],
    );

    // One byte segment of 2^63 bytes in 2^32 - 1 chunks, with an original
    // length to match.
    let mut body = 1u32.to_le_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(1u64 << 63).to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    refused_capped(
        &container_with_index(1 << 63, &body),
        &["c.lmc: corrupt index: chunk count 4294967295 cannot fit in a 21-byte index"],
    );

    // One chunk of 4 GiB - 1 bytes: above the chunk size limit, so nothing
    // is allocated for it.
    let mut body = 1u32.to_le_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(u32::MAX as u64).to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes()); // raw length
    body.extend_from_slice(&0u64.to_le_bytes()); // checksum
    body.push(1); // one plane
    body.push(1); // constant
    body.extend_from_slice(&1u32.to_le_bytes());
    refused_capped(
        &container_with_index(u32::MAX as u64, &body),
        &[
            "c.lmc: corrupt index: chunk 0 (bytes at offset 0): length 4294967295 (index byte 21) is above the 4194304-byte limit on a chunk",
        ],
    );

    // A tensor of rank 255.
    let mut body = 1u32.to_le_bytes().to_vec();
    body.push(1);
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.push(9); // BF16
    body.extend_from_slice(&1u16.to_le_bytes());
    body.push(b'x');
    body.push(255);
    refused_capped(
        &container_with_index(0, &body),
        &["c.lmc: corrupt index: tensor \"x\": rank 255 exceeds 64"],
    );

    // A tensor name longer than the index.
    let mut body = 1u32.to_le_bytes().to_vec();
    body.push(1);
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.push(9);
    body.extend_from_slice(&u16::MAX.to_le_bytes());
    body.extend_from_slice(b"abc");
    refused_capped(
        &container_with_index(0, &body),
        &["c.lmc: corrupt index: truncated at byte 20 while reading the tensor name"],
    );

    // A well-formed empty container is accepted (the cases above fail for
    // the reason given, not because the builders are wrong).
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&0u32.to_le_bytes());
    let dir = tmp();
    let d = dir.path();
    fs::write(d.join("e.lmc"), container_with_index(0, &body)).unwrap();
    ok(d, &["verify", "e.lmc"]);
    ok(d, &["decompress", "e.lmc"]);
    assert_eq!(fs::read(d.join("e")).unwrap(), b"");
}

// ---------------------------------------------------------------------------
// Safety of the files lmc touches
// ---------------------------------------------------------------------------

#[test]
fn existing_output_needs_force() {
    let dir = tmp();
    let d = dir.path();
    let original = small();
    fs::write(d.join("m.safetensors"), &original).unwrap();

    // compress
    fs::write(d.join("m.safetensors.lmc"), b"precious").unwrap();
    fails(
        d,
        &["compress", "m.safetensors"],
        &["lmc: error: m.safetensors.lmc already exists (use --force to overwrite it)"],
    );
    assert_eq!(fs::read(d.join("m.safetensors.lmc")).unwrap(), b"precious");
    assert_eq!(listing(d), names(&["m.safetensors", "m.safetensors.lmc"]));
    ok(d, &["compress", "m.safetensors", "--force"]);
    let container = fs::read(d.join("m.safetensors.lmc")).unwrap();
    assert_eq!(&container[..8], MAGIC);

    // decompress
    fs::write(d.join("out"), b"precious").unwrap();
    fails(
        d,
        &["decompress", "m.safetensors.lmc", "-o", "out"],
        &["lmc: error: out already exists (use --force to overwrite it)"],
    );
    assert_eq!(fs::read(d.join("out")).unwrap(), b"precious");
    // The default name, m.safetensors, exists too.
    fails(
        d,
        &["decompress", "m.safetensors.lmc"],
        &["lmc: error: m.safetensors already exists (use --force to overwrite it)"],
    );
    ok(d, &["decompress", "m.safetensors.lmc", "-o", "out", "-f"]);
    assert!(fs::read(d.join("out")).unwrap() == original);
    assert_eq!(
        listing(d),
        names(&["m.safetensors", "m.safetensors.lmc", "out"])
    );

    // Even with --force, the output may not be the input.
    for args in [
        &[
            "compress",
            "m.safetensors",
            "-o",
            "m.safetensors",
            "--force",
        ][..],
        &[
            "compress",
            "m.safetensors",
            "-o",
            "./m.safetensors",
            "--force",
            "--dtype",
            "u8",
        ],
    ] {
        fails(
            d,
            args,
            &["lmc: error: ", "m.safetensors is the input file"],
        );
    }
    fails(
        d,
        &[
            "decompress",
            "m.safetensors.lmc",
            "-o",
            "m.safetensors.lmc",
            "-f",
        ],
        &["lmc: error: output m.safetensors.lmc is the input file"],
    );
    assert!(fs::read(d.join("m.safetensors")).unwrap() == original);
    assert!(fs::read(d.join("m.safetensors.lmc")).unwrap() == container);
    assert_eq!(
        listing(d),
        names(&["m.safetensors", "m.safetensors.lmc", "out"])
    );
}

/// Chunk sizes and thread counts outside the library's limits are refused
/// before anything is read (`--chunk-size 1` made a file 12 times larger;
/// `-t 100000` ran for minutes).
#[test]
fn options_outside_the_limits_are_refused() {
    let dir = tmp();
    let d = dir.path();
    fs::write(d.join("a.safetensors"), small()).unwrap();
    for size in ["1", "4095", "1K", "5M", "1G"] {
        let out = lmc(d, &["compress", "a.safetensors", "--chunk-size", size]);
        assert_eq!(out.status.code(), Some(2), "--chunk-size {size}");
        let err = text(&out.stderr);
        assert!(err.contains("is outside 4 KiB..=4 MiB"), "{err}");
    }
    for t in ["0", "100000"] {
        let out = lmc(d, &["-t", t, "compress", "a.safetensors"]);
        assert_eq!(out.status.code(), Some(2), "-t {t}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!(
                "lmc: error: --threads: {t} threads asked for; between 1 and "
            )) && err.contains("(4 per core, at most 256)"),
            "{err}"
        );
    }
    assert_eq!(listing(d), names(&["a.safetensors"]), "nothing is written");
}

#[test]
fn refuses_what_it_cannot_read() {
    let dir = tmp();
    let d = dir.path();

    // Text, and an empty file, without --dtype.
    fs::write(d.join("notes.txt"), "these are not weights\n").unwrap();
    fs::write(d.join("empty"), b"").unwrap();
    for f in ["notes.txt", "empty"] {
        fails(
            d,
            &["compress", f],
            &[
                &format!("lmc: error: {f} is not a safetensors file"),
                "use --dtype",
            ],
        );
    }

    // A safetensors-looking file with a broken header.
    let mut bad = 6u64.to_le_bytes().to_vec();
    bad.extend_from_slice(b"{\"a\":1");
    fs::write(d.join("bad.safetensors"), &bad).unwrap();
    fails(
        d,
        &["compress", "bad.safetensors"],
        &["lmc: error: bad.safetensors: "],
    );

    // Decompressing a file whose name does not end in .lmc, without -o.
    fs::write(d.join("c.bin"), small_lmc()).unwrap();
    fails(
        d,
        &["decompress", "c.bin"],
        &[
            "lmc: error: cannot derive an output name from c.bin (it does not end in .lmc); give one with -o",
        ],
    );
    // With -o it works: the name is only a convention.
    ok(d, &["decompress", "c.bin", "-o", "c.out"]);
    assert!(fs::read(d.join("c.out")).unwrap() == small());

    // Compressing a container.
    fs::write(d.join("x.lmc"), small_lmc()).unwrap();
    fails(
        d,
        &["compress", "x.lmc"],
        &["lmc: error: x.lmc is already an lmc container"],
    );

    // A missing input and a directory.
    fails(
        d,
        &["compress", "missing"],
        &["lmc: error: cannot open missing"],
    );
    fs::create_dir(d.join("sub")).unwrap();
    fails(d, &["verify", "sub"], &["lmc: error: sub is a directory"]);

    // An unknown dtype.
    fails(
        d,
        &["compress", "notes.txt", "--dtype", "F12"],
        &["lmc: error: unknown dtype \"F12\" (expected one of BF16, "],
    );

    assert_eq!(
        listing(d),
        names(&[
            "notes.txt",
            "empty",
            "bad.safetensors",
            "c.bin",
            "c.out",
            "x.lmc",
            "sub"
        ])
    );
}

#[test]
fn input_is_never_modified() {
    let dir = tmp();
    let d = dir.path();
    let original = small();
    let golden = small_lmc();
    fs::write(d.join("a.safetensors"), &original).unwrap();
    fs::write(d.join("g.lmc"), &golden).unwrap();
    let before = fs::metadata(d.join("a.safetensors"))
        .unwrap()
        .modified()
        .unwrap();

    ok(d, &["compress", "a.safetensors", "--chunk-size", "4K"]);
    ok(
        d,
        &["compress", "a.safetensors", "-o", "b.lmc", "--dtype", "f32"],
    );
    ok(d, &["verify", "a.safetensors.lmc"]);
    ok(d, &["info", "a.safetensors.lmc"]);
    ok(d, &["decompress", "g.lmc", "-o", "g"]);
    ok(d, &["verify", "g.lmc"]);
    ok(d, &["info", "--json", "g.lmc"]);
    fails(d, &["compress", "a.safetensors"], &["--force"]);
    ok(d, &["compress", "a.safetensors", "--force"]);

    assert_eq!(
        xxh3_128(&fs::read(d.join("a.safetensors")).unwrap()),
        xxh3_128(&original)
    );
    assert_eq!(
        xxh3_128(&fs::read(d.join("g.lmc")).unwrap()),
        xxh3_128(&golden)
    );
    assert_eq!(
        fs::metadata(d.join("a.safetensors"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert!(fs::read(d.join("g")).unwrap() == original);
    assert_eq!(
        listing(d),
        names(&["a.safetensors", "a.safetensors.lmc", "b.lmc", "g.lmc", "g"])
    );
}

/// `-` is standard input, `-c` (or `-o -`) standard output: a container
/// piped through compress and decompress comes back byte for byte, the
/// summary goes to stderr, and a failure writes nothing to the pipe.
#[test]
fn pipes_in_and_out() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let dir = tmp();
    let d = dir.path();
    let original = small();
    fs::write(d.join("a.safetensors"), &original).unwrap();
    let run = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lmc"))
            .current_dir(d)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let c = run(&["compress", "-", "-c"], &original);
    assert!(c.status.success(), "{}", text(&c.stderr));
    assert!(
        text(&c.stderr).contains("- -> -:"),
        "the summary goes to stderr"
    );
    let file = run(&["-q", "compress", "a.safetensors", "-o", "-"], b"");
    assert_eq!(
        c.stdout, file.stdout,
        "stdin and a file give the same container"
    );
    let back = run(&["-q", "decompress", "-", "-c"], &c.stdout);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert_eq!(back.stdout, original);
    // A damaged container: an error, and nothing decoded reaches the pipe
    // (the damage is in the index, so no chunk is written).
    let mut bad = c.stdout.clone();
    bad[70] ^= 1;
    let out = run(&["decompress", "-", "-c"], &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    // A compress that fails writes nothing either: the container is spooled.
    let out = run(&["compress", "-", "-c"], b"not a checkpoint");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let out = run(&["compress", "-"], &original);
    assert!(text(&out.stderr).contains("give the output with -o FILE, or -c"));
    assert_eq!(listing(d), names(&["a.safetensors"]), "no file is written");
}
