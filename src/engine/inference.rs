//! The inferencer: autoregressive decoding with the KV cache, recording the hidden states at
//! the sampled layers from each decode step itself (never by re-running a prefill).

use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::capture::CapturedStates;
use super::events::{CancelToken, EngineEvent, EventSink};
use super::sampling::{Sampler, SamplingParams};
use crate::model::LoadedModel;

#[derive(Debug, Clone)]
pub struct InferenceOutput {
    pub output_ids: Vec<u32>,
    pub output_text: String,
    /// Row i = the position holding generated token i, recorded by the step that fed it.
    pub captured: CapturedStates,
    pub prefill_s: f64,
    pub decode_s: f64,
    pub total_s: f64,
    pub step_ms: Vec<f64>,
    pub cancelled: bool,
}

impl InferenceOutput {
    pub fn tokens_per_s(&self) -> f64 {
        if self.total_s > 0.0 {
            self.output_ids.len() as f64 / self.total_s
        } else {
            0.0
        }
    }
}

/// Prefills the prompt in chunks of the verifier's size (`default_chunk`), so that memory is
/// bounded by the chunk rather than the prompt (one 7k-token piece took 6 GB on the CPU), and a
/// long prompt reports its progress. Returns the logits after the last prompt token; empty
/// when cancelled part-way (the decode loop then stops before its first token).
fn prefill_prompt(
    model: &LoadedModel,
    prompt_ids: &[u32],
    cache: &mut crate::model::transformer::KvCache,
    sink: &EventSink,
    trial: usize,
    cancel: &CancelToken,
    mut store: Option<&mut CapturedStates>,
) -> Result<Vec<f32>> {
    let chunk = super::verification::default_chunk(model.profile);
    let chunks = prompt_ids.len().div_ceil(chunk);
    let key = format!("prefill trial {trial}");
    let mut logits = Vec::new();
    for (index, piece) in prompt_ids.chunks(chunk).enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        if chunks > 1 {
            sink.emit(EngineEvent::Preparing {
                key: key.clone(),
                message: Some(format!(
                    "trial {trial}: prefilling the prompt, {} of {} tokens",
                    index * chunk,
                    prompt_ids.len()
                )),
            });
        }
        // Every layer runs for every chunk (the cache needs them all); only the last chunk's
        // logits are kept, and those are only of its last position.
        let out = match store.as_deref_mut() {
            Some(store) => record_into(model, piece, cache, &[], true, store)?,
            None => model.model.forward(piece, cache, &[], true)?,
        };
        if index + 1 == chunks {
            logits = out.logits.expect("asked for logits").to_vec1()?;
        }
    }
    if chunks > 1 {
        sink.emit(EngineEvent::Preparing { key, message: None });
    }
    Ok(logits)
}

/// One forward call that also appends every column it passed (docs/commitment.md) to `store`.
fn record_into(
    model: &LoadedModel,
    ids: &[u32],
    cache: &mut crate::model::transformer::KvCache,
    taps: &[usize],
    want_logits: bool,
    store: &mut CapturedStates,
) -> Result<crate::model::transformer::ForwardOutput> {
    let mut columns = Vec::new();
    let out = model
        .model
        .forward_recording(ids, cache, taps, want_logits, &mut columns)?;
    let tagged: Vec<(usize, candle_core::Tensor)> = columns.into_iter().enumerate().collect();
    store.push(&tagged)?;
    Ok(out)
}

/// Like [`generate`], also keeping the commitment store: the residual stream entering every
/// layer and the final norm (columns 0..=L) at every position, prompt and generated, in the
/// run's dtype (docs/commitment.md). Row p of the store = position p.
pub fn generate_committed(
    model: &LoadedModel,
    prompt_ids: &[u32],
    params: &SamplingParams,
    layers: &[usize],
    sink: &EventSink,
    trial: usize,
    cancel: &CancelToken,
) -> Result<(InferenceOutput, CapturedStates)> {
    let tm = &model.model;
    let columns: Vec<usize> = (0..=tm.config.n_layers).collect();
    let mut store = CapturedStates::new(columns, tm.config.hidden, tm.dtype())?;
    store.reserve_rows(prompt_ids.len() + params.max_new_tokens);
    let out = generate_inner(
        model,
        prompt_ids,
        params,
        layers,
        sink,
        trial,
        cancel,
        Some(&mut store),
        None,
    )?;
    Ok((out, store))
}

/// Generates up to `params.max_new_tokens` tokens after `prompt_ids`.
///
/// Generated token i sits at position `prompt_len + i`; its hidden states are those of the
/// decode step that feeds it. The last token is fed once more through the layers the taps need
/// (no lm_head), so every generated position has a record, exactly the positions a verifier's
/// prefill over prompt + output recomputes.
pub fn generate(
    model: &LoadedModel,
    prompt_ids: &[u32],
    params: &SamplingParams,
    layers: &[usize],
    sink: &EventSink,
    trial: usize,
    cancel: &CancelToken,
) -> Result<InferenceOutput> {
    generate_inner(
        model, prompt_ids, params, layers, sink, trial, cancel, None, None,
    )
}

/// Chooses generated token `position` from the step's logits, the context (prompt and tokens
/// so far) and the ids banned now; None when no logit is finite.
pub type ChooseToken<'a> = dyn Fn(&[f32], &[u32], &[u32], usize) -> Option<u32> + 'a;

/// Like [`generate`], every token chosen by `choose` instead of the sampling rule (the
/// sampling cheats of engine::cheat).
#[allow(clippy::too_many_arguments)]
pub fn generate_choosing(
    model: &LoadedModel,
    prompt_ids: &[u32],
    params: &SamplingParams,
    layers: &[usize],
    sink: &EventSink,
    trial: usize,
    cancel: &CancelToken,
    choose: &ChooseToken<'_>,
) -> Result<InferenceOutput> {
    generate_inner(
        model,
        prompt_ids,
        params,
        layers,
        sink,
        trial,
        cancel,
        None,
        Some(choose),
    )
}

#[allow(clippy::too_many_arguments)]
fn generate_inner(
    model: &LoadedModel,
    prompt_ids: &[u32],
    params: &SamplingParams,
    layers: &[usize],
    sink: &EventSink,
    trial: usize,
    cancel: &CancelToken,
    mut store: Option<&mut CapturedStates>,
    choose: Option<&ChooseToken<'_>>,
) -> Result<InferenceOutput> {
    params.validate().map_err(anyhow::Error::msg)?;
    ensure!(!prompt_ids.is_empty(), "the prompt has no tokens");
    let tm = &model.model;
    // Checked before the first step, not found out after minutes of decoding: every position
    // (prompt, generated tokens, and the last token fed once more for its hidden states) must
    // fit the model's context.
    let max_positions = tm.max_positions();
    ensure!(
        prompt_ids.len() < max_positions,
        "the prompt is too long: {} tokens leave no room for a new token in the model's context \
         of {max_positions} positions (shorten it to at most {} tokens)",
        prompt_ids.len(),
        max_positions - 1
    );
    ensure!(
        // Subtracted, not added: a budget near usize::MAX (a request is untrusted) must not
        // wrap around the check and decode for minutes before the context runs out.
        params.max_new_tokens <= max_positions - prompt_ids.len(),
        "{} prompt tokens + {} new tokens exceed the model's context of {max_positions} positions \
         (lower the new-token budget, --max-tokens, to at most {})",
        prompt_ids.len(),
        params.max_new_tokens,
        max_positions - prompt_ids.len()
    );
    let mut layers = layers.to_vec();
    layers.sort_unstable();
    layers.dedup();
    let mut captured = CapturedStates::new(layers.clone(), tm.config.hidden, tm.dtype())?;
    captured.reserve_rows(params.max_new_tokens);
    let eos = model.tokenizer.eos_ids();
    let sampler = Sampler::new(params.clone());
    let mut stream = model.tokenizer.token_stream();
    let mut cache = tm.new_cache();

    let start = Instant::now();
    let mut logits = prefill_prompt(
        model,
        prompt_ids,
        &mut cache,
        sink,
        trial,
        cancel,
        store.as_deref_mut(),
    )?;
    let prefill_s = start.elapsed().as_secs_f64();

    let mut history = prompt_ids.to_vec();
    let mut output_ids = Vec::new();
    let mut step_ms = Vec::new();
    let mut cancelled = false;
    let mut text = String::new();
    while output_ids.len() < params.max_new_tokens {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let step_start = Instant::now();
        let banned: &[u32] = if output_ids.len() < params.min_new_tokens {
            &eos
        } else {
            &[]
        };
        let next = match choose {
            Some(choose) => choose(&logits, &history, banned, output_ids.len()),
            None => sampler.sample(&logits, &history, banned, output_ids.len()),
        }
        .context("no finite logit to sample from")?;
        output_ids.push(next);
        history.push(next);
        let is_last = eos.contains(&next) || output_ids.len() == params.max_new_tokens;
        let out = match store.as_deref_mut() {
            Some(store) => record_into(model, &[next], &mut cache, &layers, !is_last, store)?,
            None => tm.forward(&[next], &mut cache, &layers, !is_last)?,
        };
        captured.push(&out.taps)?;
        if let Some(l) = out.logits {
            logits = l.to_vec1()?;
        }
        let ms = step_start.elapsed().as_secs_f64() * 1e3;
        step_ms.push(ms);
        let piece = stream.next_token(next)?.unwrap_or_default();
        text.push_str(&piece);
        sink.emit(EngineEvent::Token {
            trial,
            index: output_ids.len() - 1,
            id: next,
            text: piece,
            step_ms: ms,
        });
        if is_last {
            break;
        }
    }
    if let Some(rest) = stream.finish()? {
        // Only an incomplete UTF-8 tail can remain here; the final text below is authoritative.
        text.push_str(&rest);
    }
    let total_s = start.elapsed().as_secs_f64();
    Ok(InferenceOutput {
        output_text: model.tokenizer.decode_for_display(&output_ids)?,
        output_ids,
        captured,
        prefill_s,
        decode_s: total_s - prefill_s,
        total_s,
        step_ms,
        cancelled,
    })
}
