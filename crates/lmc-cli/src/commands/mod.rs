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

use anyhow::Result;
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

/// The base bytes a container needs ([`lmc_files::load_base`]): `None` for
/// a full container, the base file's bytes for a delta (given as the file or
/// as a full .lmc container of it, decoded into memory).
pub fn load_base(
    input: &Path,
    container: &lmc_core::Container<'_>,
    base: Option<&Path>,
) -> Result<Option<Input>> {
    let read = |p: &Path| Input::open(p).map_err(|e| format!("{e:#}").into());
    Ok(
        lmc_files::load_base(input, container, base, read)?.map(|b| match b {
            lmc_files::Base::File(i) => i,
            lmc_files::Base::Decoded(v) => Input::owned(v),
        }),
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
