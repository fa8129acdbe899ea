//! One module a subcommand.

pub mod analyze;
pub mod bench;
pub mod compress;
pub mod decompress;
pub mod dir;
pub mod info;
pub mod snapshot;
pub mod verify;

use std::path::Path;

use anyhow::{Context, Result, bail};
use lmc_core::{Dtype, SegmentSpec};
use lmc_tensors::{Detected, Format};

use crate::io::Input;

/// Works out the layout of an input: raw with `--dtype`, else whatever
/// [`lmc_tensors::detect`] recognises (safetensors, PyTorch, NumPy).
pub fn layout_of(path: &Path, bytes: &[u8], dtype: Option<&str>) -> Result<Vec<SegmentSpec>> {
    Ok(detect_file(path, bytes, dtype)?.layout)
}

/// [`layout_of`] with the format found and notes for the user. A file in
/// no format lmc knows is an error (without `--dtype`): compressing it would
/// work, but as plain bytes, which is rarely what was meant.
pub fn detect_file(path: &Path, bytes: &[u8], dtype: Option<&str>) -> Result<Detected> {
    if let Some(d) = dtype {
        let Some(d) = Dtype::from_name(d) else {
            bail!(
                "unknown dtype {d:?} (expected one of BF16, F16, F32, F64, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, U16, U32, U64, BOOL)"
            );
        };
        return Ok(Detected {
            format: Format::Unknown,
            layout: lmc_tensors::raw::layout(bytes.len() as u64, d, "data"),
            notes: Vec::new(),
            calls: Vec::new(),
        });
    }
    if bytes.starts_with(&lmc_core::format::MAGIC) {
        bail!("{} is already an lmc container", path.display());
    }
    if lmc_tensors::tree::looks_like(bytes) {
        bail!(
            "{} is an lmc directory stream (what `lmc decompress` restores a directory from); \
             compress the directory instead",
            path.display()
        );
    }
    let found =
        lmc_tensors::detect(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if found.format == Format::Unknown {
        bail!(
            "{} is not a safetensors file, a PyTorch checkpoint or a NumPy array \
             (it starts like none of them); for a flat array of numbers use --dtype",
            path.display()
        );
    }
    Ok(found)
}

/// The base bytes a container needs: `None` for a full container, the
/// base file's bytes for a delta. The base may be given as the original
/// file or as a full .lmc container of it (decoded into memory).
pub fn load_base(
    input: &Path,
    container: &lmc_core::Container<'_>,
    base: Option<&Path>,
) -> Result<Option<Input>> {
    let (Some(want), Some(path)) = (container.base_ref(), base) else {
        if let Some(want) = container.base_ref() {
            bail!(
                "{} is a delta container: give its base with --base (a {}-byte file with XXH3-128 {:032x})",
                input.display(),
                want.len,
                want.hash
            );
        }
        if let Some(path) = base {
            bail!(
                "{} is not a delta container; --base {} is not needed",
                input.display(),
                path.display()
            );
        }
        return Ok(None);
    };
    let bytes = Input::open(path)?;
    if bytes.starts_with(&lmc_core::format::MAGIC) && bytes.len() as u64 != want.len {
        let c = lmc_core::Container::open(&bytes)
            .with_context(|| format!("base {}", path.display()))?;
        if c.base_ref().is_some() {
            bail!(
                "base {} is itself a delta container; decompress it first and give the result",
                path.display()
            );
        }
        let mut v = Vec::with_capacity(c.header().original_len as usize);
        c.decompress_to(&mut v, &mut |_| true)
            .with_context(|| format!("base {}", path.display()))?;
        return Ok(Some(Input::owned(v)));
    }
    Ok(Some(bytes))
}

/// Refuses a PyTorch checkpoint whose pickle would call code that
/// `torch.load(weights_only=True)` refuses (the way malicious checkpoints
/// work), unless the user allowed it. lmc itself never runs a pickle.
pub fn check_pickle_calls(path: &Path, found: &Detected, allow: bool) -> Result<()> {
    if found.calls.is_empty() || allow {
        return Ok(());
    }
    bail!(
        "{}: its pickle would call {} when loaded by torch.load; lmc refuses checkpoints \
         whose pickle calls code that torch.load(weights_only=True) refuses (that is how \
         malicious checkpoints work). lmc never runs it: to store it anyway, byte for byte, \
         use --allow-pickle-calls",
        path.display(),
        found.calls.join(", ")
    )
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
