//! Checkpoints and containers in memory and as streams: every round trip
//! compared byte for byte, damage refused rather than read as good bytes.
//! (Synthetic tensors: these tests are about bytes, not ratios.)

use std::io::{Read, Write};

use lmc_core::{CompressOptions, DeltaBase, Dtype};
use lmc_files::{Decoder, Encoder, compress_to_vec, decompress_to_vec};

/// A safetensors file of two tensors drawn from `seed`; `drift` changes
/// every 7th weight a little (a next training step).
fn checkpoint(seed: u64, drift: bool) -> Vec<u8> {
    let mut x = seed;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as u32
    };
    let n = 300_000usize;
    let w: Vec<f32> = (0..n)
        .map(|i| {
            let v = ((next() % 2001) as f32 - 1000.0) * 1e-5;
            if drift && i % 7 == 0 { v + 1e-6 } else { v }
        })
        .collect();
    let f: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let b: Vec<u8> = w
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let infos = [("w.f32", Dtype::F32, n), ("w.bf16", Dtype::BF16, n)].map(|(name, dtype, n)| {
        lmc_tensors::safetensors::TensorInfo {
            name: name.into(),
            dtype,
            shape: vec![n as u64],
        }
    });
    let mut out = lmc_tensors::safetensors::header(&infos, &Default::default()).unwrap();
    out.extend_from_slice(&f);
    out.extend_from_slice(&b);
    out
}

fn small_chunks() -> CompressOptions {
    CompressOptions::default().chunk_size(64 << 10)
}

#[test]
fn to_vec_and_back() {
    let original = checkpoint(1, false);
    let c = compress_to_vec("ck.safetensors", &original, &small_chunks(), false).unwrap();
    assert!(c.len() < original.len());
    assert!(decompress_to_vec("ck.lmc", &c, None).unwrap() == original);
    // Not a checkpoint: refused, naming it.
    let err = compress_to_vec("notes.txt", b"hello", &small_chunks(), false).unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    // A damaged container: refused, naming it.
    let mut bad = c.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    let err = decompress_to_vec("ck.lmc", &bad, None).unwrap_err();
    assert!(err.to_string().contains("ck.lmc"), "{err}");
}

#[test]
fn encoder_writes_the_container_compress_to_vec_makes() {
    let original = checkpoint(2, false);
    let mut e = Encoder::new(Vec::new(), "ck.safetensors", small_chunks());
    for piece in original.chunks(10_007) {
        e.write_all(piece).unwrap();
    }
    let written = e.finish().unwrap();
    let direct = compress_to_vec("ck.safetensors", &original, &small_chunks(), false).unwrap();
    assert!(written == direct);
}

#[test]
fn decoder_streams_the_file_and_refuses_damage() {
    let original = checkpoint(3, false);
    let c = compress_to_vec("ck.safetensors", &original, &small_chunks(), false).unwrap();
    assert!(
        lmc_core::Container::open(&c).unwrap().chunks().len() > 16,
        "several refills"
    );
    // Read in odd-sized pieces.
    let mut d = Decoder::new(&c[..], None).unwrap();
    let mut back = Vec::new();
    let mut piece = [0u8; 4093];
    loop {
        let n = d.read(&mut piece).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&piece[..n]);
    }
    assert!(back == original);
    assert_eq!(d.read(&mut piece).unwrap(), 0);

    // A damaged chunk near the end: the bytes before it come out, then an
    // error; reading to the end never succeeds.
    let chunks = lmc_core::Container::open(&c).unwrap().chunks().to_vec();
    let last = chunks.last().unwrap();
    let mut bad = c.clone();
    bad[(last.stored_offset + 3) as usize] ^= 1;
    let mut out = Vec::new();
    let err = Decoder::new(&bad[..], None)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(out.len() < original.len());
    // Not a container at all: refused when the decoder is made.
    assert!(Decoder::new(&b"not a container"[..], None).is_err());
}

#[test]
fn deltas_decode_with_their_base() {
    let base = checkpoint(4, false);
    let next = checkpoint(4, true);
    let layout = |b: &[u8]| {
        lmc_files::detect_input("x".as_ref(), b, None, false)
            .unwrap()
            .layout
    };
    let (bl, nl) = (layout(&base), layout(&next));
    let mut c = std::io::Cursor::new(Vec::new());
    lmc_core::compress_delta(
        &next,
        &nl,
        &DeltaBase::matching(&base, &bl, &nl),
        &small_chunks(),
        &mut c,
        &mut |_| true,
    )
    .unwrap();
    let c = c.into_inner();
    assert!(decompress_to_vec("d.lmc", &c, Some(&base)).unwrap() == next);
    let mut back = Vec::new();
    Decoder::new(&c[..], Some(base.clone()))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == next);
    // Without its base, or with another file as base: refused.
    assert!(decompress_to_vec("d.lmc", &c, None).is_err());
    assert!(decompress_to_vec("d.lmc", &c, Some(&next)).is_err());
    assert!(Decoder::new(&c[..], None).is_err());
}
