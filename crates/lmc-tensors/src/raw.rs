//! Raw files: a flat little-endian array of one dtype, no header.

use lmc_core::{Dtype, SegmentKind, SegmentSpec};

/// The layout of a raw file of `len` bytes holding elements of `dtype`:
/// one tensor named `name`, then the trailing bytes (if `len` is not a
/// multiple of the element width) as a byte segment.
pub fn layout(len: u64, dtype: Dtype, name: &str) -> Vec<SegmentSpec> {
    let w = dtype.width() as u64;
    let elems = len / w;
    let mut l = vec![SegmentSpec {
        kind: SegmentKind::Tensor {
            name: name.to_string(),
            dtype,
            shape: vec![elems],
        },
        len: elems * w,
    }];
    if !len.is_multiple_of(w) {
        l.push(SegmentSpec {
            kind: SegmentKind::Bytes,
            len: len % w,
        });
    }
    l
}
