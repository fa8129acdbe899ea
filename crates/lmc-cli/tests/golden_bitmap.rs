//! The bitmap sparse-chunk golden container (`tests/data/bitmap/`): both
//! tensors' chunks are bitmap sparse xor chunks (transform 3); it decodes
//! with its base to exactly the golden file, whole, tensor by tensor and
//! through the CLI. The file is never regenerated (see the README there).

mod common;
use common::{decompress_golden_delta, golden_with_flags_error, read_golden};

use lmc_core::Container;
use lmc_core::codec::PlaneCodec;
use lmc_core::format::{FLAG_BITMAP, FLAG_RUNS, FLAG_SPLIT, Transform};

#[test]
fn golden_bitmap_delta_decodes() {
    let base = read_golden("bitmap/base.safetensors", 163_984);
    let next = read_golden("bitmap/next.safetensors", 163_984);
    let packed = read_golden("bitmap/next.safetensors.lmc", 12_874);

    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().flags, FLAG_SPLIT | FLAG_RUNS | FLAG_BITMAP);
    let maps: Vec<PlaneCodec> = c
        .chunks()
        .iter()
        .filter(|ch| ch.transform == Transform::XorBitmap)
        .map(|ch| ch.planes[0].codec)
        .collect();
    assert_eq!(maps, [PlaneCodec::Huffman, PlaneCodec::Huffman]);
    let c = c.with_base(&base).unwrap();
    let mut out = Vec::new();
    c.decompress_to(&mut out, &mut |_| true).unwrap();
    assert!(out == next);
    let mut w = vec![0u8; 131_072];
    c.read_tensor_into("w", &mut w).unwrap();
    assert!(w[..] == next[next.len() - 131_072..]);

    assert!(decompress_golden_delta("bitmap") == next);
}

/// lmc before bitmap chunks refused the golden file by its header flag; a
/// reader now refuses transform 3 in a file whose header lacks the flag.
#[test]
fn bitmap_chunks_without_the_flag_are_refused() {
    let err = golden_with_flags_error(
        "bitmap/next.safetensors.lmc",
        12_874,
        FLAG_SPLIT | FLAG_RUNS,
    );
    assert!(err.contains("bitmap flag"), "{err}");
}
