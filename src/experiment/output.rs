//! A run's output: its folder, the trial files, the run summary over the trials that finished
//! (`summarize`, the one place run aggregates are computed) and what a run produced.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::config::ExperimentSpec;
use super::plan::RunRequest;
use super::workspace::Workspace;
use crate::record::results::*;
use crate::util::{unix_now, write_file_atomic};

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

/// `--out DIR` (new or empty), else a new run directory under the data directory; either is
/// removed again if the run ends without writing anything into it.
pub(super) fn results_dir(ws: &Workspace, req: &RunRequest) -> Result<crate::util::OutputDir> {
    match &req.out {
        Some(dir) => crate::util::create_empty_dir(dir, "--out"),
        None => new_run_dir(&ws.data_dir, &req.experiment).map(crate::util::OutputDir::created),
    }
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
    let first = trials.first()?;
    Some(RunSummary {
        format_version: RESULT_FORMAT_VERSION,
        experiment: run.experiment.clone(),
        description: run.description.clone(),
        started_at: run.started_at,
        pairing: first.pairing.clone(),
        inference: first.inference.role.clone(),
        verifiers: first.verifiers.iter().map(|v| v.role.clone()).collect(),
        cutoff: run.cutoff,
        expected_verdict: run.expected,
        trials: trials.len(),
        planned_trials: Some(run.planned_trials),
        jobs: Some(run.jobs),
        trial_files: trials.iter().map(|t| trial_file_name(t.trial)).collect(),
        aggregate: Aggregate::of_trials(trials, run.expected)?,
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
            .map(|i| crate::testutil::trials::trial("exp1", i, true, &[8, 16], 4))
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
