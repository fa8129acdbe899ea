//! The runs-plane golden container (`tests/data/runs/`): a delta whose
//! exponent plane is a runs plane, and whose low plane is a split plane
//! with a runs part, decodes with its base to exactly the golden file,
//! through the library and the CLI. The files are never regenerated (see
//! the README there).

mod common;
use common::{check_golden_decodes, check_sparse_golden, golden_with_flags_error, read_golden};

use lmc_core::Container;
use lmc_core::codec::PlaneCodec;
use lmc_core::format::{FLAG_RUNS, FLAG_SPLIT};

#[test]
fn golden_runs_delta_decodes() {
    let base = read_golden("runs/base.safetensors", 131_152);
    let next = read_golden("runs/next.safetensors", 131_152);
    let packed = read_golden("runs/next.safetensors.lmc", 19_199);

    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().version, 2);
    assert_eq!(c.header().flags, FLAG_SPLIT | FLAG_RUNS);
    let tensor = c.chunks().last().unwrap();
    let codecs: Vec<PlaneCodec> = tensor.planes.iter().map(|p| p.codec).collect();
    assert_eq!(codecs, [PlaneCodec::Runs, PlaneCodec::Split]);
    // Part A's codec: the second byte of the split plane.
    let split_at = tensor.stored_offset as usize + tensor.planes[0].stored_len as usize;
    assert_eq!(packed[split_at + 1], PlaneCodec::Runs as u8);

    check_golden_decodes("runs", &packed, &base, &next);
}

/// lmc before runs refused the golden file by its header flag; a reader
/// now refuses a runs plane in a file whose header lacks the flag.
#[test]
fn runs_without_the_flag_are_refused() {
    let err = golden_with_flags_error("runs/next.safetensors.lmc", 19_199, FLAG_SPLIT);
    assert!(err.contains("runs"), "{err}");
}

/// The sparse-chunk golden container (`tests/data/sparse/`): both tensors'
/// chunks are sparse xor chunks (one map read from its run lengths, one
/// decoded); it decodes with its base to exactly the golden file, whole,
/// tensor by tensor and through the CLI.
#[test]
fn golden_sparse_delta_decodes() {
    use lmc_core::format::Transform;
    let maps = [PlaneCodec::Rans, PlaneCodec::Runs];
    check_sparse_golden("sparse", 12_630, Transform::XorSparse, &maps);
}
