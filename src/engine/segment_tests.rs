//! Segment verification on the embedded model: honest runs pass whatever the challenge, a run
//! with one layer skipped is caught exactly when that layer is challenged, a q4 run by every
//! challenge.

use std::sync::Arc;

use candle_core::quantized::GgmlDType;

use super::*;
use crate::engine::commitment::{commit, derive_challenge, read_opening, write_opening};
use crate::engine::events::{CancelToken, EventSink};
use crate::engine::inference::generate_committed;
use crate::engine::sampling::SamplingParams;
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;
use crate::testutil::embedded;

const REQUEST: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const NONCE: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn full() -> LoadedModel {
    embedded(Precision::Full, DeviceProfile::CPU_F32)
}

fn params() -> SamplingParams {
    SamplingParams {
        temperature: 0.7,
        seed: 11,
        max_new_tokens: 8,
        ..SamplingParams::default()
    }
}

struct Run {
    prompt: Vec<u32>,
    output: Vec<u32>,
    store: crate::engine::capture::CapturedStates,
}

fn infer(model: &LoadedModel) -> Run {
    infer_with(model, &params())
}

fn infer_with(model: &LoadedModel, sampling: &SamplingParams) -> Run {
    let prompt =
        crate::model::chat::render_prompt(model, &[("user".into(), "Name a color.".into())])
            .unwrap()
            .1;
    let (out, store) = generate_committed(
        model,
        &prompt,
        sampling,
        &[],
        &EventSink::none(),
        0,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(store.rows, prompt.len() + out.output_ids.len());
    Run {
        prompt,
        output: out.output_ids,
        store,
    }
}

/// Commits, draws the challenge of `secret` with `layers` layers, opens it, reads the opening
/// back (every proof checked) and verifies its segments with the f32 verifier.
fn segments(run: &Run, secret: &[u8], layers: usize) -> SegmentOutput {
    segments_with(run, secret, layers, None, &params())
}

/// [`segments`] with `token_positions` drawn tokens checked (None: all), held to `sampling`.
fn segments_with(
    run: &Run,
    secret: &[u8],
    layers: usize,
    token_positions: Option<usize>,
    sampling: &SamplingParams,
) -> SegmentOutput {
    let verifier = full();
    let (commitment, tree) = commit(&run.store, REQUEST).unwrap();
    let ch = derive_challenge(
        &commitment.root,
        NONCE,
        secret,
        verifier.model.config.n_layers,
        layers,
        run.output.len(),
        token_positions,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_opening(
        dir.path(),
        &commitment,
        &run.store,
        &tree,
        &ch,
        run.prompt.len(),
    )
    .unwrap();
    let opening = read_opening(dir.path(), &commitment, REQUEST, NONCE, run.prompt.len()).unwrap();
    let job = SegmentJob {
        prompt_ids: &run.prompt,
        output_ids: &run.output,
        opening: &opening,
        inference_dtype: CompareDtype::F32,
        inference_native: false,
        policy: &PolicyConfig::default(),
        tokens: Some(TokenRule {
            sampling,
            eos_ids: verifier.tokenizer.eos_ids(),
            output_complete: true,
        }),
    };
    verify_segments(&verifier, &job).unwrap()
}

fn secret(i: usize) -> Vec<u8> {
    format!("verifier secret number {i:04}").into_bytes()
}

#[test]
fn an_honest_run_passes_every_challenge_up_to_all_layers() {
    let run = infer(&full());
    for (i, c) in [1, 2, 4, 7, 30].into_iter().enumerate() {
        let out = segments(&run, &secret(i), c);
        assert_eq!(out.segments.len(), c);
        assert!(
            out.pass(0.95),
            "c = {c}: layers {:?} failed, accept {:.3}",
            out.failed_layers(0.95),
            out.accept_rate()
        );
        assert_eq!(out.accept_rate(), 1.0, "c = {c}");
        // Column 0 and the c distinct columns l + 1 are opened at every position.
        assert!(out.proofs_checked >= (c + 1) * run.store.rows);
        assert!(out.token_checks.as_ref().unwrap().pass());
    }
}

#[test]
fn a_skipped_layer_is_caught_exactly_when_challenged() {
    let honest = full();
    let skipping = LoadedModel {
        model: Arc::new(honest.model.with_layer_skipped(5).unwrap()),
        ..honest.clone()
    };
    let run = infer(&skipping);
    let (mut challenged, mut missed) = (0, 0);
    // Secrets are drawn until both cases were seen twice (3 of 30 layers: about 1 challenge
    // in 10 holds layer 5).
    for i in 0..200 {
        if challenged >= 2 && missed >= 2 {
            break;
        }
        let out = segments(&run, &secret(100 + i), 3);
        let layers: Vec<usize> = out.segments.iter().map(|s| s.layer).collect();
        if layers.contains(&5) {
            challenged += 1;
            assert_eq!(out.failed_layers(0.95), vec![5], "challenge {layers:?}");
            assert!(!out.pass(0.95));
        } else {
            missed += 1;
            assert!(
                out.pass(0.95),
                "challenge {layers:?}: {:?}",
                out.failed_layers(0.95)
            );
        }
    }
    assert!(
        challenged >= 2 && missed >= 2,
        "{challenged} challenged, {missed} missed"
    );
    let all = segments(&run, &secret(999), 30);
    assert_eq!(all.failed_layers(0.95), vec![5]);
    // 29 of 30 layers accepted is above the cutoff as one rate: the verdict is per layer.
    assert!(!all.pass(0.95));
}

#[test]
fn a_q4_run_is_caught_by_every_challenge() {
    let q4 = embedded(
        Precision::Quantized(GgmlDType::Q4_0),
        DeviceProfile::CPU_F32,
    );
    let run = infer(&q4);
    for i in 0..6 {
        let out = segments(&run, &secret(200 + i), 1);
        assert!(
            !out.pass(0.95) && out.failed_layers(0.95) == vec![out.segments[0].layer],
            "layer {} accept {:.3}",
            out.segments[0].layer,
            out.accept_rate()
        );
    }
}

/// Detection of a one-layer skip against c, measured over challenges drawn from many secrets,
/// next to 1 − (1 − k/L)^c (k = 1). A measurement, not a check: run with
/// `cargo test --release --lib measure_skip_detection -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_skip_detection_against_c() {
    let honest = full();
    let skipping = LoadedModel {
        model: Arc::new(honest.model.with_layer_skipped(13).unwrap()),
        ..honest.clone()
    };
    let run = infer(&skipping);
    let n_layers = honest.model.config.n_layers as f64;
    let trials = 200;
    for c in [1, 2, 4, 8] {
        let caught = (0..trials)
            .filter(|&i| !segments(&run, &secret(10_000 + i), c).pass(0.95))
            .count();
        println!(
            "skip layer 13, c = {c}: caught {caught}/{trials} = {:.3}; 1 − (1 − 1/L)^c = {:.3}",
            caught as f64 / trials as f64,
            1.0 - (1.0 - 1.0 / n_layers).powi(c as i32)
        );
    }
}

#[test]
fn a_layer_with_requantized_weights_is_caught_exactly_when_challenged() {
    let honest = full();
    for ty in [GgmlDType::Q4_0, GgmlDType::Q8_0] {
        let cheating = LoadedModel {
            model: Arc::new(honest.model.with_layer_requantized(9, ty).unwrap()),
            ..honest.clone()
        };
        let run = infer(&cheating);
        let all = segments(&run, &secret(300), 30);
        assert_eq!(all.failed_layers(0.95), vec![9], "{ty:?}");
        assert!(!all.pass(0.95));
        let (mut challenged, mut missed) = (0, 0);
        for i in 0..200 {
            if challenged >= 1 && missed >= 1 {
                break;
            }
            let out = segments(&run, &secret(400 + i), 3);
            let layers: Vec<usize> = out.segments.iter().map(|s| s.layer).collect();
            if layers.contains(&9) {
                challenged += 1;
                assert!(!out.pass(0.95), "{ty:?} {layers:?}");
            } else {
                missed += 1;
                assert!(out.pass(0.95), "{ty:?} {layers:?}");
            }
        }
        assert!(challenged >= 1 && missed >= 1);
    }
}

/// Detection of one-layer cheats (layer 13 skipped; layer 13's weights quantized to q4_0 or
/// q8_0) against c, each over `DRAWS` challenges from distinct secrets, beside
/// 1 − (1 − k/L)^c with k = 1. A measurement, not a check:
/// `cargo test --release --lib measure_one_layer_cheats -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_one_layer_cheats_against_c() {
    const DRAWS: usize = 100;
    let honest = full();
    let n_layers = honest.model.config.n_layers as f64;
    let cheats: Vec<(&str, LoadedModel)> = vec![
        (
            "skip layer 13",
            LoadedModel {
                model: Arc::new(honest.model.with_layer_skipped(13).unwrap()),
                ..honest.clone()
            },
        ),
        (
            "layer 13 in q4_0",
            LoadedModel {
                model: Arc::new(
                    honest
                        .model
                        .with_layer_requantized(13, GgmlDType::Q4_0)
                        .unwrap(),
                ),
                ..honest.clone()
            },
        ),
        (
            "layer 13 in q8_0",
            LoadedModel {
                model: Arc::new(
                    honest
                        .model
                        .with_layer_requantized(13, GgmlDType::Q8_0)
                        .unwrap(),
                ),
                ..honest.clone()
            },
        ),
    ];
    for (name, model) in &cheats {
        let run = infer(model);
        for c in [1, 2, 4, 8] {
            let caught = (0..DRAWS)
                .filter(|&i| !segments(&run, &secret(20_000 + i), c).pass(0.95))
                .count();
            println!(
                "{name}, c = {c}: caught {caught}/{DRAWS} = {:.2}; 1 − (1 − 1/L)^c = {:.3}",
                caught as f64 / DRAWS as f64,
                1.0 - (1.0 - 1.0 / n_layers).powi(c as i32)
            );
        }
    }
}

/// A provider that ignores the request's seeded sampling and decodes greedily (a sampling
/// cheat: its states are all honest for the tokens it chose).
fn greedy_run(tokens: usize) -> (Run, SamplingParams) {
    let asked = SamplingParams {
        max_new_tokens: tokens,
        ..params()
    };
    let greedy = SamplingParams {
        temperature: 0.0,
        ..asked.clone()
    };
    (infer_with(&full(), &greedy), asked)
}

#[test]
fn a_subset_of_token_positions_checks_those_tokens_alone() {
    let (run, asked) = greedy_run(12);
    let all = segments_with(&run, &secret(500), 1, None, &asked);
    let tokens = all.token_checks.as_ref().unwrap();
    assert_eq!(tokens.records.len(), run.output.len());
    let rejected: Vec<usize> = tokens
        .records
        .iter()
        .filter(|r| !r.accept)
        .map(|r| r.position)
        .collect();
    assert!(
        !rejected.is_empty() && rejected.len() < run.output.len(),
        "greedy decoding departs from the seeded draw at some tokens, not all: {rejected:?}"
    );
    assert!(!all.pass(0.95));
    // The states are honest: every challenged layer matches whatever the tokens.
    assert!(all.failed_layers(0.95).is_empty());
    for i in 0..12 {
        let k = 3;
        let out = segments_with(&run, &secret(600 + i), 1, Some(k), &asked);
        let checked = out.token_checks.as_ref().unwrap();
        let drawn: Vec<usize> = checked.records.iter().map(|r| r.position).collect();
        assert_eq!(drawn.len(), k);
        // Caught exactly when a departing token was drawn.
        let hit = drawn.iter().any(|p| rejected.contains(p));
        assert_eq!(
            out.pass(0.95),
            !hit,
            "drawn {drawn:?}, departing {rejected:?}"
        );
        // The opening carries the final column at the k drawn tokens only.
        assert!(out.bytes_received < all.bytes_received);
    }
}

/// Detection of the greedy sampling cheat against the number of token positions checked, over
/// `DRAWS` challenges each, beside 1 − C(N − m, k)/C(N, k) for m departing tokens of N.
/// `cargo test --release --lib measure_token_subset -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_token_subset_detection() {
    const DRAWS: usize = 100;
    let (run, asked) = greedy_run(32);
    let all = segments_with(&run, &secret(700), 1, None, &asked);
    let n = run.output.len();
    let m = all
        .token_checks
        .as_ref()
        .unwrap()
        .records
        .iter()
        .filter(|r| !r.accept)
        .count();
    println!("greedy run: {m} of {n} tokens depart from the seeded draw");
    for k in [1, 2, 4, 8, 16, n] {
        let caught = (0..DRAWS)
            .filter(|&i| !segments_with(&run, &secret(30_000 + i), 1, Some(k), &asked).pass(0.95))
            .count();
        // P(no departing token among k drawn of n) = C(n - m, k) / C(n, k).
        let miss: f64 = (0..k)
            .map(|j| (n - m - j.min(n - m)) as f64 / (n - j) as f64)
            .product();
        println!(
            "tokens checked k = {k}: caught {caught}/{DRAWS} = {:.2}; 1 − C(N−m,k)/C(N,k) = {:.3}",
            caught as f64 / DRAWS as f64,
            1.0 - miss
        );
    }
}

/// A cheat confined to the generated positions is not diluted by a long prompt: the prompt's
/// and the generated positions are each held to the cutoff (found by playing the cheater: 16
/// forged positions after a 1,919-token prompt passed every layer at 0.992).
#[test]
fn a_layer_fails_when_its_generated_positions_fail_however_long_the_prompt() {
    let metrics = compare(&[1.0], &[1.0], CompareDtype::F32).unwrap();
    let check = |position: usize, accept: bool| CheckRecord {
        position,
        layer: 5,
        accept,
        metrics: metrics.clone(),
    };
    let output = |prompt_len: usize, generated_accept: bool| SegmentOutput {
        segments: vec![LayerSegment {
            layer: 4,
            checks: (0..prompt_len + 16)
                .map(|p| check(p, p < prompt_len || generated_accept))
                .collect(),
            update_z: Vec::new(),
            update_limit: 6.0,
            recompute_s: 0.0,
        }],
        embedding_checks: Vec::new(),
        token_checks: None,
        prompt_len,
        proofs_checked: 0,
        bytes_received: 0,
        time_s: 0.0,
        tier: CompareDtype::F32,
    };
    let long = output(1919, false);
    assert!(long.segments[0].accept_rate() > 0.99);
    assert_eq!(long.failed_layers(0.95), vec![4]);
    assert!(!long.pass(0.95));
    assert!(output(1919, true).pass(0.95));
    // And the other way round: a forged prompt behind many honest generated rows.
    let mut forged_prompt = output(16, true);
    forged_prompt.prompt_len = 4;
    for c in &mut forged_prompt.segments[0].checks[..4] {
        c.accept = false;
    }
    assert_eq!(forged_prompt.failed_layers(0.5), vec![4]);
}
