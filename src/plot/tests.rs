//! Renders every figure from small but realistic results and checks the PNGs: size, colour,
//! and that something was drawn where the data goes. Set `VERILLM_PLOT_TEST_OUT` to a
//! directory to keep copies of the images for looking at them.

use std::path::{Path, PathBuf};

use super::*;
use crate::experiment::results::{
    Aggregate, CheckRecord, InferenceInfo, Overhead, PromptInfo, RoleSpec, RunSummary, TrialResult,
    TrialSummary, TrialVerdict, Verdict, VerifierResult, VerifierStatistics, VerifierSummary,
    RESULT_FORMAT_VERSION,
};
use crate::stats::metrics::CheckMetrics;
use crate::stats::optimize::{build_report, OptimizationReport};

/// SmolLM2-135M's hidden size.
const HIDDEN: usize = 576;

/// Deterministic pseudo-random numbers in [0, 1) so the figures are reproducible.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform factor in [1/spread, spread].
    fn factor(&mut self, spread: f64) -> f64 {
        spread.powf(2.0 * self.next() - 1.0)
    }
}

/// Metrics of a check whose relative error is `relative` (0 = bit-identical vectors).
fn metrics_for(relative: f64, noise: &mut Noise) -> CheckMetrics {
    if relative == 0.0 {
        return CheckMetrics {
            n: HIDDEN,
            exact_matches: HIDDEN,
            pe: 0.0,
            pm: 0.0,
            pw: 1.0,
            mean_abs: 0.0,
            max_abs: 0.0,
            count_gt_0_2: 0,
            count_le_0_2: 0,
            count_gt_5: 0,
            count_0_2_to_5: 0,
            rel_l2: 0.0,
            cosine: 1.0,
            ulp_mean: 0.0,
            ulp_median: 0.0,
            non_finite: 0,
        };
    }
    let mean_abs = relative * 0.7 * noise.factor(1.5);
    let max_abs = mean_abs * 9.0 * noise.factor(1.5);
    let pm = (relative * 900.0 * noise.factor(1.3)).min(1.0);
    let pe = (relative * 6.0 * noise.factor(1.4)).min(0.5);
    let exact = ((1.0 - pm) * 0.4 * HIDDEN as f64) as usize;
    let over_0_2 = if max_abs > 0.2 {
        (HIDDEN as f64 * (relative * 2.0).min(0.5)) as usize
    } else {
        0
    };
    CheckMetrics {
        n: HIDDEN,
        exact_matches: exact,
        pe,
        pm,
        pw: (1.0 - pm) * 0.6,
        mean_abs,
        max_abs,
        count_gt_0_2: over_0_2,
        count_le_0_2: HIDDEN - exact - over_0_2,
        count_gt_5: 0,
        count_0_2_to_5: over_0_2,
        rel_l2: relative,
        cosine: 1.0 - relative * relative / 2.0,
        ulp_mean: relative * 1.3e4 * noise.factor(1.3),
        ulp_median: relative * 0.9e4 * noise.factor(1.3),
        non_finite: 0,
    }
}

fn role(precision: &str, device: &str, dtype: &str) -> RoleSpec {
    RoleSpec {
        model: "smollm2-135m".to_string(),
        precision: precision.to_string(),
        device: device.to_string(),
        dtype: dtype.to_string(),
    }
}

/// How a verifier's errors behave in a scenario.
#[derive(Clone, Copy)]
enum Scenario {
    /// Same device and dtype: most vectors bit-identical, a few rounding differences.
    HonestSameDevice,
    /// bf16 inference checked in f32: small errors growing with depth.
    HonestCrossPrecision,
    /// q4_0 weights claimed as full precision: large errors everywhere.
    CheatQuantized,
}

fn relative_error(scenario: Scenario, layer: usize, noise: &mut Noise) -> f64 {
    let depth = layer as f64 / 30.0;
    match scenario {
        Scenario::HonestSameDevice => {
            if noise.next() < 0.7 {
                0.0
            } else {
                1e-7 * noise.factor(8.0)
            }
        }
        Scenario::HonestCrossPrecision => 2e-3 * (0.3 + depth) * noise.factor(3.0),
        Scenario::CheatQuantized => 0.05 * (0.2 + depth) * noise.factor(3.0),
    }
}

fn verifier(
    name: &str,
    scenario: Scenario,
    layers: &[usize],
    positions: usize,
    cutoff: f64,
    noise: &mut Noise,
) -> VerifierResult {
    let threshold = 0.01;
    let checks: Vec<CheckRecord> = (0..positions)
        .flat_map(|position| layers.iter().map(move |&layer| (position, layer)))
        .map(|(position, layer)| {
            let metrics = metrics_for(relative_error(scenario, layer, noise), noise);
            CheckRecord {
                position,
                layer,
                accept: metrics.rel_l2 <= threshold,
                metrics,
            }
        })
        .collect();
    let accepted = checks.iter().filter(|c| c.accept).count();
    let total = checks.len();
    let accept_rate = accepted as f64 / total as f64;
    let rel: Vec<f64> = checks.iter().map(|c| c.metrics.rel_l2).collect();
    let summary = VerifierSummary {
        accept_rate,
        accepted,
        total_checks: total,
        mean_rel_l2: rel.iter().sum::<f64>() / total as f64,
        max_rel_l2: rel.iter().copied().fold(0.0, f64::max),
        mean_pe: checks.iter().map(|c| c.metrics.pe).sum::<f64>() / total as f64,
        mean_abs: checks.iter().map(|c| c.metrics.mean_abs).sum::<f64>() / total as f64,
        max_abs: checks.iter().map(|c| c.metrics.max_abs).fold(0.0, f64::max),
    };
    let embedding_checks = (0..positions)
        .map(|position| CheckRecord {
            position,
            layer: 0,
            accept: true,
            metrics: metrics_for(0.0, noise),
        })
        .collect();
    let inference_time = 6.0 * noise.factor(1.2);
    let verification_time = inference_time * 0.12 * noise.factor(1.6);
    VerifierResult {
        name: name.to_string(),
        role: role("full", "cpu", "f32"),
        policy: "precision_aware (f32 tier: rel_l2 <= 0.01, pe <= 0.05)".to_string(),
        tier: Some("f32".to_string()),
        limits: Some(crate::stats::policy::TierThresholds {
            rel_l2_max: threshold,
            pe_max: 0.05,
        }),
        cutoff,
        statistics: VerifierStatistics {
            summary,
            checks,
            embedding_checks,
            token_checks: Vec::new(),
        },
        token_checks: None,
        overhead: Overhead {
            verification_time_s: verification_time,
            inference_time_s: inference_time,
            percentage: verification_time / inference_time * 100.0,
        },
        verdict: if accept_rate >= cutoff {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        complete: true,
    }
}

/// A trial with three verifiers; honest experiments mix same-device and cross-precision
/// verifiers so the values span many decades and include exact zeros.
pub(crate) fn trial(
    experiment: &str,
    index: usize,
    honest: bool,
    layers: &[usize],
    positions: usize,
) -> TrialResult {
    let mut noise = Noise(index as u64 * 7919 + experiment.len() as u64 * 104729 + 1);
    let cutoff = if honest { 0.9 } else { 0.8 };
    let scenarios = if honest {
        [
            Scenario::HonestCrossPrecision,
            Scenario::HonestCrossPrecision,
            Scenario::HonestSameDevice,
        ]
    } else {
        [Scenario::CheatQuantized; 3]
    };
    let verifiers: Vec<VerifierResult> = scenarios
        .iter()
        .enumerate()
        .map(|(i, &scenario)| {
            verifier(
                &format!("verifier{}", i + 1),
                scenario,
                layers,
                positions,
                cutoff,
                &mut noise,
            )
        })
        .collect();
    let avg_accept_rate = verifiers
        .iter()
        .map(|v| v.statistics.summary.accept_rate)
        .sum::<f64>()
        / verifiers.len() as f64;
    let all_pass = verifiers.iter().all(|v| v.verdict == Verdict::Pass);
    let final_verdict = if all_pass {
        TrialVerdict::Pass
    } else {
        TrialVerdict::Reject
    };
    let expected_verdict = if honest {
        TrialVerdict::Pass
    } else {
        TrialVerdict::Reject
    };
    TrialResult {
        request_checked: false,
        decision: None,
        format_version: RESULT_FORMAT_VERSION,
        experiment: experiment.to_string(),
        trial: index,
        started_at: 1_700_000_000 + index as u64 * 60,
        pairing: if honest {
            "cross-precision on cpu: bf16 -> f32".to_string()
        } else {
            "q4_0 inference -> full verifiers on cpu".to_string()
        },
        prompt: PromptInfo {
            category: "short".to_string(),
            id: format!("short-{index}"),
            text: "Explain why the sky is blue.".to_string(),
        },
        sampled_layers: layers.to_vec(),
        inference: InferenceInfo {
            role: role(if honest { "full" } else { "q4_0" }, "cpu:bf16", "bf16"),
            prompt_tokens: 12,
            generated_tokens: positions,
            time_s: 6.0,
            tokens_per_s: positions as f64 / 6.0,
            decode_s: Some(5.0),
            output_text: "Because of Rayleigh scattering.".to_string(),
            output_ids: (0..positions as u32).collect(),
            captured_bytes: positions * layers.len() * HIDDEN * 4,
        },
        summary: TrialSummary {
            avg_accept_rate,
            final_verdict,
            expected_verdict,
            expectation_held: final_verdict == expected_verdict,
            detected: (!honest).then_some(final_verdict == TrialVerdict::Reject),
        },
        verifiers,
        complete: true,
    }
}

pub(crate) fn honest_trials() -> Vec<TrialResult> {
    let layers: Vec<usize> = (1..=7).map(|k| k * 4).collect();
    (0..3)
        .map(|i| trial("exp2", i, true, &layers, 40))
        .collect()
}

fn cheat_trials() -> Vec<TrialResult> {
    (0..3)
        .map(|i| trial("exp3", i, false, &[8, 16, 24], 64))
        .collect()
}

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

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) {
    std::fs::write(
        path,
        serde_json::to_vec_pretty(value).expect("serializable"),
    )
    .expect("writable");
}

pub(crate) fn summary_for(
    experiment: &str,
    trials: &[TrialResult],
    files: Vec<String>,
) -> RunSummary {
    RunSummary {
        format_version: RESULT_FORMAT_VERSION,
        experiment: experiment.to_string(),
        description: "test run".to_string(),
        started_at: 1_700_000_000,
        pairing: trials[0].pairing.clone(),
        inference: trials[0].inference.role.clone(),
        verifiers: trials[0].verifiers.iter().map(|v| v.role.clone()).collect(),
        cutoff: trials[0].verifiers[0].cutoff,
        expected_verdict: trials[0].summary.expected_verdict,
        trials: trials.len(),
        planned_trials: Some(trials.len()),
        jobs: Some(1),
        trial_files: files,
        aggregate: Aggregate {
            avg_accept_rate: trials
                .iter()
                .map(|t| t.summary.avg_accept_rate)
                .sum::<f64>()
                / trials.len() as f64,
            avg_overhead_percentage: 12.0,
            pass_rate: 1.0,
            detection_rate: None,
            expectation_rate: 1.0,
        },
        complete: true,
    }
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
    use crate::engine::verification::TokenCheckRecord;
    use crate::experiment::results::TokenCheckSummary;
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
