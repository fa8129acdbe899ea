//! `lmc compress DIR` and `lmc decompress` of a directory container: the
//! CLI's side (progress, notes, the summary line). The walk, the checks and
//! the restore are lmc-files' ([`lmc_files::dir_stream`],
//! [`lmc_files::restore_tree`]), shared with the store and Python.
//!
//! Compression maps every file and passes the pieces to
//! [`lmc_core::compress_parts`] one slice a segment, so memory stays that
//! of the chunks in flight whatever the directory's size.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use lmc_core::{CompressOptions, Container, compress_parts};

use super::{emit, human};
use crate::io::{Input, Output};
use crate::progress::Bar;

/// `lmc compress DIR`.
pub fn compress(
    input: &Path,
    dest: &Path,
    force: bool,
    options: CompressOptions,
    allow_pickle_calls: bool,
    quiet: bool,
) -> Result<()> {
    lmc_files::check_outside(input, dest)?;
    let read = |p: &Path| Input::open(p).map_err(|e| lmc_files::Error::Read(format!("{e:#}")));
    let stream = lmc_files::dir_stream(input, allow_pickle_calls, read)?;
    if !quiet {
        for (path, n) in &stream.notes {
            eprintln!("lmc: note: {}: {n}", path.display());
        }
    }
    let (parts, layout, files) = (stream.parts(), &stream.layout, stream.file_count());
    let total = stream.len();
    let mut out = Output::create(dest, input, force)?;
    let start = Instant::now();
    let summary = {
        let bar = Bar::new(total, "compressing", quiet);
        compress_parts(
            &parts,
            layout,
            None,
            &options,
            &mut out,
            &mut bar.callback(),
        )
        .with_context(|| format!("cannot compress {}", input.display()))?
    };
    out.commit()?;
    let secs = start.elapsed().as_secs_f64();
    let mut text = String::new();
    if !quiet {
        writeln!(
            text,
            "{} -> {}: {} files, {} -> {} (ratio {:.3}) in {:.2} s ({:.0} MB/s)",
            input.display(),
            dest.display(),
            files,
            human(summary.original_len),
            human(summary.compressed_len),
            summary.original_len as f64 / summary.compressed_len.max(1) as f64,
            secs,
            summary.original_len as f64 / 1e6 / secs.max(1e-9)
        )?;
    }
    emit(&text)
}

/// `lmc decompress` of a directory container into `dest`.
pub fn restore(
    input: &Path,
    c: &Container<'_>,
    dest: &Path,
    force: bool,
    quiet: bool,
) -> Result<()> {
    let start = Instant::now();
    let summary = {
        let bar = Bar::new(c.header().original_len, "decompressing", quiet);
        lmc_files::restore_tree(input, c, dest, force, true, &mut bar.callback())?
    };
    if !quiet {
        let secs = start.elapsed().as_secs_f64();
        let n = summary.stream_len;
        let mut text = String::new();
        writeln!(
            text,
            "{} -> {}: {} files, {} restored and verified in {:.2} s ({:.0} MB/s)",
            input.display(),
            dest.display(),
            summary.files,
            human(n),
            secs,
            n as f64 / 1e6 / secs.max(1e-9)
        )?;
        emit(&text)?;
    }
    Ok(())
}
