//! Tests of `lmc analyze` on small safetensors files built here with known
//! distributions. Every number checked is computed again in this file,
//! independently of lmc (its own rotation, byte planes, histograms and
//! entropies), from the values the files were made of.

mod common;
use common::{lmc, ok, text};

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde_json::{Value, json};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs `lmc analyze --json ARGS` and parses its output.
fn analyze_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["analyze", "--json"];
    all.extend(args);
    let (out, _) = ok(dir, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("analyze --json: {e}: {out}"))
}

/// Runs `lmc ARGS`, asserts exit status 1, no stdout, and one error line on
/// stderr containing every needle.
fn fails(dir: &Path, args: &[&str], needles: &[&str]) {
    let out = lmc(dir, args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "lmc {args:?}: {err}");
    assert_eq!(text(&out.stdout), "", "lmc {args:?} wrote to stdout");
    assert!(
        err.starts_with("lmc: error: ") && err.lines().count() == 1,
        "lmc {args:?}: not one error line: {err:?}"
    );
    for n in needles {
        assert!(err.contains(n), "lmc {args:?}: stderr lacks {n:?}: {err}");
    }
}

/// A tensor to write: name, safetensors dtype, shape, little-endian bytes.
struct T {
    name: &'static str,
    dtype: &'static str,
    shape: Vec<u64>,
    data: Vec<u8>,
}

fn f32s(name: &'static str, v: &[f32]) -> T {
    T {
        name,
        dtype: "F32",
        shape: vec![v.len() as u64],
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// A safetensors file: the tensors in the order given, `step` in `__metadata__`.
fn safetensors(tensors: &[T], step: Option<&str>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for t in tensors {
        header.insert(
            t.name.into(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + t.data.len()]}),
        );
        offset += t.data.len();
    }
    if let Some(s) = step {
        header.insert("__metadata__".into(), json!({ "step": s }));
    }
    let mut h = serde_json::to_string(&header).unwrap();
    // Pad the header so that the data starts 8-byte aligned.
    h.push_str(&" ".repeat((8 - h.len() % 8) % 8));
    let mut f = (h.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(h.as_bytes());
    for t in tensors {
        f.extend_from_slice(&t.data);
    }
    f
}

/// Deterministic pseudo-random numbers (a 64-bit LCG), independent of lmc.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    /// A float in [0.5, 1.5) with random mantissa bits, never zero.
    fn float(&mut self) -> f32 {
        0.5 + (self.next() % (1 << 20)) as f32 / (1 << 20) as f32
    }
}

/// Entropy in bits of a byte sequence.
fn entropy(bytes: &[u8]) -> f64 {
    let mut c = [0u64; 256];
    for &b in bytes {
        c[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    c.iter()
        .filter(|&&k| k > 0)
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// The byte planes of 32-bit floats as lmc defines them: rotated left by one
/// bit (sign to the bottom), most significant byte first.
fn planes_f32(words: &[u32]) -> Vec<Vec<u8>> {
    (0..4)
        .map(|k| {
            words
                .iter()
                .map(|w| w.rotate_left(1).to_be_bytes()[k])
                .collect()
        })
        .collect()
}

fn planes_bf16(halves: &[u16]) -> Vec<Vec<u8>> {
    (0..2)
        .map(|k| {
            halves
                .iter()
                .map(|h| h.rotate_left(1).to_be_bytes()[k])
                .collect()
        })
        .collect()
}

fn close(a: &Value, b: f64, what: &str) {
    let a = a
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {a}"));
    assert!((a - b).abs() < 1e-9, "{what}: {a} != {b}");
}

fn tensor<'a>(file: &'a Value, name: &str) -> &'a Value {
    file["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no tensor {name} in {file}"))
}

fn dtype<'a>(file: &'a Value, name: &str) -> &'a Value {
    file["dtypes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["dtype"] == name)
        .unwrap_or_else(|| panic!("no dtype {name}"))
}

fn listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

const PLOTS: [&str; 3] = [
    "lmc-analyze-ratio.svg",
    "lmc-analyze-entropy.svg",
    "lmc-analyze-exponents.svg",
];

/// Reads a plot and checks that it is a complete SVG document with texts
/// (legend entries, labels) starting with each of `names`.
fn svg(path: &Path, names: &[&str]) -> String {
    let s = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = s.trim();
    assert!(
        t.starts_with("<svg") || t.starts_with("<?xml"),
        "{}: not an SVG document",
        path.display()
    );
    assert!(t.ends_with("</svg>"), "{}: incomplete", path.display());
    assert_eq!(s.matches("<svg").count(), 1, "{}", path.display());
    // plotters writes each text element's content on a line of its own.
    for n in names {
        assert!(
            s.lines().any(|l| l.trim().starts_with(n)),
            "{}: no text {n:?}",
            path.display()
        );
    }
    s
}

// ---------------------------------------------------------------------------
// One file with known distributions
// ---------------------------------------------------------------------------

/// BF16: exponent field 127, 126, 125, 130 with probabilities 1/2, 1/4,
/// 1/8, 1/8 (entropy 1.75 bits), 7 mantissa bits uniform over 128 values.
fn bf16_known(n: usize) -> Vec<u16> {
    (0..n)
        .map(|i| {
            let e: u16 = match i % 8 {
                0..=3 => 127,
                4 | 5 => 126,
                6 => 125,
                _ => 130,
            };
            (e << 7) | (i as u16 / 8 % 128)
        })
        .collect()
}

/// F32: every 4th element is 0.0, the others random in [0.5, 1.5).
fn f32_quarter_zeros(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Lcg(seed);
    (0..n)
        .map(|i| if i % 4 == 0 { 0.0 } else { r.float() })
        .collect()
}

#[test]
fn one_file_known_distributions() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let bf = bf16_known(8192);
    let f = f32_quarter_zeros(1000, 7);
    let ints: Vec<i32> = (0..64).collect();
    let tensors = [
        T {
            name: "emb",
            dtype: "BF16",
            shape: vec![64, 128],
            data: bf.iter().flat_map(|h| h.to_le_bytes()).collect(),
        },
        f32s("w", &f),
        T {
            name: "ids",
            dtype: "I32",
            shape: vec![64],
            data: ints.iter().flat_map(|i| i.to_le_bytes()).collect(),
        },
    ];
    fs::write(d.join("ck.safetensors"), safetensors(&tensors, Some("100"))).unwrap();
    fs::create_dir(d.join("plots")).unwrap();

    let doc = analyze_json(d, &["ck.safetensors", "-o", "plots"]);
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    let file = &files[0];
    assert_eq!(file["step"], 100);
    assert_eq!(file["step_from"], "metadata");
    assert_eq!(file["totals"]["tensors"], 3);
    assert_eq!(
        file["bytes"],
        fs::metadata(d.join("ck.safetensors")).unwrap().len()
    );

    // BF16: entropy of the exponent plane 1.75, of the mantissa plane 7.
    let emb = tensor(file, "emb");
    assert_eq!(emb["dtype"], "BF16");
    assert_eq!(emb["shape"], json!([64, 128]));
    assert_eq!(emb["status"], "first");
    assert_eq!(emb["unchanged_fraction"], Value::Null);
    close(&emb["planes"][0]["entropy"], 1.75, "BF16 plane 0 entropy");
    close(&emb["planes"][1]["entropy"], 7.0, "BF16 plane 1 entropy");
    let p = planes_bf16(&bf);
    close(&emb["planes"][0]["entropy"], entropy(&p[0]), "BF16 plane 0");
    // The order-0 bound: 8192 * (1.75 + 7) / 8 bytes.
    close(
        &emb["sizes"]["bound"],
        8192.0 * 8.75 / 8.0,
        "BF16 bound bytes",
    );
    close(&emb["ratios"]["bound"], 16.0 / 8.75, "BF16 bound ratio");
    let zeros = p.iter().flatten().filter(|&&b| b == 0).count();
    close(
        &emb["zero_fraction"],
        zeros as f64 / 16384.0,
        "BF16 zero bytes",
    );
    close(
        &emb["planes"][1]["zero_fraction"],
        64.0 / 8192.0,
        "BF16 plane 1 zeros",
    );
    let hist = &emb["exponent_histogram"];
    assert_eq!(
        (hist["bits"].as_u64(), hist["bias"].as_i64()),
        (Some(8), Some(127))
    );
    let mut want = vec![0u64; 256];
    for h in &bf {
        want[((h >> 7) & 0xFF) as usize] += 1;
    }
    assert_eq!(hist["counts"], json!(want));
    assert_eq!(
        (want[127], want[126], want[125], want[130]),
        (4096, 2048, 1024, 1024)
    );

    // F32: a quarter of the elements are zero.
    let w = tensor(file, "w");
    close(&w["zero_elements_fraction"], 0.25, "F32 zero elements");
    let words: Vec<u32> = f.iter().map(|x| x.to_bits()).collect();
    let p = planes_f32(&words);
    for (k, plane) in p.iter().enumerate() {
        close(
            &w["planes"][k]["entropy"],
            entropy(plane),
            &format!("F32 plane {k} entropy"),
        );
        let z = plane.iter().filter(|&&b| b == 0).count();
        close(
            &w["planes"][k]["zero_fraction"],
            z as f64 / 1000.0,
            &format!("F32 plane {k} zeros"),
        );
    }
    let zeros = p.iter().flatten().filter(|&&b| b == 0).count();
    close(&w["zero_fraction"], zeros as f64 / 4000.0, "F32 zero bytes");
    let mut want = vec![0u64; 256];
    for x in &words {
        want[((x >> 23) & 0xFF) as usize] += 1;
    }
    assert_eq!(w["exponent_histogram"]["counts"], json!(want));
    assert_eq!(want[0], 250);

    // Integers have no exponent; every codec gives a ratio.
    let ids = tensor(file, "ids");
    assert_eq!(ids["exponent_histogram"], Value::Null);
    for t in [emb, w, ids] {
        for k in ["lmc", "zstd3", "zstd3_grouped", "bound"] {
            assert!(t["ratios"][k].as_f64().is_some_and(|r| r > 0.0), "{k}: {t}");
        }
        assert_eq!(t["ratios"]["lmc_xor_delta"], Value::Null);
    }

    // Per dtype, one tensor each: the same numbers.
    let bf16 = dtype(file, "BF16");
    assert_eq!(bf16["tensors"], 1);
    close(&bf16["planes"][0]["entropy"], 1.75, "BF16 dtype plane 0");
    assert_eq!(bf16["exponent_histogram"], emb["exponent_histogram"]);
    close(
        &dtype(file, "F32")["zero_elements_fraction"],
        0.25,
        "F32 dtype zeros",
    );

    // The whole-file lmc ratio is that of the real container.
    ok(d, &["compress", "ck.safetensors"]);
    let container = fs::metadata(d.join("ck.safetensors.lmc")).unwrap().len();
    assert_eq!(file["totals"]["lmc_container_bytes"], container);

    // Plots: bars for one file, named in the JSON, nothing else left behind.
    let plots: Vec<String> = PLOTS
        .iter()
        .map(|p| Path::new("plots").join(p).display().to_string())
        .collect();
    assert_eq!(doc["plots"], json!(plots));
    assert_eq!(
        listing(&d.join("plots")),
        PLOTS.iter().map(|s| s.to_string()).collect()
    );
    let pd = d.join("plots");
    svg(
        &pd.join(PLOTS[0]),
        &["lmc", "zstd -3", "order-0 bound", "whole file", "BF16"],
    );
    svg(
        &pd.join(PLOTS[1]),
        &["BF16 p0", "F32 p3", "order-0 entropy"],
    );
    svg(
        &pd.join(PLOTS[2]),
        &["BF16 (8 bits, bias 127)", "F32 (8 bits"],
    );
}

#[test]
fn table_output() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let t = [
        f32s("big", &f32_quarter_zeros(3000, 1)),
        f32s("small", &f32_quarter_zeros(10, 2)),
    ];
    fs::write(d.join("a.safetensors"), safetensors(&t, None)).unwrap();
    fs::write(d.join("b.safetensors"), safetensors(&t, None)).unwrap();
    let (out, err) = ok(
        d,
        &["analyze", "a.safetensors", "b.safetensors", "--top", "1"],
    );
    assert_eq!(err, "");
    assert!(
        out.starts_with("a.safetensors: step 0 (position in the series)"),
        "{out}"
    );
    assert!(out.contains("b.safetensors: step 1 (position in the series)"));
    assert!(out.contains("1 largest of 2 tensors:"));
    assert!(out.contains("  big F32 [3000]"));
    assert!(!out.contains("  small F32 [10]"));
    assert!(out.contains("series of 2 files"));
    // b equals a: everything unchanged.
    assert!(out.contains("100.0%"));
    // Plots go to the current directory by default.
    assert!(
        out.contains("plots written: ./lmc-analyze-ratio.svg"),
        "{out}"
    );
    for p in PLOTS {
        assert!(d.join(p).is_file(), "{p}");
    }
}

// ---------------------------------------------------------------------------
// A series
// ---------------------------------------------------------------------------

#[test]
fn series_unchanged_xor_and_steps() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let n = 1000;
    let k = 37;
    let w0: Vec<f32> = f32_quarter_zeros(n, 3);
    // Step 50: exactly k elements changed (by one unit in the last place).
    let mut w1 = w0.clone();
    for i in 0..k {
        let j = (i * 26 + 5) % n;
        w1[j] = f32::from_bits(w1[j].to_bits() ^ 1);
    }
    let bias = vec![0.25f32; 16];
    let s0 = [f32s("w", &w0), f32s("bias", &bias)];
    let s1 = [f32s("w", &w1), f32s("bias", &bias)];
    // Step 100: w unchanged, bias reshaped (so new), one more tensor.
    let s2 = [
        f32s("w", &w1),
        T {
            name: "bias",
            dtype: "F32",
            shape: vec![4, 4],
            data: bias.iter().flat_map(|x| x.to_le_bytes()).collect(),
        },
        f32s("extra", &[1.0; 8]),
    ];
    fs::write(d.join("s0.safetensors"), safetensors(&s0, Some("0"))).unwrap();
    fs::write(d.join("s1.safetensors"), safetensors(&s1, Some("50"))).unwrap();
    fs::write(d.join("s2.safetensors"), safetensors(&s2, Some("100"))).unwrap();

    let doc = analyze_json(
        d,
        &[
            "s0.safetensors",
            "s1.safetensors",
            "s2.safetensors",
            "-o",
            ".",
        ],
    );
    let files = doc["files"].as_array().unwrap();
    let steps: Vec<_> = files.iter().map(|f| f["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 50, 100]);
    let names: Vec<_> = files.iter().map(|f| f["file"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["s0.safetensors", "s1.safetensors", "s2.safetensors"]
    );

    // The first file has nothing to compare with.
    assert_eq!(files[0]["totals"]["unchanged_fraction"], Value::Null);
    assert_eq!(files[0]["totals"]["ratios"]["lmc_xor_delta"], Value::Null);

    // Step 50: k of n elements of w changed; bias unchanged.
    let w = tensor(&files[1], "w");
    assert_eq!(w["status"], "matched");
    close(
        &w["unchanged_fraction"],
        (n - k) as f64 / n as f64,
        "unchanged w",
    );
    close(
        &tensor(&files[1], "bias")["unchanged_fraction"],
        1.0,
        "bias",
    );
    close(
        &files[1]["totals"]["unchanged_fraction"],
        (n - k + 16) as f64 / (n + 16) as f64,
        "file unchanged",
    );
    assert_eq!(files[1]["totals"]["new_tensors"], 0);
    // The XOR delta's planes: all zero but for the lowest bit of k elements,
    // which the rotation moves to bit 1 of the last plane.
    let xor: Vec<u32> = w0
        .iter()
        .zip(&w1)
        .map(|(a, b)| a.to_bits() ^ b.to_bits())
        .collect();
    let xp = planes_f32(&xor);
    for (p, plane) in xp.iter().enumerate() {
        close(
            &w["planes"][p]["xor_entropy"],
            entropy(plane),
            &format!("xor entropy plane {p}"),
        );
    }
    let q = k as f64 / n as f64;
    close(
        &w["planes"][3]["xor_entropy"],
        -(q * q.log2() + (1.0 - q) * (1.0 - q).log2()),
        "xor plane 3",
    );
    close(&w["planes"][0]["xor_entropy"], 0.0, "xor plane 0");
    // Almost nothing changed, so the delta compresses far better.
    let r = &w["ratios"];
    assert!(r["lmc_xor_delta"].as_f64().unwrap() > 5.0 * r["lmc"].as_f64().unwrap());
    assert!(
        files[1]["totals"]["ratios"]["lmc_xor_delta"]
            .as_f64()
            .unwrap()
            > 1.0
    );
    assert!(
        dtype(&files[1], "F32")["planes"][3]["xor_entropy"]
            .as_f64()
            .is_some()
    );

    // Step 100: w identical, bias reshaped and extra added: both new.
    let f2 = &files[2];
    close(&tensor(f2, "w")["unchanged_fraction"], 1.0, "w at 100");
    assert_eq!(tensor(f2, "bias")["status"], "new");
    assert_eq!(tensor(f2, "extra")["status"], "new");
    assert_eq!(tensor(f2, "extra")["ratios"]["lmc_xor_delta"], Value::Null);
    assert_eq!(f2["totals"]["new_tensors"], 2);
    close(
        &f2["totals"]["unchanged_fraction"],
        n as f64 / (n + 16 + 8) as f64,
        "file unchanged at 100",
    );

    // The plots of a series: lines over the steps.
    svg(
        &d.join(PLOTS[0]),
        &[
            "lmc",
            "zstd -3",
            "zstd -3 on byte planes",
            "order-0 bound",
            "lmc on XOR delta",
            "training step",
        ],
    );
    svg(
        &d.join(PLOTS[1]),
        &["F32 plane 0", "F32 plane 3", "training step"],
    );
    svg(
        &d.join(PLOTS[2]),
        &[
            "F32 (8 bits, bias 127)",
            "Exponent histogram: s2.safetensors (step 100)",
        ],
    );
}

#[test]
fn steps_from_position_and_out_of_order() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let t = [f32s("w", &[1.0, 2.0, 3.0, 4.0])];
    fs::write(d.join("late.safetensors"), safetensors(&t, Some("200"))).unwrap();
    fs::write(d.join("early.safetensors"), safetensors(&t, Some("100"))).unwrap();
    fs::write(d.join("plain.safetensors"), safetensors(&t, None)).unwrap();
    let out = lmc(
        d,
        &[
            "analyze",
            "--json",
            "--no-plots",
            "late.safetensors",
            "early.safetensors",
            "plain.safetensors",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<_> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["step"].as_u64().unwrap(),
                f["step_from"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (200, "metadata".into()),
            (100, "metadata".into()),
            (2, "position".into())
        ]
    );
    let err = text(&out.stderr);
    assert!(err.contains("not in increasing order"), "{err}");
    assert_eq!(doc["plots"], json!([]));
    assert_eq!(
        listing(d),
        ["early.safetensors", "late.safetensors", "plain.safetensors"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

#[test]
fn raw_array_with_dtype() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let halves = bf16_known(4096);
    let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
    fs::write(d.join("w.bin"), bytes).unwrap();
    let doc = analyze_json(d, &["w.bin", "--dtype", "bf16", "--no-plots"]);
    let f = &doc["files"][0];
    assert_eq!(f["step"], 0);
    close(
        &tensor(f, "data")["planes"][0]["entropy"],
        1.75,
        "raw plane 0",
    );
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn errors_name_the_file() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let good = safetensors(&[f32s("w", &[1.0; 16])], None);
    fs::write(d.join("good.safetensors"), &good).unwrap();
    fs::write(d.join("notes.txt"), "not a checkpoint at all\n").unwrap();
    let mut cut = good.clone();
    cut.truncate(good.len() - 8);
    fs::write(d.join("cut.safetensors"), &cut).unwrap();
    fs::write(d.join("a-file"), "x").unwrap();

    fails(
        d,
        &["analyze", "notes.txt"],
        &["notes.txt", "not a safetensors file"],
    );
    fails(
        d,
        &["analyze", "missing.safetensors"],
        &["missing.safetensors"],
    );
    // The second file is bad: reported before anything is printed.
    fails(
        d,
        &["analyze", "good.safetensors", "cut.safetensors"],
        &["cut.safetensors"],
    );
    fails(
        d,
        &["analyze", "good.safetensors", "-o", "no/such/dir"],
        &["no/such/dir"],
    );
    fails(
        d,
        &["analyze", "good.safetensors", "-o", "a-file"],
        &["a-file", "not a directory"],
    );
    fails(
        d,
        &["analyze", "--dtype", "f33", "good.safetensors"],
        &["unknown dtype"],
    );
    fs::write(d.join("lmc-analyze-ratio.svg"), &good).unwrap();
    fails(
        d,
        &["analyze", "lmc-analyze-ratio.svg"],
        &["would replace the input lmc-analyze-ratio.svg"],
    );
    // Nothing was written by the failures.
    assert_eq!(
        listing(d),
        [
            "a-file",
            "cut.safetensors",
            "good.safetensors",
            "lmc-analyze-ratio.svg",
            "notes.txt"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    );
}

#[cfg(unix)]
#[test]
fn unwritable_plot_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    fs::write(
        d.join("good.safetensors"),
        safetensors(&[f32s("w", &[1.0; 16])], None),
    )
    .unwrap();
    fs::create_dir(d.join("ro")).unwrap();
    fs::set_permissions(d.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    // Root may write anywhere: then there is nothing to test.
    if tempfile::tempfile_in(d.join("ro")).is_ok() {
        return;
    }
    fails(d, &["analyze", "good.safetensors", "-o", "ro"], &["ro"]);
}
