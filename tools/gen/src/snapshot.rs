//! Writing safetensors files, and the BF16 rounding of the weights.
//!
//! The safetensors layout (huggingface/safetensors): an 8-byte little-endian
//! header length, a JSON header (`__metadata__` with string values, then per
//! tensor its dtype, shape and `[begin, end)` byte offsets into the data),
//! padded with spaces to a multiple of 8, then the tensor bytes. This writer
//! is our own rather than the `safetensors` crate's because that one writes
//! `__metadata__` in hash order, which would make two identical runs differ
//! in bytes. Here tensors are stored in name order and metadata keys sorted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// Header padding, as the reference writer does.
const HEADER_ALIGN: usize = 8;

/// One tensor to write: its safetensors dtype name, shape and little-endian bytes.
#[derive(Debug, Clone)]
pub struct TensorBytes {
    /// Tensor name, e.g. `layers.0.attn.q_proj.weight`.
    pub name: String,
    /// `"BF16"`, `"F32"` or `"I64"`.
    pub dtype: &'static str,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// The elements, little-endian, row-major.
    pub data: Vec<u8>,
}

impl TensorBytes {
    /// An fp32 tensor.
    pub fn f32(name: impl Into<String>, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.into(),
            dtype: "F32",
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// A BF16 tensor rounded from fp32 values (see [`bf16_bits`]).
    pub fn bf16_from_f32(name: impl Into<String>, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.into(),
            dtype: "BF16",
            shape: shape.to_vec(),
            data: values
                .iter()
                .flat_map(|&v| bf16_bits(v).to_le_bytes())
                .collect(),
        }
    }
}

/// BF16 bits of `x`, rounded to nearest with ties to even, as PyTorch's
/// `tensor.to(torch.bfloat16)` does. Overflow rounds to infinity; a NaN stays
/// a NaN with its sign and top payload bits (made quiet, so it cannot turn
/// into an infinity by truncation).
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x0040;
    }
    // Adding 0x7FFF plus the lowest kept bit rounds half to even; the carry
    // may ripple into the exponent, which is exactly rounding up.
    let round = 0x7FFF + ((bits >> 16) & 1);
    ((bits + round) >> 16) as u16
}

/// Writes a safetensors file atomically (a `.part` file renamed into place).
pub fn write_safetensors(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    mut tensors: Vec<TensorBytes>,
) -> Result<()> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));

    let mut header = String::from("{\"__metadata__\":{");
    for (i, (key, value)) in metadata.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        let _ = write!(header, "{}:{}", json_string(key), json_string(value));
    }
    header.push('}');
    let mut offset = 0usize;
    for t in &tensors {
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        let end = offset + t.data.len();
        let _ = write!(
            header,
            ",{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json_string(&t.name),
            t.dtype,
            shape.join(",")
        );
        offset = end;
    }
    header.push('}');
    while header.len() % HEADER_ALIGN != 0 {
        header.push(' ');
    }

    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for t in &tensors {
        bytes.extend_from_slice(&t.data);
    }

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let part = path.with_extension("safetensors.part");
    std::fs::write(&part, &bytes).with_context(|| format!("cannot write {}", part.display()))?;
    std::fs::rename(&part, path)
        .with_context(|| format!("cannot rename {} into place", part.display()))
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (down).
        assert_eq!(bf16_bits(f32::from_bits(0x3F80_8000)), 0x3F80);
        // 1 + 3 * 2^-8 is halfway, odd below: rounds up.
        assert_eq!(bf16_bits(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(bf16_bits(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(bf16_bits(-0.0), 0x8000);
        assert_eq!(bf16_bits(f32::INFINITY), 0x7F80);
        assert_eq!(bf16_bits(f32::MAX), 0x7F80, "overflow rounds to infinity");
        assert_eq!(
            bf16_bits(f32::from_bits(1)),
            0x0000,
            "tiny denormal rounds to zero"
        );
    }

    #[test]
    fn bf16_keeps_nan() {
        for bits in [0x7FC0_0000u32, 0x7F80_0001, 0xFF80_0001, 0xFFFF_FFFF] {
            let b = bf16_bits(f32::from_bits(bits));
            assert!(
                f32::from_bits(u32::from(b) << 16).is_nan(),
                "{bits:#x} -> {b:#x}"
            );
            assert_eq!(b >> 15, (bits >> 31) as u16, "sign kept");
        }
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
