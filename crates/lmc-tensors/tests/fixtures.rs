//! Detection on the committed fixtures of tests/data/formats/ (written by
//! real PyTorch, NumPy and safetensors; see make_fixtures.py there).

use std::path::{Path, PathBuf};

use lmc_core::{Dtype, SegmentKind};
use lmc_tensors::{Format, detect};

fn fixture(name: &str) -> Vec<u8> {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/formats")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Name, dtype, shape and offset of a tensor segment.
type Found = (String, Dtype, Vec<u64>, u64);

/// The format, the tensor segments and the notes of a file.
fn tensors(bytes: &[u8]) -> (Format, Vec<Found>, Vec<String>) {
    let d = detect(bytes).unwrap();
    assert_eq!(
        d.layout.iter().map(|s| s.len).sum::<u64>(),
        bytes.len() as u64
    );
    let mut off = 0;
    let mut out = Vec::new();
    for s in &d.layout {
        if let SegmentKind::Tensor { name, dtype, shape } = &s.kind {
            assert_eq!(shape.iter().product::<u64>() * dtype.width() as u64, s.len);
            out.push((name.clone(), *dtype, shape.clone(), off));
        }
        off += s.len;
    }
    (d.format, out, d.notes)
}

#[test]
fn torch_checkpoint_with_optimizer() {
    let b = fixture("tiny_adamw.pt");
    let (format, t, notes) = tensors(&b);
    assert_eq!(format, Format::Torch);
    assert!(notes.is_empty(), "{notes:?}");
    let names: Vec<&str> = t.iter().map(|x| x.0.as_str()).collect();
    for want in [
        "model.embed.weight",
        "model.blocks.0.weight",
        "model_bf16.blocks.2.bias",
        "optimizer.state.0.exp_avg",
        "optimizer.state.4.exp_avg_sq",
        "optimizer.state.0.step",
        "extra.0",
        "extra.2.1",
        "extra.4",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    // Views share model.blocks.0.weight's storage: no segment of their own.
    assert!(!names.iter().any(|n| n.starts_with("views")), "{names:?}");
    let get = |n: &str| t.iter().find(|x| x.0 == n).unwrap();
    assert_eq!(get("model.embed.weight").1, Dtype::F32);
    assert_eq!(get("model.embed.weight").2, vec![96 * 64]);
    assert_eq!(get("model_bf16.embed.weight").1, Dtype::BF16);
    assert_eq!(get("extra.0").1, Dtype::I64);
    assert_eq!(get("extra.1").1, Dtype::Bool);
    assert_eq!(get("extra.2.0").1, Dtype::F16);
    assert_eq!(get("extra.2.1").1, Dtype::I8);
    assert_eq!(get("extra.4").2, vec![1]);
}

#[test]
fn torch_legacy() {
    let b = fixture("tiny_legacy.pt");
    let (format, t, notes) = tensors(&b);
    assert_eq!(format, Format::TorchLegacy);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(t.len(), 7);
    assert!(t.iter().all(|x| x.1 == Dtype::F32));
    assert_eq!(t[0].0, "embed.weight");
}

#[test]
fn pickle_that_calls_a_function() {
    let b = fixture("calls_os_system.pt");
    let (format, t, notes) = tensors(&b);
    assert_eq!(format, Format::Torch);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].0, "w");
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("posix.system"), "{notes:?}");
}

#[test]
fn numpy_arrays() {
    for (f, dtype, shape) in [
        ("npy/f32.npy", Some(Dtype::F32), vec![32, 48]),
        ("npy/f16.npy", Some(Dtype::F16), vec![300]),
        ("npy/f64.npy", Some(Dtype::F64), vec![10, 10]),
        ("npy/i8.npy", Some(Dtype::I8), vec![100]),
        ("npy/i64.npy", Some(Dtype::I64), vec![50]),
        ("npy/u16.npy", Some(Dtype::U16), vec![64]),
        ("npy/bool.npy", Some(Dtype::Bool), vec![33]),
        ("npy/c64.npy", Some(Dtype::F32), vec![20, 2]),
        ("npy/fortran.npy", Some(Dtype::F32), vec![24, 16]),
        ("npy/scalar.npy", Some(Dtype::F64), vec![]),
        ("npy/empty.npy", Some(Dtype::F32), vec![0, 4]),
        ("npy/big_endian.npy", None, vec![]),
        ("npy/text.npy", None, vec![]),
    ] {
        let b = fixture(f);
        let (format, t, _) = tensors(&b);
        assert_eq!(format, Format::Npy, "{f}");
        match dtype {
            Some(d) => assert_eq!(t, vec![("array".into(), d, shape, t[0].3)], "{f}"),
            None => assert!(t.is_empty(), "{f}"),
        }
    }
    let (format, t, _) = tensors(&fixture("npy/stored.npz"));
    assert_eq!(format, Format::Npz);
    let names: Vec<&str> = t.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names, ["f32", "i64", "fortran", "scalar"]);
    let (format, t, _) = tensors(&fixture("npy/deflated.npz"));
    assert_eq!(format, Format::Npz);
    assert!(t.is_empty());
}

#[test]
fn truncated_fixtures_are_refused() {
    for f in [
        "tiny_adamw.pt",
        "tiny_legacy.pt",
        "npy/f32.npy",
        "npy/stored.npz",
    ] {
        let b = fixture(f);
        for cut in [1, 7, 100, b.len() / 2] {
            let e = detect(&b[..b.len() - cut]);
            assert!(e.is_err(), "{f} cut by {cut}: {:?}", e.map(|d| d.format));
        }
    }
}

/// uint16, uint32 and float8 tensors are saved as untyped storages (their
/// dtype is an argument of `_rebuild_tensor_v3`); complex as pairs.
#[test]
fn torch_dtypes_without_legacy_storage_types() {
    let b = fixture("new_dtypes.pt");
    let (format, t, notes) = tensors(&b);
    assert_eq!(format, Format::Torch);
    assert!(notes.is_empty(), "{notes:?}");
    let got: Vec<(&str, Dtype, &[u64])> = t.iter().map(|x| (x.0.as_str(), x.1, &x.2[..])).collect();
    assert_eq!(
        got,
        [
            ("u16", Dtype::U16, &[1000][..]),
            ("f8", Dtype::F8E4M3, &[1000]),
            ("u32", Dtype::U32, &[10]),
            ("cf", Dtype::F32, &[8, 2]),
        ]
    );
}
