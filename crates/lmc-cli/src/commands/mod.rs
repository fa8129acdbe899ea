//! One module a subcommand.

pub mod analyze;
pub mod bench;
pub mod compress;
pub mod decompress;
pub mod info;
pub mod verify;

use std::path::Path;

use anyhow::{Result, bail};
use lmc_core::{Dtype, SegmentSpec};

/// Works out the layout of an input: raw with `--dtype`, else safetensors.
pub fn layout_of(path: &Path, bytes: &[u8], dtype: Option<&str>) -> Result<Vec<SegmentSpec>> {
    if let Some(d) = dtype {
        let Some(d) = Dtype::from_name(d) else {
            bail!(
                "unknown dtype {d:?} (expected one of BF16, F16, F32, F64, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, U16, U32, U64, BOOL)"
            );
        };
        return Ok(lmc_tensors::raw::layout(bytes.len() as u64, d, "data"));
    }
    if bytes.starts_with(&lmc_core::format::MAGIC) {
        bail!("{} is already an lmc container", path.display());
    }
    if !lmc_tensors::safetensors::looks_like(bytes) {
        bail!(
            "{} is not a safetensors file (it does not start with a header length and '{{'); \
             other checkpoint formats are not supported yet; for a flat array of numbers use --dtype",
            path.display()
        );
    }
    lmc_tensors::safetensors::layout(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes `text` to stdout. A closed pipe (`lmc info x | head`) ends the
/// output quietly instead of failing.
pub fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `1234567` -> `"1.23 MB"`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.2} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}
