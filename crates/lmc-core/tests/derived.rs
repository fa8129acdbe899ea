//! Derived tensors (FORMAT.md, "Derived tensors"): copies and roundings of
//! another tensor of the same file, stored as a reference plus a residue,
//! must decode to the same bytes every way there is, find their sources by
//! name and by content, decode only the source chunks they need, and refuse
//! references that do not hold.

mod common;
use common::{Rng, refused, rewrite, tensor};

use std::io::Cursor;

use lmc_core::derive::{Derivation, DeriveOp, Piece, bf16_bits, f16_bits};
use lmc_core::format::{FLAG_DERIVED, HEADER_LEN, Header};
use lmc_core::{CompressOptions, Container, Dtype, Error, SegmentKind, SegmentSpec, compress};
use proptest::prelude::*;

fn bytes_seg(len: u64) -> SegmentSpec {
    SegmentSpec {
        kind: SegmentKind::Bytes,
        len,
    }
}

/// Weight-like F32 values: small, of both signs, all mantissa bits used.
fn weights(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| ((rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.08)
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn rounded(v: &[f32], round: fn(u32) -> u16) -> Vec<u8> {
    v.iter()
        .flat_map(|x| round(x.to_bits()).to_le_bytes())
        .collect()
}

/// A checkpoint as `lmc compress DIR` sees a mixed-precision one: BF16
/// weights, fp32 masters (some as one flat buffer), duplicates, and tensors
/// that derive from nothing.
struct Ckpt {
    input: Vec<u8>,
    layout: Vec<SegmentSpec>,
}

impl Ckpt {
    fn push(&mut self, spec: SegmentSpec, bytes: Vec<u8>) {
        assert_eq!(spec.len, bytes.len() as u64);
        self.layout.push(spec);
        self.input.extend_from_slice(&bytes);
    }

    fn build() -> Ckpt {
        let mut rng = Rng(17);
        let mut c = Ckpt {
            input: Vec::new(),
            layout: Vec::new(),
        };
        let a = weights(&mut rng, 300 * 64);
        let h = weights(&mut rng, 5000);
        let s = weights(&mut rng, 7000);
        let (x1, x2, x3) = (
            weights(&mut rng, 3000),
            weights(&mut rng, 2500),
            weights(&mut rng, 4001),
        );
        // The flat master buffer: x1, 3 elements of padding, x2, x3, padding.
        let mut flat = x1.clone();
        flat.extend_from_slice(&[0.0; 3]);
        flat.extend_from_slice(&x2);
        flat.extend_from_slice(&x3);
        flat.extend_from_slice(&[0.0; 5]);
        // Two tensors straddling partitions of another flat buffer: y in
        // p0 and p1, z (which starts with 20 equal elements, so that its
        // content key lies past the partition boundary) in p1 and p2.
        let y = weights(&mut rng, 3000);
        let mut z = vec![0.5f32; 20];
        z.extend(weights(&mut rng, 2000));
        let mut p0 = weights(&mut rng, 700);
        p0.extend_from_slice(&y[..1000]);
        let mut p1 = y[1000..].to_vec();
        p1.extend(weights(&mut rng, 300));
        p1.extend_from_slice(&z[..10]);
        let mut p2 = z[10..].to_vec();
        p2.extend_from_slice(&[0.0; 6]);
        // Stochastic rounding: about half the elements one step up.
        let stochastic: Vec<u8> = s
            .iter()
            .flat_map(|x| {
                let up = rng.next() & 1 == 1;
                (bf16_bits(x.to_bits()) + up as u16).to_le_bytes()
            })
            .collect();

        c.push(bytes_seg(40), rng.bytes(40));
        // The fp32 masters, in their own file.
        c.push(
            tensor("master/m.safetensors:a", Dtype::F32, vec![300, 64]),
            f32_bytes(&a),
        );
        c.push(
            tensor("master/m.safetensors:h", Dtype::F32, vec![5000]),
            f32_bytes(&h),
        );
        c.push(
            tensor("master/m.safetensors:ln", Dtype::F32, vec![1000]),
            f32_bytes(&[1.0; 1000]),
        );
        c.push(
            tensor("master/m.safetensors:s", Dtype::F32, vec![7000]),
            f32_bytes(&s),
        );
        c.push(
            tensor(
                "optim/flat.safetensors:flat",
                Dtype::F32,
                vec![flat.len() as u64],
            ),
            f32_bytes(&flat),
        );
        for (k, part) in [p0, p1, p2].iter().enumerate() {
            c.push(
                tensor(
                    &format!("zero/rank{k}.safetensors:part"),
                    Dtype::F32,
                    vec![part.len() as u64],
                ),
                f32_bytes(part),
            );
        }
        c.push(bytes_seg(13), rng.bytes(13));
        // The model weights.
        c.push(
            tensor("model/w.safetensors:a", Dtype::BF16, vec![300, 64]),
            rounded(&a, bf16_bits),
        );
        c.push(
            tensor("model/w.safetensors:h", Dtype::F16, vec![5000]),
            rounded(&h, f16_bits),
        );
        c.push(
            tensor("model/w.safetensors:head", Dtype::BF16, vec![300, 64]),
            rounded(&a, bf16_bits),
        );
        c.push(
            tensor("model/w.safetensors:ln", Dtype::BF16, vec![1000]),
            rounded(&[1.0; 1000], bf16_bits),
        );
        c.push(
            tensor("model/w.safetensors:ones", Dtype::BF16, vec![900]),
            rounded(&[1.0; 900], bf16_bits),
        );
        c.push(
            tensor("model/w.safetensors:noise", Dtype::BF16, vec![3000]),
            rng.bytes(6000),
        );
        c.push(
            tensor("model/w.safetensors:s", Dtype::BF16, vec![7000]),
            stochastic,
        );
        c.push(
            tensor("model/w.safetensors:layer.x1", Dtype::BF16, vec![3000]),
            rounded(&x1, bf16_bits),
        );
        c.push(
            tensor("model/w.safetensors:layer.x2", Dtype::BF16, vec![50, 50]),
            rounded(&x2, bf16_bits),
        );
        c.push(
            tensor("model/w.safetensors:layer.x3", Dtype::BF16, vec![4001]),
            rounded(&x3, bf16_bits),
        );
        c.push(
            tensor("model/w.safetensors:y", Dtype::BF16, vec![3000]),
            rounded(&y, bf16_bits),
        );
        c.push(
            tensor("model/w.safetensors:z", Dtype::BF16, vec![2020]),
            rounded(&z, bf16_bits),
        );
        c.push(
            tensor("model/w.safetensors:h_again", Dtype::F32, vec![5000]),
            f32_bytes(&h),
        );
        c.push(bytes_seg(9), rng.bytes(9));
        c
    }
}

fn pack(input: &[u8], layout: &[SegmentSpec], opts: &CompressOptions) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    compress(input, layout, opts, &mut out, &mut |_| true)
        .unwrap_or_else(|e| panic!("compress failed: {e}"));
    out.into_inner()
}

fn small_chunks() -> CompressOptions {
    CompressOptions::default().chunk_size(4096)
}

/// Decodes `packed` every way there is and checks the bytes.
fn check_decodes(packed: &[u8], input: &[u8]) {
    let c = Container::open(packed).unwrap();
    let mut restored = Vec::new();
    c.decompress_to(&mut restored, &mut |_| true)
        .unwrap_or_else(|e| panic!("decompress_to: {e}"));
    assert!(restored == input, "decompress_to changed the bytes");
    let mut into = vec![0u8; input.len()];
    c.decompress_into(&mut into, &mut |_| true)
        .unwrap_or_else(|e| panic!("decompress_into: {e}"));
    assert!(into == input, "decompress_into changed the bytes");
    c.verify(&mut |_| true).unwrap();
    for seg in c.segments() {
        if let SegmentKind::Tensor { name, .. } = &seg.kind {
            let got = c
                .read_tensor(name)
                .unwrap_or_else(|e| panic!("read_tensor {name}: {e}"));
            assert!(
                got == input[seg.offset as usize..(seg.offset + seg.len) as usize],
                "read_tensor {name} changed the bytes"
            );
        }
    }
}

fn seg_index(c: &Container<'_>, name: &str) -> usize {
    c.segments()
        .iter()
        .position(|s| matches!(&s.kind, SegmentKind::Tensor { name: n, .. } if n == name))
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// A derivation as the test reads it: source name, op, source element.
type Found = Option<(String, DeriveOp, u64)>;

fn seg_name(c: &Container<'_>, i: usize) -> String {
    match &c.segments()[i].kind {
        SegmentKind::Tensor { name, .. } => name.clone(),
        SegmentKind::Bytes => panic!("segment {i} is not a tensor"),
    }
}

/// A whole-tensor derivation: its source's name, the op, the element.
fn derivation(c: &Container<'_>, name: &str) -> Found {
    let d = c.segments()[seg_index(c, name)].derived.clone()?;
    assert_eq!(d.pieces.len(), 1, "{name} is in pieces");
    let p = d.pieces[0];
    Some((seg_name(c, p.source), d.op, p.source_elem))
}

/// The pieces of a derivation: source name, element, count.
fn pieces(c: &Container<'_>, name: &str) -> Vec<(String, u64, u64)> {
    let d = c.segments()[seg_index(c, name)].derived.clone().unwrap();
    d.pieces
        .iter()
        .map(|p| (seg_name(c, p.source), p.source_elem, p.elems))
        .collect()
}

#[test]
fn derived_tensors_are_found_and_decode_to_the_same_bytes() {
    let ck = Ckpt::build();
    let packed = pack(&ck.input, &ck.layout, &small_chunks());
    let c = Container::open(&packed).unwrap();
    assert_ne!(c.header().flags & FLAG_DERIVED, 0);
    let m = |n: &str| format!("master/m.safetensors:{n}");
    let flat = "optim/flat.safetensors:flat".to_string();
    let want: Vec<(&str, Found)> = vec![
        (
            "model/w.safetensors:a",
            Some((m("a"), DeriveOp::RoundBf16, 0)),
        ),
        (
            "model/w.safetensors:h",
            Some((m("h"), DeriveOp::RoundF16, 0)),
        ),
        // Tied to `a`: a copy of a rounding is that rounding.
        (
            "model/w.safetensors:head",
            Some((m("a"), DeriveOp::RoundBf16, 0)),
        ),
        // Constant, but found by name and shape.
        (
            "model/w.safetensors:ln",
            Some((m("ln"), DeriveOp::RoundBf16, 0)),
        ),
        // Constant and with no master of its name: no content key.
        ("model/w.safetensors:ones", None),
        ("model/w.safetensors:noise", None),
        // Stochastic rounding, by name: a residue of low bits.
        (
            "model/w.safetensors:s",
            Some((m("s"), DeriveOp::RoundBf16, 0)),
        ),
        // Slices of the flat buffer, by content.
        (
            "model/w.safetensors:layer.x1",
            Some((flat.clone(), DeriveOp::RoundBf16, 0)),
        ),
        (
            "model/w.safetensors:layer.x2",
            Some((flat.clone(), DeriveOp::RoundBf16, 3003)),
        ),
        (
            "model/w.safetensors:layer.x3",
            Some((flat.clone(), DeriveOp::RoundBf16, 5503)),
        ),
        (
            "model/w.safetensors:h_again",
            Some((m("h"), DeriveOp::Copy, 0)),
        ),
        ("master/m.safetensors:a", None),
        (&flat, None),
    ];
    for (name, w) in want {
        assert_eq!(derivation(&c, name), w, "derivation of {name}");
    }
    // Straddling two partitions, found by the head's key and by the tail's.
    let r = |k: usize| format!("zero/rank{k}.safetensors:part");
    assert_eq!(
        pieces(&c, "model/w.safetensors:y"),
        [(r(0), 700, 1000), (r(1), 0, 2000)]
    );
    assert_eq!(
        pieces(&c, "model/w.safetensors:z"),
        [(r(1), 2300, 10), (r(2), 0, 2010)]
    );
    check_decodes(&packed, &ck.input);

    // The same checkpoint without derivations: every derived tensor's
    // bytes are saved, less the stochastic residue.
    let plain = pack(&ck.input, &ck.layout, &small_chunks().cross_tensor(false));
    let p = Container::open(&plain).unwrap();
    assert_eq!(p.header().flags & FLAG_DERIVED, 0);
    assert!(p.segments().iter().all(|s| s.derived.is_none()));
    check_decodes(&plain, &ck.input);
    let derived_bytes: u64 = c
        .segments()
        .iter()
        .filter(|s| s.derived.is_some())
        .map(|s| s.len)
        .sum();
    assert!(
        (packed.len() as u64) + derived_bytes / 2 < plain.len() as u64,
        "derived: {} bytes, plain: {}, derived tensors hold {derived_bytes}",
        packed.len(),
        plain.len()
    );
}

/// Flips a byte of chunk `k`'s stored bytes (its checksum then fails).
fn damage_chunk(packed: &mut [u8], k: usize) {
    let at = Container::open(packed).unwrap().chunks()[k].stored_offset as usize;
    packed[at] ^= 0x55;
}

#[test]
fn reading_a_derived_tensor_decodes_only_the_source_chunks_it_needs() {
    let ck = Ckpt::build();
    let packed = pack(&ck.input, &ck.layout, &small_chunks());
    let c = Container::open(&packed).unwrap();
    let flat = &c.segments()[seg_index(&c, "optim/flat.safetensors:flat")];
    let (first, count) = (flat.first_chunk, flat.chunk_count);
    // 1024 F32 elements a chunk: x1 (elements 0..3000) needs chunks 0..=2
    // of the flat buffer, x3 (5503..9504) chunks 5..=9.
    assert_eq!(count, 10);
    let x1 = "model/w.safetensors:layer.x1";
    let x3 = "model/w.safetensors:layer.x3";
    let want = |name: &str| {
        let s = &c.segments()[seg_index(&c, name)];
        ck.input[s.offset as usize..(s.offset + s.len) as usize].to_vec()
    };
    let (want1, want3) = (want(x1), want(x3));

    // Damage the last chunk of the buffer: x1 never reads it, x3 does.
    let mut bad = packed.clone();
    damage_chunk(&mut bad, first + count - 1);
    let b = Container::open(&bad).unwrap();
    assert_eq!(b.read_tensor(x1).unwrap(), want1);
    match b.read_tensor(x3) {
        Err(Error::ChunkChecksum { chunk, segment, .. }) => {
            assert_eq!(chunk, first + count - 1);
            assert!(segment.contains("flat"), "{segment}");
        }
        other => panic!("expected the damaged source chunk to be named, got {other:?}"),
    }
    // Damage the chunk just before x3's first: x3 never reads it.
    let mut bad = packed.clone();
    damage_chunk(&mut bad, first + 4);
    let b = Container::open(&bad).unwrap();
    assert_eq!(b.read_tensor(x3).unwrap(), want3);
    assert!(b.read_tensor(x1).is_ok());
    // ... and the whole file names it.
    let mut out = Vec::new();
    let err = b.decompress_to(&mut out, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("flat"), "{err}");
}

#[test]
fn bad_references_are_refused_naming_both_tensors() {
    let ck = Ckpt::build();
    let packed = pack(&ck.input, &ck.layout, &small_chunks());
    let c = Container::open(&packed).unwrap();
    let x2 = seg_index(&c, "model/w.safetensors:layer.x2");
    let a16 = seg_index(&c, "model/w.safetensors:a");
    let head = seg_index(&c, "model/w.safetensors:head");
    let noise = seg_index(&c, "model/w.safetensors:noise");
    let master_a = seg_index(&c, "master/m.safetensors:a");
    let set =
        |i: usize, d: Derivation| rewrite(&packed, move |ix, _| ix.segments[i].derived = Some(d));
    // x2 has 2500 elements.
    let d = |source, op, source_elem| Derivation::whole(op, source, source_elem, 2500);

    // Missing source.
    let e = refused(&set(x2, d(9999, DeriveOp::RoundBf16, 0)));
    assert!(
        e.contains("layer.x2") && e.contains("segment 9999") && e.contains("does not exist"),
        "{e}"
    );
    // Itself.
    let e = refused(&set(x2, d(x2, DeriveOp::RoundBf16, 0)));
    assert!(e.contains("layer.x2") && e.contains("cycle"), "{e}");
    // A chain, and a cycle of two.
    let e = refused(&set(noise, d(head, DeriveOp::Copy, 0)));
    assert!(
        e.contains("noise") && e.contains("head") && e.contains("itself derived"),
        "{e}"
    );
    let e = refused(&rewrite(&packed, |ix, _| {
        ix.segments[a16].derived = Some(d(head, DeriveOp::Copy, 0));
        ix.segments[head].derived = Some(d(a16, DeriveOp::Copy, 0));
    }));
    assert!(e.contains("itself derived"), "{e}");
    // Mismatched dtypes.
    let e = refused(&set(x2, d(master_a, DeriveOp::RoundF16, 0)));
    assert!(
        e.contains("layer.x2") && e.contains("master/m.safetensors:a") && e.contains("round-f16"),
        "{e}"
    );
    let e = refused(&set(x2, d(master_a, DeriveOp::Copy, 0)));
    assert!(e.contains("does not derive a BF16 tensor"), "{e}");
    // Not a tensor.
    let e = refused(&set(x2, d(0, DeriveOp::RoundBf16, 0)));
    assert!(e.contains("layer.x2") && e.contains("not a tensor"), "{e}");
    // Elements beyond the source, and an offset that would overflow.
    let e = refused(&set(x2, d(master_a, DeriveOp::RoundBf16, 300 * 64 - 2499)));
    assert!(
        e.contains("layer.x2")
            && e.contains("master/m.safetensors:a")
            && e.contains("which has 19200"),
        "{e}"
    );
    let e = refused(&set(x2, d(master_a, DeriveOp::RoundBf16, u64::MAX - 1)));
    assert!(e.contains("takes elements"), "{e}");
    // Pieces that do not cover the tensor, or are empty.
    let piece = |source, source_elem, elems| Piece {
        source,
        source_elem,
        elems,
    };
    let two = |a: u64, b: u64| Derivation {
        op: DeriveOp::RoundBf16,
        pieces: vec![piece(master_a, 0, a), piece(master_a, 5000, b)],
    };
    let e = refused(&set(x2, two(1000, 1499)));
    assert!(
        e.contains("layer.x2") && e.contains("cover 2499 elements, the tensor has 2500"),
        "{e}"
    );
    let e = refused(&set(x2, two(2500, 0)));
    assert!(e.contains("piece 1 takes elements 5000..5000+0"), "{e}");
    let e = refused(&set(
        x2,
        Derivation {
            op: DeriveOp::RoundBf16,
            pieces: vec![],
        },
    ));
    assert!(e.contains("layer.x2") && e.contains("0 pieces"), "{e}");
    let many = Derivation {
        op: DeriveOp::RoundBf16,
        pieces: vec![piece(master_a, 0, 1); 257],
    };
    let e = refused(&set(x2, many));
    assert!(
        e.contains("257 pieces of sources (1 to 256 allowed)"),
        "{e}"
    );
    // A derived tensor in a file without the flag: an older reader's view.
    let e = refused(&rewrite(&packed, |_, flags| *flags &= !FLAG_DERIVED));
    assert!(e.contains("unknown kind 3"), "{e}");
    // An unknown op: 9 bytes (piece count, source) before a recognisable
    // source element.
    let marked = set(x2, d(master_a, DeriveOp::RoundBf16, 0x0102_0304_0506));
    let header = Header::parse(&marked).unwrap();
    let start = HEADER_LEN + header.payload_len as usize;
    let mut index = marked[start..].to_vec();
    let mark = 0x0102_0304_0506u64.to_le_bytes();
    let at = index.windows(8).position(|w| w == mark).unwrap();
    index[at - 9] = 7;
    let body = index.len() - 8;
    let sum = xxhash_rust::xxh3::xxh3_64(&index[..body]);
    index[body..].copy_from_slice(&sum.to_le_bytes());
    let mut file = marked[..start].to_vec();
    file.extend_from_slice(&index);
    let e = refused(&file);
    assert!(
        e.contains("layer.x2") && e.contains("unknown derive op 7"),
        "{e}"
    );

    // A well-formed reference to the wrong source decodes to other bytes:
    // the whole-file hash says so, never a panic.
    let other = set(x2, d(master_a, DeriveOp::RoundBf16, 7));
    let c = Container::open(&other).unwrap();
    let mut out = Vec::new();
    assert!(matches!(
        c.decompress_to(&mut out, &mut |_| true),
        Err(Error::FileHash { .. })
    ));
}

#[test]
fn files_without_derived_tensors_keep_the_old_flags() {
    let mut rng = Rng(3);
    let layout = vec![
        tensor("w", Dtype::BF16, vec![4096]),
        tensor("b", Dtype::F32, vec![512]),
    ];
    let input = rng.bytes(4096 * 2 + 512 * 4);
    let packed = pack(&input, &layout, &CompressOptions::default());
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().flags & FLAG_DERIVED, 0);
    assert!(c.segments().iter().all(|s| s.derived.is_none()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random masters with roundings (some elements off by a step or by
    /// random bits), F16 roundings, duplicates and slices: every container
    /// decodes to the input, whatever was found.
    #[test]
    fn random_checkpoints_round_trip(
        seed in any::<u64>(),
        n in 1usize..6000,
        noise_per_mille in 0u64..40,
        off in 0usize..50,
        chunk in prop::sample::select(vec![4096usize, 8192, 65536]),
    ) {
        let mut rng = Rng(seed);
        let master: Vec<f32> = (0..n + off)
            .map(|_| f32::from_bits(rng.next() as u32))
            .collect();
        let mut input = Vec::new();
        let mut layout = Vec::new();
        let mut add = |spec: SegmentSpec, b: Vec<u8>, input: &mut Vec<u8>| {
            layout.push(spec);
            input.extend_from_slice(&b);
        };
        add(tensor("m:w", Dtype::F32, vec![(n + off) as u64]), f32_bytes(&master), &mut input);
        add(bytes_seg(3), vec![1, 2, 3], &mut input);
        let mut bf: Vec<u8> = rounded(&master, bf16_bits);
        for k in 0..n + off {
            if rng.next() % 1000 < noise_per_mille {
                bf[2 * k] ^= rng.next() as u8;
            }
        }
        add(tensor("w:w", Dtype::BF16, vec![(n + off) as u64]), bf.clone(), &mut input);
        add(tensor("w:slice", Dtype::BF16, vec![n as u64]), bf[2 * off..].to_vec(), &mut input);
        add(tensor("w:half", Dtype::F16, vec![n as u64]), rounded(&master[off..], f16_bits), &mut input);
        add(tensor("w:copy", Dtype::BF16, vec![(n + off) as u64]), bf, &mut input);
        let packed = pack(&input, &layout, &CompressOptions::default().chunk_size(chunk));
        check_decodes(&packed, &input);
    }
}

/// The decode fuzz corpus's seed of derived tensors: an F32 master, its
/// BF16 rounding by name, an F16 rounding of a slice of it by content, a
/// copy, and a BF16 rounding with a residue.
fn fuzz_seed() -> Vec<u8> {
    let mut rng = Rng(5);
    let m = weights(&mut rng, 200);
    let mut c = Ckpt {
        input: Vec::new(),
        layout: Vec::new(),
    };
    c.push(tensor("m:w", Dtype::F32, vec![200]), f32_bytes(&m));
    c.push(
        tensor("x:w", Dtype::BF16, vec![200]),
        rounded(&m, bf16_bits),
    );
    c.push(
        tensor("x:h", Dtype::F16, vec![150]),
        rounded(&m[10..160], f16_bits),
    );
    c.push(tensor("x:m_copy", Dtype::F32, vec![200]), f32_bytes(&m));
    let mut noisy = rounded(&m, bf16_bits);
    noisy[0] ^= 1;
    c.push(tensor("y:w", Dtype::BF16, vec![200]), noisy);
    pack(
        &c.input,
        &c.layout,
        &CompressOptions::default().chunk_size(4096),
    )
}

fn fuzz_seed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode/seed-derived")
}

/// The decode fuzz corpus's seed of a delta container whose BF16 tensor
/// derives from a delta tensor.
fn fuzz_seed_delta() -> Vec<u8> {
    use lmc_core::{DeltaBase, compress_delta};
    let mut rng = Rng(6);
    let prev = weights(&mut rng, 300);
    let next: Vec<f32> = prev.iter().map(|x| x * 1.001).collect();
    let layout = vec![
        tensor("m:w", Dtype::F32, vec![300]),
        tensor("b:w", Dtype::BF16, vec![300]),
    ];
    let file = |m: &[f32]| {
        let mut v = f32_bytes(m);
        v.extend(rounded(m, bf16_bits));
        v
    };
    let (base, new) = (file(&prev), file(&next));
    let d = DeltaBase::matching(&base, &layout, &layout);
    let mut out = Cursor::new(Vec::new());
    compress_delta(&new, &layout, &d, &small_chunks(), &mut out, &mut |_| true).unwrap();
    out.into_inner()
}

/// Writes `fuzz/corpus/decode/seed-derived` and `seed-derived-delta` (run
/// once, by hand: `cargo test -p lmc-core --test derived -- --ignored`).
#[test]
#[ignore]
fn write_fuzz_seed() {
    std::fs::write(fuzz_seed_path(), fuzz_seed()).unwrap();
    std::fs::write(
        fuzz_seed_path().with_file_name("seed-derived-delta"),
        fuzz_seed_delta(),
    )
    .unwrap();
}

/// The committed seed holds derived tensors of every op, so the decode
/// fuzzer starts from them.
#[test]
fn fuzz_seed_holds_every_op() {
    let seed = std::fs::read(fuzz_seed_path()).unwrap();
    let c = Container::open(&seed).unwrap();
    c.verify(&mut |_| true).unwrap();
    let mut ops: Vec<u8> = c
        .segments()
        .iter()
        .filter_map(|s| s.derived.as_ref().map(|d| d.op as u8))
        .collect();
    ops.sort();
    assert_eq!(ops, [0, 1, 1, 2]);
    // The delta seed: a BF16 tensor derived from a delta tensor.
    let seed = std::fs::read(fuzz_seed_path().with_file_name("seed-derived-delta")).unwrap();
    let c = Container::open(&seed).unwrap();
    assert_eq!(c.header().version, 2);
    let d = c.segments()[1].derived.as_ref().expect("derived");
    assert!(c.segments()[d.source()].base_offset.is_some());
}

/// A candidate whose content keys match all over a periodic source, but
/// which is no rounding of it (every 40th element far off: 2.5% against the
/// 1% allowed, so sampled checks pass and full ones fail): the search
/// gives up after a bounded number of places instead of checking every
/// match in full (measured: 0.4 s; 28 s with the bounds MAX_TRIES and
/// MAX_BLOCK_HITS lifted, and more the longer the source).
#[test]
fn periodic_sources_do_not_make_the_search_quadratic() {
    let mut rng = Rng(11);
    let period = weights(&mut rng, 24);
    let master: Vec<f32> = (0..2_000_000).map(|i| period[i % 24]).collect();
    let mut cand = rounded(&master[..200_000], bf16_bits);
    // Elements 1, 41, 81, ...: none of them among the 64 sampled ones
    // (multiples of 3125).
    for k in (1..200_000).step_by(40) {
        cand[2 * k + 1] ^= 0x40;
    }
    let layout = vec![
        tensor("m:flat", Dtype::F32, vec![2_000_000]),
        tensor("w:cand", Dtype::BF16, vec![200_000]),
    ];
    let mut input = f32_bytes(&master);
    input.extend_from_slice(&cand);
    let t = std::time::Instant::now();
    let packed = pack(&input, &layout, &CompressOptions::default());
    let took = t.elapsed();
    assert!(took.as_secs() < 10, "compressing took {took:?}");
    let c = Container::open(&packed).unwrap();
    assert!(c.segments()[1].derived.is_none());
    check_decodes(&packed, &input);
}

/// In a delta container (a snapshot against the previous one) the BF16
/// weights derive from their masters, which are delta tensors: the
/// weights are coded against the masters, not against the base, and
/// decoding them (alone too) needs the base, as the masters do.
#[test]
fn derived_tensors_in_a_delta_container() {
    use lmc_core::{DeltaBase, compress_delta};
    let mut rng = Rng(23);
    let prev = weights(&mut rng, 20_000);
    // The next step: a small update of every element.
    let next: Vec<f32> = prev
        .iter()
        .map(|x| x + ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e-4)
        .collect();
    let file = |m: &[f32]| {
        let mut c = Ckpt {
            input: Vec::new(),
            layout: Vec::new(),
        };
        c.push(bytes_seg(24), vec![7; 24]);
        c.push(tensor("m:w", Dtype::F32, vec![20_000]), f32_bytes(m));
        c.push(
            tensor("b:w", Dtype::BF16, vec![20_000]),
            rounded(m, bf16_bits),
        );
        c
    };
    let (base, new) = (file(&prev), file(&next));
    let d = DeltaBase::matching(&base.input, &base.layout, &new.layout);
    assert_eq!(d.matched(), 2);
    let pack_delta = |opts: &CompressOptions| {
        let mut out = Cursor::new(Vec::new());
        compress_delta(&new.input, &new.layout, &d, opts, &mut out, &mut |_| true).unwrap();
        out.into_inner()
    };
    let packed = pack_delta(&small_chunks());
    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().version, 2);
    let (m, b) = (&c.segments()[1], &c.segments()[2]);
    assert!(m.base_offset.is_some() && m.derived.is_none());
    assert!(b.base_offset.is_none());
    assert_eq!(
        derivation(&c, "b:w"),
        Some(("m:w".into(), DeriveOp::RoundBf16, 0))
    );
    // Without the base: refused, whole or the derived tensor alone.
    let mut out = Vec::new();
    assert!(matches!(
        c.decompress_to(&mut out, &mut |_| true),
        Err(Error::Base(_))
    ));
    assert!(
        matches!(c.read_tensor("b:w"), Err(Error::Base(_))),
        "{:?}",
        c.read_tensor("b:w")
    );
    // With it: every way.
    let c = c.with_base(&base.input).unwrap();
    let mut out = Vec::new();
    c.decompress_to(&mut out, &mut |_| true).unwrap();
    assert!(out == new.input);
    let mut into = vec![0u8; new.input.len()];
    c.decompress_into(&mut into, &mut |_| true).unwrap();
    assert!(into == new.input);
    assert!(c.read_tensor("b:w").unwrap() == new.input[new.layout[0].len as usize + 80_000..]);
    // Smaller than the same delta without derivation (measured: 51,838
    // against 59,067 bytes).
    let plain = pack_delta(&small_chunks().cross_tensor(false));
    assert!(
        packed.len() + 5_000 < plain.len(),
        "derived {} plain {}",
        packed.len(),
        plain.len()
    );
}
