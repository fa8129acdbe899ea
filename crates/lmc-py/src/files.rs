//! Single files, as the CLI's `compress`, `decompress` and `verify`, and
//! tensors in memory to and from `.lmc` files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lmc_core::{Container, DeltaBase, SegmentKind, SegmentSpec};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict};
use rayon::prelude::*;

use crate::io::{
    Stored, base_bytes, named, options, read_file, summary_dict, url_of, write_container,
    write_decoded,
};
use crate::tensors::{Loaded, TensorArg, describe, loaded, plan_file};
use crate::{err, fail};

/// Compresses tensors held in memory into the `.lmc` container of a
/// safetensors file (what `lmc compress` makes of that file).
#[pyfunction]
#[pyo3(signature = (path, tensors, metadata=None, chunk_size=None, sync=false, best=false))]
pub(crate) fn save_tensors<'py>(
    py: Python<'py>,
    path: PathBuf,
    tensors: Vec<TensorArg<'py>>,
    metadata: Option<BTreeMap<String, String>>,
    chunk_size: Option<usize>,
    sync: bool,
    best: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let metadata = metadata.unwrap_or_default();
    let plan = plan_file(&tensors, &metadata)?;
    let parts = plan.parts();
    let options = options(chunk_size, best);
    let summary = py
        .detach(|| write_container(&path, &parts, &plan.layout, None, &options, sync))
        .map_err(fail)?;
    summary_dict(py, &summary)
}

/// Decodes a whole `.lmc` file or object (checking every checksum and the
/// whole-file hash) into one `bytearray`, and says where each tensor lies
/// in it.
#[pyfunction]
#[pyo3(signature = (path, base=None))]
pub(crate) fn load<'py>(
    py: Python<'py>,
    path: PathBuf,
    base: Option<PathBuf>,
) -> PyResult<Loaded<'py>> {
    let stored = py.detach(|| Stored::open(&path))?;
    let c = stored.container(&path)?;
    let base = py.detach(|| base_bytes(&c, &path, base.as_deref()))?;
    let c = match &base {
        Some(b) => c.with_base(b).map_err(|e| named(&path, e))?,
        None => c,
    };
    let len = usize::try_from(c.header().original_len)
        .map_err(|_| fail(format!("{}: too large for this machine", path.display())))?;
    let mut described = None;
    let out = PyByteArray::new_with(py, len, |buf| {
        py.detach(|| -> Result<(), String> {
            let decoded = match &stored {
                Stored::Bytes(_) => c.decompress_into(buf, &mut |_| true),
                Stored::Object(..) => {
                    let mut w: &mut [u8] = buf;
                    stored.decompress_to(&c, &mut w)
                }
            };
            decoded.map_err(|e| named(&path, e).to_string())?;
            described =
                Some(describe(buf, c.segments()).map_err(|e| format!("{}: {e}", path.display()))?);
            Ok(())
        })
        .map_err(fail)
    })?;
    let (meta, spans) = described.expect("set on success");
    Ok(loaded(meta, spans, out))
}

/// The `__metadata__` of the safetensors file in a `.lmc` container,
/// reading and decoding only the chunks of its header.
#[pyfunction]
pub(crate) fn read_metadata(path: PathBuf) -> PyResult<BTreeMap<String, String>> {
    let (src, c) = open_at(&path)?;
    metadata_of(&path, &*src, &c)
}

/// Where a container's bytes are read from: a local file, or an object
/// named by a URL (`s3://...`, read by ranged requests).
type Source = Box<dyn lmc_core::ReadAt + Send + Sync>;

/// `path` (a file or a URL) opened for positional reads, and its container
/// by its header and index alone: the chunks are read as they are needed.
fn open_at(path: &Path) -> PyResult<(Source, Container<'static>)> {
    if let Some(url) = url_of(path) {
        let object = lmc_remote::Object::open(url).map_err(|e| fail(e.to_string()))?;
        let c = object.open_container().map_err(|e| fail(e.to_string()))?;
        return Ok((Box::new(object), c));
    }
    let src = lmc_files::FileAt::open(path).map_err(|e| fail(e.to_string()))?;
    let c = Container::open_from(&src).map_err(|e| err(path.display(), e))?;
    Ok((Box::new(src), c))
}

/// The `__metadata__` of the safetensors file in the container `c` over
/// `src`, decoding only the chunks of its header.
fn metadata_of(
    path: &Path,
    src: &dyn lmc_core::ReadAt,
    c: &Container<'_>,
) -> PyResult<BTreeMap<String, String>> {
    let ctx = |e: lmc_core::Error| err(path.display(), e);
    let Some(first) = c
        .segments()
        .first()
        .filter(|s| s.kind == SegmentKind::Bytes)
    else {
        return Ok(BTreeMap::new());
    };
    let mut header = Vec::with_capacity(first.len as usize);
    let mut chunk = Vec::new();
    for i in first.first_chunk..first.first_chunk + first.chunk_count {
        c.decode_chunk_from(src, i, &mut chunk).map_err(ctx)?;
        header.extend_from_slice(&chunk);
    }
    let not_st = || {
        fail(format!(
            "{}: does not hold a safetensors file",
            path.display()
        ))
    };
    let n = header
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or_else(not_st)?;
    let json = header.get(8..8usize.saturating_add(n)).ok_or_else(not_st)?;
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| err(format!("{}: safetensors header", path.display()), e))?;
    let mut out = BTreeMap::new();
    if let Some(meta) = value.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in meta {
            if let Some(v) = v.as_str() {
                out.insert(k.clone(), v.to_string());
            }
        }
    }
    Ok(out)
}

/// `(name, dtype, shape, length in bytes)` of a tensor.
type TensorEntry = (String, String, Vec<u64>, u64);

/// A `.lmc` file (or a URL) opened for reading its tensors one at a time
/// (`lmc.safe_open`): the header and index are read when it is opened, and
/// each read reads and decodes only the chunks it needs, each checked
/// against its checksum.
#[pyclass(module = "lmc._lmc", frozen)]
pub(crate) struct Reader {
    path: PathBuf,
    src: Source,
    container: Container<'static>,
}

#[pymethods]
impl Reader {
    #[new]
    fn new(path: PathBuf) -> PyResult<Reader> {
        let (src, container) = open_at(&path)?;
        if container.needs_base() {
            return Err(fail(format!(
                "{}: a delta container, whose tensors need its base: read it with \
                 lmc.load_file(path, base=...)",
                path.display()
            )));
        }
        Ok(Reader {
            path,
            src,
            container,
        })
    }

    /// `[(name, dtype, shape, length in bytes)]` of the tensors, in the
    /// file's order.
    fn tensors(&self) -> PyResult<Vec<TensorEntry>> {
        Ok(self
            .container
            .segments()
            .iter()
            .filter_map(|s| match &s.kind {
                SegmentKind::Tensor { name, dtype, shape } => {
                    Some((name.clone(), dtype.name().to_string(), shape.clone(), s.len))
                }
                SegmentKind::Bytes => None,
            })
            .collect())
    }

    /// The safetensors `__metadata__`, decoding only the header's chunks.
    fn metadata(&self) -> PyResult<BTreeMap<String, String>> {
        metadata_of(&self.path, &*self.src, &self.container)
    }

    /// Bytes `start..start + length` of tensor `name` (default: all of it),
    /// decoding only the chunks that hold them, in parallel.
    #[pyo3(signature = (name, start=0, length=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        start: u64,
        length: Option<u64>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let c = &self.container;
        let ctx = |e: lmc_core::Error| named(&self.path, e);
        let len = c.tensor_len(name).map_err(ctx)?;
        let length = length.unwrap_or(len.saturating_sub(start));
        // Checked before the buffer is allocated.
        if start.checked_add(length).is_none_or(|end| end > len) {
            return Err(fail(format!(
                "{}: tensor {}: bytes {start}..{} asked for, it has {len}",
                self.path.display(),
                lmc_core::error::quote_name(name),
                start.saturating_add(length)
            )));
        }
        let mut out = vec![0u8; length as usize];
        py.detach(|| c.read_tensor_range_from(&*self.src, name, start, &mut out))
            .map_err(ctx)?;
        Ok(PyByteArray::new(py, &out))
    }
}

/// Decodes only the named tensors of a (full) `.lmc` file, in parallel; each
/// chunk's checksum is checked. Returns one `bytearray` per name. With
/// `expected`, a tensor whose length is not the one given for it (what a
/// DCP checkpoint's metadata says) is refused before anything is allocated
/// for it: a small hostile container cannot claim a huge tensor.
#[pyfunction]
#[pyo3(signature = (path, names, expected=None))]
pub(crate) fn read_tensors<'py>(
    py: Python<'py>,
    path: PathBuf,
    names: Vec<String>,
    expected: Option<Vec<Option<u64>>>,
) -> PyResult<Vec<Bound<'py, PyByteArray>>> {
    let (src, c) = open_at(&path)?;
    let decoded: Vec<Vec<u8>> = py
        .detach(|| -> Result<_, lmc_core::Error> {
            if let Some(expected) = &expected {
                for (n, want) in names.iter().zip(expected) {
                    let len = c.tensor_len(n)?;
                    if let Some(want) = want.filter(|&w| w != len) {
                        return Err(lmc_core::Error::InvalidInput(format!(
                            "tensor {}: the container holds {len} bytes of it, the checkpoint's \
                             metadata says {want}",
                            lmc_core::error::quote_name(n)
                        )));
                    }
                }
            }
            names
                .par_iter()
                .map(|n| c.read_tensor_from(&src, n))
                .collect()
        })
        .map_err(|e| err(path.display(), e))?;
    Ok(decoded.iter().map(|v| PyByteArray::new(py, v)).collect())
}

/// Decodes the named tensors of a (full) `.lmc` file straight into the
/// given writable, contiguous uint8 NumPy arrays (views of the tensors a
/// load fills: no copy of the decoded bytes), in parallel, each chunk's
/// checksum checked. Each array must be exactly its tensor's length.
#[pyfunction]
pub(crate) fn read_tensors_into(
    py: Python<'_>,
    path: PathBuf,
    names: Vec<String>,
    outs: Vec<numpy::PyReadwriteArray1<'_, u8>>,
) -> PyResult<()> {
    if names.len() != outs.len() {
        return Err(fail(format!(
            "{}: {} names but {} buffers",
            path.display(),
            names.len(),
            outs.len()
        )));
    }
    let (src, c) = open_at(&path)?;
    let mut outs = outs;
    let mut slices = Vec::with_capacity(outs.len());
    for (n, o) in names.iter().zip(outs.iter_mut()) {
        let s = o.as_slice_mut().map_err(|_| {
            fail(format!(
                "{}: the buffer for tensor {n:?} is not contiguous",
                path.display()
            ))
        })?;
        slices.push(s);
    }
    py.detach(|| -> Result<(), lmc_core::Error> {
        names
            .par_iter()
            .zip(slices.par_iter_mut())
            .map(|(n, s)| c.read_tensor_into_from(&*src, n, s))
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    })
    .map_err(|e| err(path.display(), e))
}

/// The layout of an input to compress, its pickles checked, through the
/// same rule as the CLI ([`lmc_files::detect_input`]).
pub(crate) fn layout_of(
    path: &Path,
    bytes: &[u8],
    dtype: Option<&str>,
    allow_pickle_calls: bool,
) -> PyResult<Vec<SegmentSpec>> {
    let dtype = dtype
        .map(lmc_files::parse_dtype)
        .transpose()
        .map_err(fail_with)?;
    let found =
        lmc_files::detect_input(path, bytes, dtype, allow_pickle_calls).map_err(fail_with)?;
    Ok(found.layout)
}

fn fail_with(e: lmc_files::InputError) -> PyErr {
    fail(e.to_string())
}

/// Refuses the bytes of an object DCP saved with `torch.save` (an item,
/// `what`) unless they are a `torch.save` file whose pickles pass lmc's rule
/// ([`lmc_files::check_saved_object`]), unless `allow_pickle_calls`: raises
/// `LmcError` naming `what`.
#[pyfunction]
#[pyo3(signature = (data, what, allow_pickle_calls=false))]
pub(crate) fn check_pickle(data: &[u8], what: &str, allow_pickle_calls: bool) -> PyResult<()> {
    lmc_files::check_saved_object(what, data, allow_pickle_calls).map_err(fail_with)
}

/// Cuts `bytes` into one slice per segment of `layout`.
pub(crate) fn tile<'a>(bytes: &'a [u8], layout: &[SegmentSpec]) -> Vec<&'a [u8]> {
    let mut parts = Vec::with_capacity(layout.len());
    let mut off = 0usize;
    for s in layout {
        parts.push(&bytes[off..off + s.len as usize]);
        off += s.len as usize;
    }
    parts
}

/// `lmc compress SRC -o DST [--dtype D] [--base B] [--chunk-size N] [--best]`.
#[pyfunction]
#[pyo3(signature = (src, dst, dtype=None, base=None, chunk_size=None, sync=false, best=false, allow_pickle_calls=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn compress_file<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    dtype: Option<String>,
    base: Option<PathBuf>,
    chunk_size: Option<usize>,
    sync: bool,
    best: bool,
    allow_pickle_calls: bool,
) -> PyResult<Bound<'py, PyDict>> {
    if src.is_dir() {
        if dtype.is_some() || base.is_some() {
            return Err(fail(format!(
                "{} is a directory: dtype= and base= apply to single files",
                src.display()
            )));
        }
        return compress_dir(py, &src, &dst, chunk_size, sync, best, allow_pickle_calls);
    }
    let bytes = read_file(&src)?;
    let layout = layout_of(&src, &bytes, dtype.as_deref(), allow_pickle_calls)?;
    let base = match &base {
        Some(b) => {
            let mut bb = read_file(b)?;
            if bb.starts_with(&lmc_core::format::MAGIC) {
                let c =
                    Container::open(&bb).map_err(|e| err(format!("base {}", b.display()), e))?;
                let mut v = Vec::with_capacity(c.header().original_len as usize);
                c.decompress_to(&mut v, &mut |_| true)
                    .map_err(|e| err(format!("base {}", b.display()), e))?;
                bb = v;
            }
            let bl = layout_of(b, &bb, dtype.as_deref(), true)?;
            Some((bb, bl))
        }
        None => None,
    };
    let delta = base
        .as_ref()
        .map(|(bb, bl)| DeltaBase::matching(bb, bl, &layout));
    let options = options(chunk_size, best);
    let summary = py
        .detach(|| {
            let parts = tile(&bytes, &layout);
            write_container(&dst, &parts, &layout, delta.as_ref(), &options, sync)
        })
        .map_err(fail)?;
    summary_dict(py, &summary)
}

/// `lmc compress DIR`: the directory as one container, through the same
/// stream and checks as the CLI ([`lmc_files::dir_stream`]).
fn compress_dir<'py>(
    py: Python<'py>,
    src: &Path,
    dst: &Path,
    chunk_size: Option<usize>,
    sync: bool,
    best: bool,
    allow_pickle_calls: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let options = options(chunk_size, best);
    let summary = py
        .detach(|| -> Result<_, String> {
            lmc_files::check_outside(src, dst).map_err(|e| e.to_string())?;
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| {
                    lmc_files::Error::Read(format!("cannot read {}: {e}", p.display()))
                })
            };
            let stream =
                lmc_files::dir_stream(src, allow_pickle_calls, read).map_err(|e| e.to_string())?;
            write_container(dst, &stream.parts(), &stream.layout, None, &options, sync)
        })
        .map_err(fail)?;
    summary_dict(py, &summary)
}

/// `lmc decompress SRC -o DST [--base B]`; a directory container is
/// restored as a directory (lmc-files' restore, the CLI's). SRC and DST may
/// be URLs: an object is read in ranges as it is decoded, and the output
/// uploaded as it is decoded, visible once every checksum and the
/// whole-file hash matched.
#[pyfunction]
#[pyo3(signature = (src, dst, base=None, sync=false))]
pub(crate) fn decompress_file(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    base: Option<PathBuf>,
    sync: bool,
) -> PyResult<u64> {
    let stored = py.detach(|| Stored::open(&src))?;
    let c = stored.container(&src)?;
    if lmc_files::is_tree_in(&c, stored.source().map(|s| s as &dyn lmc_core::ReadAt))
        .map_err(|e| named(&src, e))?
    {
        // A directory, restored as `lmc decompress --force` restores it (a
        // directory with something in it is never replaced).
        if let Some(b) = base {
            return Err(fail(format!(
                "{} holds a directory, which is never a delta; base={} is not needed",
                src.display(),
                b.display()
            )));
        }
        if url_of(&dst).is_some() {
            return Err(fail(format!(
                "{} holds a directory, which cannot go to a URL; give a local directory",
                src.display()
            )));
        }
        // A restore walks the whole stream: an object is read whole first.
        let bytes = match &stored {
            Stored::Bytes(_) => None,
            Stored::Object(o, _) => Some(
                py.detach(|| o.read_all())
                    .map_err(|e| fail(e.to_string()))?,
            ),
        };
        let c = match &bytes {
            Some(b) => Container::open(b).map_err(|e| err(src.display(), e))?,
            None => c,
        };
        let summary = py
            .detach(|| lmc_files::restore_tree(&src, &c, &dst, true, sync, &mut |_| true))
            .map_err(|e| fail(e.to_string()))?;
        return Ok(summary.stream_len);
    }
    let base = py.detach(|| base_bytes(&c, &src, base.as_deref()))?;
    let c = match &base {
        Some(b) => c.with_base(b).map_err(|e| named(&src, e))?,
        None => c,
    };
    py.detach(|| {
        write_decoded(&dst, sync, |w| {
            stored
                .decompress_to(&c, w)
                .map_err(|e| named(&src, e).to_string())
        })
    })
    .map_err(fail)?;
    Ok(c.header().original_len)
}

/// `lmc verify PATH [--base B]`: decodes everything, checks every checksum
/// and the whole-file hash, writes nothing. An object is read in ranges as
/// it is decoded.
#[pyfunction]
#[pyo3(signature = (path, base=None))]
pub(crate) fn verify<'py>(
    py: Python<'py>,
    path: PathBuf,
    base: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let stored = py.detach(|| Stored::open(&path))?;
    let c = stored.container(&path)?;
    let base = py.detach(|| base_bytes(&c, &path, base.as_deref()))?;
    let c = match &base {
        Some(b) => c.with_base(b).map_err(|e| named(&path, e))?,
        None => c,
    };
    py.detach(|| match stored.source() {
        None => c.verify(&mut |_| true),
        Some(_) => stored.decompress_to(&c, &mut std::io::sink()),
    })
    .map_err(|e| named(&path, e))?;
    let d = PyDict::new(py);
    d.set_item("version", c.header().version)?;
    d.set_item("original_len", c.header().original_len)?;
    d.set_item("compressed_len", stored.len())?;
    d.set_item(
        "original_hash",
        format!("{:032x}", c.header().original_hash),
    )?;
    d.set_item(
        "tensors",
        c.segments()
            .iter()
            .filter(|s| matches!(s.kind, SegmentKind::Tensor { .. }))
            .count(),
    )?;
    d.set_item("chunks", c.chunks().len())?;
    d.set_item("delta", c.base_ref().is_some())?;
    Ok(d)
}
