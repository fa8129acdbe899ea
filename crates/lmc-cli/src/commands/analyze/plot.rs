//! The plots of `lmc analyze`, as SVG (plotters): compression ratio and
//! per-plane entropy over the training steps of a series (or, for a single
//! file, bars per dtype and plane), and the exponent histogram of the last
//! file. Each is drawn into memory and written atomically: a temporary file
//! in the destination folder, renamed into place when complete.

use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::summary::{FileReport, Ratios, dtype_planes, totals_ratios};
use crate::io::Output;

pub const RATIO: &str = "lmc-analyze-ratio.svg";
pub const ENTROPY: &str = "lmc-analyze-entropy.svg";
pub const EXPONENTS: &str = "lmc-analyze-exponents.svg";
const NAMES: [&str; 3] = [RATIO, ENTROPY, EXPONENTS];

const SIZE: (u32, u32) = (1200, 620);
/// Width of the legend column right of each chart.
const LEGEND_WIDTH: u32 = 330;

/// Checks, before any work, that the plots can be written into `dir` and
/// would not replace one of the `inputs`.
pub fn check_dir(dir: &Path, inputs: &[PathBuf]) -> Result<()> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot use {} for the plots", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "cannot use {} for the plots: not a directory",
            dir.display()
        );
    }
    tempfile::Builder::new()
        .prefix(".lmc-analyze-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write the plots into {}", dir.display()))?;
    for name in NAMES {
        let plot = dir.join(name);
        let Ok(plot_real) = plot.canonicalize() else {
            continue;
        };
        if let Some(input) = inputs
            .iter()
            .find(|i| i.canonicalize().is_ok_and(|i| i == plot_real))
        {
            bail!(
                "the plot {} would replace the input {}",
                plot.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Draws the three plots of `files` (a series in training order, at least
/// one file) and writes them into `dir`. Returns their paths.
pub fn write_all(dir: &Path, files: &[FileReport]) -> Result<Vec<PathBuf>> {
    let Some(last) = files.last() else {
        bail!("no files to plot");
    };
    let svgs = [
        (RATIO, ratio_svg(files)?),
        (ENTROPY, entropy_svg(files)?),
        (EXPONENTS, exponent_svg(last)?),
    ];
    let mut written = Vec::new();
    for (name, svg) in svgs {
        let path = dir.join(name);
        write_atomic(&path, &last.path, &svg)
            .with_context(|| format!("cannot write the plot {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn write_atomic(path: &Path, input: &Path, svg: &str) -> Result<()> {
    let mut out = Output::create(path, input, true)?;
    out.write_all(svg.as_bytes())?;
    out.commit()
}

/// Turns a plotters error into ours (its error type borrows nothing, but
/// is not always `Send + Sync`).
fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// A named line of points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A group of bars, one per series.
struct BarGroup {
    label: String,
    values: Vec<f64>,
}

/// The y axis: linear, or logarithmic where values span a wide range
/// (an all-zero optimizer state compresses thousands of times).
enum YAxis {
    Linear(Range<f64>),
    Log(Range<f64>),
}

/// A y axis for ratios: includes 1 (no compression), log when the largest
/// is more than 20 times the smallest.
fn ratio_axis(values: impl Iterator<Item = f64>, from_zero: bool) -> YAxis {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((1.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi / lo > 20.0 {
        YAxis::Log(lo / 1.5..hi * 1.5)
    } else if from_zero {
        YAxis::Linear(0.0..hi * 1.1)
    } else {
        YAxis::Linear(lo * 0.95..hi * 1.05 + 0.01)
    }
}

/// Colours that stay apart on white (matplotlib's "tab10"), cycled.
const COLORS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn color(i: usize) -> RGBAColor {
    let (r, g, b) = COLORS[i % COLORS.len()];
    RGBColor(r, g, b).to_rgba()
}

/// Splits off the legend column and draws `names` into it (a name may
/// have further lines after a `\n`, drawn smaller below it).
fn legend<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    names: &[String],
) -> Result<DrawingArea<SVGBackend<'a>, Shift>> {
    let (chart, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let mut y = 70;
    for (i, name) in names.iter().enumerate() {
        let c = color(i);
        side.draw(&PathElement::new(vec![(8, y), (36, y)], c.stroke_width(3)))
            .map_err(drawing)?;
        let mut lines = name.lines();
        let first = lines.next().unwrap_or_default().to_string();
        side.draw(&Text::new(
            first,
            (44, y - 7),
            ("sans-serif", 15).into_font(),
        ))
        .map_err(drawing)?;
        for more in lines {
            y += 16;
            side.draw(&Text::new(
                more.to_string(),
                (44, y - 6),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(drawing)?;
        }
        y += 22;
    }
    Ok(chart)
}

/// A line chart of `series` over a numeric x axis.
fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y: YAxis,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
        let area = legend(&root, &names)?;
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        let (x0, x1) = if x0.is_finite() { (x0, x1) } else { (0.0, 1.0) };
        let pad = ((x1 - x0) * 0.03).max(0.5);
        let x = x0 - pad..x1 + pad;
        match y {
            YAxis::Linear(r) => draw_lines(&area, title, x_desc, y_desc, x, r, series)?,
            YAxis::Log(r) => draw_lines(&area, title, x_desc, y_desc, x, r.log_scale(), series)?,
        }
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

fn draw_lines<Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x: Range<f64>,
    y: Y,
    series: &[Series],
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .draw()
        .map_err(drawing)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(drawing)?;
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(drawing)?;
    }
    Ok(())
}

/// A chart of groups of bars, one bar per series name in each group.
fn bar_chart(
    title: &str,
    y_desc: &str,
    names: &[String],
    groups: &[BarGroup],
    y: YAxis,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let area = legend(&root, names)?;
        match y {
            YAxis::Linear(r) => {
                let base = r.start;
                draw_bars(&area, title, y_desc, groups, r, base)?
            }
            YAxis::Log(r) => {
                let base = r.start;
                draw_bars(&area, title, y_desc, groups, r.log_scale(), base)?
            }
        }
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

fn draw_bars<Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    groups: &[BarGroup],
    y: Y,
    base: f64,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let n = groups.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, y)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .draw()
        .map_err(drawing)?;
    // The group names, centred under each group (plotters puts tick labels
    // at round numbers, not at given places, on a continuous axis).
    let (_, y_pixels) = chart.plotting_area().get_pixel_range();
    for (g, group) in groups.iter().enumerate() {
        let (px, _) = chart.backend_coord(&(g as f64 + 0.5, base));
        let style = ("sans-serif", 14)
            .into_font()
            .into_text_style(area)
            .pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(
            group.label.clone(),
            (px, y_pixels.end + 8),
            style,
        ))
        .map_err(drawing)?;
    }
    for (g, group) in groups.iter().enumerate() {
        let k = group.values.len().max(1) as f64;
        let w = 0.8 / k;
        for (s, &v) in group.values.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let x0 = g as f64 + 0.1 + w * s as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, base), (x0 + w * 0.9, v)],
                    color(s).filled(),
                )))
                .map_err(drawing)?;
        }
    }
    Ok(())
}

/// Compression ratio over the steps; for one file, bars per dtype.
fn ratio_svg(files: &[FileReport]) -> Result<String> {
    let names = [
        "lmc",
        "zstd -3",
        "zstd -3 on byte planes",
        "order-0 bound",
        "lmc on XOR delta",
    ];
    let pick = |r: &Ratios| {
        [
            r.lmc,
            r.zstd,
            r.zstd_grouped,
            r.bound,
            r.xor_delta.unwrap_or(f64::NAN),
        ]
    };
    if let [f] = files {
        let mut groups = vec![BarGroup {
            label: "whole file".into(),
            values: pick(&f.ratios())[..4].to_vec(),
        }];
        for (d, t) in f.dtypes.values() {
            groups.push(BarGroup {
                label: format!("{} ({})", d.name(), crate::commands::human(t.bytes)),
                values: pick(&totals_ratios(t))[..4].to_vec(),
            });
        }
        let y = ratio_axis(groups.iter().flat_map(|g| g.values.iter().copied()), true);
        let names: Vec<String> = names[..4].iter().map(|s| s.to_string()).collect();
        return bar_chart(
            &format!("Compression ratio: {}", file_name(&f.path)),
            "ratio (original / compressed)",
            &names,
            &groups,
            y,
        );
    }
    let series: Vec<Series> = names
        .iter()
        .enumerate()
        .map(|(k, name)| Series {
            name: name.to_string(),
            points: files
                .iter()
                .map(|f| (f.step as f64, pick(&f.ratios())[k]))
                .filter(|p| p.1.is_finite())
                .collect(),
        })
        .collect();
    let y = ratio_axis(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        false,
    );
    line_chart(
        &format!("Compression ratio over training ({} files)", files.len()),
        "training step",
        "ratio (original / compressed)",
        &series,
        y,
    )
}

/// Per-plane entropy over the steps; for one file, bars per dtype and plane.
fn entropy_svg(files: &[FileReport]) -> Result<String> {
    let cols = dtype_planes(files);
    if let [f] = files {
        let mut groups = Vec::new();
        for (d, k) in &cols {
            let Some(p) = f.dtypes.get(d).and_then(|(_, t)| t.planes.get(*k)) else {
                continue;
            };
            let lmc_bits = if p.len == 0 {
                f64::NAN
            } else {
                8.0 * p.lmc_bytes as f64 / p.len as f64
            };
            groups.push(BarGroup {
                label: format!("{d} p{k}"),
                values: vec![p.entropy(), lmc_bits],
            });
        }
        let names = vec![
            "order-0 entropy".to_string(),
            "lmc, stored bits per byte".to_string(),
        ];
        return bar_chart(
            &format!("Entropy of each byte plane: {}", file_name(&f.path)),
            "bits per byte (plane 0 = exponent byte of floats)",
            &names,
            &groups,
            YAxis::Linear(0.0..8.5),
        );
    }
    let series: Vec<Series> = cols
        .iter()
        .map(|(d, k)| Series {
            name: format!("{d} plane {k}"),
            points: files
                .iter()
                .filter_map(|f| {
                    let p = f.dtypes.get(d)?.1.planes.get(*k)?;
                    Some((f.step as f64, p.entropy()))
                })
                .collect(),
        })
        .collect();
    line_chart(
        &format!(
            "Entropy of each byte plane over training ({} files)",
            files.len()
        ),
        "training step",
        "bits per byte (plane 0 = exponent byte of floats)",
        &series,
        YAxis::Linear(0.0..8.5),
    )
}

/// The exponent histogram of each float dtype of `f`, as the fraction of
/// elements over the unbiased exponent.
fn exponent_svg(f: &FileReport) -> Result<String> {
    let mut series = Vec::new();
    for (d, t) in f.dtypes.values() {
        let Some(e) = &t.exponents else { continue };
        let total: u64 = e.counts.iter().sum();
        // The lowest field (zeros, subnormals) and the highest (infinities,
        // NaN) are named in the legend rather than drawn: a few zeros would
        // otherwise stretch the axis down to -bias.
        let top_field = e.counts.len() - 1;
        let used: Vec<usize> = (1..top_field).filter(|&i| e.counts[i] > 0).collect();
        let mut name = format!("{} ({} bits, bias {})", d.name(), e.bits, e.bias);
        let special = |n: u64| {
            let p = 100.0 * n as f64 / total.max(1) as f64;
            if p >= 0.01 {
                format!("{p:.2}%")
            } else {
                format!("{p:.1e}%")
            }
        };
        if e.counts[0] > 0 {
            let _ = write!(name, "\nzero or subnormal: {}", special(e.counts[0]));
        }
        if e.counts[top_field] > 0 {
            let _ = write!(name, "\ninfinite or NaN: {}", special(e.counts[top_field]));
        }
        let points = match (used.first(), used.last()) {
            (Some(&lo), Some(&hi)) => (lo..=hi)
                .map(|i| {
                    (
                        i as f64 - f64::from(e.bias),
                        e.counts[i] as f64 / total as f64,
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        series.push(Series { name, points });
    }
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let title = if series.is_empty() {
        format!("No float tensors in {}", file_name(&f.path))
    } else {
        format!(
            "Exponent histogram: {} (step {})",
            file_name(&f.path),
            f.step
        )
    };
    line_chart(
        &title,
        "exponent field minus bias (a normal value is about 2^x)",
        "fraction of elements",
        &series,
        YAxis::Linear(0.0..(top * 1.1).max(0.01)),
    )
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
