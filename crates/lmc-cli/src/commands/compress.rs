use std::path::{Path, PathBuf};
use std::time::Instant;

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use lmc_core::{CompressOptions, DeltaBase, compress, compress_delta};

use super::emit;
use super::{detect_file, human, layout_of};
use crate::io::{Input, Output};
use crate::progress::Bar;

// One parameter an option of `lmc compress`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    input: &Path,
    output: Option<PathBuf>,
    force: bool,
    dtype: Option<&str>,
    options: CompressOptions,
    base: Option<&Path>,
    allow_pickle_calls: bool,
    quiet: bool,
) -> Result<()> {
    let mut text = String::new();
    if crate::io::is_stdio(input) && output.is_none() {
        bail!("reading standard input: give the output with -o FILE, or -c for standard output");
    }
    let dest = output.unwrap_or_else(|| {
        // `ckpt/` -> `ckpt.lmc`, not `ckpt/.lmc`.
        let mut s = input.components().as_path().as_os_str().to_owned();
        s.push(".lmc");
        PathBuf::from(s)
    });
    let to_stdout = crate::io::is_stdio(&dest);
    if crate::io::url_of(input).is_none() && input.is_dir() {
        if dtype.is_some() {
            bail!(
                "--dtype applies to a single file, not to the directory {}",
                input.display()
            );
        }
        if base.is_some() {
            bail!(
                "--base is for single files; {} is a directory (a snapshot store, `lmc snapshot`, keeps directories as deltas)",
                input.display()
            );
        }
        if to_stdout {
            bail!("a directory's container cannot go to standard output; give -o FILE");
        }
        return super::dir::compress(input, &dest, force, options, allow_pickle_calls, quiet);
    }
    let bytes = Input::open(input)?;
    let found = detect_file(input, &bytes, dtype, allow_pickle_calls)?;
    if !quiet {
        for n in &found.notes {
            eprintln!("lmc: note: {}: {n}", input.display());
        }
    }
    let layout = found.layout;
    let base_bytes = match base {
        Some(b) => {
            let bb = Input::open(b)?;
            let base_layout = layout_of(b, &bb, dtype)
                .with_context(|| format!("base {} cannot be read", b.display()))?;
            Some((bb, base_layout))
        }
        None => None,
    };
    let delta = base_bytes
        .as_ref()
        .map(|(bb, bl)| DeltaBase::matching(bb, bl, &layout));
    if let (Some(b), Some(d)) = (base, &delta) {
        if crate::io::same_file(&dest, b) {
            anyhow::bail!("output {} is the base file", dest.display());
        }
        if !quiet {
            let tensors = layout
                .iter()
                .filter(|s| matches!(s.kind, lmc_core::SegmentKind::Tensor { .. }))
                .count();
            eprintln!(
                "delta against {}: {} of {} tensors have a counterpart in it{}",
                b.display(),
                d.matched(),
                tensors,
                if d.removed.is_empty() {
                    String::new()
                } else {
                    format!(", {} removed since", d.removed.len())
                }
            );
        }
    }
    let mut out = if to_stdout {
        Output::stdout(true)?
    } else {
        Output::create(&dest, input, force)?
    };
    let start = Instant::now();
    let summary = {
        let bar = Bar::new(bytes.len() as u64, "compressing", quiet);
        match &delta {
            None => compress(&bytes, &layout, &options, &mut out, &mut bar.callback()),
            Some(d) => compress_delta(&bytes, &layout, d, &options, &mut out, &mut bar.callback()),
        }
        .with_context(|| format!("cannot compress {}", input.display()))?
    };
    // A file rewritten in place while read raises no SIGBUS: what was
    // compressed may mix old and new bytes.
    bytes.check_unchanged()?;
    if let Some((bb, _)) = &base_bytes {
        bb.check_unchanged()?;
    }
    let out_is_stdout = out.is_stdout();
    out.commit()?;
    let secs = start.elapsed().as_secs_f64();
    if !quiet {
        writeln!(
            text,
            "{} -> {}: {} -> {} (ratio {:.3}) in {:.2} s ({:.0} MB/s)",
            input.display(),
            dest.display(),
            human(summary.original_len),
            human(summary.compressed_len),
            summary.original_len as f64 / summary.compressed_len.max(1) as f64,
            secs,
            summary.original_len as f64 / 1e6 / secs.max(1e-9)
        )?;
    }
    if out_is_stdout {
        eprint!("{text}");
        return Ok(());
    }
    emit(&text)
}
