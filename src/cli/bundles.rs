//! The single-bundle commands: `infer` writes one inference bundle, `verify` checks one bundle
//! from anywhere (untrusted: it never chooses the model that verifies it).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::{
    verdict_code, workspace, GlobalArgs, InferArgs, PolicyChoice, RequestArgs, VerifyArgs,
};
use crate::engine::events::CancelToken;
use crate::experiment::bundle::{read_manifest, read_states, Manifest};
use crate::experiment::config::Role;
use crate::experiment::plan::TrialPlan;
use crate::experiment::request::{read_request, write_request, Request};
use crate::experiment::request_check::{check_against_request, ExpectedRequest};
use crate::experiment::trial::{self, VerifySettings};
use crate::experiment::workspace::Workspace;
use crate::record::results::{PromptInfo, TrialResult, TrialVerdict};
use crate::stats::policy::PolicyConfig;

/// The prompt text of `--prompt` or `--prompt-file`.
fn prompt_text(prompt: &Option<String>, file: &Option<std::path::PathBuf>) -> Result<String> {
    match (prompt, file) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(f)) => read_prompt_file(f),
        (None, None) => bail!("give --prompt or --prompt-file"),
    }
}

/// `verillm-tui request`: writes a request file with a fresh nonce and the model's weights
/// sha256 (the model is loaded once, to know its weights and to check that the prompt and
/// token budget fit its context).
pub(super) async fn request(global: &GlobalArgs, args: RequestArgs) -> Result<ExitCode> {
    let ws = Arc::new(workspace(global)?);
    let text = prompt_text(&args.prompt, &args.prompt_file)?;
    let sampling = args.sampling.params();
    sampling
        .validate()
        .map_err(|e| anyhow!("invalid sampling arguments: {e}"))?;
    let role = Role {
        model: args.model.clone(),
        precision: crate::model::weights::Precision::Full,
        device: crate::model::device::DeviceProfile::CPU_F32,
    };
    let (sink, printer) = crate::progress::sink_with_progress();
    let messages = vec![("user".to_string(), text)];
    let raw = args.raw;
    let request = tokio::task::spawn_blocking(move || -> Result<Request> {
        let model = ws.load_reporting(&role, &sink)?;
        let request = Request::new(&model, &messages, !raw, sampling);
        let (_, ids) = request.render(&model)?;
        let context = model.model.max_positions();
        ensure!(
            ids.len() + request.sampling.max_new_tokens <= context,
            "the prompt's {} tokens + --max-tokens {} exceed the model's context of {context}",
            ids.len(),
            request.sampling.max_new_tokens
        );
        Ok(request)
    })
    .await??;
    crate::progress::finish(printer).await;
    write_request(&args.out, &request)?;
    eprintln!(
        "wrote {} (request sha256 {}, nonce {})",
        args.out.display(),
        request.digest(),
        request.nonce
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn infer(global: &GlobalArgs, args: InferArgs) -> Result<ExitCode> {
    let ws = Arc::new(workspace(global)?);
    let request = match &args.request {
        Some(path) => Some(read_request(path)?),
        None => None,
    };
    let (text, raw, sampling, model_id) = match &request {
        Some(r) => {
            let text = r
                .prompt
                .messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            (
                text,
                !r.prompt.chat_template,
                r.sampling.clone(),
                r.model.id.clone(),
            )
        }
        None => {
            let sampling = args.sampling.params();
            let text = prompt_text(&args.prompt, &args.prompt_file)?;
            (text, args.raw, sampling, args.model.clone())
        }
    };
    let role = Role {
        model: model_id,
        precision: args.precision,
        device: args.device,
    };
    sampling
        .validate()
        .map_err(|e| anyhow!("invalid sampling arguments: {e}"))?;
    args.device.check_built()?;
    // Refused before decoding, so that no generated bundle is lost to an occupied directory;
    // removed again if the model cannot run (a bad --layers is found only once it is loaded).
    let _out_dir = crate::util::create_empty_dir(&args.out, "--out")?;
    let plan = TrialPlan {
        experiment: "infer".into(),
        trial: 0,
        prompt: PromptInfo {
            category: "cli".into(),
            id: "cli".into(),
            text: text.clone(),
        },
        messages: match &request {
            Some(r) => r
                .prompt
                .messages
                .iter()
                .map(|m| (m.role.clone(), m.content.clone()))
                .collect(),
            None => vec![("user".into(), text.clone())],
        },
        inference: role,
        verifiers: Vec::new(),
        sampling,
        policy: PolicyConfig::default(),
        cutoff: 0.95,
        expected: TrialVerdict::Pass,
        chunk: None,
        spec_layers: args.layers,
        segment: None,
        nonce: request.as_ref().map(|r| r.nonce.clone()),
        cheat: None,
        lazy_verifiers: Vec::new(),
    };
    let (sink, printer) = crate::progress::sink_with_progress();
    let cancel = CancelToken::new();
    let raw = raw.then_some(text);
    let ws2 = ws.clone();
    let keep_store = !args.no_store;
    let (mut manifest, states, store) = tokio::task::spawn_blocking(move || {
        crate::experiment::trial::infer_trial_with(&ws2, &plan, raw, &sink, &cancel, keep_store)
    })
    .await??;
    manifest.context = None;
    crate::progress::finish(printer).await;
    if let (Some(asked), Some(served)) = (&request, &manifest.request) {
        // The request names a model; the weights loaded under that name must be its weights.
        ensure!(
            asked.model.weights_sha256 == served.model.weights_sha256,
            "the request asks for weights sha256 {}, but `{}` loaded here has sha256 {}",
            asked.model.weights_sha256,
            asked.model.id,
            served.model.weights_sha256
        );
        ensure!(
            asked.digest() == served.digest(),
            "internal: the served request differs from the one asked"
        );
    }
    if args.root_only {
        crate::experiment::bundle::write_root_only_bundle(&args.out, manifest.clone())?;
    } else {
        crate::experiment::bundle::write_bundle(&args.out, manifest.clone(), &states)?;
    }
    if let (Some(store), Some(c)) = (&store, &manifest.commitment) {
        crate::engine::commitment::write_store(&args.out, store)?;
        eprintln!(
            "committed root {} over {} columns × {} positions (private store {}/states, {:.1} KiB)",
            c.root,
            c.shape.columns,
            c.shape.positions,
            args.out.display(),
            store.bytes() as f64 / 1024.0
        );
    }
    if args.root_only {
        let manifest_bytes = std::fs::metadata(args.out.join("manifest.json"))
            .map(|m| m.len())
            .unwrap_or(0);
        eprintln!(
            "wrote {} ({} tokens; root-only: the manifest, {:.1} KiB, ships no states)",
            args.out.display(),
            manifest.output_ids.len(),
            manifest_bytes as f64 / 1024.0
        );
    } else {
        eprintln!(
            "wrote {} ({} tokens, layers {:?}, captured {:.1} KiB)",
            args.out.display(),
            manifest.output_ids.len(),
            states.layers,
            states.bytes() as f64 / 1024.0
        );
    }
    // The model's words; a byte token can be a control character, which is written out.
    println!("{}", crate::util::escape_controls(&manifest.output_text));
    Ok(ExitCode::SUCCESS)
}

/// A prompt file's text; text that is not UTF-8 is refused at the byte where it stops being so.
fn read_prompt_file(path: &std::path::Path) -> Result<String> {
    // Bounded like a request file: a prompt is untrusted input too.
    let bytes =
        crate::util::read_untrusted_file(path, crate::experiment::request::MAX_REQUEST_BYTES)
            .with_context(|| format!("--prompt-file {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let error = e.utf8_error();
        anyhow!(
            "--prompt-file {}: not UTF-8 text: invalid byte 0x{:02x} at byte offset {}",
            path.display(),
            e.as_bytes()[error.valid_up_to()],
            error.valid_up_to()
        )
    })
}

/// The model a bundle names, accepted only as a registry id of this machine's models.yaml: a
/// bundle comes from elsewhere and must never choose a path to open or a repo to download.
fn bundle_model_id(ws: &Workspace, manifest: &Manifest) -> Result<String> {
    let name = &manifest.model.name;
    if let Some(entry) = ws.config.models.get(name) {
        // Refused before anything is loaded or downloaded: the registry already says the
        // model has another shape than the one the bundle claims.
        ensure!(
            (entry.layers, entry.hidden) == (manifest.model.n_layers, manifest.model.hidden),
            "the bundle names model `{name}` but claims {} layers, {} wide; models.yaml \
             declares `{name}` with {} layers, {} wide",
            manifest.model.n_layers,
            manifest.model.hidden,
            entry.layers,
            entry.hidden
        );
        return Ok(name.to_string());
    }
    bail!(
        "the bundle names model `{name}`, which is not a model id of this machine's models.yaml \
         (known: {}); a bundle never chooses a path or a download: pass --model",
        ws.config.models.ids().join(", ")
    )
}

pub(super) async fn verify(global: &GlobalArgs, args: VerifyArgs) -> Result<ExitCode> {
    let max = crate::record::limits::MAX_VERIFIERS;
    if !(1..=max).contains(&args.verifiers) {
        bail!("--verifiers {}: expected 1..={max}", args.verifiers);
    }
    let ws = Arc::new(workspace(global)?);
    let experiment = match &args.experiment {
        Some(id) => Some(ws.config.experiments.get(id).cloned().ok_or_else(|| {
            anyhow!(
                "--experiment {id}: not an experiment of experiments.yaml (known: {})",
                ws.config.experiments.experiment_names().join(", ")
            )
        })?),
        None => None,
    };
    let cutoff = args
        .cutoff
        .or(experiment.as_ref().map(|e| e.cutoff))
        .unwrap_or(0.95);
    if !(0.0..1.0).contains(&cutoff) {
        bail!(
            "--cutoff {cutoff} must be in [0, 1): a verifier passes when its accept rate exceeds \
             the cutoff, so 1 could never pass (use e.g. 0.999)"
        );
    }
    let request = match &args.request {
        Some(path) => Some(read_request(path)?),
        None => None,
    };
    let manifest = read_manifest(&args.bundle)?;
    if let (Some(spec), Some(id)) = (&experiment, &args.experiment) {
        // Judged as the experiment judges: what its inferencer runs (precision, and the dtype
        // that picks the precision tier) is what a bundle may claim.
        if let Err(admitted) =
            spec.check_admitted_inference(args.gpu, &manifest.precision, &manifest.dtype)
        {
            bail!(
                "{}: the bundle declares precision {} in {}, but {id}'s inferencer runs \
                 {admitted}{}",
                args.bundle.display(),
                manifest.precision,
                manifest.dtype,
                if args.gpu.is_none() {
                    " (if you know its inference ran with run --gpu PROFILE, pass the same \
                     --gpu; a bf16/f16 profile admits that tier, which cannot tell 8-bit \
                     weights from honest ones: docs/policy.md)"
                } else {
                    ""
                }
            );
        }
    }
    // The verifier decides which layers must be committed: a bundle holding only a shallow
    // layer (cheap to fake) is not judged on that alone.
    let required = args
        .layers
        .clone()
        .or(experiment.as_ref().map(|e| e.layers.clone()))
        .unwrap_or_default();
    let needed = required
        .resolve_checked(manifest.model.n_layers)
        .map_err(|e| {
            let from = if args.layers.is_some() {
                "--layers"
            } else {
                "the required layers"
            };
            anyhow!("{from}: {e}")
        })?;
    // A segment verification checks the layers its challenge draws, not shipped ones.
    let from_opening = args.opening.is_some() && args.mode != Some(super::VerifyMode::Full);
    ensure!(
        from_opening || !manifest.is_root_only(),
        "{}: a root-only bundle ships no hidden states, only its commitment root: verify it in \
         segment mode with --opening DIR (`challenge` draws, the inferencer's `open` answers)",
        args.bundle.display()
    );
    let missing: Vec<usize> = needed
        .iter()
        .copied()
        .filter(|l| !from_opening && !manifest.layers.contains(l))
        .collect();
    ensure!(
        missing.is_empty(),
        "{}: the bundle commits layers {:?}, but this verification requires {needed:?} \
         ({required} of a {}-layer model), so {missing:?} are missing; --layers says which \
         layers to require",
        args.bundle.display(),
        manifest.layers,
        manifest.model.n_layers
    );
    // The bundle's declared dtype picks its precision tier, and the bf16 tier is loose enough
    // (δ = 2 logits) for a cheater to steer tokens: admitted only when the verifier says so.
    if experiment.is_none()
        && crate::stats::metrics::CompareDtype::from_name(&manifest.dtype)
            == Some(crate::stats::metrics::CompareDtype::Bf16)
    {
        ensure!(
            args.admit_bf16,
            "{}: the bundle declares bf16 inference, judged in the bf16 tier (token margins \
             down to -2 logits, state drift up to the bf16 limits of docs/policy.md), within \
             which a provider could choose among near-top tokens; pass --admit-bf16 to accept \
             that tier, or --experiment ID to admit what that experiment's inferencer runs",
            args.bundle.display()
        );
    }
    let model = match (args.model, &request) {
        (Some(model), _) => model,
        // The requester's own file names the model it asked for.
        (None, Some(r)) => r.model.id.clone(),
        (None, None) => bundle_model_id(&ws, &manifest)?,
    };
    let role = Role {
        model,
        precision: args.precision,
        device: args.device,
    };
    let settings = VerifySettings {
        lazy: Vec::new(),
        verifiers: vec![role; args.verifiers],
        policy: match (&experiment, args.policy) {
            (Some(e), _) => e.policy.clone(),
            (None, PolicyChoice::PrecisionAware) => PolicyConfig::default(),
            (None, PolicyChoice::Seed) => PolicyConfig::seed_default(),
        },
        cutoff,
        expected: TrialVerdict::Pass,
        chunk: None,
        trust_native_claim: args.native_inference,
        // The request's sampling when there is one; else the bundle's own claim (said so in
        // the results: request_checked false); none for a state-only verification.
        token_sampling: if args.state_only {
            None
        } else {
            Some(
                request
                    .as_ref()
                    .map_or_else(|| manifest.sampling.clone(), |r| r.sampling.clone()),
            )
        },
    };
    let (sink, printer) = crate::progress::sink_with_progress();
    // The bundle's claims are held to the model before its hidden states are read; the
    // prompt shown is the one decoded from its ids.
    let verifying = || format!("verifying {}", args.bundle.display());
    let texts =
        trial::check_manifest_against_verifier(&ws, &manifest, &settings.verifiers[0], &sink)
            .await
            .with_context(verifying)?;
    let prompt = PromptInfo {
        category: String::new(),
        id: String::new(),
        text: texts.prompt,
    };
    if let Some(request) = &request {
        let expected = ExpectedRequest::File(request.clone());
        let checked =
            check_against_request(&ws, &settings.verifiers[0], &sink, &manifest, &expected)
                .await
                .with_context(verifying)?;
        if let Err(mismatch) = checked {
            printer.abort();
            // The bundle answers something else: REJECT without computing anything.
            let reason = format!("the bundle does not answer the request: {mismatch}");
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "request_checked": true,
                        "request_sha256": request.digest(),
                        "request_mismatch": mismatch,
                        "verdict": "REJECT",
                    }))?
                );
            } else {
                println!("verdict: REJECT ({reason})");
            }
            return Ok(verdict_code(TrialVerdict::Reject));
        }
    }
    let segment = match (args.mode, &args.opening) {
        (Some(super::VerifyMode::Segment), None) => {
            bail!("--mode segment verifies an opening: pass --opening DIR (`open` writes one)")
        }
        (Some(super::VerifyMode::Full), _) => false,
        (_, opening) => opening.is_some(),
    };
    if segment {
        printer.abort();
        let request = request.expect("clap: --opening requires --request");
        let opening = args.opening.clone().expect("segment mode has an opening");
        let role = settings.verifiers[0].clone();
        let policy = settings.policy.clone();
        let native = args.native_inference;
        let json = args.json;
        let bundle = args.bundle.clone();
        let reference_prefill = !args.no_reference_prefill;
        return tokio::task::spawn_blocking(move || {
            super::segment_verify::verify_segments_cli(&super::segment_verify::SegmentCli {
                ws: &ws,
                role: &role,
                policy: &policy,
                cutoff,
                native,
                manifest: &manifest,
                request: &request,
                bundle: &bundle,
                opening_dir: &opening,
                json,
                reference_prefill,
            })
        })
        .await?;
    }
    let states = read_states(&args.bundle, &manifest)?;
    // The verdict states its error rates (docs/policy.md "Verdicts with error rates"): the
    // sequential test decides with the experiment's α/β/p1 (defaults without --experiment)
    // against the built-in tier calibration, as `run` does; the cutoff rule's verdict is kept
    // beside it in the record.
    let decision_settings = args
        .experiment
        .as_deref()
        .and_then(|id| ws.config.experiments.get(id))
        .map(crate::experiment::decision::DecisionSettings::of)
        .unwrap_or_default();
    let result = trial::verify_trial(
        ws,
        Arc::new(manifest),
        Arc::new(states),
        &settings,
        prompt,
        sink,
        CancelToken::new(),
    )
    .await
    .with_context(verifying)?;
    crate::progress::finish(printer).await;
    let mut result = result;
    result.request_checked = request.is_some();
    crate::experiment::decision::decide(
        &mut result,
        &decision_settings,
        crate::experiment::decision::CalibrationFile::builtin(),
    );
    print_trial(&result, args.json)?;
    if !result.request_checked {
        eprintln!(
            "request_checked: false — the prompt and sampling parameters are the bundle's own \
             claims; pass --request FILE to hold it to what was asked"
        );
    }
    if args.experiment.is_none() {
        // The bundle's declared dtype chose the precision tier: say so, since it is a claim.
        if let Some(tier) = result.verifiers.iter().find_map(|v| v.tier.as_deref()) {
            eprintln!(
                "judged in the {tier} tier, from the bundle's declared dtype {} and precision \
                 {}; --experiment ID admits only what that experiment's inferencer runs",
                crate::util::escape_controls(&result.inference.role.dtype),
                crate::util::escape_controls(&result.inference.role.precision)
            );
        }
    }
    Ok(verdict_code(result.summary.final_verdict))
}

fn print_trial(result: &TrialResult, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
        return Ok(());
    }
    for v in &result.verifiers {
        let tokens = match &v.token_checks {
            Some(t) => format!(
                "  tokens {:.4} ({}/{}, min margin {}{}{})",
                t.accept_rate,
                t.accepted,
                t.count,
                crate::util::format_margin(t.min_margin),
                t.first_rejected_position
                    .map_or_else(String::new, |p| format!(", first rejected at {p}")),
                t.stop_violation
                    .as_ref()
                    .map_or_else(String::new, |s| format!(", stop rule: {s}")),
            ),
            None => "  tokens not checked (state only)".to_string(),
        };
        println!(
            "{}: {} {} {}  accept rate {:.4} ({}/{}){tokens}  {:?}  overhead {:.1}%",
            v.name,
            v.role.device,
            v.role.dtype,
            v.role.precision,
            v.statistics.summary.accept_rate,
            v.statistics.summary.accepted,
            v.statistics.summary.total_checks,
            v.verdict,
            v.overhead.percentage
        );
    }
    if let Some(decision) = &result.decision {
        println!(
            "decision: {}",
            crate::experiment::decision::describe(decision)
        );
    }
    println!(
        "verdict: {:?}  request_checked: {}",
        result.summary.final_verdict, result.request_checked
    );
    Ok(())
}

/// `challenge`: the verifier's draw for a committed bundle, its secret stated in the file.
pub(super) fn challenge(args: super::ChallengeArgs) -> Result<ExitCode> {
    use crate::engine::commitment::{
        check_secret_unrevealed, derive_challenge, read_secret, record_secret_revealed,
    };
    let manifest = read_manifest(&args.bundle)?;
    let commitment = manifest.checked_commitment(&args.bundle)?;
    let request = manifest
        .request
        .as_ref()
        .with_context(|| format!("{}: the manifest names no request", args.bundle.display()))?;
    let secret = match &args.secret_file {
        Some(path) => {
            let secret = read_secret(path)?;
            check_secret_unrevealed(path, &commitment.root)?;
            secret
        }
        None => crate::experiment::protocol::new_secret(),
    };
    let ch = derive_challenge(
        &commitment.root,
        &request.nonce,
        &secret,
        manifest.model.n_layers,
        args.layers,
        manifest.output_ids.len(),
        args.token_positions,
    )?;
    crate::util::write_file_atomic(&args.out, &serde_json::to_vec_pretty(&ch)?)?;
    if let Some(path) = &args.secret_file {
        record_secret_revealed(path, &commitment.root)?;
    }
    println!(
        "challenge: layers {:?}, tokens {}, secret {} (revealed: anyone can recompute the draw)",
        ch.layers,
        ch.token_positions
            .as_ref()
            .map_or_else(|| "all".to_string(), |p| format!("{p:?}")),
        ch.secret
    );
    Ok(ExitCode::SUCCESS)
}

/// `open`: the challenged columns of the private store with their proofs.
pub(super) fn open(args: super::OpenArgs) -> Result<ExitCode> {
    use crate::engine::commitment::{read_store, write_opening, Challenge};
    let manifest = read_manifest(&args.bundle)?;
    let commitment = manifest.checked_commitment(&args.bundle)?;
    let bytes = crate::util::read_untrusted_file(&args.challenge, 1 << 20)
        .with_context(|| format!("--challenge {}", args.challenge.display()))?;
    let ch: Challenge = serde_json::from_slice(&bytes)
        .with_context(|| format!("--challenge {}: not a challenge", args.challenge.display()))?;
    let _out = crate::util::create_empty_dir(&args.out, "--out")?;
    let (store, tree) = read_store(&args.bundle, commitment)?;
    let shipped = write_opening(
        &args.out,
        commitment,
        &store,
        &tree,
        &ch,
        manifest.prompt_ids.len(),
    )?;
    println!(
        "opened layers {:?} into {} ({shipped} bytes, store {} bytes)",
        ch.layers,
        args.out.display(),
        store.bytes()
    );
    Ok(ExitCode::SUCCESS)
}
