//! `lmc analyze`: how a checkpoint's bytes, and their compressibility,
//! look and evolve over a series of snapshots — the study of the LMC paper
//! (arXiv 2505.09810, "compressibility over training") as a tool.
//!
//! For every tensor and byte plane: order-0 entropy, zeros, the elements
//! unchanged since the previous snapshot and the entropy of the XOR delta,
//! the exponent histogram of floats, and the ratio of lmc, zstd -3 (raw and
//! on byte planes) and the order-0 bound. Files are read one at a time from
//! their memory map, tensor by tensor in parallel; only the current and the
//! previous file are mapped, and only per-file totals are kept for the
//! series table and the plots.
//!
//! - [`measure`]: one pass over one tensor.
//! - [`summary`]: totals per dtype and file, tables and JSON.
//! - [`plot`]: the SVG plots.

mod measure;
mod plot;
mod summary;

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use lmc_core::{CompressOptions, Dtype, SegmentKind, SegmentSpec, compress};
use rayon::prelude::*;
use serde_json::{Value, json};

use super::{emit, layout_of};
use crate::io::Input;
use summary::{FileReport, StepSource};

/// Arguments of `lmc analyze`.
#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Checkpoint files (safetensors), in training order. The step of each
    /// is `__metadata__["step"]` where present, else its position (0, 1, ...).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Folder for the plots (default: the current directory).
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Print JSON, every tensor included, instead of tables.
    #[arg(long)]
    json: bool,
    /// Tensors listed per file in the table, largest first.
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    /// Treat the inputs as flat arrays of this dtype (no header).
    #[arg(long, value_name = "D")]
    dtype: Option<String>,
    /// Write no plots.
    #[arg(long)]
    no_plots: bool,
}

pub fn run(args: &AnalyzeArgs) -> Result<()> {
    let dtype = args.dtype.as_deref();
    let plot_dir = args.output.as_deref().unwrap_or(Path::new("."));
    if !args.no_plots {
        plot::check_dir(plot_dir, &args.files)?;
    }
    // A first look at every file (its header only), so that a missing or
    // malformed file is reported before any output.
    let mut steps = Vec::with_capacity(args.files.len());
    for (i, path) in args.files.iter().enumerate() {
        let input = Input::open(path)?;
        layout_of(path, &input, dtype)?;
        steps.push(step_of(path, &input, i, dtype.is_some()));
    }
    if steps.windows(2).any(|w| w[1].0 < w[0].0) {
        eprintln!(
            "lmc: warning: the steps are not in increasing order ({}); the files are compared in the order given",
            steps
                .iter()
                .map(|s| s.0.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    if args.json {
        emit("{\n\"files\": [\n")?;
    }
    let mut reports: Vec<FileReport> = Vec::with_capacity(args.files.len());
    let mut previous: Option<Snapshot> = None;
    for (i, (path, &(step, source))) in args.files.iter().zip(&steps).enumerate() {
        let input = Input::open(path)?;
        let layout = layout_of(path, &input, dtype)?;
        let report = analyze_file(path, &input, &layout, previous.as_ref(), step, source)?;
        if args.json {
            let sep = if i + 1 < args.files.len() {
                ",\n"
            } else {
                "\n"
            };
            emit(&(serde_json::to_string_pretty(&summary::file_json(&report))? + sep))?;
        } else {
            emit(&(summary::file_table(&report, args.top) + "\n"))?;
        }
        reports.push(report.into_summary());
        // The file just read becomes the previous one; the one before is unmapped.
        previous = Some(Snapshot::new(input, &layout));
    }
    drop(previous);

    if !args.json && reports.len() > 1 {
        emit(&(summary::series_table(&reports) + "\n"))?;
    }
    let plots = if args.no_plots {
        Vec::new()
    } else {
        plot::write_all(plot_dir, &reports)?
    };
    if args.json {
        let names: Vec<Value> = plots
            .iter()
            .map(|p| json!(p.display().to_string()))
            .collect();
        emit(&format!(
            "],\n\"plots\": {}\n}}\n",
            serde_json::to_string(&names)?
        ))?;
    } else if !plots.is_empty() {
        let names: Vec<String> = plots.iter().map(|p| p.display().to_string()).collect();
        emit(&format!("plots written: {}\n", names.join(", ")))?;
    }
    Ok(())
}

/// The step of a file: `__metadata__["step"]` of a safetensors header
/// (a string of digits, as safetensors stores metadata, or a number), else
/// the file's position in the series.
fn step_of(path: &Path, bytes: &[u8], position: usize, raw: bool) -> (u64, StepSource) {
    let fallback = (position as u64, StepSource::Position);
    if raw {
        return fallback;
    }
    match metadata_step(bytes) {
        None => fallback,
        Some(Ok(step)) => (step, StepSource::Metadata),
        Some(Err(found)) => {
            eprintln!(
                "lmc: warning: {}: __metadata__ step {found} is not a whole number; using the file's position {position}",
                path.display()
            );
            fallback
        }
    }
}

fn metadata_step(bytes: &[u8]) -> Option<Result<u64, String>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = usize::try_from(n).ok()?.checked_add(8)?;
    let header: Value = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    let step = header.get("__metadata__")?.get("step")?;
    Some(match step {
        Value::String(s) => s.trim().parse::<u64>().map_err(|_| format!("{s:?}")),
        Value::Number(n) => n.as_u64().ok_or_else(|| n.to_string()),
        other => Err(other.to_string()),
    })
}

/// The previous file of a series: its bytes, and where each tensor lies.
struct Snapshot {
    input: Input,
    tensors: HashMap<String, (Dtype, Vec<u64>, Range<usize>)>,
}

impl Snapshot {
    fn new(input: Input, layout: &[SegmentSpec]) -> Snapshot {
        let mut tensors = HashMap::new();
        let mut offset = 0usize;
        for spec in layout {
            // The layout was checked to tile the file by `analyze_file`.
            let end = offset + spec.len as usize;
            if let SegmentKind::Tensor { name, dtype, shape } = &spec.kind {
                tensors.insert(name.clone(), (*dtype, shape.clone(), offset..end));
            }
            offset = end;
        }
        Snapshot { input, tensors }
    }

    /// The bytes of the tensor `name` if it has this dtype and shape.
    fn tensor(&self, name: &str, dtype: Dtype, shape: &[u64]) -> Option<&[u8]> {
        let (d, s, r) = self.tensors.get(name)?;
        (*d == dtype && s == shape).then(|| self.input.get(r.clone()))?
    }
}

/// Measures every segment of one file, tensors in parallel, and the size
/// of its whole-file lmc container.
fn analyze_file(
    path: &Path,
    data: &[u8],
    layout: &[SegmentSpec],
    previous: Option<&Snapshot>,
    step: u64,
    source: StepSource,
) -> Result<FileReport> {
    let mut segments = Vec::with_capacity(layout.len());
    let mut offset = 0usize;
    for spec in layout {
        let end = usize::try_from(spec.len)
            .ok()
            .and_then(|l| offset.checked_add(l))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| anyhow!("{}: a tensor runs past the end of the file", path.display()))?;
        let width = spec.kind.width() as u64;
        if spec.len % width != 0 {
            let what = match &spec.kind {
                SegmentKind::Tensor { name, .. } => format!("tensor {name:?}"),
                SegmentKind::Bytes => "a byte segment".into(),
            };
            bail!(
                "{}: {what} has {} bytes, not a whole number of {width}-byte elements",
                path.display(),
                spec.len
            );
        }
        segments.push((spec, offset..end));
        offset = end;
    }
    if offset != data.len() {
        bail!(
            "{}: the tensors cover {offset} of its {} bytes",
            path.display(),
            data.len()
        );
    }

    let stats = segments
        .par_iter()
        .map(|(spec, range)| {
            let prev = match (&spec.kind, previous) {
                (SegmentKind::Tensor { name, dtype, shape }, Some(p)) => {
                    p.tensor(name, *dtype, shape)
                }
                _ => None,
            };
            measure::measure(
                &spec.kind,
                range.start as u64,
                &data[range.clone()],
                prev,
                previous.is_none(),
            )
        })
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("{}: cannot measure the zstd baseline", path.display()))?;

    let container = compress(
        data,
        layout,
        &CompressOptions::default(),
        &mut SizeOnly::default(),
        &mut |_| true,
    )
    .with_context(|| format!("{}", path.display()))?
    .compressed_len;

    Ok(FileReport::new(
        path.to_path_buf(),
        step,
        source,
        data.len() as u64,
        container,
        stats,
    ))
}

/// A seekable writer that keeps nothing but the length written.
#[derive(Default)]
struct SizeOnly {
    pos: u64,
    len: u64,
}

impl Write for SizeOnly {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pos += buf.len() as u64;
        self.len = self.len.max(self.pos);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for SizeOnly {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}
