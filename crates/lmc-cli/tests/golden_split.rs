//! The split-plane golden container (`tests/data/split/`): a delta whose
//! low byte plane is a split plane decodes with its base to exactly the
//! golden file, through the library and the CLI. The files are never
//! regenerated (see the README there).

mod common;
use common::{decompress_golden_delta, read_golden};

use lmc_core::Container;
use lmc_core::codec::PlaneCodec;
use lmc_core::format::{FLAG_RANS, FLAG_SPLIT};

#[test]
fn golden_split_delta_decodes() {
    let base = read_golden("split/base.safetensors", 32_840);
    let next = read_golden("split/next.safetensors", 32_840);
    let packed = read_golden("split/next.safetensors.lmc", 6_398);

    let c = Container::open(&packed).unwrap();
    assert_eq!(c.header().version, 2);
    assert_eq!(c.header().flags, FLAG_RANS | FLAG_SPLIT);
    let codecs: Vec<PlaneCodec> = c
        .chunks()
        .iter()
        .flat_map(|ch| ch.planes.iter().map(|p| p.codec))
        .collect();
    assert!(codecs.contains(&PlaneCodec::Split), "{codecs:?}");
    let c = c.with_base(&base).unwrap();
    let mut out = Vec::new();
    c.decompress_to(&mut out, &mut |_| true).unwrap();
    assert!(out == next);

    assert!(decompress_golden_delta("split") == next);
}
