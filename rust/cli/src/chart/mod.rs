//! The PNG chart of an order's report (`tokenloom order --png FILE`): the
//! histograms of adjacent-document similarity inside contexts, in the order
//! and in the random baseline, as fractions of pairs, bars side by side.
//! Drawn on a plain pixel canvas with a built-in bitmap font, so that the
//! binary needs no system fonts.

use std::fs::File;
use std::path::{Path, PathBuf};

use tokenloom_core::io::{fsync_dir, write_atomic};
use tokenloom_core::order::Report;
use tokenloom_core::Error;

mod canvas;

pub use canvas::{text_width, Canvas, Rgb, GLYPH};

/// Size of the chart, in pixels.
pub const WIDTH: u32 = 960;
/// Height of the chart, in pixels.
pub const HEIGHT: u32 = 540;
/// Bars of the order.
pub const ORDERED: Rgb = [31, 119, 180];
/// Bars of the random baseline.
pub const RANDOM: Rgb = [255, 127, 14];

const PAPER: Rgb = [255, 255, 255];
const INK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
/// Candidate steps between labelled fractions, smallest first.
const STEPS: [f64; 7] = [0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2];
/// At most this many steps up the fraction axis.
const MAX_TICKS: f64 = 6.0;

/// Where things go on the chart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    /// Histogram bins, over `[-1, 1]`.
    pub bins: u32,
    /// Left edge of the plot area (its first column).
    pub left: u32,
    /// Top edge of the plot area (the row of the highest fraction).
    pub top: u32,
    /// The row of fraction zero (the x axis), just below the bars.
    pub bottom: u32,
    /// Width of one bin's slot.
    pub slot: u32,
    /// Width of one bar.
    pub bar: u32,
    /// The highest fraction on the axis.
    pub y_max: f64,
    /// Step between labelled fractions.
    pub y_step: f64,
}

impl Layout {
    /// The layout of `bins` bins whose largest fraction is `peak`.
    pub fn new(bins: u32, peak: f64) -> Self {
        let (left, right) = (120, WIDTH - 20);
        let slot = ((right - left) / bins.max(1)).max(2);
        let (y_step, y_max) = axis(peak);
        Layout {
            bins,
            left,
            top: 96,
            bottom: HEIGHT - 64,
            slot,
            bar: ((slot - 2) / 2).max(1),
            y_max,
            y_step,
        }
    }

    /// Columns of the bar of `series` (0: order, 1: random) in `bin`.
    pub fn bar_columns(&self, bin: u32, series: u32) -> std::ops::Range<u32> {
        let x = self.left + bin * self.slot + 1 + series * self.bar;
        x..x + self.bar
    }

    /// Right edge of the plot area (one past its last column).
    pub fn right(&self) -> u32 {
        self.left + self.bins * self.slot
    }

    /// Height in pixels of a bar for `fraction` (at least 1 when above zero).
    pub fn bar_height(&self, fraction: f64) -> u32 {
        let h = (fraction / self.y_max * (self.bottom - self.top) as f64).round() as u32;
        if fraction > 0.0 {
            h.clamp(1, self.bottom - self.top)
        } else {
            0
        }
    }

    fn row_of(&self, fraction: f64) -> u32 {
        self.bottom - self.bar_height(fraction)
    }
}

/// The step and the top of the fraction axis for a largest fraction `peak`.
fn axis(peak: f64) -> (f64, f64) {
    if peak <= 0.0 {
        return (0.2, 1.0);
    }
    let step = STEPS
        .iter()
        .copied()
        .find(|s| (peak / s).ceil() <= MAX_TICKS)
        .unwrap_or(0.2);
    (step, ((peak / step).ceil() * step).min(1.0))
}

/// The histogram as fractions of its pairs.
pub fn fractions(histogram: &[u64]) -> Vec<f64> {
    let total = histogram.iter().sum::<u64>().max(1) as f64;
    histogram.iter().map(|&h| h as f64 / total).collect()
}

/// Draws the report's two similarity histograms.
pub fn render(report: &Report) -> Result<Canvas, Error> {
    let (o, r) = (
        &report.ordered_pairs.histogram,
        &report.random_pairs.histogram,
    );
    if o.is_empty() || o.len() != r.len() || o.len() > 400 {
        return Err(Error::invalid(
            "report",
            format!(
                "its histograms have {} and {} bins (want the same number, 1 to 400); make the order again with this version of tokenloom",
                o.len(),
                r.len()
            ),
        ));
    }
    let series = [fractions(o), fractions(r)];
    let peak = series.iter().flatten().copied().fold(0.0, f64::max);
    let l = Layout::new(o.len() as u32, peak);
    let mut c = Canvas::new(WIDTH, HEIGHT, PAPER);
    header(&mut c, report);
    axes(&mut c, &l);
    for (s, (fr, color)) in series.iter().zip([ORDERED, RANDOM]).enumerate() {
        for (bin, &f) in fr.iter().enumerate() {
            let cols = l.bar_columns(bin as u32, s as u32);
            c.fill(cols.start, l.row_of(f), cols.end, l.bottom, color);
        }
    }
    Ok(c)
}

/// Title, subtitle and legend, above the plot.
fn header(c: &mut Canvas, r: &Report) {
    let ratio = if r.similarity_ratio > 0.0 {
        format!("{:.2}x", r.similarity_ratio)
    } else {
        "ratio n/a".into()
    };
    let title = format!(
        "Adjacent similarity {:.3} vs {:.3} at random ({ratio})",
        r.ordered_pairs.mean_similarity, r.random_pairs.mean_similarity
    );
    centered(c, 10, &title, 2);
    let sub = format!(
        "{} documents ordered; {} adjacent pairs inside contexts, {} measured (similarity from {})",
        r.ordered, r.ordered_pairs.pairs, r.ordered_pairs.measured, r.similarity_source
    );
    centered(c, 34, &sub, 1);
    let entries = [
        (
            ORDERED,
            format!("ordered (mean {:.3})", r.ordered_pairs.mean_similarity),
        ),
        (
            RANDOM,
            format!("random (mean {:.3})", r.random_pairs.mean_similarity),
        ),
    ];
    let swatch = 2 * GLYPH;
    let gap = 3 * GLYPH;
    let total: u32 = entries
        .iter()
        .map(|(_, t)| swatch + GLYPH + text_width(t, 2))
        .sum::<u32>()
        + gap;
    let mut x = WIDTH.saturating_sub(total) / 2;
    for (color, text) in &entries {
        c.fill(x, 56, x + swatch, 56 + swatch, *color);
        c.text(x + swatch + GLYPH, 56, text, 2, INK);
        x += swatch + GLYPH + text_width(text, 2) + gap;
    }
}

/// Grid, axes, tick labels and axis names.
fn axes(c: &mut Canvas, l: &Layout) {
    let right = l.right();
    let steps = (l.y_max / l.y_step).round() as u32;
    let decimals = if (l.y_step * 100.0).fract().abs() > 1e-9 {
        3
    } else if (l.y_step * 10.0).fract().abs() > 1e-9 {
        2
    } else {
        1
    };
    for i in 0..=steps {
        let f = i as f64 * l.y_step;
        let y = l.bottom - ((f / l.y_max) * (l.bottom - l.top) as f64).round() as u32;
        if i > 0 {
            c.fill(l.left, y, right, y + 1, GRID);
        }
        c.fill(l.left - 5, y, l.left, y + 1, INK);
        let label = format!("{f:.decimals$}");
        let w = text_width(&label, 2);
        c.text(l.left - 8 - w, y.saturating_sub(GLYPH), &label, 2, INK);
    }
    // Ticks every 0.25, labels every 0.5.
    for q in 0..=8u32 {
        let x = l.left + (q * l.bins * l.slot) / 8;
        let labelled = q % 2 == 0;
        c.fill(
            x,
            l.bottom,
            x + 1,
            l.bottom + if labelled { 6 } else { 4 },
            INK,
        );
        if labelled {
            let label = format!("{}", -1.0 + 0.25 * q as f64);
            let w = text_width(&label, 2);
            c.text(x.saturating_sub(w / 2), l.bottom + 9, &label, 2, INK);
        }
    }
    c.fill(l.left, l.bottom, right, l.bottom + 1, INK);
    c.fill(l.left - 1, l.top, l.left, l.bottom + 1, INK);
    let xname = "similarity of adjacent documents in a context";
    let mid = (l.left + right) / 2;
    c.text(mid - text_width(xname, 2) / 2, l.bottom + 32, xname, 2, INK);
    let yname = "fraction of pairs";
    let ymid = (l.top + l.bottom) / 2;
    c.text_up(8, ymid + text_width(yname, 2) / 2, yname, 2, INK);
}

/// Draws `text` centred across the chart at row `y`, at `scale` or, when it
/// does not fit, at scale 1.
fn centered(c: &mut Canvas, y: u32, text: &str, scale: u32) {
    let scale = if text_width(text, scale) + 16 > WIDTH {
        1
    } else {
        scale
    };
    let w = text_width(text, scale);
    c.text(WIDTH.saturating_sub(w) / 2, y, text, scale, INK);
}

/// Checks, before any work, that the chart can be written to `path`:
/// a file name in an existing, writable directory.
pub fn check_destination(path: &Path) -> Result<(), Error> {
    let bad = |reason: String| Error::invalid("--png", format!("{}: {reason}", path.display()));
    if path.is_dir() {
        return Err(bad(
            "is a directory; give a file name, such as order.png inside it".into(),
        ));
    }
    let dir = directory_of(path);
    if !dir.is_dir() {
        return Err(bad(format!(
            "the directory {} does not exist; create it first (mkdir -p {}) or choose another path",
            dir.display(),
            dir.display()
        )));
    }
    let tmp = temp_path(path);
    File::create(&tmp).map_err(|e| {
        bad(format!(
            "cannot create files in {} ({e}); choose a directory you can write to",
            dir.display()
        ))
    })?;
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

/// Renders the report and writes the chart to `path` atomically (a temporary
/// file in the same directory, fsynced, renamed over `path`, directory fsynced).
pub fn write_png(report: &Report, path: &Path) -> Result<(), Error> {
    let bytes = render(report)?
        .to_png()
        .map_err(|e| Error::invalid("--png", format!("cannot encode the chart: {e}")))?;
    write_atomic(&temp_path(path), path, &bytes)
        .and_then(|()| fsync_dir(&directory_of(path)))
        .map_err(|e| match e {
            // Name the chart, not its temporary file or directory.
            Error::Io { source, .. } => Error::io(path, source),
            other => other,
        })
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "chart.png".into());
    directory_of(path).join(format!(".tmp.{name}.{}", std::process::id()))
}

#[cfg(test)]
mod tests;
