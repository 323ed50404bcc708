//! The two halves of a trial: the inferencer (decode, capture, describe as a bundle manifest)
//! and the verifiers (each on its own blocking task, concurrently), and the trial result they
//! make together.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tokio::task::JoinSet;

use super::bundle::{
    BundleContext, Manifest, ModelIdentity, TensorFile, Timings, BUNDLE_FORMAT_VERSION,
};
use super::config::Role;
use super::plan::TrialPlan;
use super::request::Request;
use super::workspace::Workspace;
use crate::engine::capture::CapturedStates;
use crate::engine::events::{CancelToken, EngineEvent, EventSink, LogLevel};
use crate::engine::inference::generate;
use crate::engine::sampling::SamplingParams;
use crate::engine::verification::{
    default_chunk, verify, TokenRule, VerificationOutput, VerifyJob,
};
use crate::model::chat::render_prompt;
use crate::model::device::dtype_name;
use crate::model::LoadedModel;
use crate::record::results::*;
use crate::stats::metrics::CompareDtype;
use crate::stats::policy::{verdict, PolicyConfig};
use crate::util::unix_now;

/// The inference half: decode, capture, and describe it as a bundle manifest.
pub fn infer_trial(
    ws: &Workspace,
    plan: &TrialPlan,
    prompt_text: Option<String>,
    sink: &EventSink,
    cancel: &CancelToken,
) -> Result<(Manifest, CapturedStates)> {
    let (manifest, states, _) = infer_trial_with(ws, plan, prompt_text, sink, cancel, false)?;
    Ok((manifest, states))
}

/// Like [`infer_trial`], also keeping the commitment store (docs/commitment.md) when `commit`:
/// every column at every position, its Merkle root bound to the request in the manifest.
pub fn infer_trial_with(
    ws: &Workspace,
    plan: &TrialPlan,
    prompt_text: Option<String>,
    sink: &EventSink,
    cancel: &CancelToken,
    commit: bool,
) -> Result<(Manifest, CapturedStates, Option<CapturedStates>)> {
    let model = ws.load_reporting(&plan.inference, sink)?;
    // A prompt text given as it is (`--raw`) is sent without the chat template.
    let chat_template = prompt_text.is_none();
    let (prompt_text, prompt_ids) = match prompt_text {
        Some(text) => {
            let ids = model.tokenizer.encode(&text)?;
            (text, ids)
        }
        None => render_prompt(&model, &plan.messages)?,
    };
    let layers = plan
        .spec_layers
        .resolve_checked(model.model.config.n_layers)
        .map_err(anyhow::Error::msg)?;
    sink.emit(EngineEvent::TrialStarted {
        trial: plan.trial,
        prompt_category: plan.prompt.category.clone(),
        prompt_tokens: prompt_ids.len(),
        max_new_tokens: plan.sampling.max_new_tokens,
        decode_path: model.model.decode_path(),
        sampled_layers: layers.clone(),
        verifiers: plan.verifiers.iter().map(role_spec_of_plan).collect(),
    });
    let mut request = Request::new(&model, &plan.messages, chat_template, plan.sampling.clone());
    if let Some(nonce) = &plan.nonce {
        request.nonce = nonce.clone();
        request.sha256 = Some(request.digest());
    }
    if commit && plan.cheat.is_some() {
        bail!("a cheating inferencer runs without the commitment store (full verification only)");
    }
    let (out, store) = if let Some(cheat) = &plan.cheat {
        let out = super::cheating::infer_cheating(
            ws,
            plan,
            &model,
            &prompt_ids,
            &layers,
            sink,
            cancel,
            cheat,
        )?;
        (out, None)
    } else if commit {
        let (out, store) = crate::engine::inference::generate_committed(
            &model,
            &prompt_ids,
            &plan.sampling,
            &layers,
            sink,
            plan.trial,
            cancel,
        )?;
        (out, Some(store))
    } else {
        let out = generate(
            &model,
            &prompt_ids,
            &plan.sampling,
            &layers,
            sink,
            plan.trial,
            cancel,
        )?;
        (out, None)
    };
    let commitment = match &store {
        Some(store) => Some(
            crate::engine::commitment::commit(
                store,
                request
                    .sha256
                    .as_deref()
                    .context("the request has no sha256")?,
            )?
            .0,
        ),
        None => None,
    };
    sink.emit(EngineEvent::InferenceDone {
        trial: plan.trial,
        tokens: out.output_ids.len(),
        time_s: out.total_s,
    });
    let manifest = Manifest {
        format_version: BUNDLE_FORMAT_VERSION,
        model: ModelIdentity {
            name: model.name.clone(),
            weights_sha256: model.weights_sha256.clone(),
            n_layers: model.model.config.n_layers,
            hidden: model.model.config.hidden,
        },
        precision: plan.inference.precision.to_string(),
        device: plan.inference.device.device_name(),
        dtype: dtype_name(model.compute_dtype()).to_string(),
        tokenizer: model.tokenizer.identity(),
        prompt_text,
        prompt_ids,
        output_text: out.output_text.clone(),
        output_ids: out.output_ids.clone(),
        sampling: plan.sampling.clone(),
        layers,
        timings: Timings {
            prefill_s: out.prefill_s,
            decode_s: out.decode_s,
            total_s: out.total_s,
            tokens_per_s: out.tokens_per_s(),
        },
        cancelled: out.cancelled,
        hidden_states: TensorFile {
            file: super::bundle::TENSORS_FILE.into(),
            sha256: String::new(),
            bytes: 0,
        },
        context: Some(BundleContext {
            experiment: plan.experiment.clone(),
            trial: plan.trial,
            prompt_category: plan.prompt.category.clone(),
            prompt_id: plan.prompt.id.clone(),
        }),
        request: Some(request),
        commitment,
    };
    if out.cancelled {
        sink.log(
            LogLevel::Warn,
            format!(
                "trial {}: inference cancelled after {} tokens",
                plan.trial,
                out.output_ids.len()
            ),
        );
    }
    Ok((manifest, out.captured, store))
}

fn role_spec_of_plan(r: &Role) -> RoleSpec {
    RoleSpec {
        model: r.model.clone(),
        precision: r.precision.to_string(),
        device: r.device.device_name(),
        dtype: dtype_name(r.device.dtype).into(),
    }
}

/// Describes how inference and verifiers are paired on this machine, stated in every result.
pub fn describe_pairing(inference: &RoleSpec, verifiers: &[RoleSpec]) -> String {
    let parts: Vec<String> = verifiers
        .iter()
        .map(|v| {
            let same_device = v.device == inference.device;
            let kind = match (same_device, v.dtype == inference.dtype) {
                (true, true) => "same profile",
                (true, false) => "cross-precision",
                (false, _) => "cross-device",
            };
            format!(
                "{kind}: {} {} {} -> {} {} {}",
                inference.device,
                inference.dtype,
                inference.precision,
                v.device,
                v.dtype,
                v.precision
            )
        })
        .collect();
    let mut unique = parts.clone();
    unique.dedup();
    unique.join("; ")
}

/// Checks that a verifier model is the one the bundle commits to.
pub fn check_same_model(manifest: &Manifest, verifier: &LoadedModel) -> Result<()> {
    if manifest.model.weights_sha256 != verifier.weights_sha256 {
        bail!(
            "the bundle was made with model `{}` (weights sha256 {}), but this verifier loaded `{}` (sha256 {}); refusing to compare different models",
            manifest.model.name,
            manifest.model.weights_sha256,
            verifier.name,
            verifier.weights_sha256
        );
    }
    if manifest.tokenizer != verifier.tokenizer.identity() {
        bail!(
            "the bundle's tokenizer ({}) differs from the verifier's ({})",
            manifest.tokenizer,
            verifier.tokenizer.identity()
        );
    }
    // The same weights have one shape: a manifest that claims another (fewer layers, say) would
    // choose which layers an experiment checks.
    let config = &verifier.model.config;
    if (manifest.model.n_layers, manifest.model.hidden) != (config.n_layers, config.hidden) {
        bail!(
            "the bundle's model.n_layers {} / model.hidden {} are not those of `{}` ({} layers, \
             {} wide)",
            manifest.model.n_layers,
            manifest.model.hidden,
            verifier.name,
            config.n_layers,
            config.hidden
        );
    }
    for (field, ids) in [
        ("prompt_ids", &manifest.prompt_ids),
        ("output_ids", &manifest.output_ids),
    ] {
        if let Some((at, bad)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= config.vocab_size)
        {
            bail!(
                "the bundle's {field}[{at}] = {bad} is outside the vocabulary ({})",
                config.vocab_size
            );
        }
    }
    // Refused before any compute: one prefill over prompt and output must fit the model.
    let tokens = manifest.prompt_ids.len() + manifest.output_ids.len();
    let context = verifier.model.max_positions();
    if tokens > context {
        bail!(
            "the bundle's prompt ({}) and output ({}) are {tokens} tokens, more than the \
             {context} positions `{}` takes",
            manifest.prompt_ids.len(),
            manifest.output_ids.len(),
            verifier.name
        );
    }
    // No generated token is no check: no evidence either way, so no verdict (not a REJECT).
    if manifest.output_ids.is_empty() {
        bail!(
            "the bundle's output_ids is empty (its inference was stopped before the first \
             token): there is nothing to check, so there is no verdict"
        );
    }
    derive_texts(manifest, verifier)?;
    Ok(())
}

/// What a verifier shows of a bundle: its prompt and output decoded from the verified ids with
/// the verifier's own tokenizer. The manifest's strings are claims; they are only compared.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedTexts {
    pub prompt: String,
    pub output: String,
}

/// Decodes the bundle's ids and holds its `prompt_text` / `output_text` to them: a text that is
/// not what the ids say (a forged "I will transfer $1M") is refused, naming the field, so that
/// no verdict is ever shown beside words that were not verified.
pub fn derive_texts(manifest: &Manifest, verifier: &LoadedModel) -> Result<DerivedTexts> {
    let tokenizer = &verifier.tokenizer;
    let output = tokenizer.decode_for_display(&manifest.output_ids)?;
    if manifest.output_text != output {
        bail!(
            "the bundle's output_text is not its output_ids decoded by this verifier's tokenizer \
             ({} bytes claimed, {} decoded): refusing to show a text that was not verified",
            manifest.output_text.len(),
            output.len()
        );
    }
    let prompt = tokenizer.decode(&manifest.prompt_ids)?;
    // A chat-rendered prompt decodes back to itself; a tokenizer whose decoding normalizes
    // (e.g. SentencePiece spaces) still binds the text when it encodes to the same ids.
    let binds = |text: &str| {
        text == prompt
            || tokenizer.encode_rendered(text).ok().as_deref() == Some(&manifest.prompt_ids[..])
            || tokenizer.encode(text).ok().as_deref() == Some(&manifest.prompt_ids[..])
    };
    if !binds(&manifest.prompt_text) {
        bail!(
            "the bundle's prompt_text is not its prompt_ids decoded by this verifier's tokenizer \
             ({} bytes claimed, {} decoded): refusing to show a text that was not verified",
            manifest.prompt_text.len(),
            prompt.len()
        );
    }
    Ok(DerivedTexts { prompt, output })
}

/// Loads the first verifier's model and holds the bundle's manifest to it (same weights,
/// shape, vocabulary, and prompt + output within its context), before the hidden states are
/// read: a manifest that claims two million tokens must not cost gigabytes of reading first.
pub async fn check_manifest_against_verifier(
    ws: &Arc<Workspace>,
    manifest: &Manifest,
    role: &Role,
    sink: &EventSink,
) -> Result<DerivedTexts> {
    let (ws, role, sink) = (ws.clone(), role.clone(), sink.clone());
    let model = tokio::task::spawn_blocking(move || ws.load_reporting(&role, &sink)).await??;
    check_same_model(manifest, &model)?;
    derive_texts(manifest, &model)
}

/// Settings of the verification half.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    pub verifiers: Vec<Role>,
    pub policy: PolicyConfig,
    pub cutoff: f64,
    pub expected: TrialVerdict,
    /// Positions per prefill chunk; None: each verifier's device default (`default_chunk`).
    pub chunk: Option<usize>,
    /// Whether a bundle's claim of `native` precision may loosen its tier to bf16. It is one
    /// string in an untrusted file: only an inference of this run, an experiment that pins its
    /// inferencer to `native`, or a user's explicit `verify --native-inference` grants it.
    pub trust_native_claim: bool,
    /// The sampling parameters the generated tokens are held to (the request's, never the
    /// bundle's when a request is known); None: state checks only.
    pub token_sampling: Option<SamplingParams>,
    /// Which verifiers are lazy: they answer PASS without computing
    /// (engine::cheat::lazy_verification). Empty: none.
    pub lazy: Vec<bool>,
}

/// The texts shown for a bundle: decoded from its verified ids with the first verifier's model
/// (loaded here, then cached for the verifier that follows), never the manifest's own strings;
/// a bundle of another model is refused first.
pub(super) async fn verified_texts(
    ws: &Arc<Workspace>,
    manifest: &Arc<Manifest>,
    settings: &VerifySettings,
    sink: &EventSink,
) -> Result<DerivedTexts> {
    let (ws, manifest, sink) = (ws.clone(), manifest.clone(), sink.clone());
    let role = settings
        .verifiers
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no verifier"))?;
    tokio::task::spawn_blocking(move || {
        let model = ws.load_reporting(&role, &sink)?;
        check_same_model(&manifest, &model)?;
        derive_texts(&manifest, &model)
    })
    .await
    .map_err(|e| anyhow!("a verifier task failed: {e}"))?
}

/// The verification half: every verifier on its own blocking task, concurrently.
pub async fn verify_trial(
    ws: Arc<Workspace>,
    manifest: Arc<Manifest>,
    states: Arc<CapturedStates>,
    settings: &VerifySettings,
    prompt: PromptInfo,
    sink: EventSink,
    cancel: CancelToken,
) -> Result<TrialResult> {
    let started_at = unix_now();
    let trial = manifest.context.as_ref().map_or(0, |c| c.trial);
    let texts = verified_texts(&ws, &manifest, settings, &sink).await?;
    let inference_dtype = CompareDtype::from_name(&manifest.dtype).unwrap_or(CompareDtype::F32);
    let mut tasks = JoinSet::new();
    for (index, role) in settings.verifiers.iter().cloned().enumerate() {
        let (ws, manifest, states, sink, cancel) = (
            ws.clone(),
            manifest.clone(),
            states.clone(),
            sink.clone(),
            cancel.clone(),
        );
        let (policy, chunk) = (settings.policy.clone(), settings.chunk);
        let trust_native = settings.trust_native_claim;
        let token_sampling = settings.token_sampling.clone();
        let lazy = settings.lazy.get(index).copied().unwrap_or(false);
        tasks.spawn_blocking(move || -> Result<(usize, RoleSpec, VerificationOutput)> {
            if lazy {
                let out = crate::engine::cheat::lazy_verification(&states)?;
                return Ok((index, role_spec_of_plan(&role), out));
            }
            let model = ws.load_reporting(&role, &sink)?;
            check_same_model(&manifest, &model)?;
            sink.emit(EngineEvent::VerifierStarted {
                trial,
                verifier: index,
            });
            let job = VerifyJob {
                prompt_ids: &manifest.prompt_ids,
                output_ids: &manifest.output_ids,
                committed: &states,
                inference_dtype,
                inference_native: trust_native && manifest.precision == "native",
                policy: &policy,
                chunk: chunk.unwrap_or_else(|| default_chunk(model.profile)),
                tokens: token_sampling.as_ref().map(|sampling| TokenRule {
                    sampling,
                    eos_ids: model.tokenizer.eos_ids(),
                    output_complete: !manifest.cancelled,
                }),
            };
            let out = verify(&model, &job, &sink, trial, index, &cancel)?;
            let mut spec = role_spec_of_plan(&role);
            spec.dtype = dtype_name(model.compute_dtype()).to_string();
            Ok((index, spec, out))
        });
    }
    let mut outputs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, spec, out) = joined.map_err(|e| anyhow!("a verifier task failed: {e}"))??;
        let accept_rate = out.accept_rate();
        sink.emit(EngineEvent::VerifierDone {
            trial,
            verifier: index,
            accept_rate,
            verdict: verifier_verdict(&out, settings.cutoff),
            overhead_percentage: overhead_percentage(out.time_s, manifest.timings.total_s),
        });
        outputs.push((index, spec, out));
    }
    outputs.sort_by_key(|(i, _, _)| *i);
    Ok(assemble_trial(
        &manifest,
        texts.output,
        states.bytes(),
        settings,
        prompt,
        started_at,
        outputs,
    ))
}

/// Verification wall time as a percentage of inference wall time.
fn overhead_percentage(verification_s: f64, inference_s: f64) -> f64 {
    100.0 * verification_s / inference_s.max(1e-9)
}

/// PASS when the state checks' accept rate passes the cutoff and, where tokens were checked,
/// the token checks pass too.
fn verifier_verdict(out: &VerificationOutput, cutoff: f64) -> Verdict {
    let tokens_pass = out.token_checks.as_ref().is_none_or(|t| t.pass());
    if verdict(out.accept_rate(), cutoff).is_pass() && tokens_pass {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

pub(super) fn assemble_trial(
    manifest: &Manifest,
    output_text: String,
    captured_bytes: usize,
    settings: &VerifySettings,
    prompt: PromptInfo,
    started_at: u64,
    outputs: Vec<(usize, RoleSpec, VerificationOutput)>,
) -> TrialResult {
    let inference_role = RoleSpec {
        model: manifest.model.name.clone(),
        precision: manifest.precision.clone(),
        device: manifest.device.clone(),
        dtype: manifest.dtype.clone(),
    };
    let ctx = manifest.context.clone();
    let verifiers: Vec<VerifierResult> = outputs
        .into_iter()
        .map(|(index, role, out)| {
            let accept_rate = out.accept_rate();
            let fold = |f: fn(&CheckRecord) -> f64| out.checks.iter().map(f);
            let n = out.checks.len().max(1) as f64;
            let summary = VerifierSummary {
                accept_rate,
                accepted: out.accepted(),
                total_checks: out.checks.len(),
                mean_rel_l2: fold(|c| c.metrics.rel_l2).sum::<f64>() / n,
                max_rel_l2: fold(|c| c.metrics.rel_l2).fold(0.0, f64::max),
                mean_pe: fold(|c| c.metrics.pe).sum::<f64>() / n,
                mean_abs: fold(|c| c.metrics.mean_abs).sum::<f64>() / n,
                max_abs: fold(|c| c.metrics.max_abs).fold(0.0, f64::max),
            };
            VerifierResult {
                name: format!("verifier_{}", index + 1),
                role,
                policy: settings.policy.name().to_string(),
                tier: Some(out.tier.name().to_string()),
                limits: out.limits,
                cutoff: settings.cutoff,
                overhead: Overhead {
                    verification_time_s: out.time_s,
                    inference_time_s: manifest.timings.total_s,
                    percentage: overhead_percentage(out.time_s, manifest.timings.total_s),
                },
                verdict: verifier_verdict(&out, settings.cutoff),
                token_checks: out.token_checks.as_ref().map(|t| TokenCheckSummary {
                    count: t.records.len(),
                    accepted: t.accepted(),
                    accept_rate: t.accept_rate(),
                    min_margin: t.min_margin(),
                    first_rejected_position: t.first_rejected_position(),
                    tolerance: t.tolerance,
                    stop_violation: t.stop_violation.clone(),
                    pass: t.pass(),
                }),
                // No checks (an inference cancelled before its first token) is no evidence
                // either way: its accept rate of 0 must not count as a measured rejection.
                complete: !out.cancelled && !out.checks.is_empty(),
                segment: None,
                statistics: VerifierStatistics {
                    summary,
                    checks: out.checks,
                    embedding_checks: out.embedding_checks,
                    token_checks: out.token_checks.map(|t| t.records).unwrap_or_default(),
                },
            }
        })
        .collect();
    let avg_accept_rate = verifiers
        .iter()
        .map(|v| v.statistics.summary.accept_rate)
        .sum::<f64>()
        / verifiers.len().max(1) as f64;
    let final_verdict = TrialVerdict::of_verifiers(verifiers.iter().map(|v| v.verdict));
    let specs: Vec<RoleSpec> = verifiers.iter().map(|v| v.role.clone()).collect();
    let complete = verifiers.iter().all(|v| v.complete) && !manifest.cancelled;
    TrialResult {
        format_version: RESULT_FORMAT_VERSION,
        experiment: ctx
            .as_ref()
            .map_or_else(|| "verify".into(), |c| c.experiment.clone()),
        trial: ctx.as_ref().map_or(0, |c| c.trial),
        started_at,
        pairing: describe_pairing(&inference_role, &specs),
        prompt,
        sampled_layers: manifest.layers.clone(),
        inference: InferenceInfo {
            role: inference_role,
            prompt_tokens: manifest.prompt_ids.len(),
            generated_tokens: manifest.output_ids.len(),
            time_s: manifest.timings.total_s,
            tokens_per_s: manifest.timings.tokens_per_s,
            decode_s: Some(manifest.timings.decode_s),
            output_text,
            output_ids: manifest.output_ids.clone(),
            captured_bytes,
        },
        verifiers,
        summary: TrialSummary {
            avg_accept_rate,
            final_verdict,
            expected_verdict: settings.expected,
            expectation_held: final_verdict == settings.expected,
            detected: (settings.expected == TrialVerdict::Reject)
                .then_some(final_verdict == TrialVerdict::Reject),
        },
        complete,
        request_checked: false,
        decision: None,
    }
}
