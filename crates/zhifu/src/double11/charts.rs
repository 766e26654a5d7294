//! PNG charts of a run (plotters, with a font embedded so that a machine
//! without fonts draws them too).

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::FontStyle;
use sim::MILESTONES_2013;

use super::tally::Tally;

/// DejaVu Sans (Bitstream Vera licence, in assets/ beside it).
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (960, 420);

pub struct Chart {
    pub title: String,
    pub path: PathBuf,
}

fn failed(error: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("drawing a chart: {error:?}")
}

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The font is a constant; if it were refused, text would be missing, not wrong.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

struct Series<'a> {
    name: &'a str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// A line chart with linear axes.
fn line_chart(path: &Path, title: &str, x: (&str, f64), y_label: &str, series: &[Series<'_>]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let y_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max).max(1e-9) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x.1.max(1e-9), 0f64..y_max)
        .map_err(failed)?;
    chart.configure_mesh().x_desc(x.0).y_desc(y_label).draw().map_err(failed)?;
    for line in series {
        let color = line.color;
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
            .map_err(failed)?
            .label(line.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}

/// Cumulative GMV (scaled to the full day) on a logarithmic time axis, with
/// 2013's milestones.
fn gmv_chart(path: &Path, title: &str, tally: &Tally, scale: f64) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((30f64..86_400f64).log_scale(), (0.05f64..60f64).log_scale())
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("seconds since midnight (log)")
        .y_desc("billion yuan, full-day equivalent (log)")
        .draw()
        .map_err(failed)?;
    let mut cumulative = 0u64;
    let points: Vec<(f64, f64)> = tally
        .minutes
        .iter()
        .enumerate()
        .map(|(minute, slot)| {
            cumulative += slot.gmv;
            ((minute as f64 + 1.0) * 60.0, (cumulative as f64 / 1e11 / scale).max(0.05))
        })
        .collect();
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(failed)?
        .label("zhifu's simulated day")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let milestones: Vec<(f64, f64, &str)> =
        MILESTONES_2013.iter().map(|m| (m.seconds as f64, m.gmv_fen as f64 / 1e11, m.label)).collect();
    chart
        .draw_series(milestones.iter().map(|&(x, y, _)| Circle::new((x, y), 5, RED.filled())))
        .map_err(failed)?
        .label("2013's milestones")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
    chart
        .draw_series(
            milestones.iter().map(|&(x, y, label)| {
                Text::new(label.to_string(), (x * 0.55, y * 1.35), ("sans-serif", 13).into_font())
            }),
        )
        .map_err(failed)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}

pub fn draw(dir: &Path, tally: &Tally, scale: f64) -> anyhow::Result<Vec<Chart>> {
    register_font();
    let hour = |minute: usize| minute as f64 / 60.0;
    let mut charts = Vec::new();

    let title = format!("Payments per simulated second, by minute of the day (scale {scale})");
    let path = dir.join("payments.png");
    let per_second = tally.minutes.iter().enumerate().map(|(m, slot)| (hour(m), slot.payments as f64 / 60.0)).collect();
    line_chart(
        &path,
        &title,
        ("hour of the simulated day", 24.0),
        "payments per second",
        &[Series { name: "payments/s (simulated time)", color: BLUE, points: per_second }],
    )?;
    charts.push(Chart { title, path });

    let title = "Payments answered per wall-clock second while replaying the day".to_string();
    let path = dir.join("throughput.png");
    let answered: Vec<(f64, f64)> =
        tally.wall_seconds.iter().enumerate().map(|(second, &count)| (second as f64, count as f64)).collect();
    let seconds = answered.len() as f64;
    line_chart(
        &path,
        &title,
        ("seconds of the run", seconds),
        "payments per second",
        &[Series { name: "payments answered", color: GREEN, points: answered }],
    )?;
    charts.push(Chart { title, path });

    let title = "Latency (submitted → durable and applied), by minute of the simulated day".to_string();
    let path = dir.join("latency.png");
    let quantile = |q: f64| -> Vec<(f64, f64)> {
        tally
            .minutes
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.latency.is_empty())
            .map(|(m, slot)| (hour(m), slot.latency.value_at_quantile(q) as f64 / 1_000.0))
            .collect()
    };
    line_chart(
        &path,
        &title,
        ("hour of the simulated day", 24.0),
        "milliseconds",
        &[
            Series { name: "p50", color: BLUE, points: quantile(0.5) },
            Series { name: "p99", color: MAGENTA, points: quantile(0.99) },
            Series { name: "p999", color: RED, points: quantile(0.999) },
        ],
    )?;
    charts.push(Chart { title, path });

    let title = "GMV accumulating through the day, against 2013's real milestones".to_string();
    let path = dir.join("gmv.png");
    gmv_chart(&path, &title, tally, scale)?;
    charts.push(Chart { title, path });
    Ok(charts)
}
