//! The bitmap sparse-chunk golden container (`tests/data/bitmap/`): both
//! tensors' chunks are bitmap sparse xor chunks (transform 3); it decodes
//! with its base to exactly the golden file, whole, tensor by tensor and
//! through the CLI. The file is never regenerated (see the README there).

mod common;
use common::{check_sparse_golden, golden_with_flags_error};

use lmc_core::codec::PlaneCodec;
use lmc_core::format::{FLAG_BITMAP, FLAG_RUNS, FLAG_SPLIT, Transform};

#[test]
fn golden_bitmap_delta_decodes() {
    let maps = [PlaneCodec::Huffman, PlaneCodec::Huffman];
    let flags = check_sparse_golden("bitmap", 12_874, Transform::XorBitmap, &maps);
    assert_eq!(flags, FLAG_SPLIT | FLAG_RUNS | FLAG_BITMAP);
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
