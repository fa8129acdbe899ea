use std::collections::BTreeMap;
use std::path::Path;

use std::fmt::Write as _;

use anyhow::Result;
use lmc_core::SegmentKind;
use lmc_tensors::Format;
use lmc_tensors::tree::Kind;
use serde_json::json;

use super::emit;
use super::human;
use crate::io::ContainerInput;

/// Stored size and codecs of one plane, over all chunks of a segment.
#[derive(Default)]
struct PlaneStats {
    stored: u64,
    codecs: BTreeMap<&'static str, usize>,
}

impl PlaneStats {
    /// `huffman`, or `huffman+raw` when chunks differ (most used first).
    fn codec_summary(&self) -> String {
        let mut v: Vec<_> = self.codecs.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter().map(|(k, _)| **k).collect::<Vec<_>>().join("+")
    }
}

pub fn run(input: &Path, as_json: bool) -> Result<()> {
    let mut text = String::new();
    let source = ContainerInput::open(input)?;
    let c = source.container().map_err(crate::io::named(input))?;
    let original = c.header().original_len;
    let ratio = |o: u64, s: u64| if s == 0 { 0.0 } else { o as f64 / s as f64 };

    let mut rows = Vec::new();
    for seg in c.segments() {
        let chunks = &c.chunks()[seg.first_chunk..seg.first_chunk + seg.chunk_count];
        let width = seg.kind.width();
        // Planes 0..width, then the change maps of sparse delta chunks.
        let mut planes: Vec<PlaneStats> = (0..=width).map(|_| PlaneStats::default()).collect();
        for ch in chunks {
            let sparse = ch.transform.is_sparse();
            for (k, p) in ch.planes.iter().enumerate() {
                let k = match (sparse, k) {
                    (true, 0) => width,
                    (true, k) => k - 1,
                    (false, k) => k,
                };
                planes[k].stored += p.stored_len as u64;
                *planes[k].codecs.entry(p.codec.name()).or_default() += 1;
            }
        }
        if planes[width].codecs.is_empty() {
            planes.pop();
        }
        let stored: u64 = planes.iter().map(|p| p.stored).sum();
        rows.push((seg, stored, planes));
    }

    // A directory: its entries, each with the segments it spans.
    let tree = if lmc_files::is_tree(&c) {
        let (_, entries) = lmc_files::list_tree(input, &c)?;
        let files: Vec<_> = entries
            .into_iter()
            .map(|f| {
                let (mut stored, mut tensors) = (0u64, 0usize);
                for (seg, s, _) in &rows {
                    if seg.offset >= f.start && seg.offset < f.end {
                        stored += s;
                        tensors += matches!(seg.kind, SegmentKind::Tensor { .. }) as usize;
                    }
                }
                (f, stored, tensors)
            })
            .collect();
        Some(files)
    } else {
        None
    };
    let kind_name = |e: &lmc_tensors::tree::Entry| match e.kind {
        Kind::File => Format::from_code(e.format).map_or("?", |f| f.name()),
        Kind::Dir => "directory",
        Kind::Symlink => "link",
    };

    if as_json {
        let files = tree.as_ref().map(|files| {
            files
                .iter()
                .map(|(f, stored, tensors)| {
                    json!({"path": f.entry.path, "kind": kind_name(&f.entry),
                           "mode": format!("{:o}", f.entry.mode),
                           "original_bytes": f.entry.len, "stored_bytes": stored,
                           "ratio": ratio(f.entry.len, *stored), "tensors": tensors})
                })
                .collect::<Vec<_>>()
        });
        let segs: Vec<_> = rows
            .iter()
            .map(|(seg, stored, planes)| {
                let plane_len = seg.len / seg.kind.width() as u64;
                let planes: Vec<_> = planes
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        // The change map of sparse delta chunks (its ratio against one byte an element).
                        let plane = if k < seg.kind.width() { json!(k) } else { json!("map") };
                        json!({"plane": plane, "original_bytes": plane_len, "stored_bytes": p.stored,
                               "ratio": ratio(plane_len, p.stored), "codecs": p.codecs})
                    })
                    .collect();
                let mut o = json!({"offset": seg.offset, "original_bytes": seg.len, "stored_bytes": stored,
                                   "ratio": ratio(seg.len, *stored), "chunks": seg.chunk_count, "planes": planes});
                match &seg.kind {
                    SegmentKind::Tensor { name, dtype, shape } => {
                        o["kind"] = json!("tensor");
                        o["name"] = json!(name);
                        o["dtype"] = json!(dtype.name());
                        o["shape"] = json!(shape);
                    }
                    SegmentKind::Bytes => o["kind"] = json!("bytes"),
                }
                o
            })
            .collect();
        let doc = json!({
            "file": input.display().to_string(),
            "format_version": c.header().version,
            "base": c.base_ref().map(|b| json!({"bytes": b.len, "xxh3_128": format!("{:032x}", b.hash)})),
            "removed_tensors": c.removed(),
            "original_bytes": original,
            "compressed_bytes": c.len(),
            "ratio": ratio(original, c.len()),
            "chunks": c.chunks().len(),
            "files": files,
            "segments": segs,
        });
        writeln!(text, "{}", serde_json::to_string_pretty(&doc)?)?;
        return emit(&text);
    }

    writeln!(
        text,
        "{}: lmc format v{}, {} -> {} (ratio {:.3}), {} segments, {} chunks",
        input.display(),
        c.header().version,
        human(original),
        human(c.len()),
        ratio(original, c.len()),
        c.segments().len(),
        c.chunks().len()
    )?;
    if let Some(b) = c.base_ref() {
        writeln!(
            text,
            "delta against a base of {} (XXH3-128 {:032x}); {} tensors coded against it{}",
            human(b.len),
            b.hash,
            c.segments()
                .iter()
                .filter(|s| s.base_offset.is_some())
                .count(),
            if c.removed().is_empty() {
                String::new()
            } else {
                format!("; removed since the base: {}", c.removed().join(", "))
            }
        )?;
    }
    let derived: Vec<_> = c
        .segments()
        .iter()
        .filter_map(|s| s.derived.as_ref())
        .collect();
    if !derived.is_empty() {
        let copies = derived
            .iter()
            .filter(|d| d.op == lmc_core::derive::DeriveOp::Copy)
            .count();
        writeln!(
            text,
            "{} derived tensors (stored as a reference to another tensor plus a residue): roundings {}, copies {copies}",
            derived.len(),
            derived.len() - copies
        )?;
    }
    if let Some(files) = &tree {
        let n = files
            .iter()
            .filter(|f| f.0.entry.kind == Kind::File)
            .count();
        writeln!(text, "a directory of {n} files")?;
        writeln!(
            text,
            "{:<44} {:<14} {:>10} {:>10} {:>6} {:>8}",
            "path", "format", "original", "stored", "ratio", "tensors"
        )?;
        for (f, stored, tensors) in files {
            let path = match f.entry.kind {
                Kind::Dir => format!("{}/", f.entry.path),
                _ => f.entry.path.clone(),
            };
            writeln!(
                text,
                "{:<44} {:<14} {:>10} {:>10} {:>6.3} {:>8}",
                path,
                kind_name(&f.entry),
                human(f.entry.len),
                human(*stored),
                ratio(f.entry.len, *stored),
                tensors
            )?;
        }
        writeln!(text)?;
    }
    writeln!(
        text,
        "{:<44} {:<7} {:<16} {:>10} {:>10} {:>6}  planes (ratio codec, plane 0 = most significant byte; map = which elements changed, in sparse delta chunks)",
        "segment", "dtype", "shape", "original", "stored", "ratio"
    )?;
    for (seg, stored, planes) in &rows {
        let (name, dtype, shape) = match &seg.kind {
            SegmentKind::Tensor { name, dtype, shape } => {
                (name.clone(), dtype.name().to_string(), format!("{shape:?}"))
            }
            SegmentKind::Bytes => (format!("(bytes at {})", seg.offset), "-".into(), "-".into()),
        };
        let plane_len = seg.len / seg.kind.width() as u64;
        let plane_desc: Vec<String> = planes
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let plane = if k < seg.kind.width() {
                    k.to_string()
                } else {
                    "map".into()
                };
                format!(
                    "{plane}:{:.2} {}",
                    ratio(plane_len, p.stored),
                    p.codec_summary()
                )
            })
            .collect();
        writeln!(
            text,
            "{:<44} {:<7} {:<16} {:>10} {:>10} {:>6.3}  {}",
            name,
            dtype,
            shape,
            human(seg.len),
            human(*stored),
            ratio(seg.len, *stored),
            match &seg.derived {
                Some(d) => format!(
                    "{} of {}; residue {}",
                    d.op.name(),
                    d.pieces
                        .iter()
                        .map(|p| format!(
                            "{} from element {}",
                            c.describe_source(p.source),
                            p.source_elem
                        ))
                        .collect::<Vec<_>>()
                        .join(" then "),
                    plane_desc.join(" | ")
                ),
                None => plane_desc.join(" | "),
            }
        )?;
    }
    emit(&text)
}
