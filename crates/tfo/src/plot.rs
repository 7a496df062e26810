//! The SVG plot of `tfo bench`: one panel per RTT and request size, each with
//! the latency distributions (CDFs) of plain TCP, cold TFO and warm TFO.

use std::path::Path;

use plotters::prelude::*;

use crate::cmd::bench::Row;

const PLAIN_COLOR: RGBColor = RGBColor(214, 39, 40);
const TFO_COLOR: RGBColor = RGBColor(31, 119, 180);
const COLD_COLOR: RGBColor = RGBColor(150, 150, 150);

/// Writes the plot of every row to `path`.
pub(crate) fn latency_cdf(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    anyhow::ensure!(!rows.is_empty(), "no results to plot");
    let cols = rows.len().min(2);
    let grid_rows = rows.len().div_ceil(cols);
    let root = SVGBackend::new(path, (560 * cols as u32, 380 * grid_rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled("Time to the full reply: plain TCP vs TCP Fast Open (CDF)", ("sans-serif", 22))?;
    for (row, area) in rows.iter().zip(body.split_evenly((grid_rows, cols))) {
        panel(&area, row)?;
    }
    root.present()?;
    Ok(())
}

fn panel(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, r: &Row) -> anyhow::Result<()> {
    let lines = [
        (&r.series[0], PLAIN_COLOR, "plain TCP"),
        (&r.series[2], COLD_COLOR, "TFO, cold (cookie request)"),
        (&r.series[1], TFO_COLOR, "TFO, request in the SYN"),
    ];
    let points: Vec<Vec<(f64, f64)>> = lines.iter().map(|(s, _, _)| s.cdf()).collect();
    let (lo, hi) = points.iter().flatten().fold((f64::MAX, f64::MIN), |(lo, hi), (x, _)| (lo.min(*x), hi.max(*x)));
    if lo > hi {
        return Ok(());
    }
    let pad = ((hi - lo) * 0.05).max(0.05);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("RTT {} ms, {} B requests", r.rtt_ms, r.size), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(48)
        .build_cartesian_2d((lo - pad)..(hi + pad), 0.0..1.0)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_labels(6)
        .y_labels(6)
        .x_desc("time to the full reply (ms)")
        .y_desc("fraction of requests")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for ((_, color, label), pts) in lines.iter().zip(points) {
        if pts.is_empty() {
            continue;
        }
        // A step line: each value holds until the next.
        let mut steps = Vec::with_capacity(pts.len() * 2 + 1);
        let mut prev = 0.0;
        for (x, y) in pts {
            steps.push((x, prev));
            steps.push((x, y));
            prev = y;
        }
        let color = *color;
        chart
            .draw_series(LineSeries::new(steps, color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}
