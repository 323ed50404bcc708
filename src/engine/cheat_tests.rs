//! Each cheat really changes the computation, where and only where it should: on the embedded
//! model (SmolLM2-135M, f32), short outputs.

use candle_core::quantized::GgmlDType;

use super::*;
use crate::engine::inference::generate;
use crate::engine::verification::{check_tokens_only, TokenRule};
use crate::model::device::DeviceProfile;
use crate::stats::metrics::CompareDtype;
use crate::testutil::embedded;

fn full() -> LoadedModel {
    embedded(Precision::Full, DeviceProfile::CPU_F32)
}

fn prompt(model: &LoadedModel) -> Vec<u32> {
    crate::model::chat::render_prompt(model, &[("user".into(), "Why is the sky blue?".into())])
        .unwrap()
        .1
}

fn params(max_new_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.7,
        top_p: 0.95,
        seed: 42,
        min_new_tokens: max_new_tokens,
        max_new_tokens,
        ..SamplingParams::default()
    }
}

const LAYERS: [usize; 3] = [8, 16, 24];

fn cheat_run(
    model: &LoadedModel,
    cheat: &Cheat,
    inputs: &CheatInputs<'_>,
    n: usize,
) -> CheatOutput {
    generate_cheating(
        model,
        cheat,
        inputs,
        &prompt(model),
        &params(n),
        &LAYERS,
        &EventSink::none(),
        0,
        &CancelToken::new(),
    )
    .unwrap()
}

fn honest_run(model: &LoadedModel, p: &SamplingParams) -> InferenceOutput {
    generate(
        model,
        &prompt(model),
        p,
        &LAYERS,
        &EventSink::none(),
        0,
        &CancelToken::new(),
    )
    .unwrap()
}

/// Relative L2 distance of row `row` of layer slot `slot`.
fn row_rel_l2(a: &CapturedStates, b: &CapturedStates, slot: usize, row: usize) -> f64 {
    let (x, y) = (a.row_f32(slot, row), b.row_f32(slot, row));
    let diff: f64 = x
        .iter()
        .zip(&y)
        .map(|(p, q)| ((p - q) as f64).powi(2))
        .sum();
    let norm: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

fn max_rel_l2(a: &CapturedStates, b: &CapturedStates, slot: usize) -> f64 {
    (0..a.rows.min(b.rows))
        .map(|row| row_rel_l2(a, b, slot, row))
        .fold(0.0, f64::max)
}

/// Positions the honest rule rejects when it replays `output` (f32 tier, δ 0.01).
fn rejected_positions(model: &LoadedModel, p: &SamplingParams, output: &[u32]) -> Vec<usize> {
    let rule = TokenRule {
        sampling: p,
        eos_ids: model.tokenizer.eos_ids(),
        output_complete: true,
    };
    check_tokens_only(model, &prompt(model), output, &rule, CompareDtype::F32, 128)
        .unwrap()
        .records
        .iter()
        .filter(|r| !r.accept)
        .map(|r| r.position)
        .collect()
}

#[test]
fn cheats_are_spelled_as_one_key_maps_and_bad_ones_are_named() {
    let parse = |text: &str| serde_yaml::from_str::<Cheat>(text).map_err(|e| e.to_string());
    assert_eq!(parse("{skip_layer: 29}"), Ok(Cheat::SkipLayer(29)));
    assert_eq!(parse("{kv_window: 64}"), Ok(Cheat::KvWindow(64)));
    assert_eq!(parse("{temperature: 1.0}"), Ok(Cheat::Temperature(1.0)));
    assert_eq!(parse("{seed: 7}"), Ok(Cheat::Seed(7)));
    assert_eq!(
        parse("{second_best_every: 100}"),
        Ok(Cheat::SecondBestEvery(100))
    );
    assert_eq!(
        parse("{second_best_rate: 0.01}"),
        Ok(Cheat::SecondBestRate(0.01))
    );
    assert_eq!(parse("{other_prompt: true}"), Ok(Cheat::OtherPrompt));
    assert_eq!(
        parse("{drop_system_prompt: true}"),
        Ok(Cheat::DropSystemPrompt)
    );
    assert_eq!(
        parse("{low_rank: {rank: 8, scale: 0.01}}"),
        Ok(Cheat::LowRank(LowRank {
            rank: 8,
            scale: 0.01,
            seed: 0
        }))
    );
    assert_eq!(
        parse("{replay: {tokens_from: q4_0}}"),
        Ok(Cheat::Replay {
            tokens_from: Precision::Quantized(GgmlDType::Q4_0)
        })
    );
    assert_eq!(parse("{stale: {}}"), Ok(Cheat::Stale { seed_offset: 0 }));
    assert_eq!(
        parse("{weights: q4_0}"),
        Ok(Cheat::Weights(Precision::Quantized(GgmlDType::Q4_0)))
    );
    // Every form round-trips through its YAML spelling.
    for text in [
        "{skip_layer: 3}",
        "{low_rank: {rank: 2, scale: 0.5, seed: 9}}",
        "{stale: {seed_offset: 4}}",
        "{other_prompt: true}",
    ] {
        let cheat = parse(text).unwrap();
        let written = serde_yaml::to_string(&cheat).unwrap();
        assert_eq!(parse(&written), Ok(cheat), "{written}");
    }
    for (text, needle) in [
        ("{skip_layer: 3, seed: 7}", "2 cheats"),
        ("{}", "no cheat given"),
        ("{skip_layers: 3}", "skip_layers"),
        ("{other_prompt: false}", "other_prompt: false"),
        ("{second_best_rate: 0}", "second_best_rate"),
        ("{kv_window: 0}", "kv_window"),
        ("{low_rank: {rank: 0, scale: 0.1}}", "low_rank.rank"),
        ("{replay: {tokens_from: q3}}", "q3"),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn skip_layer_changes_the_states_after_the_skipped_layer_and_none_before() {
    let model = full();
    let mid = cheat_run(&model, &Cheat::SkipLayer(15), &CheatInputs::default(), 12);
    // The honest recomputation of the same tokens: layer 8 (before layer 15) agrees up to
    // decode-vs-prefill rounding, 16 and 24 (after it) do not.
    let honest = prefill_states(
        &model,
        &prompt(&model),
        &mid.output.output_ids,
        &LAYERS,
        128,
    )
    .unwrap();
    let [before, after, later] =
        [0, 1, 2].map(|slot| max_rel_l2(&mid.output.captured, &honest, slot));
    assert!(before < 1e-5, "layer 8: {before:e}");
    assert!(
        after > 1e-2 && later > 1e-2,
        "layers 16/24: {after:e} {later:e}"
    );

    // Past the last tap: every recorded state is honest, only the logits (tokens) change.
    let last = cheat_run(&model, &Cheat::SkipLayer(29), &CheatInputs::default(), 12);
    let honest = prefill_states(
        &model,
        &prompt(&model),
        &last.output.output_ids,
        &LAYERS,
        128,
    )
    .unwrap();
    for slot in 0..3 {
        let err = max_rel_l2(&last.output.captured, &honest, slot);
        assert!(err < 1e-5, "slot {slot}: {err:e}");
    }
    assert!(
        !rejected_positions(&model, &params(12), &last.output.output_ids).is_empty(),
        "skipping the last layer should change some token the rule would choose"
    );
}

#[test]
fn kv_window_agrees_inside_the_window_and_differs_beyond_it() {
    let model = full();
    let prompt_ids = prompt(&model);
    let window = prompt_ids.len() + 6;
    let (windowed, _) = cheating_model(&model, &Cheat::KvWindow(window)).unwrap();
    let output: Vec<u32> = model
        .tokenizer
        .encode(" Sunlight is scattered by the molecules of the air, and blue light, with its shorter wavelength, is scattered the most, which is why the sky looks blue to us.")
        .unwrap();
    let total = prompt_ids.len() + output.len();
    assert!(
        prompt_ids.len() < window && total > window + 8,
        "{total} positions"
    );
    let honest = prefill_states(&model, &prompt_ids, &output, &LAYERS, 128).unwrap();
    let cut = prefill_states(&windowed, &prompt_ids, &output, &LAYERS, 128).unwrap();
    for (row, _) in output.iter().enumerate() {
        let position = prompt_ids.len() + row;
        let err = row_rel_l2(&cut, &honest, 0, row);
        if position < window {
            assert_eq!(err, 0.0, "position {position} is inside the window");
        } else {
            assert!(err > 1e-3, "position {position}: {err:e} beyond the window");
        }
    }
    // Decoding with the truncated cache computes what a windowed prefill in other chunks
    // computes: the window is the same attention whatever the chunking.
    let decoded = generate(
        &windowed,
        &prompt_ids,
        &params(40),
        &LAYERS,
        &EventSink::none(),
        0,
        &CancelToken::new(),
    )
    .unwrap();
    let chunked = prefill_states(&windowed, &prompt_ids, &decoded.output_ids, &LAYERS, 7).unwrap();
    for slot in 0..3 {
        let err = max_rel_l2(&decoded.captured, &chunked, slot);
        assert!(err < 1e-4, "slot {slot}: decode vs chunked prefill {err:e}");
    }
}

#[test]
fn sampling_cheats_differ_from_the_replayed_rule_exactly_where_they_cheated() {
    let model = full();
    let n = 24;
    for cheat in [
        Cheat::SecondBestEvery(4),
        Cheat::SecondBestRate(0.25),
        Cheat::Temperature(1.0),
        Cheat::Seed(7),
    ] {
        let out = cheat_run(&model, &cheat, &CheatInputs::default(), n);
        assert!(
            !out.cheated_positions.is_empty(),
            "{cheat:?} cheated nowhere"
        );
        if let Cheat::SecondBestEvery(every) = cheat {
            assert!(
                out.cheated_positions.iter().all(|p| (p + 1) % every == 0),
                "{:?}",
                out.cheated_positions
            );
        }
        if let Cheat::SecondBestRate(rate) = cheat {
            assert!(out
                .cheated_positions
                .iter()
                .all(|&p| cheat_draw(42, p as u64) < rate));
        }
        assert_eq!(
            rejected_positions(&model, &params(n), &out.output.output_ids),
            out.cheated_positions,
            "{cheat:?}"
        );
    }
}

#[test]
fn replay_takes_the_cheap_tokens_and_honest_states() {
    let model = full();
    let q4 = embedded(
        Precision::Quantized(GgmlDType::Q4_0),
        DeviceProfile::CPU_F32,
    );
    let cheap = honest_run(&q4, &params(12));
    let inputs = CheatInputs {
        other_model: Some(&q4),
        ..CheatInputs::default()
    };
    let replay = cheat_run(
        &model,
        &Cheat::Replay {
            tokens_from: Precision::Quantized(GgmlDType::Q4_0),
        },
        &inputs,
        12,
    );
    assert_eq!(replay.output.output_ids, cheap.output_ids);
    let honest = prefill_states(&model, &prompt(&model), &cheap.output_ids, &LAYERS, 128).unwrap();
    assert_eq!(replay.output.captured, honest);
    assert!(max_rel_l2(&cheap.captured, &honest, 1) > 1e-2);
    assert!(!rejected_positions(&model, &params(12), &replay.output.output_ids).is_empty());
}

#[test]
fn low_rank_changes_the_weights_by_the_configured_fraction() {
    let model = full();
    for scale in [0.01, 0.001] {
        let cheat = Cheat::LowRank(LowRank {
            rank: 8,
            scale,
            seed: 0,
        });
        let (changed, relative) = cheating_model(&model, &cheat).unwrap();
        let relative = relative.unwrap();
        assert!(
            (relative / scale - 1.0).abs() < 0.01,
            "{scale}: measured {relative:e}"
        );
        let ids = prompt(&model);
        let honest = prefill_states(
            &model,
            &ids[..ids.len() - 4],
            &ids[ids.len() - 4..],
            &LAYERS,
            128,
        )
        .unwrap();
        let other = prefill_states(
            &changed,
            &ids[..ids.len() - 4],
            &ids[ids.len() - 4..],
            &LAYERS,
            128,
        )
        .unwrap();
        assert!(max_rel_l2(&other, &honest, 0) > scale / 10.0);
    }
}

#[test]
fn stale_answers_replay_an_earlier_request() {
    let model = full();
    let earlier = honest_run(
        &model,
        &SamplingParams {
            seed: 43,
            ..params(12)
        },
    );
    let stale = cheat_run(
        &model,
        &Cheat::Stale { seed_offset: 1 },
        &CheatInputs::default(),
        12,
    );
    assert_eq!(stale.output.output_ids, earlier.output_ids);
    assert_eq!(stale.output.captured, earlier.captured);
    assert!(!rejected_positions(&model, &params(12), &stale.output.output_ids).is_empty());
    // Only the nonce differed: the replay is the honest answer, bit for bit.
    let same = cheat_run(
        &model,
        &Cheat::Stale { seed_offset: 0 },
        &CheatInputs::default(),
        12,
    );
    let honest = honest_run(&model, &params(12));
    assert_eq!(same.output.output_ids, honest.output_ids);
    assert_eq!(same.output.captured, honest.captured);
}

#[test]
fn prompt_cheats_decode_after_other_ids_and_refuse_the_request_s_own() {
    let model = full();
    let other =
        crate::model::chat::render_prompt(&model, &[("user".into(), "Name a color.".into())])
            .unwrap()
            .1;
    let inputs = CheatInputs {
        decoded_prompt_ids: Some(&other),
        ..CheatInputs::default()
    };
    let out = cheat_run(&model, &Cheat::OtherPrompt, &inputs, 8);
    let answer = honest_run_after(&model, &other, 8);
    assert_eq!(out.output.output_ids, answer.output_ids);
    let own = prompt(&model);
    let inputs = CheatInputs {
        decoded_prompt_ids: Some(&own),
        ..CheatInputs::default()
    };
    let err = generate_cheating(
        &model,
        &Cheat::DropSystemPrompt,
        &inputs,
        &own,
        &params(8),
        &LAYERS,
        &EventSink::none(),
        0,
        &CancelToken::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("request's own"), "{err}");
}

fn honest_run_after(model: &LoadedModel, ids: &[u32], n: usize) -> InferenceOutput {
    generate(
        model,
        ids,
        &params(n),
        &LAYERS,
        &EventSink::none(),
        0,
        &CancelToken::new(),
    )
    .unwrap()
}
