//! Executes a planned run (`plan.rs`): per trial one inference, then the verifiers concurrently
//! on background tasks; each result goes to `output.rs` as it finishes. Also the two halves on their own
//! (`--step infer` writes bundles; `--step verify` checks bundles made elsewhere, in
//! `verify_step.rs`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tokio::task::JoinSet;

use super::bundle::write_bundle;
use super::output::{
    results_dir, trial_dir_name, verify_command, write_summary, write_trial, RunContext, RunOutcome,
};
use super::plan::{experiment_spec, plan_trials_of, RunRequest, RunStep, TrialPlan};
use super::trial::{infer_trial, verify_trial, VerifySettings};
use super::workspace::Workspace;
use crate::engine::events::{CancelToken, EngineEvent, EventSink, LogLevel};
use crate::model::device::DeviceKind;
use crate::record::results::*;
use crate::util::unix_now;

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
    if req.step == RunStep::Verify {
        let from = req
            .from
            .as_ref()
            .ok_or_else(|| anyhow!("--step verify needs --from DIR"))?;
        return super::verify_step::verify_bundles(ws, req, from, started_at, sink, cancel).await;
    }
    if matches!(req.step, RunStep::Challenge | RunStep::Open) {
        return super::protocol::exchange_step(&ws, req, sink);
    }
    let spec = experiment_spec(&ws, &req.experiment)?.clone();
    let plans = plan_trials_of(&ws, &spec, req)?;
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
    if let Some(settings) = plan.segment {
        let infer_only = step == RunStep::Infer;
        return super::protocol::run_segment_trial(
            ws, plan, settings, infer_only, out_dir, sink, cancel,
        )
        .await;
    }
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
        lazy: plan.lazy_verifiers.clone(),
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

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}
