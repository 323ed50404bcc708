//! Figure 4: ROC curves of each metric as a cheat detector (higher value = cheating), with the
//! area under each curve, so the best-separating metric is visible at a glance.

use std::path::Path;

use plotters::prelude::*;

use super::axis::TickedRange;
use super::metric::CheckMetric;
use super::style::{
    draw_legend_column, draw_title, ensure_fonts, font, series_color, LegendEntry, LegendMark,
    AXIS_DESC_SIZE, BACKGROUND, FIGURE_SIZE, GRID_COLOR, MUTED_TEXT, NOTE_SIZE, TICK_LABEL_SIZE,
};
use crate::stats::optimize::OptimizationReport;

/// One ROC curve: (false positive rate, true positive rate) points from (0, 0) to (1, 1).
#[derive(Debug, Clone, PartialEq)]
pub struct RocCurve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Area under the curve; computed from the points when not given.
    pub auc: Option<f64>,
}

impl RocCurve {
    /// The given AUC, else the trapezoidal area under the points.
    pub fn area(&self) -> f64 {
        self.auc.unwrap_or_else(|| trapezoid_area(&self.points))
    }
}

/// Area under a polyline of (x, y) points, in the order given.
pub fn trapezoid_area(points: &[(f64, f64)]) -> f64 {
    points
        .windows(2)
        .map(|pair| (pair[1].0 - pair[0].0) * (pair[1].1 + pair[0].1) / 2.0)
        .sum()
}

/// One curve per metric of the report that has ROC points, labelled with the metric's title.
pub fn roc_curves_from_report(report: &OptimizationReport) -> Vec<RocCurve> {
    report
        .metrics
        .iter()
        .filter(|m| m.roc.len() >= 2)
        .map(|m| {
            // Cosine similarity is reported by the optimizer but drawn in no other figure.
            let title = match m.metric.as_str() {
                "cosine" => "cosine similarity".to_string(),
                name => name
                    .parse::<CheckMetric>()
                    .map(|metric| metric.title().to_string())
                    .unwrap_or_else(|_| name.to_string()),
            };
            RocCurve {
                label: title,
                points: m.roc.clone(),
                auc: m.auc,
            }
        })
        .collect()
}

/// 0..1 with ticks every 0.2, padded so wide curves along the edges are not cut in half.
fn unit_axis() -> TickedRange {
    TickedRange::new(-0.015, 1.015, (0..=5).map(|k| k as f64 / 5.0).collect())
}

/// Draws the curves (best AUC first in the legend) with the chance diagonal.
pub fn plot_roc_curves(title: &str, curves: &[RocCurve], path: &Path) -> anyhow::Result<()> {
    ensure_fonts()?;
    anyhow::ensure!(!curves.is_empty(), "no ROC curves to draw");
    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    root.fill(&BACKGROUND)?;
    let body = draw_title(
        &root,
        title,
        Some("each curve sweeps a threshold on one metric; point = (honest checks flagged, cheating checks caught)"),
    )?;
    let (_, body_height) = body.dim_in_pixel();
    // A square plot (ROC axes share a unit) on the left, the legend on the right.
    let (chart_area, legend_area) = body.split_horizontally(body_height + 60);

    let mut chart = ChartBuilder::on(&chart_area)
        .margin(20)
        .x_label_area_size(70)
        .y_label_area_size(90)
        .build_cartesian_2d(unit_axis(), unit_axis())?;
    chart
        .configure_mesh()
        .bold_line_style(GRID_COLOR)
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|v: &f64| format!("{v:.1}"))
        .y_label_formatter(&|v: &f64| format!("{v:.1}"))
        .x_desc("false positive rate (honest checks flagged)")
        .y_desc("true positive rate (cheating checks caught)")
        .label_style(font(TICK_LABEL_SIZE))
        .axis_desc_style(font(AXIS_DESC_SIZE))
        .draw()?;
    chart.draw_series(DashedLineSeries::new(
        [(0.0, 0.0), (1.0, 1.0)],
        12,
        8,
        MUTED_TEXT.stroke_width(2),
    ))?;

    let mut order: Vec<usize> = (0..curves.len()).collect();
    order.sort_by(|&a, &b| curves[b].area().total_cmp(&curves[a].area()));
    // Curves often coincide (several perfect detectors), so earlier ones are drawn wider and
    // stay visible around the later, thinner ones.
    let count = order.len();
    for (rank, &index) in order.iter().enumerate() {
        let width = 3 + 2 * (count - 1 - rank) as u32;
        let points: Vec<(f64, f64)> = curves[index]
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart.draw_series(LineSeries::new(
            points,
            series_color(index).stroke_width(width.min(15)),
        ))?;
    }

    let mut legend: Vec<LegendEntry> = order
        .iter()
        .map(|&index| {
            LegendEntry::new(
                LegendMark::Line(series_color(index), 5),
                format!("{} · AUC {:.3}", curves[index].label, curves[index].area()),
            )
        })
        .collect();
    legend.push(LegendEntry::new(
        LegendMark::Dashed(MUTED_TEXT, 2),
        "chance (AUC 0.5)",
    ));
    draw_legend_column(&legend_area, &legend, (10, 60))?;
    legend_area.draw(&Text::new(
        "overlapping curves: wider = higher AUC",
        (10, 60 + legend.len() as i32 * 39 + 10),
        font(NOTE_SIZE).color(&MUTED_TEXT),
    ))?;
    root.present()?;
    Ok(())
}
