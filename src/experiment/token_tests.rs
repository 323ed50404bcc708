//! Token checks and request binding on the real embedded model: the cheats that state checks
//! alone let through are rejected: a replay (cheap q4_0 decoding, then one honest
//! full-precision prefill for the states), a decoder layer past the last tap skipped, a changed
//! temperature or seed, one substituted token, early or late stops, and an honest answer to
//! another prompt. The honest side (every tier and PyTorch's runs pass, δ covers the measured
//! drift) is in `token_drift_tests.rs`; the helpers here are shared with it.

use std::sync::Arc;

use candle_core::DType;

use super::bundle::{Manifest, ModelIdentity, TensorFile, Timings, BUNDLE_FORMAT_VERSION};
use super::request::Request;
use super::request_check::check_bundle_against_request;
use crate::engine::capture::CapturedStates;
use crate::engine::events::{CancelToken, EventSink};
use crate::engine::inference::{generate, InferenceOutput};
use crate::engine::sampling::SamplingParams;
use crate::engine::verification::{
    check_tokens_only, verify, TokenRule, VerificationOutput, VerifyJob, CPU_CHUNK,
};
use crate::model::device::{dtype_name, DeviceProfile};
use crate::model::weights::Precision;
use crate::model::LoadedModel;
use crate::stats::metrics::CompareDtype;
use crate::stats::policy::PolicyConfig;
use crate::testutil::embedded;

const LAYERS: [usize; 3] = [8, 16, 24];
pub(super) const PROMPT: &str = "Why is the sky blue?";
const TOKENS: usize = 24;

pub(super) fn sampled(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.7,
        top_p: 0.9,
        top_k: 0,
        repetition_penalty: 1.1,
        seed,
        min_new_tokens: TOKENS,
        max_new_tokens: TOKENS,
    }
}

pub(super) fn greedy() -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        repetition_penalty: 1.0,
        seed: 0,
        min_new_tokens: TOKENS,
        max_new_tokens: TOKENS,
    }
}

pub(super) fn full() -> LoadedModel {
    embedded(Precision::Full, DeviceProfile::CPU_F32)
}

pub(super) fn prompt_ids(model: &LoadedModel, text: &str) -> Vec<u32> {
    crate::model::chat::render_prompt(model, &[("user".into(), text.into())])
        .unwrap()
        .1
}

pub(super) fn infer(
    model: &LoadedModel,
    prompt: &[u32],
    params: &SamplingParams,
) -> InferenceOutput {
    generate(
        model,
        prompt,
        params,
        &LAYERS,
        &EventSink::none(),
        0,
        &CancelToken::new(),
    )
    .unwrap()
}

/// Verifies with the full-precision f32 verifier, tokens held to `params`.
pub(super) fn check(
    prompt: &[u32],
    output: &[u32],
    committed: &CapturedStates,
    inference_dtype: CompareDtype,
    native: bool,
    params: &SamplingParams,
) -> VerificationOutput {
    let verifier = full();
    let policy = PolicyConfig::default();
    let job = VerifyJob {
        prompt_ids: prompt,
        output_ids: output,
        committed,
        inference_dtype,
        inference_native: native,
        policy: &policy,
        chunk: CPU_CHUNK,
        tokens: Some(TokenRule {
            sampling: params,
            eos_ids: verifier.tokenizer.eos_ids(),
            output_complete: true,
        }),
    };
    verify(
        &verifier,
        &job,
        &EventSink::none(),
        0,
        0,
        &CancelToken::new(),
    )
    .unwrap()
}

pub(super) fn dtype_of(model: &LoadedModel) -> CompareDtype {
    CompareDtype::from_name(dtype_name(model.compute_dtype())).unwrap()
}

/// PASS as a verifier: state accept rate above 0.9 and every token accepted.
pub(super) fn passes(out: &VerificationOutput) -> bool {
    out.accept_rate() > 0.9 && out.token_checks.as_ref().is_some_and(|t| t.pass())
}

pub(super) fn describe(out: &VerificationOutput) -> String {
    let t = out.token_checks.as_ref().unwrap();
    format!(
        "tier {} state accept {:.3}, tokens {}/{} accepted (rate {:.3}), min margin {:.4}, δ {}, \
         first rejected {:?}, stop {:?}",
        out.tier.name(),
        out.accept_rate(),
        t.accepted(),
        t.records.len(),
        t.accept_rate(),
        t.min_margin(),
        t.tolerance,
        t.first_rejected_position(),
        t.stop_violation
    )
}

/// The replay cheat: decode cheaply (q4_0 weights), then pay for one honest full-precision
/// prefill over prompt + those tokens and commit its states. The states are exactly what an
/// honest verifier recomputes (state accept 1.0), but the tokens are not the model's: REJECT.
#[test]
fn replay_of_cheap_tokens_with_honest_states_is_rejected() {
    let verifier = full();
    let cheap = embedded("q4_0".parse().unwrap(), DeviceProfile::CPU_F32);
    let prompt = prompt_ids(&verifier, PROMPT);
    for params in [greedy(), sampled(5)] {
        let tokens = infer(&cheap, &prompt, &params).output_ids;
        let sequence: Vec<u32> = prompt.iter().chain(&tokens).copied().collect();
        let tm = &verifier.model;
        let prefill = tm
            .forward(&sequence, &mut tm.new_cache(), &LAYERS, false)
            .unwrap();
        let mut states =
            CapturedStates::new(LAYERS.to_vec(), tm.config.hidden, DType::F32).unwrap();
        let rows: Vec<(usize, candle_core::Tensor)> = prefill
            .taps
            .iter()
            .map(|(layer, t)| (*layer, t.narrow(0, prompt.len(), tokens.len()).unwrap()))
            .collect();
        states.push(&rows).unwrap();
        let out = check(&prompt, &tokens, &states, CompareDtype::F32, false, &params);
        println!("replay T={}: {}", params.temperature, describe(&out));
        assert_eq!(
            out.accept_rate(),
            1.0,
            "the replayed states are honest ones"
        );
        assert!(!passes(&out), "{}", describe(&out));
        // Declared bf16, the same bundle is judged with bf16's δ: measured, not asserted (a
        // greedy replay whose tokens all stay within δ of the model's choice would pass).
        let loose = check(
            &prompt,
            &tokens,
            &states,
            CompareDtype::Bf16,
            false,
            &params,
        );
        println!(
            "replay declared bf16, T={}: {}",
            params.temperature,
            describe(&loose)
        );
    }
}

/// Decoding with one decoder layer past the last tap (26 of 30) left out: the taps at 8/16/24
/// are untouched, so the state checks pass, but the tokens are not the model's: REJECT.
#[test]
fn a_layer_skipped_past_the_last_tap_is_rejected() {
    let verifier = full();
    let skipping = LoadedModel {
        model: Arc::new(verifier.model.with_layer_skipped(26).unwrap()),
        ..verifier.clone()
    };
    let prompt = prompt_ids(&verifier, PROMPT);
    for params in [greedy(), sampled(7)] {
        let out = infer(&skipping, &prompt, &params);
        let checked = check(
            &prompt,
            &out.output_ids,
            &out.captured,
            CompareDtype::F32,
            false,
            &params,
        );
        println!(
            "layer 26 skipped T={}: {}",
            params.temperature,
            describe(&checked)
        );
        assert!(checked.accept_rate() > 0.99, "{}", describe(&checked));
        assert!(!passes(&checked), "{}", describe(&checked));
    }
}

/// An honest run at one temperature or seed, claimed as another (the bundle lies about its
/// parameters, so the request fields match): the tokens do not follow from the claimed rule.
#[test]
fn changed_temperature_or_seed_is_rejected() {
    let verifier = full();
    let prompt = prompt_ids(&verifier, PROMPT);
    let served = sampled(11);
    let out = infer(&verifier, &prompt, &served);
    let honest = check(
        &prompt,
        &out.output_ids,
        &out.captured,
        CompareDtype::F32,
        false,
        &served,
    );
    assert!(passes(&honest), "{}", describe(&honest));
    for (what, claimed) in [
        (
            "temperature 1.0",
            SamplingParams {
                temperature: 1.0,
                ..served.clone()
            },
        ),
        (
            "seed 12",
            SamplingParams {
                seed: 12,
                ..served.clone()
            },
        ),
    ] {
        let checked = check(
            &prompt,
            &out.output_ids,
            &out.captured,
            CompareDtype::F32,
            false,
            &claimed,
        );
        println!("claimed {what}: {}", describe(&checked));
        assert_eq!(checked.accept_rate(), 1.0, "the states are honest");
        assert!(!passes(&checked), "{what}: {}", describe(&checked));
    }
}

/// One generated token replaced by another (states left as committed): the token check at that
/// position rejects it.
#[test]
fn one_substituted_token_is_rejected_at_its_position() {
    let verifier = full();
    let prompt = prompt_ids(&verifier, PROMPT);
    let params = greedy();
    let out = infer(&verifier, &prompt, &params);
    let at = 10;
    let mut tokens = out.output_ids.clone();
    let eos = verifier.tokenizer.eos_ids();
    // The runner-up of the honest step, a plausible substitute.
    tokens[at] = (0..verifier.model.config.vocab_size as u32)
        .find(|t| *t != tokens[at] && !eos.contains(t) && *t > 100)
        .unwrap();
    let checked = check(
        &prompt,
        &tokens,
        &out.captured,
        CompareDtype::F32,
        false,
        &params,
    );
    println!("substituted token at {at}: {}", describe(&checked));
    let t = checked.token_checks.as_ref().unwrap();
    assert_eq!(
        t.first_rejected_position(),
        Some(at),
        "{}",
        describe(&checked)
    );
    assert!(!passes(&checked));
}

/// An output that stops early without EOS, or goes on past max_new_tokens, breaks the stop
/// rule whatever its margins.
#[test]
fn early_or_late_stops_break_the_stop_rule() {
    let verifier = full();
    let prompt = prompt_ids(&verifier, PROMPT);
    let params = greedy();
    let out = infer(&verifier, &prompt, &params);
    let rule = TokenRule {
        sampling: &params,
        eos_ids: verifier.tokenizer.eos_ids(),
        output_complete: true,
    };
    let tier = CompareDtype::F32;
    let whole = check_tokens_only(&verifier, &prompt, &out.output_ids, &rule, tier, 64).unwrap();
    assert!(whole.pass(), "{whole:?}");
    let short =
        check_tokens_only(&verifier, &prompt, &out.output_ids[..10], &rule, tier, 64).unwrap();
    assert!(short
        .stop_violation
        .as_deref()
        .unwrap()
        .contains("stops after 10"));
    assert!(!short.pass());
    let longer = SamplingParams {
        max_new_tokens: 12,
        min_new_tokens: 0,
        ..params.clone()
    };
    let rule = TokenRule {
        sampling: &longer,
        ..rule
    };
    let long = check_tokens_only(&verifier, &prompt, &out.output_ids, &rule, tier, 64).unwrap();
    assert!(long
        .stop_violation
        .as_deref()
        .unwrap()
        .contains("more than max_new_tokens 12"));
}

fn manifest_of(
    model: &LoadedModel,
    prompt: &[u32],
    out: &InferenceOutput,
    request: &Request,
) -> Manifest {
    Manifest {
        format_version: BUNDLE_FORMAT_VERSION,
        model: ModelIdentity {
            name: model.name.clone(),
            weights_sha256: model.weights_sha256.clone(),
            n_layers: model.model.config.n_layers,
            hidden: model.model.config.hidden,
        },
        precision: "full".into(),
        device: "cpu".into(),
        dtype: "f32".into(),
        tokenizer: model.tokenizer.identity(),
        prompt_text: String::new(),
        prompt_ids: prompt.to_vec(),
        output_ids: out.output_ids.clone(),
        output_text: out.output_text.clone(),
        sampling: request.sampling.clone(),
        layers: LAYERS.to_vec(),
        timings: Timings {
            prefill_s: out.prefill_s,
            decode_s: out.decode_s,
            total_s: out.total_s,
            tokens_per_s: out.tokens_per_s(),
        },
        cancelled: false,
        hidden_states: TensorFile {
            file: super::bundle::TENSORS_FILE.into(),
            sha256: String::new(),
            bytes: 0,
        },
        context: None,
        request: Some(request.clone()),
        commitment: None,
    }
}

/// An honest answer to one request, held to another prompt's request: rejected, naming the
/// prompt; to a request with another seed, temperature or nonce: rejected naming that field;
/// to its own request: accepted.
#[test]
fn an_honest_answer_to_another_request_is_rejected_naming_the_field() {
    let model = full();
    let messages = |text: &str| vec![("user".to_string(), text.to_string())];
    let asked = Request::new(&model, &messages(PROMPT), true, sampled(1));
    let (_, prompt) = asked.render(&model).unwrap();
    let out = infer(&model, &prompt, &asked.sampling);
    let manifest = manifest_of(&model, &prompt, &out, &asked);
    assert_eq!(
        check_bundle_against_request(&manifest, &asked, &prompt, true),
        Ok(())
    );

    let other = Request::new(&model, &messages("Name three rivers."), true, sampled(1));
    let (_, other_ids) = other.render(&model).unwrap();
    let e = check_bundle_against_request(&manifest, &other, &other_ids, true).unwrap_err();
    assert!(
        e.starts_with("prompt:") && e.contains("Name three rivers."),
        "{e}"
    );

    for (field, changed) in [
        (
            "sampling.seed",
            SamplingParams {
                seed: 2,
                ..sampled(1)
            },
        ),
        (
            "sampling.temperature",
            SamplingParams {
                temperature: 0.8,
                ..sampled(1)
            },
        ),
    ] {
        let request = Request::new(&model, &messages(PROMPT), true, changed);
        let e = check_bundle_against_request(&manifest, &request, &prompt, true).unwrap_err();
        assert!(e.starts_with(field), "{field}: {e}");
    }
    // Same prompt and parameters, another request (nonce): an answer cannot be replayed.
    let again = Request::new(&model, &messages(PROMPT), true, sampled(1));
    let e = check_bundle_against_request(&manifest, &again, &prompt, true).unwrap_err();
    assert!(e.starts_with("nonce:"), "{e}");
}
