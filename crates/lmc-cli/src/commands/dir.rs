//! `lmc compress DIR` and `lmc decompress` of a directory container: the
//! CLI's side (progress, notes, the summary line). The walk, the checks and
//! the restore are lmc-files' ([`lmc_files::walk`],
//! [`lmc_files::restore_tree`]), shared with the store and Python.
//!
//! Compression maps every file and passes the pieces to
//! [`lmc_core::compress_parts`] one slice a segment, so memory stays that
//! of the chunks in flight whatever the directory's size.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lmc_core::{CompressOptions, Container, SegmentKind, SegmentSpec, compress_parts};
use lmc_tensors::prefix_names;
use lmc_tensors::tree::{self, Kind};

use super::{emit, human};
use crate::io::{Input, Output};
use crate::progress::Bar;

/// What a piece of the stream is made of.
enum Piece {
    /// `headers[i]`
    Header(usize),
    /// Bytes `range` of `inputs[i]`.
    File(usize, std::ops::Range<usize>),
}

/// `lmc compress DIR`.
pub fn compress(
    input: &Path,
    dest: &Path,
    force: bool,
    options: CompressOptions,
    allow_pickle_calls: bool,
    quiet: bool,
) -> Result<()> {
    if let (Ok(d), Ok(i)) = (
        dest.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .canonicalize(),
        input.canonicalize(),
    ) && d.starts_with(&i)
    {
        bail!(
            "output {} is inside the directory being compressed",
            dest.display()
        );
    }
    let listing = lmc_files::walk(input)?;
    let mut items = listing.items;

    let mut headers: Vec<Vec<u8>> = vec![tree::header(listing.root_mode).to_vec()];
    let mut inputs: Vec<Input> = Vec::new();
    let mut pieces = vec![Piece::Header(0)];
    let mut layout = vec![SegmentSpec {
        kind: SegmentKind::Bytes,
        len: tree::HEADER_LEN as u64,
    }];
    let mut files = 0usize;
    for it in &mut items {
        match it.entry.kind {
            Kind::Dir => {
                headers.push(it.entry.to_bytes());
            }
            Kind::Symlink => {
                let mut h = it.entry.to_bytes();
                h.extend_from_slice(it.target.as_deref().unwrap_or_default().as_bytes());
                headers.push(h);
            }
            Kind::File => {
                files += 1;
                let bytes = Input::open(&it.source)?;
                let found = lmc_files::detect_member(&it.source, &bytes, allow_pickle_calls)?;
                if !quiet {
                    for n in &found.notes {
                        eprintln!("lmc: note: {}: {n}", it.source.display());
                    }
                }
                it.entry.format = found.format.code();
                let file_layout = found.layout;
                // The file may have changed since it was listed.
                it.entry.len = bytes.len() as u64;
                headers.push(it.entry.to_bytes());
                layout.push(SegmentSpec {
                    kind: SegmentKind::Bytes,
                    len: headers.last().unwrap().len() as u64,
                });
                pieces.push(Piece::Header(headers.len() - 1));
                let mut file_layout = file_layout;
                prefix_names(&mut file_layout, &format!("{}:", it.entry.path));
                let mut at = 0usize;
                for s in file_layout {
                    let end = at + s.len as usize;
                    pieces.push(Piece::File(inputs.len(), at..end));
                    layout.push(s);
                    at = end;
                }
                inputs.push(bytes);
                continue;
            }
        }
        layout.push(SegmentSpec {
            kind: SegmentKind::Bytes,
            len: headers.last().unwrap().len() as u64,
        });
        pieces.push(Piece::Header(headers.len() - 1));
    }
    headers.push(tree::END.to_vec());
    layout.push(SegmentSpec {
        kind: SegmentKind::Bytes,
        len: tree::ENTRY_LEN as u64,
    });
    pieces.push(Piece::Header(headers.len() - 1));

    let parts: Vec<&[u8]> = pieces
        .iter()
        .map(|p| match p {
            Piece::Header(i) => &headers[*i][..],
            Piece::File(i, r) => &inputs[*i][r.clone()],
        })
        .collect();
    let total: u64 = layout.iter().map(|s| s.len).sum();
    let mut out = Output::create(dest, input, force)?;
    let start = Instant::now();
    let summary = {
        let bar = Bar::new(total, "compressing", quiet);
        compress_parts(
            &parts,
            &layout,
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
