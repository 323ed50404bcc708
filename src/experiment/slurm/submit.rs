//! Submission: which sbatch calls a run (or a resume) needs, in order, their arguments, and the
//! record of what was submitted (`slurm/submissions.json`).

use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::scripts::shell_quote;
use super::{array_spec, write_json, JobFolder, JobPlan, Stage};

/// One array job as submitted: its Slurm id and the trials (array indices) it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayJob {
    pub job_id: String,
    pub trials: Vec<usize>,
}

/// One `run --slurm` or `--resume`: the jobs it submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub submitted_at: u64,
    /// Trials this submission set out to complete.
    pub trials: Vec<usize>,
    /// Inference tasks (absent when every trial it completes already had its bundle).
    pub infer: Option<ArrayJob>,
    /// Verification tasks: after inference (aftercorr), and for bundles already there, without.
    pub verify: Vec<ArrayJob>,
    pub collect_job: String,
}

impl Submission {
    /// Every job id of the submission, array jobs first.
    pub fn job_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.infer.iter().map(|j| j.job_id.clone()).collect();
        ids.extend(self.verify.iter().map(|j| j.job_id.clone()));
        ids.push(self.collect_job.clone());
        ids
    }
}

/// What one sbatch call waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Dependency {
    None,
    /// Task N of this array after task N of the earlier call (by index) succeeded.
    AfterCorr(usize),
    /// After the earlier calls ended, however they ended.
    AfterAny(Vec<usize>),
}

/// One sbatch call of a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct SbatchCall {
    pub stage: Stage,
    /// Array indices (trial numbers); None for the collect job.
    pub array: Option<Vec<usize>>,
    pub dependency: Dependency,
}

/// The calls that complete `missing` trials: inference for those without a bundle, then
/// verification, then collect. Nothing missing: the collect job alone (it rewrites the summary).
pub fn calls_for(folder: &JobFolder, missing: &[usize]) -> Vec<SbatchCall> {
    let (need_infer, have_bundle): (Vec<usize>, Vec<usize>) =
        missing.iter().partition(|&&t| !folder.has_bundle(t));
    let mut calls = Vec::new();
    if !need_infer.is_empty() {
        calls.push(SbatchCall {
            stage: Stage::Infer,
            array: Some(need_infer.clone()),
            dependency: Dependency::None,
        });
        calls.push(SbatchCall {
            stage: Stage::Verify,
            array: Some(need_infer),
            dependency: Dependency::AfterCorr(0),
        });
    }
    if !have_bundle.is_empty() {
        calls.push(SbatchCall {
            stage: Stage::Verify,
            array: Some(have_bundle),
            dependency: Dependency::None,
        });
    }
    let verify_calls: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].stage == Stage::Verify)
        .collect();
    calls.push(SbatchCall {
        stage: Stage::Collect,
        array: None,
        dependency: if verify_calls.is_empty() {
            Dependency::None
        } else {
            Dependency::AfterAny(verify_calls)
        },
    });
    calls
}

impl SbatchCall {
    /// sbatch's arguments, with the ids of the earlier calls (`ids[i]` of call i).
    pub fn args(&self, folder: &JobFolder, plan: &JobPlan, ids: &[String]) -> Vec<String> {
        let logs = folder.logs_dir();
        let name = self.stage.name();
        let mut args = vec![
            "--parsable".to_string(),
            format!("--chdir={}", folder.root.display()),
        ];
        match &self.array {
            Some(trials) => {
                let mut spec = array_spec(trials);
                if let Some(k) = plan.options.array_parallel {
                    spec.push_str(&format!("%{k}"));
                }
                args.push(format!("--array={spec}"));
                args.push(format!(
                    "--output={}",
                    logs.join(format!("{name}_%A_%a.out")).display()
                ));
            }
            None => args.push(format!(
                "--output={}",
                logs.join(format!("{name}_%j.out")).display()
            )),
        }
        match &self.dependency {
            Dependency::None => {}
            Dependency::AfterCorr(i) => {
                args.push(format!("--dependency=aftercorr:{}", ids[*i]));
                // A task whose inference failed can never start: cancel it instead of leaving
                // it pending forever, so the collect job runs and reports the trial missing.
                args.push("--kill-on-invalid-dep=yes".into());
            }
            Dependency::AfterAny(calls) => {
                let list: Vec<&str> = calls.iter().map(|&i| ids[i].as_str()).collect();
                args.push(format!("--dependency=afterany:{}", list.join(":")));
            }
        }
        if plan.options.hold {
            args.push("--hold".into());
        }
        args.push(folder.script_path(self.stage).display().to_string());
        args
    }
}

/// The submission as shell lines, for `--dry-run`: job ids of earlier calls as `$INFER_JOB` etc.
pub fn dry_run_lines(folder: &JobFolder, plan: &JobPlan, calls: &[SbatchCall]) -> Vec<String> {
    let names: Vec<String> = calls
        .iter()
        .enumerate()
        .map(|(i, call)| format!("${}_JOB{i}", call.stage.name().to_uppercase()))
        .collect();
    calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let args: Vec<String> = call
                .args(folder, plan, &names)
                .into_iter()
                .map(|a| {
                    if a.contains('$') && names.iter().any(|n| a.contains(n.as_str())) {
                        format!("\"{a}\"")
                    } else {
                        shell_quote(&a)
                    }
                })
                .collect();
            format!("{}=$(sbatch {})", &names[i][1..], args.join(" "))
        })
        .collect()
}

/// Runs the calls in order; on a failure, cancels what this submission had already queued.
pub fn submit(
    folder: &JobFolder,
    plan: &JobPlan,
    calls: &[SbatchCall],
    trials: &[usize],
) -> Result<Submission> {
    let mut ids: Vec<String> = Vec::new();
    for call in calls {
        let args = call.args(folder, plan, &ids);
        match sbatch(&args) {
            Ok(id) => ids.push(id),
            Err(e) => {
                if !ids.is_empty() {
                    let _ = Command::new("scancel").args(&ids).status();
                }
                let cancelled = if ids.is_empty() {
                    String::new()
                } else {
                    format!(" (cancelled the jobs it had queued: {})", ids.join(", "))
                };
                return Err(e.context(format!(
                    "submitting {}{cancelled}",
                    folder.script_path(call.stage).display()
                )));
            }
        }
    }
    let mut submission = Submission {
        submitted_at: crate::util::unix_now(),
        trials: trials.to_vec(),
        infer: None,
        verify: Vec::new(),
        collect_job: String::new(),
    };
    for (call, id) in calls.iter().zip(ids) {
        let job = ArrayJob {
            job_id: id.clone(),
            trials: call.array.clone().unwrap_or_default(),
        };
        match call.stage {
            Stage::Infer => submission.infer = Some(job),
            Stage::Verify => submission.verify.push(job),
            Stage::Collect => submission.collect_job = id,
        }
    }
    let mut all = folder.read_submissions()?;
    all.push(submission.clone());
    write_json(&folder.submissions_path(), &all)?;
    Ok(submission)
}

fn sbatch(args: &[String]) -> Result<String> {
    let out = Command::new("sbatch")
        .args(args)
        .output()
        .context("running sbatch (is Slurm installed and on PATH?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "sbatch {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // --parsable: `jobid` or `jobid;cluster`.
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch answered {:?}, not a job id", stdout.trim());
    }
    Ok(id)
}

/// Job ids of earlier submissions that Slurm still has queued or running (refused on resume:
/// a task still on its way would otherwise race its resubmitted twin).
pub fn still_queued(submissions: &[Submission]) -> Result<Vec<String>> {
    let ours: Vec<String> = submissions.iter().flat_map(|s| s.job_ids()).collect();
    if ours.is_empty() {
        return Ok(Vec::new());
    }
    // %F: the array job id (the job id for a job that is no array).
    let out = Command::new("squeue")
        .args(["-h", "-o", "%F"])
        .output()
        .context("running squeue")?;
    if !out.status.success() {
        bail!(
            "squeue failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let queued: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    Ok(ours.into_iter().filter(|id| queued.contains(id)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::slurm::{SlurmOptions, SLURM_FORMAT_VERSION};

    fn plan() -> JobPlan {
        JobPlan {
            format_version: SLURM_FORMAT_VERSION,
            experiment: "exp3".into(),
            trials: 4,
            verifiers: None,
            max_new_tokens: None,
            min_new_tokens: None,
            seed: None,
            gpu: None,
            binary: "/bin/verillm-tui".into(),
            model_dir: "/m".into(),
            threads: None,
            options: SlurmOptions {
                array_parallel: Some(2),
                ..Default::default()
            },
            created_at: 0,
            protocol: Default::default(),
        }
    }

    #[test]
    fn a_fresh_run_chains_inference_verification_and_collect() {
        let dir = tempfile::tempdir().unwrap();
        let folder = JobFolder::new(dir.path().join("run one"));
        let calls = calls_for(&folder, &[0, 1, 2, 3]);
        assert_eq!(calls.len(), 3);
        let ids = vec!["11".to_string(), "12".to_string()];
        let infer = calls[0].args(&folder, &plan(), &ids);
        assert!(infer.contains(&"--array=0-3%2".to_string()), "{infer:?}");
        let verify = calls[1].args(&folder, &plan(), &ids);
        assert!(verify.contains(&"--dependency=aftercorr:11".to_string()));
        assert!(verify.contains(&"--kill-on-invalid-dep=yes".to_string()));
        let collect = calls[2].args(&folder, &plan(), &ids);
        assert!(collect.contains(&"--dependency=afterany:12".to_string()));
        assert!(collect
            .last()
            .unwrap()
            .ends_with("run one/slurm/collect.sh"));
    }

    #[test]
    fn a_resume_infers_only_trials_without_a_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let folder = JobFolder::new(dir.path());
        // Trial 2 has its bundle (its verification was lost), trial 3 has nothing.
        std::fs::create_dir_all(folder.bundle_dir(2)).unwrap();
        std::fs::write(folder.bundle_dir(2).join("manifest.json"), "{}").unwrap();
        let calls = calls_for(&folder, &[2, 3]);
        let stages: Vec<(Stage, Option<Vec<usize>>, Dependency)> = calls
            .iter()
            .map(|c| (c.stage, c.array.clone(), c.dependency.clone()))
            .collect();
        assert_eq!(
            stages,
            vec![
                (Stage::Infer, Some(vec![3]), Dependency::None),
                (Stage::Verify, Some(vec![3]), Dependency::AfterCorr(0)),
                (Stage::Verify, Some(vec![2]), Dependency::None),
                (Stage::Collect, None, Dependency::AfterAny(vec![1, 2])),
            ]
        );
        // Nothing missing: collect alone.
        assert_eq!(
            calls_for(&folder, &[]),
            vec![SbatchCall {
                stage: Stage::Collect,
                array: None,
                dependency: Dependency::None
            }]
        );
    }
}
