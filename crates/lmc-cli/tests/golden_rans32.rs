//! The rANS32 golden container (`tests/data/rans32/`): a delta whose
//! exponent plane is an rANS32 block decodes with its base to exactly the
//! golden file, through the library and the CLI. The files are never
//! regenerated (see the README there).

mod common;
use common::{check_golden_decodes, golden_with_flags_error, read_golden};

use lmc_core::Container;
use lmc_core::codec::PlaneCodec;
use lmc_core::format::{FLAG_RANS32, FLAG_SPLIT};

const LEN: usize = 60_154;

#[test]
fn golden_rans32_delta_decodes() {
    let base = read_golden("rans32/base.safetensors", 131_152);
    let next = read_golden("rans32/next.safetensors", 131_152);
    let packed = read_golden("rans32/next.safetensors.lmc", LEN);

    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().version, 2);
    assert_eq!(c.header().flags, FLAG_SPLIT | FLAG_RANS32);
    let tensor = c.chunks().last().unwrap();
    let codecs: Vec<PlaneCodec> = tensor.planes.iter().map(|p| p.codec).collect();
    assert_eq!(codecs, [PlaneCodec::Rans32, PlaneCodec::Split]);

    check_golden_decodes("rans32", &packed, &base, &next);
}

/// lmc before rANS32 refused the golden file by its header flag; a reader
/// now refuses an rANS32 plane in a file whose header lacks the flag.
#[test]
fn rans32_without_the_flag_is_refused() {
    let err = golden_with_flags_error("rans32/next.safetensors.lmc", LEN, FLAG_SPLIT);
    assert!(err.contains("rans32"), "{err}");
}
