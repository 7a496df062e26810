//! The SVG plot of `tfo bench`: latency distributions (CDFs) of plain TCP and
//! TFO, one pair per RTT and size, on a log time axis.

use std::path::Path;

use plotters::prelude::*;

use crate::cmd::bench::Row;

const PLAIN_COLOR: RGBColor = RGBColor(214, 39, 40);
const TFO_COLOR: RGBColor = RGBColor(31, 119, 180);
const COLD_COLOR: RGBColor = RGBColor(150, 150, 150);

/// Writes the CDF plot of every row to `path`.
pub(crate) fn latency_cdf(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let (mut lo, mut hi) = (f64::MAX, 0.0f64);
    for r in rows {
        for s in r.series.iter() {
            for (x, _) in s.cdf() {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
    }
    anyhow::ensure!(hi > 0.0, "no samples to plot");
    let (lo, hi) = ((lo * 0.8).max(0.001), hi * 1.25);
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Time to the full reply: plain TCP vs TCP Fast Open", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("time to the full reply (ms, log scale)")
        .y_desc("fraction of requests (CDF)")
        .x_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;
    let mut legend_done = [false; 3];
    for r in rows {
        let lines = [
            (&r.series[0], PLAIN_COLOR, "plain TCP (2 round trips)"),
            (&r.series[2], COLD_COLOR, "TFO, cold (cookie request)"),
            (&r.series[1], TFO_COLOR, "TFO, request in the SYN (1 round trip)"),
        ];
        for (i, (series, color, label)) in lines.into_iter().enumerate() {
            let points = series.cdf();
            if points.is_empty() {
                continue;
            }
            let style = color.stroke_width(if i == 1 { 1 } else { 2 });
            let drawn = chart.draw_series(LineSeries::new(points, style))?;
            if !legend_done[i] {
                drawn
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
                legend_done[i] = true;
            }
        }
        if let Some(p) = r.plain {
            let text = format!("RTT {} ms, {} B", r.rtt_ms, r.size);
            chart.draw_series(std::iter::once(Text::new(text, (p.p50_ms * 0.97, 0.08), ("sans-serif", 13))))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}
