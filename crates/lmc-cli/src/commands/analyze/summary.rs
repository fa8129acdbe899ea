//! Totals of a file, per dtype and overall, and how they are shown: the
//! text tables and the JSON document.
//!
//! Aggregates weigh every tensor by its bytes: the entropy of a dtype's
//! plane is the mean of its tensors' plane entropies weighted by their
//! lengths (so that length times entropy is the sum of the tensors'
//! order-0 bounds, the quantity a per-tensor coder can reach), and ratios
//! are total bytes over total stored bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use lmc_core::{Dtype, SegmentKind};
use serde_json::{Value, json};

use super::measure::{Change, Exponents, PlaneStats, SegmentStats};
use crate::commands::human;

/// `original / stored`; infinite for a segment stored in nothing, NaN for an empty one.
pub fn ratio(original: u64, stored: f64) -> f64 {
    if original == 0 {
        f64::NAN
    } else {
        original as f64 / stored
    }
}

/// A number for JSON: `null` where it is not finite.
fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn frac(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Sums of one plane over several tensors.
#[derive(Clone, Debug, Default)]
pub struct PlaneTotals {
    pub len: u64,
    /// Sum of `len * entropy`.
    pub entropy_bits: f64,
    pub zero_bytes: u64,
    pub lmc_bytes: u64,
    /// The same over the XOR deltas of matched tensors.
    pub xor_len: u64,
    pub xor_entropy_bits: f64,
    pub xor_lmc_bytes: u64,
}

impl PlaneTotals {
    /// Mean entropy, bits per byte, weighted by bytes.
    pub fn entropy(&self) -> f64 {
        if self.len == 0 {
            0.0
        } else {
            self.entropy_bits / self.len as f64
        }
    }

    /// Mean entropy of the XOR deltas, where there were any.
    pub fn xor_entropy(&self) -> Option<f64> {
        (self.xor_len > 0).then(|| self.xor_entropy_bits / self.xor_len as f64)
    }

    fn add(&mut self, p: &PlaneStats, xor: Option<&PlaneStats>) {
        self.len += p.len;
        self.entropy_bits += p.len as f64 * p.entropy;
        self.zero_bytes += p.zero_bytes;
        self.lmc_bytes += p.lmc_bytes;
        if let Some(x) = xor {
            self.xor_len += x.len;
            self.xor_entropy_bits += x.len as f64 * x.entropy;
            self.xor_lmc_bytes += x.lmc_bytes;
        }
    }
}

/// Sums over a set of segments (the tensors of one dtype, or a whole file).
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub segments: usize,
    pub bytes: u64,
    pub elements: u64,
    pub zero_elements: u64,
    pub zero_bytes: u64,
    pub lmc: u64,
    pub zstd_raw: u64,
    pub zstd_grouped: u64,
    pub bound: f64,
    /// What lmc would store with matched tensors coded as XOR deltas.
    pub delta_lmc: u64,
    /// Tensors compared with the previous snapshot (matched or new).
    pub compared: bool,
    pub new_tensors: usize,
    /// Elements of matched tensors that did not change.
    pub unchanged_elements: u64,
    /// Elements of the tensors compared (those of new tensors count as changed).
    pub compared_elements: u64,
    /// Per plane, for totals of one dtype only.
    pub planes: Vec<PlaneTotals>,
    pub exponents: Option<Exponents>,
}

impl Totals {
    fn add(&mut self, s: &SegmentStats, with_planes: bool) {
        self.segments += 1;
        self.bytes += s.bytes;
        self.elements += s.elements;
        self.zero_elements += s.zero_elements;
        self.zero_bytes += s.zero_bytes();
        self.lmc += s.lmc_bytes();
        self.zstd_raw += s.zstd_raw;
        self.zstd_grouped += s.zstd_grouped;
        self.bound += s.bound_bytes();
        self.delta_lmc += s.delta_or_plain_lmc_bytes();
        let xor_planes = match &s.change {
            Change::NotCompared => None,
            Change::New => {
                self.compared = true;
                self.new_tensors += 1;
                self.compared_elements += s.elements;
                None
            }
            Change::Matched {
                unchanged_elements,
                xor_planes,
            } => {
                self.compared = true;
                self.compared_elements += s.elements;
                self.unchanged_elements += unchanged_elements;
                Some(xor_planes)
            }
        };
        if with_planes {
            self.planes.resize_with(s.planes.len(), Default::default);
            for (k, (t, p)) in self.planes.iter_mut().zip(&s.planes).enumerate() {
                t.add(p, xor_planes.and_then(|x| x.get(k)));
            }
            if let Some(e) = &s.exponents {
                match &mut self.exponents {
                    Some(t) => t.merge(e),
                    None => self.exponents = Some(e.clone()),
                }
            }
        }
    }

    pub fn unchanged_fraction(&self) -> Option<f64> {
        self.compared
            .then(|| frac(self.unchanged_elements, self.compared_elements))
    }

    /// Whether any tensor had a previous snapshot to be XORed with.
    pub fn has_delta(&self) -> bool {
        self.compared && self.new_tensors < self.segments
    }
}

/// The ratios of one set of bytes under each method.
#[derive(Clone, Copy, Debug)]
pub struct Ratios {
    pub lmc: f64,
    pub zstd: f64,
    pub zstd_grouped: f64,
    pub bound: f64,
    pub xor_delta: Option<f64>,
}

impl Ratios {
    fn json(&self) -> Value {
        json!({"lmc": num(self.lmc), "zstd3": num(self.zstd), "zstd3_grouped": num(self.zstd_grouped),
               "bound": num(self.bound), "lmc_xor_delta": self.xor_delta.map_or(Value::Null, num)})
    }
}

/// Where a file's step number came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepSource {
    Metadata,
    Position,
}

/// One analysed file: its totals (kept for the series table and the plots
/// after the file is unmapped) and its segments (dropped after printing).
pub struct FileReport {
    pub path: PathBuf,
    pub step: u64,
    pub step_source: StepSource,
    pub bytes: u64,
    /// Size of the whole-file lmc container.
    pub container: u64,
    pub all: Totals,
    /// Segments that are not tensors (the safetensors header).
    pub other: Totals,
    pub dtypes: BTreeMap<&'static str, (Dtype, Totals)>,
    pub segments: Vec<SegmentStats>,
}

impl FileReport {
    pub fn new(
        path: PathBuf,
        step: u64,
        step_source: StepSource,
        bytes: u64,
        container: u64,
        segments: Vec<SegmentStats>,
    ) -> FileReport {
        let mut all = Totals::default();
        let mut other = Totals::default();
        let mut dtypes: BTreeMap<&'static str, (Dtype, Totals)> = BTreeMap::new();
        for s in &segments {
            all.add(s, false);
            match s.dtype() {
                Some(d) => dtypes
                    .entry(d.name())
                    .or_insert_with(|| (d, Totals::default()))
                    .1
                    .add(s, true),
                None => other.add(s, false),
            }
        }
        FileReport {
            path,
            step,
            step_source,
            bytes,
            container,
            all,
            other,
            dtypes,
            segments,
        }
    }

    /// Tensors (not counting byte segments).
    pub fn tensors(&self) -> usize {
        self.all.segments - self.other.segments
    }

    /// Ratios of the whole file: lmc is the real container (header and index
    /// included); the baselines code the header bytes too.
    pub fn ratios(&self) -> Ratios {
        let overhead = self.container.saturating_sub(self.all.lmc);
        Ratios {
            lmc: ratio(self.bytes, self.container as f64),
            zstd: ratio(self.bytes, self.all.zstd_raw as f64),
            zstd_grouped: ratio(self.bytes, self.all.zstd_grouped as f64),
            bound: ratio(self.bytes, self.all.bound),
            xor_delta: self
                .all
                .has_delta()
                .then(|| ratio(self.bytes, (self.all.delta_lmc + overhead) as f64)),
        }
    }

    /// Drops the per-segment measurements, keeping the totals.
    pub fn into_summary(mut self) -> FileReport {
        self.segments = Vec::new();
        self
    }
}

/// Ratios of a set of tensors (no container overhead).
pub fn totals_ratios(t: &Totals) -> Ratios {
    Ratios {
        lmc: ratio(t.bytes, t.lmc as f64),
        zstd: ratio(t.bytes, t.zstd_raw as f64),
        zstd_grouped: ratio(t.bytes, t.zstd_grouped as f64),
        bound: ratio(t.bytes, t.bound),
        xor_delta: t.has_delta().then(|| ratio(t.bytes, t.delta_lmc as f64)),
    }
}

fn segment_ratios(s: &SegmentStats) -> Ratios {
    Ratios {
        lmc: ratio(s.bytes, s.lmc_bytes() as f64),
        zstd: ratio(s.bytes, s.zstd_raw as f64),
        zstd_grouped: ratio(s.bytes, s.zstd_grouped as f64),
        bound: ratio(s.bytes, s.bound_bytes()),
        xor_delta: s.xor_lmc_bytes().map(|x| ratio(s.bytes, x as f64)),
    }
}

fn exponents_json(e: &Option<Exponents>) -> Value {
    match e {
        Some(e) => json!({"bits": e.bits, "bias": e.bias, "counts": e.counts}),
        None => Value::Null,
    }
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

fn segment_json(s: &SegmentStats) -> Value {
    let (status, unchanged, xor_planes) = match &s.change {
        Change::NotCompared => ("first", None, None),
        Change::New => ("new", Some(0.0), None),
        Change::Matched {
            unchanged_elements,
            xor_planes,
        } => (
            "matched",
            Some(frac(*unchanged_elements, s.elements)),
            Some(xor_planes),
        ),
    };
    let planes: Vec<Value> = s
        .planes
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let x = xor_planes.and_then(|x| x.get(k));
            json!({
                "plane": k,
                "entropy": p.entropy,
                "zero_fraction": frac(p.zero_bytes, p.len),
                "lmc_bytes": p.lmc_bytes,
                "lmc_ratio": num(ratio(p.len, p.lmc_bytes as f64)),
                "xor_entropy": x.map(|x| x.entropy),
                "xor_zero_fraction": x.map(|x| frac(x.zero_bytes, x.len)),
                "xor_lmc_bytes": x.map(|x| x.lmc_bytes),
            })
        })
        .collect();
    let mut o = json!({
        "offset": s.offset,
        "bytes": s.bytes,
        "elements": s.elements,
        "status": status,
        "unchanged_fraction": unchanged,
        "zero_fraction": frac(s.zero_bytes(), s.bytes),
        "zero_elements_fraction": frac(s.zero_elements, s.elements),
        "ratios": segment_ratios(s).json(),
        "sizes": {"lmc": s.lmc_bytes(), "zstd3": s.zstd_raw, "zstd3_grouped": s.zstd_grouped,
                  "bound": s.bound_bytes(), "lmc_xor_delta": s.xor_lmc_bytes()},
        "planes": planes,
        "exponent_histogram": exponents_json(&s.exponents),
    });
    match &s.kind {
        SegmentKind::Tensor { name, dtype, shape } => {
            o["name"] = json!(name);
            o["dtype"] = json!(dtype.name());
            o["shape"] = json!(shape);
        }
        SegmentKind::Bytes => {
            o["status"] = json!("bytes");
        }
    }
    o
}

fn totals_json(t: &Totals, r: Ratios) -> Value {
    let planes: Vec<Value> = t
        .planes
        .iter()
        .enumerate()
        .map(|(k, p)| {
            json!({
                "plane": k,
                "entropy": p.entropy(),
                "zero_fraction": frac(p.zero_bytes, p.len),
                "lmc_ratio": num(ratio(p.len, p.lmc_bytes as f64)),
                "xor_entropy": p.xor_entropy(),
                "xor_lmc_ratio": (p.xor_len > 0).then(|| num(ratio(p.xor_len, p.xor_lmc_bytes as f64))),
            })
        })
        .collect();
    json!({
        "tensors": t.segments,
        "bytes": t.bytes,
        "elements": t.elements,
        "new_tensors": t.compared.then_some(t.new_tensors),
        "unchanged_fraction": t.unchanged_fraction(),
        "zero_fraction": frac(t.zero_bytes, t.bytes),
        "zero_elements_fraction": frac(t.zero_elements, t.elements),
        "ratios": r.json(),
        "sizes": {"lmc": t.lmc, "zstd3": t.zstd_raw, "zstd3_grouped": t.zstd_grouped, "bound": t.bound,
                  "lmc_xor_delta": t.has_delta().then_some(t.delta_lmc)},
        "planes": planes,
        "exponent_histogram": exponents_json(&t.exponents),
    })
}

/// Everything about one file as JSON, every tensor included.
pub fn file_json(f: &FileReport) -> Value {
    let dtypes: Vec<Value> = f
        .dtypes
        .values()
        .map(|(d, t)| {
            let mut v = totals_json(t, totals_ratios(t));
            v["dtype"] = json!(d.name());
            v
        })
        .collect();
    let mut totals = totals_json(&f.all, f.ratios());
    if let Some(o) = totals.as_object_mut() {
        o.remove("planes");
        o.remove("exponent_histogram");
        o.insert("tensors".into(), json!(f.tensors()));
        o.insert("lmc_container_bytes".into(), json!(f.container));
    }
    json!({
        "file": f.path.display().to_string(),
        "step": f.step,
        "step_from": match f.step_source { StepSource::Metadata => "metadata", StepSource::Position => "position" },
        "bytes": f.bytes,
        "totals": totals,
        "non_tensor_bytes": f.other.bytes,
        "dtypes": dtypes,
        "tensors": f.segments.iter().filter(|s| s.dtype().is_some()).map(segment_json).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

/// A ratio in a table cell.
fn r(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x.is_infinite() {
        "inf".into()
    } else if x >= 1000.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.1}%", 100.0 * x))
}

fn entropies<'a>(it: impl Iterator<Item = Option<f64>> + 'a) -> String {
    it.map(|e| e.map_or("-".into(), |e| format!("{e:.2}")))
        .collect::<Vec<_>>()
        .join(" ")
}

const ROW_HEAD: &str =
    "    lmc  zstd-3 zstd-3g   bound   zeros unchanged xor-lmc  entropy/plane (xor delta)";

fn row(ratios: Ratios, zeros: f64, unchanged: Option<f64>, h: &str, xh: &str) -> String {
    let xh = if xh.is_empty() {
        String::new()
    } else {
        format!(" ({xh})")
    };
    format!(
        "{:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7}  {h}{xh}",
        r(ratios.lmc),
        r(ratios.zstd),
        r(ratios.zstd_grouped),
        r(ratios.bound),
        pct(Some(zeros)),
        pct(unchanged),
        ratios.xor_delta.map_or("-".into(), r),
    )
}

/// The table of one file: the whole file, each dtype, the `top` biggest tensors.
pub fn file_table(f: &FileReport, top: usize) -> String {
    let mut t = String::new();
    let source = match f.step_source {
        StepSource::Metadata => "from __metadata__",
        StepSource::Position => "position in the series",
    };
    let news = if f.all.compared {
        format!(", {} new since the previous file", f.all.new_tensors)
    } else {
        String::new()
    };
    let _ = writeln!(
        t,
        "{}: step {} ({source}), {}, {} tensors{news}",
        f.path.display(),
        f.step,
        human(f.bytes),
        f.tensors(),
    );
    // (label, bytes, the rest of the row)
    let mut rows: Vec<(String, u64, String)> = Vec::new();
    rows.push((
        "whole file (lmc: the container)".into(),
        f.bytes,
        row(
            f.ratios(),
            frac(f.all.zero_bytes, f.all.bytes),
            f.all.unchanged_fraction(),
            "",
            "",
        ),
    ));
    for (d, tot) in f.dtypes.values() {
        let h = entropies(tot.planes.iter().map(|p| Some(p.entropy())));
        let xh = if tot.has_delta() {
            entropies(tot.planes.iter().map(PlaneTotals::xor_entropy))
        } else {
            String::new()
        };
        rows.push((
            format!("all {} ({} tensors)", d.name(), tot.segments),
            tot.bytes,
            row(
                totals_ratios(tot),
                frac(tot.zero_bytes, tot.bytes),
                tot.unchanged_fraction(),
                &h,
                &xh,
            ),
        ));
    }
    let mut tensors: Vec<&SegmentStats> =
        f.segments.iter().filter(|s| s.dtype().is_some()).collect();
    tensors.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.offset.cmp(&b.offset)));
    let shown = top.min(tensors.len());
    let mut tensor_rows = Vec::new();
    for s in tensors.iter().take(shown) {
        let SegmentKind::Tensor { name, dtype, shape } = &s.kind else {
            continue;
        };
        let (unchanged, xh) = match &s.change {
            Change::NotCompared => (None, String::new()),
            Change::New => (Some(0.0), "new".into()),
            Change::Matched {
                unchanged_elements,
                xor_planes,
            } => (
                Some(frac(*unchanged_elements, s.elements)),
                entropies(xor_planes.iter().map(|p| Some(p.entropy))),
            ),
        };
        let h = entropies(s.planes.iter().map(|p| Some(p.entropy)));
        let shape = shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("x");
        tensor_rows.push((
            format!("  {} {} [{shape}]", shorten(name, 56), dtype.name()),
            s.bytes,
            row(
                segment_ratios(s),
                frac(s.zero_bytes(), s.bytes),
                unchanged,
                &h,
                &xh,
            ),
        ));
    }
    let width = rows
        .iter()
        .chain(&tensor_rows)
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(34);
    let _ = writeln!(t, "{:<width$} {:>10} {ROW_HEAD}", "", "bytes");
    for (label, bytes, rest) in &rows {
        let _ = writeln!(t, "{label:<width$} {:>10} {rest}", human(*bytes));
    }
    if shown > 0 {
        let _ = writeln!(t, "  {shown} largest of {} tensors:", tensors.len());
        for (label, bytes, rest) in &tensor_rows {
            let _ = writeln!(t, "{label:<width$} {:>10} {rest}", human(*bytes));
        }
    }
    t
}

/// `name`, cut in the middle to at most `max` characters.
fn shorten(name: &str, max: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= max {
        return name.to_string();
    }
    let keep = max.saturating_sub(1);
    let head: String = chars[..keep / 2].iter().collect();
    let tail: String = chars[chars.len() - (keep - keep / 2)..].iter().collect();
    format!("{head}…{tail}")
}

/// Dtypes under this share of a file's bytes in every file are left out of
/// the series table and the entropy plot (a 4 kB `position_ids` buffer
/// would add eight I64 columns); the JSON and per-file tables keep them.
const MIN_SHARE: f64 = 0.01;

/// The `(dtype, plane)` pairs of the series table and entropy plot: those of
/// every dtype that makes up at least [`MIN_SHARE`] of some file, in order.
pub fn dtype_planes(files: &[FileReport]) -> Vec<(&'static str, usize)> {
    let mut widths: BTreeMap<&'static str, (usize, f64)> = BTreeMap::new();
    for f in files {
        for (name, (_, t)) in &f.dtypes {
            let w = widths.entry(name).or_default();
            w.0 = w.0.max(t.planes.len());
            w.1 = w.1.max(frac(t.bytes, f.bytes));
        }
    }
    let big = widths.values().any(|w| w.1 >= MIN_SHARE);
    widths
        .into_iter()
        .filter(|(_, w)| !big || w.1 >= MIN_SHARE)
        .flat_map(|(d, w)| (0..w.0).map(move |k| (d, k)))
        .collect()
}

/// The series table: one row per file, in the order given.
pub fn series_table(files: &[FileReport]) -> String {
    let mut t = String::new();
    let cols = dtype_planes(files);
    let _ = writeln!(
        t,
        "series of {} files (entropy: bits/byte of each dtype's plane, weighted by bytes; \
         dtypes under 1% of the bytes left out):",
        files.len()
    );
    let mut head = format!(
        "{:>10} {:>10} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7}",
        "step", "bytes", "lmc", "zstd-3", "zstd-3g", "bound", "unchanged", "xor-lmc"
    );
    for (d, k) in &cols {
        let _ = write!(head, " {:>8}", format!("{d}.{k}"));
    }
    let _ = writeln!(t, "{head}");
    for f in files {
        let q = f.ratios();
        let mut line = format!(
            "{:>10} {:>10} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7}",
            f.step,
            human(f.bytes),
            r(q.lmc),
            r(q.zstd),
            r(q.zstd_grouped),
            r(q.bound),
            pct(f.all.unchanged_fraction()),
            q.xor_delta.map_or("-".into(), r),
        );
        for (d, k) in &cols {
            let e = f
                .dtypes
                .get(d)
                .and_then(|(_, t)| t.planes.get(*k))
                .map_or("-".into(), |p| format!("{:.3}", p.entropy()));
            let _ = write!(line, " {e:>8}");
        }
        let _ = writeln!(t, "{line}");
    }
    t
}
