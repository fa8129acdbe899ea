//! Files and objects: atomic writes and uploads, reading inputs and delta
//! bases, containers to decode whole.
//!
//! Every path may be a URL (`s3://`, `gs://`, `az://`, `file://`, and
//! `http(s)://` for reading), handled by `lmc-remote` as the CLI handles
//! it: a container is read by its header and index and then in ranges, and
//! written by a multipart upload that is visible only once complete.

use std::io::{BufWriter, Write};
use std::path::Path;

use lmc_core::{CompressOptions, CompressSummary, Container, DeltaBase, ReadAt, SegmentSpec};
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

/// The URL that `path` is, if it is one rather than a local path.
pub(crate) fn url_of(path: &Path) -> Option<&str> {
    path.to_str().filter(|s| lmc_remote::is_url(s))
}

/// Writes the decoded bytes `fill` produces to `dest`: a local file by
/// [`write_atomically`], or an object by a multipart upload that `fill`'s
/// bytes go up in as they come, completed (made visible) only if `fill`
/// succeeds.
pub(crate) fn write_decoded<T>(
    dest: &Path,
    sync: bool,
    fill: impl FnOnce(&mut (dyn Write + Send)) -> Result<T, String>,
) -> Result<T, String> {
    let Some(url) = url_of(dest) else {
        return write_atomically(dest, sync, |w| fill(w));
    };
    let mut w = BufWriter::with_capacity(
        1 << 20,
        lmc_remote::Upload::create(url).map_err(|e| e.to_string())?,
    );
    let value = fill(&mut w)?;
    let up = w
        .into_inner()
        .map_err(|e| format!("cannot upload {url}: {}", e.error()))?;
    up.finish().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Compresses `parts` (one slice per segment of `layout`) into `dest`, a
/// file (written atomically) or a URL (uploaded as it is coded,
/// [`lmc_remote::ContainerUpload`]).
pub(crate) fn write_container(
    dest: &Path,
    parts: &[&[u8]],
    layout: &[SegmentSpec],
    base: Option<&DeltaBase<'_>>,
    options: &CompressOptions,
    sync: bool,
) -> Result<CompressSummary, String> {
    if let Some(url) = url_of(dest) {
        let up = lmc_remote::ContainerUpload::create(url).map_err(|e| e.to_string())?;
        let mut w = BufWriter::with_capacity(1 << 20, up);
        let summary = lmc_core::compress_parts(parts, layout, base, options, &mut w, &mut |_| true)
            .map_err(|e| format!("cannot compress into {url}: {e}"))?;
        let up = w
            .into_inner()
            .map_err(|e| format!("cannot upload {url}: {}", e.error()))?;
        up.finish().map_err(|e| e.to_string())?;
        return Ok(summary);
    }
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

/// The whole of a file or of the object at a URL.
pub(crate) fn read_file(path: &Path) -> PyResult<Vec<u8>> {
    read_whole(path).map_err(fail)
}

fn read_whole(path: &Path) -> Result<Vec<u8>, String> {
    match url_of(path) {
        Some(url) => lmc_remote::Object::open(url)
            .and_then(|o| o.read_all())
            .map_err(|e| e.to_string()),
        None => std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display())),
    }
}

/// `e` with `path` in front, unless the object store's error names the URL
/// already.
pub(crate) fn named(path: &Path, e: lmc_core::Error) -> PyErr {
    if lmc_remote::from_store(&e) {
        fail(e.to_string())
    } else {
        err(path.display(), e)
    }
}

/// A container to decode whole: a local file in memory, or an object (its
/// header and index read now, the chunks as they are decoded, front to
/// back through one stream, the next group fetched while one is decoded).
pub(crate) enum Stored {
    Bytes(Vec<u8>),
    Object(lmc_remote::Object, Container<'static>),
}

impl Stored {
    pub(crate) fn open(path: &Path) -> PyResult<Stored> {
        match url_of(path) {
            Some(url) => {
                let object = lmc_remote::Object::open(url).map_err(|e| fail(e.to_string()))?;
                let c = object.open_container().map_err(|e| fail(e.to_string()))?;
                Ok(Stored::Object(object, c))
            }
            None => Ok(Stored::Bytes(read_file(path)?)),
        }
    }

    pub(crate) fn container(&self, path: &Path) -> PyResult<Container<'_>> {
        match self {
            Stored::Bytes(b) => Container::open(b).map_err(|e| err(path.display(), e)),
            Stored::Object(_, c) => Ok(c.clone()),
        }
    }

    /// Where the chunks of a container opened by its index are read from.
    pub(crate) fn source(&self) -> Option<&(dyn ReadAt + Send + Sync)> {
        match self {
            Stored::Bytes(_) => None,
            Stored::Object(o, _) => Some(o),
        }
    }

    /// The container's stored length.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Stored::Bytes(b) => b.len() as u64,
            Stored::Object(o, _) => o.len(),
        }
    }

    /// Decodes `c` (this container, with its base if it needs one) to
    /// `out`, each chunk checked against its checksum before it is written
    /// and the whole-file hash at the end.
    pub(crate) fn decompress_to(
        &self,
        c: &Container<'_>,
        out: &mut (dyn Write + Send),
    ) -> lmc_core::Result<()> {
        match self {
            Stored::Bytes(_) => c.decompress_to(out, &mut |_| true),
            // Front to back through one stream, as the CLI reads it.
            Stored::Object(o, _) => {
                let src = o.spooled().map_err(std::io::Error::from)?;
                c.decompress_from(&src, out, &mut |_| true)
            }
        }
    }
}

/// The base bytes a delta container needs, given as the original file or as
/// a full `.lmc` container of it, by the CLI's rule ([`lmc_files::load_base`]).
pub(crate) fn base_bytes(
    container: &Container<'_>,
    input: &Path,
    base: Option<&Path>,
) -> PyResult<Option<Vec<u8>>> {
    let read = |p: &Path| read_whole(p).map_err(|e| e.into());
    let found =
        lmc_files::load_base(input, container, base, read).map_err(|e| fail(e.to_string()))?;
    Ok(found.map(|b| match b {
        lmc_files::Base::File(v) | lmc_files::Base::Decoded(v) => v,
    }))
}
