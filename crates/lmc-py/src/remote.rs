//! Plain objects in object storage, for the DCP writer and reader on a URL
//! (`lmc.torch`): a rank's file uploaded once it is complete, `.metadata`
//! written and read whole, the objects of a checkpoint listed and the ones
//! a new save replaced deleted. Each error names the URL.

use std::io::Write;
use std::path::PathBuf;

use lmc_remote::{Location, Put, Upload};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::fail;

fn location(url: &str) -> PyResult<Location> {
    Location::parse(url).map_err(|e| fail(e.to_string()))
}

/// The whole object at `url`, or `None` if there is none.
#[pyfunction]
pub(crate) fn remote_get<'py>(
    py: Python<'py>,
    url: String,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let got = py.detach(|| location(&url)?.get().map_err(|e| fail(e.to_string())))?;
    Ok(got.map(|(bytes, _)| PyBytes::new(py, &bytes)))
}

/// Writes `data` as the object at `url` in one request: it appears whole
/// or not at all, replacing any object there.
#[pyfunction]
pub(crate) fn remote_put(py: Python<'_>, url: String, data: Vec<u8>) -> PyResult<()> {
    py.detach(|| {
        location(&url)?
            .put(&data, Put::Overwrite)
            .map(|_| ())
            .map_err(|e| fail(e.to_string()))
    })
}

/// Uploads the local file `path` as the object at `url` (a multipart
/// upload: nothing appears under the key until the whole file is there).
#[pyfunction]
pub(crate) fn remote_upload(py: Python<'_>, path: PathBuf, url: String) -> PyResult<()> {
    py.detach(|| {
        let mut file = std::fs::File::open(&path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        let mut up = Upload::to(location(&url)?).map_err(|e| fail(e.to_string()))?;
        std::io::copy(&mut file, &mut up)
            .and_then(|_| up.flush())
            .map_err(|e| fail(format!("cannot upload {} to {url}: {e}", path.display())))?;
        up.finish().map_err(|e| fail(e.to_string()))
    })
}

/// The keys of the objects below `url`, relative to it.
#[pyfunction]
pub(crate) fn remote_list(py: Python<'_>, url: String) -> PyResult<Vec<String>> {
    py.detach(|| {
        let found = location(&url)?.list().map_err(|e| fail(e.to_string()))?;
        Ok(found.into_iter().map(|(k, _)| k).collect())
    })
}

/// Deletes the object at `url`; one already gone is no error.
#[pyfunction]
pub(crate) fn remote_delete(py: Python<'_>, url: String) -> PyResult<()> {
    py.detach(|| match location(&url)?.delete() {
        Err(e) if !e.is_not_found() => Err(fail(e.to_string())),
        _ => Ok(()),
    })
}
