//! Tensors both ways: the tuples Python passes, laid out as one safetensors
//! file to compress; and a decoded file described as where each tensor lies.

use std::collections::BTreeMap;

use lmc_core::{Dtype, SegmentKind, SegmentSpec};
use lmc_tensors::safetensors::TensorInfo;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use crate::{err, fail};

/// A tensor as Python passes it: name, safetensors dtype name, shape, bytes.
pub(crate) type TensorArg<'py> = (String, String, Vec<u64>, Bound<'py, PyBytes>);

/// The tensors of one safetensors file to write: its header and layout, and
/// the tensors' bytes, borrowed from the Python `bytes` objects.
pub(crate) struct FilePlan<'a> {
    header: Vec<u8>,
    pub(crate) layout: Vec<SegmentSpec>,
    data: Vec<&'a [u8]>,
}

impl FilePlan<'_> {
    pub(crate) fn parts(&self) -> Vec<&[u8]> {
        let mut parts = Vec::with_capacity(self.data.len() + 1);
        parts.push(self.header.as_slice());
        parts.extend(self.data.iter().copied());
        parts
    }
}

pub(crate) fn dtype_named(name: &str, tensor: &str) -> PyResult<Dtype> {
    Dtype::from_name(name).ok_or_else(|| {
        fail(format!(
            "tensor {tensor:?}: dtype {name:?} is not supported (lmc stores BOOL, U8, I8, \
             F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64)"
        ))
    })
}

/// Checks the tensors and lays them out as one safetensors file.
pub(crate) fn plan_file<'a>(
    tensors: &'a [TensorArg<'_>],
    metadata: &BTreeMap<String, String>,
) -> PyResult<FilePlan<'a>> {
    let mut infos = Vec::with_capacity(tensors.len());
    let mut data = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, bytes) in tensors {
        let dtype = dtype_named(dtype, name)?;
        let bytes = bytes.as_bytes();
        let want = shape
            .iter()
            .try_fold(dtype.width() as u64, |a, &d| a.checked_mul(d));
        if want != Some(bytes.len() as u64) {
            return Err(fail(format!(
                "tensor {name:?}: {} bytes of data for shape {shape:?} of {dtype}",
                bytes.len()
            )));
        }
        infos.push(TensorInfo {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
        });
        data.push(bytes);
    }
    let header = lmc_tensors::safetensors::header(&infos, metadata)
        .map_err(|e| fail(format!("cannot write the safetensors header: {e}")))?;
    let mut layout = Vec::with_capacity(infos.len() + 1);
    layout.push(SegmentSpec {
        kind: SegmentKind::Bytes,
        len: header.len() as u64,
    });
    for (info, bytes) in infos.into_iter().zip(&data) {
        layout.push(SegmentSpec {
            kind: SegmentKind::Tensor {
                name: info.name,
                dtype: info.dtype,
                shape: info.shape,
            },
            len: bytes.len() as u64,
        });
    }
    Ok(FilePlan {
        header,
        layout,
        data,
    })
}

/// One tensor of a decoded file: where its bytes are.
pub(crate) struct TensorSpan {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    start: usize,
    end: usize,
}

/// What a decoded file holds: its safetensors `__metadata__` and tensors, or,
/// for a file that is not safetensors (a raw array compressed with
/// `lmc compress --dtype`), the tensors the container names.
pub(crate) fn describe(
    bytes: &[u8],
    segments: &[lmc_core::format::Segment],
) -> Result<(BTreeMap<String, String>, Vec<TensorSpan>), String> {
    if lmc_tensors::safetensors::looks_like(bytes) {
        let (n, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| format!("not a valid safetensors file: {e}"))?;
        let base = 8 + n;
        let infos = meta.tensors();
        let spans = meta
            .offset_keys()
            .into_iter()
            .map(|name| {
                let info = infos[&name];
                TensorSpan {
                    dtype: format!("{:?}", info.dtype),
                    shape: info.shape.iter().map(|&d| d as u64).collect(),
                    start: base + info.data_offsets.0,
                    end: base + info.data_offsets.1,
                    name,
                }
            })
            .collect();
        let metadata = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        return Ok((metadata, spans));
    }
    let spans = segments
        .iter()
        .filter_map(|s| match &s.kind {
            SegmentKind::Tensor { name, dtype, shape } => Some(TensorSpan {
                name: name.clone(),
                dtype: dtype.name().to_string(),
                shape: shape.clone(),
                start: s.offset as usize,
                end: (s.offset + s.len) as usize,
            }),
            SegmentKind::Bytes => None,
        })
        .collect();
    Ok((BTreeMap::new(), spans))
}

/// Where a tensor lies in a decoded file: `(name, dtype, shape, start, end)`.
pub(crate) type Span = (String, String, Vec<u64>, usize, usize);

/// `(metadata, spans, bytearray)` for Python.
pub(crate) type Loaded<'py> = (BTreeMap<String, String>, Vec<Span>, Bound<'py, PyByteArray>);

/// A restored snapshot: `(step, metadata, spans, bytearray)`.
pub(crate) type Restored<'py> = (
    u64,
    BTreeMap<String, String>,
    Vec<Span>,
    Bound<'py, PyByteArray>,
);

pub(crate) fn loaded<'py>(
    meta: BTreeMap<String, String>,
    spans: Vec<TensorSpan>,
    bytes: Bound<'py, PyByteArray>,
) -> Loaded<'py> {
    let table = spans
        .into_iter()
        .map(|t| (t.name, t.dtype, t.shape, t.start, t.end))
        .collect();
    (meta, table, bytes)
}

/// Describes a file already in memory and copies it into a `bytearray`.
pub(crate) fn loaded_from_vec<'py>(
    py: Python<'py>,
    bytes: &[u8],
    what: &str,
) -> PyResult<Loaded<'py>> {
    let (meta, spans) = describe(bytes, &[]).map_err(|e| err(what, e))?;
    Ok(loaded(meta, spans, PyByteArray::new(py, bytes)))
}
