//! Reading part of a tensor (`Container::read_tensor_range_into`): the bytes
//! asked for, exactly, decoding only the chunks that hold them.

mod common;
use common::{Rng, tensor};

use std::io::Cursor;

use lmc_core::{CompressOptions, Container, Dtype, Error, compress};

fn packed(data: &[u8], layout: &[lmc_core::SegmentSpec]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    compress(
        data,
        layout,
        &CompressOptions::default().chunk_size(4096),
        &mut out,
        &mut |_| true,
    )
    .unwrap();
    out.into_inner()
}

#[test]
fn ranges_give_the_bytes_asked_for() {
    let mut rng = Rng(41);
    let head = rng.bytes(24);
    let w: Vec<u8> = (0..20_000u32)
        .flat_map(|i| ((i % 97) as f32 * 0.25 - 3.0).to_le_bytes())
        .collect();
    let mut data = head.clone();
    data.extend_from_slice(&w);
    let layout = [
        lmc_core::SegmentSpec {
            kind: lmc_core::SegmentKind::Bytes,
            len: 24,
        },
        tensor("w", Dtype::F32, vec![200, 100]),
    ];
    let packed = packed(&data, &layout);
    let c = Container::open(&packed).unwrap();
    let n = w.len() as u64;
    let mut cases = vec![
        (0, n),
        (0, 0),
        (n, 0),
        (0, 1),
        (n - 1, 1),
        (4095, 2),
        (4096, 4096),
        (400, 8000),
    ];
    for _ in 0..50 {
        let a = rng.next() % n;
        let b = rng.next() % (n - a + 1);
        cases.push((a, b));
    }
    for (start, len) in cases {
        let mut out = vec![0xAAu8; len as usize];
        c.read_tensor_range_into("w", start, &mut out).unwrap();
        assert!(
            out[..] == w[start as usize..(start + len) as usize],
            "{start}+{len}"
        );
    }
    // Past the end, or a tensor it does not hold: errors.
    let mut out = vec![0u8; 8];
    assert!(matches!(
        c.read_tensor_range_into("w", n - 4, &mut out),
        Err(Error::InvalidInput(_))
    ));
    assert!(c.read_tensor_range_into("w", u64::MAX, &mut out).is_err());
    assert!(matches!(
        c.read_tensor_range_into("v", 0, &mut out),
        Err(Error::NoSuchTensor(_))
    ));
}

/// A range decodes only its chunks: with a damaged chunk elsewhere it still
/// reads; over the damaged chunk it fails, naming that chunk.
#[test]
fn ranges_decode_only_their_chunks() {
    let w: Vec<u8> = (0..16_384u32)
        .flat_map(|i| (i as f32).sqrt().to_le_bytes())
        .collect();
    let layout = [tensor("w", Dtype::F32, vec![16_384])];
    let mut packed = packed(&w, &layout);
    let (at, k) = {
        let c = Container::open(&packed).unwrap();
        assert_eq!(c.chunks().len(), 16);
        (c.chunks()[5].stored_offset as usize, 5usize)
    };
    packed[at] ^= 0x10;
    let c = Container::open(&packed).unwrap();
    let mut out = vec![0u8; 4096 * 5];
    c.read_tensor_range_into("w", 0, &mut out).unwrap();
    assert!(out[..] == w[..4096 * 5]);
    let mut out = vec![0u8; 4096 * 10];
    c.read_tensor_range_into("w", 6 * 4096, &mut out).unwrap();
    assert!(out[..] == w[6 * 4096..]);
    let mut out = vec![0u8; 100];
    let err = c
        .read_tensor_range_into("w", 5 * 4096 + 50, &mut out)
        .unwrap_err();
    assert!(
        matches!(err, Error::ChunkChecksum { chunk, .. } if chunk == k),
        "{err}"
    );
}
