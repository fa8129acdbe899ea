//! Property tests of the readers: what a writer puts in comes back out,
//! and arbitrary or damaged bytes give an answer or an error, never a
//! panic or a layout that does not tile the input.

use lmc_core::SegmentKind;
use lmc_tensors::pickle::{self, Value};
use lmc_tensors::{detect, npy, tree};
use proptest::prelude::*;

/// A Python value made of what state dicts hold.
#[derive(Debug, Clone)]
enum Py {
    Int(i64),
    Str(String),
    None,
    Bool(bool),
    List(Vec<Py>),
    Tuple(Vec<Py>),
    Dict(Vec<(String, Py)>),
}

fn py() -> impl Strategy<Value = Py> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Py::Int),
        "[a-z_.]{0,12}".prop_map(Py::Str),
        Just(Py::None),
        any::<bool>().prop_map(Py::Bool),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Py::List),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Py::Tuple),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..6).prop_map(|kv| {
                // Keys are unique in a dict.
                let mut seen = std::collections::HashSet::new();
                Py::Dict(
                    kv.into_iter()
                        .filter(|(k, _)| seen.insert(k.clone()))
                        .collect(),
                )
            }),
        ]
    })
}

/// Pickles `v` the way CPython's pickler does at protocol 2 (memoizing
/// containers and strings, SETITEMS/APPENDS in batches), with `memo` to
/// make repeated strings use BINGET.
fn pickle(v: &Py, out: &mut Vec<u8>, memo: &mut Vec<String>) {
    let put = |out: &mut Vec<u8>, memo: &mut Vec<String>, key: String| {
        let i = memo.len();
        memo.push(key);
        if i < 256 {
            out.extend_from_slice(&[b'q', i as u8]);
        } else {
            out.push(b'r');
            out.extend_from_slice(&(i as u32).to_le_bytes());
        }
    };
    match v {
        Py::Int(i) => {
            if (0..256).contains(i) {
                out.extend_from_slice(&[b'K', *i as u8]);
            } else if i32::try_from(*i).is_ok() {
                out.push(b'J');
                out.extend_from_slice(&(*i as i32).to_le_bytes());
            } else {
                out.extend_from_slice(&[0x8a, 8]);
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
        Py::Str(s) => {
            if let Some(i) = memo.iter().position(|m| m == &format!("s:{s}")) {
                if i < 256 {
                    out.extend_from_slice(&[b'h', i as u8]);
                } else {
                    out.push(b'j');
                    out.extend_from_slice(&(i as u32).to_le_bytes());
                }
                return;
            }
            out.push(b'X');
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            put(out, memo, format!("s:{s}"));
        }
        Py::None => out.push(b'N'),
        Py::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
        Py::List(xs) => {
            out.push(b']');
            put(out, memo, String::new());
            for batch in xs.chunks(3) {
                out.push(b'(');
                for x in batch {
                    pickle(x, out, memo);
                }
                out.push(b'e');
            }
        }
        Py::Tuple(xs) => {
            match xs.len() {
                0 => out.push(b')'),
                n @ 1..=3 => {
                    for x in xs {
                        pickle(x, out, memo);
                    }
                    out.push(0x84 + n as u8);
                }
                _ => {
                    out.push(b'(');
                    for x in xs {
                        pickle(x, out, memo);
                    }
                    out.push(b't');
                }
            }
            put(out, memo, String::new());
        }
        Py::Dict(kv) => {
            out.push(b'}');
            put(out, memo, String::new());
            for batch in kv.chunks(2) {
                out.push(b'(');
                for (k, x) in batch {
                    pickle(&Py::Str(k.clone()), out, memo);
                    pickle(x, out, memo);
                }
                out.push(b'u');
            }
        }
    }
}

/// The leaves of `v` with their paths, as [`pickle::Pickle::walk`] names them.
fn leaves(v: &Py, path: &str, out: &mut Vec<(String, String)>) {
    let child = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Py::Int(i) => out.push((path.into(), format!("int {i}"))),
        Py::Str(s) => out.push((path.into(), format!("str {s}"))),
        Py::None => out.push((path.into(), "None".into())),
        Py::Bool(b) => out.push((path.into(), format!("bool {b}"))),
        Py::List(xs) | Py::Tuple(xs) => {
            for (i, x) in xs.iter().enumerate() {
                leaves(x, &child(&i.to_string()), out);
            }
        }
        Py::Dict(kv) => {
            for (k, x) in kv {
                leaves(x, &child(k), out);
            }
        }
    }
}

fn read_leaves(p: &pickle::Pickle) -> Vec<(String, String)> {
    let mut got = Vec::new();
    p.walk(|path, v| {
        let leaf = match v {
            Value::Int(i) => format!("int {i}"),
            Value::Str(_) => format!("str {}", p.string(v).unwrap()),
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Obj(_) => return,
            other => format!("{other:?}"),
        };
        got.push((path.to_string(), leaf));
    });
    got
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pickles_read_back(v in py()) {
        let mut b = vec![0x80, 2];
        pickle(&v, &mut b, &mut Vec::new());
        b.push(b'.');
        let p = pickle::read(&b, 0);
        prop_assert_eq!(&p.stopped, &None);
        prop_assert_eq!(p.end, Some(b.len()));
        let mut want = Vec::new();
        leaves(&v, "", &mut want);
        prop_assert_eq!(read_leaves(&p), want);
    }

    /// Damaged pickles: reading stops with a reason or finishes, never panics.
    #[test]
    fn damaged_pickles_stop(v in py(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut b = vec![0x80, 2];
        pickle(&v, &mut b, &mut Vec::new());
        b.push(b'.');
        let i = at.index(b.len());
        b[i] = byte;
        let p = pickle::read(&b, 0);
        prop_assert!(p.stopped.is_some() != p.end.is_some());
        let n = cut.index(b.len());
        let p = pickle::read(&b[..n], 0);
        prop_assert!(p.end.is_none() || p.end.unwrap() <= n);
        let _ = read_leaves(&p);
    }

    #[test]
    fn random_pickles_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        let p = pickle::read(&b, 0);
        let _ = read_leaves(&p);
        let _ = lmc_tensors::torch::summarize(&b, 0, "data.pkl");
    }

    /// `.npy` headers as NumPy writes them read back.
    #[test]
    fn npy_headers_read_back(
        descr in prop::sample::select(vec!["<f2", "<f4", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "|b1", "<c8", "<c16", ">f4", "<U3", "|S5", "|V4"]),
        fortran in any::<bool>(),
        shape in prop::collection::vec(0u64..5, 0..4),
        trailing in 0usize..3,
        version in 1u8..4,
    ) {
        let dims = match shape.len() {
            1 => format!("({},)", shape[0]),
            _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': {}, 'shape': {dims}, }}", if fortran { "True" } else { "False" });
        let prefix = if version == 1 { 10 } else { 12 };
        while (prefix + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut f = npy::MAGIC.to_vec();
        f.extend_from_slice(&[version, 0]);
        if version == 1 {
            f.extend_from_slice(&(h.len() as u16).to_le_bytes());
        } else {
            f.extend_from_slice(&(h.len() as u32).to_le_bytes());
        }
        f.extend_from_slice(h.as_bytes());
        let header = npy::header(&f).unwrap();
        prop_assert_eq!(header.len, f.len());
        prop_assert_eq!(&header.descr, descr);
        prop_assert_eq!(header.fortran_order, fortran);
        prop_assert_eq!(&header.shape, &shape);
        let size: u64 = descr[2..].parse().unwrap();
        let size = if descr.starts_with("<U") { size * 4 } else { size };
        let n = shape.iter().product::<u64>() * size;
        f.extend(std::iter::repeat_n(7u8, n as usize + trailing));
        let d = detect(&f).unwrap();
        prop_assert_eq!(d.layout.iter().map(|s| s.len).sum::<u64>(), f.len() as u64);
        let tensors: Vec<_> = d.layout.iter().filter(|s| matches!(s.kind, SegmentKind::Tensor { .. })).collect();
        prop_assert_eq!(tensors.len(), npy::dtype(descr).is_some() as usize);
        if n > 0 {
            prop_assert!(detect(&f[..f.len() - trailing - 1]).is_err());
        }
    }

    /// Any bytes: detection answers with a layout that tiles them, or an error.
    #[test]
    fn detection_tiles_or_refuses(
        prefix in prop::sample::select(vec![&b""[..], b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY\x01\x00", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", b"\x10\x00\x00\x00\x00\x00\x00\x00{"]),
        rest in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut b = prefix.to_vec();
        b.extend_from_slice(&rest);
        if let Ok(d) = detect(&b) {
            prop_assert_eq!(d.layout.iter().map(|s| s.len).sum::<u64>(), b.len() as u64);
        }
    }

    /// Damaged copies of real files (the committed fixtures).
    #[test]
    fn damaged_fixtures(which in 0usize..4, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let name = ["tiny_adamw.pt", "tiny_legacy.pt", "npy/stored.npz", "calls_os_system.pt"][which];
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/formats").join(name);
        let mut b = std::fs::read(path).unwrap();
        let i = at.index(b.len());
        b[i] = byte;
        if let Ok(d) = detect(&b) {
            prop_assert_eq!(d.layout.iter().map(|s| s.len).sum::<u64>(), b.len() as u64);
        }
    }

    /// Directory streams fed in random pieces, damaged or not, never panic.
    #[test]
    fn tree_reader_never_panics(b in prop::collection::vec(any::<u8>(), 0..200), piece in 1usize..40) {
        let mut s = tree::header(0o755).to_vec();
        s.extend_from_slice(&b);
        let mut r = tree::Reader::new();
        let mut ok = true;
        for p in s.chunks(piece) {
            if r.feed(p, &mut tree::NullSink).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            let _ = r.finish();
        }
    }
}
