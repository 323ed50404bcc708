//! The interactive console wired to the real engines: a [`Backend`] over the [`Workspace`],
//! and the main job (`verillm-tui` with no arguments).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::engine::events::{CancelToken, EngineEvent, EventSink, LogLevel};
use crate::experiment::config::Role;
use crate::experiment::plan::{resolve_roles, RunRequest};
use crate::experiment::runner::run_experiment;
use crate::experiment::workspace::Workspace;
use crate::model::device::{available_profiles, DeviceProfile};
use crate::model::weights::Precision;
use crate::record::results::{RunSummary, TrialResult};
use crate::tui::{Backend, ExperimentChoice, PastRun, RoleChoice};

/// Result files from elsewhere are bounded before they are parsed.
const MAX_RESULT_BYTES: u64 = 512 << 20;

pub struct WorkspaceBackend {
    ws: Arc<Workspace>,
    log: Arc<Mutex<Option<std::fs::File>>>,
    /// Why the data directory cannot take results or logs, found at start-up.
    data_dir_problem: Option<String>,
}

impl WorkspaceBackend {
    /// Logs go to `<data>/logs/verillm-tui.log`, never to the terminal the console draws on.
    pub fn new(ws: Arc<Workspace>) -> Self {
        let (file, data_dir_problem) = match open_log(&ws.data_dir) {
            Ok(file) => (Some(file), None),
            Err(e) => (
                None,
                Some(format!(
                    "the data directory {} cannot be used ({e:#}): runs cannot be saved and no \
                     log is written; start with --data-dir DIR (or VERILLM_DATA_DIR) naming a \
                     writable directory",
                    ws.data_dir.display()
                )),
            ),
        };
        WorkspaceBackend {
            ws,
            log: Arc::new(Mutex::new(file)),
            data_dir_problem,
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.ws.data_dir.join("logs").join("verillm-tui.log")
    }
}

fn role_choice(r: &Role) -> RoleChoice {
    RoleChoice::new(r.model.clone(), r.precision, r.device)
}

/// The role a run starts with; a role without precision or device (only a past run's, whose
/// summary named values this build does not parse) cannot start.
fn role_plan(r: &RoleChoice) -> Result<Role> {
    let missing = |field: &str| {
        anyhow::anyhow!(
            "role {} has no {field} this build knows: choose one in the picker",
            r.model
        )
    };
    Ok(Role {
        model: r.model.clone(),
        precision: r.precision.ok_or_else(|| missing("precision"))?,
        device: r.device.ok_or_else(|| missing("device"))?,
    })
}

/// Opens the log in `<data>/logs`, after checking that the data directory takes a new file
/// (a run writes its results there): a file in its place or a read-only directory is found
/// now, not when the first run ends.
fn open_log(data_dir: &Path) -> Result<std::fs::File> {
    if data_dir.exists() && !data_dir.is_dir() {
        anyhow::bail!("it is not a directory");
    }
    let dir = data_dir.join("logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let probe = data_dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("writing in {}", data_dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    let path = dir.join("verillm-tui.log");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// One log line, stamped with the UTC time a person reads (`2026-12-07T14:05:03Z`).
fn log_line(file: &Mutex<Option<std::fs::File>>, line: &str) {
    if let Some(f) = file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        let (year, month, day, hour, minute, second) =
            crate::util::utc_from_unix(crate::util::unix_now());
        let _ = writeln!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z {line}"
        );
    }
}

impl Backend for WorkspaceBackend {
    fn matrix_root(&self) -> Option<PathBuf> {
        Some(self.ws.data_dir.join("matrix"))
    }

    fn startup_problem(&self) -> Option<String> {
        self.data_dir_problem.clone()
    }

    fn experiments(&self) -> Vec<ExperimentChoice> {
        let cfg = &self.ws.config;
        cfg.experiments
            .experiment_names()
            .into_iter()
            .filter_map(|name| {
                let spec = cfg.experiments.get(name)?;
                let (inference, verifiers) = resolve_roles(spec, &RunRequest::default()).ok()?;
                Some(ExperimentChoice {
                    name: name.to_string(),
                    description: spec.description.clone(),
                    inference: role_choice(&inference),
                    verifiers: verifiers.iter().map(role_choice).collect(),
                    cutoff: spec.cutoff,
                    expected: spec.expected,
                    trials: spec.trials,
                    max_new_tokens: spec.new_token_budget(&cfg.prompts).1,
                    seed: spec.seed.unwrap_or(0),
                    prompt_category: spec.prompts.category.to_string(),
                    segment_layers: (!spec.mode.is_full()).then(|| {
                        spec.challenge_layers
                            .unwrap_or(crate::experiment::config::DEFAULT_CHALLENGED_LAYERS)
                    }),
                })
            })
            .collect()
    }

    fn models(&self) -> Vec<String> {
        self.ws
            .config
            .models
            .ids()
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn devices(&self) -> Vec<DeviceProfile> {
        available_profiles()
    }

    fn precisions(&self) -> Vec<Precision> {
        Precision::NAMES
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect()
    }

    fn start(
        &self,
        choice: ExperimentChoice,
        events: tokio::sync::mpsc::UnboundedSender<EngineEvent>,
        cancel: CancelToken,
    ) -> Result<()> {
        let req = RunRequest {
            experiment: choice.name.clone(),
            trials: Some(choice.trials.max(1)),
            max_new_tokens: Some(choice.max_new_tokens.max(1)),
            seed: Some(choice.seed),
            jobs: 1,
            mode: Some(match choice.segment_layers {
                Some(_) => crate::experiment::config::VerificationMode::Segment,
                None => crate::experiment::config::VerificationMode::Full,
            }),
            challenge_layers: choice.segment_layers,
            inference_role: Some(role_plan(&choice.inference)?),
            verifier_roles: Some(
                choice
                    .verifiers
                    .iter()
                    .map(role_plan)
                    .collect::<Result<_>>()?,
            ),
            ..Default::default()
        };
        // Engine → log file → console: every message is also kept on disk.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<EngineEvent>();
        let log = self.log.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                match &ev {
                    EngineEvent::Log { level, message } => {
                        log_line(&log, &format!("{level:?} {message}"))
                    }
                    EngineEvent::Failed { message } => log_line(&log, &format!("Error {message}")),
                    EngineEvent::TrialDone { trial, result } => log_line(
                        &log,
                        &format!(
                            "Info trial {trial} done: {:?} (expected {:?})",
                            result.summary.final_verdict, result.summary.expected_verdict
                        ),
                    ),
                    EngineEvent::RunDone {
                        summary_path,
                        cancelled,
                    } => log_line(
                        &log,
                        &format!("Info run done (cancelled: {cancelled}) {:?}", summary_path),
                    ),
                    _ => {}
                }
                if events.send(ev).is_err() {
                    break;
                }
            }
        });
        log_line(
            &self.log,
            &format!("Info starting {} with {:?}", choice.name, choice),
        );
        let sink = EventSink::new(tx);
        sink.log(LogLevel::Info, format!("{}: loading models (first use of a precision quantizes or dequantizes the weights)…", choice.name));
        let ws = self.ws.clone();
        tokio::spawn(async move {
            // Errors reach the console as EngineEvent::Failed from run_experiment itself.
            let _ = run_experiment(ws, req, sink, cancel).await;
        });
        Ok(())
    }

    fn past_runs(&self) -> Vec<PastRun> {
        let mut runs = Vec::new();
        let Ok(experiments) = std::fs::read_dir(&self.ws.data_dir) else {
            return runs;
        };
        for exp in experiments.flatten() {
            let Ok(run_dirs) = std::fs::read_dir(exp.path()) else {
                continue;
            };
            for run in run_dirs.flatten() {
                let path = run.path().join("summary.json");
                // Only summaries this build could have written: one that lists millions of
                // trial files would size the review screen by them.
                let read = read_json::<RunSummary>(&path)
                    .ok()
                    .filter(|summary| summary.check_consistency().is_ok());
                if let Some(summary) = read {
                    runs.push(PastRun {
                        summary_path: path,
                        summary,
                    });
                }
            }
        }
        runs.sort_by(|a, b| {
            b.summary
                .started_at
                .cmp(&a.summary.started_at)
                .then(b.summary_path.cmp(&a.summary_path))
        });
        runs
    }

    fn slurm_runs(&self) -> Vec<crate::experiment::slurm::watch::SlurmRunWatch> {
        crate::experiment::slurm::watch::scan(&self.ws.data_dir)
    }

    fn load_trial(&self, path: &Path) -> Result<TrialResult> {
        read_json(path)
    }

    fn export_run(&self, summary: &Path) -> Result<Vec<PathBuf>> {
        let dir = run_export_dir(&self.ws.data_dir.join("plots"), summary);
        let written = match crate::plot::plot_files(&[summary.to_path_buf()], &dir) {
            Ok(written) => written,
            Err(run_error) => {
                // One bad trial file must not cost the others their figures: each readable
                // trial is exported alone, and the reply says what could not be drawn.
                let (written, readable, listed) = export_readable_trials(summary, &dir);
                if written.is_empty() {
                    anyhow::bail!("{run_error:#}; no trial of the run could be exported either");
                }
                anyhow::bail!(
                    "{run_error:#}; so the run's own figures were not drawn, but {} PNGs of its \
                     {readable} readable trials (of {listed}) are in {}",
                    written.len(),
                    dir.display()
                );
            }
        };
        log_line(
            &self.log,
            &format!("Info exported {} PNGs to {}", written.len(), dir.display()),
        );
        Ok(written)
    }

    fn export_pngs(&self, trial: &TrialResult) -> Result<Vec<PathBuf>> {
        let dir = trial_export_dir(&self.ws.data_dir.join("plots"), trial);
        let written = crate::plot::export_trial(trial, &dir)?;
        log_line(
            &self.log,
            &format!("Info exported {} PNGs to {}", written.len(), dir.display()),
        );
        Ok(written)
    }
}

/// Exports, each on its own, the trials of a run summary that read and check as trials:
/// (written paths, readable trials, listed trials).
fn export_readable_trials(summary: &Path, dir: &Path) -> (Vec<PathBuf>, usize, usize) {
    let Ok(run) = read_json::<RunSummary>(summary) else {
        return (Vec::new(), 0, 0);
    };
    let mut written = Vec::new();
    let mut readable = 0;
    for listed in &run.trial_files {
        let Ok(path) = crate::record::input::resolve_trial_file(summary, listed) else {
            continue;
        };
        if let Ok(crate::plot::PlotInput::Trial { trial, .. }) = crate::plot::load_input(&path) {
            let trial_dir = dir.join(format!("trial{:03}", trial.trial));
            if let Ok(paths) = crate::plot::export_trial(&trial, &trial_dir) {
                readable += 1;
                written.extend(paths);
            }
        }
    }
    (written, readable, run.trial_files.len())
}

/// Where the console exports a whole run's figures: a folder per experiment and run, named as
/// the run's own folder (`plots/exp1/run-20261126-235100/`).
pub fn run_export_dir(plots_root: &Path, summary: &Path) -> PathBuf {
    let run_dir = summary.parent().unwrap_or(Path::new("."));
    let name = |path: Option<&Path>| {
        crate::plot::safe_component(
            &path
                .and_then(Path::file_name)
                .map_or_else(|| "run".into(), |n| n.to_string_lossy()),
        )
    };
    plots_root
        .join(name(run_dir.parent()))
        .join(name(Some(run_dir)))
}

/// Where the console exports one trial's figures: a folder per experiment and per trial run
/// (named by when it started), so exporting another run never overwrites these files. Both
/// names come from the result file, so each is made one safe path component.
pub fn trial_export_dir(plots_root: &Path, trial: &TrialResult) -> PathBuf {
    plots_root
        .join(crate::plot::safe_component(&trial.experiment))
        .join(format!(
            "{}_trial{:03}",
            crate::experiment::output::utc_stamp(trial.started_at),
            trial.trial
        ))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = crate::util::read_regular_file(path, MAX_RESULT_BYTES)?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a valid result file", path.display()))
}

/// `verillm-tui` with no arguments: make sure the embedded model is there (before the screen
/// is taken over, so pip's output stays readable), then open the console.
pub async fn run_console(ws: Workspace) -> Result<crate::tui::Ending> {
    crate::model::embedded::ensure_embedded_model(&ws.model_dir)?;
    let backend = Arc::new(WorkspaceBackend::new(Arc::new(ws)));
    let log = backend.log.clone();
    log_line(
        &log,
        &format!("Info console started (pid {})", std::process::id()),
    );
    let ending = crate::tui::run_tui(backend).await;
    log_line(
        &log,
        &match &ending {
            Ok(crate::tui::Ending::Quit) => "Info console closed: quit".to_string(),
            Ok(crate::tui::Ending::Signal(n)) => {
                format!("Info console closed by signal {n} ({})", signal_name(*n))
            }
            Err(e) => format!("Error console failed: {e:#}"),
        },
    );
    ending
}

fn signal_name(number: i32) -> &'static str {
    match number {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        15 => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::trials::{honest_trials, summary_for, write_json};

    #[test]
    fn one_bad_trial_file_does_not_cost_the_others_their_figures() {
        let scratch = tempfile::tempdir().unwrap();
        let run = scratch.path().join("exp2").join("run-1");
        std::fs::create_dir_all(&run).unwrap();
        let trials = honest_trials();
        let mut files = Vec::new();
        for (index, trial) in trials.iter().enumerate() {
            let mut trial = trial.clone();
            if index == 1 {
                // Damaged: a check beyond the generated tokens.
                trial.verifiers[0].statistics.checks[0].position = 1 << 40;
            }
            let name = format!("trial_{index:03}.json");
            write_json(&run.join(&name), &trial);
            files.push(name);
        }
        let summary = run.join("summary.json");
        write_json(&summary, &summary_for("exp2", &trials, files));
        let figures = scratch.path().join("plots");
        assert!(crate::plot::plot_files(std::slice::from_ref(&summary), &figures).is_err());
        let (written, readable, listed) = export_readable_trials(&summary, &figures);
        assert_eq!((readable, listed), (trials.len() - 1, trials.len()));
        assert!(!written.is_empty() && written.iter().all(|p| p.exists()));
    }

    /// The picker's typed role is the run's role as is; one a past run could not parse (no
    /// device) is refused by name instead of starting on some default.
    #[test]
    fn a_role_starts_only_with_a_known_precision_and_device() {
        let device = DeviceProfile::parse("cpu:bf16").unwrap();
        let role = RoleChoice::new("smollm2-135m", Precision::Full, device);
        let plan = role_plan(&role).unwrap();
        assert_eq!((plan.precision, plan.device), (Precision::Full, device));
        let unknown = RoleChoice {
            device: None,
            ..role
        };
        let err = role_plan(&unknown).unwrap_err().to_string();
        assert!(
            err.contains("smollm2-135m") && err.contains("device"),
            "{err}"
        );
    }
}
