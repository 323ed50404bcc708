//! Honest controls from another implementation: hidden states and tokens of greedy runs of
//! the embedded model made with PyTorch (transformers), a subset copied into
//! tests/fixtures/pytorch_runs (see its README). Verified by this project's f32 verifier, the
//! honest f32/f16/bf16 runs must pass in their precision tier; the 4- and 8-bit weight cheats
//! made in f32 must be rejected.

use candle_core::{DType, Device};

use super::capture::CapturedStates;
use super::events::{CancelToken, EventSink};
use super::sampling::SamplingParams;
use super::verification::{verify, TokenRule, VerifyJob};
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;
use crate::stats::metrics::CompareDtype;
use crate::stats::policy::PolicyConfig;
use crate::testutil::embedded;

struct Run {
    prompt_ids: Vec<u32>,
    output_ids: Vec<u32>,
    states: CapturedStates,
    dtype: CompareDtype,
}

fn load(run: &str) -> Run {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pytorch_runs")
        .join(format!("{run}_p1_states.safetensors"));
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ids = |name: &str| -> Vec<u32> {
        tensors[name]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|id| id as u32)
            .collect()
    };
    let layers = [8usize, 16, 24];
    let dtype = tensors["layer.8"].dtype();
    let mut states = CapturedStates::new(layers.to_vec(), 576, dtype).unwrap();
    let taps: Vec<(usize, candle_core::Tensor)> = layers
        .iter()
        .map(|&l| (l, tensors[&format!("layer.{l}")].clone()))
        .collect();
    states.push(&taps).unwrap();
    let dtype = match dtype {
        DType::F16 => CompareDtype::F16,
        DType::BF16 => CompareDtype::Bf16,
        _ => CompareDtype::F32,
    };
    Run {
        prompt_ids: ids("prompt_ids"),
        output_ids: ids("output_ids"),
        states,
        dtype,
    }
}

/// (state accept rate, every token accepted) of the run verified in f32 on this project's
/// engine, greedy as the runs were made.
fn verified(run: &str) -> (f64, bool) {
    let model = embedded(Precision::Full, DeviceProfile::CPU_F32);
    let run = load(run);
    let greedy = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        repetition_penalty: 1.0,
        seed: 0,
        min_new_tokens: run.output_ids.len(),
        max_new_tokens: run.output_ids.len(),
    };
    let job = VerifyJob {
        prompt_ids: &run.prompt_ids,
        output_ids: &run.output_ids,
        committed: &run.states,
        inference_dtype: run.dtype,
        inference_native: false,
        policy: &PolicyConfig::default(),
        chunk: 128,
        tokens: Some(TokenRule {
            sampling: &greedy,
            eos_ids: model.tokenizer.eos_ids(),
            output_complete: true,
        }),
    };
    let out = verify(&model, &job, &EventSink::none(), 0, 0, &CancelToken::new()).unwrap();
    let tokens = out.token_checks.as_ref().unwrap();
    eprintln!(
        "accept {} ({} checks), tokens {}/{} min margin {}",
        out.accept_rate(),
        out.checks.len(),
        tokens.accepted(),
        tokens.records.len(),
        tokens.min_margin()
    );
    (out.accept_rate(), tokens.pass())
}

#[test]
fn pytorch_honest_runs_pass_and_its_weight_cheats_are_caught_in_f32() {
    for run in ["honest_f32", "honest_f16", "honest_bf16"] {
        let (accept, tokens) = verified(run);
        assert!(
            accept > 0.99 && tokens,
            "{run}: accept {accept}, tokens {tokens}"
        );
    }
    for run in ["cheat_q8_f32", "cheat_q4_f32"] {
        let (accept, _) = verified(run);
        assert!(accept < 0.05, "{run}: accept {accept}");
    }
}
