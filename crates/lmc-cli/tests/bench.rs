//! `lmc bench` on small safetensors files built here, its numbers checked
//! against computations made in this file: the order-0 bound against the
//! entropy of the distribution the file was built from, zstd's size against
//! the zstd library run here on the same bytes (byte-grouped and XOR-delta
//! bytes built here too), and the XOR delta's matching of tensors.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A tensor to write: name, safetensors dtype, shape, little-endian bytes.
struct T<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: &'a [u64],
    data: Vec<u8>,
}

/// A safetensors file of `tensors`, stored in the given order, the header
/// padded with spaces to a multiple of 8 as the reference writer does.
/// Returns the file and its header length (the 8-byte prefix included).
fn safetensors(tensors: &[T]) -> (Vec<u8>, usize) {
    let mut entries = Vec::new();
    let mut off = 0;
    for t in tensors {
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        entries.push(format!(
            "\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{off},{}]}}",
            t.name,
            t.dtype,
            shape.join(","),
            off + t.data.len()
        ));
        off += t.data.len();
    }
    let mut header = format!("{{{}}}", entries.join(","));
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    let header_len = f.len();
    for t in tensors {
        f.extend_from_slice(&t.data);
    }
    (f, header_len)
}

/// Runs `lmc ARGS` in `dir`.
fn lmc<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lmc"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `lmc bench ARGS --json`, asserts success, returns one object a file.
fn bench_json(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = lmc(dir, &all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "lmc {all:?} failed: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "");
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `lmc ARGS`, asserts failure, returns stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = lmc(dir, args);
    assert_eq!(out.status.code(), Some(1), "lmc {args:?} should fail");
    assert_eq!(text(&out.stdout), "");
    text(&out.stderr)
}

fn row<'a>(report: &'a Value, method: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == method)
        .unwrap_or_else(|| panic!("no row {method:?} in {report}"))
}

fn bound<'a>(report: &'a Value, method: &str) -> &'a Value {
    report["bounds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == method)
        .unwrap_or_else(|| panic!("no bound {method:?} in {report}"))
}

fn plane<'a>(report: &'a Value, dtype: &str, i: u64) -> &'a Value {
    report["planes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["dtype"] == dtype && p["plane"] == i)
        .unwrap_or_else(|| panic!("no plane {dtype} {i} in {report}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Shannon entropy in bits of a distribution given as weights.
fn entropy_of(weights: &[f64]) -> f64 {
    let sum: f64 = weights.iter().sum();
    weights
        .iter()
        .filter(|&&w| w > 0.0)
        .map(|&w| -(w / sum) * (w / sum).log2())
        .sum()
}

/// Order-0 entropy bound of `bytes` in bytes, from their own histogram.
fn bytes_bound(bytes: &[u8]) -> f64 {
    let mut h = [0f64; 256];
    for &b in bytes {
        h[b as usize] += 1.0;
    }
    bytes.len() as f64 * entropy_of(&h) / 8.0
}

/// The BF16 values of the skewed distribution, with their weights out of 8.
/// Rotated left by one bit, their high bytes (plane 0) are 7F, 80, 7E, 7E and
/// their low bytes (plane 1) are 00, 00, 01, 80.
const VALUES: [(u16, usize); 4] = [
    (0x3F80, 4), // 1.0
    (0x4000, 2), // 2.0
    (0xBF00, 1), // -0.5
    (0x3F40, 1), // 0.75
];

/// `n` BF16 elements (a multiple of 8) distributed exactly as [`VALUES`],
/// in a scattered order so that no codec finds it trivial.
fn skewed_bf16(n: usize) -> Vec<u16> {
    assert!(n.is_multiple_of(8));
    let mut v: Vec<u16> = VALUES
        .iter()
        .flat_map(|&(x, w)| std::iter::repeat_n(x, n / 8 * w))
        .collect();
    // A fixed permutation: Fisher-Yates driven by a linear congruential generator.
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..v.len()).rev() {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        v.swap(i, (s >> 33) as usize % (i + 1));
    }
    v
}

fn le(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Byte grouping of BF16 as lmc defines it, written out here: rotate each
/// element left by one bit, then all high bytes, then all low bytes.
fn grouped_bf16(v: &[u16]) -> Vec<u8> {
    let r: Vec<u16> = v.iter().map(|x| x.rotate_left(1)).collect();
    r.iter()
        .map(|x| (x >> 8) as u8)
        .chain(r.iter().map(|&x| x as u8))
        .collect()
}

const N: usize = 1 << 16;

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn bound_and_zstd_match_independent_computation() {
    let dir = TempDir::new().unwrap();
    let w = skewed_bf16(N);
    let (file, header_len) = safetensors(&[T {
        name: "w",
        dtype: "BF16",
        shape: &[256, (N / 256) as u64],
        data: le(&w),
    }]);
    fs::write(dir.path().join("a.safetensors"), &file).unwrap();

    let reports = bench_json(
        dir.path(),
        &[
            "a.safetensors",
            "--methods",
            "zstd-3,memcpy,lmc",
            "--runs",
            "1",
        ],
    );
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r["bytes"], file.len());
    assert_eq!(r["measured"], "file");
    assert_eq!(r["tensors"], 1);
    assert_eq!(r["non_tensor_bytes"], header_len);
    let methods: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["memcpy", "lmc", "zstd -3", "zstd -3 +grouped"]);
    for x in r["results"].as_array().unwrap() {
        assert_eq!(x["runs"], 1);
        assert!(f(&x["compress_mb_per_s"]) > 0.0);
        assert!(f(&x["decompress_mb_per_s"]) > 0.0);
    }

    // The distribution's planes: plane 0 = {7F: 4, 80: 2, 7E: 2} / 8,
    // plane 1 = {00: 6, 01: 1, 80: 1} / 8.
    let h0 = entropy_of(&[4.0, 2.0, 2.0]);
    let h1 = entropy_of(&[6.0, 1.0, 1.0]);
    assert!(close(h0, 1.5));
    let p0 = plane(r, "BF16", 0);
    let p1 = plane(r, "BF16", 1);
    assert!(close(f(&p0["entropy_bits_per_byte"]), h0), "{p0}");
    assert!(close(f(&p1["entropy_bits_per_byte"]), h1), "{p1}");
    assert_eq!(p0["bytes"], N);
    assert!(close(f(&p0["zero_fraction"]), 0.0));
    assert!(close(f(&p1["zero_fraction"]), 0.75));

    // The bound: the planes at their entropy, the header at its own order-0 bound.
    let header_bound = bytes_bound(&file[..header_len]);
    assert!(close(f(&r["non_tensor_bound_bytes"]), header_bound));
    let expected = N as f64 * (h0 + h1) / 8.0 + header_bound;
    let b = bound(r, "order-0 bound, byte planes");
    assert!(close(f(&b["bytes"]), expected), "{b} vs {expected}");
    assert!(close(f(&b["ratio"]), file.len() as f64 / expected));
    // Ungrouped: the tensor's bytes are {80: 4, 3F: 5, 00: 3, 40: 3, BF: 1} / 16.
    let ungrouped = N as f64 * 2.0 * entropy_of(&[4.0, 5.0, 3.0, 3.0, 1.0]) / 8.0 + header_bound;
    let b = bound(r, "order-0 bound, bytes ungrouped");
    assert!(close(f(&b["bytes"]), ungrouped), "{b} vs {ungrouped}");

    // zstd -3, raw and byte-grouped, exactly as the library does it here.
    let z = zstd::bulk::compress(&file, 3).unwrap();
    let zr = row(r, "zstd -3");
    assert_eq!(zr["compressed_bytes"], z.len());
    assert!(close(f(&zr["ratio"]), file.len() as f64 / z.len() as f64));
    let mut grouped = file[..header_len].to_vec();
    grouped.extend(grouped_bf16(&w));
    let zg = zstd::bulk::compress(&grouped, 3).unwrap();
    assert_eq!(row(r, "zstd -3 +grouped")["compressed_bytes"], zg.len());

    // lmc codes each plane near its entropy: it beats zstd, and lands within
    // a few percent of the bound (tables and chunk overhead).
    let lmc = row(r, "lmc");
    assert!(f(&lmc["ratio"]) > file.len() as f64 / z.len() as f64);
    let stored = f(&lmc["compressed_bytes"]);
    assert!(
        stored > expected * 0.99 && stored < expected * 1.10,
        "lmc {stored} vs bound {expected}"
    );
    assert_eq!(row(r, "memcpy")["ratio"], 1.0);
}

#[test]
fn xor_delta_matches_tensors_by_name_dtype_and_shape() {
    let dir = TempDir::new().unwrap();
    let w_base = skewed_bf16(N);
    // Every tenth element changes its lowest mantissa bit.
    let w_new: Vec<u16> = w_base
        .iter()
        .enumerate()
        .map(|(i, &x)| if i % 10 == 0 { x ^ 1 } else { x })
        .collect();
    let other: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (base, _) = safetensors(&[
        T {
            name: "w",
            dtype: "BF16",
            shape: &[N as u64],
            data: le(&w_base),
        },
        // Same name and bytes, another dtype: not matched.
        T {
            name: "b",
            dtype: "F32",
            shape: &[1024],
            data: other.clone(),
        },
        // Same name and dtype, another shape: not matched.
        T {
            name: "s",
            dtype: "I16",
            shape: &[64, 32],
            data: other.clone(),
        },
    ]);
    let (file, header_len) = safetensors(&[
        T {
            name: "w",
            dtype: "BF16",
            shape: &[N as u64],
            data: le(&w_new),
        },
        T {
            name: "b",
            dtype: "F16",
            shape: &[2048],
            data: other.clone(),
        },
        T {
            name: "s",
            dtype: "I16",
            shape: &[32, 64],
            data: other.clone(),
        },
        // Not in the base at all.
        T {
            name: "c",
            dtype: "F32",
            shape: &[1024],
            data: other.clone(),
        },
    ]);
    fs::write(dir.path().join("base.safetensors"), &base).unwrap();
    fs::write(dir.path().join("new.safetensors"), &file).unwrap();

    let reports = bench_json(
        dir.path(),
        &[
            "new.safetensors",
            "base.safetensors",
            "--base",
            "base.safetensors",
            "base.safetensors",
            "--methods",
            "zstd-1+raw",
            "--runs",
            "1",
        ],
    );
    assert_eq!(reports.len(), 2);
    let r = &reports[0];
    assert_eq!(r["measured"], "xor-delta");
    assert_eq!(r["base"], "base.safetensors");
    assert_eq!(r["bytes"], file.len());
    assert_eq!(r["tensors"], 4);
    assert_eq!(r["matched_tensors"], 1);
    assert_eq!(r["xored_bytes"], 2 * N);
    assert_eq!(r["results"].as_array().unwrap().len(), 1);

    // The delta built here: the header and the unmatched tensors as they are,
    // "w" XORed; zstd -1 on it gives exactly the size bench reports.
    let mut delta = file.clone();
    let xor: Vec<u16> = w_new.iter().zip(&w_base).map(|(a, b)| a ^ b).collect();
    delta[header_len..header_len + 2 * N].copy_from_slice(&le(&xor));
    let z = zstd::bulk::compress(&delta, 1).unwrap();
    assert_eq!(row(r, "zstd -1")["compressed_bytes"], z.len());

    // XOR 0x0001 rotates to 0x0002: plane 0 all zero, plane 1 zero but for a
    // tenth of the elements (N is not a multiple of 10: count them).
    let changed = (0..N).filter(|i| i % 10 == 0).count() as f64;
    let p0 = plane(r, "BF16", 0);
    let p1 = plane(r, "BF16", 1);
    assert!(close(f(&p0["zero_fraction"]), 1.0));
    assert!(close(f(&p0["entropy_bits_per_byte"]), 0.0));
    let q = changed / N as f64;
    assert!(close(f(&p1["zero_fraction"]), 1.0 - q));
    assert!(close(
        f(&p1["entropy_bits_per_byte"]),
        entropy_of(&[1.0 - q, q])
    ));

    // A file against itself: every tensor matches and the delta is all zeros.
    let r = &reports[1];
    assert_eq!(r["matched_tensors"], 3);
    assert_eq!(r["xored_bytes"], 2 * N + 2 * other.len());
    for p in r["planes"].as_array().unwrap() {
        assert!(close(f(&p["zero_fraction"]), 1.0), "{p}");
    }
}

#[test]
fn markdown_table_names_every_method() {
    let dir = TempDir::new().unwrap();
    let (file, _) = safetensors(&[T {
        name: "w",
        dtype: "BF16",
        shape: &[N as u64],
        data: le(&skewed_bf16(N)),
    }]);
    fs::write(dir.path().join("a.safetensors"), &file).unwrap();
    let out = lmc(
        dir.path(),
        &["bench", "a.safetensors", "--runs", "2", "--budget", "0"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("the file as it is, 1 tensors"), "{t}");
    for m in [
        "memcpy",
        "byte grouping (split / merge)",
        "lmc",
        "zstd -1",
        "zstd -3",
        "zstd -19",
        "xz -6",
        "bzip2 -9",
        "lz4",
        "brotli -9",
        "order-0 bound, byte planes",
    ] {
        assert!(t.contains(&format!("| {m} |")), "no row {m:?} in\n{t}");
    }
    for c in [
        "zstd -1",
        "zstd -19",
        "xz -6",
        "bzip2 -9",
        "lz4",
        "brotli -9",
    ] {
        assert!(
            t.contains(&format!("| {c} +grouped |")),
            "no row {c} +grouped in\n{t}"
        );
    }
    // --budget 0: one run a method (the third column).
    let rows: Vec<Vec<&str>> = t
        .lines()
        .take_while(|l| !l.starts_with("| order-0"))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
        .map(|l| l.split(" | ").collect())
        .collect();
    assert_eq!(rows.len(), 3 + 2 * 7, "{t}");
    for r in rows {
        assert_eq!(r[2], "1", "{r:?}");
    }
    assert!(t.contains("| BF16 | 1 | 1 | 65536 |"), "{t}");
}

#[test]
fn raw_arrays_with_dtype() {
    let dir = TempDir::new().unwrap();
    let w = skewed_bf16(N);
    fs::write(dir.path().join("w.bin"), le(&w)).unwrap();
    let r = &bench_json(
        dir.path(),
        &[
            "w.bin",
            "--dtype",
            "bf16",
            "--methods",
            "lz4+grouped",
            "--runs",
            "1",
        ],
    )[0];
    assert_eq!(r["non_tensor_bytes"], 0);
    let expected = N as f64 * (1.5 + entropy_of(&[6.0, 1.0, 1.0])) / 8.0;
    assert!(close(
        f(&bound(r, "order-0 bound, byte planes")["bytes"]),
        expected
    ));
    assert!(f(&row(r, "lz4 +grouped")["ratio"]) > 1.0);
}

#[test]
fn errors() {
    let dir = TempDir::new().unwrap();
    let (file, _) = safetensors(&[T {
        name: "w",
        dtype: "BF16",
        shape: &[8],
        data: le(&skewed_bf16(8)),
    }]);
    fs::write(dir.path().join("a.safetensors"), &file).unwrap();
    fs::write(dir.path().join("b.safetensors"), &file).unwrap();

    let e = fails(
        dir.path(),
        &[
            "bench",
            "a.safetensors",
            "b.safetensors",
            "--base",
            "a.safetensors",
        ],
    );
    assert!(
        e.contains("--base takes one base a file: 2 files but 1 bases"),
        "{e}"
    );

    let e = fails(
        dir.path(),
        &["bench", "a.safetensors", "missing.safetensors"],
    );
    assert!(e.contains("cannot open missing.safetensors"), "{e}");
    let e = fails(
        dir.path(),
        &["bench", "a.safetensors", "--base", "gone.safetensors"],
    );
    assert!(e.contains("cannot open gone.safetensors"), "{e}");

    let e = fails(
        dir.path(),
        &["bench", "a.safetensors", "--methods", "lmc,gzip-9"],
    );
    assert!(e.contains("unknown method \"gzip-9\""), "{e}");
    assert!(e.contains("zstd-19"), "{e}");

    let e = fails(dir.path(), &["bench", "a.safetensors", "--runs", "0"]);
    assert!(e.contains("--runs must be at least 1"), "{e}");

    fs::write(dir.path().join("junk.bin"), b"not a checkpoint").unwrap();
    let e = fails(dir.path(), &["bench", "junk.bin"]);
    assert!(e.contains("not a safetensors file"), "{e}");
}
