//! The verifier: one prefill over prompt + output, processed in chunks so memory stays bounded,
//! stopping after the last sampled layer; each generated position's recomputed states are
//! compared with the committed ones as soon as its chunk is done.

use std::time::Instant;

use anyhow::{ensure, Result};

use super::capture::CapturedStates;
use super::events::{CancelToken, EngineEvent, EventSink};
use crate::experiment::results::CheckRecord;
use crate::model::device::dtype_name;
use crate::model::LoadedModel;
use crate::stats::metrics::{compare, dtype_from_name, CompareDtype};
use crate::stats::policy::PolicyConfig;

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
    let compare_dtype = CompareDtype::coarsest(job.inference_dtype, verifier_dtype);

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
                let accept = job
                    .policy
                    .decide(&metrics, job.inference_dtype, verifier_dtype);
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
    })
}
