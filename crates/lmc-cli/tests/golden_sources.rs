//! The golden container with sources in other files
//! (`tests/data/sources/`): the BF16 weights of the derived-tensor golden
//! directory as a snapshot store codes them, every tensor derived from the
//! master file beside it, decode to exactly the golden weights given that
//! file, and are refused without it or with another. The file is never
//! regenerated (see the README there).

mod common;
use common::{golden, read_golden};

use lmc_core::derive::DeriveOp;
use lmc_core::format::{FLAG_DERIVED, FLAG_RUNS, FLAG_SOURCES};
use lmc_core::{Container, Error, SegmentKind};

/// A derivation as the test reads it: the tensor, the op, and each piece's
/// source, first element and element count.
type Found = (String, DeriveOp, Vec<(String, u64, u64)>);

#[test]
fn golden_sources_container_decodes_with_its_source_file() {
    let packed = read_golden("sources/weights-bf16.lmc", 1_621);
    let master = read_golden("derived/mixed/master-fp32.safetensors", 28_608);
    let optim = read_golden("derived/mixed/optim.safetensors", 16_544);
    let weights = read_golden("derived/mixed/weights-bf16.safetensors", 18_448);
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().version, 1);
    assert_eq!(c.header().flags, FLAG_DERIVED | FLAG_SOURCES | FLAG_RUNS);
    let files: Vec<(&str, u64)> = c
        .source_files()
        .iter()
        .map(|f| (f.name.as_str(), f.len))
        .collect();
    assert_eq!(files, [("master-fp32.safetensors", 28_608)]);

    // Which tensor derives from which tensor of the master file, and how.
    let mut found: Vec<Found> = c
        .segments()
        .iter()
        .filter_map(|s| match (&s.kind, &s.derived) {
            (SegmentKind::Tensor { name, .. }, Some(d)) => Some((
                name.clone(),
                d.op,
                d.pieces
                    .iter()
                    .map(|p| (c.describe_source(p.source), p.source_elem, p.elems))
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let m = |n: &str| format!("tensor \"{n}\" of \"master-fp32.safetensors\"");
    let round = DeriveOp::RoundBf16;
    let one = |src: String, elem: u64, n: u64| vec![(src, elem, n)];
    let want = vec![
        ("a".to_string(), round, one(m("a"), 0, 2048)),
        ("b".into(), round, one(m("flat"), 903, 1200)),
        ("c".into(), round, one(m("flat"), 3, 900)),
        ("h".into(), DeriveOp::RoundF16, one(m("flat"), 2103, 700)),
        ("head".into(), round, one(m("a"), 0, 2048)),
        ("s".into(), round, one(m("s"), 0, 1500)),
        (
            "y".into(),
            round,
            vec![(m("part0"), 100, 300), (m("part1"), 0, 300)],
        ),
    ];
    assert_eq!(found, want);

    // Without the master, or with another file: refused, naming it.
    let err = c
        .decompress_to(&mut std::io::sink(), &mut |_| true)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Source(m) if m.contains("master-fp32.safetensors")),
        "{err}"
    );
    let err = c.clone().with_sources(&[&optim]).unwrap_err();
    assert!(
        matches!(&err, Error::Source(m) if m.contains("master-fp32.safetensors")),
        "{err}"
    );

    // With it: the weights, whole and tensor by tensor.
    let c = c.with_sources(&[&master]).unwrap();
    let mut out = vec![0u8; weights.len()];
    c.decompress_into(&mut out, &mut |_| true).unwrap();
    assert!(out == weights, "the golden weights differ");
    let mut off = 0usize;
    for s in c.segments() {
        let end = off + s.len as usize;
        if let SegmentKind::Tensor { name, .. } = &s.kind {
            assert!(c.read_tensor(name).unwrap() == weights[off..end], "{name}");
        }
        off = end;
    }

    // The CLI cannot give it its source: refused by name, nothing written.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.safetensors");
    let got = std::process::Command::new(env!("CARGO_BIN_EXE_lmc"))
        .arg("decompress")
        .arg(golden("sources/weights-bf16.lmc"))
        .arg("-o")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(!got.status.success());
    let said = String::from_utf8_lossy(&got.stderr);
    assert!(said.contains("master-fp32.safetensors"), "{said}");
    assert!(!dest.exists());
}
