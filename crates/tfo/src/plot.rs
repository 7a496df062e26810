//! The SVG plot of `tfo bench`: one panel per RTT and request size, each with
//! the latency distributions (CDFs) of plain TCP, cold TFO and warm TFO.

use plotters::prelude::*;

/// One panel: a title and its latency distributions.
#[derive(Debug)]
pub(crate) struct Panel {
    /// E.g. "RTT 100 ms, 64 B requests".
    pub(crate) title: String,
    pub(crate) plain: Vec<(f64, f64)>,
    pub(crate) tfo_cold: Vec<(f64, f64)>,
    pub(crate) tfo_warm: Vec<(f64, f64)>,
    /// `tfo bench --tls`: TFO with the request as TLS early data (0-RTT).
    pub(crate) tfo_early_data: Vec<(f64, f64)>,
}

const PLAIN_COLOR: RGBColor = RGBColor(214, 39, 40);
const TFO_COLOR: RGBColor = RGBColor(31, 119, 180);
const COLD_COLOR: RGBColor = RGBColor(150, 150, 150);
const EARLY_COLOR: RGBColor = RGBColor(44, 160, 44);

/// Writes the panels to `out`, two per row, and puts it in place.
pub(crate) fn latency_cdf(mut out: crate::output_file::OutputFile, rows: &[Panel]) -> anyhow::Result<()> {
    anyhow::ensure!(!rows.is_empty(), "no results to plot");
    let cols = rows.len().min(2);
    let grid_rows = rows.len().div_ceil(cols);
    let mut svg = String::new();
    {
        let size = (560 * cols as u32, 380 * grid_rows as u32 + 40);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(40);
        title.titled("Time to the full reply: plain TCP vs TCP Fast Open (CDF)", ("sans-serif", 22))?;
        for (row, area) in rows.iter().zip(body.split_evenly((grid_rows, cols))) {
            panel(&area, row)?;
        }
        root.present()?;
    }
    std::io::Write::write_all(out.file(), svg.as_bytes())?;
    out.commit()
}

fn panel(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, r: &Panel) -> anyhow::Result<()> {
    let lines = [
        (&r.plain, PLAIN_COLOR, "plain TCP"),
        (&r.tfo_cold, COLD_COLOR, "TFO, cold (cookie request)"),
        (&r.tfo_warm, TFO_COLOR, "TFO, request in the SYN"),
        (&r.tfo_early_data, EARLY_COLOR, "TFO + TLS 0-RTT"),
    ];
    let (lo, hi) = lines
        .iter()
        .flat_map(|(pts, _, _)| pts.iter())
        .fold((f64::MAX, f64::MIN), |(lo, hi), (x, _)| (lo.min(*x), hi.max(*x)));
    if lo > hi {
        return Ok(());
    }
    let pad = ((hi - lo) * 0.05).max(0.05);
    let mut chart = ChartBuilder::on(area)
        .caption(&r.title, ("sans-serif", 16))
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
    for (pts, color, label) in &lines {
        if pts.is_empty() {
            continue;
        }
        // A step line: each value holds until the next.
        let mut steps = Vec::with_capacity(pts.len() * 2 + 1);
        let mut prev = 0.0;
        for &(x, y) in pts.iter() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panel_draws_its_three_distributions() {
        let path = std::env::temp_dir().join(format!("tfo-plot-{}.svg", std::process::id()));
        let cdf = |base: f64| (1..=10).map(|i| (base + f64::from(i), f64::from(i) / 10.0)).collect::<Vec<_>>();
        let panel = Panel {
            title: "RTT 10 ms, 64 B requests".into(),
            plain: cdf(20.0),
            tfo_cold: cdf(20.0),
            tfo_warm: cdf(10.0),
            tfo_early_data: Vec::new(),
        };
        latency_cdf(crate::output_file::OutputFile::create(&path).unwrap(), &[panel]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in ["RTT 10 ms, 64 B requests", "plain TCP", "TFO, cold (cookie request)", "TFO, request in the SYN"] {
            assert!(svg.contains(text), "{text} missing");
        }
        let out = crate::output_file::OutputFile::create(&path).unwrap();
        assert!(latency_cdf(out, &[]).is_err(), "nothing to plot is an error");
        assert!(svg.len() > 1000 && std::fs::read_to_string(&path).unwrap() == svg, "a failed plot keeps the old file");
        let _ = std::fs::remove_file(&path);
    }
}
