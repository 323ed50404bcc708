//! Benchmark of the console's drawing (not of the engines): an [`App`] is filled with synthetic
//! engine events and drawn repeatedly into an off-screen 160×48 terminal.

use std::time::Instant;

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::engine::events::EngineEvent;
use crate::model::device::{DeviceKind, DeviceProfile};
use crate::model::weights::Precision;
use crate::record::results::{RoleSpec, TrialVerdict, Verdict};
use crate::stats::metrics::CheckMetrics;

use super::app::{App, Catalog};
use super::heatmap::HeatMetric;
use super::{draw, CancelToken, ExperimentChoice, RoleChoice};

/// Metrics with the given relative error; the other drawn metrics follow it.
pub(crate) fn synthetic_metrics(rel_l2: f64) -> CheckMetrics {
    CheckMetrics {
        n: 896,
        exact_matches: if rel_l2 == 0.0 { 896 } else { 100 },
        pe: rel_l2.min(1.0) / 10.0,
        pm: 0.5,
        pw: 0.1,
        mean_abs: rel_l2 * 0.3,
        max_abs: rel_l2 * 4.0,
        count_gt_0_2: 0,
        count_le_0_2: 796,
        count_gt_5: 0,
        count_0_2_to_5: 0,
        rel_l2,
        cosine: 1.0 - rel_l2,
        ulp_mean: rel_l2 * 1e4,
        ulp_median: rel_l2 * 5e3,
        non_finite: 0,
    }
}

pub(crate) fn synthetic_role(device: DeviceProfile) -> RoleChoice {
    RoleChoice::new("tiny-llama", Precision::Full, device)
}

/// Verifier `verifier`'s (from 0) device in drawing tests and the benchmark: a real profile,
/// a different GPU for each, so every verifier's label differs (`cuda:0:f16`, `cuda:1:f16`, …).
pub(crate) fn synthetic_device(verifier: usize) -> DeviceProfile {
    DeviceProfile {
        kind: DeviceKind::Cuda(verifier),
        dtype: candle_core::DType::F16,
    }
}

/// An experiment with `verifiers` verifiers, inference on the CPU.
pub(crate) fn synthetic_choice(name: &str, verifiers: usize, tokens: usize) -> ExperimentChoice {
    ExperimentChoice {
        name: name.into(),
        description: "synthetic experiment for drawing tests".into(),
        inference: synthetic_role(DeviceProfile::CPU_F32),
        verifiers: (0..verifiers)
            .map(|v| synthetic_role(synthetic_device(v)))
            .collect(),
        cutoff: 0.95,
        expected: TrialVerdict::Pass,
        trials: 1,
        max_new_tokens: tokens,
        seed: 7,
        prompt_category: "general".into(),
        segment_layers: None,
    }
}

/// Relative error of a check: small and varied for verifier 0, larger for later verifiers.
pub(crate) fn synthetic_error(verifier: usize, position: usize, layer: usize) -> f64 {
    let wobble = ((position * 7 + layer * 13) % 50 + 1) as f64;
    1e-6 * wobble * 10f64.powi(verifier as i32 * 2)
}

/// Events of one trial: start, `tokens` tokens, then per verifier a check for every (token,
/// layer) pair — `checked_tokens` of them — and, when all are checked, its verdict.
pub(crate) fn synthetic_trial_events(
    trial: usize,
    tokens: usize,
    checked_tokens: usize,
    verifiers: usize,
    layers: usize,
) -> Vec<EngineEvent> {
    let sampled_layers: Vec<usize> = (1..=layers).map(|l| l * 4).collect();
    let roles = (0..verifiers)
        .map(|v| RoleSpec {
            model: "tiny-llama".into(),
            precision: "full".into(),
            device: synthetic_device(v).to_string(),
            dtype: "f32".into(),
        })
        .collect();
    let mut events = vec![EngineEvent::TrialStarted {
        trial,
        prompt_category: "general".into(),
        prompt_tokens: 12,
        max_new_tokens: tokens,
        decode_path: "fast step, AVX2 kernels".into(),
        sampled_layers: sampled_layers.clone(),
        verifiers: roles,
    }];
    for index in 0..tokens {
        let text = if index % 12 == 11 {
            "tok.\n".to_string()
        } else {
            format!("w{index} ")
        };
        events.push(EngineEvent::Token {
            trial,
            index,
            id: index as u32,
            text,
            step_ms: 20.0,
        });
    }
    events.push(EngineEvent::InferenceDone {
        trial,
        tokens,
        time_s: tokens as f64 * 0.02,
    });
    for verifier in 0..verifiers {
        events.push(EngineEvent::VerifierStarted { trial, verifier });
        let mut accepted = 0;
        for position in 0..checked_tokens {
            for &layer in &sampled_layers {
                let error = synthetic_error(verifier, position, layer);
                let accept = error < 1e-3;
                accepted += usize::from(accept);
                events.push(EngineEvent::Check {
                    trial,
                    verifier,
                    position,
                    layer,
                    accept,
                    metrics: Box::new(synthetic_metrics(error)),
                });
            }
        }
        let total = checked_tokens * sampled_layers.len();
        if checked_tokens == tokens && total > 0 {
            let accept_rate = accepted as f64 / total as f64;
            let verdict = if accept_rate >= 0.95 {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            events.push(EngineEvent::VerifierDone {
                trial,
                verifier,
                accept_rate,
                verdict,
                overhead_percentage: 40.0 + verifier as f64,
            });
        }
    }
    events
}

/// Mean and worst time (ms) to draw one frame of the run view at 160×48 after feeding
/// `tokens` tokens and `tokens × layers` checks per verifier. The selected verifier and metric
/// change between frames so every frame recomputes its heatmap bins.
pub fn render_benchmark(
    tokens: usize,
    verifiers: usize,
    layers: usize,
    frames: usize,
) -> (f64, f64) {
    let choice = synthetic_choice("bench", verifiers, tokens);
    let catalog = Catalog {
        experiments: vec![choice.clone()],
        ..Catalog::default()
    };
    let mut app = App::new(catalog);
    app.begin_run(choice, CancelToken::new());
    for event in synthetic_trial_events(0, tokens, tokens, verifiers, layers) {
        app.handle_event(event);
    }
    let mut terminal = match Terminal::new(TestBackend::new(160, 48)) {
        Ok(terminal) => terminal,
        Err(_) => return (f64::NAN, f64::NAN),
    };
    let (mut total_ms, mut worst_ms) = (0.0f64, 0.0f64);
    for frame in 0..frames {
        app.selected_verifier = frame % verifiers.max(1);
        app.metric = HeatMetric::ALL[frame / verifiers.max(1) % HeatMetric::ALL.len()];
        let start = Instant::now();
        let _ = terminal.draw(|f| draw(f, &app));
        let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
        total_ms += elapsed_ms;
        worst_ms = worst_ms.max(elapsed_ms);
    }
    (total_ms / frames.max(1) as f64, worst_ms)
}
