//! Files: atomic writes, reading inputs and delta bases, decoding into a
//! Python buffer.

use std::io::BufWriter;
use std::path::Path;

use lmc_core::{CompressOptions, CompressSummary, Container, DeltaBase, SegmentSpec};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{err, fail};

/// The library's options from the `chunk_size` and `best` arguments.
pub(crate) fn options(chunk_size: Option<usize>, best: bool) -> CompressOptions {
    let options = CompressOptions::default().best(best);
    match chunk_size {
        Some(c) => options.chunk_size(c),
        None => options,
    }
}

/// Writes `dest` through a temporary file in the same folder that is renamed
/// into place once complete (and, with `sync`, on disk): a reader, or a
/// crash, never sees half a file under `dest`. Only a regular file is ever
/// replaced (never a device such as /dev/null, a pipe or a folder): the
/// CLI's rule, [`lmc_files::check_destination`].
pub(crate) fn write_atomically<T>(
    dest: &Path,
    sync: bool,
    fill: impl FnOnce(&mut BufWriter<tempfile::NamedTempFile>) -> Result<T, String>,
) -> Result<T, String> {
    lmc_files::check_destination(dest).map_err(|e| e.to_string())?;
    let (tmp, dir) = lmc_files::temp_beside(dest).map_err(|e| {
        format!(
            "cannot create a temporary file beside {}: {e}",
            dest.display()
        )
    })?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp);
    let value = fill(&mut w)?;
    let tmp = w
        .into_inner()
        .map_err(|e| format!("cannot write {}: {}", dest.display(), e.error()))?;
    if sync {
        tmp.as_file()
            .sync_all()
            .map_err(|e| format!("cannot sync {}: {e}", dest.display()))?;
    }
    tmp.persist(dest)
        .map_err(|e| format!("cannot write {}: {}", dest.display(), e.error))?;
    if sync {
        // The rename itself is durable once the folder is synced.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    }
    Ok(value)
}

/// Compresses `parts` (one slice per segment of `layout`) into `dest`.
pub(crate) fn write_container(
    dest: &Path,
    parts: &[&[u8]],
    layout: &[SegmentSpec],
    base: Option<&DeltaBase<'_>>,
    options: &CompressOptions,
    sync: bool,
) -> Result<CompressSummary, String> {
    write_atomically(dest, sync, |w| {
        lmc_core::compress_parts(parts, layout, base, options, w, &mut |_| true)
            .map_err(|e| format!("cannot compress into {}: {e}", dest.display()))
    })
}

pub(crate) fn summary_dict<'py>(
    py: Python<'py>,
    s: &CompressSummary,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("original_len", s.original_len)?;
    d.set_item("compressed_len", s.compressed_len)?;
    d.set_item("chunks", s.chunks)?;
    d.set_item("original_hash", format!("{:032x}", s.original_hash))?;
    Ok(d)
}

pub(crate) fn read_file(path: &Path) -> PyResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| err(format!("cannot read {}", path.display()), e))
}

/// The base bytes a delta container needs, given as the original file or as
/// a full `.lmc` container of it, by the CLI's rule ([`lmc_files::load_base`]).
pub(crate) fn base_bytes(
    container: &Container<'_>,
    input: &Path,
    base: Option<&Path>,
) -> PyResult<Option<Vec<u8>>> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()).into());
    let found =
        lmc_files::load_base(input, container, base, read).map_err(|e| fail(e.to_string()))?;
    Ok(found.map(|b| match b {
        lmc_files::Base::File(v) | lmc_files::Base::Decoded(v) => v,
    }))
}
