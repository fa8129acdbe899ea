//! In-memory benchmark: lmc beside zstd -3 and memcpy on the same bytes.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

use std::fmt::Write as _;

use anyhow::{Result, bail, ensure};
use lmc_core::{CompressOptions, Container, compress};
use serde_json::json;

use super::emit;
use super::layout_of;
use crate::io::Input;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `runs` calls of `f`.
fn time<F: FnMut() -> Result<()>>(runs: usize, mut f: F) -> Result<f64> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

struct Row {
    method: String,
    threads: usize,
    ratio: f64,
    compress_mbs: f64,
    decompress_mbs: f64,
}

/// Arguments of `lmc bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    input: PathBuf,
    /// Timed runs of each method; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Treat the input as a flat array of this dtype.
    #[arg(long)]
    dtype: Option<String>,
    /// Original bytes per chunk for lmc, e.g. 256K, 1M (default 256K).
    #[arg(long, value_parser = crate::parse_size)]
    chunk_size: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let (path, runs, dtype, chunk_size, as_json) = (
        args.input.as_path(),
        args.runs,
        args.dtype.as_deref(),
        args.chunk_size,
        args.json,
    );
    let mut text = String::new();
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let input = Input::open(path)?;
    let data: &[u8] = &input;
    let layout = layout_of(path, data, dtype)?;
    let n = data.len() as f64;
    let mbs = |secs: f64| n / 1e6 / secs.max(1e-12);
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();

    // memcpy: the ceiling.
    let mut copy = vec![0u8; data.len()];
    let t = time(runs, || {
        copy.copy_from_slice(data);
        Ok(())
    })?;
    rows.push(Row {
        method: "memcpy".into(),
        threads: 1,
        ratio: 1.0,
        compress_mbs: mbs(t),
        decompress_mbs: mbs(t),
    });
    drop(copy);

    // lmc.
    let mut opts = CompressOptions::default();
    if let Some(c) = chunk_size {
        opts = opts.chunk_size(c);
    }
    let mut packed = Cursor::new(Vec::with_capacity(data.len()));
    let tc = time(runs, || {
        packed.get_mut().clear();
        packed.set_position(0);
        compress(data, &layout, &opts, &mut packed, &mut |_| true)?;
        Ok(())
    })?;
    let packed = packed.into_inner();
    let container = Container::open(&packed)?;
    let mut restored = Vec::with_capacity(data.len());
    let td = time(runs, || {
        restored.clear();
        container.decompress_to(&mut restored, &mut |_| true)?;
        Ok(())
    })?;
    ensure!(restored == data, "lmc round trip differs from the input");
    rows.push(Row {
        method: "lmc".into(),
        threads,
        ratio: n / packed.len() as f64,
        compress_mbs: mbs(tc),
        decompress_mbs: mbs(td),
    });
    drop(restored);

    // zstd -3, one thread, the everyday alternative.
    let mut z = Vec::new();
    let tc = time(runs, || {
        z = zstd::bulk::compress(data, 3)?;
        Ok(())
    })?;
    let mut back = vec![0u8; data.len()];
    let td = time(runs, || {
        let k = zstd::bulk::decompress_to_buffer(&z, &mut back)?;
        ensure!(k == data.len(), "zstd size mismatch");
        Ok(())
    })?;
    ensure!(back == data, "zstd round trip differs from the input");
    rows.push(Row {
        method: "zstd -3".into(),
        threads: 1,
        ratio: n / z.len() as f64,
        compress_mbs: mbs(tc),
        decompress_mbs: mbs(td),
    });

    if as_json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| json!({"method": r.method, "threads": r.threads, "ratio": r.ratio,
                            "compress_mb_per_s": r.compress_mbs, "decompress_mb_per_s": r.decompress_mbs}))
            .collect();
        writeln!(
            text,
            "{}",
            serde_json::to_string_pretty(
                &json!({"file": path.display().to_string(), "bytes": data.len(), "runs": runs, "chunk_size": opts.get_chunk_size(), "results": v})
            )?
        )?;
    } else {
        writeln!(
            text,
            "{}: {} bytes, median of {runs} runs, lmc chunk size {}\n",
            path.display(),
            data.len(),
            opts.get_chunk_size()
        )?;
        writeln!(
            text,
            "| method | threads | ratio | compress MB/s | decompress MB/s |"
        )?;
        writeln!(text, "|---|---|---|---|---|")?;
        for r in rows {
            writeln!(
                text,
                "| {} | {} | {:.3} | {:.0} | {:.0} |",
                r.method, r.threads, r.ratio, r.compress_mbs, r.decompress_mbs
            )?;
        }
    }
    emit(&text)
}
