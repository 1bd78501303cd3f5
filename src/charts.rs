//! Charts shared by stages and commands: per-attribute positive counts of
//! one or more label sets (Fig. 4 of Liu et al.), as PNG or SVG by extension.
//! Attributes are ordered by the first series' counts, most frequent first,
//! which shows the long tail as the paper's figure does, and labelled with the
//! abbreviations of its Sec. V-A.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::data::schema::{ABBREVIATIONS, N_ATTRIBUTES};

pub struct Series {
    pub name: String,
    /// Positives per attribute, in `ATTRIBUTES` order.
    pub counts: Vec<u64>,
}

/// matplotlib's "tab10" then two more, so that up to 12 series differ.
const COLOURS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 128, 0),
];

/// Where a chart can be written: a `.png` or `.svg` file in an existing
/// folder; otherwise the one line to show the user.
pub fn check_output(path: &Path) -> std::result::Result<(), String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "png" | "svg") {
        return Err(format!(
            "{}: a chart is written as .png or .svg, not {:?}",
            path.display(),
            ext
        ));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(format!(
            "{}: the folder {} does not exist; create it first",
            path.display(),
            folder.display()
        ));
    }
    if path.is_dir() {
        return Err(format!(
            "{}: is a folder; name a .png or .svg file",
            path.display()
        ));
    }
    Ok(())
}

pub fn label_counts(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    let bars: Vec<(String, Vec<f64>)> = series
        .iter()
        .map(|s| (s.name.clone(), s.counts.iter().map(|&c| c as f64).collect()))
        .collect();
    bar_chart(path, title, "positives", &bars, None, &[])
}

/// A 95% interval per attribute (None where not measured), drawn as a
/// whisker on each bar.
pub type Whiskers = Vec<Option<[f64; 2]>>;

/// Per-attribute accuracy of several classifiers, like Fig. 9 of Liu et
/// al.: one group of bars per attribute, in the CelebA file's order, with
/// each bar's interval as a whisker when given.
pub fn per_attribute(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<f64>)],
    whiskers: &[Whiskers],
) -> Result<()> {
    bar_chart(path, title, y_desc, series, Some(1.0), whiskers)
}

/// Grouped bars, one group per attribute. Without `ymax` the attributes are
/// ordered by the first series, largest first (the long tail of Fig. 4).
fn bar_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<f64>)],
    ymax: Option<f64>,
    whiskers: &[Whiskers],
) -> Result<()> {
    let size = (1400u32, 560u32);
    let is_svg = path.extension().and_then(|e| e.to_str()) == Some("svg");
    if is_svg {
        draw(
            SVGBackend::new(path, size).into_drawing_area(),
            title,
            y_desc,
            series,
            ymax,
            whiskers,
        )
    } else {
        draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            title,
            y_desc,
            series,
            ymax,
            whiskers,
        )
    }
    .with_context(|| format!("drawing {}", path.display()))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<f64>)],
    fixed_ymax: Option<f64>,
    whiskers: &[Whiskers],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    // Display, not Debug: one line such as "Drawing backend error: ...".
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let first = series
        .first()
        .map(|s| s.1.clone())
        .unwrap_or_else(|| vec![0.0; N_ATTRIBUTES]);
    let mut order: Vec<usize> = (0..N_ATTRIBUTES).collect();
    if fixed_ymax.is_none() {
        order.sort_by(|&a, &b| first[b].total_cmp(&first[a]).then(a.cmp(&b)));
    }
    let ymax = fixed_ymax.unwrap_or_else(|| {
        series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(1.0, f64::max)
            * 1.08
    });
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..N_ATTRIBUTES as f64, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|y| {
            if ymax <= 1.0 {
                format!("{y:.1}")
            } else {
                format!("{y:.0}")
            }
        })
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    // One abbreviation under each group of bars (plotters' own labels skip some).
    let style =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (pos, &a) in order.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(pos as f64 + 0.5, 0.0));
        root.draw(&Text::new(ABBREVIATIONS[a], (px, py + 6), style.clone()))
            .map_err(err)?;
    }
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    for (s_idx, s) in series.iter().enumerate() {
        let colour = COLOURS[s_idx % COLOURS.len()];
        let bars = order.iter().enumerate().map(|(pos, &a)| {
            let x0 = pos as f64 + 0.1 + width * s_idx as f64;
            Rectangle::new([(x0, 0.0), (x0 + width, s.1[a])], colour.filled())
        });
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(s.0.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        let Some(w) = whiskers.get(s_idx) else {
            continue;
        };
        let lines = order.iter().enumerate().filter_map(|(pos, &a)| {
            let [lo, hi] = (*w.get(a)?)?;
            let x = pos as f64 + 0.1 + width * (s_idx as f64 + 0.5);
            Some(PathElement::new(
                vec![(x, lo), (x, hi)],
                BLACK.stroke_width(1),
            ))
        });
        chart.draw_series(lines).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(if fixed_ymax.is_some() {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
