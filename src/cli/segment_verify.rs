//! `verify BUNDLE --request R --opening DIR` (segment mode, docs/commitment.md): one
//! verifier's check of the opening it asked for — every proof against the root, the challenged
//! layers recomputed, the embeddings and the token checks — and, unless
//! `--no-reference-prefill`, one full prefill of prompt + output on the same model timed beside
//! it (a reference for the segment's cost, never part of the verdict).

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::verdict_code;
use crate::experiment::bundle::Manifest;
use crate::experiment::config::Role;
use crate::experiment::workspace::Workspace;
use crate::record::results::TrialVerdict;
use crate::stats::policy::PolicyConfig;

/// What the segment check of one bundle needs (the `verify` flags, resolved).
pub(super) struct SegmentCli<'a> {
    pub ws: &'a Workspace,
    pub role: &'a Role,
    pub policy: &'a PolicyConfig,
    pub cutoff: f64,
    pub native: bool,
    pub manifest: &'a Manifest,
    pub request: &'a crate::experiment::request::Request,
    pub bundle: &'a std::path::Path,
    pub opening_dir: &'a std::path::Path,
    pub json: bool,
    pub reference_prefill: bool,
}

pub(super) fn verify_segments_cli(cli: &SegmentCli<'_>) -> Result<ExitCode> {
    let SegmentCli {
        ws,
        role,
        policy,
        cutoff,
        native,
        manifest,
        request,
        bundle,
        opening_dir,
        json,
        reference_prefill,
    } = *cli;
    use crate::engine::segment::{verify_segments, SegmentJob};
    use crate::engine::verification::TokenRule;
    let commitment = manifest.checked_commitment(bundle)?;
    let opening = crate::engine::commitment::read_opening(
        opening_dir,
        commitment,
        &request.digest(),
        &request.nonce,
        manifest.prompt_ids.len(),
    )
    .with_context(|| format!("--opening {}", opening_dir.display()))?;
    let model = ws.load(role)?;
    let start = std::time::Instant::now();
    let job = SegmentJob {
        prompt_ids: &manifest.prompt_ids,
        output_ids: &manifest.output_ids,
        opening: &opening,
        inference_dtype: crate::stats::metrics::CompareDtype::from_name(&manifest.dtype)
            .unwrap_or(crate::stats::metrics::CompareDtype::F32),
        inference_native: native && manifest.precision == "native",
        policy,
        tokens: Some(TokenRule {
            sampling: &request.sampling,
            eos_ids: model.tokenizer.eos_ids(),
            output_complete: !manifest.cancelled,
        }),
    };
    let out = verify_segments(&model, &job)?;
    let time_s = start.elapsed().as_secs_f64();
    let full_prefill_s = if reference_prefill {
        crate::engine::reference_prefill::time_full_prefill(
            &model,
            &manifest.prompt_ids,
            &manifest.output_ids,
            crate::engine::verification::default_chunk(model.profile),
            &crate::engine::events::CancelToken::new(),
        )?
    } else {
        None
    };
    let recompute_s: f64 = out.segments.iter().map(|s| s.recompute_s).sum();
    let per_layer_s = recompute_s / out.segments.len().max(1) as f64;
    let pass = out.pass(cutoff);
    let tokens = out.token_checks.as_ref().expect("asked for token checks");
    let layers: Vec<serde_json::Value> = out
        .segments
        .iter()
        .map(|s| {
            serde_json::json!({
                "layer": s.layer,
                "checks": s.checks.len(),
                "accepted": s.accepted(),
                "recompute_s": s.recompute_s,
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "mode": "segment",
                "request_checked": true,
                "request_sha256": request.digest(),
                "root": commitment.root,
                "secret": opening.challenge.secret,
                "challenged_layers": opening.challenge.layers,
                "token_positions": opening.challenge.token_positions,
                "proofs_checked": out.proofs_checked,
                "bytes_received": out.bytes_received,
                "segments": layers,
                "embedding_rows_accepted": out.embedding_checks.iter().filter(|c| c.accept).count(),
                "embedding_rows": out.embedding_checks.len(),
                "state_accept_rate": out.accept_rate(),
                "tokens_accepted": tokens.accepted(),
                "tokens_checked": tokens.records.len(),
                "token_stop_violation": tokens.stop_violation,
                "time_s": time_s,
                "full_prefill_s": full_prefill_s,
                "segment_to_full_prefill": full_prefill_s.map(|f| time_s / f),
                "layer_to_full_prefill": full_prefill_s.map(|f| per_layer_s / f),
                "verdict": if pass { "PASS" } else { "REJECT" },
            }))?
        );
    } else {
        println!(
            "challenged layers {:?} (secret {}), {} proofs checked, {} bytes received",
            opening.challenge.layers,
            opening.challenge.secret,
            out.proofs_checked,
            out.bytes_received
        );
        for s in &out.segments {
            println!(
                "  layer {:>3}: {}/{} positions accepted, recomputed in {:.3} s",
                s.layer,
                s.accepted(),
                s.checks.len(),
                s.recompute_s
            );
        }
        println!(
            "  embeddings {}/{} rows, tokens {}/{} accepted{}",
            out.embedding_checks.iter().filter(|c| c.accept).count(),
            out.embedding_checks.len(),
            tokens.accepted(),
            tokens.records.len(),
            tokens
                .stop_violation
                .as_ref()
                .map_or_else(String::new, |s| format!(", stop rule: {s}"))
        );
        match full_prefill_s {
            Some(full) => println!(
                "  segment verification {time_s:.3} s, a challenged layer {per_layer_s:.3} s; a \
                 full prefill {full:.3} s (segment {:.2}×, a layer {:.3}×)",
                time_s / full,
                per_layer_s / full
            ),
            None => println!(
                "  segment verification {time_s:.3} s, a challenged layer {per_layer_s:.3} s"
            ),
        }
        println!(
            "verdict: {}  mode: segment  request_checked: true",
            if pass { "PASS" } else { "REJECT" }
        );
    }
    Ok(verdict_code(if pass {
        TrialVerdict::Pass
    } else {
        TrialVerdict::Reject
    }))
}
