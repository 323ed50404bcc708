//! Runs experiments: per trial one inference, then the verifiers concurrently on background
//! tasks; writes one JSON per trial and a summary per run. Also the two halves on their own
//! (`--step infer` writes bundles; `--step verify` checks bundles made elsewhere, in
//! `verify_step.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};
use tokio::task::JoinSet;

use super::bundle::write_bundle;
pub use super::config::Role;
use super::config::{ChatRole, ExperimentSpec, GpuUse, Prompt};
use super::results::*;
pub use super::trial::{
    check_manifest_against_verifier, infer_trial, render_prompt, verify_trial, VerifySettings,
};
pub use super::workspace::Workspace;
use crate::engine::events::{CancelToken, EngineEvent, EventSink, LogLevel};
use crate::engine::sampling::SamplingParams;
use crate::model::device::{DeviceKind, DeviceProfile};
use crate::stats::policy::PolicyConfig;
use crate::util::{unix_now, write_file_atomic};

/// Which half of a trial to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunStep {
    #[default]
    Both,
    /// Write inference bundles only.
    Infer,
    /// Verify bundles written by `Infer` (possibly on another machine).
    Verify,
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
    /// The nonce of the request this trial serves (`infer --request`); None: a fresh one.
    pub nonce: Option<String>,
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

/// Plans every trial of a run.
pub fn plan_trials(ws: &Workspace, req: &RunRequest) -> Result<Vec<TrialPlan>> {
    let spec = ws.config.experiments.get(&req.experiment).ok_or_else(|| {
        anyhow!(
            "unknown experiment `{}`; known: {}",
            req.experiment,
            ws.config.experiments.experiment_names().join(", ")
        )
    })?;
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
        (1..=super::config::MAX_TRIALS).contains(&trials),
        "--trials {trials}: expected 1..={}",
        super::config::MAX_TRIALS
    );
    ensure!(
        req.jobs >= 1,
        "--jobs {}: at least one trial must run at a time",
        req.jobs
    );
    let base_seed = req.seed.or(spec.seed).unwrap_or(0);
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
                expected: spec.expected,
                chunk: req.chunk,
                spec_layers: spec.layers.clone(),
                nonce: None,
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

/// Where a run writes: `<data>/<experiment>/run-<UTC time>[-n]`, never reusing a directory.
pub fn new_run_dir(base: &Path, experiment: &str) -> Result<PathBuf> {
    let parent = base.join(experiment);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let stamp = utc_stamp(unix_now());
    for n in 0..1000 {
        let name = if n == 0 {
            format!("run-{stamp}")
        } else {
            format!("run-{stamp}-{n}")
        };
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!(
        "could not find a free run directory under {}",
        parent.display()
    )
}

/// `YYYYMMDD-HHMMSS` in UTC (no `:` so the name is valid everywhere).
pub fn utc_stamp(secs: u64) -> String {
    let (year, month, day, hour, minute, second) = crate::util::utc_from_unix(secs);
    format!("{year:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}")
}

/// What a finished (or cancelled) run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub summary: Option<RunSummary>,
    pub summary_path: Option<PathBuf>,
    pub trials: Vec<TrialResult>,
    pub out_dir: PathBuf,
}

/// Runs an experiment (or one of its halves), writing results as each trial finishes.
pub async fn run_experiment(
    ws: Arc<Workspace>,
    req: RunRequest,
    sink: EventSink,
    cancel: CancelToken,
) -> Result<RunOutcome> {
    let outcome = run_inner(ws, &req, &sink, &cancel).await;
    match &outcome {
        Ok(o) => sink.emit(EngineEvent::RunDone {
            summary_path: o.summary_path.clone(),
            cancelled: cancel.is_cancelled(),
        }),
        Err(e) => sink.emit(EngineEvent::Failed {
            message: format!("{e:#}"),
        }),
    }
    outcome
}

async fn run_inner(
    ws: Arc<Workspace>,
    req: &RunRequest,
    sink: &EventSink,
    cancel: &CancelToken,
) -> Result<RunOutcome> {
    let started_at = unix_now();
    let spec = ws.config.experiments.get(&req.experiment).cloned();
    if req.step == RunStep::Verify {
        let from = req
            .from
            .as_ref()
            .ok_or_else(|| anyhow!("--step verify needs --from DIR"))?;
        return super::verify_step::verify_bundles(ws, req, from, started_at, sink, cancel).await;
    }
    let plans = plan_trials(&ws, req)?;
    let spec = spec.expect("plan_trials checked the experiment exists");
    let out_guard = results_dir(&ws, req)?;
    let out_dir = out_guard.path().to_path_buf();
    sink.log(
        LogLevel::Info,
        format!(
            "{}: {} trial(s), results in {}",
            req.experiment,
            plans.len(),
            out_dir.display()
        ),
    );
    let jobs = req.jobs.max(1);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = JoinSet::new();
    for plan in plans.clone() {
        // Permits are taken here, in trial order, so trials start in order.
        let permit = semaphore.clone().acquire_owned().await?;
        if cancel.is_cancelled() {
            break;
        }
        let (ws, sink, cancel, out_dir) =
            (ws.clone(), sink.clone(), cancel.clone(), out_dir.clone());
        let step = req.step;
        tasks.spawn(async move {
            let _permit = permit;
            // Never two jobs on one GPU at once: a trial holds the locks of the GPUs it uses.
            let mut gpus: Vec<DeviceKind> = std::iter::once(&plan.inference)
                .chain(&plan.verifiers)
                .filter(|r| r.device.is_gpu())
                .map(|r| r.device.kind)
                .collect();
            gpus.sort_by_key(|k| format!("{k:?}"));
            gpus.dedup();
            let locks: Vec<_> = gpus.iter().map(|k| ws.gpu_lock(*k)).collect();
            let mut _guards = Vec::new();
            for l in &locks {
                _guards.push(l.clone().lock_owned().await);
            }
            if cancel.is_cancelled() {
                return Ok::<_, anyhow::Error>(None);
            }
            run_one_trial(ws, plan, step, &out_dir, sink, cancel)
                .await
                .map(Some)
        });
    }
    let mut trials = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| anyhow!("trial task failed: {e}"))? {
            Ok(Some(Some(t))) => trials.push(t),
            Ok(_) => {}
            Err(e) => {
                sink.log(LogLevel::Error, format!("{e:#}"));
                first_error.get_or_insert(e);
            }
        }
    }
    trials.sort_by_key(|t| t.trial);
    if req.step == RunStep::Infer {
        if let Some(e) = first_error {
            return Err(e);
        }
        return Ok(RunOutcome {
            summary: None,
            summary_path: None,
            trials,
            out_dir,
        });
    }
    // Whatever was computed is kept, even when a trial failed or the run was cancelled.
    let complete = !cancel.is_cancelled() && first_error.is_none();
    let run = RunContext::of(req, &spec, started_at, plans.len());
    let (summary, summary_path) = write_summary(&out_dir, &run, &trials, complete)?;
    if let Some(e) = first_error {
        // Only where something was written: a run that failed before any trial finished or
        // any bundle was saved leaves nothing behind (out_guard removes its folder).
        if dir_is_empty(&out_dir) {
            return Err(e);
        }
        return Err(e.context(format!("partial results kept in {}", out_dir.display())));
    }
    if summary.is_none() && cancel.is_cancelled() && !dir_is_empty(&out_dir) {
        sink.log(
            LogLevel::Warn,
            format!(
                "{}: cancelled before any trial finished, so there is no summary; the interrupted \
                 inference is kept as a bundle in {}",
                req.experiment,
                out_dir.display(),
            ),
        );
    }
    Ok(RunOutcome {
        summary_path,
        summary,
        trials,
        out_dir,
    })
}

async fn run_one_trial(
    ws: Arc<Workspace>,
    plan: TrialPlan,
    step: RunStep,
    out_dir: &Path,
    sink: EventSink,
    cancel: CancelToken,
) -> Result<Option<TrialResult>> {
    let started_at = unix_now();
    let (ws2, plan2, sink2, cancel2) = (ws.clone(), plan.clone(), sink.clone(), cancel.clone());
    let (manifest, states) =
        tokio::task::spawn_blocking(move || infer_trial(&ws2, &plan2, None, &sink2, &cancel2))
            .await
            .map_err(|e| anyhow!("inference task failed: {e}"))??;
    // A cancelled inference is kept as a bundle: `run --step verify --from` can check it later,
    // rather than a trial verdict computed from no checks.
    let cancelled = cancel.is_cancelled();
    if step == RunStep::Infer || cancelled {
        let dir = out_dir.join(trial_dir_name(plan.trial));
        let tokens = manifest.output_ids.len();
        let layers = manifest.layers.clone();
        write_bundle(&dir, manifest, &states)?;
        let what = if cancelled {
            format!("cancelled after {tokens} tokens; ")
        } else {
            String::new()
        };
        // The hint must work for this bundle whatever its roles (the console may have edited
        // them, and an experiment admits only its own inferencer): `verify` judges any bundle
        // by its declared precision, and is told the layers it committed.
        let check = match (cancelled, tokens) {
            (false, _) => String::new(),
            (true, 0) => " (no token was generated: there is nothing to verify)".into(),
            (true, _) => format!(" (`{}` checks it)", verify_command(&dir, &layers)),
        };
        sink.log(
            LogLevel::Info,
            format!(
                "trial {}: {what}bundle written to {}{check}",
                plan.trial,
                dir.display()
            ),
        );
        return Ok(None);
    }
    let settings = VerifySettings {
        verifiers: plan.verifiers.clone(),
        policy: plan.policy.clone(),
        cutoff: plan.cutoff,
        expected: plan.expected,
        chunk: plan.chunk,
        // This run's own inference: its precision is the plan's, not a claim.
        trust_native_claim: true,
        // The run's own request (prompts.yaml, the experiment's sampling), never the bundle's.
        token_sampling: Some(plan.sampling.clone()),
    };
    let ws_for_decision = ws.clone();
    let mut result = verify_trial(
        ws,
        Arc::new(manifest),
        Arc::new(states),
        &settings,
        plan.prompt.clone(),
        sink.clone(),
        cancel.clone(),
    )
    .await?;
    // The trial began with its inference, not with its verification.
    result.started_at = started_at;
    result.request_checked = true;
    super::decision::decide_configured(&ws_for_decision, &mut result, &sink);
    write_trial(out_dir, &result)?;
    sink.emit(EngineEvent::TrialDone {
        trial: plan.trial,
        result: Box::new(result.clone()),
    });
    Ok(Some(result))
}

/// `--out DIR` (new or empty), else a new run directory under the data directory; either is
/// removed again if the run ends without writing anything into it.
pub(super) fn results_dir(ws: &Workspace, req: &RunRequest) -> Result<crate::util::OutputDir> {
    match &req.out {
        Some(dir) => crate::util::create_empty_dir(dir, "--out"),
        None => new_run_dir(&ws.data_dir, &req.experiment).map(crate::util::OutputDir::created),
    }
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// What a run summary says about the run itself, beside its trials.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub experiment: String,
    pub description: String,
    pub cutoff: f64,
    pub expected: TrialVerdict,
    /// Unix seconds when the run began.
    pub started_at: u64,
    /// Trials the run set out to make (or bundles it set out to verify).
    pub planned_trials: usize,
    /// Trials run side by side.
    pub jobs: usize,
}

impl RunContext {
    pub(super) fn of(
        req: &RunRequest,
        spec: &ExperimentSpec,
        started_at: u64,
        planned_trials: usize,
    ) -> Self {
        RunContext {
            experiment: req.experiment.clone(),
            description: spec.description.clone(),
            cutoff: spec.cutoff,
            expected: spec.expected,
            started_at,
            planned_trials,
            // Trials that could actually run side by side.
            jobs: req.jobs.clamp(1, planned_trials.max(1)),
        }
    }
}

/// Summarizes the trials that finished and writes `summary.json` (when at least one did).
pub(super) fn write_summary(
    out_dir: &Path,
    run: &RunContext,
    trials: &[TrialResult],
    complete: bool,
) -> Result<(Option<RunSummary>, Option<PathBuf>)> {
    let summary = summarize(run, trials, complete);
    let Some(written) = &summary else {
        return Ok((None, None));
    };
    let path = out_dir.join("summary.json");
    write_file_atomic(&path, &serde_json::to_vec_pretty(written)?)?;
    Ok((summary, Some(path)))
}

/// The command that verifies one bundle as it is: `verify` takes its declared precision and
/// is told to require exactly the layers it committed.
pub fn verify_command(bundle: &Path, layers: &[usize]) -> String {
    let layers: Vec<String> = layers.iter().map(usize::to_string).collect();
    format!(
        "verillm-tui verify {} --layers {}",
        crate::util::shell_quote(&bundle.to_string_lossy()),
        layers.join(",")
    )
}

pub fn trial_dir_name(trial: usize) -> String {
    format!("trial_{trial:03}")
}

pub fn trial_file_name(trial: usize) -> String {
    format!("trial_{trial:03}.json")
}

pub(super) fn write_trial(out_dir: &Path, result: &TrialResult) -> Result<()> {
    let path = out_dir.join(trial_file_name(result.trial));
    write_file_atomic(&path, &serde_json::to_vec_pretty(result)?)
}

/// The run summary over the trials that finished.
pub fn summarize(run: &RunContext, trials: &[TrialResult], complete: bool) -> Option<RunSummary> {
    let expected = run.expected;
    let first = trials.first()?;
    let n = trials.len() as f64;
    let overheads: Vec<f64> = trials
        .iter()
        .flat_map(|t| t.verifiers.iter().map(|v| v.overhead.percentage))
        .collect();
    let passes = trials
        .iter()
        .filter(|t| t.summary.final_verdict == TrialVerdict::Pass)
        .count() as f64;
    Some(RunSummary {
        format_version: RESULT_FORMAT_VERSION,
        experiment: run.experiment.clone(),
        description: run.description.clone(),
        started_at: run.started_at,
        pairing: first.pairing.clone(),
        inference: first.inference.role.clone(),
        verifiers: first.verifiers.iter().map(|v| v.role.clone()).collect(),
        cutoff: run.cutoff,
        expected_verdict: expected,
        trials: trials.len(),
        planned_trials: Some(run.planned_trials),
        jobs: Some(run.jobs),
        trial_files: trials.iter().map(|t| trial_file_name(t.trial)).collect(),
        aggregate: Aggregate {
            avg_accept_rate: trials
                .iter()
                .map(|t| t.summary.avg_accept_rate)
                .sum::<f64>()
                / n,
            avg_overhead_percentage: overheads.iter().sum::<f64>() / overheads.len().max(1) as f64,
            pass_rate: passes / n,
            detection_rate: (expected == TrialVerdict::Reject).then_some(1.0 - passes / n),
            expectation_rate: trials.iter().filter(|t| t.summary.expectation_held).count() as f64
                / n,
        },
        // A trial cut short (cancelled inference or verifier, no checks) still counts above,
        // but the run is then not a complete measurement.
        complete: complete && trials.iter().all(|t| t.complete),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_cut_short_makes_its_run_summary_incomplete() {
        let mut trials: Vec<TrialResult> = (0..3)
            .map(|i| crate::plot::tests::trial("exp1", i, true, &[8, 16], 4))
            .collect();
        let run = RunContext {
            experiment: "exp1".into(),
            description: String::new(),
            cutoff: 0.9,
            expected: TrialVerdict::Pass,
            started_at: 1_700_000_000,
            planned_trials: 4,
            jobs: 1,
        };
        let summary = |trials: &[TrialResult]| summarize(&run, trials, true).unwrap();
        let whole = summary(&trials);
        assert!(whole.complete);
        // The run's own start and plan, not its first trial's.
        assert_eq!(whole.started_at, 1_700_000_000);
        assert_eq!((whole.trials, whole.planned_trials), (3, Some(4)));
        trials[1].complete = false;
        let cut_short = summary(&trials);
        assert!(!cut_short.complete);
        assert_eq!(cut_short.trials, 3);
        assert_eq!(
            cut_short.trial_files,
            ["trial_000.json", "trial_001.json", "trial_002.json"]
        );
    }

    #[test]
    fn utc_stamps_have_no_colons() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(1_795_700_000), "20261126-133320");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
    }
}
