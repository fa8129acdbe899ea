//! safetensors files (<https://github.com/huggingface/safetensors>).
//!
//! ```text
//! | u64 LE: N | N bytes of JSON header | data section |
//! ```
//! The header and its length prefix become one byte segment kept exactly as
//! written (spacing, key order, `__metadata__`); each tensor's data becomes
//! a tensor segment, in data-offset order. The reference parser (the
//! `safetensors` crate) checks the header: offsets that tile the data
//! section with no holes or overlaps, sizes that match shapes, the 100 MB
//! header cap, and a data section that ends exactly at the end of the file.

use lmc_core::{Dtype, SegmentKind, SegmentSpec};
use safetensors::SafeTensors;

use crate::Error;

/// Whether `bytes` start like a safetensors file: a plausible header length
/// followed by `{`.
pub fn looks_like(bytes: &[u8]) -> bool {
    let Some(n) = bytes.get(..8) else {
        return false;
    };
    let n = u64::from_le_bytes(n.try_into().unwrap());
    n >= 2 && n <= bytes.len() as u64 - 8 && bytes.get(8) == Some(&b'{')
}

/// Maps a safetensors dtype to ours. Types we do not split into planes
/// (sub-byte floats, complex, exotic FP8 variants) are stored as bytes.
fn dtype(d: safetensors::Dtype) -> Option<Dtype> {
    use safetensors::Dtype as S;
    Some(match d {
        S::BOOL => Dtype::Bool,
        S::U8 => Dtype::U8,
        S::I8 => Dtype::I8,
        S::F8_E5M2 => Dtype::F8E5M2,
        S::F8_E4M3 => Dtype::F8E4M3,
        S::I16 => Dtype::I16,
        S::U16 => Dtype::U16,
        S::F16 => Dtype::F16,
        S::BF16 => Dtype::BF16,
        S::I32 => Dtype::I32,
        S::U32 => Dtype::U32,
        S::F32 => Dtype::F32,
        S::F64 => Dtype::F64,
        S::I64 => Dtype::I64,
        S::U64 => Dtype::U64,
        _ => return None,
    })
}

/// The safetensors crate's error as ours: the tensor it names apart (and
/// quoted short), any other message cut short, since serde's can quote
/// a hostile header's strings whole.
fn refused(bytes: &[u8], e: safetensors::SafeTensorError) -> Error {
    use safetensors::SafeTensorError as E;
    match e {
        E::InvalidOffset(tensor) => Error::SafetensorsTensor {
            offset: data_start(bytes, &tensor),
            tensor,
            detail: "its data offsets do not start where the previous tensor's end, or end before they start".into(),
        },
        E::TensorNotFound(tensor) => Error::SafetensorsTensor {
            tensor,
            offset: None,
            detail: "not found".into(),
        },
        e => Error::Safetensors(crate::bounded(e.to_string())),
    }
}

/// Where the header puts `tensor`'s data in the file, if it can be read
/// (only for a message: the header was already refused).
fn data_start(bytes: &[u8], tensor: &str) -> Option<u64> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..usize::try_from(n).ok()?.checked_add(8)?)?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    let start = map.get(tensor)?.get("data_offsets")?.get(0)?.as_u64()?;
    (8 + n).checked_add(start)
}

/// The layout of a safetensors file.
pub fn layout(bytes: &[u8]) -> Result<Vec<SegmentSpec>, Error> {
    let (n, meta) = SafeTensors::read_metadata(bytes).map_err(|e| refused(bytes, e))?;
    let mut layout = vec![SegmentSpec {
        kind: SegmentKind::Bytes,
        len: 8 + n as u64,
    }];
    let infos = meta.tensors();
    for name in meta.offset_keys() {
        let info = infos[&name];
        let (start, end) = info.data_offsets;
        let len = (end - start) as u64;
        let kind = match dtype(info.dtype) {
            Some(dtype) => SegmentKind::Tensor {
                name,
                dtype,
                shape: info.shape.iter().map(|&d| d as u64).collect(),
            },
            None => SegmentKind::Bytes,
        };
        layout.push(SegmentSpec { kind, len });
    }
    Ok(layout)
}

/// The `__metadata__` of a safetensors file (empty when it has none).
pub fn metadata(bytes: &[u8]) -> Result<std::collections::HashMap<String, String>, Error> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| refused(bytes, e))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// A tensor to write: name, dtype, shape (its bytes are given separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
}

/// The start of a safetensors file holding `tensors` in the given order
/// (data back to back, no gaps) and `metadata`: the 8-byte header length
/// and the JSON header, padded with spaces to a multiple of 8 bytes as the
/// reference writer does. Followed by the tensors' bytes in order, it is a
/// complete file; [`layout`] of that file gives the header as one byte
/// segment and the tensors in this order.
pub fn header(
    tensors: &[TensorInfo],
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>, Error> {
    use serde_json::{Map, Value, json};
    let mut map = Map::new();
    if !metadata.is_empty() {
        map.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0u64;
    for t in tensors {
        if t.name == "__metadata__" || map.contains_key(&t.name) {
            return Err(Error::Invalid(format!(
                "tensor name {} is reserved or used twice",
                lmc_core::error::quote_name(&t.name)
            )));
        }
        let len = t
            .shape
            .iter()
            .try_fold(t.dtype.width() as u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "tensor {}: shape overflows",
                    lmc_core::error::quote_name(&t.name)
                ))
            })?;
        map.insert(
            t.name.clone(),
            json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut text = serde_json::to_string(&Value::Object(map))
        .map_err(|e| Error::Invalid(format!("cannot write the header: {e}")))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn layout_follows_data_offsets() {
        let h = r#"{"b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"x":"y"}}  "#;
        let f = file(h, &[0; 8]);
        assert!(looks_like(&f));
        let l = layout(&f).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].len, 8 + h.len() as u64);
        assert!(
            matches!(&l[1].kind, SegmentKind::Tensor { name, dtype: Dtype::F32, .. } if name == "a")
        );
        assert!(
            matches!(&l[2].kind, SegmentKind::Tensor { name, dtype: Dtype::BF16, .. } if name == "b")
        );
    }

    #[test]
    fn written_headers_read_back() {
        let tensors = vec![
            TensorInfo {
                name: "z.weight".into(),
                dtype: Dtype::BF16,
                shape: vec![2, 3],
            },
            TensorInfo {
                name: "a.bias".into(),
                dtype: Dtype::F32,
                shape: vec![3],
            },
        ];
        let meta = [("step".to_string(), "42".to_string())]
            .into_iter()
            .collect();
        let mut f = header(&tensors, &meta).unwrap();
        assert_eq!(f.len() % 8, 0);
        let data: Vec<u8> = (0..24).collect();
        f.extend_from_slice(&data);
        let st = SafeTensors::deserialize(&f).unwrap();
        assert_eq!(st.tensor("z.weight").unwrap().data(), &data[..12]);
        assert_eq!(st.tensor("a.bias").unwrap().data(), &data[12..]);
        assert_eq!(metadata(&f).unwrap()["step"], "42");
        let l = layout(&f).unwrap();
        assert!(matches!(&l[1].kind, SegmentKind::Tensor { name, .. } if name == "z.weight"));
        let dup = vec![tensors[0].clone(), tensors[0].clone()];
        assert!(header(&dup, &meta).is_err());
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(layout(b"").is_err());
        assert!(layout(&file("{", &[])).is_err());
        // Data section longer than the tensors.
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        assert!(layout(&file(h, &[0; 5])).is_err());
        // A hole between tensors.
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        assert!(matches!(
            layout(&file(h, &[0; 12])),
            Err(Error::SafetensorsTensor { tensor, offset: Some(o), .. })
                if tensor == "b" && o == 8 + h.len() as u64 + 8
        ));
        // Hostile strings are not echoed whole: a long tensor name, a long
        // unknown dtype (serde quotes it).
        let long = "x".repeat(70_000);
        let hl = format!(
            r#"{{"a":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}},"{long}":{{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}}}"#
        );
        let e = layout(&file(&hl, &[0; 12])).unwrap_err().to_string();
        assert!(e.len() < 500 && e.contains("(70000 bytes)"), "{e}");
        let hl = format!(r#"{{"a":{{"dtype":"{long}","shape":[1],"data_offsets":[0,4]}}}}"#);
        let e = layout(&file(&hl, &[0; 4])).unwrap_err().to_string();
        assert!(e.len() < 500 && e.contains("bytes)"), "{e}");
        // Header length beyond the file.
        let mut f = file(h, &[0; 12]);
        f[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(!looks_like(&f));
        assert!(layout(&f).is_err());
    }
}
