//! The console's whole state and how engine events change it (keys: `keys.rs`). Nothing here
//! touches the backend: requests that need it come back as an [`Action`] for the event loop to
//! carry out, which keeps every transition testable without models, files or a terminal.

use std::collections::VecDeque;
use std::path::PathBuf;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::engine::events::{EngineEvent, LogLevel};
use crate::record::results::TrialResult;

use super::heatmap::HeatMetric;
pub use super::picker_state::Catalog;
use super::picker_state::PickerState;
use super::results_list::results_entries;
use super::trial_view::{RunState, RunStatus, TrialView};
use super::{CancelToken, ExperimentChoice, PastRun};

/// What the rest of the program must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    None,
    Quit,
    StartRun(ExperimentChoice),
    RefreshPastRuns,
    /// Re-read the matrix folder now.
    RefreshMatrix,
    /// Read a saved trial into slot `slot` of the run being reviewed.
    LoadTrial {
        slot: usize,
        path: PathBuf,
    },
    Export(ExportRequest),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExportRequest {
    /// Trials already in memory.
    Trials(Vec<TrialResult>),
    /// A whole saved run, by its summary: every trial's figures and the run's own (accept
    /// rates over trials, overhead, threshold distributions over all checks), as `plot`
    /// draws them from the same file.
    Run(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Picker,
    Run,
    Results,
    /// The cheat matrix (`x`).
    Matrix,
}

/// A question waiting for y/n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    QuitDuringRun,
    CancelRun,
}

/// Panes of the run view, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPane {
    Text,
    Verifiers,
    Heatmap,
    Log,
}

impl RunPane {
    const ORDER: [RunPane; 4] = [
        RunPane::Text,
        RunPane::Verifiers,
        RunPane::Heatmap,
        RunPane::Log,
    ];

    pub(super) fn step(self, delta: isize) -> RunPane {
        let index = RunPane::ORDER
            .iter()
            .position(|pane| *pane == self)
            .unwrap_or(0);
        let count = RunPane::ORDER.len() as isize;
        RunPane::ORDER[(index as isize + delta).rem_euclid(count) as usize]
    }
}

/// Which run the run view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewing {
    Session(usize),
    /// The past run in [`App::review`].
    Past,
}

/// What work started by a key (an export, done off the drawing thread) says when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The answer to the key: a notice on every screen, and a log line.
    Reply(LogLine),
    /// A detail (each file written) for the log only.
    Detail(LogLine),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String,
}

/// The newest log lines; old ones fall off so a chatty engine cannot grow memory without bound.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer {
    lines: VecDeque<LogLine>,
}

impl LogBuffer {
    pub const CAPACITY: usize = 5000;

    /// Adds a message; one with several lines becomes several log lines.
    pub fn push(&mut self, level: LogLevel, text: impl Into<String>) {
        for line in text.into().lines() {
            if self.lines.len() == Self::CAPACITY {
                self.lines.pop_front();
            }
            let text = line.to_string();
            self.lines.push_back(LogLine { level, text });
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&LogLine> {
        self.lines.get(index)
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &LogLine> {
        self.lines.iter()
    }
}

pub struct App {
    pub catalog: Catalog,
    pub screen: Screen,
    pub show_help: bool,
    pub confirm: Option<Confirm>,
    pub picker: PickerState,
    /// Runs started in this session, oldest first.
    pub session_runs: Vec<RunState>,
    /// Index in `session_runs` of the run receiving engine events.
    pub live_run: Option<usize>,
    pub past_runs: Vec<PastRun>,
    /// Runs submitted to Slurm, as last polled (results view).
    pub slurm_runs: Vec<crate::experiment::slurm::watch::SlurmRunWatch>,
    /// A past run opened from the results view.
    pub review: Option<RunState>,
    pub viewing: Viewing,
    pub results_selected: usize,
    pub run_pane: RunPane,
    pub metric: HeatMetric,
    pub selected_verifier: usize,
    pub log: LogBuffer,
    /// Lines scrolled back from the newest (0 follows the tail).
    pub log_scroll: usize,
    pub text_scroll: usize,
    /// The largest useful scroll of each pane, as the last frame drew it: scrolling stops
    /// there instead of piling up presses that later keys must undo.
    pub scroll_limits: ScrollLimits,
    /// The newest warning, error or reply to a key, shown on screens without a log pane until
    /// a key is pressed (the run view has its log).
    pub notice: Option<LogLine>,
    /// Whether the last frame showed only the "terminal too small" message: keys must not act
    /// on the screen hidden behind it.
    pub too_small: std::cell::Cell<bool>,
    /// The matrix view's state.
    pub matrix: super::matrix_state::MatrixViewState,
    report_sender: UnboundedSender<Report>,
    reports: UnboundedReceiver<Report>,
}

#[derive(Debug, Default)]
pub struct ScrollLimits {
    pub text: std::cell::Cell<usize>,
    pub log: std::cell::Cell<usize>,
}

impl App {
    pub fn new(catalog: Catalog) -> App {
        let (report_sender, reports) = unbounded_channel();
        App {
            picker: PickerState::new(catalog.experiments.clone()),
            catalog,
            screen: Screen::Picker,
            show_help: false,
            confirm: None,
            session_runs: Vec::new(),
            live_run: None,
            past_runs: Vec::new(),
            slurm_runs: Vec::new(),
            review: None,
            viewing: Viewing::Session(0),
            results_selected: 0,
            run_pane: RunPane::Heatmap,
            metric: HeatMetric::default(),
            selected_verifier: 0,
            log: LogBuffer::default(),
            log_scroll: 0,
            text_scroll: 0,
            scroll_limits: ScrollLimits::default(),
            notice: None,
            too_small: std::cell::Cell::new(false),
            matrix: Default::default(),
            report_sender,
            reports,
        }
    }

    /// The run the run view shows, if any.
    pub fn shown_run(&self) -> Option<&RunState> {
        match self.viewing {
            Viewing::Session(index) => self.session_runs.get(index),
            Viewing::Past => self.review.as_ref(),
        }
    }

    pub(super) fn shown_run_mut(&mut self) -> Option<&mut RunState> {
        match self.viewing {
            Viewing::Session(index) => self.session_runs.get_mut(index),
            Viewing::Past => self.review.as_mut(),
        }
    }

    pub fn live(&self) -> Option<&RunState> {
        self.live_run.and_then(|index| self.session_runs.get(index))
    }

    pub fn log_line(&mut self, level: LogLevel, text: impl Into<String>) {
        let text = crate::util::escape_controls(&text.into()).into_owned();
        if level != LogLevel::Info {
            self.notice = Some(LogLine {
                level,
                text: text.lines().next().unwrap_or_default().to_string(),
            });
        }
        self.log.push(level, text);
    }

    /// Whether the current screen draws [`App::notice`]: the run view shows it in its log.
    pub fn shows_notice(&self) -> bool {
        self.screen != Screen::Run
    }

    /// Answers a key press: shown as a notice whatever its level, because the picker and the
    /// results have no log pane and a key must never seem to do nothing.
    pub fn reply(&mut self, level: LogLevel, text: impl Into<String>) {
        let text = text.into();
        self.notice = Some(LogLine {
            level,
            text: text.lines().next().unwrap_or_default().to_string(),
        });
        self.log.push(level, text);
    }

    /// Where background work started by a key sends its [`Report`]s.
    pub fn report_sender(&self) -> UnboundedSender<Report> {
        self.report_sender.clone()
    }

    /// Applies the reports that arrived; true if there was any.
    pub fn apply_reports(&mut self) -> bool {
        let mut applied = false;
        while let Ok(report) = self.reports.try_recv() {
            match report {
                Report::Reply(line) => self.reply(line.level, line.text),
                Report::Detail(line) => self.log.push(line.level, line.text),
            }
            applied = true;
        }
        applied
    }

    /// Shows a run that the backend has just been asked to start.
    pub fn begin_run(&mut self, choice: ExperimentChoice, cancel: CancelToken) {
        self.log_line(LogLevel::Info, format!("starting {}", choice.name));
        let mut run = RunState::live(choice, cancel);
        run.started_unix = Some(crate::util::unix_now());
        self.session_runs.push(run);
        let index = self.session_runs.len() - 1;
        self.live_run = Some(index);
        self.open_run_view(Viewing::Session(index));
    }

    /// The backend refused to start the run it was just given.
    pub fn run_start_failed(&mut self, error: &anyhow::Error) {
        self.handle_event(EngineEvent::Failed {
            message: format!("could not start: {error:#}"),
        });
    }

    pub fn set_past_runs(&mut self, runs: Vec<PastRun>) {
        self.past_runs = runs;
        let count = results_entries(&self.session_runs, &self.past_runs).len();
        self.results_selected = self.results_selected.min(count.saturating_sub(1));
    }

    /// A saved trial arrived (or failed to) for slot `slot` of the reviewed run.
    pub fn trial_loaded(&mut self, slot: usize, loaded: anyhow::Result<TrialResult>) {
        match loaded {
            Ok(result) => {
                if let Some(run) = self.review.as_mut() {
                    if let Some(view) = run.trials.get_mut(slot) {
                        *view = TrialView::from_result(result);
                    }
                }
            }
            Err(error) => self.log_line(LogLevel::Error, format!("cannot load trial: {error:#}")),
        }
    }

    pub(super) fn open_run_view(&mut self, viewing: Viewing) {
        self.viewing = viewing;
        self.screen = Screen::Run;
        self.selected_verifier = 0;
        self.text_scroll = 0;
        self.log_scroll = 0;
    }

    /// Applies one engine event to the live run (log lines go to the log whatever happens).
    pub fn handle_event(&mut self, event: EngineEvent) {
        let event = without_controls(event);
        if let EngineEvent::Log { level, message } = event {
            self.log_line(level, message);
            return;
        }
        let Some(run) = self
            .live_run
            .and_then(|index| self.session_runs.get_mut(index))
        else {
            return;
        };
        match event {
            EngineEvent::Log { .. } => {}
            EngineEvent::Preparing { key, message } => run.set_preparing(key, message),
            EngineEvent::TrialStarted {
                trial,
                prompt_category,
                prompt_tokens,
                max_new_tokens,
                decode_path,
                sampled_layers,
                verifiers,
            } => {
                let view = run.trial_mut(trial);
                view.decode_path = decode_path;
                view.start(
                    prompt_category,
                    prompt_tokens,
                    max_new_tokens,
                    sampled_layers,
                    verifiers,
                );
                if run.follow_latest {
                    let started = run.trials.iter().rposition(|view| view.trial == trial);
                    run.selected_trial = started.unwrap_or(0);
                }
            }
            EngineEvent::Token {
                trial,
                index,
                text,
                step_ms,
                ..
            } => run.trial_mut(trial).push_token(index, &text, step_ms),
            EngineEvent::InferenceDone {
                trial,
                tokens,
                time_s,
            } => run.trial_mut(trial).inference_done(tokens, time_s),
            EngineEvent::VerifierStarted { trial, verifier } => {
                run.trial_mut(trial).verifier_mut(verifier).started = true
            }
            EngineEvent::Check {
                trial,
                verifier,
                position,
                layer,
                accept,
                metrics,
            } => run
                .trial_mut(trial)
                .record_check(verifier, position, layer, accept, &metrics),
            EngineEvent::TokenCheck {
                trial,
                verifier,
                position,
                accept,
                ..
            } => run
                .trial_mut(trial)
                .record_token_check(verifier, position, accept),
            EngineEvent::VerifierDone {
                trial,
                verifier,
                accept_rate,
                verdict,
                overhead_percentage,
            } => {
                run.trial_mut(trial).verifier_mut(verifier).outcome =
                    Some(super::trial_view::VerifierOutcome {
                        accept_rate,
                        verdict,
                        overhead_percentage,
                    })
            }
            EngineEvent::TrialDone { trial, result } => run.trial_mut(trial).finish(result),
            EngineEvent::RunDone {
                summary_path,
                cancelled,
            } => {
                run.summary_path = summary_path.clone();
                run.end(if cancelled {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Finished
                });
                let word = if cancelled {
                    "cancelled; partial results kept"
                } else {
                    "finished"
                };
                let place = summary_path.map(|path| format!(" ({})", path.display()));
                let message = format!("run {word}{}", place.unwrap_or_default());
                self.live_run = None;
                self.log_line(LogLevel::Info, message);
            }
            EngineEvent::Failed { message } => {
                run.end(RunStatus::Failed(message.clone()));
                self.live_run = None;
                self.log_line(LogLevel::Error, format!("run failed: {message}"));
            }
        }
    }
}

/// The event with its text made safe to draw: generated tokens and error messages can carry
/// control characters (a model's byte tokens, a manifest's strings) that would drive the
/// terminal.
fn without_controls(event: EngineEvent) -> EngineEvent {
    let clean = |text: String| match crate::util::escape_controls(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    };
    match event {
        EngineEvent::Token {
            trial,
            index,
            id,
            text,
            step_ms,
        } => EngineEvent::Token {
            trial,
            index,
            id,
            text: clean(text),
            step_ms,
        },
        EngineEvent::Preparing { key, message } => EngineEvent::Preparing {
            key,
            message: message.map(clean),
        },
        EngineEvent::Failed { message } => EngineEvent::Failed {
            message: clean(message),
        },
        other => other,
    }
}
