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
use lmc_core::SegmentSpec;
use lmc_tensors::Detected;

use crate::io::Input;

/// Works out the layout of a file lmc reads but does not store (a base, a
/// file to bench or analyse): raw with `--dtype`,
/// else whatever [`lmc_tensors::detect`] recognises.
pub fn layout_of(path: &Path, bytes: &[u8], dtype: Option<&str>) -> Result<Vec<SegmentSpec>> {
    let dtype = dtype.map(lmc_files::parse_dtype).transpose()?;
    Ok(lmc_files::detect_base(path, bytes, dtype)?.layout)
}

/// The layout of an input to compress, with the format found and notes for
/// the user, its pickles checked ([`lmc_files::detect_input`]).
pub fn detect_file(
    path: &Path,
    bytes: &[u8],
    dtype: Option<&str>,
    allow_pickle_calls: bool,
) -> Result<Detected> {
    let dtype = dtype.map(lmc_files::parse_dtype).transpose()?;
    Ok(lmc_files::detect_input(
        path,
        bytes,
        dtype,
        allow_pickle_calls,
    )?)
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
        return Ok(Some(Input::Owned(v)));
    }
    Ok(Some(bytes))
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
