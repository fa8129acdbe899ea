//! Derived tensors across the files of one snapshot (FORMAT.md, "Sources
//! in other files"): which files of a snapshot take the sources of their
//! derived tensors from which. The search itself is lmc-core's
//! ([`lmc_core::compress_with_sources`]); a file's object records the
//! files it uses, and [`crate::FileEntry::sources`] names them.

use lmc_core::{Dtype, SegmentKind, SegmentSpec};

use crate::FileInput;

/// Whether `layout` holds a tensor of a dtype in `dtypes`.
fn holds(layout: &[SegmentSpec], dtypes: &[Dtype]) -> bool {
    layout
        .iter()
        .any(|s| matches!(&s.kind, SegmentKind::Tensor { dtype, .. } if dtypes.contains(dtype)))
}

/// For each of a snapshot's `files`, the other files (indices) its derived
/// tensors may take their sources from: a file holding 16-bit float tensors
/// (BF16 or F16 weights) takes them from every file holding F32 tensors
/// and no 16-bit float ones (fp32 master weights, optimizer state). Those
/// take no sources, so there are no chains and no cycles (the manifest's
/// rule).
pub(crate) fn plan(files: &[FileInput<'_>]) -> Vec<Vec<usize>> {
    let half = [Dtype::BF16, Dtype::F16];
    let takes = |f: &FileInput<'_>| holds(&f.layout, &half);
    let gives: Vec<usize> = (0..files.len())
        .filter(|&j| !takes(&files[j]) && holds(&files[j].layout, &[Dtype::F32]))
        .collect();
    files
        .iter()
        .map(|f| if takes(f) { gives.clone() } else { Vec::new() })
        .collect()
}

/// The files `which` of `files`, as sources for lmc-core.
pub(crate) fn inputs<'a>(
    files: &'a [FileInput<'a>],
    which: &[usize],
) -> Vec<lmc_core::SourceInput<'a>> {
    which
        .iter()
        .map(|&j| lmc_core::SourceInput {
            name: files[j].path.clone(),
            parts: files[j].parts.clone(),
            layout: files[j].layout.clone(),
        })
        .collect()
}
