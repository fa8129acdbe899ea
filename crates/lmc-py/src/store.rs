//! Snapshot stores (lmc-store), opened for each call: readers take no lock
//! and work while a writer is at work; writers take turns, each waiting for
//! the one before as long as its `timeout` says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lmc_store::{
    AddHandle, FinishHandle, Kind, PruneReport, Snapshot, Store, TensorInput, Wait, WriteOptions,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::tensors::{Restored, TensorArg, dtype_named, loaded_from_vec};
use crate::{err, fail};

pub(crate) fn store_err(root: &Path) -> impl Fn(lmc_store::Error) -> PyErr + '_ {
    move |e| err(format!("store {}", root.display()), e)
}

/// How long a writing call waits for another writer: `timeout` seconds,
/// `None` for as long as it takes (Python's convention), 0 not at all.
pub(crate) fn wait_for(timeout: Option<f64>) -> PyResult<Wait> {
    match timeout {
        None => Ok(Wait::Forever),
        Some(0.0) => Ok(Wait::No),
        Some(t) if t.is_finite() && t > 0.0 => {
            Ok(Wait::For(std::time::Duration::from_secs_f64(t.min(1e9))))
        }
        Some(t) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be None or a number of seconds, 0 or more, not {t}"
        ))),
    }
}

/// Opens `root` for writing (waiting as `wait` says), creating it if
/// `create` and it holds no store yet; an existing store keeps its keyframe
/// interval unless one is given.
pub(crate) fn open_for_writing(
    root: &Path,
    create: bool,
    keyframe_every: Option<u32>,
    wait: Wait,
) -> Result<Store, lmc_store::Error> {
    // This process's own re-encoding of the store goes first (it holds the
    // writer lock). Its error, if any, leaves its snapshots marked: the
    // work is tried again by this writer or the next deferred add.
    for (r, e) in join_finishing(Some(root)) {
        eprintln!(
            "lmc: warning: store {}: the background re-encoding failed ({e}); \
             the next writer tries again",
            r.display()
        );
    }
    let mut options = WriteOptions::new().create(create).wait(wait);
    if let Some(k) = keyframe_every {
        options = options.keyframe_every(k);
    }
    options.open(root, &mut || {})
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
        // Other files of the snapshot its derived tensors come from.
        fd.set_item("sources", &f.sources)?;
        files.append(fd)?;
    }
    d.set_item("files", files)?;
    Ok(d)
}

/// Adds tensors held in memory as a snapshot at `step` (one safetensors file
/// named `file_name`), stored whole; the previous snapshot becomes a delta
/// against it unless its chain is at the bound. Creates the store if
/// needed. Waits for another writer for up to `timeout` seconds (`None`:
/// as long as it takes).
#[pyfunction]
#[pyo3(signature = (root, step, file_name, tensors, metadata=None, keyframe_every=None, chunk_size=None, timeout=0.0, defer=false))]
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
    timeout: Option<f64>,
    defer: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let wait = wait_for(timeout)?;
    let metadata = metadata.unwrap_or_default();
    let inputs = tensor_inputs(&tensors)?;
    let snapshot = py
        .detach(|| -> Result<Snapshot, lmc_store::Error> {
            let mut store = open_for_writing(&root, true, keyframe_every, wait)?;
            if let Some(c) = chunk_size {
                store.set_chunk_size(c);
            }
            if !defer {
                return Ok(store
                    .add_tensors(step, &file_name, &inputs, &metadata)?
                    .clone());
            }
            let added = store
                .add_tensors_deferred(step, &file_name, &inputs, &metadata)?
                .clone();
            if store.snapshots().iter().any(|s| s.deferred) {
                let handle = store.finish_deferred_background();
                FINISHING
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Finishing {
                        root: store_key(&root),
                        pid: std::process::id(),
                        handle,
                    });
            }
            Ok(added)
        })
        .map_err(store_err(&root))?;
    snapshot_dict(py, &snapshot)
}

/// The store's view of the tensors Python passed, their dtypes checked.
fn tensor_inputs<'a>(tensors: &'a [TensorArg<'_>]) -> PyResult<Vec<TensorInput<'a>>> {
    tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok(TensorInput {
                name: name.clone(),
                dtype: dtype_named(dtype, name)?,
                shape: shape.clone(),
                data: bytes.as_bytes(),
            })
        })
        .collect()
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

/// The path of the object that holds the snapshot at `step` (default: the
/// newest) whole, if it is one file stored whole: a plain container that
/// `read_tensors_into` can decode in place. `None` for a delta or a
/// directory snapshot. For a store in object storage, the object's URL (a
/// `str`: a `pathlib.Path` would fold its `//`).
#[pyfunction]
#[pyo3(signature = (root, step=None))]
pub(crate) fn store_whole_file<'py>(
    py: Python<'py>,
    root: PathBuf,
    step: Option<u64>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let found = py
        .detach(|| -> Result<_, lmc_store::Error> {
            let store = Store::open(&root)?;
            let step = match step {
                Some(s) => s,
                None => match store.snapshots().last() {
                    Some(s) => s.step,
                    None => return Ok(None),
                },
            };
            Ok(store.whole_file(step)?.map(|p| (p, store.is_remote())))
        })
        .map_err(store_err(&root))?;
    Ok(match found {
        None => None,
        Some((p, true)) => Some(p.to_string_lossy().into_pyobject(py)?.into_any()),
        Some((p, false)) => Some(p.into_pyobject(py)?.into_any()),
    })
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

fn prune_dict<'py>(py: Python<'py>, report: PruneReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("removed", report.removed)?;
    d.set_item("rebuilt", report.rebuilt)?;
    d.set_item("stored_before", report.stored_before)?;
    d.set_item("stored_after", report.stored_after)?;
    Ok(d)
}

/// Keeps the last `keep_last` snapshots (and those whose step is a multiple
/// of `keep_every`), re-encoding what must be so every chain stays whole.
#[pyfunction]
#[pyo3(signature = (root, keep_last, keep_every=None, timeout=0.0))]
pub(crate) fn store_prune<'py>(
    py: Python<'py>,
    root: PathBuf,
    keep_last: usize,
    keep_every: Option<u64>,
    timeout: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let wait = wait_for(timeout)?;
    let report = py
        .detach(|| open_for_writing(&root, false, None, wait)?.prune(keep_last, keep_every))
        .map_err(store_err(&root))?;
    prune_dict(py, report)
}

/// Removes the snapshot at `step`, re-encoding the one coded against it.
#[pyfunction]
#[pyo3(signature = (root, step, timeout=0.0))]
pub(crate) fn store_remove<'py>(
    py: Python<'py>,
    root: PathBuf,
    step: u64,
    timeout: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let wait = wait_for(timeout)?;
    let report = py
        .detach(|| open_for_writing(&root, false, None, wait)?.remove(step))
        .map_err(store_err(&root))?;
    prune_dict(py, report)
}

/// An add at work on another thread ([`store_add_background`]).
#[pyclass(module = "lmc._lmc")]
pub(crate) struct PendingAdd {
    root: PathBuf,
    handle: std::sync::Mutex<Option<AddHandle>>,
}

#[pymethods]
impl PendingAdd {
    /// Whether the add has finished (`wait` would not block).
    fn done(&self) -> bool {
        self.handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(AddHandle::is_finished)
    }

    /// Waits (without the GIL) for the add to finish: the snapshot as
    /// `store_list` describes it, or the add's error. Once only.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| fail("this add was already waited for".to_string()))?;
        let snapshot = py
            .detach(move || {
                let (store, result) = handle.wait();
                // The writer lock goes with the store, here, not later.
                drop(store);
                result
            })
            .map_err(store_err(&self.root))?;
        snapshot_dict(py, &snapshot)
    }
}

/// The background re-encodings ([`Store::finish_deferred_background`])
/// this process started, by store. A child made by `fork` inherits the
/// list but not the threads: it skips what its parent started.
static FINISHING: std::sync::Mutex<Vec<Finishing>> = std::sync::Mutex::new(Vec::new());

struct Finishing {
    root: PathBuf,
    pid: u32,
    handle: FinishHandle,
}

/// The path a store is known by in [`FINISHING`].
fn store_key(root: &Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
}

/// Waits for this process's background re-encodings of `root` (of every
/// store if `None`); the errors, by store.
fn join_finishing(root: Option<&Path>) -> Vec<(PathBuf, lmc_store::Error)> {
    let key = root.map(store_key);
    let mine: Vec<Finishing> = {
        let mut all = FINISHING.lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        let (ours, inherited): (Vec<_>, Vec<_>) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|f| f.pid == pid);
        // Dropping a handle joins its thread, which a forked child lacks.
        inherited.into_iter().for_each(std::mem::forget);
        let (mine, rest) = ours
            .into_iter()
            .partition(|f| key.as_ref().is_none_or(|k| *k == f.root));
        *all = rest;
        mine
    };
    mine.into_iter()
        .filter_map(|f| f.handle.wait().1.err().map(|e| (f.root, e)))
        .collect()
}

/// Waits, without the GIL, for the re-encoding that deferred adds of this
/// process left running in the background (of the store at `root`, or of
/// every store); raises the first error.
#[pyfunction]
#[pyo3(signature = (root=None))]
pub(crate) fn store_finish(py: Python<'_>, root: Option<PathBuf>) -> PyResult<()> {
    let errors = py.detach(|| join_finishing(root.as_deref()));
    match errors.into_iter().next() {
        Some((r, e)) => Err(store_err(&r)(e)),
        None => Ok(()),
    }
}

/// [`store_add`] that returns once the tensors are copied: the store is
/// opened (waiting for another writer as `timeout` says, without the GIL),
/// the tensors are copied into one buffer, and the snapshot is coded and
/// committed on another thread (`Store::add_tensors_background`).
#[pyfunction]
#[pyo3(signature = (root, step, file_name, tensors, metadata=None, keyframe_every=None, chunk_size=None, timeout=0.0))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_add_background<'py>(
    py: Python<'py>,
    root: PathBuf,
    step: u64,
    file_name: String,
    tensors: Vec<TensorArg<'py>>,
    metadata: Option<BTreeMap<String, String>>,
    keyframe_every: Option<u32>,
    chunk_size: Option<usize>,
    timeout: Option<f64>,
) -> PyResult<PendingAdd> {
    let wait = wait_for(timeout)?;
    let metadata = metadata.unwrap_or_default();
    let inputs = tensor_inputs(&tensors)?;
    let mut store = py
        .detach(|| open_for_writing(&root, true, keyframe_every, wait))
        .map_err(store_err(&root))?;
    if let Some(c) = chunk_size {
        store.set_chunk_size(c);
    }
    // The copy is made here, while the caller's bytes are certainly alive.
    let handle = store.add_tensors_background(step, &file_name, &inputs, &metadata);
    Ok(PendingAdd {
        root,
        handle: std::sync::Mutex::new(Some(handle)),
    })
}
