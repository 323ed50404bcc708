//! Experiments as Slurm jobs (`run EXP --slurm`): a self-contained job folder, submitted with
//! `sbatch` as an array of inference tasks (one per trial), a dependent array of verification
//! tasks (`--dependency=aftercorr`: trial N is verified once its own inference succeeded) and
//! one collect job that writes the usual `summary.json`. No scheduler of our own: Slurm orders,
//! retries and reports; the folder on a shared filesystem is the only thing the tasks share.
//!
//! The folder (`RUN_DIR`, the run's results directory):
//!
//! ```text
//! RUN_DIR/slurm/plan.json          what to run (experiment, overrides, binary, model dir, options)
//! RUN_DIR/slurm/config/            the YAML configuration in force at submission (may be empty:
//!                                  the binary's built-in files then)
//! RUN_DIR/slurm/{infer,verify,collect}.sh   the job scripts (docs/slurm.md)
//! RUN_DIR/slurm/submissions.json   every sbatch submission: which trials, which job ids
//! RUN_DIR/slurm/logs/              the tasks' stdout/stderr
//! RUN_DIR/slurm/collect.json       the collect step's report: trials landed, missing, Slurm states
//! RUN_DIR/bundles/trial_NNN/       inference bundles, one per trial
//! RUN_DIR/trial_NNN.json           verified trials, as a local run writes them
//! RUN_DIR/summary.json             the run summary (plus `missing_trials`)
//! ```
//!
//! Each output is written once: a task whose output is already there does nothing, an output
//! appears by an atomic rename, so a trial is never run twice into the same output, and
//! `--resume` submits only the trials without a result (inference only for those without a
//! bundle). The scripts are generic over their command ([`scripts::ScriptSpec`]), so another
//! batch of array tasks (the cheat matrix, when it exists) reuses the writer and the submission
//! chain with its own plan.

pub mod scripts;
pub mod segment;
pub mod submit;
pub mod tasks;
pub mod watch;

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::plan::RunRequest;
use crate::model::device::DeviceProfile;
use crate::util::write_file_atomic;

/// Version of `plan.json`, `submissions.json` and `collect.json`.
pub const SLURM_FORMAT_VERSION: u32 = 1;

/// Job-folder files are small; anything larger is not one this build wrote.
const MAX_FOLDER_FILE_BYTES: u64 = 16 << 20;
/// A trial result holds every check: bounded as the console bounds result files.
pub(crate) const MAX_TRIAL_RESULT_BYTES: u64 = 512 << 20;

/// What `sbatch` is asked for, beyond the array itself (`run --slurm` flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// Generic resources per task, e.g. `gpu:1` (Slurm then sets CUDA_VISIBLE_DEVICES).
    pub gres: Option<String>,
    /// Time limit per task, in any form sbatch reads (`30`, `1:00:00`, `1-0`).
    pub time: Option<String>,
    pub account: Option<String>,
    /// Array tasks running at once (`--array=…%K`).
    pub array_parallel: Option<usize>,
    /// Submit every job held (`sbatch --hold`); `scontrol release` starts them.
    #[serde(default)]
    pub hold: bool,
}

impl SlurmOptions {
    /// Values go into `#SBATCH` lines and sbatch arguments: only characters those forms carry
    /// unquoted are accepted, so no value can end a line or smuggle in another option.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("--partition", &self.partition),
            ("--gres", &self.gres),
            ("--time", &self.time),
            ("--account", &self.account),
        ];
        for (flag, value) in fields {
            if let Some(value) = value {
                ensure!(
                    !value.is_empty()
                        && value.len() <= 200
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.:,=+/".contains(c)),
                    "{flag} {value:?}: expected letters, digits and _ - . : , = + / only"
                );
            }
        }
        if let Some(k) = self.array_parallel {
            ensure!(k >= 1, "--array-parallel {k}: at least one task must run");
        }
        Ok(())
    }
}

/// Everything a task needs to run its part, fixed at submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlan {
    pub format_version: u32,
    pub experiment: String,
    /// Trials of the run: array indices 0..trials.
    pub trials: usize,
    pub verifiers: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub seed: Option<u64>,
    /// `run --gpu` profile, as written on the command line.
    pub gpu: Option<String>,
    /// The binary every task runs, by absolute path.
    pub binary: PathBuf,
    /// The model cache every task reads (on a shared filesystem).
    pub model_dir: PathBuf,
    /// `--threads` of each task (default: as the binary decides on the node).
    pub threads: Option<usize>,
    pub options: SlurmOptions,
    /// Unix seconds when the run was first submitted.
    pub created_at: u64,
    /// Full or segment verification and the challenge settings (docs/commitment.md).
    #[serde(default)]
    pub protocol: segment::ProtocolOptions,
}

impl JobPlan {
    /// The run request every task plans its trials from: the same seeds and prompts as a
    /// local `run` with the same flags, so the two give the same trials.
    pub fn request(&self) -> Result<RunRequest> {
        let gpu_profile = match &self.gpu {
            Some(text) => Some(
                DeviceProfile::parse(text).map_err(|e| anyhow::anyhow!("plan.json gpu: {e}"))?,
            ),
            None => None,
        };
        Ok(self.protocol.apply(RunRequest {
            experiment: self.experiment.clone(),
            trials: Some(self.trials),
            verifiers: self.verifiers,
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            seed: self.seed,
            jobs: 1,
            gpu_profile,
            ..Default::default()
        }))
    }
}

/// Paths inside a job folder.
#[derive(Debug, Clone)]
pub struct JobFolder {
    pub root: PathBuf,
}

impl JobFolder {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        JobFolder { root: root.into() }
    }
    pub fn slurm_dir(&self) -> PathBuf {
        self.root.join("slurm")
    }
    pub fn plan_path(&self) -> PathBuf {
        self.slurm_dir().join("plan.json")
    }
    pub fn config_dir(&self) -> PathBuf {
        self.slurm_dir().join("config")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.slurm_dir().join("logs")
    }
    pub fn script_path(&self, stage: Stage) -> PathBuf {
        self.slurm_dir().join(format!("{}.sh", stage.name()))
    }
    pub fn submissions_path(&self) -> PathBuf {
        self.slurm_dir().join("submissions.json")
    }
    pub fn collect_report_path(&self) -> PathBuf {
        self.slurm_dir().join("collect.json")
    }
    pub fn bundles_dir(&self) -> PathBuf {
        self.root.join("bundles")
    }
    pub fn bundle_dir(&self, trial: usize) -> PathBuf {
        self.bundles_dir()
            .join(super::output::trial_dir_name(trial))
    }
    pub fn trial_result_path(&self, trial: usize) -> PathBuf {
        self.root.join(super::output::trial_file_name(trial))
    }
    pub fn summary_path(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// A bundle has landed once its manifest is there (it is renamed into place whole).
    pub fn has_bundle(&self, trial: usize) -> bool {
        self.bundle_dir(trial).join("manifest.json").is_file()
    }
    pub fn has_result(&self, trial: usize) -> bool {
        self.trial_result_path(trial).is_file()
    }

    pub fn read_plan(&self) -> Result<JobPlan> {
        let plan: JobPlan = read_folder_json(&self.plan_path())?;
        ensure!(
            plan.format_version == SLURM_FORMAT_VERSION,
            "{}: format_version {} is not {SLURM_FORMAT_VERSION}, the one this build reads",
            self.plan_path().display(),
            plan.format_version
        );
        // The name goes into the scripts' job names: plain characters only, as experiment ids
        // are; the options into #SBATCH lines, held to what the flags accept.
        ensure!(
            !plan.experiment.is_empty()
                && plan.experiment.len() <= 200
                && plan.experiment.chars().all(crate::util::is_plain_name_char),
            "{}: experiment {:?} is no experiment id",
            self.plan_path().display(),
            plan.experiment
        );
        plan.options
            .validate()
            .with_context(|| format!("{}: options", self.plan_path().display()))?;
        ensure!(
            (1..=crate::record::limits::MAX_TRIALS).contains(&plan.trials),
            "{}: trials {} outside 1..={}",
            self.plan_path().display(),
            plan.trials,
            crate::record::limits::MAX_TRIALS
        );
        Ok(plan)
    }

    pub fn read_submissions(&self) -> Result<Vec<submit::Submission>> {
        let path = self.submissions_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        read_folder_json(&path)
    }

    /// Trials without a verified result, in order.
    pub fn missing_trials(&self, plan: &JobPlan) -> Vec<usize> {
        (0..plan.trials).filter(|&t| !self.has_result(t)).collect()
    }

    /// Creates the folder's own directories and writes the plan and the configuration copy.
    pub fn create(&self, plan: &JobPlan, config_source: Option<&Path>) -> Result<()> {
        for dir in [
            self.slurm_dir(),
            self.config_dir(),
            self.logs_dir(),
            self.bundles_dir(),
        ] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if let Some(source) = config_source {
            copy_config(source, &self.config_dir())?;
        }
        write_json(&self.plan_path(), plan)
    }
}

/// The three steps of a run on Slurm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Infer,
    Verify,
    Collect,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Infer, Stage::Verify, Stage::Collect];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Infer => "infer",
            Stage::Verify => "verify",
            Stage::Collect => "collect",
        }
    }
}

/// Copies the configuration files in force (those present in `source`) so that tasks read
/// what the submitter saw, whatever happens to the user's files meanwhile.
fn copy_config(source: &Path, dest: &Path) -> Result<()> {
    use super::config::{EXPERIMENTS_FILE, MODELS_FILE, PROMPTS_FILE};
    for name in [MODELS_FILE, EXPERIMENTS_FILE, PROMPTS_FILE] {
        let from = source.join(name);
        if from.symlink_metadata().is_err() {
            continue;
        }
        let text = crate::util::read_text(&from, 4 << 20)?;
        write_file_atomic(&dest.join(name), text.as_bytes())?;
    }
    Ok(())
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_file_atomic(path, &serde_json::to_vec_pretty(value)?)
}

pub(crate) fn read_folder_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    read_json_bounded(path, MAX_FOLDER_FILE_BYTES)
}

pub(crate) fn read_json_bounded<T: serde::de::DeserializeOwned>(
    path: &Path,
    limit: u64,
) -> Result<T> {
    let bytes = crate::util::read_regular_file(path, limit)?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not a valid file", path.display()))
}

/// Array indices in sbatch's compact form: `0-3,7,9-10`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Refuses a trial number outside the plan, naming where it came from.
pub fn check_trial(plan: &JobPlan, trial: usize) -> Result<()> {
    if trial >= plan.trials {
        bail!(
            "trial {trial} is outside this run's {} trials (array indices 0..{})",
            plan.trials,
            plan.trials
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_indices_are_written_compactly() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[1]), "1");
        assert_eq!(array_spec(&[0, 2, 3, 4, 9]), "0,2-4,9");
        assert_eq!(array_spec(&[]), "");
    }

    #[test]
    fn options_that_could_break_a_script_line_are_refused() {
        let ok = SlurmOptions {
            partition: Some("gpu-a100".into()),
            gres: Some("gpu:1".into()),
            time: Some("1-00:30:00".into()),
            account: Some("lab_42".into()),
            array_parallel: Some(4),
            hold: false,
        };
        ok.validate().unwrap();
        for bad in ["gpu\n#SBATCH --uid=0", "a b", "x;rm", "", "$(id)"] {
            let options = SlurmOptions {
                partition: Some(bad.into()),
                ..Default::default()
            };
            let error = options.validate().unwrap_err().to_string();
            assert!(error.contains("--partition"), "{error}");
        }
        let zero = SlurmOptions {
            array_parallel: Some(0),
            ..Default::default()
        };
        assert!(zero.validate().is_err());
    }
}
