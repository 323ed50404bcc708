//! Cheats: computations a dishonest inferencer could run instead of the one it claims, each a
//! real computation (never a relabelled result), so that experiments measure whether verifiers
//! catch them. The inferencer applies them; the bundle it writes still claims the honest model,
//! precision, prompt and request. Spelled in experiments.yaml as `cheat: {skip_layer: 15}` on
//! the inference role (configs/experiments.yaml's header lists every form).

use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::capture::CapturedStates;
use super::events::{CancelToken, EventSink};
use super::inference::{generate, generate_choosing, InferenceOutput};
use super::sampling::{SamplingParams, StepCandidates};
use super::verification::VerificationOutput;
use crate::model::transformer::TappedModel;
use crate::model::weights::Precision;
use crate::model::LoadedModel;
use crate::record::results::CheckRecord;
use crate::stats::metrics::CompareDtype;

/// One cheat of the inferencer. Absent (None where it is carried) = honest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CheatSpec", into = "CheatSpec")]
pub enum Cheat {
    /// Decoder layer `index` (0-based; hidden state index+1 is the first it changes) left out
    /// of every forward pass: the residual stream passes it unchanged.
    SkipLayer(usize),
    /// Attention over the last `window` positions only, the KV cache truncated to them (for
    /// the prompt's prefill and every decode step).
    KvWindow(usize),
    /// Tokens sampled at this temperature instead of the request's.
    Temperature(f64),
    /// Tokens sampled with this seed instead of the request's.
    Seed(u64),
    /// Every n-th generated token (positions n−1, 2n−1, …) is the rule's second-best candidate.
    SecondBestEvery(usize),
    /// Each generated token is the rule's second-best candidate with this probability (a
    /// seeded draw per position, [`cheat_draw`]).
    SecondBestRate(f64),
    /// The answer is decoded after another prompt (the next one of the same category).
    OtherPrompt,
    /// The answer is decoded after the prompt with its system turn emptied (a template's
    /// default system prompt included).
    DropSystemPrompt,
    /// Another model of the same shape: every linear weight W of every decoder layer becomes
    /// W + ΔW, ΔW of rank `rank` with ‖ΔW‖ = `scale`·‖W‖ (Frobenius), a stand-in for a
    /// fine-tune.
    LowRank(LowRank),
    /// Tokens decoded by a cheap model (`tokens_from` weights), states from one honest prefill
    /// over prompt + those tokens.
    Replay { tokens_from: Precision },
    /// Tokens and states replayed from an earlier run of the same prompt, made for an earlier
    /// request whose sampling seed was this request's + `seed_offset` (0: the same seed, only
    /// the nonce differed).
    Stale { seed_offset: u64 },
    /// Decoded with other weights (e.g. q4_0) while the bundle claims the configured ones:
    /// the known-bad bundles a requester plants to catch lazy verifiers.
    Weights(Precision),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LowRank {
    pub rank: usize,
    /// ‖ΔW‖ / ‖W‖ per weight matrix (Frobenius norms).
    pub scale: f64,
    /// Seed of the random factors.
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    pub tokens_from: Precision,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaleSpec {
    #[serde(default)]
    pub seed_offset: u64,
}

/// The YAML form: a map with exactly one of these keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheatSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    skip_layer: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kv_window: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    second_best_every: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    second_best_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    other_prompt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drop_system_prompt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    low_rank: Option<LowRank>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replay: Option<ReplaySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stale: Option<StaleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weights: Option<Precision>,
}

impl TryFrom<CheatSpec> for Cheat {
    type Error = String;

    fn try_from(spec: CheatSpec) -> Result<Self, String> {
        let flag = |name: &str, value: Option<bool>| match value {
            Some(false) => Err(format!(
                "{name}: false is no cheat (omit `cheat` for an honest inferencer)"
            )),
            other => Ok(other == Some(true)),
        };
        let mut found: Vec<Cheat> = Vec::new();
        if let Some(index) = spec.skip_layer {
            found.push(Cheat::SkipLayer(index));
        }
        if let Some(window) = spec.kv_window {
            if window == 0 {
                return Err("kv_window: 0 positions (expected at least 1)".into());
            }
            found.push(Cheat::KvWindow(window));
        }
        if let Some(t) = spec.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(format!("temperature: {t} (expected ≥ 0)"));
            }
            found.push(Cheat::Temperature(t));
        }
        if let Some(seed) = spec.seed {
            found.push(Cheat::Seed(seed));
        }
        if let Some(n) = spec.second_best_every {
            if n == 0 {
                return Err("second_best_every: 0 (expected at least 1)".into());
            }
            found.push(Cheat::SecondBestEvery(n));
        }
        if let Some(rate) = spec.second_best_rate {
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(format!("second_best_rate: {rate} is outside (0, 1]"));
            }
            found.push(Cheat::SecondBestRate(rate));
        }
        if flag("other_prompt", spec.other_prompt)? {
            found.push(Cheat::OtherPrompt);
        }
        if flag("drop_system_prompt", spec.drop_system_prompt)? {
            found.push(Cheat::DropSystemPrompt);
        }
        if let Some(low_rank) = spec.low_rank {
            if low_rank.rank == 0 {
                return Err("low_rank.rank: 0 (expected at least 1)".into());
            }
            if !(low_rank.scale.is_finite() && low_rank.scale > 0.0) {
                return Err(format!(
                    "low_rank.scale: {} (expected a relative weight change > 0, e.g. 0.01)",
                    low_rank.scale
                ));
            }
            found.push(Cheat::LowRank(low_rank));
        }
        if let Some(replay) = spec.replay {
            found.push(Cheat::Replay {
                tokens_from: replay.tokens_from,
            });
        }
        if let Some(stale) = spec.stale {
            found.push(Cheat::Stale {
                seed_offset: stale.seed_offset,
            });
        }
        if let Some(precision) = spec.weights {
            found.push(Cheat::Weights(precision));
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!(
                "no cheat given (expected one of {})",
                Cheat::KEYS.join(", ")
            )),
            n => Err(format!(
                "{n} cheats given (expected exactly one per inferencer)"
            )),
        }
    }
}

impl From<Cheat> for CheatSpec {
    fn from(cheat: Cheat) -> Self {
        let mut spec = CheatSpec::default();
        match cheat {
            Cheat::SkipLayer(index) => spec.skip_layer = Some(index),
            Cheat::KvWindow(window) => spec.kv_window = Some(window),
            Cheat::Temperature(t) => spec.temperature = Some(t),
            Cheat::Seed(seed) => spec.seed = Some(seed),
            Cheat::SecondBestEvery(n) => spec.second_best_every = Some(n),
            Cheat::SecondBestRate(rate) => spec.second_best_rate = Some(rate),
            Cheat::OtherPrompt => spec.other_prompt = Some(true),
            Cheat::DropSystemPrompt => spec.drop_system_prompt = Some(true),
            Cheat::LowRank(low_rank) => spec.low_rank = Some(low_rank),
            Cheat::Replay { tokens_from } => spec.replay = Some(ReplaySpec { tokens_from }),
            Cheat::Stale { seed_offset } => spec.stale = Some(StaleSpec { seed_offset }),
            Cheat::Weights(precision) => spec.weights = Some(precision),
        }
        spec
    }
}

impl Cheat {
    /// The YAML keys, one per cheat.
    pub const KEYS: [&'static str; 12] = [
        "skip_layer",
        "kv_window",
        "temperature",
        "seed",
        "second_best_every",
        "second_best_rate",
        "other_prompt",
        "drop_system_prompt",
        "low_rank",
        "replay",
        "stale",
        "weights",
    ];

    /// A short label for logs and the console ("skip layer 15", "kv window 64").
    pub fn label(&self) -> String {
        match self {
            Cheat::SkipLayer(index) => format!("skip layer {index}"),
            Cheat::KvWindow(window) => format!("kv window {window}"),
            Cheat::Temperature(t) => format!("temperature {t}"),
            Cheat::Seed(seed) => format!("seed {seed}"),
            Cheat::SecondBestEvery(n) => format!("second-best every {n}"),
            Cheat::SecondBestRate(rate) => format!("second-best at rate {rate}"),
            Cheat::OtherPrompt => "answer to another prompt".into(),
            Cheat::DropSystemPrompt => "system prompt dropped".into(),
            Cheat::LowRank(l) => format!("low-rank change (rank {}, scale {})", l.rank, l.scale),
            Cheat::Replay { tokens_from } => format!("replay of {tokens_from} tokens"),
            Cheat::Stale { seed_offset } => format!("stale answer (seed offset {seed_offset})"),
            Cheat::Weights(precision) => format!("{precision} weights"),
        }
    }

    /// Whether the cheater decodes after other prompt ids than the request's, which the
    /// experiment layer renders (it knows the prompts and the chat template).
    pub fn needs_other_prompt_ids(&self) -> bool {
        matches!(self, Cheat::OtherPrompt | Cheat::DropSystemPrompt)
    }

    /// The precision of the second model the cheater runs (replay's tokens, planted weights).
    pub fn other_precision(&self) -> Option<Precision> {
        match self {
            Cheat::Replay { tokens_from } => Some(*tokens_from),
            Cheat::Weights(precision) => Some(*precision),
            _ => None,
        }
    }
}

/// A uniform draw in [0, 1) for (seed, position): SHA-256 over
/// `"verillm-tui/cheat-draw/v1" ‖ seed (u64 LE) ‖ position (u64 LE)`, the first 8 bytes
/// big-endian over 2^64. Apart from the sampling noise's domain, so the positions a cheat picks
/// do not follow the sampled tokens.
pub fn cheat_draw(seed: u64, position: u64) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(b"verillm-tui/cheat-draw/v1");
    hasher.update(seed.to_le_bytes());
    hasher.update(position.to_le_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) as f64 / 2f64.powi(64)
}

/// What one cheating inference produced.
#[derive(Debug, Clone)]
pub struct CheatOutput {
    pub output: InferenceOutput,
    /// Generated positions whose token the cheat chose against the rule (sampling cheats).
    pub cheated_positions: Vec<usize>,
    /// ‖ΔW‖ / ‖W‖ over every changed weight (low-rank), as measured on the weights used.
    pub relative_weight_change: Option<f64>,
}

/// The inputs a cheat needs beyond the honest inferencer's.
#[derive(Default)]
pub struct CheatInputs<'a> {
    /// The prompt ids the cheater decodes after (other prompt, system prompt dropped).
    pub decoded_prompt_ids: Option<&'a [u32]>,
    /// The second model (replay's tokens, substituted weights).
    pub other_model: Option<&'a LoadedModel>,
}

/// Runs `cheat` where the honest inferencer would run `generate(honest, prompt_ids, params…)`.
/// `prompt_ids` and `params` are the request's: the bundle claims them.
#[allow(clippy::too_many_arguments)]
pub fn generate_cheating(
    honest: &LoadedModel,
    cheat: &Cheat,
    inputs: &CheatInputs<'_>,
    prompt_ids: &[u32],
    params: &SamplingParams,
    layers: &[usize],
    sink: &EventSink,
    trial: usize,
    cancel: &CancelToken,
) -> Result<CheatOutput> {
    let plain = |output| CheatOutput {
        output,
        cheated_positions: Vec::new(),
        relative_weight_change: None,
    };
    match cheat {
        Cheat::SkipLayer(_) | Cheat::KvWindow(_) | Cheat::LowRank(_) => {
            let (model, relative_weight_change) = cheating_model(honest, cheat)?;
            let output = generate(&model, prompt_ids, params, layers, sink, trial, cancel)?;
            Ok(CheatOutput {
                output,
                cheated_positions: Vec::new(),
                relative_weight_change,
            })
        }
        Cheat::Temperature(_)
        | Cheat::Seed(_)
        | Cheat::SecondBestEvery(_)
        | Cheat::SecondBestRate(_) => {
            let cheated = std::sync::Mutex::new(Vec::new());
            let choose = |logits: &[f32], history: &[u32], banned: &[u32], position: usize| {
                let (token, against_rule) =
                    choose_token(cheat, params, logits, history, banned, position)?;
                if against_rule {
                    cheated
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(position);
                }
                Some(token)
            };
            let output = generate_choosing(
                honest, prompt_ids, params, layers, sink, trial, cancel, &choose,
            )?;
            Ok(CheatOutput {
                output,
                cheated_positions: cheated.into_inner().unwrap_or_else(|e| e.into_inner()),
                relative_weight_change: None,
            })
        }
        Cheat::Stale { seed_offset } => {
            // The earlier run: an honest answer to the same prompt under the earlier request.
            let earlier = SamplingParams {
                seed: params.seed.wrapping_add(*seed_offset),
                ..params.clone()
            };
            Ok(plain(generate(
                honest, prompt_ids, &earlier, layers, sink, trial, cancel,
            )?))
        }
        Cheat::OtherPrompt | Cheat::DropSystemPrompt => {
            let decoded = inputs
                .decoded_prompt_ids
                .context("this cheat needs the prompt ids it decodes after")?;
            ensure!(
                decoded != prompt_ids,
                "{}: the prompt it decodes after is the request's own (nothing to cheat with)",
                cheat.label()
            );
            let max_new = params
                .max_new_tokens
                .min(honest.model.max_positions().saturating_sub(decoded.len()));
            let decoded_params = SamplingParams {
                max_new_tokens: max_new.max(1),
                min_new_tokens: params.min_new_tokens.min(max_new.max(1)),
                ..params.clone()
            };
            Ok(plain(generate(
                honest,
                decoded,
                &decoded_params,
                layers,
                sink,
                trial,
                cancel,
            )?))
        }
        Cheat::Replay { .. } => {
            let cheap = inputs
                .other_model
                .context("replay needs the cheap model its tokens come from")?;
            let mut output = generate(cheap, prompt_ids, params, layers, sink, trial, cancel)?;
            let start = std::time::Instant::now();
            output.captured = prefill_states(
                honest,
                prompt_ids,
                &output.output_ids,
                layers,
                super::verification::default_chunk(honest.profile),
            )?;
            let prefill_s = start.elapsed().as_secs_f64();
            output.total_s += prefill_s;
            output.decode_s += prefill_s;
            Ok(plain(output))
        }
        Cheat::Weights(_) => {
            let other = inputs
                .other_model
                .context("substituted weights need their model")?;
            Ok(plain(generate(
                other, prompt_ids, params, layers, sink, trial, cancel,
            )?))
        }
    }
}

/// The token a sampling cheat takes at `position`, and whether it went against the rule.
fn choose_token(
    cheat: &Cheat,
    params: &SamplingParams,
    logits: &[f32],
    history: &[u32],
    banned: &[u32],
    position: usize,
) -> Option<(u32, bool)> {
    let honest = StepCandidates::build(params, logits, history, banned, position as u64);
    let rule_choice = honest.choice()?;
    let token = match cheat {
        Cheat::Temperature(t) => {
            let p = SamplingParams {
                temperature: *t,
                ..params.clone()
            };
            StepCandidates::build(&p, logits, history, banned, position as u64).choice()?
        }
        Cheat::Seed(seed) => {
            let p = SamplingParams {
                seed: *seed,
                ..params.clone()
            };
            StepCandidates::build(&p, logits, history, banned, position as u64).choice()?
        }
        Cheat::SecondBestEvery(n) if (position + 1).is_multiple_of(*n) => second_best(&honest)?,
        Cheat::SecondBestRate(rate) if cheat_draw(params.seed, position as u64) < *rate => {
            second_best(&honest)?
        }
        _ => rule_choice,
    };
    Some((token, token != rule_choice))
}

/// The rule's runner-up; the choice itself when it is the only candidate.
fn second_best(step: &StepCandidates) -> Option<u32> {
    step.scored
        .get(1)
        .or(step.scored.first())
        .map(|(id, _)| *id)
}

/// The model a model-changing cheat decodes with, and (low-rank) its measured relative weight
/// change. Shares the tokenizer and claims the honest model's identity.
pub fn cheating_model(honest: &LoadedModel, cheat: &Cheat) -> Result<(LoadedModel, Option<f64>)> {
    let (model, change) = match cheat {
        Cheat::SkipLayer(index) => (honest.model.with_layer_skipped(*index)?, None),
        Cheat::KvWindow(window) => (honest.model.with_attention_window(*window)?, None),
        Cheat::LowRank(low_rank) => {
            let (model, change) = low_rank_changed(&honest.model, low_rank)?;
            (model, Some(change))
        }
        other => bail!("{} does not change the model", other.label()),
    };
    Ok((
        LoadedModel {
            model: Arc::new(model),
            ..honest.clone()
        },
        change,
    ))
}

/// `model` with W + ΔW in every decoder layer's linear weights (see [`Cheat::LowRank`]), and
/// the relative change ‖ΔW‖ / ‖W‖ over all of them as measured on the weights made (after
/// rounding to the model's dtype).
pub fn low_rank_changed(model: &TappedModel, low_rank: &LowRank) -> Result<(TappedModel, f64)> {
    let (mut weight_sq, mut change_sq) = (0f64, 0f64);
    let changed = model.with_linear_weights_changed(|layer, name, weight| {
        let (rows, cols) = weight.dims2()?;
        let device = weight.device();
        let factor = |which: &str, n: usize, shape: (usize, usize)| -> Result<Tensor> {
            let values = gaussians(low_rank.seed, &format!("{layer}.{name}.{which}"), n);
            Ok(Tensor::from_vec(values, shape, &Device::Cpu)?.to_device(device)?)
        };
        let u = factor("u", rows * low_rank.rank, (rows, low_rank.rank))?;
        let v = factor("v", low_rank.rank * cols, (low_rank.rank, cols))?;
        let delta = u.matmul(&v)?;
        let w = weight.to_dtype(DType::F32)?;
        let norm = |t: &Tensor| -> Result<f64> {
            Ok(t.to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?)
        };
        let target = low_rank.scale * norm(&w)?.sqrt() / norm(&delta)?.sqrt().max(1e-30);
        let new = (&w + (delta * target)?)?.to_dtype(weight.dtype())?;
        weight_sq += norm(&w)?;
        change_sq += norm(&(new.to_dtype(DType::F32)? - &w)?)?;
        Ok(new)
    })?;
    Ok((changed, (change_sq / weight_sq.max(1e-300)).sqrt()))
}

/// `n` standard normal values from a seeded SHA-256 stream (Box–Muller), the same on every
/// machine.
fn gaussians(seed: u64, label: &str, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    let mut counter = 0u64;
    while out.len() < n {
        let mut hasher = Sha256::new();
        hasher.update(b"verillm-tui/low-rank/v1");
        hasher.update(seed.to_le_bytes());
        hasher.update((label.len() as u64).to_le_bytes());
        hasher.update(label.as_bytes());
        hasher.update(counter.to_le_bytes());
        counter += 1;
        let digest = hasher.finalize();
        for pair in digest.chunks_exact(16) {
            let word = |b: &[u8]| {
                let mut x = [0u8; 8];
                x.copy_from_slice(b);
                ((u64::from_be_bytes(x) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (u1, u2) = (word(&pair[..8]), word(&pair[8..]));
            let r = (-2.0 * u1.ln()).sqrt();
            let angle = 2.0 * std::f64::consts::PI * u2;
            out.push((r * angle.cos()) as f32);
            out.push((r * angle.sin()) as f32);
        }
    }
    out.truncate(n);
    out
}

/// The hidden states at `layers` of the generated positions, from one prefill over prompt +
/// output in chunks of `chunk` (what a verifier computes): row i = the position holding
/// generated token i.
pub fn prefill_states(
    model: &LoadedModel,
    prompt_ids: &[u32],
    output_ids: &[u32],
    layers: &[usize],
    chunk: usize,
) -> Result<CapturedStates> {
    ensure!(chunk > 0, "chunk size must be at least 1");
    let tm = &model.model;
    let mut layers = layers.to_vec();
    layers.sort_unstable();
    layers.dedup();
    let mut states = CapturedStates::new(layers.clone(), tm.config.hidden, tm.dtype())?;
    let sequence: Vec<u32> = prompt_ids.iter().chain(output_ids).copied().collect();
    let prompt_len = prompt_ids.len();
    let mut cache = tm.new_cache();
    for chunk_start in (0..sequence.len()).step_by(chunk) {
        let chunk_end = (chunk_start + chunk).min(sequence.len());
        let out = tm.forward(
            &sequence[chunk_start..chunk_end],
            &mut cache,
            &layers,
            false,
        )?;
        let first = chunk_start.max(prompt_len);
        if first >= chunk_end {
            continue;
        }
        let rows: Vec<(usize, Tensor)> = out
            .taps
            .into_iter()
            .map(|(layer, t)| Ok((layer, t.narrow(0, first - chunk_start, chunk_end - first)?)))
            .collect::<Result<_>>()?;
        states.push(&rows)?;
    }
    Ok(states)
}

/// A lazy verifier's answer: no prefill, a fabricated report of every (generated position,
/// layer ≥ 1) check accepted, its metrics those of each committed row against itself. Its
/// verdict is PASS whatever the bundle holds; only planted known-bad bundles expose it.
pub fn lazy_verification(committed: &CapturedStates) -> Result<VerificationOutput> {
    let start = std::time::Instant::now();
    let mut checks = Vec::new();
    for row in 0..committed.rows {
        for (slot, &layer) in committed.layers.iter().enumerate() {
            if layer == 0 {
                continue;
            }
            let values = committed.row_f32(slot, row);
            let metrics = crate::stats::metrics::compare(&values, &values, CompareDtype::F32)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            checks.push(CheckRecord {
                position: row,
                layer,
                accept: true,
                metrics,
            });
        }
    }
    Ok(VerificationOutput {
        checks,
        embedding_checks: Vec::new(),
        time_s: start.elapsed().as_secs_f64(),
        compare_s: 0.0,
        cancelled: false,
        tier: CompareDtype::F32,
        limits: None,
        token_checks: None,
    })
}

#[cfg(test)]
#[path = "cheat_tests.rs"]
mod tests;
