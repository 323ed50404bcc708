//! Figure 3: accept rate per verifier for each experiment, against the cutoff that turns it
//! into PASS/FAIL, so honest experiments should clear the line and cheating ones fall below.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::TickedRange;
use super::style::{
    draw_legend_row, draw_title, ensure_fonts, font, format_number, series_color, LegendEntry,
    LegendMark, AXIS_DESC_SIZE, BACKGROUND, FIGURE_SIZE, GRID_COLOR, NOTE_SIZE, THRESHOLD_COLOR,
    TICK_LABEL_SIZE,
};
use crate::record::results::{RunSummary, TrialResult};

/// Accept rates one verifier reached over the trials of one experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifierAcceptRates {
    pub verifier: String,
    pub rates: Vec<f64>,
}

/// One experiment's bars.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptRateGroup {
    /// Shown under the bars, e.g. "exp1 · expect PASS · 3 trials".
    pub label: String,
    pub cutoff: Option<f64>,
    pub verifiers: Vec<VerifierAcceptRates>,
}

/// Height drawn for a bar whose rate is (near) 0, so it stays visible.
const MIN_VISIBLE_RATE: f64 = 0.006;

/// Groups complete verifier results by experiment (in order of first appearance) and verifier
/// name. A run summary of the same experiment supplies the cutoff when trials disagree.
pub fn accept_rate_groups(
    trials: &[TrialResult],
    summaries: &[RunSummary],
) -> Vec<AcceptRateGroup> {
    let mut experiments: Vec<&str> = Vec::new();
    for trial in trials {
        if !experiments.contains(&trial.experiment.as_str()) {
            experiments.push(&trial.experiment);
        }
    }
    experiments
        .into_iter()
        .filter_map(|experiment| {
            let of_experiment: Vec<&TrialResult> = trials
                .iter()
                .filter(|t| t.experiment == experiment)
                .collect();
            let mut verifiers: Vec<VerifierAcceptRates> = Vec::new();
            let mut cutoffs: Vec<f64> = Vec::new();
            for verifier in of_experiment
                .iter()
                .flat_map(|t| &t.verifiers)
                .filter(|v| v.complete)
            {
                cutoffs.push(verifier.cutoff);
                let rate = verifier.statistics.summary.accept_rate;
                match verifiers.iter_mut().find(|v| v.verifier == verifier.name) {
                    Some(existing) => existing.rates.push(rate),
                    None => verifiers.push(VerifierAcceptRates {
                        verifier: verifier.name.clone(),
                        rates: vec![rate],
                    }),
                }
            }
            if verifiers.is_empty() {
                return None;
            }
            cutoffs.sort_by(f64::total_cmp);
            cutoffs.dedup();
            let summary_cutoff = summaries
                .iter()
                .find(|s| s.experiment == experiment)
                .map(|s| s.cutoff);
            let cutoff = match cutoffs.as_slice() {
                [single] => Some(*single),
                _ => summary_cutoff.or(cutoffs.first().copied()),
            };
            let expected = of_experiment[0].summary.expected_verdict;
            let count = of_experiment.len();
            let trials_word = if count == 1 { "trial" } else { "trials" };
            Some(AcceptRateGroup {
                label: format!("{experiment} · expect {expected} · {count} {trials_word}"),
                cutoff,
                verifiers,
            })
        })
        .collect()
}

/// Draws grouped bars (one group per experiment, one bar per verifier) of the mean accept
/// rate, with min–max whiskers and each trial as a dot when there are several, and the cutoff.
pub fn plot_accept_rates(
    title: &str,
    groups: &[AcceptRateGroup],
    path: &Path,
) -> anyhow::Result<()> {
    ensure_fonts()?;
    anyhow::ensure!(!groups.is_empty(), "no accept rates to draw");
    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    root.fill(&BACKGROUND)?;
    let several_trials = groups
        .iter()
        .flat_map(|g| &g.verifiers)
        .any(|v| v.rates.len() > 1);
    let subtitle = if several_trials {
        "bar = mean over trials · whisker = min–max · dots = single trials"
    } else {
        "bar = accept rate of the verifier"
    };
    let body = draw_title(&root, title, Some(subtitle))?;

    let mut verifier_names: Vec<&str> = Vec::new();
    for verifier in groups.iter().flat_map(|g| &g.verifiers) {
        if !verifier_names.contains(&verifier.verifier.as_str()) {
            verifier_names.push(&verifier.verifier);
        }
    }
    let mut cutoffs: Vec<f64> = groups.iter().filter_map(|g| g.cutoff).collect();
    cutoffs.sort_by(f64::total_cmp);
    cutoffs.dedup();
    let mut legend: Vec<LegendEntry> = verifier_names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            LegendEntry::new(LegendMark::Box(series_color(index).to_rgba()), *name)
        })
        .collect();
    match cutoffs.as_slice() {
        [] => {}
        [single] => legend.push(LegendEntry::new(
            LegendMark::Dashed(THRESHOLD_COLOR, 3),
            format!("cutoff {}", format_number(*single)),
        )),
        _ => legend.push(LegendEntry::new(
            LegendMark::Dashed(THRESHOLD_COLOR, 3),
            "cutoff (per experiment)",
        )),
    }
    let legend_height = draw_legend_row(&body, &legend, 14)?;
    let chart_area = body.split_vertically(legend_height + 12).1;

    let centers: Vec<f64> = (0..groups.len()).map(|g| g as f64 + 0.5).collect();
    let x_range = TickedRange::new(0.0, groups.len() as f64, centers);
    // Room above 1 for the value labels, but ticks only where rates can be.
    let y_range = TickedRange::new(0.0, 1.1, (0..=10).map(|k| k as f64 / 10.0).collect());
    let mut chart = ChartBuilder::on(&chart_area)
        .margin(16)
        .margin_right(30)
        .x_label_area_size(80)
        .y_label_area_size(100)
        .build_cartesian_2d(x_range, y_range)?;
    let group_label = |x: &f64| {
        groups
            .get(x.floor() as usize)
            .map(|g| g.label.clone())
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(GRID_COLOR)
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&group_label)
        .y_label_formatter(&|v: &f64| format!("{v:.1}"))
        .x_desc("experiment")
        .y_desc("accept rate (fraction of checks accepted)")
        .label_style(font(TICK_LABEL_SIZE))
        .axis_desc_style(font(AXIS_DESC_SIZE))
        .draw()?;

    let slot_width = 0.8 / verifier_names.len().max(1) as f64;
    let bar_width = slot_width * 0.8;
    for (group_index, group) in groups.iter().enumerate() {
        let group_left = group_index as f64 + 0.1;
        for verifier in &group.verifiers {
            let Some(color_index) = verifier_names.iter().position(|n| *n == verifier.verifier)
            else {
                continue;
            };
            let rates: Vec<f64> = verifier
                .rates
                .iter()
                .copied()
                .filter(|r| r.is_finite())
                .collect();
            if rates.is_empty() {
                continue;
            }
            let color = series_color(color_index);
            let center = group_left + slot_width * (color_index as f64 + 0.5);
            let mean = rates.iter().sum::<f64>() / rates.len() as f64;
            let low = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let high = rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            // A rate of 0 still shows as a thin bar in the verifier's colour.
            let shown = mean.max(MIN_VISIBLE_RATE);
            chart.draw_series([Rectangle::new(
                [
                    (center - bar_width / 2.0, 0.0),
                    (center + bar_width / 2.0, shown),
                ],
                color.mix(0.85).filled(),
            )])?;
            if rates.len() > 1 {
                let cap = bar_width / 4.0;
                let whisker = THRESHOLD_COLOR.stroke_width(2);
                chart.draw_series([
                    PathElement::new([(center, low), (center, high)], whisker),
                    PathElement::new([(center - cap, low), (center + cap, low)], whisker),
                    PathElement::new([(center - cap, high), (center + cap, high)], whisker),
                ])?;
                chart.draw_series(rates.iter().enumerate().map(|(i, rate)| {
                    // Spread the dots a little so equal rates stay countable.
                    let offset = ((i % 5) as f64 - 2.0) * bar_width / 12.0;
                    Circle::new(
                        (center + offset, *rate),
                        4,
                        ShapeStyle::from(&BLACK.mix(0.6)).filled(),
                    )
                }))?;
            }
            let label_y = high.max(mean) + 0.012;
            chart.draw_series([Text::new(
                format_number(mean),
                (center, label_y),
                font(NOTE_SIZE).pos(Pos::new(HPos::Center, VPos::Bottom)),
            )])?;
        }
        if let Some(cutoff) = group.cutoff {
            chart.draw_series(DashedLineSeries::new(
                [
                    (group_index as f64 + 0.03, cutoff),
                    (group_index as f64 + 0.97, cutoff),
                ],
                14,
                8,
                THRESHOLD_COLOR.stroke_width(3),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}
