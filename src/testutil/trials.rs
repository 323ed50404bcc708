//! Synthetic but realistic trial results and run summaries for the tests of every layer that
//! reads them (plots, report, output, console, Slurm tasks): three verifiers whose errors span
//! many decades, deterministic, nothing loaded or computed.

use std::path::Path;

use crate::record::results::{
    Aggregate, CheckRecord, InferenceInfo, Overhead, PromptInfo, RoleSpec, RunSummary, TrialResult,
    TrialSummary, TrialVerdict, Verdict, VerifierResult, VerifierStatistics, VerifierSummary,
    RESULT_FORMAT_VERSION,
};
use crate::stats::metrics::CheckMetrics;

/// SmolLM2-135M's hidden size.
pub(crate) const HIDDEN: usize = 576;

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
        segment: None,
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

pub(crate) fn cheat_trials() -> Vec<TrialResult> {
    (0..3)
        .map(|i| trial("exp3", i, false, &[8, 16, 24], 64))
        .collect()
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
