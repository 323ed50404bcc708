//! The single-bundle commands: `infer` writes one inference bundle, `verify` checks one bundle
//! from anywhere (untrusted: it never chooses the model that verifies it).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::{verdict_code, workspace, GlobalArgs, InferArgs, PolicyChoice, VerifyArgs};
use crate::engine::events::CancelToken;
use crate::experiment::bundle::{read_manifest, read_states, Manifest};
use crate::experiment::results::{PromptInfo, TrialResult, TrialVerdict};
use crate::experiment::runner::{self, Role, TrialPlan, VerifySettings, Workspace};
use crate::stats::policy::PolicyConfig;

pub(super) async fn infer(global: &GlobalArgs, args: InferArgs) -> Result<ExitCode> {
    let ws = Arc::new(workspace(global)?);
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_prompt_file(f)?,
        (None, None) => bail!("give --prompt or --prompt-file"),
    };
    let role = Role {
        model: args.model.clone(),
        precision: args.precision,
        device: args.device,
    };
    let sampling = crate::engine::sampling::SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        min_new_tokens: args.min_tokens,
        max_new_tokens: args.max_tokens,
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
        messages: vec![("user".into(), text.clone())],
        inference: role,
        verifiers: Vec::new(),
        sampling,
        policy: PolicyConfig::default(),
        cutoff: 0.95,
        expected: TrialVerdict::Pass,
        chunk: None,
        spec_layers: args.layers,
    };
    let (sink, printer) = crate::progress::sink_with_progress();
    let cancel = CancelToken::new();
    let raw = args.raw.then_some(text);
    let ws2 = ws.clone();
    let (mut manifest, states) =
        tokio::task::spawn_blocking(move || runner::infer_trial(&ws2, &plan, raw, &sink, &cancel))
            .await??;
    manifest.context = None;
    printer.abort();
    crate::experiment::bundle::write_bundle(&args.out, manifest.clone(), &states)?;
    eprintln!(
        "wrote {} ({} tokens, layers {:?}, captured {:.1} KiB)",
        args.out.display(),
        manifest.output_ids.len(),
        states.layers,
        states.bytes() as f64 / 1024.0
    );
    // The model's words; a byte token can be a control character, which is written out.
    println!("{}", crate::util::escape_controls(&manifest.output_text));
    Ok(ExitCode::SUCCESS)
}

/// A prompt file's text; text that is not UTF-8 is refused at the byte where it stops being so.
fn read_prompt_file(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("--prompt-file {}", path.display()))?;
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
    let max = crate::experiment::results::MAX_VERIFIERS;
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
    let missing: Vec<usize> = needed
        .iter()
        .copied()
        .filter(|l| !manifest.layers.contains(l))
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
    let model = match args.model {
        Some(model) => model,
        None => bundle_model_id(&ws, &manifest)?,
    };
    let role = Role {
        model,
        precision: args.precision,
        device: args.device,
    };
    let settings = VerifySettings {
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
    };
    let (sink, printer) = crate::progress::sink_with_progress();
    // The bundle's claims are held to the model before its hidden states are read; the
    // prompt shown is the one decoded from its ids.
    let verifying = || format!("verifying {}", args.bundle.display());
    let texts =
        runner::check_manifest_against_verifier(&ws, &manifest, &settings.verifiers[0], &sink)
            .await
            .with_context(verifying)?;
    let prompt = PromptInfo {
        category: String::new(),
        id: String::new(),
        text: texts.prompt,
    };
    let states = read_states(&args.bundle, &manifest)?;
    let result = runner::verify_trial(
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
    printer.abort();
    print_trial(&result, args.json)?;
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
        println!(
            "{}: {} {} {}  accept rate {:.4} ({}/{})  {:?}  overhead {:.1}%",
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
    println!("verdict: {:?}", result.summary.final_verdict);
    Ok(())
}
