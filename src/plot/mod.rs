//! PNG figures of experiment results: threshold distributions, per-layer × token error
//! heatmaps, accept rates against the cutoff, ROC curves of the optimizer's metrics and the
//! verification overhead. Text uses the DejaVu Sans font compiled into the binary, so no system
//! fonts are needed.
//!
//! [`plot_files`] turns result, run-summary and optimization JSON files into every figure that
//! applies; [`export_trial`] does the same for one in-memory trial (the TUI's export). Each
//! figure also has its own function taking plain data.

pub mod accept_rates;
pub mod axis;
pub mod distributions;
pub mod heatmap;
#[cfg(test)]
mod input_tests;
pub mod matrix;
pub mod metric;
pub mod overhead;
pub mod roc;
mod style;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use crate::record::input::{load_input, PlotInput, MAX_INPUT_BYTES};
pub use accept_rates::{
    accept_rate_groups, plot_accept_rates, AcceptRateGroup, VerifierAcceptRates,
};
pub use axis::SampleSummary;
pub use distributions::{
    check_panels_from_report, check_panels_from_trials, distribution_panels_from_report,
    distribution_panels_from_trials, plot_threshold_distributions, DistributionPanel, Sample,
    Threshold, POLICY_METRICS,
};
pub use heatmap::plot_check_heatmap;
pub use metric::CheckMetric;
pub use overhead::{overhead_samples, plot_overhead, OverheadSamples};
pub use roc::{plot_roc_curves, roc_curves_from_report, RocCurve};

use crate::record::results::{RunSummary, TrialResult};
use crate::stats::optimize::OptimizationReport;

/// The metric heatmaps show unless asked otherwise: the default policy decides on it.
pub const DEFAULT_HEATMAP_METRIC: CheckMetric = CheckMetric::RelL2;

/// Hands out PNG paths in the output directory: names made file-system safe (no ':' or
/// spaces), and a suffix when a name was already given out in this export.
struct OutputNames {
    directory: PathBuf,
    used: HashSet<String>,
}

impl OutputNames {
    fn new(directory: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("cannot create output directory {}", directory.display()))?;
        Ok(Self {
            directory: directory.to_path_buf(),
            used: HashSet::new(),
        })
    }

    fn claim(&mut self, stem: &str) -> PathBuf {
        let safe = safe_component(stem);
        let mut name = safe.clone();
        let mut counter = 2;
        while !self.used.insert(name.clone()) {
            name = format!("{safe}_{counter}");
            counter += 1;
        }
        self.directory.join(format!("{name}.png"))
    }
}

/// One file-system-safe path component from any text (names in result files come from other
/// machines): ASCII letters, digits, '-', '_' and '.', everything else '_', at most 150
/// characters, and never empty, "." or "..", so joining it cannot leave the parent folder.
pub fn safe_component(text: &str) -> String {
    let safe: String = text
        .chars()
        .map(|c| {
            if crate::util::is_plain_name_char(c) {
                c
            } else {
                '_'
            }
        })
        .take(150)
        .collect();
    if safe.chars().all(|c| c == '.') {
        safe.replace('.', "_") + "_"
    } else {
        safe
    }
}

/// Experiment names of the trials, in order of first appearance.
fn experiment_names(trials: &[TrialResult]) -> Vec<&str> {
    let mut experiments: Vec<&str> = Vec::new();
    for trial in trials {
        if !experiments.contains(&trial.experiment.as_str()) {
            experiments.push(&trial.experiment);
        }
    }
    experiments
}

/// Short tag naming a set of experiments in file names.
fn experiments_tag(trials: &[TrialResult]) -> String {
    let experiments = experiment_names(trials);
    match experiments.len() {
        0 => "no_experiment".to_string(),
        1..=3 => experiments.join("_"),
        n => format!("{n}_experiments"),
    }
}

/// Names the experiments and trial count in figure titles.
fn experiments_description(trials: &[TrialResult]) -> String {
    let experiments = experiment_names(trials);
    let scope = if experiments.len() <= 5 {
        experiments.join(", ")
    } else {
        format!("{} experiments", experiments.len())
    };
    let plural = if trials.len() == 1 { "" } else { "s" };
    format!("{scope} ({} trial{plural})", trials.len())
}

/// Heatmaps of the default metric for every verifier of the trial that has checks.
fn write_trial_heatmaps(
    trial: &TrialResult,
    names: &mut OutputNames,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (index, verifier) in trial.verifiers.iter().enumerate() {
        if verifier.statistics.checks.is_empty() {
            continue;
        }
        let path = names.claim(&format!(
            "{}_trial{}_{}_heatmap_{}",
            trial.experiment,
            trial.trial,
            verifier.name,
            DEFAULT_HEATMAP_METRIC.name()
        ));
        plot_check_heatmap(trial, index, DEFAULT_HEATMAP_METRIC, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The figures over a set of trials: threshold distributions, accept rates, overhead. Each is
/// skipped when the trials hold nothing for it (e.g. every verifier was cancelled).
fn write_trial_set_figures(
    trials: &[TrialResult],
    summaries: &[RunSummary],
    tag: &str,
    description: &str,
    names: &mut OutputNames,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let panels = distribution_panels_from_trials(trials);
    if has_values(&panels) {
        written.push(write_distributions(
            names,
            &format!("{tag}_threshold_distributions"),
            &format!("Threshold distributions — {description}"),
            &panels,
        )?);
        written.push(write_distributions(
            names,
            &format!("{tag}_policy_distributions"),
            &format!("Relative L2 (the policy's per-tier limits) and ULP error — {description}"),
            &check_panels_from_trials(trials, &POLICY_METRICS),
        )?);
    }

    if let Some(panel) = distributions::token_margin_panel(trials) {
        written.push(write_distributions(
            names,
            &format!("{tag}_token_margins"),
            &format!("Token-check margins, honest vs cheating — {description}"),
            std::slice::from_ref(&panel),
        )?);
    }

    let groups = accept_rate_groups(trials, summaries);
    if !groups.is_empty() {
        let path = names.claim(&format!("{tag}_accept_rates"));
        let title = format!("Accept rate per verifier — {description}");
        plot_accept_rates(&title, &groups, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }

    let overheads = overhead_samples(trials);
    if overheads
        .iter()
        .any(|s| s.percentages.iter().any(|p| p.is_finite()))
    {
        let path = names.claim(&format!("{tag}_overhead"));
        let title = format!("Verification overhead — {description}");
        plot_overhead(&title, &overheads, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// ROC curves and threshold distributions of an optimization report; `name` prefixes the files.
fn write_report_figures(
    report: &OptimizationReport,
    name: &str,
    names: &mut OutputNames,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    // `trials` counts the trials of each experiment.
    let plural = if report.trials == 1 { "" } else { "s" };
    let scope = if report.experiments.is_empty() {
        format!("{} trial{plural}", report.trials)
    } else {
        format!(
            "{} ({} trial{plural} each)",
            report.experiments.join(", "),
            report.trials
        )
    };
    let curves = roc_curves_from_report(report);
    if !curves.is_empty() {
        let path = names.claim(&format!("{name}_roc"));
        plot_roc_curves(&format!("ROC per metric — {scope}"), &curves, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    let panels = distribution_panels_from_report(report);
    if has_values(&panels) {
        written.push(write_distributions(
            names,
            &format!("{name}_threshold_distributions"),
            &format!("Threshold distributions — {scope}"),
            &panels,
        )?);
        written.push(write_distributions(
            names,
            &format!("{name}_policy_distributions"),
            &format!("Relative L2 (recommended limits) and ULP error — {scope}"),
            &check_panels_from_report(report, &POLICY_METRICS),
        )?);
    }
    Ok(written)
}

/// Whether any panel has a value to draw.
fn has_values(panels: &[DistributionPanel]) -> bool {
    panels
        .iter()
        .any(|p| !p.honest.values.is_empty() || !p.cheat.values.is_empty())
}

/// Draws one distribution figure under the file name `file` (claimed in `names`).
fn write_distributions(
    names: &mut OutputNames,
    file: &str,
    title: &str,
    panels: &[DistributionPanel],
) -> anyhow::Result<PathBuf> {
    let path = names.claim(file);
    plot_threshold_distributions(title, panels, &path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes every figure for one trial into `out_dir`: a heatmap per verifier, and the
/// distributions, accept rates and overhead of this trial alone. Returns the written paths.
pub fn export_trial(trial: &TrialResult, out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut names = OutputNames::new(out_dir)?;
    let mut written = write_trial_heatmaps(trial, &mut names)?;
    let tag = format!("{}_trial{}", trial.experiment, trial.trial);
    let description = format!("{} trial {}", trial.experiment, trial.trial);
    written.extend(write_trial_set_figures(
        std::slice::from_ref(trial),
        &[],
        &tag,
        &description,
        &mut names,
    )?);
    Ok(written)
}

/// Writes the ROC curves and threshold distributions of an optimization report into `out_dir`,
/// with file names starting with `name`. Returns the written paths.
pub fn export_report(
    report: &OptimizationReport,
    name: &str,
    out_dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut names = OutputNames::new(out_dir)?;
    write_report_figures(report, name, &mut names)
}

/// Reads trial results, run summaries (and the trial files they list) and optimization reports,
/// and writes every figure that applies into `out_dir`: a heatmap per trial and verifier, the
/// distributions, accept rates and overhead over all trials, and per report its ROC curves and
/// distributions. Every input is read before anything is written; a bad input is an error
/// naming the file. Returns the written paths.
pub fn plot_files(inputs: &[PathBuf], out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(!inputs.is_empty(), "no input files given");
    let mut trials: Vec<TrialResult> = Vec::new();
    let mut summaries: Vec<RunSummary> = Vec::new();
    let mut reports: Vec<(String, OptimizationReport)> = Vec::new();
    let mut seen_trial_files: HashSet<PathBuf> = HashSet::new();
    let mut add_trial = |path: &Path, trial: TrialResult, trials: &mut Vec<TrialResult>| {
        // The same trial may come both directly and through its summary; plot it once.
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if seen_trial_files.insert(key) {
            trials.push(trial);
        }
    };
    for path in inputs {
        match load_input(path)? {
            PlotInput::Trial { path, trial } => add_trial(&path, *trial, &mut trials),
            PlotInput::Summary {
                summary,
                trials: listed,
                ..
            } => {
                summaries.push(*summary);
                for (trial_path, trial) in listed {
                    add_trial(&trial_path, trial, &mut trials);
                }
            }
            PlotInput::Report { path, report } => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "optimization".to_string());
                reports.push((stem, *report));
            }
        }
    }

    let mut names = OutputNames::new(out_dir)?;
    let mut written = Vec::new();
    for trial in &trials {
        written.extend(write_trial_heatmaps(trial, &mut names)?);
    }
    if !trials.is_empty() {
        let tag = experiments_tag(&trials);
        let description = experiments_description(&trials);
        written.extend(write_trial_set_figures(
            &trials,
            &summaries,
            &tag,
            &description,
            &mut names,
        )?);
    }
    for (stem, report) in &reports {
        written.extend(write_report_figures(report, stem, &mut names)?);
    }
    anyhow::ensure!(
        !written.is_empty(),
        "nothing to plot in {}: no checks, accept rates, overheads or ROC points",
        inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(written)
}
