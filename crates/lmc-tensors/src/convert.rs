//! Making test and benchmark inputs from real checkpoints.

use crate::Error;
use safetensors::SafeTensors;
use serde_json::{Map, Value, json};

/// Rounds an f32 to the nearest bf16, ties to even; NaNs stay NaN (quiet).
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// Rewrites a safetensors file with every F32 tensor converted to BF16
/// (what mixed-precision training keeps as model weights). Other tensors
/// and `__metadata__` are kept. The header is padded with spaces to a
/// multiple of 8 bytes, as the reference writer does.
pub fn safetensors_f32_to_bf16(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors(e.to_string()))?;
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| Error::Safetensors(e.to_string()))?;
    let mut header = Map::new();
    if let Some(m) = meta.metadata() {
        let m: Map<String, Value> = m.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut data = Vec::new();
    for name in meta.offset_keys() {
        let t = st
            .tensor(&name)
            .map_err(|e| Error::Safetensors(e.to_string()))?;
        let start = data.len();
        let dtype = if t.dtype() == safetensors::Dtype::F32 {
            for c in t.data().chunks_exact(4) {
                let x = f32::from_le_bytes(c.try_into().unwrap());
                data.extend_from_slice(&f32_to_bf16(x).to_le_bytes());
            }
            "BF16".to_string()
        } else {
            data.extend_from_slice(t.data());
            format!("{:?}", t.dtype())
        };
        header.insert(
            name,
            json!({"dtype": dtype, "shape": t.shape(), "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_string(&Value::Object(header)).expect("JSON of strings and numbers");
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        assert_eq!(f32_to_bf16(-2.0), 0xC000);
        // 1 + 2^-8 is halfway between two bf16 values: ties to even (down).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
        assert!(f32_to_bf16(f32::NAN) & 0x7F80 == 0x7F80 && f32_to_bf16(f32::NAN) & 0x7F != 0);
    }
}
