//! Snapshot stores (lmc-store), opened for each call so that several
//! processes can use one store in turn.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lmc_store::{Kind, Snapshot, Store, TensorInput};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::tensors::{Restored, TensorArg, dtype_named, loaded_from_vec};
use crate::{err, fail};

pub(crate) fn store_err(root: &Path) -> impl Fn(lmc_store::Error) -> PyErr + '_ {
    move |e| err(format!("store {}", root.display()), e)
}

/// Opens `root` for writing, creating it if it holds no store yet; an
/// existing store keeps its keyframe interval unless one is given.
pub(crate) fn open_for_writing(
    root: &Path,
    keyframe_every: Option<u32>,
) -> Result<Store, lmc_store::Error> {
    if root.join("manifest.json").exists() {
        match keyframe_every {
            Some(k) => Store::open_or_create(root, k),
            None => Store::open_mut(root),
        }
    } else {
        Store::create(
            root,
            keyframe_every.unwrap_or(lmc_store::DEFAULT_KEYFRAME_EVERY),
        )
    }
}

pub(crate) fn snapshot_dict<'py>(py: Python<'py>, s: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("step", s.step)?;
    d.set_item(
        "kind",
        match s.kind {
            Kind::File => "file",
            Kind::Dir => "dir",
        },
    )?;
    d.set_item("parent", s.parent)?;
    d.set_item("depth", s.depth)?;
    d.set_item("added", s.added)?;
    d.set_item("original_len", s.original_len())?;
    d.set_item("stored_len", s.stored_len())?;
    let files = PyList::empty(py);
    for f in &s.files {
        let fd = PyDict::new(py);
        fd.set_item("path", &f.path)?;
        fd.set_item("original_len", f.len)?;
        fd.set_item("stored_len", f.stored)?;
        fd.set_item("delta", f.base.is_some())?;
        files.append(fd)?;
    }
    d.set_item("files", files)?;
    Ok(d)
}

/// Adds tensors held in memory as a snapshot at `step` (one safetensors file
/// named `file_name`), a delta against the previous snapshot unless a
/// keyframe is due. Creates the store if needed.
#[pyfunction]
#[pyo3(signature = (root, step, file_name, tensors, metadata=None, keyframe_every=None, chunk_size=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_add<'py>(
    py: Python<'py>,
    root: PathBuf,
    step: u64,
    file_name: String,
    tensors: Vec<TensorArg<'py>>,
    metadata: Option<BTreeMap<String, String>>,
    keyframe_every: Option<u32>,
    chunk_size: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let metadata = metadata.unwrap_or_default();
    let mut inputs = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, bytes) in &tensors {
        inputs.push(TensorInput {
            name: name.clone(),
            dtype: dtype_named(dtype, name)?,
            shape: shape.clone(),
            data: bytes.as_bytes(),
        });
    }
    let snapshot = py
        .detach(|| -> Result<Snapshot, lmc_store::Error> {
            let mut store = open_for_writing(&root, keyframe_every)?;
            if let Some(c) = chunk_size {
                store.set_chunk_size(c);
            }
            Ok(store
                .add_tensors(step, &file_name, &inputs, &metadata)?
                .clone())
        })
        .map_err(store_err(&root))?;
    snapshot_dict(py, &snapshot)
}

/// The snapshots of a store, oldest first.
#[pyfunction]
pub(crate) fn store_list<'py>(py: Python<'py>, root: PathBuf) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let store = Store::open(&root).map_err(store_err(&root))?;
    store
        .snapshots()
        .iter()
        .map(|s| snapshot_dict(py, s))
        .collect()
}

/// Restores the one file of the snapshot at `step` (the last one if `None`):
/// `(step, metadata, tensor table, bytearray)`.
#[pyfunction]
#[pyo3(signature = (root, step=None))]
pub(crate) fn store_restore<'py>(
    py: Python<'py>,
    root: PathBuf,
    step: Option<u64>,
) -> PyResult<Restored<'py>> {
    let (step, files) = py
        .detach(|| -> Result<_, lmc_store::Error> {
            let store = Store::open(&root)?;
            let step = match step {
                Some(s) => s,
                None => {
                    store
                        .snapshots()
                        .last()
                        .ok_or_else(|| {
                            lmc_store::Error::Invalid("the store holds no snapshot".into())
                        })?
                        .step
                }
            };
            Ok((step, store.restore_files(step)?))
        })
        .map_err(store_err(&root))?;
    let [file] = files.as_slice() else {
        return Err(fail(format!(
            "store {}: the snapshot at step {step} is a directory of {} files; restore it with restore_to",
            root.display(),
            files.len()
        )));
    };
    let (meta, table, bytes) = loaded_from_vec(
        py,
        &file.bytes,
        &format!("store {} step {step} {}", root.display(), file.path),
    )?;
    Ok((step, meta, table, bytes))
}

/// Restores the snapshot at `step` to `out` (a file, or a directory of files).
#[pyfunction]
#[pyo3(signature = (root, step, out, overwrite=false))]
pub(crate) fn store_restore_to(
    py: Python<'_>,
    root: PathBuf,
    step: u64,
    out: PathBuf,
    overwrite: bool,
) -> PyResult<()> {
    py.detach(|| Store::open(&root)?.restore_to(step, &out, overwrite))
        .map_err(store_err(&root))
}

/// Decodes every snapshot and checks every hash:
/// `{"snapshots", "files", "bytes", "unreferenced"}`.
#[pyfunction]
pub(crate) fn store_verify<'py>(py: Python<'py>, root: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let report = py
        .detach(|| Store::open(&root)?.verify(&mut |_| {}))
        .map_err(store_err(&root))?;
    let d = PyDict::new(py);
    d.set_item("snapshots", report.snapshots)?;
    d.set_item("files", report.files)?;
    d.set_item("bytes", report.bytes)?;
    d.set_item("unreferenced", report.unreferenced)?;
    Ok(d)
}

/// Keeps the last `keep_last` snapshots (and those whose step is a multiple
/// of `keep_every`), re-encoding what must be so every chain stays whole.
#[pyfunction]
#[pyo3(signature = (root, keep_last, keep_every=None))]
pub(crate) fn store_prune<'py>(
    py: Python<'py>,
    root: PathBuf,
    keep_last: usize,
    keep_every: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let report = py
        .detach(|| Store::open_mut(&root)?.prune(keep_last, keep_every))
        .map_err(store_err(&root))?;
    let d = PyDict::new(py);
    d.set_item("removed", report.removed)?;
    d.set_item("rebuilt", report.rebuilt)?;
    d.set_item("stored_before", report.stored_before)?;
    d.set_item("stored_after", report.stored_after)?;
    Ok(d)
}
