//! lmc-py: the native half of the `lmc` Python package (`lmc._lmc`).
//!
//! A thin layer over the library crates, in the spirit of the safetensors
//! bindings: Python hands over tensors as `(name, dtype, shape, bytes)`
//! tuples and gets files back as one `bytearray` plus a table of where each
//! tensor lies in it; turning those into NumPy arrays or torch tensors is
//! done in Python (`python/lmc/`). Every function releases the GIL while
//! Rust reads, codes or writes, so other Python threads (a training loop
//! during `dcp.async_save`) keep running.
//!
//! Files written here are the CLI's files: a `.lmc` container whose
//! original file is a safetensors file (header, then the tensors in the
//! order given), so `lmc decompress` gives that safetensors file back and
//! `load` reads what `lmc compress` wrote.
//!
//! Every failure is raised as `lmc.LmcError` with the Rust message.
//!
//! - [`tensors`]: tensor tuples laid out as a safetensors file; decoded files
//!   described as where each tensor lies.
//! - [`io`]: atomic writes, inputs and delta bases.
//! - [`files`]: `save_tensors`, `load`, `compress_file`, `decompress_file`, `verify`.
//! - [`store`]: snapshot stores (`lmc snapshot`).

#![forbid(unsafe_code)]

mod files;
mod io;
mod remote;
mod store;
mod tensors;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    lmc,
    LmcError,
    PyException,
    "Raised for every failure inside lmc: a missing or unreadable file, a damaged or \
     foreign container, a wrong delta base, an unsupported dtype, a store that is locked \
     or has no such step. The message is lmc's own (the same as the CLI prints)."
);

/// Turns any displayable error into an `LmcError` with `context: message`.
pub(crate) fn err(context: impl std::fmt::Display, e: impl std::fmt::Display) -> PyErr {
    LmcError::new_err(format!("{context}: {e}"))
}

pub(crate) fn fail(message: impl Into<String>) -> PyErr {
    LmcError::new_err(message.into())
}

/// The native module; `lmc/__init__.py` re-exports what users call.
#[pymodule]
fn _lmc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("LmcError", m.py().get_type::<LmcError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(files::save_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(files::load, m)?)?;
    m.add_function(wrap_pyfunction!(files::read_metadata, m)?)?;
    m.add_function(wrap_pyfunction!(files::read_tensors, m)?)?;
    m.add_class::<files::Reader>()?;
    m.add_function(wrap_pyfunction!(files::read_tensors_into, m)?)?;
    m.add_function(wrap_pyfunction!(files::compress_file, m)?)?;
    m.add_function(wrap_pyfunction!(files::decompress_file, m)?)?;
    m.add_function(wrap_pyfunction!(files::verify, m)?)?;
    m.add_function(wrap_pyfunction!(files::check_pickle, m)?)?;
    m.add_function(wrap_pyfunction!(store::store_add, m)?)?;
    m.add_function(wrap_pyfunction!(store::store_add_background, m)?)?;
    m.add_function(wrap_pyfunction!(store::store_finish, m)?)?;
    m.add_class::<store::PendingAdd>()?;
    m.add_function(wrap_pyfunction!(store::store_list, m)?)?;
    m.add_function(wrap_pyfunction!(store::store_restore, m)?)?;
    m.add_function(wrap_pyfunction!(store::store_whole_file, m)?)?;
    m.add_function(wrap_pyfunction!(store::store_restore_to, m)?)?;
    m.add_function(wrap_pyfunction!(store::store_verify, m)?)?;
    m.add_function(wrap_pyfunction!(store::store_prune, m)?)?;
    m.add_function(wrap_pyfunction!(store::store_remove, m)?)?;
    m.add_function(wrap_pyfunction!(remote::remote_get, m)?)?;
    m.add_function(wrap_pyfunction!(remote::remote_put, m)?)?;
    m.add_function(wrap_pyfunction!(remote::remote_upload, m)?)?;
    m.add_function(wrap_pyfunction!(remote::remote_list, m)?)?;
    m.add_function(wrap_pyfunction!(remote::remote_delete, m)?)?;
    Ok(())
}
