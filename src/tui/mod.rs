//! The terminal lab console. It only draws state and turns keys into requests: everything that
//! touches models, files or plots goes through [`Backend`], so the UI can be tested with a fake
//! backend and fed with synthetic engine events.

pub mod app;
mod bench;
mod challenge_strip;
mod draw;
pub mod event_loop;
pub mod heatmap;
mod help;
mod keys;
mod matrix_state;
mod matrix_view;
mod picker;
mod picker_state;
mod results;
mod results_list;
mod run_view;
mod slurm_panel;
pub mod trial_view;
mod widgets;
mod wrap;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cheats;
#[cfg(test)]
mod tests_keys;
#[cfg(test)]
mod tests_layout;
#[cfg(test)]
mod tests_matrix;
#[cfg(test)]
mod tests_run_view;
#[cfg(test)]
mod tests_saved;
#[cfg(test)]
mod tests_segment;
#[cfg(test)]
mod tests_slurm;

use std::path::{Path, PathBuf};

use crate::engine::events::EngineEvent;
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;
use crate::record::results::{RunSummary, TrialResult, TrialVerdict};

pub use crate::engine::events::CancelToken;
pub use app::{Action, App, Catalog, ExportRequest, Screen};
pub use bench::render_benchmark;
pub use draw::{draw, MIN_HEIGHT, MIN_WIDTH};
pub use event_loop::{drain_events, perform, run_tui, Ending};
pub use heatmap::HeatMetric;

/// Who runs one role of an experiment: the model, its weight precision and the device profile.
/// Precision and device are None only for a past run whose summary names a value this build
/// does not parse (the run still opens; a warning names the file, field and value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChoice {
    pub model: String,
    /// One of [`Backend::precisions`] when chosen in the picker.
    pub precision: Option<Precision>,
    /// One of [`Backend::devices`] when chosen in the picker.
    pub device: Option<DeviceProfile>,
}

impl RoleChoice {
    pub fn new(model: impl Into<String>, precision: Precision, device: DeviceProfile) -> Self {
        RoleChoice {
            model: model.into(),
            precision: Some(precision),
            device: Some(device),
        }
    }
}

/// A precision or device as shown: `?` for one a past run's summary names but this build
/// does not know.
pub(crate) fn shown<T: std::fmt::Display>(value: &Option<T>) -> String {
    value.as_ref().map_or("?".to_string(), T::to_string)
}

impl std::fmt::Display for RoleChoice {
    /// `model/precision/device`, as the results list and run view show a role.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.model,
            shown(&self.precision),
            shown(&self.device)
        )
    }
}

/// One experiment as configured, possibly edited in the picker before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentChoice {
    pub name: String,
    pub description: String,
    pub inference: RoleChoice,
    pub verifiers: Vec<RoleChoice>,
    /// Minimum accept rate for a verifier to PASS, as a fraction (0.95); values above 1 are read
    /// as percentages.
    pub cutoff: f64,
    /// What an honest setup should give (PASS) or what catching a cheat gives (REJECT).
    pub expected: TrialVerdict,
    pub trials: usize,
    pub max_new_tokens: usize,
    pub seed: u64,
    pub prompt_category: String,
    /// Segment mode with this many challenged layers per verifier (docs/commitment.md);
    /// None: full mode (one prefill per verifier).
    pub segment_layers: Option<usize>,
}

/// A run found in the data directory.
#[derive(Debug, Clone, PartialEq)]
pub struct PastRun {
    /// The run summary file; its `trial_files` are relative to this file's directory.
    pub summary_path: PathBuf,
    pub summary: RunSummary,
}

impl PastRun {
    /// Where each trial result of this run lies on disk: only names inside the run's folder
    /// (an absolute path or `..` in a summary is skipped, never followed).
    pub fn trial_paths(&self) -> Vec<PathBuf> {
        let dir = self.summary_path.parent().unwrap_or(Path::new("."));
        self.summary
            .trial_files
            .iter()
            .filter(|file| crate::util::is_inner_relative_path(file))
            .map(|file| dir.join(file))
            .collect()
    }
}

/// What the TUI needs from the rest of the program.
pub trait Backend: Send + Sync + 'static {
    /// Experiments from the configuration, in display order.
    fn experiments(&self) -> Vec<ExperimentChoice>;
    fn models(&self) -> Vec<String>;
    /// Device profiles this build can open, e.g. `cpu:f32`, `cpu:bf16`, `cuda:0:f16`.
    fn devices(&self) -> Vec<DeviceProfile>;
    /// Weight precisions, e.g. `full`, `q4_0`.
    fn precisions(&self) -> Vec<Precision>;
    /// Starts a run on background tasks; its events arrive on `events`. Cancelled via `cancel`;
    /// a cancelled run still ends with [`EngineEvent::RunDone`] so its partial results are kept.
    fn start(
        &self,
        choice: ExperimentChoice,
        events: tokio::sync::mpsc::UnboundedSender<EngineEvent>,
        cancel: CancelToken,
    ) -> anyhow::Result<()>;
    /// Runs found in the data directory.
    fn past_runs(&self) -> Vec<PastRun>;
    /// Runs submitted to Slurm (`run --slurm`), as their folders show them now: polled while
    /// the results view is open. May read many small files: called off the drawing thread.
    fn slurm_runs(&self) -> Vec<crate::experiment::slurm::watch::SlurmRunWatch> {
        Vec::new()
    }
    fn load_trial(&self, path: &Path) -> anyhow::Result<TrialResult>;
    /// Where `verillm-tui matrix` writes its folders (`<data>/matrix`); None: no matrix view.
    fn matrix_root(&self) -> Option<PathBuf> {
        None
    }
    /// Writes PNGs for a trial and returns their paths. May take a while: the UI calls it off
    /// the drawing thread.
    fn export_pngs(&self, trial: &TrialResult) -> anyhow::Result<Vec<PathBuf>>;
    /// Writes every figure of a saved run (its trials' and its own) and returns their paths.
    fn export_run(&self, summary: &Path) -> anyhow::Result<Vec<PathBuf>>;
    /// What keeps this console from working as it should (say, a data directory that is a
    /// file), found at start-up and shown on the first screen.
    fn startup_problem(&self) -> Option<String> {
        None
    }
}
