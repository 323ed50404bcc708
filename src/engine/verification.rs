//! The verifier: one prefill over prompt + output, processed in chunks so memory stays bounded,
//! stopping after the last sampled layer; each generated position's recomputed states are
//! compared with the committed ones as soon as its chunk is done.

use std::time::Instant;

use anyhow::{ensure, Result};

use super::capture::CapturedStates;
use super::events::{CancelToken, EngineEvent, EventSink};
use crate::experiment::results::CheckRecord;
use crate::model::device::dtype_name;
use crate::model::weights::Precision;
use crate::model::LoadedModel;
use crate::stats::metrics::{compare, dtype_from_name, CompareDtype};
use crate::stats::policy::{PolicyConfig, TierThresholds};

/// Default number of positions per prefill chunk: bounds memory on long sequences and lets the
/// console show checks as each chunk completes, at a few percent of prefill throughput.
pub const DEFAULT_CHUNK: usize = 128;

#[derive(Debug, Clone)]
pub struct VerificationOutput {
    /// Checks that count toward the accept rate (layers > 0).
    pub checks: Vec<CheckRecord>,
    /// Layer-0 (embedding) checks, reported apart: identical by construction.
    pub embedding_checks: Vec<CheckRecord>,
    pub time_s: f64,
    pub cancelled: bool,
    /// The precision tier the checks were judged in (the coarser of the two roles' tiers).
    pub tier: CompareDtype,
    /// The per-check limits the precision-aware policy applied (None for the seed rule).
    pub limits: Option<TierThresholds>,
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
    let verifier_dtype = dtype_from_name(dtype_name(tm.dtype())).unwrap_or(CompareDtype::F32);
    // Elements are compared on the grid of the dtypes actually computed in; the acceptance
    // tier also counts quantized kernels' activation rounding (`PolicyConfig::role_tier`).
    let compare_dtype = CompareDtype::coarsest(job.inference_dtype, verifier_dtype);
    let rounds = tm.native_rounds_activations;
    let inference_tier =
        PolicyConfig::role_tier(job.inference_dtype, job.inference_native && rounds);
    let verifier_tier =
        PolicyConfig::role_tier(verifier_dtype, tm.precision == Precision::Native && rounds);

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
    for chunk_start in (0..sequence.len()).step_by(job.chunk) {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let chunk_end = (chunk_start + job.chunk).min(sequence.len());
        let out = tm.forward(
            &sequence[chunk_start..chunk_end],
            &mut cache,
            &committed.layers,
            false,
        )?;
        // Positions of generated tokens inside this chunk.
        let first = chunk_start.max(prompt_len);
        if first >= chunk_end {
            continue;
        }
        for (slot, (layer, states)) in out.taps.iter().enumerate() {
            let rows = states.narrow(0, first - chunk_start, chunk_end - first)?;
            let rows: Vec<Vec<f32>> = rows.to_dtype(candle_core::DType::F32)?.to_vec2()?;
            for (k, recomputed) in rows.iter().enumerate() {
                let position = first - prompt_len + k;
                let metrics = compare(
                    &committed.row_f32(slot, position),
                    recomputed,
                    compare_dtype,
                )?;
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
        }
    }
    checks.sort_by_key(|c| (c.position, c.layer));
    Ok(VerificationOutput {
        checks,
        embedding_checks,
        time_s: start.elapsed().as_secs_f64(),
        cancelled,
        tier: CompareDtype::coarsest(inference_tier, verifier_tier),
        limits: job.policy.tier_thresholds(inference_tier, verifier_tier),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::inference::generate;
    use crate::engine::sampling::SamplingParams;
    use crate::model::device::DeviceProfile;
    use crate::testutil::embedded;

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
                chunk: DEFAULT_CHUNK,
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
        }
        let honest = run(&full, false, &full);
        assert_eq!(honest.tier, CompareDtype::F32);
        assert_eq!(honest.accept_rate(), 1.0);
        let caught = run(&cheat, false, &full);
        assert_eq!(caught.tier, CompareDtype::F32);
        assert_eq!(caught.accept_rate(), 0.0);
    }
}
