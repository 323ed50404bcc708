//! The commit–challenge–open protocol inside an experiment run (`run --mode segment`, or
//! `mode: segment` in experiments.yaml; docs/commitment.md). The inferencer keeps every
//! column of the residual stream in a private store and commits to its Merkle root; each
//! verifier draws its own challenge from the root, the request's nonce and a fresh secret of
//! its own; the inferencer opens what was drawn; the verifier checks every proof and
//! recomputes the challenged layers alone. Only the opening reaches a verifier, never the
//! store. Full mode (one prefill per verifier over the shipped states) stays the default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, ensure, Context, Result};

use tokio::task::JoinSet;

use super::bundle::{write_root_only_bundle, Manifest};
use super::config::VerificationMode;
use super::output::{trial_dir_name, write_trial};
use super::plan::{segment_settings, SegmentSettings, TrialPlan};
use super::trial::{
    assemble_trial, check_same_model, infer_trial_with, verified_texts, VerifySettings,
};
use super::workspace::Workspace;
use crate::engine::capture::CapturedStates;
use crate::engine::commitment::{self, Challenge};
use crate::engine::events::{CancelToken, EngineEvent, EventSink, LogLevel};
use crate::engine::reference_prefill::time_full_prefill;
use crate::engine::segment::SegmentOutput;
use crate::engine::segment_steps::{verify_segments_stepwise, SegmentInputs, SteppedSegments};
use crate::engine::verification::{default_chunk, TokenRule, VerificationOutput};
use crate::model::device::dtype_name;
use crate::record::results::*;
use crate::record::segment_result::{LayerUpdateRecord, SegmentLayerRecord, SegmentRecord};
use crate::stats::metrics::CompareDtype;
use crate::util::unix_now;

/// A verifier's secret: 32 bytes from the operating system's generator, its own and fresh for
/// every challenge (revealed afterwards in the result).
pub fn new_secret() -> Vec<u8> {
    use rand::TryRngCore;
    let mut bytes = vec![0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random generator failed");
    bytes
}

/// The verifier's side of the draw: its challenge for a committed manifest.
pub fn draw_challenge(
    manifest: &Manifest,
    secret: &[u8],
    settings: SegmentSettings,
) -> Result<Challenge> {
    let c = manifest
        .commitment
        .as_ref()
        .context("the inference kept no commitment")?;
    let request = manifest
        .request
        .as_ref()
        .context("the manifest names no request")?;
    commitment::derive_challenge(
        &c.root,
        &request.nonce,
        secret,
        manifest.model.n_layers,
        settings.layers,
        manifest.output_ids.len(),
        settings.token_positions,
    )
}

/// One trial of `run` in segment mode: inference with the commitment store, then (unless only
/// the inference half runs, or it was cancelled) one challenge per verifier, its opening, and
/// the verification of that opening. The openings are written under the results directory
/// (as they would travel) and removed once verified.
pub(super) async fn run_segment_trial(
    ws: Arc<Workspace>,
    plan: TrialPlan,
    settings: SegmentSettings,
    infer_only: bool,
    out_dir: &Path,
    sink: EventSink,
    cancel: CancelToken,
) -> Result<Option<TrialResult>> {
    let started_at = unix_now();
    let (ws2, plan2, sink2, cancel2) = (ws.clone(), plan.clone(), sink.clone(), cancel.clone());
    let (manifest, states, store) = tokio::task::spawn_blocking(move || {
        infer_trial_with(&ws2, &plan2, None, &sink2, &cancel2, true)
    })
    .await
    .map_err(|e| anyhow!("inference task failed: {e}"))??;
    let store = store.expect("asked for the commitment store");
    let cancelled = cancel.is_cancelled();
    if infer_only || cancelled {
        let dir = out_dir.join(trial_dir_name(plan.trial));
        let tokens = manifest.output_ids.len();
        let root = manifest
            .commitment
            .as_ref()
            .map(|c| c.root.clone())
            .unwrap_or_default();
        // The root stands for the states: the bundle ships none (docs/commitment.md).
        let _ = states;
        write_root_only_bundle(&dir, manifest)?;
        commitment::write_store(&dir, &store)?;
        sink.log(
            LogLevel::Info,
            format!(
                "trial {}: {}bundle with root {root} and its private store written to {}",
                plan.trial,
                if cancelled {
                    format!("cancelled after {tokens} tokens; ")
                } else {
                    String::new()
                },
                dir.display()
            ),
        );
        return Ok(None);
    }
    let manifest = Arc::new(manifest);
    let openings_dir = out_dir.join(format!(".openings-{}", trial_dir_name(plan.trial)));
    let openings = {
        let (manifest, dir) = (manifest.clone(), openings_dir.clone());
        let verifiers = plan.verifiers.len();
        tokio::task::spawn_blocking(move || {
            answer_challenges(&manifest, &store, settings, verifiers, &dir)
        })
        .await
        .map_err(|e| anyhow!("opening task failed: {e}"))??
    };
    // A lazy verifier fabricates a full-mode report; segment mode has no such simulation, so
    // an experiment asking for one is refused rather than silently verified honestly.
    ensure!(
        !plan.lazy_verifiers.iter().any(|&lazy| lazy),
        "{}: lazy verifiers (verifiers[].lazy) are simulated in full mode only; run it with --mode full",
        plan.experiment
    );
    let verify_settings = VerifySettings {
        lazy: Vec::new(),
        verifiers: plan.verifiers.clone(),
        policy: plan.policy.clone(),
        cutoff: plan.cutoff,
        expected: plan.expected,
        chunk: plan.chunk,
        trust_native_claim: true,
        token_sampling: Some(plan.sampling.clone()),
    };
    let result = verify_trial_segments(
        ws,
        manifest,
        openings,
        &verify_settings,
        settings.reference_prefill,
        plan.prompt.clone(),
        sink.clone(),
        cancel,
    )
    .await;
    // The openings were the verifiers' input; the secrets in the result reproduce them from
    // the store.
    let _ = std::fs::remove_dir_all(&openings_dir);
    let mut result = result?;
    result.started_at = started_at;
    result.request_checked = true;
    write_trial(out_dir, &result)?;
    sink.emit(EngineEvent::TrialDone {
        trial: plan.trial,
        result: Box::new(result.clone()),
    });
    Ok(Some(result))
}

/// Both sides of the exchange in one process: each verifier draws its challenge with a fresh
/// secret, and the inferencer answers it from its store with an opening in `dir/verifier_N`.
pub(super) fn answer_challenges(
    manifest: &Manifest,
    store: &CapturedStates,
    settings: SegmentSettings,
    verifiers: usize,
    dir: &Path,
) -> Result<Vec<(Challenge, PathBuf)>> {
    let c = manifest
        .commitment
        .as_ref()
        .context("the inference kept no commitment")?;
    let (again, tree) = commitment::commit(store, &c.request_sha256)?;
    ensure!(
        again.root == c.root,
        "the store no longer hashes to the committed root"
    );
    (0..verifiers)
        .map(|index| {
            let challenge = draw_challenge(manifest, &new_secret(), settings)?;
            let out = dir.join(format!("verifier_{}", index + 1));
            commitment::write_opening(
                &out,
                c,
                store,
                &tree,
                &challenge,
                manifest.prompt_ids.len(),
            )?;
            Ok((challenge, out))
        })
        .collect()
}

/// The verification half in segment mode: verifier i reads opening i (untrusted: every proof
/// checked against the manifest's root, the challenge held to the one it drew) and recomputes
/// its challenged layers, all verifiers concurrently. With `reference_prefill`, the first
/// verifier of each role also times one full prefill of prompt + output on its model after its
/// segments (docs/commitment.md), recorded beside its segment time for every verifier of that
/// role. A cancel stops each verifier between steps; what it finished is kept, marked incomplete.
#[allow(clippy::too_many_arguments)]
pub async fn verify_trial_segments(
    ws: Arc<Workspace>,
    manifest: Arc<Manifest>,
    openings: Vec<(Challenge, PathBuf)>,
    settings: &VerifySettings,
    reference_prefill: bool,
    prompt: PromptInfo,
    sink: EventSink,
    cancel: CancelToken,
) -> Result<TrialResult> {
    let started_at = unix_now();
    ensure!(
        openings.len() == settings.verifiers.len(),
        "{} openings for {} verifiers",
        openings.len(),
        settings.verifiers.len()
    );
    let trial = manifest.context.as_ref().map_or(0, |c| c.trial);
    let texts = verified_texts(&ws, &manifest, settings, &sink).await?;
    let commitment = manifest
        .commitment
        .clone()
        .context("the manifest carries no commitment")?;
    let request = manifest
        .request
        .clone()
        .context("the manifest names no request")?;
    let inference_dtype = CompareDtype::from_name(&manifest.dtype).unwrap_or(CompareDtype::F32);
    let mut tasks = JoinSet::new();
    for (index, (role, (drawn, dir))) in
        settings.verifiers.iter().cloned().zip(openings).enumerate()
    {
        let (ws, manifest, sink, cancel) =
            (ws.clone(), manifest.clone(), sink.clone(), cancel.clone());
        let (commitment, request) = (commitment.clone(), request.clone());
        let policy = settings.policy.clone();
        let trust_native = settings.trust_native_claim;
        let token_sampling = settings.token_sampling.clone();
        let time_reference = reference_prefill && !settings.verifiers[..index].contains(&role);
        let chunk = settings.chunk;
        tasks.spawn_blocking(
            move || -> Result<(usize, RoleSpec, SteppedSegments, Challenge, Option<f64>)> {
                let model = ws.load_reporting(&role, &sink)?;
                check_same_model(&manifest, &model)?;
                sink.emit(EngineEvent::VerifierStarted {
                    trial,
                    verifier: index,
                });
                let opening = commitment::read_opening(
                    &dir,
                    &commitment,
                    &request.digest(),
                    &request.nonce,
                    manifest.prompt_ids.len(),
                )
                .with_context(|| format!("verifier {}: opening {}", index + 1, dir.display()))?;
                ensure!(
                opening.challenge == drawn,
                "verifier {}: the opening answers layers {:?}, not the challenge it drew ({:?})",
                index + 1,
                opening.challenge.layers,
                drawn.layers
            );
                let challenge = opening.challenge.clone();
                let inputs = SegmentInputs {
                    prompt_ids: &manifest.prompt_ids,
                    output_ids: &manifest.output_ids,
                    inference_dtype,
                    inference_native: trust_native && manifest.precision == "native",
                    policy: &policy,
                    tokens: token_sampling.as_ref().map(|sampling| TokenRule {
                        sampling,
                        eos_ids: model.tokenizer.eos_ids(),
                        output_complete: !manifest.cancelled,
                    }),
                };
                let out = verify_segments_stepwise(&model, opening, inputs, &cancel)?;
                let full_prefill = match time_reference {
                    true => time_full_prefill(
                        &model,
                        &manifest.prompt_ids,
                        &manifest.output_ids,
                        chunk.unwrap_or_else(|| default_chunk(model.profile)),
                        &cancel,
                    )?,
                    false => None,
                };
                let spec = RoleSpec {
                    model: role.model.clone(),
                    precision: role.precision.to_string(),
                    device: role.device.device_name(),
                    dtype: dtype_name(model.compute_dtype()).to_string(),
                };
                Ok((index, spec, out, challenge, full_prefill))
            },
        );
    }
    let mut outputs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, spec, stepped, challenge, full_prefill) =
            joined.map_err(|e| anyhow!("a verifier task failed: {e}"))??;
        let (out, cancelled) = (stepped.output, stepped.cancelled);
        let pass = out.pass(settings.cutoff);
        sink.emit(EngineEvent::VerifierDone {
            trial,
            verifier: index,
            accept_rate: out.accept_rate(),
            verdict: if pass { Verdict::Pass } else { Verdict::Fail },
            overhead_percentage: 100.0 * out.time_s / manifest.timings.total_s.max(1e-9),
        });
        outputs.push((index, spec, out, challenge, cancelled, full_prefill));
    }
    outputs.sort_by_key(|o| o.0);
    // The reference prefill timed by the first verifier of each role stands for that role.
    let prefill_of = |index: usize| {
        let role = &settings.verifiers[index];
        let first = settings.verifiers.iter().position(|r| r == role)?;
        outputs.iter().find(|o| o.0 == first)?.5
    };
    let prompt_len = manifest.prompt_ids.len();
    let records: Vec<(SegmentRecord, bool)> = outputs
        .iter()
        .map(|(index, _, out, challenge, _, _)| {
            let mut record = segment_record(out, challenge, settings.cutoff);
            record.set_full_prefill(prefill_of(*index));
            (record, out.pass(settings.cutoff))
        })
        .collect();
    let converted = outputs
        .into_iter()
        .map(|(index, spec, out, _, cancelled, _)| {
            (
                index,
                spec,
                as_verification_output(out, prompt_len, cancelled, settings),
            )
        })
        .collect();
    let mut result = assemble_trial(
        &manifest,
        texts.output,
        0,
        settings,
        prompt,
        started_at,
        converted,
    );
    for (verifier, (record, pass)) in result.verifiers.iter_mut().zip(records) {
        verifier.verdict = if pass { Verdict::Pass } else { Verdict::Fail };
        verifier.segment = Some(record);
    }
    // The hidden-state indices checked by any verifier: l + 1 for each challenged layer l.
    let mut columns: Vec<usize> = result
        .verifiers
        .iter()
        .flat_map(|v| v.statistics.checks.iter().map(|c| c.layer))
        .collect();
    columns.sort_unstable();
    columns.dedup();
    result.sampled_layers = columns;
    redecide(&mut result, settings.expected);
    Ok(result)
}

fn segment_record(out: &SegmentOutput, challenge: &Challenge, cutoff: f64) -> SegmentRecord {
    let failed = out.failed_layers(cutoff);
    SegmentRecord {
        root: challenge.root.clone(),
        nonce: challenge.nonce.clone(),
        secret: challenge.secret.clone(),
        n_layers: challenge.n_layers,
        challenged_layers: challenge.layers.clone(),
        token_positions: challenge.token_positions.clone(),
        proofs_checked: out.proofs_checked,
        bytes_received: out.bytes_received,
        layers: out
            .segments
            .iter()
            .map(|s| SegmentLayerRecord {
                layer: s.layer,
                positions: s.checks.len(),
                accepted: s.accepted(),
                recompute_s: s.recompute_s,
                pass: !failed.contains(&s.layer),
                update: Some(layer_update_record(s)),
            })
            .collect(),
        embedding_rows: out.embedding_checks.len(),
        embedding_rows_accepted: out.embedding_checks.iter().filter(|c| c.accept).count(),
        recompute_s: out.segments.iter().map(|s| s.recompute_s).sum(),
        time_s: out.time_s,
        full_prefill_s: None,
        segment_to_full_prefill: None,
        layer_to_full_prefill: None,
    }
}

fn layer_update_record(s: &crate::engine::segment::LayerSegment) -> LayerUpdateRecord {
    let (z_median, z_max) = s.update_z_summary();
    LayerUpdateRecord {
        accepted: s.update_accepted(),
        z_median,
        z_max,
        limit: s.update_limit,
    }
}

/// The segment checks in the shape of a full verification's, for the trial file and every
/// view of it: the checks at generated positions (index among the generated tokens, at
/// hidden-state index l + 1). The prompt positions' checks count in the verdict and in
/// `segment.layers[]`.
fn as_verification_output(
    out: SegmentOutput,
    prompt_len: usize,
    cancelled: bool,
    settings: &VerifySettings,
) -> VerificationOutput {
    let generated = |c: &CheckRecord| {
        (c.position >= prompt_len).then(|| CheckRecord {
            position: c.position - prompt_len,
            ..c.clone()
        })
    };
    let (inference_tier, verifier_tier) = (out.tier, out.tier);
    VerificationOutput {
        checks: out.state_checks().filter_map(generated).collect(),
        embedding_checks: out.embedding_checks.iter().filter_map(generated).collect(),
        time_s: out.time_s,
        compare_s: 0.0,
        cancelled,
        tier: out.tier,
        limits: settings
            .policy
            .tier_thresholds(inference_tier, verifier_tier),
        token_checks: out.token_checks,
    }
}

/// The trial's verdict from its verifiers' (a majority must pass), after segment mode set
/// each verifier's verdict per challenged layer.
fn redecide(result: &mut TrialResult, expected: TrialVerdict) {
    let passes = result
        .verifiers
        .iter()
        .filter(|v| v.verdict == Verdict::Pass)
        .count();
    let final_verdict = if passes * 2 > result.verifiers.len() {
        TrialVerdict::Pass
    } else {
        TrialVerdict::Reject
    };
    result.summary.final_verdict = final_verdict;
    result.summary.expectation_held = final_verdict == expected;
    result.summary.detected =
        (expected == TrialVerdict::Reject).then_some(final_verdict == TrialVerdict::Reject);
}

/// Where a verifier's challenge waits for the inferencer, inside a bundle of `--step infer`.
pub const CHALLENGES_DIR: &str = "challenges";
/// Where the inferencer's openings wait for the verifiers, inside the same bundle.
pub const OPENINGS_DIR: &str = "openings";
/// A challenge file: a few hundred bytes, up to a few KB with a drawn subset of tokens.
const MAX_CHALLENGE_BYTES: u64 = 1 << 20;

fn verifier_name(index: usize) -> String {
    format!("verifier_{}", index + 1)
}

/// The `trial_*` bundle directories of `from` (plain directories only), sorted.
fn bundle_dirs(from: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(from)
        .with_context(|| format!("reading bundle directory {}", from.display()))?
    {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("trial_")
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    ensure!(
        !dirs.is_empty(),
        "{}: no trial_* bundle directories",
        from.display()
    );
    Ok(dirs)
}

/// `run --step challenge --from DIR` (the verifiers' machine, after `--step infer`): each of
/// the experiment's verifiers draws its challenge for every bundle with a fresh secret of its
/// own, written to `trial_*/challenges/verifier_N.json` for the inferencer to answer. A
/// challenge already drawn is never drawn again (that would let the inferencer pick).
pub(super) fn draw_challenges(
    ws: &Workspace,
    req: &super::plan::RunRequest,
    from: &Path,
    sink: &EventSink,
) -> Result<usize> {
    let mut drawn = 0;
    for dir in bundle_dirs(from)? {
        drawn += draw_bundle_challenges(ws, req, &dir, sink)?;
    }
    Ok(drawn)
}

/// The challenges of one bundle directory, one per verifier of the experiment (see
/// [`draw_challenges`]); how many were drawn.
pub(super) fn draw_bundle_challenges(
    ws: &Workspace,
    req: &super::plan::RunRequest,
    dir: &Path,
    sink: &EventSink,
) -> Result<usize> {
    let spec = ws
        .config
        .experiments
        .get(&req.experiment)
        .ok_or_else(|| anyhow!("unknown experiment `{}`", req.experiment))?;
    let settings = segment_settings(spec, &with_segment(req))?.expect("segment mode");
    let (_, verifiers) = super::plan::resolve_roles(spec, req)?;
    let manifest = super::bundle::read_manifest(dir)?;
    manifest.checked_commitment(dir)?;
    let out = dir.join(CHALLENGES_DIR);
    ensure!(
        !out.exists(),
        "{}: challenges were already drawn for this bundle; a verifier draws once per \
         commitment",
        out.display()
    );
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for index in 0..verifiers.len() {
        let challenge = draw_challenge(&manifest, &new_secret(), settings)
            .with_context(|| dir.display().to_string())?;
        let path = out.join(format!("{}.json", verifier_name(index)));
        crate::util::write_file_atomic(&path, &serde_json::to_vec_pretty(&challenge)?)?;
        sink.log(
            LogLevel::Info,
            format!(
                "{}: {} challenges layers {:?}",
                dir.display(),
                verifier_name(index),
                challenge.layers
            ),
        );
    }
    Ok(verifiers.len())
}

/// `run --step open --from DIR` (the inferencer's machine): answers every challenge found in
/// `trial_*/challenges/` from the bundle's private store, into `trial_*/openings/verifier_N/`.
pub(super) fn open_challenges(from: &Path, sink: &EventSink) -> Result<usize> {
    let mut opened = 0;
    for dir in bundle_dirs(from)? {
        opened += open_bundle_challenges(&dir, sink)?;
    }
    Ok(opened)
}

/// The openings of one bundle directory's challenges (see [`open_challenges`]); how many.
pub(super) fn open_bundle_challenges(dir: &Path, sink: &EventSink) -> Result<usize> {
    let mut opened = 0;
    let manifest = super::bundle::read_manifest(dir)?;
    let commitment = manifest.checked_commitment(dir)?;
    let challenges = dir.join(CHALLENGES_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&challenges)
        .with_context(|| format!("{}: no challenges to answer", challenges.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (store, tree) = commitment::read_store(dir, commitment)?;
    for file in files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        // Only names this program writes: a name is a directory created below.
        ensure!(
            name.strip_prefix("verifier_").is_some_and(|n| !n.is_empty()
                && n.len() <= 3
                && n.bytes().all(|b| b.is_ascii_digit())),
            "{}: not a challenge file name (verifier_N.json)",
            file.display()
        );
        let bytes = crate::util::read_untrusted_file(&file, MAX_CHALLENGE_BYTES)?;
        let challenge: Challenge = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a challenge", file.display()))?;
        let out = crate::util::create_empty_dir(&dir.join(OPENINGS_DIR).join(&name), "opening")?;
        let bytes = commitment::write_opening(
            out.path(),
            commitment,
            &store,
            &tree,
            &challenge,
            manifest.prompt_ids.len(),
        )
        .with_context(|| file.display().to_string())?;
        drop(out);
        sink.log(
            LogLevel::Info,
            format!(
                "{}: opened layers {:?} for {name} ({bytes} bytes)",
                dir.display(),
                challenge.layers
            ),
        );
        opened += 1;
    }
    Ok(opened)
}

fn with_segment(req: &super::plan::RunRequest) -> super::plan::RunRequest {
    super::plan::RunRequest {
        mode: Some(VerificationMode::Segment),
        ..req.clone()
    }
}

/// `run --step verify --mode segment`: the openings the inferencer returned for one bundle,
/// each held to the challenge this verifier drew (`challenges/verifier_N.json`, kept on the
/// verifier's machine).
#[allow(clippy::too_many_arguments)]
pub(super) async fn verify_bundle_openings(
    ws: Arc<Workspace>,
    dir: &Path,
    manifest: Manifest,
    settings: &VerifySettings,
    reference_prefill: bool,
    prompt: PromptInfo,
    sink: EventSink,
    cancel: CancelToken,
) -> Result<TrialResult> {
    let mut openings = Vec::new();
    for index in 0..settings.verifiers.len() {
        let name = verifier_name(index);
        let path = dir.join(CHALLENGES_DIR).join(format!("{name}.json"));
        let bytes = crate::util::read_untrusted_file(&path, MAX_CHALLENGE_BYTES)
            .with_context(|| format!("{name}'s challenge (`run --step challenge` draws it)"))?;
        let drawn: Challenge = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a challenge", path.display()))?;
        let opening = dir.join(OPENINGS_DIR).join(&name);
        ensure!(
            opening.join(commitment::OPENING_FILE).is_file(),
            "{}: no opening for {name} (`run --step open` on the inferencer's machine writes it)",
            opening.display()
        );
        openings.push((drawn, opening));
    }
    verify_trial_segments(
        ws,
        Arc::new(manifest),
        openings,
        settings,
        reference_prefill,
        prompt,
        sink,
        cancel,
    )
    .await
}

/// `run --step challenge|open --from DIR`: one side of the exchange over every bundle of DIR,
/// written into the bundles themselves (no results, no summary).
pub(super) fn exchange_step(
    ws: &Workspace,
    req: &super::plan::RunRequest,
    sink: &EventSink,
) -> Result<super::output::RunOutcome> {
    use super::plan::RunStep;
    let from = req
        .from
        .as_ref()
        .ok_or_else(|| anyhow!("--step challenge and --step open need --from DIR (the bundles)"))?;
    let what = match req.step {
        RunStep::Challenge => format!("{} challenges drawn", draw_challenges(ws, req, from, sink)?),
        RunStep::Open => format!("{} openings written", open_challenges(from, sink)?),
        _ => unreachable!("only the exchange steps"),
    };
    sink.log(
        LogLevel::Info,
        format!("{}: {what} in {}", req.experiment, from.display()),
    );
    Ok(super::output::RunOutcome {
        summary: None,
        summary_path: None,
        trials: Vec::new(),
        out_dir: from.clone(),
    })
}
