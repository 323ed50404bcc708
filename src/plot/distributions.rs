//! Figure 1: the threshold distributions grid (rel L2, Pe, Pm, Pw, mean |Δ|, max |Δ|, accept
//! rate), honest and cheating samples overlaid, with their means, 95th percentiles and the
//! thresholds in force (the policy's per-tier limits for run results, the recommended ones for
//! an optimization report), so a reader can see where a threshold separates the two.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{SampleSummary, TickedRange, ValueAxis};
use super::metric::CheckMetric;
use super::style::{
    bold_font, draw_legend_row, draw_title, ensure_fonts, font, format_number, tick_label_width,
    LegendEntry, LegendMark, AXIS_DESC_SIZE, BACKGROUND, CHEAT_COLOR, GRID_COLOR, GRID_FIGURE_SIZE,
    HONEST_COLOR, MUTED_TEXT, NOTE_SIZE, PANEL_TITLE_SIZE, THRESHOLD_COLOR, TICK_LABEL_SIZE,
};
use crate::record::results::{TrialResult, TrialVerdict};
use crate::stats::aggregate::Distribution;
use crate::stats::optimize::OptimizationReport;

/// Histogram bins per panel, as in the reference project.
pub const DISTRIBUTION_BINS: usize = 30;

/// Panel chart layout: space right of the plot, room for the y tick labels, and the share of
/// the value range left free past each end of the x axis.
const PANEL_MARGIN_RIGHT: u32 = 18;
const PANEL_Y_LABEL_AREA: u32 = 82;
const PANEL_X_PAD: f64 = 0.015;

/// The reference project's 2 × 3 grid, in its order; accept rate is the sixth panel.
pub const GRID_METRICS: [CheckMetric; 5] = [
    CheckMetric::Pe,
    CheckMetric::Pm,
    CheckMetric::Pw,
    CheckMetric::MeanAbs,
    CheckMetric::MaxAbs,
];

/// The precision-aware policy's first statistic (rel L2, with its per-tier limits; its other,
/// Pe, is in the reference grid) and the ULP error, drawn as a companion figure beside the
/// reference grid.
pub const POLICY_METRICS: [CheckMetric; 2] = [CheckMetric::RelL2, CheckMetric::UlpMean];

/// Values of one group (honest or cheating) with, optionally, exact statistics computed
/// upstream over more values than are kept here (the optimizer subsamples its raw values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub values: Vec<f64>,
    pub summary: Option<SampleSummary>,
}

impl Sample {
    pub fn from_values(values: Vec<f64>) -> Self {
        Self {
            values,
            summary: None,
        }
    }

    /// Statistics to annotate: the upstream ones when given, else computed from the values.
    pub fn summary(&self) -> Option<SampleSummary> {
        self.summary.or_else(|| SampleSummary::of(&self.values))
    }
}

/// A threshold drawn as a vertical line, with what it is ("cutoff", "recommended", …).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub value: f64,
    pub label: String,
}

/// One panel of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct DistributionPanel {
    pub title: String,
    /// The x axis quantity.
    pub quantity: String,
    /// What one value is ("checks", "verifier runs"); the y axis shows the share of these.
    pub population: String,
    pub honest: Sample,
    pub cheat: Sample,
    /// Vertical lines: one per limit in force (several when trials were judged in several
    /// precision tiers).
    pub thresholds: Vec<Threshold>,
    /// Forces a linear axis over this range (for bounded quantities such as accept rates).
    pub fixed_range: Option<(f64, f64)>,
}

impl DistributionPanel {
    fn for_metric(metric: CheckMetric, honest: Sample, cheat: Sample) -> Self {
        Self {
            title: metric.title().to_string(),
            quantity: metric.quantity().to_string(),
            population: "checks".to_string(),
            honest,
            cheat,
            thresholds: Vec::new(),
            fixed_range: None,
        }
    }

    fn accept_rate(honest: Sample, cheat: Sample, threshold: Option<Threshold>) -> Self {
        Self {
            title: "accept rate per verifier run".to_string(),
            quantity: "accept rate (fraction of checks accepted)".to_string(),
            population: "verifier runs".to_string(),
            honest,
            cheat,
            thresholds: threshold.into_iter().collect(),
            fixed_range: Some((0.0, 1.0)),
        }
    }
}

/// The precision-aware policy's limits on `metric` that judged these trials' checks, one per
/// tier (as each verifier recorded them), coarsest tier last.
fn policy_limits(trials: &[TrialResult], metric: CheckMetric) -> Vec<Threshold> {
    let mut limits: Vec<(u8, String, f64)> = Vec::new();
    for verifier in trials.iter().flat_map(|t| &t.verifiers) {
        let (Some(tier), Some(applied)) = (&verifier.tier, &verifier.limits) else {
            continue;
        };
        let value = match metric {
            CheckMetric::RelL2 => applied.rel_l2_max,
            CheckMetric::Pe => applied.pe_max,
            _ => continue,
        };
        let rank =
            crate::stats::metrics::CompareDtype::from_name(tier).map_or(0, |d| d.coarseness());
        if !limits.iter().any(|(_, t, v)| t == tier && *v == value) {
            limits.push((rank, tier.clone(), value));
        }
    }
    limits.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.total_cmp(&b.2)));
    limits
        .into_iter()
        .map(|(_, tier, value)| Threshold {
            value,
            label: format!("{tier}-tier limit (accept at or below)"),
        })
        .collect()
}

/// Whether a trial is an honest scenario (expected to PASS) or a cheating one.
fn is_honest(trial: &TrialResult) -> bool {
    trial.summary.expected_verdict == TrialVerdict::Pass
}

/// One panel per metric for the checks of trials, with the limits the policy applied; trials
/// expected to PASS are honest, the others cheating.
pub fn check_panels_from_trials(
    trials: &[TrialResult],
    metrics: &[CheckMetric],
) -> Vec<DistributionPanel> {
    let checks = |honest: bool| {
        trials
            .iter()
            .filter(move |trial| is_honest(trial) == honest)
            .flat_map(|trial| &trial.verifiers)
            .flat_map(|verifier| &verifier.statistics.checks)
    };
    metrics
        .iter()
        .map(|&metric| {
            let values = |honest: bool| {
                Sample::from_values(checks(honest).map(|c| metric.value(&c.metrics)).collect())
            };
            let mut panel = DistributionPanel::for_metric(metric, values(true), values(false));
            panel.thresholds = policy_limits(trials, metric);
            panel
        })
        .collect()
}

/// The reference grid for trials: the five check metrics and the accept rates.
pub fn distribution_panels_from_trials(trials: &[TrialResult]) -> Vec<DistributionPanel> {
    let mut panels = check_panels_from_trials(trials, &GRID_METRICS);

    let verifier_runs = || {
        trials
            .iter()
            .flat_map(|t| t.verifiers.iter().map(move |v| (t, v)))
    };
    let accept_rates = |honest: bool| {
        Sample::from_values(
            verifier_runs()
                .filter(|(trial, verifier)| is_honest(trial) == honest && verifier.complete)
                .map(|(_, verifier)| verifier.statistics.summary.accept_rate)
                .collect(),
        )
    };
    let mut cutoffs: Vec<f64> = verifier_runs().map(|(_, v)| v.cutoff).collect();
    cutoffs.sort_by(f64::total_cmp);
    cutoffs.dedup();
    let threshold = cutoffs.first().map(|&value| Threshold {
        value,
        label: if cutoffs.len() == 1 {
            "cutoff".to_string()
        } else {
            "lowest cutoff".to_string()
        },
    });
    panels.push(DistributionPanel::accept_rate(
        accept_rates(true),
        accept_rates(false),
        threshold,
    ));
    panels
}

/// Token margins are drawn within ±this many logits: a token outside the candidate set has
/// margin −∞ and one that was the only candidate +∞; they are shown at the edges.
pub const MARGIN_PLOT_LIMIT: f64 = 10.0;

/// The token-check margins of every generated token (docs/sampling.md), honest trials against
/// cheating ones, with −δ of each tier that judged them; None when no verifier checked tokens.
pub fn token_margin_panel(trials: &[TrialResult]) -> Option<DistributionPanel> {
    let margins = |honest: bool| {
        Sample::from_values(
            trials
                .iter()
                .filter(|trial| is_honest(trial) == honest)
                .flat_map(|trial| &trial.verifiers)
                .flat_map(|verifier| &verifier.statistics.token_checks)
                .map(|check| {
                    if check.margin.is_nan() {
                        -MARGIN_PLOT_LIMIT
                    } else {
                        check.margin.clamp(-MARGIN_PLOT_LIMIT, MARGIN_PLOT_LIMIT)
                    }
                })
                .collect(),
        )
    };
    let (honest, cheat) = (margins(true), margins(false));
    if honest.values.is_empty() && cheat.values.is_empty() {
        return None;
    }
    let mut tolerances: Vec<(String, f64)> = Vec::new();
    for verifier in trials.iter().flat_map(|t| &t.verifiers) {
        if let Some(t) = &verifier.token_checks {
            let tier = verifier.tier.clone().unwrap_or_default();
            if !tolerances.iter().any(|(_, d)| *d == t.tolerance) {
                tolerances.push((tier, t.tolerance));
            }
        }
    }
    tolerances.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(DistributionPanel {
        title: "token-check margin per generated token".to_string(),
        quantity: format!(
            "margin (logits): chosen token's score − best other's; ±∞ drawn at ±{MARGIN_PLOT_LIMIT}"
        ),
        population: "generated tokens".to_string(),
        honest,
        cheat,
        thresholds: tolerances
            .into_iter()
            .map(|(tier, delta)| Threshold {
                value: -delta,
                label: format!("−δ {tier}"),
            })
            .collect(),
        fixed_range: Some((-MARGIN_PLOT_LIMIT, MARGIN_PLOT_LIMIT)),
    })
}

/// Exact statistics from the optimizer's full-data distribution.
fn summary_from_distribution(distribution: &Option<Distribution>) -> Option<SampleSummary> {
    distribution.as_ref().map(|d| SampleSummary {
        count: d.count,
        mean: d.mean,
        p95: d.p95,
    })
}

/// One panel per metric of an optimization report, with its recommended thresholds.
pub fn check_panels_from_report(
    report: &OptimizationReport,
    metrics: &[CheckMetric],
) -> Vec<DistributionPanel> {
    metrics
        .iter()
        .map(|&metric| {
            let found = report.metrics.iter().find(|m| m.metric == metric.name());
            match found {
                Some(metric_report) => {
                    let mut panel = DistributionPanel::for_metric(
                        metric,
                        Sample {
                            values: metric_report.honest_values.clone(),
                            summary: summary_from_distribution(&metric_report.honest),
                        },
                        Sample {
                            values: metric_report.cheat_values.clone(),
                            summary: summary_from_distribution(&metric_report.cheat),
                        },
                    );
                    // Pw is the one metric where higher means a closer match.
                    let rule = if metric == CheckMetric::Pw {
                        "recommended threshold (accept at or above)"
                    } else {
                        "recommended threshold (accept at or below)"
                    };
                    // Where the snippet recommends per tier (rel L2 and Pe), its lines are
                    // drawn, so the figure shows what would be pasted.
                    let per_tier: Vec<Threshold> = report
                        .tiers
                        .iter()
                        .filter_map(|t| {
                            let value = match metric {
                                CheckMetric::RelL2 => t.rel_l2_max,
                                CheckMetric::Pe => t.pe_max,
                                _ => return None,
                            };
                            Some(Threshold {
                                value,
                                label: format!(
                                    "{}-tier recommendation, from its {} honest / {} cheat \
                                     checks (accept at or below)",
                                    t.tier, t.honest_checks, t.cheat_checks
                                ),
                            })
                        })
                        .collect();
                    panel.thresholds = if per_tier.is_empty() {
                        metric_report
                            .recommended_threshold
                            .map(|value| Threshold {
                                value,
                                label: rule.to_string(),
                            })
                            .into_iter()
                            .collect()
                    } else {
                        per_tier
                    };
                    panel
                }
                None => DistributionPanel::for_metric(metric, Sample::default(), Sample::default()),
            }
        })
        .collect()
}

/// The reference grid for an optimization report: the five check metrics and accept rates.
pub fn distribution_panels_from_report(report: &OptimizationReport) -> Vec<DistributionPanel> {
    let mut panels = check_panels_from_report(report, &GRID_METRICS);
    let rates = &report.accept_rates;
    panels.push(DistributionPanel::accept_rate(
        Sample {
            values: rates.honest.clone(),
            summary: summary_from_distribution(&rates.honest_stats),
        },
        Sample {
            values: rates.cheat.clone(),
            summary: summary_from_distribution(&rates.cheat_stats),
        },
        None,
    ));
    panels
}

/// Draws the panels in a grid of at most three columns (the reference layout, six panels, is
/// 2 × 3) under a shared legend, and writes the PNG to `path`.
pub fn plot_threshold_distributions(
    title: &str,
    panels: &[DistributionPanel],
    path: &Path,
) -> anyhow::Result<()> {
    ensure_fonts()?;
    anyhow::ensure!(!panels.is_empty(), "no distribution panels to draw");
    let columns = panels.len().min(3);
    let rows = panels.len().div_ceil(columns);
    // Cells of 575 × 475 pixels or more (a figure is at least 1600 × 1000), plus title and
    // legend: 1775 × 1150 for the reference grid.
    let (cell_width, cell_height) = (GRID_FIGURE_SIZE.0 / 4, (GRID_FIGURE_SIZE.1 - 200) / 2);
    let size = (
        (cell_width * columns as u32 + 50).max(1600),
        (cell_height * rows as u32 + 200).max(1000),
    );
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&BACKGROUND)?;
    let body = draw_title(
        &root,
        title,
        Some("share of each group per bin (each group sums to 100 %) · 30 bins"),
    )?;

    let any_honest = panels.iter().any(|p| !p.honest.values.is_empty());
    let any_cheat = panels.iter().any(|p| !p.cheat.values.is_empty());
    let any_threshold = panels.iter().any(|p| !p.thresholds.is_empty());
    let mut legend = Vec::new();
    if any_honest {
        legend.push(LegendEntry::new(
            LegendMark::Box(HONEST_COLOR.mix(0.5)),
            "honest (expected PASS)",
        ));
    }
    if any_cheat {
        legend.push(LegendEntry::new(
            LegendMark::Box(CHEAT_COLOR.mix(0.5)),
            "cheating (expected REJECT)",
        ));
    }
    legend.push(LegendEntry::new(LegendMark::Line(MUTED_TEXT, 3), "mean"));
    legend.push(LegendEntry::new(
        LegendMark::Dashed(MUTED_TEXT, 3),
        "95th percentile",
    ));
    if any_threshold {
        legend.push(LegendEntry::new(
            LegendMark::Line(THRESHOLD_COLOR, 5),
            "threshold",
        ));
    }
    let legend_height = draw_legend_row(&body, &legend, 14)?;
    let grid = body.split_vertically(legend_height + 16).1;

    let cells = grid.split_evenly((rows, columns));
    // Every panel reserves the same header height, so the plots line up.
    let header_lines = 2 + panels.iter().map(|p| p.thresholds.len()).max().unwrap_or(0);
    for (panel, cell) in panels.iter().zip(cells.iter()) {
        draw_panel(panel, header_lines, &cell.margin(6, 10, 12, 12))?;
    }
    root.present()?;
    Ok(())
}

/// One line of the panel header: the group's count, mean and p95, and how many values could
/// not be drawn (±inf and NaN from checks with non-finite elements).
fn group_note(name: &str, sample: &Sample, summary: &SampleSummary) -> String {
    let mut note = format!(
        "{name}: n = {} · mean {} · p95 {}",
        summary.count,
        format_number(summary.mean),
        format_number(summary.p95)
    );
    let non_finite = sample.values.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        note.push_str(&format!(" · {non_finite} non-finite not drawn"));
    }
    note
}

fn draw_panel<DB: DrawingBackend>(
    panel: &DistributionPanel,
    header_lines: usize,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let groups: Vec<(&str, &Sample, RGBColor)> = [
        ("honest", &panel.honest, HONEST_COLOR),
        ("cheating", &panel.cheat, CHEAT_COLOR),
    ]
    .into_iter()
    .filter(|(_, sample, _)| !sample.values.is_empty())
    .collect();

    // Header: the title, then one line per group and one for the threshold.
    area.draw(&Text::new(
        panel.title.clone(),
        (8, 2),
        bold_font(PANEL_TITLE_SIZE),
    ))?;
    let mut header_height = PANEL_TITLE_SIZE as i32 + 10;
    let line_height = NOTE_SIZE as i32 + 7;
    for (name, sample, color) in &groups {
        if let Some(summary) = sample.summary() {
            area.draw(&Text::new(
                group_note(name, sample, &summary),
                (8, header_height),
                font(NOTE_SIZE).color(color),
            ))?;
            header_height += line_height;
        }
    }
    for threshold in &panel.thresholds {
        area.draw(&Text::new(
            format!("{}: {}", threshold.label, format_number(threshold.value)),
            (8, header_height),
            font(NOTE_SIZE).color(&THRESHOLD_COLOR),
        ))?;
        header_height += line_height;
    }
    let chart_area = area
        .split_vertically(PANEL_TITLE_SIZE as i32 + 10 + header_lines as i32 * line_height + 4)
        .1;

    let all_values: Vec<f64> = groups
        .iter()
        .flat_map(|(_, sample, _)| sample.values.iter().copied())
        .chain(panel.thresholds.iter().map(|t| t.value))
        .collect();
    // Fewer ticks where their labels would run together in this narrow panel.
    let plot_width = chart_area
        .dim_in_pixel()
        .0
        .saturating_sub(PANEL_MARGIN_RIGHT + PANEL_Y_LABEL_AREA) as f64;
    let axis = ValueAxis::fit(&all_values, panel.fixed_range)
        .with_ticks_fitting(plot_width / (1.0 + 2.0 * PANEL_X_PAD), |label| {
            tick_label_width(&chart_area, label)
        });
    let histograms: Vec<(Vec<f64>, RGBColor)> = groups
        .iter()
        .map(|(_, sample, color)| {
            let counts = axis.histogram(&sample.values, DISTRIBUTION_BINS);
            let total = counts.iter().sum::<usize>().max(1) as f64;
            let shares = counts.iter().map(|&c| c as f64 / total).collect();
            (shares, *color)
        })
        .collect();
    let highest = histograms
        .iter()
        .flat_map(|(shares, _)| shares.iter().copied())
        .fold(0.0, f64::max);
    let y_end = if highest > 0.0 {
        (highest * 1.1).min(1.05)
    } else {
        1.0
    };

    // A little room past both ends, so lines at the bounds (an accept rate of 1) stay whole.
    let pad = (axis.end - axis.start) * PANEL_X_PAD;
    let x_range = TickedRange::new(axis.start - pad, axis.end + pad, axis.ticks.clone());
    let mut chart = ChartBuilder::on(&chart_area)
        .margin_right(PANEL_MARGIN_RIGHT)
        .margin_top(4)
        .x_label_area_size(62)
        .y_label_area_size(PANEL_Y_LABEL_AREA)
        .build_cartesian_2d(x_range, 0.0..y_end)?;
    let tick_formatter = |value: &f64| axis.tick_label(*value);
    chart
        .configure_mesh()
        .x_label_formatter(&tick_formatter)
        .y_label_formatter(&|share: &f64| format!("{}%", format_number(share * 100.0)))
        .y_labels(6)
        .x_desc(axis.describe(&panel.quantity))
        .y_desc(format!("% of {}", panel.population))
        .label_style(font(TICK_LABEL_SIZE))
        .axis_desc_style(font(AXIS_DESC_SIZE))
        .bold_line_style(GRID_COLOR)
        .light_line_style(TRANSPARENT)
        .draw()?;

    if groups.is_empty() {
        chart.plotting_area().draw(&Text::new(
            "no data",
            ((axis.start + axis.end) / 2.0, y_end / 2.0),
            font(PANEL_TITLE_SIZE)
                .color(&MUTED_TEXT)
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
        return Ok(());
    }

    for (shares, color) in &histograms {
        let bars = shares
            .iter()
            .enumerate()
            .filter(|(_, share)| **share > 0.0)
            .map(|(index, share)| {
                let (left, right) = axis.bin_edges(index, DISTRIBUTION_BINS);
                [(left, 0.0), (right, *share)]
            });
        chart.draw_series(
            bars.clone()
                .map(|c| Rectangle::new(c, color.mix(0.45).filled())),
        )?;
        chart.draw_series(bars.map(|c| Rectangle::new(c, color.stroke_width(1))))?;
    }

    for (_, sample, color) in &groups {
        let Some(summary) = sample.summary() else {
            continue;
        };
        if summary.mean.is_finite() {
            let mean = axis.to_axis(summary.mean);
            chart.draw_series(LineSeries::new(
                [(mean, 0.0), (mean, y_end)],
                color.stroke_width(3),
            ))?;
        }
        if summary.p95.is_finite() {
            let p95 = axis.to_axis(summary.p95);
            chart.draw_series(DashedLineSeries::new(
                [(p95, 0.0), (p95, y_end)],
                9,
                7,
                color.stroke_width(3),
            ))?;
        }
    }
    for threshold in panel.thresholds.iter().filter(|t| t.value.is_finite()) {
        let x = axis.to_axis(threshold.value);
        chart.draw_series(LineSeries::new(
            [(x, 0.0), (x, y_end)],
            THRESHOLD_COLOR.stroke_width(5),
        ))?;
    }
    Ok(())
}
