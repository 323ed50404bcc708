//! Keys: what each key does on each screen. Requests that need the backend come back as an
//! [`Action`]; questions (quit or cancel during a run) wait for y/n first.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::engine::events::LogLevel;

use super::app::{Action, App, Confirm, ExportRequest, RunPane, Screen, Viewing};
use super::picker_state::PickerFocus;
use super::results_list::{results_entries, EntrySource};
use super::trial_view::{RunState, RunStatus, TrialStatus};

impl App {
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if self.too_small.get() {
            return self.too_small_key(key.code, ctrl_c);
        }
        // A key press means a shown notice was seen. Esc only dismisses it (so dismissing
        // never quits or steps back); any other key also does its own work. A notice the
        // screen does not show (the run view has its log) must not cost a key.
        let shown = self.shows_notice();
        if self.notice.take().is_some() && shown && key.code == KeyCode::Esc {
            return Action::None;
        }
        if let Some(question) = self.confirm {
            return self.answer(question, key.code, ctrl_c);
        }
        if ctrl_c {
            return self.request_quit();
        }
        if self.show_help {
            if matches!(key.code, KeyCode::Char('?' | 'q') | KeyCode::Esc) {
                self.show_help = false;
            }
            return Action::None;
        }
        match key.code {
            KeyCode::Char('?') => self.show_help = true,
            KeyCode::Char('r') => {
                self.screen = Screen::Results;
                return Action::RefreshPastRuns;
            }
            KeyCode::Char('g') => self.go_to_run(),
            KeyCode::Char('x') => return self.open_matrix_view(),
            KeyCode::Char('c') => self.request_cancel(),
            KeyCode::Char('m') => self.metric = self.metric.next(),
            KeyCode::Char('e') => return self.export_request(),
            KeyCode::Char('q') | KeyCode::Esc => return self.back_or_quit(),
            _ => {
                return match self.screen {
                    Screen::Picker => self.picker_key(key),
                    Screen::Run => self.run_key(key),
                    Screen::Results => self.results_key(key),
                    Screen::Matrix => self.matrix_key(key),
                }
            }
        }
        Action::None
    }

    /// While the terminal is too small only its message (and a question, drawn over it) is on
    /// screen, so keys do only what those offer: q and Ctrl-C quit (asking first during a run),
    /// y/n answer. Anything else would act on a screen nobody can see.
    fn too_small_key(&mut self, code: KeyCode, ctrl_c: bool) -> Action {
        match self.confirm {
            Some(question) => self.answer(question, code, ctrl_c),
            None if ctrl_c || code == KeyCode::Char('q') => self.request_quit(),
            None => Action::None,
        }
    }

    fn answer(&mut self, question: Confirm, code: KeyCode, ctrl_c: bool) -> Action {
        let yes = matches!(code, KeyCode::Char('y' | 'Y'));
        let no = matches!(code, KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc);
        match question {
            // A second Ctrl-C means it: quit.
            Confirm::QuitDuringRun if yes || ctrl_c => {
                self.confirm = None;
                self.cancel_live_run();
                return Action::Quit;
            }
            Confirm::CancelRun if yes => {
                self.confirm = None;
                self.cancel_live_run();
            }
            Confirm::CancelRun if ctrl_c => self.confirm = Some(Confirm::QuitDuringRun),
            _ if no => self.confirm = None,
            _ => {}
        }
        Action::None
    }

    /// Asks the live run to stop; it keeps what it computed and reports `RunDone`.
    pub fn cancel_live_run(&mut self) {
        let Some(run) = self
            .live_run
            .and_then(|index| self.session_runs.get_mut(index))
        else {
            return;
        };
        if let Some(token) = &run.cancel {
            token.cancel();
        }
        if run.status == RunStatus::Running {
            run.status = RunStatus::Cancelling;
            self.log_line(
                LogLevel::Warn,
                "cancel requested: keeping what was computed",
            );
        }
    }

    fn request_quit(&mut self) -> Action {
        if self.live().is_some_and(RunState::is_active) {
            self.confirm = Some(Confirm::QuitDuringRun);
            Action::None
        } else {
            Action::Quit
        }
    }

    fn request_cancel(&mut self) {
        match self.live() {
            Some(run) if run.status == RunStatus::Running => {
                self.confirm = Some(Confirm::CancelRun)
            }
            Some(_) => self.reply(LogLevel::Info, "already cancelling"),
            None => self.reply(LogLevel::Info, "no run is going: nothing to cancel"),
        }
    }

    fn back_or_quit(&mut self) -> Action {
        match self.screen {
            Screen::Picker if self.picker.focus == PickerFocus::Fields => {
                self.picker.toggle_focus()
            }
            Screen::Picker => return self.request_quit(),
            Screen::Run if self.viewing == Viewing::Past && self.matrix.opened_cell => {
                self.screen = Screen::Matrix
            }
            Screen::Run if self.viewing == Viewing::Past => self.screen = Screen::Results,
            Screen::Run | Screen::Results | Screen::Matrix => self.screen = Screen::Picker,
        }
        Action::None
    }

    fn go_to_run(&mut self) {
        if let Some(index) = self.live_run.or(self.session_runs.len().checked_sub(1)) {
            self.open_run_view(Viewing::Session(index));
        } else if self.review.is_some() {
            self.open_run_view(Viewing::Past);
        } else {
            self.reply(
                LogLevel::Info,
                "no run yet: pick an experiment and press Enter",
            );
        }
    }

    fn export_request(&mut self) -> Action {
        let request = match self.screen {
            Screen::Run => {
                let selected = self.shown_run().and_then(RunState::selected);
                match selected.and_then(|trial| trial.result.as_deref()) {
                    Some(result) => Some(ExportRequest::Trials(vec![result.clone()])),
                    None => {
                        let note = "this trial has not finished: nothing to export yet";
                        self.reply(LogLevel::Warn, note);
                        return Action::None;
                    }
                }
            }
            Screen::Results => {
                let entries = results_entries(&self.session_runs, &self.past_runs);
                match entries.get(self.results_selected).map(|entry| entry.source) {
                    Some(EntrySource::Session(index)) => {
                        let run = &self.session_runs[index];
                        match &run.summary_path {
                            Some(summary) => Some(ExportRequest::Run(summary.clone())),
                            None => Some(ExportRequest::Trials(
                                run.results().into_iter().cloned().collect(),
                            )),
                        }
                    }
                    Some(EntrySource::Past(index)) => {
                        let past = &self.past_runs[index];
                        if past.trial_paths().is_empty() {
                            self.reply(
                                LogLevel::Warn,
                                "this run saved no trial files: nothing to export",
                            );
                            return Action::None;
                        }
                        Some(ExportRequest::Run(past.summary_path.clone()))
                    }
                    None => None,
                }
            }
            Screen::Picker | Screen::Matrix => None,
        };
        match request {
            Some(ExportRequest::Trials(trials)) if trials.is_empty() => {
                self.reply(LogLevel::Warn, "no finished trial to export");
                Action::None
            }
            Some(request) => Action::Export(request),
            None => {
                self.reply(
                    LogLevel::Info,
                    "open a run or pick one in the results to export",
                );
                Action::None
            }
        }
    }

    fn picker_key(&mut self, key: KeyEvent) -> Action {
        let focus = self.picker.focus;
        match key.code {
            KeyCode::Tab | KeyCode::BackTab => self.picker.toggle_focus(),
            KeyCode::Up | KeyCode::Char('k') => self.picker.move_cursor(-1),
            KeyCode::Down | KeyCode::Char('j') => self.picker.move_cursor(1),
            KeyCode::Right | KeyCode::Char('l') if focus == PickerFocus::List => {
                self.picker.toggle_focus()
            }
            KeyCode::Right | KeyCode::Char('l') => self.picker.change_field(1, &self.catalog),
            KeyCode::Left | KeyCode::Char('h') => self.picker.change_field(-1, &self.catalog),
            KeyCode::Char(digit @ '0'..='9') => self.picker.type_digit(digit as u8 - b'0'),
            KeyCode::Backspace => self.picker.erase_digit(),
            KeyCode::Enter => return self.start_request(),
            _ => {}
        }
        Action::None
    }

    fn start_request(&mut self) -> Action {
        if let Some(run) = self.live() {
            let note = format!("{} is still running: cancel it (c) first", run.choice.name);
            self.reply(LogLevel::Warn, note);
            return Action::None;
        }
        // An emptied count runs as its least value: the picker shows that value from now on.
        self.picker.settle_numbers();
        match self.picker.current() {
            Some(choice) => Action::StartRun(choice.clone()),
            None => Action::None,
        }
    }

    fn run_key(&mut self, key: KeyEvent) -> Action {
        let verifier_count = self
            .shown_run()
            .and_then(RunState::selected)
            .map_or(0, |trial| trial.verifiers.len().max(1));
        match key.code {
            KeyCode::Tab => self.run_pane = self.run_pane.step(1),
            KeyCode::BackTab => self.run_pane = self.run_pane.step(-1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll_or_select(-1, verifier_count),
            KeyCode::Down | KeyCode::Char('j') => self.scroll_or_select(1, verifier_count),
            KeyCode::Left | KeyCode::Char('h' | '[') => return self.select_trial(-1),
            KeyCode::Right | KeyCode::Char('l' | ']') => return self.select_trial(1),
            KeyCode::Char(digit @ '1'..='9') => {
                let index = (digit as u8 - b'1') as usize;
                if index < verifier_count {
                    self.selected_verifier = index;
                }
            }
            _ => {}
        }
        Action::None
    }

    fn scroll_or_select(&mut self, delta: isize, verifier_count: usize) {
        let step = |value: usize, limit: usize| {
            value
                .saturating_add_signed(delta)
                .min(limit.saturating_sub(1))
        };
        match self.run_pane {
            RunPane::Verifiers | RunPane::Heatmap => {
                self.selected_verifier = step(self.selected_verifier, verifier_count)
            }
            // Up scrolls back in time, so it adds to the distance from the tail.
            // From the position drawn: a resize may have lowered the limit below the stored one.
            RunPane::Log => {
                let limit = self.scroll_limits.log.get();
                self.log_scroll = self
                    .log_scroll
                    .min(limit)
                    .saturating_add_signed(-delta)
                    .min(limit)
            }
            RunPane::Text => {
                let limit = self.scroll_limits.text.get();
                self.text_scroll = self
                    .text_scroll
                    .min(limit)
                    .saturating_add_signed(-delta)
                    .min(limit)
            }
        }
    }

    fn select_trial(&mut self, delta: isize) -> Action {
        let Some(run) = self.shown_run_mut() else {
            return Action::None;
        };
        if run.trials.is_empty() {
            return Action::None;
        }
        let last = run.trials.len() - 1;
        run.selected_trial = run.selected_trial.saturating_add_signed(delta).min(last);
        run.follow_latest = run.selected_trial == last;
        let slot = run.selected_trial;
        let path = run.trial_path(slot);
        let needs_loading = run.trials[slot].status == TrialStatus::NotLoaded;
        self.text_scroll = 0;
        match path {
            Some(path) if needs_loading => Action::LoadTrial { slot, path },
            _ => Action::None,
        }
    }

    fn results_key(&mut self, key: KeyEvent) -> Action {
        let entries = results_entries(&self.session_runs, &self.past_runs);
        let last = entries.len().saturating_sub(1);
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => {
                self.results_selected = self.results_selected.saturating_sub(1)
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.results_selected = (self.results_selected + 1).min(last)
            }
            KeyCode::Enter => match entries.get(self.results_selected).map(|entry| entry.source) {
                Some(EntrySource::Session(index)) => self.open_run_view(Viewing::Session(index)),
                Some(EntrySource::Past(index)) => return self.open_past_run(index),
                None => {}
            },
            _ => {}
        }
        Action::None
    }

    fn open_past_run(&mut self, index: usize) -> Action {
        let past = &self.past_runs[index];
        let paths = past.trial_paths();
        let (mut run, warnings) =
            RunState::past(past.summary.clone(), past.summary_path.clone(), paths);
        run.started_unix = Some(past.summary.started_at);
        for warning in warnings {
            self.reply(LogLevel::Warn, warning);
        }
        let first = run.trial_path(0);
        self.review = Some(run);
        self.open_run_view(Viewing::Past);
        match first {
            Some(path) => Action::LoadTrial { slot: 0, path },
            None => {
                self.reply(LogLevel::Warn, "this run saved no trial files");
                Action::None
            }
        }
    }
}
