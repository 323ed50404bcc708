//! `run --step verify --from DIR`: verifies inference bundles made by `run --step infer`
//! (possibly on another machine) as one run of an experiment. Bundles are untrusted: each is
//! held to the experiment's inferencer precision and layers, a damaged or duplicated one is
//! skipped and named, and the others are verified and summarized.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::bundle::{read_manifest, read_states};
use super::config::ExperimentSpec;
use super::output::{results_dir, write_summary, write_trial, RunContext, RunOutcome};
use super::plan::{experiment_spec, plan_trials_of, resolve_roles, RunRequest, TrialPlan};
use super::request_check::{check_against_request, ExpectedRequest};
use super::trial::{check_manifest_against_verifier, verify_trial, VerifySettings};
use super::workspace::Workspace;
use crate::engine::events::{CancelToken, EngineEvent, EventSink, LogLevel};
use crate::record::results::{PromptInfo, TrialResult};

pub(super) async fn verify_bundles(
    ws: Arc<Workspace>,
    req: &RunRequest,
    from: &Path,
    started_at: u64,
    sink: &EventSink,
    cancel: &CancelToken,
) -> Result<RunOutcome> {
    let spec = experiment_spec(&ws, &req.experiment)?.clone();
    let (_, verifiers) = resolve_roles(&spec, req)?;
    for role in &verifiers {
        role.device.check_built()?;
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    // A trial_* entry that is not a plain directory (a link could lead anywhere, a file is
    // no bundle) is named and skipped, and the run is then incomplete: never silently left out.
    let mut not_bundles: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(from)
        .with_context(|| format!("reading bundle directory {}", from.display()))?
    {
        let entry =
            entry.with_context(|| format!("reading bundle directory {}", from.display()))?;
        if !entry.file_name().to_string_lossy().starts_with("trial_") {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => dirs.push(entry.path()),
            _ => not_bundles.push(format!(
                "{}: skipped: not a bundle directory (a symbolic link or a file)",
                entry.path().display()
            )),
        }
    }
    dirs.sort();
    not_bundles.sort();
    ensure!(
        !dirs.is_empty(),
        "{}: no trial_* bundle directories{}",
        from.display(),
        if not_bundles.is_empty() {
            String::new()
        } else {
            format!(" ({})", not_bundles.join("; "))
        }
    );
    // Removed on the way out if nothing could be written into it.
    let out_guard = results_dir(&ws, req)?;
    let out_dir = out_guard.path().to_path_buf();
    let settings = VerifySettings {
        lazy: Vec::new(),
        verifiers,
        policy: spec.policy.clone(),
        cutoff: spec.cutoff,
        expected: spec.expected,
        chunk: req.chunk,
        // Each bundle's precision must be the experiment's (verify_one_bundle), so a claim of
        // `native` is one the experiment makes.
        trust_native_claim: true,
        // Set per bundle from the run's plan of its trial (prompts.yaml, the experiment's
        // sampling), never from the bundle.
        token_sampling: None,
    };
    // The requests the experiment makes, rebuilt as `run --step infer` planned them (same
    // --seed, --max-tokens, --min-tokens; as many trials as bundles unless --trials says).
    let plans = plan_trials_of(
        &ws,
        &spec,
        &RunRequest {
            trials: req.trials.or(Some(dirs.len())),
            ..req.clone()
        },
    )?;
    let mut trials: Vec<TrialResult> = Vec::new();
    // One bad bundle (damaged, from another experiment, a duplicate) must not cost the
    // results of the others: it is reported, skipped, and the run marked incomplete.
    let mut failed: Vec<String> = Vec::new();
    let listed = dirs.len() + not_bundles.len();
    for message in not_bundles {
        sink.log(LogLevel::Error, message.clone());
        failed.push(message);
    }
    // (trial number, bundle) of every verified bundle, so a second claim names the first.
    let mut claimed: Vec<(usize, &Path)> = Vec::new();
    for dir in &dirs {
        if cancel.is_cancelled() {
            break;
        }
        match verify_one_bundle(
            &ws, req, &spec, dir, &claimed, &plans, &settings, sink, cancel,
        )
        .await
        {
            Ok(result) => {
                claimed.push((result.trial, dir));
                write_trial(&out_dir, &result)?;
                sink.emit(EngineEvent::TrialDone {
                    trial: result.trial,
                    result: Box::new(result.clone()),
                });
                trials.push(result);
            }
            Err(e) => {
                let message = format!("{}: skipped: {e:#}", dir.display());
                sink.log(LogLevel::Error, message.clone());
                failed.push(message);
            }
        }
    }
    let complete = !cancel.is_cancelled() && failed.is_empty();
    let run = RunContext::of(req, &spec, started_at, listed);
    let (summary, summary_path) = write_summary(&out_dir, &run, &trials, complete)?;
    if !failed.is_empty() {
        let kept = match &summary_path {
            Some(path) => format!("the other results are in {}", path.display()),
            None => "no bundle could be verified".to_string(),
        };
        bail!(
            "{} of {} bundles could not be verified ({kept}):\n  {}",
            failed.len(),
            listed,
            failed.join("\n  ")
        );
    }
    Ok(RunOutcome {
        summary_path,
        summary,
        trials,
        out_dir,
    })
}

/// Reads and verifies one bundle of `run --step verify --from`. Its trial number comes from
/// the bundle's context; a bundle without one (a plain `infer`) takes the next free number,
/// and two bundles that claim the same trial are refused rather than overwrite each other.
#[allow(clippy::too_many_arguments)]
pub(super) async fn verify_one_bundle(
    ws: &Arc<Workspace>,
    req: &RunRequest,
    spec: &ExperimentSpec,
    dir: &Path,
    used_trials: &[(usize, &Path)],
    plans: &[TrialPlan],
    settings: &VerifySettings,
    sink: &EventSink,
    cancel: &CancelToken,
) -> Result<TrialResult> {
    let manifest = read_manifest(dir)?;
    // The experiment says how its inferencer runs: a bundle's own claim (say `native`, or a
    // q8 cheat computed in bf16 and labelled `full`, which the policy would judge more
    // loosely) is held to it.
    if let Err(admitted) =
        spec.check_admitted_inference(req.gpu_profile, &manifest.precision, &manifest.dtype)
    {
        bail!(
            "bundle declares precision {} in {}, but {}'s inferencer runs {admitted}",
            manifest.precision,
            manifest.dtype,
            req.experiment
        );
    }
    // The model name is shown in the results: it must be the one the experiment runs (the
    // weights themselves are held to the verifier's by checksum).
    let (inference, _) = resolve_roles(spec, req)?;
    ensure!(
        manifest.model.name == inference.model,
        "bundle names model `{}`, but {}'s inferencer runs `{}`",
        manifest.model.name,
        req.experiment,
        inference.model
    );
    // The experiment decides which layers are checked, not the bundle: one that committed
    // to fewer (say only a shallow layer) would otherwise be judged on those alone.
    let expected_layers = spec.layers.resolve(manifest.model.n_layers);
    ensure!(
        manifest.layers == expected_layers || manifest.is_root_only(),
        "bundle records layers {:?}, but {} checks {:?} ({} of a {}-layer model)",
        manifest.layers,
        req.experiment,
        expected_layers,
        spec.layers,
        manifest.model.n_layers
    );
    let ctx = manifest.context.clone();
    let trial = match &ctx {
        Some(c) => {
            ensure!(
                c.experiment == req.experiment,
                "bundle belongs to experiment {}, not {}",
                c.experiment,
                req.experiment
            );
            if let Some((_, other)) = used_trials.iter().find(|(t, _)| *t == c.trial) {
                bail!(
                    "trial {} is already taken by {} in this run",
                    c.trial,
                    other.display()
                );
            }
            c.trial
        }
        None => (0..)
            .find(|n| used_trials.iter().all(|(t, _)| t != n))
            .unwrap_or(0),
    };
    // The bundle's claims are held to the model before its hidden states are read.
    let texts =
        check_manifest_against_verifier(ws, &manifest, &settings.verifiers[0], sink).await?;
    // Held to the request this trial of the experiment makes: its prompt from prompts.yaml
    // rendered by the verifier, its sampling, seed and limits (docs/request.md).
    let plan = plans.get(trial).ok_or_else(|| {
        anyhow!(
            "trial {trial}: the run plans only {} trials (pass the --trials the inference used)",
            plans.len()
        )
    })?;
    let expected = ExpectedRequest::Plan {
        messages: plan.messages.clone(),
        sampling: plan.sampling.clone(),
    };
    if let Err(mismatch) =
        check_against_request(ws, &settings.verifiers[0], sink, &manifest, &expected).await?
    {
        bail!(
            "does not answer trial {trial}'s request (prompt {}): {mismatch} (the requests are \
             rebuilt from the experiment: verify with the --seed, --trials, --max-tokens and \
             --min-tokens the inference ran with)",
            plan.prompt.id
        );
    }
    // What is shown is the experiment's own prompt label and the text decoded from the
    // verified ids, never the bundle's words.
    let prompt = PromptInfo {
        text: texts.prompt,
        ..plan.prompt.clone()
    };
    let settings = &VerifySettings {
        lazy: Vec::new(),
        token_sampling: Some(plan.sampling.clone()),
        ..settings.clone()
    };
    let mut result = if plan.segment.is_some() {
        super::protocol::verify_bundle_openings(
            ws.clone(),
            dir,
            manifest,
            settings,
            plan.segment.is_some_and(|s| s.reference_prefill),
            prompt,
            sink.clone(),
            cancel.clone(),
        )
        .await?
    } else {
        let states = read_states(dir, &manifest)?;
        verify_trial(
            ws.clone(),
            Arc::new(manifest),
            Arc::new(states),
            settings,
            prompt,
            sink.clone(),
            cancel.clone(),
        )
        .await?
    };
    result.trial = trial;
    result.request_checked = true;
    super::decision::decide_configured(ws, &mut result, sink);
    Ok(result)
}
