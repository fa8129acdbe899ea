//! The v2 (delta) golden container: decodes with its base to exactly the
//! golden file, and is refused without that base or with another. The
//! files in `tests/data/v2/` are never regenerated (see the README there).

mod common;
use common::{golden, read_golden};

use std::fs;
use std::process::Output;

use assert_cmd::Command;
use lmc_core::Container;
use xxhash_rust::xxh3::xxh3_128;

const NEXT_LEN: usize = 29_051;
const NEXT_LMC_LEN: usize = 8_761;

fn lmc(args: &[&std::ffi::OsStr]) -> Output {
    Command::cargo_bin("lmc")
        .unwrap()
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn golden_delta_decodes_with_its_base() {
    let next = read_golden("v2/next.safetensors", NEXT_LEN);
    let packed = read_golden("v2/next.safetensors.lmc", NEXT_LMC_LEN);
    let base = fs::read(golden("v1/small.safetensors")).unwrap();

    // The library: v2, its base recorded, one removed tensor, 21 delta tensors.
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().version, 2);
    let b = c.base_ref().unwrap();
    assert_eq!((b.len, b.hash), (base.len() as u64, xxh3_128(&base)));
    assert_eq!(c.removed(), ["ints.i8".to_string()]);
    assert_eq!(
        c.segments()
            .iter()
            .filter(|s| s.base_offset.is_some())
            .count(),
        21
    );
    let c = c.with_base(&base).unwrap();
    let mut out = Vec::new();
    c.decompress_to(&mut out, &mut |_| true).unwrap();
    assert!(out == next);

    // The CLI, with the base as a file and as a full container of it.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("next.safetensors");
    for base_arg in ["v1/small.safetensors", "v1/small.safetensors.lmc"] {
        let o = lmc(&[
            "decompress".as_ref(),
            golden("v2/next.safetensors.lmc").as_os_str(),
            "--base".as_ref(),
            golden(base_arg).as_os_str(),
            "-o".as_ref(),
            dest.as_os_str(),
            "--force".as_ref(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(fs::read(&dest).unwrap() == next);
    }
    let o = lmc(&[
        "verify".as_ref(),
        golden("v2/next.safetensors.lmc").as_os_str(),
        "--base".as_ref(),
        golden("v1/small.safetensors").as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn golden_delta_refuses_a_missing_or_wrong_base() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let packed = golden("v2/next.safetensors.lmc");
    let o = lmc(&[
        "decompress".as_ref(),
        packed.as_os_str(),
        "-o".as_ref(),
        dest.as_os_str(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("delta container") && err.contains("--base"),
        "{err}"
    );
    assert!(!dest.exists());

    // The next snapshot itself is not its own base.
    let o = lmc(&[
        "decompress".as_ref(),
        packed.as_os_str(),
        "--base".as_ref(),
        golden("v2/next.safetensors").as_os_str(),
        "-o".as_ref(),
        dest.as_os_str(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("wrong base"), "{err}");
    assert!(!dest.exists());

    // A full container does not take a base.
    let o = lmc(&[
        "verify".as_ref(),
        golden("v1/small.safetensors.lmc").as_os_str(),
        "--base".as_ref(),
        golden("v1/small.safetensors").as_os_str(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a delta container"));
}
