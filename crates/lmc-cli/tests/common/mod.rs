//! Helpers the CLI's test files share: running the `lmc` binary and reading
//! what it printed. (Each test file is its own crate and uses a part.)
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `lmc ARGS` in `dir`.
pub fn lmc<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lmc"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `lmc ARGS` in `dir`, asserts success; returns (stdout, stderr).
pub fn ok<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> (String, String) {
    let out = lmc(dir, args);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(
        out.status.success(),
        "lmc {shown:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

/// A file under the repository's `tests/data/` (the golden files).
pub fn golden(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(p)
}

/// The bytes of golden file `p`, checked to be `len` long (golden files
/// never change).
pub fn read_golden(p: &str, len: usize) -> Vec<u8> {
    let b = std::fs::read(golden(p)).unwrap();
    assert_eq!(b.len(), len, "{p} was changed");
    b
}

/// What `lmc decompress tests/data/DIR/next.safetensors.lmc --base
/// tests/data/DIR/base.safetensors` writes (a golden delta's CLI decode).
pub fn decompress_golden_delta(dir: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("next.safetensors");
    let (lmc_file, base) = (
        golden(&format!("{dir}/next.safetensors.lmc")),
        golden(&format!("{dir}/base.safetensors")),
    );
    let args: [&OsStr; 6] = [
        "decompress".as_ref(),
        lmc_file.as_os_str(),
        "--base".as_ref(),
        base.as_os_str(),
        "-o".as_ref(),
        dest.as_os_str(),
    ];
    ok(tmp.path(), &args);
    std::fs::read(&dest).unwrap()
}
