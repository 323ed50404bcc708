//! Planning a run: what to run (`RunRequest`, the command line's or the console's overrides
//! of the configuration), the roles it resolves to, and one `TrialPlan` per trial. Nothing is
//! loaded or written here.

use std::path::PathBuf;

use anyhow::{anyhow, ensure, Result};

use super::config::{ChatRole, ExperimentSpec, GpuUse, Prompt, Role, DEFAULT_CHALLENGED_LAYERS};
use super::workspace::Workspace;
use crate::engine::sampling::SamplingParams;
use crate::model::device::DeviceProfile;
use crate::record::limits::MAX_VERIFIERS;
use crate::record::results::*;
use crate::stats::policy::PolicyConfig;

/// Which half of a trial to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunStep {
    #[default]
    Both,
    /// Write inference bundles only.
    Infer,
    /// Verify bundles written by `Infer` (possibly on another machine).
    Verify,
    /// Segment mode, the verifiers' machine: draw each verifier's challenge for every bundle.
    Challenge,
    /// Segment mode, the inferencer's machine: answer the challenges from the private stores.
    Open,
}

/// What to run, with the command line's or the TUI's overrides of the configuration.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub experiment: String,
    pub trials: Option<usize>,
    pub verifiers: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub seed: Option<u64>,
    pub jobs: usize,
    /// Results directory (default: `<data>/<experiment>/run-<time>`); bundle directory for `Infer`.
    pub out: Option<PathBuf>,
    pub step: RunStep,
    /// Bundle directory for `Verify`.
    pub from: Option<PathBuf>,
    pub inference_role: Option<Role>,
    pub verifier_roles: Option<Vec<Role>>,
    /// The profile every role with a `gpu_device` runs on instead (`run --gpu`).
    pub gpu_profile: Option<DeviceProfile>,
    pub chunk: Option<usize>,
    /// Full or segment verification (`run --mode`); None: the experiment's `mode:`.
    pub mode: Option<super::config::VerificationMode>,
    /// Layers each verifier challenges in segment mode (`run --challenge-layers`); None: the
    /// experiment's `challenge_layers:` or the default.
    pub challenge_layers: Option<usize>,
    /// Generated tokens each verifier's token checks cover in segment mode; None: all.
    pub token_positions: Option<usize>,
    /// Segment mode: skip timing the reference full prefill (`run --no-reference-prefill`).
    pub no_reference_prefill: bool,
}

/// Everything one trial needs, resolved from configuration and overrides.
#[derive(Debug, Clone)]
pub struct TrialPlan {
    pub experiment: String,
    pub trial: usize,
    pub prompt: PromptInfo,
    pub messages: Vec<(String, String)>,
    pub inference: Role,
    pub verifiers: Vec<Role>,
    pub sampling: SamplingParams,
    pub policy: PolicyConfig,
    pub cutoff: f64,
    pub expected: TrialVerdict,
    /// Positions per verifier prefill chunk; None: each verifier's device default.
    pub chunk: Option<usize>,
    pub spec_layers: super::config::LayerSelection,
    /// Segment mode's challenge per verifier (docs/commitment.md); None: full mode.
    pub segment: Option<SegmentSettings>,
    /// The nonce of the request this trial serves (`infer --request`); None: a fresh one.
    pub nonce: Option<String>,
    /// The inferencer's cheat (experiments.yaml `inference.cheat`, or a planted bundle's);
    /// None: honest.
    pub cheat: Option<crate::engine::cheat::Cheat>,
    /// Which verifiers are lazy (answer PASS without computing); empty: none.
    pub lazy_verifiers: Vec<bool>,
}

pub fn gpu_available() -> bool {
    crate::model::device::available_profiles()
        .iter()
        .any(|p| p.is_gpu())
}

/// The roles an experiment runs with on this machine, after overrides.
pub fn resolve_roles(spec: &ExperimentSpec, req: &RunRequest) -> Result<(Role, Vec<Role>)> {
    let gpu = match req.gpu_profile {
        Some(profile) => GpuUse::Forced(profile),
        None if gpu_available() => GpuUse::Configured,
        None => GpuUse::None,
    };
    let inference = match &req.inference_role {
        Some(r) => r.clone(),
        None => spec.inference_role(gpu),
    };
    let mut verifiers = match &req.verifier_roles {
        Some(v) => v.clone(),
        None => spec.verifier_roles(gpu),
    };
    if let Some(n) = req.verifiers {
        ensure!(
            (1..=MAX_VERIFIERS).contains(&n),
            "--verifiers {n}: expected 1..={MAX_VERIFIERS}"
        );
        ensure!(!verifiers.is_empty(), "the experiment defines no verifiers");
        verifiers = (0..n)
            .map(|i| verifiers[i % verifiers.len()].clone())
            .collect();
    }
    Ok((inference, verifiers))
}

/// The spec of the experiment a run names, or an error listing the known ones: the one lookup
/// a run makes; the spec is then carried, not looked up again.
pub fn experiment_spec<'a>(ws: &'a Workspace, name: &str) -> Result<&'a ExperimentSpec> {
    ws.config.experiments.get(name).ok_or_else(|| {
        anyhow!(
            "unknown experiment `{name}`; known: {}",
            ws.config.experiments.experiment_names().join(", ")
        )
    })
}

/// Plans every trial of a run.
pub fn plan_trials(ws: &Workspace, req: &RunRequest) -> Result<Vec<TrialPlan>> {
    plan_trials_of(ws, experiment_spec(ws, &req.experiment)?, req)
}

/// Plans every trial of a run of `spec` (the spec of `req.experiment`, looked up once by the
/// caller with [`experiment_spec`]).
pub fn plan_trials_of(
    ws: &Workspace,
    spec: &ExperimentSpec,
    req: &RunRequest,
) -> Result<Vec<TrialPlan>> {
    let (inference, verifiers) = resolve_roles(spec, req)?;
    for role in std::iter::once(&inference).chain(&verifiers) {
        role.device.check_built()?;
    }
    let (min_cfg, max_cfg) = spec.new_token_budget(&ws.config.prompts);
    let max_new = req.max_new_tokens.unwrap_or(max_cfg);
    // The config's budget is validated when it loads; a request's is checked here, before
    // the run creates its results directory.
    ensure!(max_new >= 1, "--max-tokens {max_new}: must be at least 1");
    let min_new = match req.min_new_tokens {
        Some(min) => {
            ensure!(
                min <= max_new,
                "--min-tokens {min} exceeds the maximum of {max_new} new tokens"
            );
            min
        }
        // The experiment's minimum, within a smaller --max-tokens.
        None => min_cfg.min(max_new),
    };
    let trials = req.trials.unwrap_or(spec.trials);
    ensure!(
        (1..=crate::record::limits::MAX_TRIALS).contains(&trials),
        "--trials {trials}: expected 1..={}",
        crate::record::limits::MAX_TRIALS
    );
    ensure!(
        req.jobs >= 1,
        "--jobs {}: at least one trial must run at a time",
        req.jobs
    );
    let base_seed = req.seed.or(spec.seed).unwrap_or(0);
    let segment = segment_settings(spec, req)?;
    // As many distinct prompts as trials (unless the experiment fixes a count), drawn with the
    // run's seed: `--trials 7 --seed 1` gets seven prompts of seed 1's draw.
    let prompts = spec.select_prompts(&ws.config.prompts, trials, base_seed);
    ensure!(
        !prompts.is_empty(),
        "experiment {}: no prompts selected",
        req.experiment
    );
    Ok((0..trials)
        .map(|trial| {
            let prompt = prompts[trial % prompts.len()];
            // A planted trial's bundle is a known-bad one: the requester expects REJECT.
            let planted = spec
                .plant
                .as_ref()
                .filter(|plant| plant.planted(base_seed, trial));
            TrialPlan {
                experiment: req.experiment.clone(),
                trial,
                prompt: PromptInfo {
                    category: spec.prompts.category.to_string(),
                    id: prompt.id.clone(),
                    text: prompt_display(prompt),
                },
                messages: prompt_messages(prompt),
                inference: inference.clone(),
                verifiers: verifiers.clone(),
                sampling: SamplingParams {
                    temperature: spec.temperature.unwrap_or(0.7),
                    top_p: spec.top_p.unwrap_or(0.9),
                    top_k: spec.top_k.unwrap_or(0),
                    repetition_penalty: 1.1,
                    seed: base_seed + trial as u64,
                    min_new_tokens: min_new,
                    max_new_tokens: max_new,
                },
                policy: spec.policy.clone(),
                cutoff: spec.cutoff,
                expected: match planted {
                    Some(_) => TrialVerdict::Reject,
                    None => spec.expected,
                },
                chunk: req.chunk.or(spec.chunk),
                spec_layers: spec.layers.clone(),
                segment,
                nonce: None,
                cheat: match planted {
                    Some(plant) => Some(plant.cheat.clone()),
                    None => spec.inference.cheat.clone(),
                },
                lazy_verifiers: spec.lazy_verifiers(verifiers.len()),
            }
        })
        .collect())
}

fn prompt_messages(p: &Prompt) -> Vec<(String, String)> {
    match (&p.messages, &p.text) {
        (Some(m), _) => m
            .iter()
            .map(|m| (m.role.as_str().to_string(), m.content.clone()))
            .collect(),
        (None, Some(t)) => vec![(ChatRole::User.as_str().to_string(), t.clone())],
        (None, None) => Vec::new(),
    }
}

fn prompt_display(p: &Prompt) -> String {
    match (&p.text, &p.messages) {
        (Some(t), _) => t.clone(),
        (None, Some(m)) => m.last().map(|m| m.content.clone()).unwrap_or_default(),
        (None, None) => String::new(),
    }
}

/// What each verifier challenges in segment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSettings {
    /// Decoder layers per verifier (c).
    pub layers: usize,
    /// Generated tokens whose token check is challenged (None: every one).
    pub token_positions: Option<usize>,
    /// Time one full prefill per verifier role beside the segments (a reference, never part of
    /// the verdict; docs/commitment.md).
    pub reference_prefill: bool,
}

impl Default for SegmentSettings {
    fn default() -> Self {
        SegmentSettings {
            layers: DEFAULT_CHALLENGED_LAYERS,
            token_positions: None,
            reference_prefill: true,
        }
    }
}

/// The segment settings of a run: the command line's or console's choice over the
/// experiment's; None for full mode. A count of layers beyond the model is refused when the
/// challenge is drawn (the model's depth is known only once it is loaded).
pub fn segment_settings(
    spec: &ExperimentSpec,
    req: &RunRequest,
) -> Result<Option<SegmentSettings>> {
    if req.mode.unwrap_or(spec.mode).is_full() {
        ensure!(
            req.challenge_layers.is_none() && req.token_positions.is_none(),
            "--challenge-layers and --token-positions choose a segment verification's \
             challenge: pass --mode segment (experiment {} verifies in full mode)",
            req.experiment
        );
        return Ok(None);
    }
    let layers = req
        .challenge_layers
        .or(spec.challenge_layers)
        .unwrap_or(DEFAULT_CHALLENGED_LAYERS);
    ensure!(
        layers >= 1,
        "challenge layers {layers}: each verifier challenges at least one layer"
    );
    ensure!(
        req.token_positions != Some(0),
        "--token-positions 0: check at least one generated token"
    );
    Ok(Some(SegmentSettings {
        layers,
        token_positions: req.token_positions,
        reference_prefill: !req.no_reference_prefill && spec.reference_prefill.unwrap_or(true),
    }))
}
