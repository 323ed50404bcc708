//! What each Slurm task runs (`verillm-tui slurm-task infer|verify|collect RUN_DIR`): one
//! trial's inference, one trial's verification, or the collect step. Each output is written
//! once and appears whole (a bundle by a directory rename, a result by a file rename); a task
//! whose output is already there does nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::super::output::{summarize, trial_dir_name, write_trial, RunContext};
use super::super::plan::{plan_trials, resolve_roles};
use super::super::trial::VerifySettings;
use super::super::workspace::Workspace;
use super::{
    check_trial, read_json_bounded, write_json, JobFolder, MAX_TRIAL_RESULT_BYTES,
    SLURM_FORMAT_VERSION,
};
use crate::engine::events::{CancelToken, EventSink};
use crate::record::results::{RunSummary, TrialResult};

/// What a task did.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// Wrote this output.
    Wrote(PathBuf),
    /// The output was already there (an earlier task made it): nothing was run.
    AlreadyThere(PathBuf),
}

/// Inference of one trial: its bundle is written in `scratch` (node-local), then copied next
/// to its final place in the run folder and renamed into it whole.
pub async fn infer_task(
    ws: Arc<Workspace>,
    folder: &JobFolder,
    trial: usize,
    scratch: &Path,
    sink: EventSink,
) -> Result<TaskOutcome> {
    let plan = folder.read_plan()?;
    check_trial(&plan, trial)?;
    let target = folder.bundle_dir(trial);
    if folder.has_bundle(trial) {
        return Ok(TaskOutcome::AlreadyThere(target));
    }
    let req = plan.request()?;
    let mut plans = plan_trials(&ws, &req)?;
    ensure!(
        plans.len() == plan.trials,
        "planned {} trials, but the plan says {}",
        plans.len(),
        plan.trials
    );
    let trial_plan = plans.swap_remove(trial);
    let work = scratch.join(trial_dir_name(trial));
    let into = work.clone();
    tokio::task::spawn_blocking(move || super::segment::infer_into(&ws, &trial_plan, &into, &sink))
        .await
        .map_err(|e| anyhow!("inference task failed: {e}"))??;
    // Staged beside its final place (the same filesystem), so the rename is atomic.
    let staging = folder.bundles_dir().join(format!(
        ".{}.partial-{}",
        trial_dir_name(trial),
        std::process::id()
    ));
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    // The tensors (or the store) first: a manifest is what marks a bundle present.
    let staged = super::segment::copy_bundle(&work, &staging);
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if folder.has_bundle(trial) {
        let _ = std::fs::remove_dir_all(&staging);
        return Ok(TaskOutcome::AlreadyThere(target));
    }
    // An empty directory at the name (none is made by this tool) would be replaced; one with
    // anything in it makes the rename fail, and nothing is overwritten.
    if let Err(e) = std::fs::rename(&staging, &target) {
        let _ = std::fs::remove_dir_all(&staging);
        bail!(
            "moving the bundle into {}: {e} (is something else there?)",
            target.display()
        );
    }
    Ok(TaskOutcome::Wrote(target))
}

/// Verification of one trial by every verifier of the experiment, from its bundle in the run
/// folder (held to the experiment as `run --step verify` holds bundles).
pub async fn verify_task(
    ws: Arc<Workspace>,
    folder: &JobFolder,
    trial: usize,
    sink: EventSink,
) -> Result<TaskOutcome> {
    let plan = folder.read_plan()?;
    check_trial(&plan, trial)?;
    let target = folder.trial_result_path(trial);
    if folder.has_result(trial) {
        return Ok(TaskOutcome::AlreadyThere(target));
    }
    let bundle = folder.bundle_dir(trial);
    ensure!(
        folder.has_bundle(trial),
        "trial {trial}: no bundle at {} (its inference task did not finish)",
        bundle.display()
    );
    let req = plan.request()?;
    let spec = ws
        .config
        .experiments
        .get(&plan.experiment)
        .cloned()
        .ok_or_else(|| anyhow!("plan.json: unknown experiment `{}`", plan.experiment))?;
    let (_, verifiers) = resolve_roles(&spec, &req)?;
    for role in &verifiers {
        role.device.check_built()?;
    }
    let settings = VerifySettings {
        lazy: Vec::new(),
        verifiers,
        policy: spec.policy.clone(),
        cutoff: spec.cutoff,
        expected: spec.expected,
        chunk: None,
        // The bundle is held to the experiment's inferencer precision before it is verified.
        trust_native_claim: true,
        // Set from the trial's plan (the request the experiment makes), never from the bundle.
        token_sampling: None,
    };
    // The requests of the run, rebuilt from the plan as the inference tasks made them.
    let plans = plan_trials(&ws, &req)?;
    if plans.get(trial).is_some_and(|p| p.segment.is_some()) {
        super::segment::exchange(&ws, &req, &bundle, &sink)?;
    }
    let result = super::super::verify_step::verify_one_bundle(
        &ws,
        &req,
        &spec,
        &bundle,
        &[],
        &plans,
        &settings,
        &sink,
        &CancelToken::new(),
    )
    .await?;
    ensure!(
        result.trial == trial,
        "{}: the bundle says trial {}, not {trial}",
        bundle.display(),
        result.trial
    );
    if folder.has_result(trial) {
        return Ok(TaskOutcome::AlreadyThere(target));
    }
    write_trial(&folder.root, &result)?;
    Ok(TaskOutcome::Wrote(target))
}

/// The Slurm state of one task of a missing trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub stage: String,
    /// `ARRAYJOB_TRIAL`, as sacct and scontrol name array tasks.
    pub job_id: String,
    /// e.g. COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY.
    pub state: String,
    /// Where the state came from: sacct, scontrol, or none (Slurm no longer knows the task).
    pub source: String,
}

/// A trial of the plan without a verified result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissingTrial {
    pub trial: usize,
    /// What it lacks: `inference` (no bundle) or `verification` (a bundle, no result).
    pub lacking: String,
    /// Its tasks in the latest submission that included it.
    pub tasks: Vec<TaskState>,
}

/// `slurm/collect.json`: what the collect step found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectReport {
    pub format_version: u32,
    pub experiment: String,
    pub collected_at: u64,
    pub planned_trials: usize,
    pub landed: Vec<usize>,
    pub missing: Vec<MissingTrial>,
    /// The job ids of every submission, oldest first.
    pub submissions: Vec<Vec<String>>,
}

/// The run summary a collect step writes: the usual summary (which every reader of
/// summary.json reads unchanged) plus the trials that did not land.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectedSummary {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub missing_trials: Vec<MissingTrial>,
}

/// How long the collect step waits for job accounting to catch up. slurmctld hands a job's end
/// to slurmdbd asynchronously, so a task that ended a moment before the collect job started
/// (one cancelled while it ran, and the verification Slurm then cancelled) can be unknown to
/// `sacct` yet, or still RUNNING there.
pub const ACCOUNTING_SETTLE: Duration = Duration::from_secs(10);

/// The collect step: summary.json over the trials that landed, collect.json naming the others
/// with their Slurm states (waiting up to `settle` for `sacct` to know each task's end). An
/// error when no trial landed (there is no summary to write).
pub fn collect_task(ws: &Workspace, folder: &JobFolder, settle: Duration) -> Result<CollectReport> {
    let plan = folder.read_plan()?;
    let spec = ws
        .config
        .experiments
        .get(&plan.experiment)
        .cloned()
        .ok_or_else(|| anyhow!("plan.json: unknown experiment `{}`", plan.experiment))?;
    let submissions = folder.read_submissions()?;
    let mut trials: Vec<TrialResult> = Vec::new();
    let mut missing_numbers = Vec::new();
    for trial in 0..plan.trials {
        let path = folder.trial_result_path(trial);
        if !path.is_file() {
            missing_numbers.push(trial);
            continue;
        }
        let result: TrialResult = read_json_bounded(&path, MAX_TRIAL_RESULT_BYTES)?;
        result
            .check_consistency()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        ensure!(
            result.trial == trial && result.experiment == plan.experiment,
            "{}: holds trial {} of {}, not trial {trial} of {}",
            path.display(),
            result.trial,
            result.experiment,
            plan.experiment
        );
        trials.push(result);
    }
    // The tasks of each missing trial in the latest submission that included it.
    let mut wanted: Vec<(usize, &'static str, String)> = Vec::new();
    for &trial in &missing_numbers {
        if let Some(sub) = submissions.iter().rev().find(|s| s.trials.contains(&trial)) {
            if let Some(job) = sub.infer.as_ref().filter(|j| j.trials.contains(&trial)) {
                wanted.push((trial, "inference", format!("{}_{trial}", job.job_id)));
            }
            for job in sub.verify.iter().filter(|j| j.trials.contains(&trial)) {
                wanted.push((trial, "verification", format!("{}_{trial}", job.job_id)));
            }
        }
    }
    let ids: Vec<String> = wanted.iter().map(|(_, _, id)| id.clone()).collect();
    let states = slurm_states(&ids, settle);
    let missing: Vec<MissingTrial> = missing_numbers
        .iter()
        .map(|&trial| MissingTrial {
            trial,
            lacking: if folder.has_bundle(trial) {
                "verification"
            } else {
                "inference"
            }
            .to_string(),
            tasks: wanted
                .iter()
                .filter(|(t, _, _)| *t == trial)
                .map(|(_, stage, id)| {
                    let (state, source) = states
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| ("UNKNOWN".to_string(), "none".to_string()));
                    TaskState {
                        stage: stage.to_string(),
                        job_id: id.clone(),
                        state,
                        source,
                    }
                })
                .collect(),
        })
        .collect();
    let report = CollectReport {
        format_version: SLURM_FORMAT_VERSION,
        experiment: plan.experiment.clone(),
        collected_at: crate::util::unix_now(),
        planned_trials: plan.trials,
        landed: trials.iter().map(|t| t.trial).collect(),
        missing: missing.clone(),
        submissions: submissions.iter().map(|s| s.job_ids()).collect(),
    };
    write_json(&folder.collect_report_path(), &report)?;
    let run = RunContext {
        experiment: plan.experiment.clone(),
        description: spec.description.clone(),
        cutoff: spec.cutoff,
        expected: spec.expected,
        started_at: plan.created_at,
        planned_trials: plan.trials,
        // Each task had its own allocation.
        jobs: 1,
    };
    let Some(summary) = summarize(&run, &trials, missing.is_empty()) else {
        bail!(
            "no trial of {} landed, so there is no summary; {} names each task's Slurm state",
            folder.root.display(),
            folder.collect_report_path().display()
        );
    };
    write_json(
        &folder.summary_path(),
        &CollectedSummary {
            summary,
            missing_trials: missing,
        },
    )?;
    Ok(report)
}

/// The state of each array task (`JOB_INDEX`): from sacct where accounting is kept, else from
/// the controller's memory of recent jobs (`scontrol show job`); (state, source) by id. Every
/// task asked about has ended (the collect job runs after them), so while sacct does not know
/// a task or knows it unfinished, it is asked again, once a second, for up to `settle`.
pub fn slurm_states(ids: &[String], settle: Duration) -> BTreeMap<String, (String, String)> {
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let deadline = Instant::now() + settle;
    let mut from_sacct = BTreeMap::new();
    // None: no sacct, or no accounting on this cluster (sacct then fails): nothing to wait for.
    while let Some(answer) = sacct_states(ids) {
        from_sacct = answer;
        let settled = ids
            .iter()
            .all(|id| from_sacct.get(id).is_some_and(|s| state_is_final(s)));
        if settled || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    ids.iter()
        .filter_map(|id| {
            let state = pick_state(from_sacct.get(id).map(String::as_str), || {
                let out = Command::new("scontrol")
                    .args(["show", "job", "-o", id])
                    .output()
                    .ok()?;
                parse_scontrol_state(&String::from_utf8_lossy(&out.stdout))
            })?;
            Some((id.clone(), state))
        })
        .collect()
}

/// `sacct`'s states of `ids`, or None where it cannot answer.
fn sacct_states(ids: &[String]) -> Option<BTreeMap<String, String>> {
    let out = Command::new("sacct")
        .args(["-n", "-P", "-X", "-o", "JobID,State", "-j", &ids.join(",")])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(
        parse_sacct(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .filter(|(id, _)| ids.contains(id))
            .collect(),
    )
}

/// Whether a job state is one a job ends in (not PENDING, RUNNING, COMPLETING and the like).
pub fn state_is_final(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "OUT_OF_MEMORY"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "REVOKED"
    )
}

/// A task's (state, source): sacct's final state, else the controller's, else whatever sacct
/// said (an unfinished state it has not updated yet is still better than none).
fn pick_state(
    sacct: Option<&str>,
    scontrol: impl FnOnce() -> Option<String>,
) -> Option<(String, String)> {
    if let Some(state) = sacct.filter(|s| state_is_final(s)) {
        return Some((state.to_string(), "sacct".to_string()));
    }
    if let Some(state) = scontrol() {
        return Some((state, "scontrol".to_string()));
    }
    sacct.map(|s| (s.to_string(), "sacct".to_string()))
}

/// `JobID|State` lines of `sacct -P`; a state such as `CANCELLED by 0` is cut to its word.
pub fn parse_sacct(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (id, state) = line.split_once('|')?;
            let state = state.split_whitespace().next()?;
            Some((id.trim().to_string(), state.to_string()))
        })
        .collect()
}

/// `JobState=` of `scontrol show job -o` (one line per job).
pub fn parse_scontrol_state(text: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|field| field.strip_prefix("JobState="))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::slurm::submit::{ArrayJob, Submission};
    use crate::experiment::slurm::{read_folder_json, JobPlan, SlurmOptions};

    /// The collect step over a folder where trial 0 landed and trial 1 did not: the summary is
    /// the one every reader of summary.json reads, incomplete, naming trial 1 missing.
    #[test]
    fn collect_summarizes_what_landed_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let folder = JobFolder::new(dir.path().join("exp3").join("run-1"));
        let plan = JobPlan {
            format_version: SLURM_FORMAT_VERSION,
            experiment: "exp3".into(),
            trials: 2,
            verifiers: None,
            max_new_tokens: Some(8),
            min_new_tokens: None,
            seed: None,
            gpu: None,
            binary: "/bin/verillm-tui".into(),
            model_dir: "/m".into(),
            threads: None,
            options: SlurmOptions::default(),
            created_at: 1_796_651_000,
            protocol: Default::default(),
        };
        folder.create(&plan, None).unwrap();
        // Job ids no cluster has: their states are unknown, and say so.
        let submission = Submission {
            submitted_at: 1_796_651_000,
            trials: vec![0, 1],
            infer: Some(ArrayJob {
                job_id: "987654321".into(),
                trials: vec![0, 1],
            }),
            verify: vec![ArrayJob {
                job_id: "987654322".into(),
                trials: vec![0, 1],
            }],
            collect_job: "987654323".into(),
        };
        write_json(&folder.submissions_path(), &vec![submission]).unwrap();
        let landed = crate::testutil::trials::trial("exp3", 0, false, &[8, 16], 4);
        write_json(&folder.trial_result_path(0), &landed).unwrap();
        let ws = Workspace::new(
            crate::experiment::config::ConfigSet::builtin().unwrap(),
            dir.path().into(),
            dir.path().into(),
        );

        let report = collect_task(&ws, &folder, Duration::ZERO).unwrap();
        assert_eq!(report.landed, vec![0]);
        assert_eq!(report.missing.len(), 1);
        let missing = &report.missing[0];
        assert_eq!((missing.trial, missing.lacking.as_str()), (1, "inference"));
        let ids: Vec<&str> = missing.tasks.iter().map(|t| t.job_id.as_str()).collect();
        assert_eq!(ids, ["987654321_1", "987654322_1"]);
        assert!(missing
            .tasks
            .iter()
            .all(|t| t.state == "UNKNOWN" && t.source == "none"));

        // Read back as a plain run summary, as the console's results view and plot read it.
        let summary: RunSummary = read_folder_json(&folder.summary_path()).unwrap();
        summary.check_consistency().unwrap();
        assert!(!summary.complete);
        assert_eq!((summary.trials, summary.planned_trials), (1, Some(2)));
        assert_eq!(summary.trial_files, ["trial_000.json"]);
        let collected: CollectedSummary = read_folder_json(&folder.summary_path()).unwrap();
        assert_eq!(collected.missing_trials, report.missing);
        crate::plot::plot_files(&[folder.summary_path()], &dir.path().join("plots")).unwrap();

        // Nothing landed at all: no summary, an error naming the report.
        std::fs::remove_file(folder.trial_result_path(0)).unwrap();
        std::fs::remove_file(folder.summary_path()).unwrap();
        let error = collect_task(&ws, &folder, Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(error.contains("collect.json"), "{error}");
        assert!(!folder.summary_path().exists());
    }

    #[test]
    fn slurm_answers_are_read() {
        let sacct = "12_0|COMPLETED\n12_1|CANCELLED by 0\n13_[1-3]|PENDING\n";
        assert_eq!(
            parse_sacct(sacct),
            vec![
                ("12_0".to_string(), "COMPLETED".to_string()),
                ("12_1".to_string(), "CANCELLED".to_string()),
                ("13_[1-3]".to_string(), "PENDING".to_string()),
            ]
        );
        let scontrol = "JobId=5 ArrayJobId=2 ArrayTaskId=1 JobName=v UserId=root(0) \
                        JobState=CANCELLED Reason=DependencyNeverSatisfied Dependency=(null)";
        assert_eq!(parse_scontrol_state(scontrol).as_deref(), Some("CANCELLED"));
        assert_eq!(
            parse_scontrol_state("slurm_load_jobs error: Invalid job id"),
            None
        );
    }

    /// sacct's answer counts once it is a final state; until then the controller's is taken,
    /// and sacct's stale one only where the controller has forgotten the job.
    #[test]
    fn a_final_state_is_preferred() {
        assert!(state_is_final("CANCELLED") && state_is_final("COMPLETED"));
        assert!(!state_is_final("RUNNING") && !state_is_final("PENDING"));
        let sacct = |s: &str| Some((s.to_string(), "sacct".to_string()));
        let ctld = |s: &str| Some((s.to_string(), "scontrol".to_string()));
        let forgotten = || None;
        assert_eq!(
            pick_state(Some("CANCELLED"), || panic!("not asked")),
            sacct("CANCELLED")
        );
        assert_eq!(
            pick_state(Some("RUNNING"), || Some("CANCELLED".into())),
            ctld("CANCELLED")
        );
        assert_eq!(pick_state(None, || Some("FAILED".into())), ctld("FAILED"));
        assert_eq!(pick_state(Some("RUNNING"), forgotten), sacct("RUNNING"));
        assert_eq!(pick_state(None, forgotten), None);
    }
}
