//! Segment verification (docs/commitment.md): from an opening whose proofs were all checked,
//! a verifier recomputes each challenged decoder layer alone over the opened column entering
//! it (causal attention over those committed states, its own weights) and compares the result
//! with the committed column entering the next layer: each position must pass the same
//! precision-aware state check as the full prefill *and* the layer-update check (the layer's own
//! contribution, committed against recomputed from the same input, in units of the honest
//! rounding of the tier: `stats::update`, docs/policy.md "Segment mode"), because one layer's
//! cheat is small next to the state it adds to. It checks column 0 against the tokens'
//! embeddings and runs the final norm and lm_head on the opened final column for the token
//! checks of the sampling rule.

use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};

use super::commitment::VerifiedOpening;
use super::verification::{check_token, stop_violation, Judgement, TokenChecks, TokenRule};
use crate::model::LoadedModel;
use crate::record::results::CheckRecord;
use crate::stats::metrics::{compare, CompareDtype};
use crate::stats::policy::{token_margin_tolerance, PolicyConfig};
use crate::stats::update::update_metrics;

pub struct SegmentJob<'a> {
    pub prompt_ids: &'a [u32],
    pub output_ids: &'a [u32],
    pub opening: &'a VerifiedOpening,
    pub inference_dtype: CompareDtype,
    pub inference_native: bool,
    pub policy: &'a PolicyConfig,
    pub tokens: Option<TokenRule<'a>>,
}

/// One challenged layer's checks: position = absolute position (prompt + output), layer = the
/// column compared (l + 1).
#[derive(Debug, Clone)]
pub struct LayerSegment {
    pub layer: usize,
    /// A check accepts when both the state and the layer-update check do.
    pub checks: Vec<CheckRecord>,
    /// The layer-update z at each position ([`crate::stats::update::UpdateMetrics::z`]).
    pub update_z: Vec<f64>,
    /// The largest z accepted for this pair.
    pub update_limit: f64,
    pub recompute_s: f64,
}

impl LayerSegment {
    pub fn accepted(&self) -> usize {
        self.checks.iter().filter(|c| c.accept).count()
    }

    pub fn accept_rate(&self) -> f64 {
        self.accepted() as f64 / self.checks.len().max(1) as f64
    }

    /// Positions whose layer update is within the limit (NaN is not).
    pub fn update_accepted(&self) -> usize {
        self.update_z
            .iter()
            .filter(|&&z| z <= self.update_limit)
            .count()
    }

    /// The median and the largest z (NaN first: a non-finite update is the worst).
    pub fn update_z_summary(&self) -> (f64, f64) {
        let mut z = self.update_z.clone();
        z.sort_by(|a, b| b.is_nan().cmp(&a.is_nan()).then(a.total_cmp(b)));
        if z.is_empty() {
            return (0.0, 0.0);
        }
        let max = if z[0].is_nan() { z[0] } else { z[z.len() - 1] };
        (z[z.len() / 2], max)
    }
}

#[derive(Debug, Clone)]
pub struct SegmentOutput {
    pub segments: Vec<LayerSegment>,
    /// Column 0 against the embeddings of prompt + output, per position.
    pub embedding_checks: Vec<CheckRecord>,
    pub token_checks: Option<TokenChecks>,
    /// Positions below this are the prompt's; the rest were generated.
    pub prompt_len: usize,
    pub proofs_checked: usize,
    pub bytes_received: u64,
    pub time_s: f64,
    pub tier: CompareDtype,
}

impl SegmentOutput {
    pub fn state_checks(&self) -> impl Iterator<Item = &CheckRecord> {
        self.segments.iter().flat_map(|s| s.checks.iter())
    }

    pub fn accept_rate(&self) -> f64 {
        let (n, a) = self
            .state_checks()
            .fold((0, 0), |(n, a), c| (n + 1, a + c.accept as usize));
        if n == 0 {
            0.0
        } else {
            a as f64 / n as f64
        }
    }

    /// Passes when every challenged layer's accept rate exceeds `cutoff` (one rate over all
    /// of them would let a cheat confined to one layer pass once c is large: 29 of 30 layers
    /// accepted is 0.967), every embedding row is accepted and the token checks (if any) pass.
    pub fn pass(&self, cutoff: f64) -> bool {
        !self.segments.is_empty()
            && self.failed_layers(cutoff).is_empty()
            && self.embedding_checks.iter().all(|c| c.accept)
            && self.token_checks.as_ref().is_none_or(TokenChecks::pass)
    }

    /// The challenged layers whose checks fall to the cutoff or below, at the prompt's
    /// positions or at the generated ones: each part is held to the cutoff on its own, because
    /// one rate over both let a cheap decode of 16 tokens after a 1,919-token prompt pass every
    /// layer with all 16 generated positions rejected (1919/1935 = 0.992; found by playing the
    /// cheater, docs/commitment.md).
    pub fn failed_layers(&self, cutoff: f64) -> Vec<usize> {
        let part_fails = |checks: &mut dyn Iterator<Item = &CheckRecord>| {
            let (n, a) = checks.fold((0usize, 0usize), |(n, a), c| (n + 1, a + c.accept as usize));
            n > 0 && !crate::stats::policy::verdict(a as f64 / n as f64, cutoff).is_pass()
        };
        self.segments
            .iter()
            .filter(|s| {
                s.checks.is_empty()
                    || part_fails(&mut s.checks.iter().filter(|c| c.position < self.prompt_len))
                    || part_fails(&mut s.checks.iter().filter(|c| c.position >= self.prompt_len))
            })
            .map(|s| s.layer)
            .collect()
    }
}

/// How a segment verifier judges one position of a recomputed layer: the state check of the
/// pair's tier and the layer-update check, both must accept.
pub(crate) struct LayerRule<'a> {
    pub judgement: Judgement,
    pub policy: &'a PolicyConfig,
    /// The coarsest dtype y or y' is rounded to, whose half-ulps are the rounding floor: the
    /// committed rows' storage dtype, or the verifier's compute dtype when that is coarser (an
    /// f16 verifier's own residual add rounds y' to f16 whatever the inference stored).
    pub rounded: CompareDtype,
    /// The largest layer-update z accepted.
    pub update_limit: f64,
}

impl<'a> LayerRule<'a> {
    /// The rule for verifying with `model` an inference that declares `inference_dtype` (and
    /// `native` precision, when trusted), its rows stored in `stored`.
    pub(crate) fn of(
        model: &LoadedModel,
        inference_dtype: CompareDtype,
        inference_native: bool,
        policy: &'a PolicyConfig,
        stored: CompareDtype,
    ) -> Self {
        let judgement = Judgement::of(model, inference_dtype, inference_native);
        // The tier's limit, or the wider one where a role runs the model's own block-quantized
        // weights on quantized kernels (they round activations to 8-bit blocks).
        LayerRule {
            update_limit: policy
                .layer_update_limits()
                .limit(judgement.tier, judgement.quantized_kernels),
            rounded: CompareDtype::coarsest(stored, judgement.compare_dtype),
            judgement,
            policy,
        }
    }

    fn state_check(
        &self,
        committed: &[f32],
        recomputed: &[f32],
        position: usize,
        layer: usize,
    ) -> Result<CheckRecord> {
        let j = &self.judgement;
        let metrics = compare(committed, recomputed, j.compare_dtype)?;
        let accept = self
            .policy
            .decide(&metrics, j.inference_tier, j.verifier_tier);
        Ok(CheckRecord {
            position,
            layer,
            accept,
            metrics,
        })
    }

    /// Recomputes decoder layer `layer` from the committed rows `entering` (every position
    /// from 0) and judges each position against the committed `leaving`.
    pub(crate) fn check_layer(
        &self,
        model: &LoadedModel,
        layer: usize,
        entering: &[Vec<f32>],
        leaving: &[Vec<f32>],
    ) -> Result<LayerSegment> {
        ensure!(
            entering.len() == leaving.len(),
            "layer {layer}: {} rows entering, {} leaving",
            entering.len(),
            leaving.len()
        );
        let t = Instant::now();
        let recomputed: Vec<Vec<f32>> = model
            .model
            .run_layer(layer, &as_tensor(entering, model)?)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        let recompute_s = t.elapsed().as_secs_f64();
        let mut checks = Vec::with_capacity(leaving.len());
        let mut update_z = Vec::with_capacity(leaving.len());
        for (p, (c, r)) in leaving.iter().zip(&recomputed).enumerate() {
            let mut check = self.state_check(c, r, p, layer + 1)?;
            let z = update_metrics(&entering[p], c, r, self.rounded)?.z(self.judgement.tier);
            // Written so that a NaN z rejects.
            check.accept &= z <= self.update_limit;
            checks.push(check);
            update_z.push(z);
        }
        Ok(LayerSegment {
            layer,
            checks,
            update_z,
            update_limit: self.update_limit,
            recompute_s,
        })
    }
}

/// The committed rows' storage dtype (an opening holds f32, f16 or bf16 rows).
pub(crate) fn storage_dtype(dtype: DType) -> CompareDtype {
    match dtype {
        DType::BF16 => CompareDtype::Bf16,
        DType::F16 => CompareDtype::F16,
        _ => CompareDtype::F32,
    }
}

fn as_tensor(rows: &[Vec<f32>], model: &LoadedModel) -> Result<Tensor> {
    let hidden = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(
        flat,
        (rows.len(), hidden),
        model.model.device(),
    )?)
}

pub fn verify_segments(model: &LoadedModel, job: &SegmentJob<'_>) -> Result<SegmentOutput> {
    Ok(verify_segments_until(model, job, || false)?.0)
}

/// [`verify_segments`], asking `stop` before each challenged layer and before the token
/// checks; true when it stopped (the output then holds the layers done, no token checks).
pub fn verify_segments_until(
    model: &LoadedModel,
    job: &SegmentJob<'_>,
    mut stop: impl FnMut() -> bool,
) -> Result<(SegmentOutput, bool)> {
    let start = Instant::now();
    let mut stopped = false;
    let tm = &model.model;
    let opening = job.opening;
    let n_layers = tm.config.n_layers;
    ensure!(
        opening.shape.columns == n_layers + 1 && opening.shape.hidden == tm.config.hidden,
        "the opening's commitment has {} columns {} wide; the verifier's model has {} layers {} wide",
        opening.shape.columns,
        opening.shape.hidden,
        n_layers,
        tm.config.hidden
    );
    let prompt_len = job.prompt_ids.len();
    let sequence: Vec<u32> = job
        .prompt_ids
        .iter()
        .chain(job.output_ids)
        .copied()
        .collect();
    ensure!(
        sequence.len() == opening.shape.positions,
        "the commitment covers {} positions, the prompt and output have {}",
        opening.shape.positions,
        sequence.len()
    );
    let rule = LayerRule::of(
        model,
        job.inference_dtype,
        job.inference_native,
        job.policy,
        storage_dtype(opening.dtype),
    );
    let (tier, quantized_kernels) = (rule.judgement.tier, rule.judgement.quantized_kernels);
    let all: Vec<usize> = (0..sequence.len()).collect();
    // Column 0: the tokens' embeddings.
    let committed0 = opening.rows_f32(0, &all)?;
    let embedded: Vec<Vec<f32>> = tm.embed(&sequence)?.to_dtype(DType::F32)?.to_vec2()?;
    let embedding_checks = committed0
        .iter()
        .zip(&embedded)
        .enumerate()
        .map(|(p, (c, e))| rule.state_check(c, e, p, 0))
        .collect::<Result<Vec<_>>>()?;

    let mut segments = Vec::new();
    for &layer in &opening.challenge.layers {
        if stop() {
            stopped = true;
            break;
        }
        ensure!(layer < n_layers, "challenged layer {layer} of {n_layers}");
        let entering = opening.rows_f32(layer, &all)?;
        let leaving = opening.rows_f32(layer + 1, &all)?;
        segments.push(rule.check_layer(model, layer, &entering, &leaving)?);
    }

    let token_checks = match &job.tokens {
        None => None,
        Some(_) if stopped || stop() => {
            stopped = true;
            None
        }
        Some(rule) => {
            let tolerance = token_margin_tolerance(tier, quantized_kernels);
            let tokens: Vec<usize> = match &opening.challenge.token_positions {
                Some(p) => p.clone(),
                None => (0..job.output_ids.len()).collect(),
            };
            let rows: Vec<usize> = tokens.iter().map(|i| prompt_len - 1 + i).collect();
            let finals = opening.rows_f32(n_layers, &rows)?;
            let logits: Vec<Vec<f32>> = tm.final_logits(&as_tensor(&finals, model)?)?.to_vec2()?;
            let records = tokens
                .iter()
                .zip(&logits)
                .map(|(&i, row)| {
                    check_token(
                        rule,
                        row,
                        &sequence[..prompt_len + i],
                        i,
                        job.output_ids[i],
                        tolerance,
                    )
                })
                .collect();
            Some(TokenChecks {
                records,
                tolerance,
                stop_violation: stop_violation(rule, job.output_ids),
            })
        }
    };
    let output = SegmentOutput {
        segments,
        embedding_checks,
        token_checks,
        prompt_len,
        proofs_checked: opening.proofs_checked,
        bytes_received: opening.bytes_received,
        time_s: start.elapsed().as_secs_f64(),
        tier,
    };
    Ok((output, stopped))
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "segment_update_tests.rs"]
mod update_tests;

#[cfg(test)]
#[path = "segment_calibration_tests.rs"]
mod calibration_tests;
