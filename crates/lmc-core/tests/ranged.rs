//! Reading containers in ranges (`Container::open_from` and the `_from`
//! methods) gives what reading them whole gives, fetches only the chunks
//! asked for, and refuses short answers.

use std::ops::Range;
use std::sync::Mutex;

use lmc_core::{
    CompressOptions, Container, Dtype, ReadAt, SegmentKind, SegmentSpec, compress,
};

/// A source that records the ranges asked for and may cut answers short.
struct Recorder<'a> {
    bytes: &'a [u8],
    asked: Mutex<Vec<Range<u64>>>,
    /// Answers longer than this lose their last byte.
    truncate_over: Option<u64>,
}

impl<'a> Recorder<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Recorder {
            bytes,
            asked: Mutex::new(Vec::new()),
            truncate_over: None,
        }
    }
    fn fetched(&self) -> u64 {
        self.asked.lock().unwrap().iter().map(|r| r.end - r.start).sum()
    }
}

impl ReadAt for Recorder<'_> {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Vec<u8>>> {
        self.asked.lock().unwrap().extend(ranges.iter().cloned());
        let mut got = self.bytes.read_ranges(ranges)?;
        if let Some(n) = self.truncate_over {
            for g in &mut got {
                if g.len() as u64 > n {
                    g.pop();
                }
            }
        }
        Ok(got)
    }
}

/// A container of a few F32 and BF16 tensors, with small chunks.
fn sample() -> (Vec<u8>, Vec<u8>) {
    let mut original = Vec::new();
    let mut layout = Vec::new();
    for t in 0..6u32 {
        let n = 100_000 + 17 * t as usize;
        let (dtype, bytes): (Dtype, Vec<u8>) = if t % 2 == 0 {
            (
                Dtype::F32,
                (0..n)
                    .flat_map(|i| ((i as f32 * 0.37 + t as f32).sin()).to_le_bytes())
                    .collect(),
            )
        } else {
            (
                Dtype::BF16,
                (0..n)
                    .flat_map(|i| (((i as f32 * 0.11).cos().to_bits() >> 16) as u16).to_le_bytes())
                    .collect(),
            )
        };
        let shape = vec![n as u64];
        layout.push(SegmentSpec {
            kind: SegmentKind::Tensor {
                name: format!("t{t}"),
                dtype,
                shape,
            },
            len: bytes.len() as u64,
        });
        original.extend(bytes);
    }
    let opts = CompressOptions::default().chunk_size(64 << 10);
    let mut packed = std::io::Cursor::new(Vec::new());
    compress(&original, &layout, &opts, &mut packed, &mut |_| true).unwrap();
    (original, packed.into_inner())
}

#[test]
fn ranged_reads_match_whole_reads_and_fetch_only_what_they_need() {
    let (original, packed) = sample();
    let whole = Container::open(&packed).unwrap();
    let src = Recorder::new(&packed);
    let c = Container::open_from(&src).unwrap();
    assert_eq!(c.chunks().len(), whole.chunks().len());
    let index_bytes = src.fetched();
    assert!(index_bytes < packed.len() as u64 / 20, "{index_bytes}");

    // One tensor: its chunks alone.
    let t3 = c.read_tensor_from(&src, "t3").unwrap();
    assert_eq!(t3, whole.read_tensor("t3").unwrap());
    let tensor_stored: u64 = c
        .tensor_chunks("t3", 0, t3.len() as u64)
        .unwrap()
        .map(|i| c.chunks()[i].stored_len())
        .sum();
    assert_eq!(src.fetched() - index_bytes, tensor_stored);

    // A range inside a tensor, across a chunk boundary.
    let mut part = vec![0u8; 70_000];
    let before = src.fetched();
    c.read_tensor_range_from(&src, "t4", 50_000, &mut part).unwrap();
    let mut want = vec![0u8; 70_000];
    whole.read_tensor_range_into("t4", 50_000, &mut want).unwrap();
    assert_eq!(part, want);
    assert_eq!(
        src.fetched() - before,
        c.tensor_chunks("t4", 50_000, 70_000)
            .unwrap()
            .map(|i| c.chunks()[i].stored_len())
            .sum::<u64>()
    );

    // The whole file.
    let mut out = Vec::new();
    c.decompress_from(&src, &mut out, &mut |_| true).unwrap();
    assert_eq!(out, original);
    c.verify_from(&src, &mut |_| true).unwrap();
}

#[test]
fn short_answers_and_damage_are_refused() {
    let (_, packed) = sample();
    // The index itself cut short.
    let mut src = Recorder::new(&packed);
    src.truncate_over = Some(0);
    let e = Container::open_from(&src).unwrap_err().to_string();
    assert!(e.contains("truncated answer"), "{e}");

    // A chunk's range cut short.
    let mut src = Recorder::new(&packed);
    let c = Container::open_from(&src).unwrap();
    src.truncate_over = Some(1000);
    let e = c.read_tensor_from(&src, "t1").unwrap_err().to_string();
    assert!(e.contains("truncated answer"), "{e}");
    let e = c
        .decompress_from(&src, &mut Vec::new(), &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated answer"), "{e}");

    // A flipped byte in a chunk: named by its checksum.
    let mut bad = packed.clone();
    let at = c.chunks()[3].stored_offset as usize + 5;
    bad[at] ^= 1;
    let src = Recorder::new(&bad);
    let c = Container::open_from(&src).unwrap();
    let mut out = Vec::new();
    let e = c.decompress_from(&src, &mut out, &mut |_| true).unwrap_err();
    assert!(matches!(e, lmc_core::Error::ChunkChecksum { chunk: 3, .. }), "{e}");
    // Nothing of the damaged chunk (nor after it) was written.
    let before: u64 = c.chunks()[..3].iter().map(|c| u64::from(c.raw_len)).sum();
    assert!(out.len() as u64 <= before);

    // A source of another length than the container opened.
    let short = &packed[..packed.len() - 1];
    let e = Container::open_from(&short).unwrap_err().to_string();
    assert!(e.contains("truncated or extended"), "{e}");
}

#[test]
fn derived_tensors_fetch_their_sources() {
    let packed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/derived/mixed.lmc"
    ))
    .unwrap();
    let whole = Container::open(&packed).unwrap();
    let src = Recorder::new(&packed);
    let c = Container::open_from(&src).unwrap();
    let mut want = Vec::new();
    whole.decompress_to(&mut want, &mut |_| true).unwrap();
    let mut got = Vec::new();
    c.decompress_from(&src, &mut got, &mut |_| true).unwrap();
    assert_eq!(got, want);
    for seg in c.segments() {
        if let SegmentKind::Tensor { name, .. } = &seg.kind {
            assert_eq!(
                c.read_tensor_from(&src, name).unwrap(),
                whole.read_tensor(name).unwrap(),
                "{name}"
            );
        }
    }
}
