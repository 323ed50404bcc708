//! The rows of the results view, from this session's runs and the runs found on disk: state,
//! apart from the table that draws it (`results.rs`).

use std::path::PathBuf;

use super::trial_view::{RunState, RunStatus};
use super::PastRun;
use crate::record::results::{Aggregate, TrialVerdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrySource {
    /// Index into `App::session_runs`.
    Session(usize),
    /// Index into `App::past_runs`.
    Past(usize),
}

/// One line of the results list, summarised the same way for both sources.
#[derive(Debug, Clone)]
pub struct ResultsEntry {
    pub source: EntrySource,
    pub experiment: String,
    pub description: String,
    pub pairing: String,
    pub roles: String,
    pub started_unix: Option<u64>,
    pub trials_done: usize,
    pub trials_planned: usize,
    pub avg_accept_rate: Option<f64>,
    pub avg_overhead: Option<f64>,
    pub pass_rate: Option<f64>,
    pub detection_rate: Option<f64>,
    pub expected: TrialVerdict,
    /// Fraction of trials whose verdict matched the expectation.
    pub expectation_rate: Option<f64>,
    pub cutoff: f64,
    pub status: String,
    pub summary_path: Option<PathBuf>,
}

/// Session runs (newest first), then past runs not already listed as session runs.
pub fn results_entries(session_runs: &[RunState], past_runs: &[PastRun]) -> Vec<ResultsEntry> {
    let mut entries = Vec::new();
    for (index, run) in session_runs.iter().enumerate().rev() {
        let results = run.results();
        // The same aggregates as the run's summary.json will hold (record::Aggregate).
        let aggregate = Aggregate::of_trials(&results, run.choice.expected);
        let roles = std::iter::once(&run.choice.inference)
            .chain(&run.choice.verifiers)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" → ");
        entries.push(ResultsEntry {
            source: EntrySource::Session(index),
            experiment: run.choice.name.clone(),
            description: run.choice.description.clone(),
            pairing: results.first().map_or(String::new(), |r| r.pairing.clone()),
            roles,
            started_unix: run.started_unix,
            trials_done: results.len(),
            trials_planned: run.choice.trials,
            avg_accept_rate: aggregate.as_ref().map(|a| a.avg_accept_rate),
            avg_overhead: aggregate.as_ref().map(|a| a.avg_overhead_percentage),
            pass_rate: aggregate.as_ref().map(|a| a.pass_rate),
            detection_rate: aggregate.as_ref().and_then(|a| a.detection_rate),
            expected: run.choice.expected,
            expectation_rate: aggregate.as_ref().map(|a| a.expectation_rate),
            cutoff: run.choice.cutoff,
            status: status_word(&run.status).to_string(),
            summary_path: run.summary_path.clone(),
        });
    }
    let listed: Vec<&PathBuf> = session_runs
        .iter()
        .filter_map(|r| r.summary_path.as_ref())
        .collect();
    for (index, past) in past_runs.iter().enumerate() {
        if listed.contains(&&past.summary_path) {
            continue;
        }
        let summary = &past.summary;
        let roles = std::iter::once(&summary.inference)
            .chain(&summary.verifiers)
            .map(|role| format!("{}/{}/{}", role.model, role.precision, role.device))
            .collect::<Vec<_>>()
            .join(" → ");
        entries.push(ResultsEntry {
            source: EntrySource::Past(index),
            experiment: summary.experiment.clone(),
            description: summary.description.clone(),
            pairing: summary.pairing.clone(),
            roles,
            started_unix: Some(summary.started_at),
            trials_done: summary.trial_files.len(),
            trials_planned: summary.planned_trials.unwrap_or(summary.trials),
            avg_accept_rate: Some(summary.aggregate.avg_accept_rate),
            avg_overhead: Some(summary.aggregate.avg_overhead_percentage),
            pass_rate: Some(summary.aggregate.pass_rate),
            detection_rate: summary.aggregate.detection_rate,
            expected: summary.expected_verdict,
            expectation_rate: Some(summary.aggregate.expectation_rate),
            cutoff: summary.cutoff,
            status: if summary.complete {
                "complete"
            } else {
                "incomplete"
            }
            .to_string(),
            summary_path: Some(past.summary_path.clone()),
        });
    }
    entries
}

fn status_word(status: &RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Cancelling => "cancelling",
        RunStatus::Cancelled => "incomplete",
        RunStatus::Finished => "complete",
        RunStatus::Failed(_) => "failed",
    }
}
