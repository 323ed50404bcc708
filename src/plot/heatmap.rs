//! Figure 2: one verifier's error per (sampled layer, token position) of one trial, so a reader
//! can see whether disagreement grows with depth, with position, or sits in a few cells.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use super::axis::{TickedRange, ValueAxis};
use super::metric::CheckMetric;
use super::style::{
    colormap, draw_legend_column, draw_title, ensure_fonts, font, format_number, LegendEntry,
    LegendMark, AXIS_DESC_SIZE, BACKGROUND, FIGURE_SIZE, MISSING_CELL, MUTED_TEXT, NOTE_SIZE,
    TEXT_COLOR, TICK_LABEL_SIZE,
};
use crate::record::results::{TrialResult, Verdict};

/// Rejected checks are marked with a cross in this colour (absent from the colour map).
const REJECT_MARK: RGBColor = RGBColor(230, 30, 30);
/// Width reserved right of the heatmap for the colour bar and its legend.
const COLOR_BAR_AREA_WIDTH: u32 = 270;
/// Most row labels drawn before thinning them out.
const MAX_ROW_LABELS: usize = 32;

/// Checks whose value is exactly 0 (bit-identical vectors for most metrics) get their own
/// colour instead of sitting at the bottom of the log scale.
const ZERO_CELL: RGBColor = RGBColor(255, 255, 255);

/// Checks with a NaN or infinite value (always rejected) get a colour off the scale, rather
/// than the scale's lowest colour, which would read as the closest match.
pub(super) const NON_FINITE_CELL: RGBColor = RGBColor(230, 30, 160);

/// The colour scale over the positive values: logarithmic, as errors span decades.
fn color_axis(values: &[f64]) -> ValueAxis {
    let min_positive = values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    if min_positive.is_finite() {
        ValueAxis::log(min_positive, max, false)
    } else {
        ValueAxis::linear(0.0, 1.0)
    }
}

/// Integer tick positions for token positions `first..=last`.
pub(super) fn position_ticks(first: usize, last: usize) -> Vec<f64> {
    let axis = ValueAxis::linear(first as f64, last.max(first + 1) as f64);
    let step = axis
        .ticks
        .windows(2)
        .map(|w| w[1] - w[0])
        .next()
        .unwrap_or(1.0);
    let step = step.max(1.0).round();
    let start = (first as f64 / step).ceil() * step;
    let mut ticks = Vec::new();
    let mut tick = start;
    // Bounded: near 2^60 adding the step no longer changes a float, which looped forever.
    while tick <= last as f64 && ticks.len() < 64 {
        ticks.push(tick);
        let next = tick + step;
        if next <= tick {
            break;
        }
        tick = next;
    }
    ticks
}

/// Draws the heatmap of `metric` for the verifier at `verifier_index` of `trial`: rows are the
/// sampled layers, columns the generated token positions, colour the metric on a log scale.
pub fn plot_check_heatmap(
    trial: &TrialResult,
    verifier_index: usize,
    metric: CheckMetric,
    path: &Path,
) -> anyhow::Result<()> {
    ensure_fonts()?;
    let verifier = trial.verifiers.get(verifier_index).with_context(|| {
        format!(
            "trial {} of {} has no verifier number {verifier_index} (it has {})",
            trial.trial,
            trial.experiment,
            trial.verifiers.len()
        )
    })?;
    let checks = &verifier.statistics.checks;
    anyhow::ensure!(
        !checks.is_empty(),
        "verifier {} of {} trial {} has no checks to draw",
        verifier.name,
        trial.experiment,
        trial.trial
    );

    let mut layers: Vec<usize> = checks.iter().map(|c| c.layer).collect();
    layers.sort_unstable();
    layers.dedup();
    let first_position = checks.iter().map(|c| c.position).min().unwrap_or(0);
    let last_position = checks.iter().map(|c| c.position).max().unwrap_or(0);
    let values: Vec<f64> = checks.iter().map(|c| metric.value(&c.metrics)).collect();
    let axis = color_axis(&values);
    let color_of = |value: f64| {
        if !value.is_finite() {
            return NON_FINITE_CELL;
        }
        if value == 0.0 {
            return ZERO_CELL;
        }
        let fraction = (axis.to_axis(value) - axis.start) / (axis.end - axis.start);
        colormap(fraction)
    };

    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    root.fill(&BACKGROUND)?;
    let summary = &verifier.statistics.summary;
    let verdict = match verifier.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
    };
    let title = format!(
        "{} trial {} · {}: {} per layer and token",
        trial.experiment,
        trial.trial,
        verifier.name,
        metric.name()
    );
    let mut subtitle = format!(
        "{} · {verdict}: {} of {} checks accepted (rate {:.3}, cutoff {})",
        trial.pairing,
        summary.accepted,
        summary.total_checks,
        summary.accept_rate,
        format_number(verifier.cutoff)
    );
    if !verifier.complete {
        subtitle.push_str(" · INCOMPLETE");
    }
    let body = draw_title(&root, &title, Some(&subtitle))?;
    let (heatmap_area, color_bar_area) =
        body.split_horizontally(body.dim_in_pixel().0 - COLOR_BAR_AREA_WIDTH);

    let x_range = TickedRange::new(
        first_position as f64 - 0.5,
        last_position as f64 + 0.5,
        position_ticks(first_position, last_position),
    );
    let label_every = layers.len().div_ceil(MAX_ROW_LABELS).max(1);
    let row_ticks: Vec<f64> = (0..layers.len())
        .filter(|row| row % label_every == 0)
        .map(|row| row as f64 + 0.5)
        .collect();
    let y_range = TickedRange::new(0.0, layers.len() as f64, row_ticks);
    let mut chart = ChartBuilder::on(&heatmap_area)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(70)
        .y_label_area_size(90)
        .build_cartesian_2d(x_range, y_range)?;
    chart.plotting_area().fill(&MISSING_CELL)?;
    let row_label = |row: &f64| {
        let index = row.floor() as usize;
        layers.get(index).map(|l| l.to_string()).unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .x_label_formatter(&|p: &f64| format!("{}", p.round() as i64))
        .y_label_formatter(&row_label)
        .x_desc("generated token position")
        .y_desc("hidden-state layer (sampled)")
        .label_style(font(TICK_LABEL_SIZE))
        .axis_desc_style(font(AXIS_DESC_SIZE))
        .draw()?;

    let row_of = |layer: usize| layers.binary_search(&layer).unwrap_or(0) as f64;
    chart.draw_series(checks.iter().map(|check| {
        let x = check.position as f64;
        let y = row_of(check.layer);
        Rectangle::new(
            [(x - 0.5, y), (x + 0.5, y + 1.0)],
            color_of(metric.value(&check.metrics)).filled(),
        )
    }))?;

    // Frame the cells: white "exactly 0" cells at the edge would otherwise melt into the page.
    let frame = [
        (first_position as f64 - 0.5, 0.0),
        (last_position as f64 + 0.5, layers.len() as f64),
    ];
    chart.draw_series([Rectangle::new(frame, TEXT_COLOR.stroke_width(1))])?;

    let (plot_width, plot_height) = chart.plotting_area().dim_in_pixel();
    let cell_width = plot_width as f64 / (last_position - first_position + 1) as f64;
    let cell_height = plot_height as f64 / layers.len() as f64;
    let cross_size = (cell_width.min(cell_height) * 0.25).min(10.0);
    let any_rejected = checks.iter().any(|c| !c.accept);
    let mark_rejects = any_rejected && cross_size >= 2.5;
    if mark_rejects {
        let stroke = if cross_size >= 9.0 { 3 } else { 2 };
        chart.draw_series(checks.iter().filter(|c| !c.accept).map(|check| {
            Cross::new(
                (check.position as f64, row_of(check.layer) + 0.5),
                cross_size as i32,
                REJECT_MARK.stroke_width(stroke),
            )
        }))?;
    }

    let has_zeros = values.contains(&0.0);
    draw_color_bar(
        &color_bar_area,
        &axis,
        metric,
        ColorBarNotes {
            has_zeros,
            has_non_finite: values.iter().any(|v| !v.is_finite()),
            marks_rejects: mark_rejects,
            hides_rejects: any_rejected && !mark_rejects,
            hides_embedding: !verifier.statistics.embedding_checks.is_empty(),
        },
    )?;
    root.present()?;
    Ok(())
}

/// What the legend under the colour bar explains besides the scale.
struct ColorBarNotes {
    has_zeros: bool,
    has_non_finite: bool,
    marks_rejects: bool,
    /// There are rejected checks, but the cells are too small to mark them.
    hides_rejects: bool,
    hides_embedding: bool,
}

/// The colour bar with its tick labels, and a small legend for the cells' other marks.
fn draw_color_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    axis: &ValueAxis,
    metric: CheckMetric,
    notes: ColorBarNotes,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let (bar_area, legend_area) = area.split_vertically(area.dim_in_pixel().1 - 230);
    let y_range = TickedRange::from(axis);
    let mut bar = ChartBuilder::on(&bar_area)
        .margin_top(12)
        .margin_bottom(12)
        .margin_left(10)
        .margin_right(10)
        .set_label_area_size(LabelAreaPosition::Right, 120)
        .build_cartesian_2d(0.0..1.0, y_range)?;
    let tick_formatter = |value: &f64| axis.tick_label(*value);
    bar.configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .disable_x_axis()
        .y_label_formatter(&tick_formatter)
        .y_desc(axis.describe(metric.quantity()))
        .label_style(font(TICK_LABEL_SIZE))
        .axis_desc_style(font(AXIS_DESC_SIZE))
        .draw()?;
    let steps = 256;
    let height = (axis.end - axis.start) / steps as f64;
    bar.draw_series((0..steps).map(|step| {
        let low = axis.start + step as f64 * height;
        Rectangle::new(
            [(0.0, low), (1.0, low + height)],
            colormap((step as f64 + 0.5) / steps as f64).filled(),
        )
    }))?;

    let mut legend = Vec::new();
    if notes.has_zeros {
        legend.push(LegendEntry::new(
            LegendMark::Box(ZERO_CELL.to_rgba()),
            "exactly 0",
        ));
    }
    if notes.has_non_finite {
        legend.push(LegendEntry::new(
            LegendMark::Box(NON_FINITE_CELL.to_rgba()),
            "NaN or inf",
        ));
    }
    legend.push(LegendEntry::new(
        LegendMark::Box(MISSING_CELL.to_rgba()),
        "not checked",
    ));
    if notes.marks_rejects {
        legend.push(LegendEntry::new(LegendMark::Cross(REJECT_MARK), "REJECT"));
    }
    let mut footnotes: Vec<&str> = Vec::new();
    if notes.hides_rejects {
        footnotes.extend(["REJECT marks left out:", "cells too small"]);
    }
    if notes.hides_embedding {
        footnotes.extend([
            "layer 0 (embedding, identical",
            "by construction) not shown",
        ]);
    }
    draw_legend_column(&legend_area, &legend, (10, 24))?;
    let first_line = 24 + legend.len() as i32 * 39;
    for (line, text) in footnotes.iter().enumerate() {
        legend_area.draw(&Text::new(
            *text,
            (10, first_line + line as i32 * 22),
            font(NOTE_SIZE).color(&MUTED_TEXT),
        ))?;
    }
    Ok(())
}
