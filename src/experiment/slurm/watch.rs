//! Watching submitted runs from their folders (the console's results view polls this): which
//! trials have landed, with their verdicts, and the Slurm job ids that produce them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{read_folder_json, read_json_bounded, JobFolder, MAX_TRIAL_RESULT_BYTES};
use crate::record::results::TrialVerdict;

/// The list of run folders submitted from here that lie outside the data directory
/// (`run --slurm --out DIR` on a shared filesystem), one absolute path per line.
const WATCH_LIST: &str = "slurm-runs.txt";
/// Folders listed there that are looked at, newest last; older ones are not polled.
const MAX_WATCHED: usize = 64;

/// A trial that has landed (verified, its result file written).
#[derive(Debug, Clone, PartialEq)]
pub struct LandedTrial {
    pub trial: usize,
    pub verdict: TrialVerdict,
    pub accept_rate: f64,
}

/// A submitted run as its folder shows it now.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmRunWatch {
    pub run_dir: PathBuf,
    pub experiment: String,
    pub created_at: u64,
    pub planned: usize,
    /// Trials whose inference bundle is there.
    pub bundles: usize,
    pub landed: Vec<LandedTrial>,
    /// The latest submission's jobs: (stage, job id).
    pub jobs: Vec<(String, String)>,
    pub submissions: usize,
    /// After the latest submission's collect step: the trials it found missing.
    pub collected_missing: Option<Vec<usize>>,
    /// The verification mode and challenge settings it was submitted with.
    pub protocol: super::segment::ProtocolOptions,
}

#[derive(Deserialize)]
struct TrialHead {
    trial: usize,
    summary: TrialHeadSummary,
}

#[derive(Deserialize)]
struct TrialHeadSummary {
    avg_accept_rate: f64,
    final_verdict: TrialVerdict,
}

/// The folder's state, or None when it is no readable job folder.
pub fn watch_run(dir: &Path) -> Option<SlurmRunWatch> {
    let folder = JobFolder::new(dir);
    let plan = folder.read_plan().ok()?;
    let submissions = folder.read_submissions().unwrap_or_default();
    let mut landed = Vec::new();
    let mut bundles = 0;
    for trial in 0..plan.trials {
        if folder.has_bundle(trial) {
            bundles += 1;
        }
        let path = folder.trial_result_path(trial);
        if !path.is_file() {
            continue;
        }
        if let Ok(head) = read_json_bounded::<TrialHead>(&path, MAX_TRIAL_RESULT_BYTES) {
            if head.trial == trial {
                landed.push(LandedTrial {
                    trial,
                    verdict: head.summary.final_verdict,
                    accept_rate: head.summary.avg_accept_rate,
                });
            }
        }
    }
    let latest = submissions.last();
    let jobs = latest.map_or_else(Vec::new, |s| {
        let mut jobs: Vec<(String, String)> = s
            .infer
            .iter()
            .map(|j| ("infer".to_string(), j.job_id.clone()))
            .collect();
        jobs.extend(
            s.verify
                .iter()
                .map(|j| ("verify".to_string(), j.job_id.clone())),
        );
        jobs.push(("collect".to_string(), s.collect_job.clone()));
        jobs
    });
    let collected_missing = folder
        .collect_report()
        .filter(|report| latest.is_some_and(|s| report.collected_at >= s.submitted_at))
        .map(|report| report.missing.iter().map(|m| m.trial).collect());
    Some(SlurmRunWatch {
        run_dir: dir.to_path_buf(),
        experiment: plan.experiment,
        protocol: plan.protocol,
        created_at: plan.created_at,
        planned: plan.trials,
        bundles,
        landed,
        jobs,
        submissions: submissions.len(),
        collected_missing,
    })
}

impl JobFolder {
    fn collect_report(&self) -> Option<super::tasks::CollectReport> {
        read_folder_json(&self.collect_report_path()).ok()
    }
}

/// Every job folder under `<data>/<experiment>/` and those listed in `<data>/slurm-runs.txt`,
/// newest first.
pub fn scan(data_dir: &Path) -> Vec<SlurmRunWatch> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(experiments) = std::fs::read_dir(data_dir) {
        for exp in experiments.flatten() {
            let Ok(runs) = std::fs::read_dir(exp.path()) else {
                continue;
            };
            for run in runs.flatten() {
                if run.path().join("slurm").join("plan.json").is_file() {
                    dirs.push(run.path());
                }
            }
        }
    }
    if let Ok(Some(list)) = crate::util::read_optional_text(&data_dir.join(WATCH_LIST), 1 << 20) {
        let listed: Vec<&str> = list.lines().filter(|l| !l.trim().is_empty()).collect();
        for line in listed.iter().rev().take(MAX_WATCHED) {
            let dir = PathBuf::from(line);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    let mut runs: Vec<SlurmRunWatch> = dirs.iter().filter_map(|d| watch_run(d)).collect();
    runs.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(b.run_dir.cmp(&a.run_dir))
    });
    runs
}

/// Lists a run folder outside the data directory so that the console watches it too.
pub fn register(data_dir: &Path, run_dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    // One path per line: a folder name with a line break cannot be listed (nor is it watched).
    if run_dir.starts_with(data_dir) || run_dir.to_string_lossy().contains('\n') {
        return Ok(());
    }
    std::fs::create_dir_all(data_dir)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join(WATCH_LIST))?;
    writeln!(file, "{}", run_dir.display())?;
    Ok(())
}
