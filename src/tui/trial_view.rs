//! What a run and its trials look like on screen. Built live from engine events or from saved
//! results, so the run view draws a running experiment and a past one the same way.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::record::results::{RoleSpec, RunSummary, TrialResult, TrialVerdict, Verdict};
use crate::stats::metrics::CheckMetrics;

use super::heatmap::ErrorGrid;
use super::{CancelToken, ExperimentChoice, RoleChoice};
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;

/// A verifier's final word on one trial.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifierOutcome {
    pub accept_rate: f64,
    pub verdict: Verdict,
    pub overhead_percentage: f64,
}

/// Heatmap cells (verifiers × sampled layers × positions, rounded up to the power of two, at
/// least 64, that the grid stores) a saved trial may ask of the console: a cell holds two f32
/// per heat metric (32 bytes), so 2^24 cells take 0.5 GB, beyond any real trial (3 verifiers ×
/// 80 layers × 32k tokens is 7.9M).
const MAX_VIEW_CELLS: u128 = 1 << 24;

/// Whether a saved trial (a file that may come from elsewhere) can be shown: consistent, and
/// not so large that its heatmaps would exhaust memory. Checked before anything is sized.
pub fn check_viewable(result: &TrialResult) -> anyhow::Result<()> {
    result.check_consistency().map_err(anyhow::Error::msg)?;
    // As the grid stores a row: a power of two, at least 64 positions.
    let positions = result
        .inference
        .generated_tokens
        .max(64)
        .next_power_of_two() as u128;
    let cells = result.verifiers.len() as u128 * result.sampled_layers.len() as u128 * positions;
    anyhow::ensure!(
        cells <= MAX_VIEW_CELLS,
        "{} verifiers × {} sampled layers × {} tokens are too many heatmap cells to show here \
         (at most {MAX_VIEW_CELLS}); `verillm-tui plot` draws its figures",
        result.verifiers.len(),
        result.sampled_layers.len(),
        result.inference.generated_tokens
    );
    Ok(())
}

/// One verifier's progress on one trial.
#[derive(Debug, Clone, Default)]
pub struct VerifierView {
    pub role: Option<RoleSpec>,
    pub started: bool,
    pub checks: usize,
    pub accepted: usize,
    pub outcome: Option<VerifierOutcome>,
    pub grid: ErrorGrid,
    /// Generated tokens held to the sampling rule so far, and how many were accepted.
    pub token_checks: usize,
    pub tokens_accepted: usize,
    /// Positions of the rejected tokens (marked in the generated text).
    pub rejected_tokens: Vec<usize>,
}

impl VerifierView {
    /// The token-check accept rate over the tokens checked so far.
    pub fn token_accept_rate(&self) -> Option<f64> {
        (self.token_checks > 0).then(|| self.tokens_accepted as f64 / self.token_checks as f64)
    }

    /// The final accept rate when known, else the rate over the checks seen so far.
    pub fn accept_rate(&self) -> Option<f64> {
        match self.outcome {
            Some(outcome) => Some(outcome.accept_rate),
            None if self.checks > 0 => Some(self.accepted as f64 / self.checks as f64),
            None => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialStatus {
    /// A saved trial that has not been read from disk yet.
    NotLoaded,
    Decoding,
    Verifying,
    Done,
    /// The run was cancelled or failed before this trial finished.
    Incomplete,
}

/// One trial as shown: text, token progress, verifier gauges and heatmaps.
#[derive(Debug, Clone)]
pub struct TrialView {
    pub trial: usize,
    pub status: TrialStatus,
    pub prompt_category: String,
    pub prompt_tokens: usize,
    pub max_new_tokens: usize,
    /// How the inferencer decodes ("fast step, VNNI kernels"); empty for a saved trial.
    pub decode_path: String,
    pub sampled_layers: Vec<usize>,
    pub text: String,
    /// Byte range in `text` of each generated token streamed live (empty for a saved trial,
    /// whose text comes whole).
    pub token_spans: Vec<(usize, usize)>,
    pub tokens: usize,
    /// Sum of per-token decode times, for tokens/s while decoding.
    pub decode_ms: f64,
    pub inference_time_s: Option<f64>,
    pub verifiers: Vec<VerifierView>,
    pub result: Option<Box<TrialResult>>,
}

impl TrialView {
    pub fn new(trial: usize) -> TrialView {
        TrialView {
            trial,
            status: TrialStatus::Decoding,
            prompt_category: String::new(),
            prompt_tokens: 0,
            max_new_tokens: 0,
            decode_path: String::new(),
            sampled_layers: Vec::new(),
            text: String::new(),
            token_spans: Vec::new(),
            tokens: 0,
            decode_ms: 0.0,
            inference_time_s: None,
            verifiers: Vec::new(),
            result: None,
        }
    }

    pub fn not_loaded(trial: usize) -> TrialView {
        TrialView {
            status: TrialStatus::NotLoaded,
            ..TrialView::new(trial)
        }
    }

    pub fn start(
        &mut self,
        prompt_category: String,
        prompt_tokens: usize,
        max_new_tokens: usize,
        sampled_layers: Vec<usize>,
        verifiers: Vec<RoleSpec>,
    ) {
        self.prompt_category = prompt_category;
        self.prompt_tokens = prompt_tokens;
        self.max_new_tokens = max_new_tokens;
        for (index, role) in verifiers.into_iter().enumerate() {
            self.verifier_mut(index).role = Some(role);
        }
        for verifier in &mut self.verifiers {
            if verifier.grid.positions() == 0 {
                verifier.grid = ErrorGrid::with_layers(&sampled_layers);
            }
        }
        self.sampled_layers = sampled_layers;
    }

    pub fn push_token(&mut self, index: usize, text: &str, step_ms: f64) {
        if self.token_spans.len() == index {
            self.token_spans
                .push((self.text.len(), self.text.len() + text.len()));
        }
        self.text.push_str(text);
        self.tokens = self.tokens.max(index + 1);
        self.decode_ms += step_ms;
    }

    pub fn inference_done(&mut self, tokens: usize, time_s: f64) {
        self.tokens = self.tokens.max(tokens);
        self.inference_time_s = Some(time_s);
        if self.status == TrialStatus::Decoding {
            self.status = TrialStatus::Verifying;
        }
    }

    /// The verifier's slot, created (with the trial's layer rows) when it is new.
    pub fn verifier_mut(&mut self, index: usize) -> &mut VerifierView {
        while self.verifiers.len() <= index {
            let grid = ErrorGrid::with_layers(&self.sampled_layers);
            self.verifiers.push(VerifierView {
                grid,
                ..VerifierView::default()
            });
        }
        &mut self.verifiers[index]
    }

    pub fn record_check(
        &mut self,
        verifier: usize,
        position: usize,
        layer: usize,
        accept: bool,
        metrics: &CheckMetrics,
    ) {
        let view = self.verifier_mut(verifier);
        view.started = true;
        view.checks += 1;
        view.accepted += usize::from(accept);
        view.grid.record(position, layer, metrics);
    }

    pub fn record_token_check(&mut self, verifier: usize, position: usize, accept: bool) {
        let view = self.verifier_mut(verifier);
        view.started = true;
        view.token_checks += 1;
        view.tokens_accepted += usize::from(accept);
        if !accept {
            view.rejected_tokens.push(position);
        }
    }

    pub fn finish(&mut self, result: Box<TrialResult>) {
        for (index, saved) in result.verifiers.iter().enumerate() {
            let view = self.verifier_mut(index);
            // A segment-mode verifier streams no checks, and its heatmap rows are its own
            // challenged layers (hidden-state index l + 1 for layer l), not the trial's union:
            // both come from the result.
            if let Some(segment) = &saved.segment {
                let columns: Vec<usize> = segment.challenged_layers.iter().map(|l| l + 1).collect();
                view.grid = ErrorGrid::with_layers(&columns);
                (view.checks, view.accepted) = (0, 0);
                (view.token_checks, view.tokens_accepted) = (0, 0);
                view.rejected_tokens.clear();
                for check in &saved.statistics.checks {
                    view.checks += 1;
                    view.accepted += usize::from(check.accept);
                    view.grid
                        .record(check.position, check.layer, &check.metrics);
                }
                for check in &saved.statistics.token_checks {
                    view.token_checks += 1;
                    view.tokens_accepted += usize::from(check.accept);
                    if !check.accept {
                        view.rejected_tokens.push(check.position);
                    }
                }
                view.started = true;
            }
            view.role.get_or_insert_with(|| saved.role.clone());
            view.outcome.get_or_insert(VerifierOutcome {
                accept_rate: saved.statistics.summary.accept_rate,
                verdict: saved.verdict,
                overhead_percentage: saved.overhead.percentage,
            });
        }
        if self.text.is_empty() {
            self.text = crate::util::escape_controls(&result.inference.output_text).into_owned();
        }
        self.tokens = self.tokens.max(result.inference.generated_tokens);
        self.inference_time_s.get_or_insert(result.inference.time_s);
        self.status = if result.complete {
            TrialStatus::Done
        } else {
            TrialStatus::Incomplete
        };
        self.result = Some(result);
    }

    /// Rebuilds the live view of a saved trial, check by check.
    pub fn from_result(result: TrialResult) -> TrialView {
        let mut view = TrialView::new(result.trial);
        view.start(
            result.prompt.category.clone(),
            result.inference.prompt_tokens,
            result.inference.generated_tokens,
            result.sampled_layers.clone(),
            result
                .verifiers
                .iter()
                .map(|verifier| verifier.role.clone())
                .collect(),
        );
        for (index, verifier) in result.verifiers.iter().enumerate() {
            for check in &verifier.statistics.token_checks {
                view.record_token_check(index, check.position, check.accept);
            }
            for check in &verifier.statistics.checks {
                view.record_check(
                    index,
                    check.position,
                    check.layer,
                    check.accept,
                    &check.metrics,
                );
            }
            view.verifiers[index].started = true;
        }
        view.finish(Box::new(result));
        view
    }

    /// Token positions to lay out across the heatmap.
    pub fn columns(&self) -> usize {
        let checked = self
            .verifiers
            .iter()
            .map(|v| v.grid.positions())
            .max()
            .unwrap_or(0);
        self.tokens.max(checked)
    }

    /// The decode rate, the figure `bench` and `report` give: from the streamed steps while a
    /// run is live, from the result file for a past run, and prefill included only when neither
    /// records the decode time.
    pub fn tokens_per_s(&self) -> Option<f64> {
        if self.decode_ms > 0.0 {
            return Some(self.tokens as f64 / (self.decode_ms / 1000.0));
        }
        if let Some(rate) = self
            .result
            .as_ref()
            .and_then(|r| r.inference.decode_tokens_per_s())
        {
            return Some(rate);
        }
        self.inference_time_s
            .filter(|time_s| *time_s > 0.0)
            .map(|time_s| self.tokens as f64 / time_s)
    }

    pub fn verdict(&self) -> Option<(TrialVerdict, TrialVerdict)> {
        let summary = &self.result.as_ref()?.summary;
        Some((summary.final_verdict, summary.expected_verdict))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Running,
    /// Cancel requested; waiting for the engines to stop and report.
    Cancelling,
    Cancelled,
    Finished,
    Failed(String),
}

/// Where a shown run came from.
#[derive(Debug, Clone)]
pub enum RunOrigin {
    /// Started in this session.
    Session,
    /// Read from the data directory; trials load on demand.
    Past {
        summary: Box<RunSummary>,
        trial_paths: Vec<PathBuf>,
    },
}

/// A run as shown by the run view.
#[derive(Debug, Clone)]
pub struct RunState {
    pub choice: ExperimentChoice,
    pub origin: RunOrigin,
    pub status: RunStatus,
    pub trials: Vec<TrialView>,
    pub selected_trial: usize,
    /// Jump to each new trial as it starts until the person picks one.
    pub follow_latest: bool,
    pub started_at: Option<Instant>,
    /// Wall-clock start (Unix seconds), for listing runs.
    pub started_unix: Option<u64>,
    pub elapsed_at_end: Option<Duration>,
    pub summary_path: Option<PathBuf>,
    pub cancel: Option<CancelToken>,
    /// Work under way before progress can be shown (model loads, GPU kernel warm-up), oldest
    /// first, each with when it began.
    pub preparing: Vec<Preparation>,
}

#[derive(Debug, Clone)]
pub struct Preparation {
    pub key: String,
    pub message: String,
    pub since: Instant,
}

impl RunState {
    pub fn live(choice: ExperimentChoice, cancel: CancelToken) -> RunState {
        RunState {
            choice,
            origin: RunOrigin::Session,
            status: RunStatus::Running,
            trials: Vec::new(),
            selected_trial: 0,
            follow_latest: true,
            started_at: Some(Instant::now()),
            started_unix: None,
            elapsed_at_end: None,
            summary_path: None,
            cancel: Some(cancel),
            preparing: Vec::new(),
        }
    }

    /// A past run with one not-yet-loaded slot per trial file, and a warning for each role
    /// value in the summary this build does not parse (the run opens all the same; that value
    /// shows as `?`).
    pub fn past(
        summary: RunSummary,
        summary_path: PathBuf,
        trial_paths: Vec<PathBuf>,
    ) -> (RunState, Vec<String>) {
        let mut warnings = Vec::new();
        let mut role = |name: &str, spec: &RoleSpec| {
            let mut warn = |field: &str, value: &str, error: String| {
                warnings.push(format!(
                    "{}: {name}.{field} `{value}` is not understood ({error}); shown as ?",
                    summary_path.display()
                ))
            };
            let precision = spec.precision.parse::<Precision>();
            let device = DeviceProfile::parse(&spec.device);
            RoleChoice {
                model: spec.model.clone(),
                precision: precision
                    .map_err(|e| warn("precision", &spec.precision, e))
                    .ok(),
                device: device.map_err(|e| warn("device", &spec.device, e)).ok(),
            }
        };
        let choice = ExperimentChoice {
            name: summary.experiment.clone(),
            description: summary.description.clone(),
            inference: role("inference", &summary.inference),
            verifiers: summary
                .verifiers
                .iter()
                .enumerate()
                .map(|(index, spec)| role(&format!("verifiers[{index}]"), spec))
                .collect(),
            cutoff: summary.cutoff,
            expected: summary.expected_verdict,
            trials: trial_paths.len(),
            max_new_tokens: 0,
            seed: 0,
            prompt_category: String::new(),
            segment_layers: None,
        };
        let status = if summary.complete {
            RunStatus::Finished
        } else {
            RunStatus::Cancelled
        };
        let run = RunState {
            choice,
            status,
            trials: (0..trial_paths.len()).map(TrialView::not_loaded).collect(),
            origin: RunOrigin::Past {
                summary: Box::new(summary),
                trial_paths,
            },
            selected_trial: 0,
            follow_latest: false,
            started_at: None,
            started_unix: None,
            elapsed_at_end: None,
            summary_path: Some(summary_path),
            cancel: None,
            preparing: Vec::new(),
        };
        (run, warnings)
    }

    pub fn is_active(&self) -> bool {
        matches!(self.status, RunStatus::Running | RunStatus::Cancelling)
    }

    /// The slot for engine trial number `trial`, created in arrival order when new.
    pub fn trial_mut(&mut self, trial: usize) -> &mut TrialView {
        let index = match self.trials.iter().rposition(|view| view.trial == trial) {
            Some(index) => index,
            None => {
                self.trials.push(TrialView::new(trial));
                self.trials.len() - 1
            }
        };
        &mut self.trials[index]
    }

    pub fn selected(&self) -> Option<&TrialView> {
        self.trials.get(self.selected_trial)
    }

    /// Trials the selector can show: what exists, or what is planned when more.
    pub fn trial_count(&self) -> usize {
        self.trials.len().max(self.choice.trials)
    }

    pub fn elapsed(&self) -> Option<Duration> {
        self.elapsed_at_end
            .or_else(|| self.started_at.map(|start| start.elapsed()))
    }

    /// Starts (`Some`) or ends (`None`) the preparation named `key`.
    pub fn set_preparing(&mut self, key: String, message: Option<String>) {
        self.preparing.retain(|p| p.key != key);
        if let Some(message) = message {
            self.preparing.push(Preparation {
                key,
                message,
                since: Instant::now(),
            });
        }
    }

    /// Stops the clock and marks unfinished trials as incomplete: what was computed stays shown.
    pub fn end(&mut self, status: RunStatus) {
        self.elapsed_at_end = self.elapsed();
        self.preparing.clear();
        for trial in &mut self.trials {
            if matches!(trial.status, TrialStatus::Decoding | TrialStatus::Verifying) {
                trial.status = TrialStatus::Incomplete;
            }
        }
        self.status = status;
    }

    /// Finished trial results held in memory (session runs, or loaded past trials).
    pub fn results(&self) -> Vec<&TrialResult> {
        self.trials
            .iter()
            .filter_map(|trial| trial.result.as_deref())
            .collect()
    }

    pub fn trial_path(&self, slot: usize) -> Option<PathBuf> {
        match &self.origin {
            RunOrigin::Past { trial_paths, .. } => trial_paths.get(slot).cloned(),
            RunOrigin::Session => None,
        }
    }
}
