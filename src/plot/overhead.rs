//! Figure 5: how much verification costs relative to inference (verification time / inference
//! time × 100) for each verifier, over trials; VeriLLM's claim is that this stays small.

use std::path::Path;

use plotters::prelude::*;

use super::axis::{SampleSummary, Scale, TickedRange, ValueAxis};
use super::style::{
    draw_legend_row, draw_title, ensure_fonts, font, format_number, series_color, tick_label_width,
    LegendEntry, LegendMark, AXIS_DESC_SIZE, BACKGROUND, FIGURE_SIZE, GRID_COLOR, TICK_LABEL_SIZE,
};
use crate::record::results::TrialResult;

/// Overhead percentages of one verifier over trials.
#[derive(Debug, Clone, PartialEq)]
pub struct OverheadSamples {
    pub verifier: String,
    pub percentages: Vec<f64>,
}

/// Collects the overhead of each complete verifier result, grouped by verifier name in order
/// of first appearance.
pub fn overhead_samples(trials: &[TrialResult]) -> Vec<OverheadSamples> {
    let mut samples: Vec<OverheadSamples> = Vec::new();
    for verifier in trials
        .iter()
        .flat_map(|t| &t.verifiers)
        .filter(|v| v.complete)
    {
        let percentage = verifier.overhead.percentage;
        match samples.iter_mut().find(|s| s.verifier == verifier.name) {
            Some(existing) => existing.percentages.push(percentage),
            None => samples.push(OverheadSamples {
                verifier: verifier.name.clone(),
                percentages: vec![percentage],
            }),
        }
    }
    samples
}

/// Fewer bins for small samples, up to 30, so a handful of trials is not lost in empty bins.
fn bin_count(values: usize) -> usize {
    ((2.0 * (values as f64).sqrt()).ceil() as usize).clamp(8, 30)
}

/// Draws a histogram of overhead percentages with the verifiers' counts stacked in each bin
/// and a dashed line at each verifier's mean.
pub fn plot_overhead(title: &str, samples: &[OverheadSamples], path: &Path) -> anyhow::Result<()> {
    ensure_fonts()?;
    let all: Vec<f64> = samples
        .iter()
        .flat_map(|s| s.percentages.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    anyhow::ensure!(!all.is_empty(), "no overhead values to draw");
    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    root.fill(&BACKGROUND)?;
    let body = draw_title(
        &root,
        title,
        Some("verification time / inference time × 100, one value per verifier and trial · dashed line = mean"),
    )?;

    let legend: Vec<LegendEntry> = samples
        .iter()
        .enumerate()
        .map(|(index, sample)| {
            let label = match SampleSummary::of(&sample.percentages) {
                Some(summary) => format!(
                    "{} (n = {}, mean {} %)",
                    sample.verifier,
                    summary.count,
                    format_number(summary.mean)
                ),
                None => format!("{} (no values)", sample.verifier),
            };
            LegendEntry::new(LegendMark::Box(series_color(index).mix(0.8)), label)
        })
        .collect();
    let legend_height = draw_legend_row(&body, &legend, 14)?;
    let chart_area = body.split_vertically(legend_height + 12).1;

    // A cost reads best from zero; only values spanning decades get a log axis instead.
    let axis = match ValueAxis::fit(&all, None) {
        axis if axis.scale == Scale::Linear => {
            let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = all.iter().copied().fold(f64::INFINITY, f64::min);
            ValueAxis::linear(min.min(0.0), max)
        }
        axis => axis,
    };
    // Fewer ticks if their labels would run together; the plot is the area less the left and
    // right margins and the y label area set below.
    let plot_width = chart_area.dim_in_pixel().0.saturating_sub(16 + 30 + 90) as f64;
    let axis = axis.with_ticks_fitting(plot_width, |label| tick_label_width(&chart_area, label));
    let bins = bin_count(all.len() / samples.len().max(1));
    let counts: Vec<Vec<usize>> = samples
        .iter()
        .map(|s| axis.histogram(&s.percentages, bins))
        .collect();
    let stacked_heights: Vec<usize> = (0..bins)
        .map(|bin| counts.iter().map(|c| c[bin]).sum())
        .collect();
    let highest = stacked_heights.iter().copied().max().unwrap_or(1).max(1);
    let y_end = highest as f64 * 1.12;

    let x_range = TickedRange::from(&axis);
    let mut chart = ChartBuilder::on(&chart_area)
        .margin(16)
        .margin_right(30)
        .x_label_area_size(75)
        .y_label_area_size(90)
        .build_cartesian_2d(x_range, 0.0..y_end)?;
    let tick_formatter = |value: &f64| axis.tick_label(*value);
    chart
        .configure_mesh()
        .bold_line_style(GRID_COLOR)
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&tick_formatter)
        .y_label_formatter(&|v: &f64| {
            if v.fract().abs() < 1e-9 {
                format!("{}", v.round() as i64)
            } else {
                String::new()
            }
        })
        .y_labels(highest.min(10) + 1)
        .x_desc(axis.describe("verification overhead (% of inference time)"))
        .y_desc("verifier runs (stacked by verifier)")
        .label_style(font(TICK_LABEL_SIZE))
        .axis_desc_style(font(AXIS_DESC_SIZE))
        .draw()?;

    // Stacked, so every bar stays exactly over its bin and nothing hides behind another.
    let mut stacked_below = vec![0usize; bins];
    for (index, sample_counts) in counts.iter().enumerate() {
        let color = series_color(index);
        let mut segments = Vec::new();
        for (bin, &count) in sample_counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let (left, right) = axis.bin_edges(bin, bins);
            let inset = (right - left) * 0.04;
            let bottom = stacked_below[bin] as f64;
            stacked_below[bin] += count;
            segments.push([
                (left + inset, bottom),
                (right - inset, stacked_below[bin] as f64),
            ]);
        }
        chart.draw_series(
            segments
                .iter()
                .map(|corners| Rectangle::new(*corners, color.mix(0.85).filled())),
        )?;
        chart.draw_series(
            segments
                .iter()
                .map(|corners| Rectangle::new(*corners, WHITE.stroke_width(1))),
        )?;
    }
    for (index, sample) in samples.iter().enumerate() {
        if let Some(summary) = SampleSummary::of(&sample.percentages) {
            let x = axis.to_axis(summary.mean);
            chart.draw_series(DashedLineSeries::new(
                [(x, 0.0), (x, y_end)],
                12,
                8,
                series_color(index).stroke_width(3),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}
