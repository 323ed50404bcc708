//! The verifier: one prefill over prompt + output, processed in chunks so memory stays bounded;
//! each generated position's recomputed states are compared with the committed ones as soon as
//! its chunk is done, and (token checks) the prefill goes on through the final norm and lm_head
//! so that every generated token is held to the sampling rule (docs/sampling.md) with the
//! request's parameters. A state-only verification (`token_checks: None`) stops after the last
//! sampled layer, as before, and says so in its results.

use std::time::Instant;

use anyhow::{ensure, Result};

use super::capture::CapturedStates;
use super::events::{CancelToken, EngineEvent, EventSink};
use super::sampling::{judge_at_boundary, SamplingParams, StepCandidates};
use crate::model::device::{dtype_name, DeviceProfile};
use crate::model::weights::Precision;
use crate::model::LoadedModel;
use crate::record::results::{CheckRecord, TokenCheckRecord};
use crate::stats::metrics::{compare, CheckMetrics, CompareDtype};
use crate::stats::policy::{token_margin_tolerance, PolicyConfig, TierThresholds};

/// Positions per prefill chunk on the CPU: bounds memory on long sequences and lets the
/// console show checks as each chunk completes, at a few percent of prefill throughput.
pub const CPU_CHUNK: usize = 128;

/// Positions per prefill chunk on a GPU, where a chunk costs kernel launches more than
/// arithmetic. Measured on an H100 (`bench`'s chunk sweep, N = 2048, two runs,
/// docs/gpu-h100.md): verification took 1.3–2.7 % of inference in chunks of 128, 0.44–1.16 %
/// in chunks of 512, and 0.54–0.79 % as one prefill of the whole sequence.
pub const GPU_CHUNK: usize = 512;

/// The chunk a verifier on `profile` prefills in unless told otherwise.
pub fn default_chunk(profile: DeviceProfile) -> usize {
    if profile.is_gpu() {
        GPU_CHUNK
    } else {
        CPU_CHUNK
    }
}

#[derive(Debug, Clone)]
pub struct VerificationOutput {
    /// Checks that count toward the accept rate (layers > 0).
    pub checks: Vec<CheckRecord>,
    /// Layer-0 (embedding) checks, reported apart: identical by construction.
    pub embedding_checks: Vec<CheckRecord>,
    pub time_s: f64,
    /// The part of `time_s` spent on the CPU comparing states, deciding and emitting each
    /// check's event; the rest is the prefill and reading its states back. `bench` (which
    /// emits to no one) reports the two apart.
    pub compare_s: f64,
    pub cancelled: bool,
    /// The precision tier the checks were judged in (the coarser of the two roles' tiers).
    pub tier: CompareDtype,
    /// The per-check limits the precision-aware policy applied (None for the seed rule).
    pub limits: Option<TierThresholds>,
    /// Every generated token held to the sampling rule; None for a state-only verification.
    pub token_checks: Option<TokenChecks>,
}

/// The token checks of one verification.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenChecks {
    pub records: Vec<TokenCheckRecord>,
    /// δ of the tier: a token is accepted when in the set and margin ≥ −δ.
    pub tolerance: f64,
    /// How the output breaks the stopping rule (early stop, text after EOS, too long), if it
    /// does: always a rejection.
    pub stop_violation: Option<String>,
}

impl TokenChecks {
    pub fn accepted(&self) -> usize {
        self.records.iter().filter(|r| r.accept).count()
    }

    pub fn accept_rate(&self) -> f64 {
        if self.records.is_empty() {
            0.0
        } else {
            self.accepted() as f64 / self.records.len() as f64
        }
    }

    /// The smallest margin (+inf with no tokens).
    pub fn min_margin(&self) -> f64 {
        self.records
            .iter()
            .map(|r| r.margin)
            .fold(f64::INFINITY, f64::min)
    }

    pub fn first_rejected_position(&self) -> Option<usize> {
        self.records.iter().find(|r| !r.accept).map(|r| r.position)
    }

    /// Token checks pass when every token is accepted and the output stops by the rule: one
    /// token the model at these parameters would not have chosen is a deviation, and δ already
    /// covers honest numerical drift.
    pub fn pass(&self) -> bool {
        self.stop_violation.is_none()
            && !self.records.is_empty()
            && self.accepted() == self.records.len()
    }
}

/// What the token checks need: the request's sampling parameters, the end-of-sequence ids of
/// the verifier's own tokenizer, and whether the output claims to be complete.
#[derive(Debug, Clone)]
pub struct TokenRule<'a> {
    pub sampling: &'a SamplingParams,
    pub eos_ids: Vec<u32>,
    /// False for an inference cancelled midway: its output is a prefix, so stopping before
    /// EOS and `max_new_tokens` is no violation (the trial is marked incomplete instead).
    pub output_complete: bool,
}

impl VerificationOutput {
    pub fn accepted(&self) -> usize {
        self.checks.iter().filter(|c| c.accept).count()
    }
    pub fn accept_rate(&self) -> f64 {
        if self.checks.is_empty() {
            0.0
        } else {
            self.accepted() as f64 / self.checks.len() as f64
        }
    }
}

/// How a verifier judges an inference's states: the grid elements are compared on (the
/// dtypes actually computed in), each role's acceptance tier (which also counts quantized
/// kernels' activation rounding, `PolicyConfig::role_tier`), and the coarser of the two, which
/// picks the token tolerance δ. One home for the full prefill and the segment checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Judgement {
    pub compare_dtype: CompareDtype,
    pub inference_tier: CompareDtype,
    pub verifier_tier: CompareDtype,
    pub tier: CompareDtype,
    /// A role runs the model's own block-quantized weights on kernels that round activations:
    /// the verifier at `native`, or an inferencer whose `native` claim is trusted.
    pub quantized_kernels: bool,
}

impl Judgement {
    pub(crate) fn of(
        model: &LoadedModel,
        inference_dtype: CompareDtype,
        inference_native: bool,
    ) -> Judgement {
        let tm = &model.model;
        let verifier_dtype =
            CompareDtype::from_name(dtype_name(tm.dtype())).unwrap_or(CompareDtype::F32);
        let rounds = tm.native_rounds_activations;
        let inference_tier = PolicyConfig::role_tier(inference_dtype, inference_native && rounds);
        let verifier_tier =
            PolicyConfig::role_tier(verifier_dtype, tm.precision == Precision::Native && rounds);
        Judgement {
            compare_dtype: CompareDtype::coarsest(inference_dtype, verifier_dtype),
            inference_tier,
            verifier_tier,
            tier: CompareDtype::coarsest(inference_tier, verifier_tier),
            quantized_kernels: rounds && (inference_native || tm.precision == Precision::Native),
        }
    }
}

pub struct VerifyJob<'a> {
    pub prompt_ids: &'a [u32],
    pub output_ids: &'a [u32],
    pub committed: &'a CapturedStates,
    /// The dtype the inferencer declares it computed in (from the bundle).
    pub inference_dtype: CompareDtype,
    /// The inferencer declares `native` precision: the model's own weights as stored.
    pub inference_native: bool,
    pub policy: &'a PolicyConfig,
    pub chunk: usize,
    /// Token checks (None: state checks only, the prefill stops after the last tap).
    pub tokens: Option<TokenRule<'a>>,
}

/// Recomputes and checks every (generated position, sampled layer).
pub fn verify(
    model: &LoadedModel,
    job: &VerifyJob<'_>,
    sink: &EventSink,
    trial: usize,
    verifier: usize,
    cancel: &CancelToken,
) -> Result<VerificationOutput> {
    let committed = job.committed;
    ensure!(
        committed.rows == job.output_ids.len(),
        "the commitment has {} rows but the output has {} tokens",
        committed.rows,
        job.output_ids.len()
    );
    ensure!(job.chunk > 0, "chunk size must be at least 1");
    let tm = &model.model;
    ensure!(
        committed.hidden == tm.config.hidden,
        "committed hidden size {} differs from the verifier model's {}",
        committed.hidden,
        tm.config.hidden
    );
    let Judgement {
        compare_dtype,
        inference_tier,
        verifier_tier,
        tier,
        quantized_kernels,
    } = Judgement::of(model, job.inference_dtype, job.inference_native);

    let start = Instant::now();
    let prompt_len = job.prompt_ids.len();
    let sequence: Vec<u32> = job
        .prompt_ids
        .iter()
        .chain(job.output_ids)
        .copied()
        .collect();
    let mut cache = tm.new_cache();
    let mut checks = Vec::with_capacity(committed.rows * committed.layers.len());
    let mut embedding_checks = Vec::new();
    let mut cancelled = false;
    let mut compare_time = std::time::Duration::ZERO;
    let tolerance = token_margin_tolerance(tier, quantized_kernels);
    let mut token_records: Vec<TokenCheckRecord> = Vec::new();
    // As many threads as the CPU kernels may use (`--threads`, RAYON_NUM_THREADS), no more.
    let compare_threads = candle_core::utils::get_num_threads();
    for chunk_start in (0..sequence.len()).step_by(job.chunk) {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let chunk_end = (chunk_start + job.chunk).min(sequence.len());
        let chunk_ids = &sequence[chunk_start..chunk_end];
        // Row r of the chunk (absolute position a) predicts generated token a + 1 − prompt_len.
        let first_logit_row = (prompt_len - 1).saturating_sub(chunk_start);
        let out = match &job.tokens {
            None => tm.forward(chunk_ids, &mut cache, &committed.layers, false)?,
            Some(_) if first_logit_row < chunk_ids.len() => tm.forward_with_logits_from(
                chunk_ids,
                &mut cache,
                &committed.layers,
                first_logit_row,
            )?,
            // Every layer still runs, for the cache the later chunks read.
            Some(_) => tm.forward(chunk_ids, &mut cache, &committed.layers, true)?,
        };
        if let (Some(rule), Some(logits)) = (&job.tokens, &out.row_logits) {
            let rows: Vec<Vec<f32>> = logits.to_vec2()?;
            let judge_start = Instant::now();
            for (k, row) in rows.iter().enumerate() {
                let position = chunk_start + first_logit_row + k + 1 - prompt_len;
                let Some(&token) = job.output_ids.get(position) else {
                    continue;
                };
                let record = check_token(
                    rule,
                    row,
                    &sequence[..prompt_len + position],
                    position,
                    token,
                    tolerance,
                );
                sink.emit(EngineEvent::TokenCheck {
                    trial,
                    verifier,
                    position,
                    accept: record.accept,
                    margin: record.margin,
                });
                token_records.push(record);
            }
            compare_time += judge_start.elapsed();
        }
        // Positions of generated tokens inside this chunk.
        let first = chunk_start.max(prompt_len);
        if first >= chunk_end {
            continue;
        }
        for (slot, (layer, states)) in out.taps.iter().enumerate() {
            let rows = states.narrow(0, first - chunk_start, chunk_end - first)?;
            // Reading back waits for the (GPU) prefill: what follows is the comparison alone.
            let rows: Vec<Vec<f32>> = rows.to_dtype(candle_core::DType::F32)?.to_vec2()?;
            let compare_start = Instant::now();
            let first_position = first - prompt_len;
            let all_metrics = compare_rows(
                committed,
                slot,
                first_position,
                &rows,
                compare_dtype,
                compare_threads,
            )?;
            for (k, metrics) in all_metrics.into_iter().enumerate() {
                let position = first_position + k;
                let accept = job.policy.decide(&metrics, inference_tier, verifier_tier);
                let record = CheckRecord {
                    position,
                    layer: *layer,
                    accept,
                    metrics,
                };
                if *layer == 0 {
                    embedding_checks.push(record);
                } else {
                    sink.emit(EngineEvent::Check {
                        trial,
                        verifier,
                        position,
                        layer: *layer,
                        accept,
                        metrics: Box::new(record.metrics.clone()),
                    });
                    checks.push(record);
                }
            }
            compare_time += compare_start.elapsed();
        }
    }
    checks.sort_by_key(|c| (c.position, c.layer));
    let token_checks = job.tokens.as_ref().map(|rule| TokenChecks {
        records: token_records,
        tolerance,
        stop_violation: stop_violation(rule, job.output_ids),
    });
    Ok(VerificationOutput {
        checks,
        embedding_checks,
        time_s: start.elapsed().as_secs_f64(),
        compare_s: compare_time.as_secs_f64(),
        cancelled,
        tier,
        limits: job.policy.tier_thresholds(inference_tier, verifier_tier),
        token_checks,
    })
}

/// Token checks alone (no committed states): one prefill over prompt + output through the
/// lm_head, every generated token held to `rule` with tolerance δ of `tier`. For outputs of
/// other engines that come without hidden states (PyTorch controls, δ measurements).
pub fn check_tokens_only(
    model: &LoadedModel,
    prompt_ids: &[u32],
    output_ids: &[u32],
    rule: &TokenRule<'_>,
    tier: CompareDtype,
    chunk: usize,
) -> Result<TokenChecks> {
    ensure!(!prompt_ids.is_empty(), "the prompt has no tokens");
    ensure!(chunk > 0, "chunk size must be at least 1");
    let tm = &model.model;
    // Other engines' outputs: no `native` claim to trust.
    let tolerance = token_margin_tolerance(tier, false);
    let prompt_len = prompt_ids.len();
    let sequence: Vec<u32> = prompt_ids.iter().chain(output_ids).copied().collect();
    let mut cache = tm.new_cache();
    let mut records = Vec::with_capacity(output_ids.len());
    for chunk_start in (0..sequence.len()).step_by(chunk) {
        let chunk_end = (chunk_start + chunk).min(sequence.len());
        let chunk_ids = &sequence[chunk_start..chunk_end];
        let first_logit_row = (prompt_len - 1).saturating_sub(chunk_start);
        if first_logit_row >= chunk_ids.len() {
            tm.forward(chunk_ids, &mut cache, &[], true)?;
            continue;
        }
        let out = tm.forward_with_logits_from(chunk_ids, &mut cache, &[], first_logit_row)?;
        let rows: Vec<Vec<f32>> = out.row_logits.expect("asked for row logits").to_vec2()?;
        for (k, row) in rows.iter().enumerate() {
            let position = chunk_start + first_logit_row + k + 1 - prompt_len;
            if let Some(&token) = output_ids.get(position) {
                records.push(check_token(
                    rule,
                    row,
                    &sequence[..prompt_len + position],
                    position,
                    token,
                    tolerance,
                ));
            }
        }
    }
    Ok(TokenChecks {
        records,
        tolerance,
        stop_violation: stop_violation(rule, output_ids),
    })
}

/// Holds generated token `position` (`token`) to the rule, given the verifier's logits of the
/// step that chose it and the context before it (prompt and earlier tokens).
pub(crate) fn check_token(
    rule: &TokenRule<'_>,
    logits: &[f32],
    context: &[u32],
    position: usize,
    token: u32,
    tolerance: f64,
) -> TokenCheckRecord {
    let banned: &[u32] = if position < rule.sampling.min_new_tokens {
        &rule.eos_ids
    } else {
        &[]
    };
    let mut judged =
        StepCandidates::build(rule.sampling, logits, context, banned, position as u64).judge(token);
    if !judged.in_set {
        judged = judge_at_boundary(
            rule.sampling,
            logits,
            context,
            banned,
            position as u64,
            token,
            tolerance,
        );
    }
    TokenCheckRecord {
        position,
        token,
        in_set: judged.in_set,
        margin: judged.margin,
        accept: judged.margin >= -tolerance,
    }
}

/// How `output` breaks the stopping rule (docs/sampling.md), if it does.
pub(crate) fn stop_violation(rule: &TokenRule<'_>, output: &[u32]) -> Option<String> {
    let max = rule.sampling.max_new_tokens;
    if output.len() > max {
        return Some(format!(
            "{} tokens, more than max_new_tokens {max}",
            output.len()
        ));
    }
    if let Some(at) = output
        .iter()
        .position(|t| rule.eos_ids.contains(t))
        .filter(|&at| at + 1 < output.len())
    {
        return Some(format!(
            "goes on for {} tokens after the end-of-sequence token at position {at}",
            output.len() - at - 1
        ));
    }
    let ended = output.last().is_some_and(|t| rule.eos_ids.contains(t));
    if rule.output_complete && !ended && output.len() < max {
        return Some(format!(
            "stops after {} tokens without an end-of-sequence token, before max_new_tokens {max}",
            output.len()
        ));
    }
    None
}

/// Fewer rows than this per thread are not worth a thread.
const MIN_ROWS_PER_THREAD: usize = 8;

/// Compares recomputed rows (generated positions `first_position..`) with the committed ones at
/// tap `slot` on up to `threads` threads: a GPU verifier leaves the CPU idle, and at thousands
/// of checks one thread comparing was a large part of the verification time. The metrics come
/// back in row order, the same as one thread computes them.
fn compare_rows(
    committed: &CapturedStates,
    slot: usize,
    first_position: usize,
    rows: &[Vec<f32>],
    dtype: CompareDtype,
    threads: usize,
) -> Result<Vec<CheckMetrics>> {
    let compare_one = |k: usize, recomputed: &[f32]| -> Result<CheckMetrics> {
        Ok(compare(
            &committed.row_f32(slot, first_position + k),
            recomputed,
            dtype,
        )?)
    };
    let threads = threads.min(rows.len() / MIN_ROWS_PER_THREAD).max(1);
    if threads == 1 {
        return rows
            .iter()
            .enumerate()
            .map(|(k, row)| compare_one(k, row))
            .collect();
    }
    let per_thread = rows.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = rows
            .chunks(per_thread)
            .enumerate()
            .map(|(part, part_rows)| {
                scope.spawn(move || {
                    part_rows
                        .iter()
                        .enumerate()
                        .map(|(j, row)| compare_one(part * per_thread + j, row))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(rows.len());
        for handle in parts {
            match handle.join() {
                Ok(part) => all.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(all)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::inference::generate;
    use crate::engine::sampling::SamplingParams;
    use crate::model::device::DeviceProfile;
    use crate::testutil::embedded;

    #[test]
    fn gpu_verifiers_prefill_in_longer_chunks_than_cpu_ones() {
        let gpu = DeviceProfile::parse("cuda:0:f16").unwrap();
        assert_eq!(default_chunk(gpu), GPU_CHUNK);
        assert_eq!(default_chunk(DeviceProfile::CPU_F32), CPU_CHUNK);
    }

    /// Spread over threads, the comparison gives the same metrics in the same order as one
    /// thread, and an error in any part (here a short row near the end) is not lost.
    #[test]
    fn comparing_rows_on_many_threads_matches_one_thread() {
        let (hidden, rows) = (16, 203);
        let value = |slot: usize, row: usize, i: usize| {
            ((slot * 7919 + row * 131 + i * 17) % 1000) as f32 / 37.0 - 13.0
        };
        let data = (0..2)
            .map(|slot| {
                (0..rows)
                    .flat_map(|row| (0..hidden).map(move |i| value(slot, row, i)))
                    .flat_map(f32::to_le_bytes)
                    .collect()
            })
            .collect();
        let committed = CapturedStates {
            layers: vec![8, 16],
            hidden,
            dtype: candle_core::DType::F32,
            data,
            rows,
        };
        let first_position = 40;
        let recomputed: Vec<Vec<f32>> = (first_position..rows)
            .map(|row| {
                (0..hidden)
                    .map(|i| value(1, row, i) * (1.0 + (row % 5) as f32 * 1e-4))
                    .collect()
            })
            .collect();
        assert!(recomputed.len() >= 16 * MIN_ROWS_PER_THREAD);
        let spread = compare_rows(
            &committed,
            1,
            first_position,
            &recomputed,
            CompareDtype::F32,
            16,
        )
        .unwrap();
        let alone: Vec<CheckMetrics> = recomputed
            .iter()
            .enumerate()
            .map(|(k, row)| {
                compare(
                    &committed.row_f32(1, first_position + k),
                    row,
                    CompareDtype::F32,
                )
                .unwrap()
            })
            .collect();
        assert_eq!(spread, alone);
        // Rows that differ are told apart: the comparison really ran on each.
        assert!(spread[0].max_abs == 0.0 && spread[1].max_abs > 0.0);

        let mut short = recomputed.clone();
        short[150].pop();
        let err = compare_rows(&committed, 1, first_position, &short, CompareDtype::F32, 16)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("recomputed one has 15"), "{err}");
    }

    /// The embedded model's own Q4_1 weights on quantized kernels (`native`) round activations
    /// to 8-bit blocks, so a decode and a prefill differ by ~1e-2 even on one machine: honest
    /// native pairs are judged in the bf16 tier and pass, while re-quantized weights (q4_0, a
    /// cheat) are still judged in f32 and fail.
    #[test]
    fn honest_native_pairs_pass_in_the_bf16_tier_and_a_q4_cheat_still_fails() {
        let native = embedded(Precision::Native, DeviceProfile::CPU_F32);
        let full = embedded(Precision::Full, DeviceProfile::CPU_F32);
        let cheat = embedded("q4_0".parse().unwrap(), DeviceProfile::CPU_F32);
        assert!(native.model.native_rounds_activations);
        let prompt = native.tokenizer.encode("Why is the sky blue?").unwrap();
        let params = SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            seed: 0,
            min_new_tokens: 24,
            max_new_tokens: 24,
        };
        let layers = [8, 16, 24];
        let policy = PolicyConfig::default();
        let run = |inferencer: &LoadedModel, native_inference: bool, verifier: &LoadedModel| {
            let out = generate(
                inferencer,
                &prompt,
                &params,
                &layers,
                &EventSink::none(),
                0,
                &CancelToken::new(),
            )
            .unwrap();
            let job = VerifyJob {
                prompt_ids: &prompt,
                output_ids: &out.output_ids,
                committed: &out.captured,
                inference_dtype: CompareDtype::F32,
                inference_native: native_inference,
                policy: &policy,
                chunk: CPU_CHUNK,
                tokens: Some(TokenRule {
                    sampling: &params,
                    eos_ids: verifier.tokenizer.eos_ids(),
                    output_complete: true,
                }),
            };
            verify(
                verifier,
                &job,
                &EventSink::none(),
                0,
                0,
                &CancelToken::new(),
            )
            .unwrap()
        };
        for (inferencer, native_inference, verifier) in [
            (&native, true, &native),
            (&native, true, &full),
            (&full, false, &native),
        ] {
            let out = run(inferencer, native_inference, verifier);
            assert_eq!(out.tier, CompareDtype::Bf16);
            assert!(out.accept_rate() > 0.95, "{}", out.accept_rate());
            let tokens = out.token_checks.unwrap();
            assert!(tokens.pass(), "{:?}", tokens);
        }
        let honest = run(&full, false, &full);
        assert_eq!(honest.tier, CompareDtype::F32);
        assert_eq!(honest.accept_rate(), 1.0);
        let tokens = honest.token_checks.unwrap();
        assert!(tokens.pass() && tokens.min_margin() >= 0.0, "{tokens:?}");
        let caught = run(&cheat, false, &full);
        assert_eq!(caught.tier, CompareDtype::F32);
        assert_eq!(caught.accept_rate(), 0.0);
    }
}
