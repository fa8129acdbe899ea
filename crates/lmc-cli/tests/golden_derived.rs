//! The derived-tensor golden container (`tests/data/derived/`): a
//! mixed-precision checkpoint directory whose BF16 and F16 weights are
//! stored as roundings of their fp32 masters (by name and inside a flat
//! buffer) and whose copies as copies, decodes to exactly the golden files,
//! whole and tensor by tensor. The files are never regenerated (see the
//! README there).

mod common;
use common::{golden, ok, read_golden};

use std::fs;

use lmc_core::derive::DeriveOp;
use lmc_core::format::{FLAG_DERIVED, FLAG_RANS};
use lmc_core::{Container, SegmentKind};

/// A derivation as the test reads it: the tensor, the op, and each piece's
/// source, first element and element count.
type Found = (String, DeriveOp, Vec<(String, u64, u64)>);

const FILES: [(&str, usize); 3] = [
    ("master-fp32.safetensors", 28_608),
    ("optim.safetensors", 16_544),
    ("weights-bf16.safetensors", 18_448),
];

#[test]
fn golden_derived_container_decodes() {
    let packed = read_golden("derived/mixed.lmc", 33_761);
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().version, 1);
    assert_eq!(c.header().flags, FLAG_DERIVED | FLAG_RANS);

    // Which tensor derives from which, and how.
    let name = |i: usize| match &c.segments()[i].kind {
        SegmentKind::Tensor { name, .. } => name.clone(),
        SegmentKind::Bytes => panic!("segment {i} is not a tensor"),
    };
    let mut found: Vec<Found> = c
        .segments()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.derived.as_ref().map(|d| {
                let pieces: Vec<_> = d
                    .pieces
                    .iter()
                    .map(|p| (name(p.source), p.source_elem, p.elems))
                    .collect();
                (name(i), d.op, pieces)
            })
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let w = |n: &str| format!("weights-bf16.safetensors:{n}");
    let m = |n: &str| format!("master-fp32.safetensors:{n}");
    let round = DeriveOp::RoundBf16;
    let one = |src: String, elem: u64, n: u64| vec![(src, elem, n)];
    let want: Vec<Found> = vec![
        (
            "optim.safetensors:a.exp_avg_copy".into(),
            DeriveOp::Copy,
            one("optim.safetensors:a.exp_avg".into(), 0, 2048),
        ),
        (w("a"), round, one(m("a"), 0, 2048)),
        (w("b"), round, one(m("flat"), 903, 1200)),
        (w("c"), round, one(m("flat"), 3, 900)),
        (w("h"), DeriveOp::RoundF16, one(m("flat"), 2103, 700)),
        (w("head"), round, one(m("a"), 0, 2048)),
        (w("s"), round, one(m("s"), 0, 1500)),
        // Straddling two partitions of a flat buffer.
        (
            w("y"),
            round,
            vec![(m("part0"), 100, 300), (m("part1"), 0, 300)],
        ),
    ];
    assert_eq!(found, want);

    // Each tensor alone, against the golden files' bytes.
    let files: Vec<Vec<u8>> = FILES
        .iter()
        .map(|(f, len)| read_golden(&format!("derived/mixed/{f}"), *len))
        .collect();
    for (f, bytes) in FILES.iter().zip(&files) {
        let (t, body) = safetensors_layout(bytes);
        for (tname, start, end) in t {
            let got = c.read_tensor(&format!("{}:{tname}", f.0)).unwrap();
            assert!(got == body[start..end], "{}:{tname}", f.0);
        }
    }

    // The CLI: the whole directory back.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mixed");
    ok(
        dir.path(),
        &[
            "decompress".as_ref(),
            golden("derived/mixed.lmc").as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
    );
    for ((f, _), bytes) in FILES.iter().zip(&files) {
        assert!(fs::read(out.join(f)).unwrap() == *bytes, "{f} differs");
    }
    let n = fs::read_dir(&out).unwrap().count();
    assert_eq!(n, FILES.len());
    ok(
        dir.path(),
        &["verify".as_ref(), golden("derived/mixed.lmc").as_os_str()],
    );
}

/// The tensors of a safetensors file (name, start, end in the data) and
/// its data section: a few lines, so the test needs no parser crate.
fn safetensors_layout(file: &[u8]) -> (Vec<(String, usize, usize)>, &[u8]) {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let head: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    let mut out = Vec::new();
    for (k, v) in head.as_object().unwrap() {
        if k == "__metadata__" {
            continue;
        }
        let o = v["data_offsets"].as_array().unwrap();
        out.push((
            k.clone(),
            o[0].as_u64().unwrap() as usize,
            o[1].as_u64().unwrap() as usize,
        ));
    }
    (out, &file[8 + n..])
}
