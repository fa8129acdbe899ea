//! Sources in other files (FORMAT.md, "Sources in other files"): a BF16
//! file whose tensors are the roundings of another file's F32 tensors is
//! stored as references to that file, decodes byte-identical with it
//! given, and refuses to decode without it or with another file.

mod common;
use common::{Rng, refused, rewrite, tensor};

use std::io::Cursor;

use lmc_core::derive::{DeriveOp, bf16_bits};
use lmc_core::format::FLAG_SOURCES;
use lmc_core::{
    CompressOptions, Container, DeltaBase, Dtype, Error, SegmentKind, SegmentSpec, SourceInput,
    compress_parts, compress_with_sources,
};

/// A file: a header of bytes, then its tensors.
struct File {
    bytes: Vec<u8>,
    layout: Vec<SegmentSpec>,
}

impl File {
    fn new(header: &[u8]) -> File {
        File {
            bytes: header.to_vec(),
            layout: vec![SegmentSpec {
                kind: SegmentKind::Bytes,
                len: header.len() as u64,
            }],
        }
    }

    fn push(&mut self, spec: SegmentSpec, data: &[u8]) {
        assert_eq!(spec.len, data.len() as u64);
        self.layout.push(spec);
        self.bytes.extend_from_slice(data);
    }

    fn parts(&self) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut off = 0usize;
        for s in &self.layout {
            out.push(&self.bytes[off..off + s.len as usize]);
            off += s.len as usize;
        }
        out
    }

    fn source(&self, name: &str) -> SourceInput<'_> {
        SourceInput {
            name: name.into(),
            parts: self.parts(),
            layout: self.layout.clone(),
        }
    }
}

fn weights(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| ((rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.08)
        .collect()
}

/// Masters (two tensors, one with a copy) and optimizer-like state, and
/// the BF16 file: the roundings of both masters, a copy of an optimizer
/// tensor and a tensor of its own.
fn checkpoint(seed: u64) -> (File, File, File) {
    let mut rng = Rng(seed);
    let (a, b) = (weights(&mut rng, 64 * 40), weights(&mut rng, 3000));
    let m: Vec<f32> = weights(&mut rng, 2000);
    let own = weights(&mut rng, 700);
    let f32b = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let bf = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|x| bf16_bits(x.to_bits()).to_le_bytes())
            .collect()
    };
    let mut master = File::new(b"master header");
    master.push(tensor("a", Dtype::F32, vec![64, 40]), &f32b(&a));
    master.push(tensor("b", Dtype::F32, vec![3000]), &f32b(&b));
    let mut optim = File::new(b"optim");
    optim.push(tensor("m", Dtype::BF16, vec![4000]), &f32b(&m));
    let mut weights = File::new(b"weights header!");
    weights.push(tensor("a", Dtype::BF16, vec![64, 40]), &bf(&a));
    weights.push(tensor("own", Dtype::BF16, vec![1400]), &f32b(&own));
    weights.push(tensor("b", Dtype::BF16, vec![3000]), &bf(&b));
    weights.push(tensor("m_copy", Dtype::BF16, vec![4000]), &f32b(&m));
    (master, optim, weights)
}

fn with_sources(
    file: &File,
    base: Option<&DeltaBase<'_>>,
    sources: &[SourceInput<'_>],
) -> (Vec<u8>, lmc_core::CompressSummary) {
    let mut out = Cursor::new(Vec::new());
    let summary = compress_with_sources(
        &file.parts(),
        &file.layout,
        base,
        sources,
        &CompressOptions::default(),
        &mut out,
        &mut |_| true,
    )
    .unwrap();
    (out.into_inner(), summary)
}

#[test]
fn roundings_and_copies_of_other_files_round_trip() {
    let (master, optim, weights) = checkpoint(1);
    let sources = [master.source("master.st"), optim.source("optim.st")];
    let (packed, summary) = with_sources(&weights, None, &sources);
    assert_eq!(summary.sources, [0, 1]);
    let alone = lmc_core::compress(
        &weights.bytes,
        &weights.layout,
        &CompressOptions::default(),
        &mut Cursor::new(Vec::new()),
        &mut |_| true,
    )
    .unwrap();
    assert!(
        summary.compressed_len * 3 < alone.compressed_len,
        "{} vs {} alone",
        summary.compressed_len,
        alone.compressed_len
    );

    let c = Container::open(&packed).unwrap();
    assert_ne!(c.header().flags & FLAG_SOURCES, 0);
    let names: Vec<&str> = c.source_files().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["master.st", "optim.st"]);
    let ops: Vec<(String, Option<DeriveOp>)> = c
        .segments()
        .iter()
        .filter_map(|s| match &s.kind {
            SegmentKind::Tensor { name, .. } => {
                Some((name.clone(), s.derived.as_ref().map(|d| d.op)))
            }
            SegmentKind::Bytes => None,
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("a".to_string(), Some(DeriveOp::RoundBf16)),
            ("own".to_string(), None),
            ("b".to_string(), Some(DeriveOp::RoundBf16)),
            ("m_copy".to_string(), Some(DeriveOp::Copy)),
        ]
    );

    // Without its sources: refused, naming the tensor and the files.
    let err = c
        .decompress_to(&mut std::io::sink(), &mut |_| true)
        .unwrap_err();
    assert!(matches!(err, Error::Source(_)), "{err}");
    assert!(err.to_string().contains("master.st"), "{err}");
    let err = c.read_tensor("a").unwrap_err();
    assert!(
        matches!(&err, Error::Source(m) if m.contains("\"a\"") && m.contains("master.st")),
        "{err}"
    );
    // With the files swapped, or one short: refused before anything is used.
    let err = c
        .clone()
        .with_sources(&[&optim.bytes, &master.bytes])
        .unwrap_err();
    assert!(
        matches!(&err, Error::Source(m) if m.contains("master.st")),
        "{err}"
    );
    let mut damaged = master.bytes.clone();
    damaged[40] ^= 1;
    assert!(matches!(
        c.clone().with_sources(&[&damaged, &optim.bytes]),
        Err(Error::Source(_))
    ));
    assert!(matches!(
        c.clone().with_sources(&[&master.bytes]),
        Err(Error::Source(_))
    ));

    // With them: the file, every way it is read.
    let c = c.with_sources(&[&master.bytes, &optim.bytes]).unwrap();
    let mut out = vec![0u8; weights.bytes.len()];
    c.decompress_into(&mut out, &mut |_| true).unwrap();
    assert_eq!(out, weights.bytes);
    let mut streamed = Vec::new();
    c.decompress_to(&mut streamed, &mut |_| true).unwrap();
    assert_eq!(streamed, weights.bytes);
    assert_eq!(c.read_tensor("b").unwrap(), weights.parts()[3]);
    let mut part = vec![0u8; 100];
    c.read_tensor_range_into("a", 1000, &mut part).unwrap();
    assert_eq!(part, weights.parts()[1][1000..1100]);
}

#[test]
fn a_delta_whose_matches_all_derive_records_no_base() {
    let (master, optim, weights) = checkpoint(2);
    let (_, _, next) = checkpoint(3);
    let base = DeltaBase::matching(&next.bytes, &next.layout, &weights.layout);
    assert_eq!(base.matched(), 4);
    let sources = [master.source("master.st"), optim.source("optim.st")];
    // "own" is matched and not derived: the base stays.
    let (packed, summary) = with_sources(&weights, Some(&base), &sources);
    assert!(summary.base_hash.is_some());
    let c = Container::open(&packed)
        .unwrap()
        .with_base(&next.bytes)
        .unwrap()
        .with_sources(&[&master.bytes, &optim.bytes])
        .unwrap();
    assert_eq!(c.read_tensor("own").unwrap(), weights.parts()[2]);

    // Without "own" in the base, every match derives: no base recorded.
    let mut no_own = File::new(b"weights header!");
    for (s, p) in next.layout.iter().zip(next.parts()).skip(1) {
        if !matches!(&s.kind, SegmentKind::Tensor { name, .. } if name == "own") {
            no_own.push(s.clone(), p);
        }
    }
    let base = DeltaBase::matching(&no_own.bytes, &no_own.layout, &weights.layout);
    assert_eq!(base.matched(), 3);
    let (packed, summary) = with_sources(&weights, Some(&base), &sources);
    assert_eq!(summary.base_hash, None);
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.base_ref(), None);
    let c = c.with_sources(&[&master.bytes, &optim.bytes]).unwrap();
    let mut out = vec![0u8; weights.bytes.len()];
    c.decompress_into(&mut out, &mut |_| true).unwrap();
    assert_eq!(out, weights.bytes);
}

#[test]
fn unused_sources_are_not_recorded() {
    let (master, optim, _) = checkpoint(4);
    let (_, _, weights) = checkpoint(5);
    let (packed, summary) = with_sources(&weights, None, &[master.source("master.st")]);
    // Nothing of this master rounds to these weights: a plain container.
    assert!(summary.sources.is_empty());
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().flags & FLAG_SOURCES, 0);
    // The file as compress_parts codes it, byte for byte.
    let mut plain = Cursor::new(Vec::new());
    compress_parts(
        &weights.parts(),
        &weights.layout,
        None,
        &CompressOptions::default(),
        &mut plain,
        &mut |_| true,
    )
    .unwrap();
    assert_eq!(plain.into_inner(), packed);
    // Only the optimizer file is used: it is source 0 of the container, 1 given.
    let (_, _, w4) = checkpoint(4);
    let (packed, summary) = with_sources(
        &w4,
        None,
        &[weights.source("unrelated"), optim.source("optim.st")],
    );
    assert_eq!(summary.sources, [1]);
    let c = Container::open(&packed)
        .unwrap()
        .with_sources(&[&optim.bytes])
        .unwrap();
    let mut out = vec![0u8; w4.bytes.len()];
    c.decompress_into(&mut out, &mut |_| true).unwrap();
    assert_eq!(out, w4.bytes);
}

#[test]
fn each_tensor_is_coded_derived_or_as_a_delta_whichever_is_smaller() {
    // A stochastic rounding of its master (each element its nearest BF16
    // or the next, at random: a residue of about a bit an element) that
    // changed in 20 of 40000 elements since the base: the delta is smaller.
    // An exact rounding: its residue of zeros is.
    let mut rng = Rng(9);
    let (w, e) = (weights(&mut rng, 40000), weights(&mut rng, 8000));
    let f32b = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let stochastic: Vec<u16> = w
        .iter()
        .map(|x| bf16_bits(x.to_bits()).wrapping_add((rng.next() & 1) as u16))
        .collect();
    let exact: Vec<u8> = e
        .iter()
        .flat_map(|x| bf16_bits(x.to_bits()).to_le_bytes())
        .collect();
    let bytes16 = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut master = File::new(b"m");
    master.push(tensor("w", Dtype::F32, vec![40000]), &f32b(&w));
    master.push(tensor("e", Dtype::F32, vec![8000]), &f32b(&e));
    let weights_file = |s: &[u16]| {
        let mut f = File::new(b"w");
        f.push(tensor("w", Dtype::BF16, vec![40000]), &bytes16(s));
        f.push(tensor("e", Dtype::BF16, vec![8000]), &exact);
        f
    };
    let now = weights_file(&stochastic);
    let mut before = stochastic.clone();
    for k in 0..20 {
        before[k * 1999] ^= 0x10;
    }
    let next = weights_file(&before);
    let base = DeltaBase::matching(&next.bytes, &next.layout, &now.layout);
    let sources = [master.source("master.st")];
    let (packed, summary) = with_sources(&now, Some(&base), &sources);
    assert!(summary.base_hash.is_some());
    let c = Container::open(&packed).unwrap();
    let seg = |name: &str| {
        c.segments()
            .iter()
            .find(|s| matches!(&s.kind, SegmentKind::Tensor { name: n, .. } if n == name))
            .unwrap()
            .clone()
    };
    assert!(seg("w").derived.is_none() && seg("w").base_offset.is_some());
    assert!(seg("e").derived.is_some() && seg("e").base_offset.is_none());
    // Without the base, "w" derives: its residue beats coding it alone.
    let (alone, _) = with_sources(&now, None, &sources);
    let a = Container::open(&alone).unwrap();
    assert!(a.segments()[1].derived.is_some());
    assert!(packed.len() < alone.len());
    let c = c
        .with_base(&next.bytes)
        .unwrap()
        .with_sources(&[&master.bytes])
        .unwrap();
    let mut out = vec![0u8; now.bytes.len()];
    c.decompress_into(&mut out, &mut |_| true).unwrap();
    assert_eq!(out, now.bytes);
}

#[test]
fn bad_source_tables_are_refused_naming_the_tensor_and_the_file() {
    let (master, optim, weights) = checkpoint(6);
    let sources = [master.source("master.st"), optim.source("optim.st")];
    let (packed, _) = with_sources(&weights, None, &sources);
    let c = Container::open(&packed).unwrap();
    let nseg = c.segments().len();
    let a = c
        .segments()
        .iter()
        .position(|s| matches!(&s.kind, SegmentKind::Tensor { name, .. } if name == "a"))
        .unwrap();
    // Source tensor 0 is master's "a" (the first used), 2560 elements.
    assert_eq!(c.describe_source(nseg), "tensor \"a\" of \"master.st\"");

    // A piece naming a source tensor that is not listed.
    let e = refused(&rewrite(&packed, |ix, _| {
        ix.segments[a].derived.as_mut().unwrap().pieces[0].source = nseg + 99;
    }));
    assert!(e.contains("\"a\"") && e.contains("does not exist"), "{e}");
    // A source tensor running past the end of its file.
    let e = refused(&rewrite(&packed, |ix, _| {
        ix.source_tensors[0].segment.offset = ix.source_files[0].len - 100;
    }));
    assert!(e.contains("master.st") && e.contains("inside"), "{e}");
    // A file index past the table.
    let e = refused(&rewrite(&packed, |ix, _| ix.source_tensors[0].file = 7));
    assert!(e.contains("file 7 does not exist"), "{e}");
    // A source of another dtype than the op needs: named with its file.
    let e = refused(&rewrite(&packed, |ix, _| {
        if let SegmentKind::Tensor { dtype, shape, .. } = &mut ix.source_tensors[0].segment.kind {
            *dtype = Dtype::BF16;
            shape[1] *= 2;
        }
    }));
    assert!(
        e.contains("\"a\"")
            && e.contains("of source file \"master.st\"")
            && e.contains("round-bf16"),
        "{e}"
    );
    // Elements beyond the source tensor.
    let e = refused(&rewrite(&packed, |ix, _| {
        ix.segments[a].derived.as_mut().unwrap().pieces[0].source_elem = 10;
    }));
    assert!(
        e.contains("master.st") && e.contains("which has 2560"),
        "{e}"
    );
    // The table without its flag is read as segments, and the flag without
    // a table finds none: both refused.
    let e = refused(&rewrite(&packed, |_, flags| *flags &= !FLAG_SOURCES));
    assert!(!e.is_empty());
    let e = refused(&rewrite(&packed, |ix, _| {
        ix.source_files.clear();
        ix.source_tensors.clear();
    }));
    assert!(!e.is_empty(), "{e}");
}
