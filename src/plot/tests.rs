//! Renders every figure from small but realistic results and checks the PNGs: size, colour,
//! and that something was drawn where the data goes. Set `VERILLM_PLOT_TEST_OUT` to a
//! directory to keep copies of the images for looking at them.

use std::path::{Path, PathBuf};

use super::*;
use crate::record::results::TrialResult;
use crate::stats::metrics::CheckMetrics;
use crate::stats::optimize::{build_report, OptimizationReport};
use crate::testutil::trials::*;

fn report_for(honest: &[TrialResult], cheat: &[TrialResult]) -> OptimizationReport {
    let checks = |trials: &[TrialResult]| -> Vec<CheckMetrics> {
        trials
            .iter()
            .flat_map(|t| &t.verifiers)
            .flat_map(|v| &v.statistics.checks)
            .map(|c| c.metrics.clone())
            .collect()
    };
    let rates = |trials: &[TrialResult]| -> Vec<f64> {
        trials
            .iter()
            .flat_map(|t| &t.verifiers)
            .map(|v| v.statistics.summary.accept_rate)
            .collect()
    };
    build_report(
        vec!["exp2".to_string(), "exp3".to_string()],
        honest.len() + cheat.len(),
        &checks(honest),
        &checks(cheat),
        &rates(honest),
        &rates(cheat),
    )
}
/// Writes a run directory per experiment (summary + trial files) and an optimization report,
/// and returns the inputs for [`plot_files`].
fn write_inputs(root: &Path) -> Vec<PathBuf> {
    let honest = honest_trials();
    let cheat = cheat_trials();
    let mut inputs = Vec::new();
    for (experiment, trials) in [("exp2", &honest), ("exp3", &cheat)] {
        let run_dir = root.join(format!("{experiment}-run"));
        std::fs::create_dir_all(run_dir.join("trials")).expect("creatable");
        let mut files = Vec::new();
        for trial in trials {
            let name = format!("trials/trial_{}.json", trial.trial);
            write_json(&run_dir.join(&name), trial);
            files.push(name);
        }
        let summary_path = run_dir.join("summary.json");
        write_json(&summary_path, &summary_for(experiment, trials, files));
        inputs.push(summary_path);
    }
    let report_path = root.join("optimization.json");
    write_json(&report_path, &report_for(&honest, &cheat));
    inputs.push(report_path);
    inputs
}

/// Keeps a copy of the figures when `VERILLM_PLOT_TEST_OUT` names a directory.
fn keep_copies(paths: &[PathBuf]) {
    if let Some(directory) = std::env::var_os("VERILLM_PLOT_TEST_OUT") {
        let directory = PathBuf::from(directory);
        std::fs::create_dir_all(&directory).expect("creatable");
        for path in paths {
            std::fs::copy(path, directory.join(path.file_name().expect("file name")))
                .expect("copyable");
        }
    }
}

/// Decodes the PNG and checks it is large, colourful, and has coloured pixels inside the
/// region where plots are drawn (not only in titles or legends).
fn assert_readable_figure(path: &Path) {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()))
        .to_rgb8();
    let (width, height) = image.dimensions();
    assert!(
        width >= 1600 && height >= 1000,
        "{} is only {width}×{height}",
        path.display()
    );
    let is_colour = |p: &image::Rgb<u8>| {
        let [r, g, b] = p.0;
        r.abs_diff(g) > 24 || g.abs_diff(b) > 24 || r.abs_diff(b) > 24
    };
    let mut colours = std::collections::HashSet::new();
    for pixel in image.pixels().filter(|p| is_colour(p)) {
        colours.insert(pixel.0);
    }
    assert!(
        colours.len() >= 3,
        "{} has only {} distinct colours",
        path.display(),
        colours.len()
    );
    let mut drawn = 0usize;
    for y in (height * 15 / 100)..(height * 90 / 100) {
        for x in (width * 10 / 100)..(width * 75 / 100) {
            if is_colour(image.get_pixel(x, y)) {
                drawn += 1;
            }
        }
    }
    assert!(
        drawn >= 500,
        "{} has only {drawn} coloured pixels in the plot region",
        path.display()
    );
    let name = path.file_name().expect("file name").to_string_lossy();
    assert!(
        !name.contains(':') && !name.contains(' '),
        "bad file name {name}"
    );
}

/// The distributions from run results lead with the policy's decision metric and mark the
/// limits each tier applied, as the verifiers recorded them.
#[test]
fn distributions_of_run_results_mark_the_policy_limits_of_every_tier() {
    let mut trials = honest_trials();
    let bf16 = &mut trials[1].verifiers[0];
    bf16.tier = Some("bf16".to_string());
    bf16.limits = Some(crate::stats::policy::TierThresholds {
        rel_l2_max: 0.1,
        pe_max: 0.35,
    });
    let lines = |panel: &super::DistributionPanel| -> Vec<(String, f64)> {
        panel
            .thresholds
            .iter()
            .map(|t| (t.label.clone(), t.value))
            .collect()
    };
    // The companion figure: what the policy decides on, with each tier's limit.
    let policy = check_panels_from_trials(&trials, &POLICY_METRICS);
    assert_eq!(policy[0].title, CheckMetric::RelL2.title());
    assert_eq!(
        lines(&policy[0]),
        [
            ("f32-tier limit (accept at or below)".to_string(), 0.01),
            ("bf16-tier limit (accept at or below)".to_string(), 0.1),
        ]
    );
    assert_eq!(policy[1].title, CheckMetric::UlpMean.title());
    assert!(policy[1].thresholds.is_empty());
    // The reference grid, in its order: Pe (limited per tier too), Pm, Pw, mean|Δ|, max|Δ|,
    // accept rate (with the cutoff).
    let panels = distribution_panels_from_trials(&trials);
    let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
    assert_eq!(titles.len(), 6, "{titles:?}");
    assert_eq!(panels[0].title, CheckMetric::Pe.title());
    assert_eq!(
        lines(&panels[0]).iter().map(|l| l.1).collect::<Vec<_>>(),
        [0.05, 0.35]
    );
    assert_eq!(panels[4].title, CheckMetric::MaxAbs.title());
    assert!(panels[1..5].iter().all(|p| p.thresholds.is_empty()));
    assert_eq!(lines(&panels[5]), [("cutoff".to_string(), 0.9)]);
}

#[test]
fn every_figure_from_result_files_renders() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let inputs = write_inputs(scratch.path());
    let out_dir = scratch.path().join("figures");
    let written = plot_files(&inputs, &out_dir).expect("figures written");
    keep_copies(&written);
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    for expected in [
        "exp2_trial0_verifier1_heatmap_rel_l2.png",
        "exp3_trial2_verifier3_heatmap_rel_l2.png",
        "exp2_exp3_threshold_distributions.png",
        "exp2_exp3_policy_distributions.png",
        "exp2_exp3_accept_rates.png",
        "exp2_exp3_overhead.png",
        "optimization_roc.png",
        "optimization_threshold_distributions.png",
        "optimization_policy_distributions.png",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // 6 trials × 3 verifiers heatmaps + 4 trial-set figures + 3 report figures.
    assert_eq!(written.len(), 6 * 3 + 4 + 3, "{names:?}");
    for path in &written {
        assert!(path.starts_with(&out_dir));
        assert_readable_figure(path);
    }
}

#[test]
fn export_trial_writes_heatmaps_and_trial_figures() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let trial = &cheat_trials()[0];
    let written = export_trial(trial, scratch.path()).expect("figures written");
    keep_copies(&written);
    assert_eq!(written.len(), 3 + 4);
    for path in &written {
        assert_readable_figure(path);
    }
}

#[test]
fn every_heatmap_metric_renders() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let trial = &honest_trials()[1];
    for metric in CheckMetric::ALL {
        // verifier3 is the same-device one: mostly exact zeros.
        let path = scratch.path().join(format!("heatmap_{metric}.png"));
        plot_check_heatmap(trial, 2, metric, &path).expect("heatmap written");
        keep_copies(std::slice::from_ref(&path));
        assert_readable_figure(&path);
    }
    let error = plot_check_heatmap(trial, 7, CheckMetric::Pe, &scratch.path().join("x.png"))
        .expect_err("no such verifier");
    assert!(
        error.to_string().contains("no verifier number 7"),
        "{error}"
    );
}

/// A check with a NaN or infinite error is painted off the scale, never as its lowest colour
/// (which reads as the closest match).
#[test]
fn heatmap_cells_with_nan_or_inf_get_their_own_colour() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut trial = trial("exp3", 0, false, &[8, 16, 24], 12);
    let checks = &mut trial.verifiers[0].statistics.checks;
    checks[0].metrics.rel_l2 = f64::INFINITY;
    checks[1].metrics.rel_l2 = f64::NAN;
    let path = scratch.path().join("non_finite.png");
    plot_check_heatmap(&trial, 0, CheckMetric::RelL2, &path).expect("heatmap written");
    keep_copies(std::slice::from_ref(&path));
    let image = image::open(&path).unwrap().to_rgb8();
    let special = super::heatmap::NON_FINITE_CELL;
    let painted = image
        .pixels()
        .filter(|p| p.0 == [special.0, special.1, special.2])
        .count();
    // Two cells of a 12 × 3 grid on a 1600-pixel-wide figure: thousands of pixels, plus the
    // legend's swatch.
    assert!(painted > 2000, "{painted} pixels in the NaN/inf colour");
}

#[test]
fn a_long_trial_with_every_layer_renders() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let layers: Vec<usize> = (1..=30).collect();
    let long = trial("exp5", 0, false, &layers, 300);
    let path = scratch.path().join("long_heatmap.png");
    plot_check_heatmap(&long, 0, CheckMetric::RelL2, &path).expect("heatmap written");
    keep_copies(std::slice::from_ref(&path));
    assert_readable_figure(&path);
}

#[test]
fn a_trial_given_directly_and_through_its_summary_is_plotted_once() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut inputs = write_inputs(scratch.path());
    inputs.push(scratch.path().join("exp2-run/trials/trial_0.json"));
    let written = plot_files(&inputs, &scratch.path().join("figures")).expect("written");
    assert_eq!(written.len(), 6 * 3 + 4 + 3);
}

#[test]
fn plain_data_figures_render() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let curves = vec![
        RocCurve {
            label: "perfect".to_string(),
            points: vec![(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)],
            auc: None,
        },
        RocCurve {
            label: "weak".to_string(),
            points: vec![(0.0, 0.0), (0.3, 0.5), (0.6, 0.8), (1.0, 1.0)],
            auc: None,
        },
    ];
    assert_eq!(curves[0].area(), 1.0);
    let roc_path = scratch.path().join("roc.png");
    plot_roc_curves("ROC", &curves, &roc_path).expect("written");
    keep_copies(std::slice::from_ref(&roc_path));
    assert_readable_figure(&roc_path);

    let groups = vec![AcceptRateGroup {
        label: "exp1".to_string(),
        cutoff: Some(0.95),
        verifiers: vec![
            VerifierAcceptRates {
                verifier: "a".to_string(),
                rates: vec![1.0, 0.98],
            },
            VerifierAcceptRates {
                verifier: "b".to_string(),
                rates: vec![0.5],
            },
        ],
    }];
    let bars_path = scratch.path().join("bars.png");
    plot_accept_rates("Accept rates", &groups, &bars_path).expect("written");
    keep_copies(std::slice::from_ref(&bars_path));
    assert_readable_figure(&bars_path);

    let overhead_path = scratch.path().join("overhead.png");
    let samples = vec![OverheadSamples {
        verifier: "a".to_string(),
        percentages: vec![10.0, 12.0, 11.0, 30.0],
    }];
    plot_overhead("Overhead", &samples, &overhead_path).expect("written");
    keep_copies(std::slice::from_ref(&overhead_path));
    assert_readable_figure(&overhead_path);
}

/// Trials with token checks export their margin distribution (honest vs cheating, −δ lines):
/// margins computed from the token records, infinities drawn at the edges.
#[test]
fn token_margins_are_exported_when_tokens_were_checked() {
    use crate::record::results::TokenCheckRecord;
    use crate::record::results::TokenCheckSummary;
    let mut honest = honest_trials()[0].clone();
    let mut cheat = cheat_trials()[0].clone();
    assert!(super::distributions::token_margin_panel(&[honest.clone()]).is_none());
    for (trial, margins) in [
        (&mut honest, vec![0.5, 2.0, f64::INFINITY, 0.1]),
        (&mut cheat, vec![0.5, -3.0, f64::NEG_INFINITY, -0.4]),
    ] {
        for verifier in &mut trial.verifiers {
            verifier.statistics.token_checks = margins
                .iter()
                .enumerate()
                .map(|(position, &margin)| TokenCheckRecord {
                    position,
                    token: position as u32,
                    in_set: margin.is_finite() || margin > 0.0,
                    margin,
                    accept: margin >= -0.01,
                })
                .collect();
            verifier.token_checks = Some(TokenCheckSummary {
                count: margins.len(),
                accepted: margins.iter().filter(|m| **m >= -0.01).count(),
                accept_rate: 0.0,
                min_margin: margins.iter().copied().fold(f64::INFINITY, f64::min),
                first_rejected_position: None,
                tolerance: 0.01,
                stop_violation: None,
                pass: false,
            });
        }
    }
    let panel = super::distributions::token_margin_panel(&[honest.clone(), cheat.clone()]).unwrap();
    assert_eq!(panel.honest.values.len(), 4 * honest.verifiers.len());
    assert!(panel.cheat.values.contains(&-10.0) && panel.honest.values.contains(&10.0));
    assert_eq!(panel.thresholds.len(), 1);
    assert_eq!(panel.thresholds[0].value, -0.01);
    let scratch = tempfile::tempdir().expect("temp dir");
    let written = export_trial(&cheat, scratch.path()).expect("figures written");
    let margins: Vec<_> = written
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("_token_margins.png"))
        .collect();
    assert_eq!(margins.len(), 1, "{written:?}");
    assert_readable_figure(margins[0]);
}
