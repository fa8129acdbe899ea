//! Error messages a user can act on: each cause said once, hostile names
//! cut short, and damage reported as damage.

mod common;
use common::{lmc, ok, text};

use std::fs;
use std::path::Path;

/// Runs `lmc ARGS` in `dir`, asserts that it fails, returns its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = lmc(dir, args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "lmc {args:?} succeeded: {err}");
    err
}

/// A flipped bit in the version field is damage, caught by the header
/// checksum, not a container from a newer lmc.
#[test]
fn a_flipped_version_bit_reads_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::read_golden("v1/small.safetensors.lmc", 25_352);
    c[8] ^= 0x04; // version 1 -> 5
    fs::write(dir.path().join("c.lmc"), &c).unwrap();
    for cmd in ["verify", "info"] {
        let err = fails(dir.path(), &[cmd, "c.lmc"]);
        assert!(
            err.contains("c.lmc: corrupt header: header checksum mismatch"),
            "{cmd}: {err}"
        );
        assert!(
            !err.contains("unsupported container version"),
            "{cmd}: {err}"
        );
    }
}

/// The store's errors print their cause and also return it as their
/// source: the cause must still appear once.
#[test]
fn a_missing_object_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    fs::create_dir(&ck).unwrap();
    fs::copy(
        common::golden("v1/small.safetensors"),
        ck.join("model.safetensors"),
    )
    .unwrap();
    ok(
        dir.path(),
        &["-q", "snapshot", "add", "st", "ck", "--step", "1"],
    );
    for e in fs::read_dir(dir.path().join("st/objects")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    let err = fails(
        dir.path(),
        &["-q", "snapshot", "restore", "st", "1", "-o", "r"],
    );
    assert!(err.contains("cannot restore step 1"), "{err}");
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
}

/// A 70 KB tensor name is quoted by its start and its length, not whole.
#[test]
fn long_tensor_names_are_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let name = "n".repeat(70_000);
    let header = format!(r#"{{"{name}":{{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}}}"#);
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&[0; 16]);
    fs::write(dir.path().join("long.safetensors"), file).unwrap();
    let err = fails(dir.path(), &["compress", "long.safetensors"]);
    assert!(err.len() < 1_000, "{} bytes: {}", err.len(), &err[..300]);
    assert!(err.contains("... (70000 bytes)"), "{err}");
    assert!(err.contains("longer than the 65535 bytes"), "{err}");
    assert!(!dir.path().join("long.safetensors.lmc").exists());
}
