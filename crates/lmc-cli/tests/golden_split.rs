//! The split-plane golden container (`tests/data/split/`): a delta whose
//! low byte plane is a split plane decodes with its base to exactly the
//! golden file, through the library and the CLI. The files are never
//! regenerated (see the README there).

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use lmc_core::Container;
use lmc_core::codec::PlaneCodec;
use lmc_core::format::{FLAG_RANS, FLAG_SPLIT};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/split")
        .join(p)
}

fn read(p: &str, len: usize) -> Vec<u8> {
    let b = fs::read(data(p)).unwrap();
    assert_eq!(b.len(), len, "{p} was changed");
    b
}

#[test]
fn golden_split_delta_decodes() {
    let base = read("base.safetensors", 32_840);
    let next = read("next.safetensors", 32_840);
    let packed = read("next.safetensors.lmc", 6_398);

    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().version, 2);
    assert_eq!(c.header().flags, FLAG_RANS | FLAG_SPLIT);
    let codecs: Vec<PlaneCodec> = c
        .chunks()
        .iter()
        .flat_map(|ch| ch.planes.iter().map(|p| p.codec))
        .collect();
    assert!(codecs.contains(&PlaneCodec::Split), "{codecs:?}");
    let c = c.with_base(&base).unwrap();
    let mut out = Vec::new();
    c.decompress_to(&mut out, &mut |_| true).unwrap();
    assert!(out == next);

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("next.safetensors");
    Command::cargo_bin("lmc")
        .unwrap()
        .arg("decompress")
        .arg(data("next.safetensors.lmc"))
        .arg("--base")
        .arg(data("base.safetensors"))
        .arg("-o")
        .arg(&dest)
        .assert()
        .success();
    assert!(fs::read(&dest).unwrap() == next);
}
