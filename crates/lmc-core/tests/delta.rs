//! Delta containers (format version 2): a file coded against a base must
//! decode to the same bytes with that base, and refuse to decode without it
//! or with any other.

mod common;
use common::{Rng, tensor};

use std::io::Cursor;

use lmc_core::format::{Transform, VERSION_1, VERSION_2};
use lmc_core::{
    ChunkFault, CompressOptions, Container, Corruption, DeltaBase, Dtype, Error, Region,
    SegmentKind, SegmentSpec, compress, compress_delta, compress_parts,
};
use proptest::prelude::*;

fn bytes_seg(len: u64) -> SegmentSpec {
    SegmentSpec {
        kind: SegmentKind::Bytes,
        len,
    }
}

fn pack_delta(input: &[u8], layout: &[SegmentSpec], base: &DeltaBase<'_>, chunk: usize) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let opts = CompressOptions::default().chunk_size(chunk);
    compress_delta(input, layout, base, &opts, &mut out, &mut |_| true)
        .unwrap_or_else(|e| panic!("compress_delta failed: {e}"));
    out.into_inner()
}

/// Decodes `packed` with `base` every way there is and checks the bytes.
fn check_decodes(packed: &[u8], base: &[u8], input: &[u8]) {
    let c = Container::open(packed).unwrap();
    assert_eq!(c.header().version, VERSION_2);
    assert!(c.needs_base());
    let c = c
        .with_base(base)
        .unwrap_or_else(|e| panic!("with_base: {e}"));
    let mut restored = Vec::new();
    c.decompress_to(&mut restored, &mut |_| true)
        .unwrap_or_else(|e| panic!("decompress_to: {e}"));
    assert!(restored == input, "delta round trip changed the bytes");
    let mut into = vec![0u8; input.len()];
    c.decompress_into(&mut into, &mut |_| true)
        .unwrap_or_else(|e| panic!("decompress_into: {e}"));
    assert!(into == input, "delta decompress_into changed the bytes");
    c.verify(&mut |_| true).unwrap();
    for seg in c.segments() {
        if let SegmentKind::Tensor { name, .. } = &seg.kind {
            let got = c.read_tensor(name).unwrap();
            assert!(got == input[seg.offset as usize..(seg.offset + seg.len) as usize]);
        }
    }
}

/// A base checkpoint: a 40-byte header and three tensors.
fn base_file(rng: &mut Rng) -> (Vec<u8>, Vec<SegmentSpec>) {
    let layout = vec![
        bytes_seg(40),
        tensor("a", Dtype::BF16, vec![300, 7]),
        tensor("b", Dtype::F32, vec![1000]),
        tensor("c", Dtype::U8, vec![77]),
    ];
    let len: u64 = layout.iter().map(|s| s.len).sum();
    (rng.bytes(len as usize), layout)
}

#[test]
fn unchanged_tensors_cost_almost_nothing_and_round_trip() {
    let mut rng = Rng(1);
    let (base, layout) = base_file(&mut rng);
    let d = DeltaBase::matching(&base, &layout, &layout);
    assert_eq!(d.matched(), 3);
    assert!(d.removed.is_empty());
    let packed = pack_delta(&base, &layout, &d, 4096);
    check_decodes(&packed, &base, &base);
    // Random data alone would need about its own size; the XOR against an
    // identical base is all zeros: a constant byte per plane.
    let full_len = {
        let mut out = Cursor::new(Vec::new());
        compress(
            &base,
            &layout,
            &CompressOptions::default(),
            &mut out,
            &mut |_| true,
        )
        .unwrap();
        out.into_inner().len()
    };
    assert!(full_len > base.len(), "random bytes should not compress");
    assert!(
        packed.len() < 40 + 600,
        "an identical file as a delta took {} bytes",
        packed.len()
    );
    let c = Container::open(&packed).unwrap();
    assert!(
        c.chunks().iter().all(|ch| (ch.transform != Transform::None)
            == (c.segments()[ch.segment].base_offset.is_some()))
    );
}

#[test]
fn changed_added_reshaped_and_removed_tensors() {
    let mut rng = Rng(2);
    let (base, base_layout) = base_file(&mut rng);
    // New file: a longer header; "a" with a few elements changed; "b" reshaped
    // (stored whole); "c" removed; "d" new.
    let mut input = rng.bytes(52);
    let a = &base[40..40 + 4200];
    let mut a2 = a.to_vec();
    for k in (0..a2.len()).step_by(97) {
        a2[k] ^= 1;
    }
    input.extend_from_slice(&a2);
    input.extend_from_slice(&base[4240..8240]);
    input.extend_from_slice(&rng.bytes(64));
    let layout = vec![
        bytes_seg(52),
        tensor("a", Dtype::BF16, vec![300, 7]),
        tensor("b", Dtype::F32, vec![10, 100]),
        tensor("d", Dtype::I16, vec![32]),
    ];
    let d = DeltaBase::matching(&base, &base_layout, &layout);
    assert_eq!(d.offsets, vec![None, Some(40), None, None]);
    assert_eq!(d.removed, vec!["c".to_string()]);
    let packed = pack_delta(&input, &layout, &d, 4097);
    check_decodes(&packed, &base, &input);
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.removed(), ["c".to_string()]);
    assert_eq!(c.base_ref().unwrap().len, base.len() as u64);
}

#[test]
fn missing_or_wrong_base_is_refused() {
    let mut rng = Rng(3);
    let (base, layout) = base_file(&mut rng);
    let d = DeltaBase::matching(&base, &layout, &layout);
    let packed = pack_delta(&base, &layout, &d, 4096);

    let c = Container::open(&packed).unwrap();
    let err = c.decompress_to(&mut Vec::new(), &mut |_| true).unwrap_err();
    assert!(matches!(err, Error::Base(_)), "{err}");
    assert!(err.to_string().contains("needs its base"), "{err}");
    let mut into = vec![0u8; c.header().original_len as usize];
    let err = c.decompress_into(&mut into, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("needs its base"), "{err}");
    let err = c.read_tensor("a").unwrap_err();
    assert!(matches!(err, Error::Base(_)), "{err}");

    let mut other = base.clone();
    other[100] ^= 0x40;
    let err = Container::open(&packed)
        .unwrap()
        .with_base(&other)
        .unwrap_err();
    assert!(err.to_string().contains("wrong base"), "{err}");
    let err = Container::open(&packed)
        .unwrap()
        .with_base(&base[1..])
        .unwrap_err();
    assert!(err.to_string().contains("wrong base"), "{err}");

    // A full container needs no base and says so.
    let mut out = Cursor::new(Vec::new());
    compress(
        &base,
        &layout,
        &CompressOptions::default(),
        &mut out,
        &mut |_| true,
    )
    .unwrap();
    let full = out.into_inner();
    let c = Container::open(&full).unwrap();
    assert_eq!(c.header().version, VERSION_1);
    assert!(!c.needs_base());
    assert!(matches!(c.with_base(&base), Err(Error::Base(_))));
}

#[test]
fn parts_give_the_same_container_as_one_buffer() {
    let mut rng = Rng(4);
    let (base, layout) = base_file(&mut rng);
    let mut whole = Cursor::new(Vec::new());
    let opts = CompressOptions::default().chunk_size(4100);
    compress(&base, &layout, &opts, &mut whole, &mut |_| true).unwrap();
    let mut parts = Vec::new();
    let mut off = 0;
    for s in &layout {
        parts.push(&base[off..off + s.len as usize]);
        off += s.len as usize;
    }
    let mut split = Cursor::new(Vec::new());
    compress_parts(&parts, &layout, None, &opts, &mut split, &mut |_| true).unwrap();
    assert!(whole.into_inner() == split.into_inner());

    // Parts that disagree with the layout are refused.
    parts[1] = &parts[1][1..];
    let err = compress_parts(
        &parts,
        &layout,
        None,
        &opts,
        &mut Cursor::new(Vec::new()),
        &mut |_| true,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

#[test]
fn base_offsets_outside_the_base_are_refused() {
    let mut rng = Rng(5);
    let (base, layout) = base_file(&mut rng);
    let mut d = DeltaBase::matching(&base, &layout, &layout);
    d.offsets[3] = Some(base.len() as u64 - 10); // "c" is 77 bytes long
    let err = compress_delta(
        &base,
        &layout,
        &d,
        &CompressOptions::default(),
        &mut Cursor::new(Vec::new()),
        &mut |_| true,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    d.offsets[3] = None;
    d.offsets[0] = Some(0); // bytes segments are never deltas
    assert!(
        compress_delta(
            &base,
            &layout,
            &d,
            &CompressOptions::default(),
            &mut Cursor::new(Vec::new()),
            &mut |_| true,
        )
        .is_err()
    );
}

/// Float-like data: small perturbations of a base, the way consecutive
/// training snapshots differ.
fn drift(base: &[u8], dtype: Dtype, frac_changed: f64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let w = dtype.width();
    let mut out = base.to_vec();
    for e in out.chunks_exact_mut(w) {
        if (rng.next() % 10_000) as f64 / 10_000.0 < frac_changed {
            e[0] ^= (rng.next() % 8) as u8 + 1; // low mantissa bits
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn drifted_snapshots_round_trip(
        seed in any::<u64>(),
        n in 0usize..5000,
        frac in 0.0f64..1.0,
        dtype in prop::sample::select(vec![Dtype::BF16, Dtype::F32, Dtype::F16, Dtype::F64, Dtype::U8, Dtype::I32]),
        chunk in prop::sample::select(vec![4096usize, 4097, 4103, 8192, 1 << 18]),
        header_grows in any::<bool>(),
    ) {
        let mut rng = Rng(seed);
        let w = dtype.width();
        let head = 24usize;
        let base_head = rng.bytes(head);
        let base_t = rng.bytes(n * w);
        let base: Vec<u8> = [base_head.clone(), base_t.clone()].concat();
        let base_layout = vec![bytes_seg(head as u64), tensor("w", dtype, vec![n as u64])];
        let new_head_len = if header_grows { head + 5 } else { head };
        let new_head = rng.bytes(new_head_len);
        let new_t = drift(&base_t, dtype, frac, seed ^ 1);
        let input: Vec<u8> = [new_head, new_t].concat();
        let layout = vec![bytes_seg(new_head_len as u64), tensor("w", dtype, vec![n as u64])];
        let d = DeltaBase::matching(&base, &base_layout, &layout);
        prop_assert_eq!(d.matched(), usize::from(n > 0));
        let packed = pack_delta(&input, &layout, &d, chunk);
        check_decodes(&packed, &base, &input);
    }
}

#[test]
fn rans32_planes_need_the_header_flag() {
    use lmc_core::codec::PlaneCodec;
    use lmc_core::format::{FLAG_RANS32, HEADER_LEN, Header};
    use xxhash_rust::xxh3::xxh3_64;
    // A skewed plane (48% zeros, 48% ones, the rest anything): rANS32 beats
    // Huffman's whole bits by 17%, and no byte fills half for runs.
    let mut rng = Rng(9);
    let data: Vec<u8> = (0..200_000)
        .map(|_| {
            let r = rng.next();
            if r.is_multiple_of(25) {
                rng.next() as u8
            } else {
                (r >> 20) as u8 & 1
            }
        })
        .collect();
    let layout = [tensor("x", Dtype::U8, vec![data.len() as u64])];
    let mut out = Cursor::new(Vec::new());
    compress(
        &data,
        &layout,
        &CompressOptions::default(),
        &mut out,
        &mut |_| true,
    )
    .unwrap();
    let mut packed = out.into_inner();
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().flags, FLAG_RANS32);
    assert!(c.chunks()[0].planes[0].codec == PlaneCodec::Rans32);
    let mut back = Vec::new();
    c.decompress_to(&mut back, &mut |_| true).unwrap();
    assert!(back == data);
    // The same file with the flag cleared (checksum fixed) is refused.
    let h = Header {
        flags: 0,
        ..c.header().clone()
    };
    packed[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    assert_eq!(xxh3_64(&packed[..56]).to_le_bytes(), packed[56..64]);
    let err = Container::open(&packed).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Corrupt {
                region: Region::Index,
                reason: Corruption::Chunk {
                    fault: ChunkFault::CodecNotFlagged {
                        codec: PlaneCodec::Rans32,
                        ..
                    },
                    ..
                },
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("without the rans32 flag"), "{err}");
}

#[test]
fn split_planes_need_the_header_flag() {
    use lmc_core::codec::PlaneCodec;
    use lmc_core::format::{FLAG_SPLIT, HEADER_LEN, Header};
    use xxhash_rust::xxh3::xxh3_64;
    // BF16 snapshots: most elements change in their low mantissa bits,
    // some change binade (and then every mantissa bit).
    let n = 100_000;
    let mut rng = Rng(17);
    let base: Vec<u8> = (0..n)
        .flat_map(|_| {
            let v = 0x3C00u16 | (rng.next() as u16 & 0x03FF) | ((rng.next() as u16 & 1) << 15);
            v.to_le_bytes()
        })
        .collect();
    let mut input = base.clone();
    for e in input.chunks_exact_mut(2) {
        let r = rng.next() % 100;
        if r < 8 {
            e[1] ^= 0x01; // the lowest exponent bit
            e[0] = rng.next() as u8;
        } else if r < 90 {
            // Always a change: 90% changed keeps the chunks dense.
            e[0] ^= (1 + rng.next() % 3) as u8;
        }
    }
    let layout = vec![tensor("w", Dtype::BF16, vec![n as u64])];
    let d = DeltaBase::matching(&base, &layout, &layout);
    let mut packed = pack_delta(&input, &layout, &d, 1 << 18);
    check_decodes(&packed, &base, &input);
    let c = Container::open(&packed).unwrap();
    assert_ne!(c.header().flags & FLAG_SPLIT, 0);
    assert!(
        c.chunks()
            .iter()
            .all(|ch| ch.planes[1].codec == PlaneCodec::Split)
    );
    // The same file with the flag cleared (checksum fixed) is refused.
    let h = Header {
        flags: c.header().flags & !FLAG_SPLIT,
        ..c.header().clone()
    };
    packed[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    assert_eq!(xxh3_64(&packed[..56]).to_le_bytes(), packed[56..64]);
    let err = Container::open(&packed).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Corrupt {
                region: Region::Index,
                reason: Corruption::Chunk {
                    fault: ChunkFault::CodecNotFlagged {
                        codec: PlaneCodec::Split,
                        ..
                    },
                    ..
                },
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("without the split flag"), "{err}");
}

/// Delta chunks where few elements changed are coded sparse (a map and the
/// changed elements), the others as whole XOR planes; both decode to the
/// exact bytes, whole and tensor by tensor, for every width.
#[test]
fn sparse_and_dense_delta_chunks_round_trip() {
    use lmc_core::format::Transform;
    let mut rng = Rng(23);
    for dtype in [Dtype::U8, Dtype::BF16, Dtype::F32, Dtype::F64] {
        let w = dtype.width();
        // Not a multiple of 8: the last chunk's map ends inside a byte.
        let n = 70_003;
        let base = rng.bytes(n * w);
        for (per_cent, want) in [
            (0, Transform::XorBitmap),
            (3, Transform::XorBitmap),
            (40, Transform::XorBitmap),
            (95, Transform::Xor),
        ] {
            let mut input = base.clone();
            for e in input.chunks_exact_mut(w) {
                if rng.next() % 100 < per_cent {
                    // Never a no-op change: the element differs.
                    let k = (rng.next() as usize) % w;
                    e[k] ^= 1 + (rng.next() % 255) as u8;
                }
            }
            let layout = vec![tensor("t", dtype, vec![n as u64])];
            let d = DeltaBase::matching(&base, &layout, &layout);
            let packed = pack_delta(&input, &layout, &d, 64 << 10);
            check_decodes(&packed, &base, &input);
            let c = Container::open(&packed).unwrap().with_base(&base).unwrap();
            assert!(
                c.chunks().iter().all(|ch| ch.transform == want),
                "{dtype}, {per_cent}%"
            );
            let mut t = vec![0u8; n * w];
            c.read_tensor_into("t", &mut t).unwrap();
            assert!(t == input, "{dtype}, {per_cent}%");
        }
    }
}

/// A damaged sparse chunk is refused, never a panic.
#[test]
fn damaged_sparse_chunks_are_errors() {
    use lmc_core::format::Transform;
    let mut rng = Rng(29);
    let n = 20_000;
    let base = rng.bytes(n * 4);
    let mut input = base.clone();
    for e in input.chunks_exact_mut(4).step_by(10) {
        e[0] ^= 0x5A;
        e[1] = rng.next() as u8;
    }
    let layout = vec![tensor("t", Dtype::F32, vec![n as u64])];
    let d = DeltaBase::matching(&base, &layout, &layout);
    let packed = pack_delta(&input, &layout, &d, 80_000);
    let c = Container::open(&packed).unwrap();
    let ch = &c.chunks()[0];
    assert_eq!(ch.transform, Transform::XorBitmap);
    assert_eq!(ch.planes.len(), 5);
    check_decodes(&packed, &base, &input);
    // Changed payload bytes: errors, never panics (the chunk checksum
    // catches them here; fuzz_corpus.rs repairs checksums so that its
    // mutations of the sparse golden file reach the plane decoders).
    for i in (ch.stored_offset as usize..packed.len()).step_by(17) {
        let mut bad = packed.clone();
        bad[i] ^= 0x40;
        let c = Container::open(&bad).and_then(|c| c.with_base(&base));
        if let Ok(c) = c {
            assert!(c.verify(&mut |_| true).is_err(), "byte {i}");
        }
    }
}

/// With `--best` (`Tuning::BEST`), a sparse chunk keeps whichever map is
/// smaller: changes that come in runs run code smaller than their bitmap,
/// half the elements at random not. Both forms decode to the exact bytes, and the
/// default writes bitmaps whatever the smaller.
#[test]
fn best_keeps_the_smaller_map() {
    use lmc_core::codec::Tuning;
    use lmc_core::format::Transform;
    let mut rng = Rng(31);
    let n = 128 << 10;
    let base = rng.bytes(n * 2);
    let (mut runs, mut scattered) = (base.clone(), base.clone());
    // Runs of 1 to 64 changed elements after gaps of 1 to 256.
    let mut e = 0;
    while e < n {
        e += 1 + (rng.next() % 256) as usize;
        for _ in 0..1 + rng.next() % 64 {
            if e < n {
                runs[2 * e] ^= 1;
            }
            e += 1;
        }
    }
    // Half the elements, at random: a bitmap as dense as it gets.
    for v in scattered.chunks_exact_mut(2) {
        if rng.next().is_multiple_of(2) {
            v[0] ^= 1 + (rng.next() % 3) as u8;
        }
    }
    let layout = vec![tensor("w", Dtype::BF16, vec![n as u64])];
    let d = DeltaBase::matching(&base, &layout, &layout);
    for (input, want) in [
        (&runs, Transform::XorSparse),
        (&scattered, Transform::XorBitmap),
    ] {
        let mut out = Cursor::new(Vec::new());
        let opts = CompressOptions::default()
            .chunk_size(64 << 10)
            .tuning(Tuning::BEST);
        compress_delta(input, &layout, &d, &opts, &mut out, &mut |_| true).unwrap();
        let packed = out.into_inner();
        check_decodes(&packed, &base, input);
        let c = Container::open(&packed).unwrap();
        let got: Vec<_> = c.chunks().iter().map(|ch| ch.transform).collect();
        assert!(got.iter().all(|&t| t == want), "{want:?}: {got:?}");
        let default = pack_delta(input, &layout, &d, 64 << 10);
        check_decodes(&default, &base, input);
        let c = Container::open(&default).unwrap();
        assert!(
            c.chunks()
                .iter()
                .all(|ch| ch.transform == Transform::XorBitmap)
        );
        assert!(packed.len() <= default.len());
    }
}
