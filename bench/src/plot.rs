//! Draws latency percentiles against subscriber count as a PNG, with
//! plotters' bitmap backend and a TrueType font read from a file (so it
//! needs neither fontconfig nor any system font lookup; Debian's
//! fonts-dejavu-core provides the default).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// One target's curve: (subscribers, p50 ms, p99 ms) per point.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
}

pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn load_font(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|error| format!("font {}: {error}", path.display()))?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("font {}: not a font", path.display()))
}

/// Writes the plot of `series` to `out` (PNG), log-scaled on both axes.
pub fn latency_vs_subscribers(out: &Path, title: &str, series: &[Series], font: &Path) -> Result<(), String> {
    load_font(font)?;
    let points = series.iter().flat_map(|series| series.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::MAX, 0.0f64);
    for &(n, p50, p99) in points {
        x_max = x_max.max(n);
        y_min = y_min.min(p50.min(p99));
        y_max = y_max.max(p50.max(p99));
    }
    if y_max <= 0.0 {
        return Err("nothing to plot".to_owned());
    }
    let x_min = series
        .iter()
        .flat_map(|series| series.points.iter().map(|point| point.0))
        .fold(f64::MAX, f64::min)
        .max(1.0);
    let y_range = (y_min.max(0.01) / 2.0)..(y_max * 2.0);
    let root = BitMapBackend::new(out, (1000, 640)).into_drawing_area();
    let draw_error = |error: DrawingAreaErrorKind<_>| format!("plot: {error:?}");
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x_min / 1.5..x_max * 1.5).log_scale(), y_range.log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("subscribers on one job")
        .y_desc("delivery latency (ms)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .x_label_formatter(&|n| format!("{n:.0}"))
        .y_label_formatter(&|ms| format!("{ms}"))
        .draw()
        .map_err(draw_error)?;
    let colours = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
    ];
    for (index, series) in series.iter().enumerate() {
        let colour = colours[index % colours.len()];
        let p99: Vec<(f64, f64)> = series.points.iter().map(|&(n, _, p99)| (n, p99)).collect();
        let p50: Vec<(f64, f64)> = series.points.iter().map(|&(n, p50, _)| (n, p50)).collect();
        chart
            .draw_series(LineSeries::new(p99.clone(), colour.stroke_width(3)))
            .map_err(draw_error)?
            .label(format!("{} p99", series.name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
        chart
            .draw_series(p99.iter().map(|&point| Circle::new(point, 4, colour.filled())))
            .map_err(draw_error)?;
        chart
            .draw_series(DashedLineSeries::new(p50.clone(), 6, 4, colour.stroke_width(1)))
            .map_err(draw_error)?
            .label(format!("{} p50", series.name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(1)));
        chart
            .draw_series(p50.iter().map(|&point| TriangleMarker::new(point, 4, colour)))
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}
