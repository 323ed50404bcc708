//! The matrix view (`x`): the newest cheat matrix under `<data>/matrix/` (written by
//! `verillm-tui matrix`, in this console's data directory), rows × pairings. Each cell shows the
//! sequential test's detection rate (cheats) or false-alarm rate (controls) with the median
//! tokens to detection, or how many of its trials have finished. The folder is re-read every
//! second while the view is open: a trial file is parsed once (they are written whole and never
//! change), and the grid is re-aggregated, so it fills as the trials finish. Enter opens the
//! selected cell's run in the run view.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::app::{Action, App, Screen, Viewing};
use super::matrix_state::*;
use super::trial_view::RunState;
use super::widgets::{focus_block, footer_height, render_footer};
use crate::engine::events::LogLevel;
use crate::experiment::matrix::{cell_dir, MatrixReport, RowKind};
use crate::experiment::matrix_output::closes_blind_spot;
use crate::record::results::RunSummary;

impl App {
    /// Keys of the matrix view (after the global ones).
    pub(super) fn matrix_key(&mut self, key: KeyEvent) -> Action {
        let m = &mut self.matrix;
        let (rows, cols) = m
            .report
            .as_ref()
            .map_or((0, 0), |r| (r.rows.len(), r.pairings.len()));
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => m.row = m.row.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => m.row = (m.row + 1).min(rows.saturating_sub(1)),
            KeyCode::Left | KeyCode::Char('h') => m.col = m.col.saturating_sub(1),
            KeyCode::Right | KeyCode::Char('l') => m.col = (m.col + 1).min(cols.saturating_sub(1)),
            KeyCode::Enter => return self.open_matrix_cell(),
            _ => {}
        }
        Action::None
    }

    /// Opens the selected cell's run (its summary.json) in the run view.
    fn open_matrix_cell(&mut self) -> Action {
        let (Some(dir), Some((row, pairing))) =
            (self.matrix.dir.clone(), self.matrix.selected_ids())
        else {
            return Action::None;
        };
        let summary_path = cell_dir(&dir, &row, &pairing).join("summary.json");
        let summary = std::fs::read(&summary_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<RunSummary>(&b).map_err(|e| e.to_string()))
            .and_then(|s| s.check_consistency().map(|()| s));
        let summary = match summary {
            Ok(s) => s,
            Err(_) if !summary_path.exists() => {
                self.reply(
                    LogLevel::Info,
                    format!("{row} on {pairing} has no finished run yet: its summary comes when its last trial ends"),
                );
                return Action::None;
            }
            Err(e) => {
                self.reply(LogLevel::Error, format!("{}: {e}", summary_path.display()));
                return Action::None;
            }
        };
        let past = super::PastRun {
            summary_path,
            summary,
        };
        let paths = past.trial_paths();
        let (mut run, warnings) =
            RunState::past(past.summary.clone(), past.summary_path.clone(), paths);
        run.started_unix = Some(past.summary.started_at);
        for warning in warnings {
            self.reply(LogLevel::Warn, warning);
        }
        let first = run.trial_path(0);
        self.review = Some(run);
        self.matrix.opened_cell = true;
        self.open_run_view(Viewing::Past);
        match first {
            Some(path) => Action::LoadTrial { slot: 0, path },
            None => Action::None,
        }
    }

    /// `x`: the matrix view, read at once.
    pub(super) fn open_matrix_view(&mut self) -> Action {
        self.screen = Screen::Matrix;
        self.matrix.opened_cell = false;
        Action::RefreshMatrix
    }
}

fn cell_style(kind: RowKind, rate: f64) -> Style {
    // Cheats: a high detection rate is the good outcome; controls: a low false-alarm rate.
    let good = match kind {
        RowKind::Cheat => rate >= 0.5,
        RowKind::Control => rate <= 0.0,
    };
    let color = match (kind, good) {
        (_, true) => Color::Green,
        (RowKind::Cheat, false) => Color::Yellow,
        (RowKind::Control, false) => Color::Red,
    };
    Style::default().fg(color)
}

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let m = &app.matrix;
    let [title, grid, details, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(7),
        Constraint::Length(footer_height(area.width, &MATRIX_KEYS)),
    ])
    .areas(area);
    render_footer(frame, footer, &MATRIX_KEYS);
    let Some(report) = &m.report else {
        let text = m
            .problem
            .clone()
            .unwrap_or_else(|| "reading the matrix…".into());
        frame.render_widget(
            Line::styled(
                "Cheat matrix",
                Style::default().add_modifier(Modifier::BOLD),
            ),
            title,
        );
        frame.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: true })
                .block(focus_block("Matrix", true)),
            grid,
        );
        return;
    };
    let done: usize = report.cells.iter().map(|c| c.trials.len()).sum();
    let planned = report.cells.len() * report.trials_per_cell;
    let heading = format!(
        "Cheat matrix · {done}/{planned} trials{} · α {} β {} · {}",
        if report.complete { "" } else { " (filling)" },
        report.alpha,
        report.beta,
        m.dir
            .as_deref()
            .and_then(|d| d.file_name())
            .map_or(String::new(), |n| n.to_string_lossy().into_owned())
    );
    frame.render_widget(
        Line::styled(heading, Style::default().add_modifier(Modifier::BOLD)),
        title,
    );
    let header = Row::new(
        std::iter::once(Cell::from("row"))
            .chain(report.pairings.iter().map(|p| Cell::from(p.label.clone()))),
    )
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = report
        .rows
        .iter()
        .enumerate()
        .map(|(r, row)| {
            let name = match row.kind {
                RowKind::Cheat => row.id.clone(),
                RowKind::Control => format!("{} (ctl)", row.id),
            };
            let cells = report.pairings.iter().enumerate().map(|(c, p)| {
                let cell = report.cell(&row.id, &p.id);
                let (text, mut style) = match cell {
                    None => ("—".to_string(), Style::default()),
                    Some(cell) if cell.rejected.trials == 0 => (
                        format!("{}/{} run", cell.trials.len(), report.trials_per_cell),
                        Style::default().fg(Color::DarkGray),
                    ),
                    Some(cell) => {
                        let prefix = if row.kind == RowKind::Control {
                            "FA "
                        } else {
                            ""
                        };
                        let tokens = match (row.kind, cell.median_tokens_to_detection) {
                            (RowKind::Cheat, Some(t)) => format!(" {t}tok"),
                            _ => String::new(),
                        };
                        let filling = if cell.trials.len() < report.trials_per_cell {
                            format!(" {}/{}", cell.trials.len(), report.trials_per_cell)
                        } else {
                            String::new()
                        };
                        (
                            format!("{prefix}{:.2}{tokens}{filling}", cell.rejected.rate),
                            cell_style(row.kind, cell.rejected.rate),
                        )
                    }
                };
                if r == m.row && c == m.col {
                    style = style.add_modifier(Modifier::REVERSED);
                }
                Cell::from(text).style(style)
            });
            Row::new(std::iter::once(Cell::from(name)).chain(cells))
        })
        .collect();
    let widths: Vec<Constraint> = std::iter::once(Constraint::Length(16))
        .chain(report.pairings.iter().map(|_| Constraint::Min(14)))
        .collect();
    frame.render_widget(
        Table::new(rows, widths).header(header).block(focus_block(
            "Sequential test: detection (cheats) · false alarms (controls) · median tokens",
            true,
        )),
        grid,
    );
    render_details(frame, details, report, m.row, m.col, m.problem.as_deref());
}

fn render_details(
    frame: &mut Frame,
    area: Rect,
    report: &MatrixReport,
    row: usize,
    col: usize,
    problem: Option<&str>,
) {
    let (Some(r), Some(p)) = (report.rows.get(row), report.pairings.get(col)) else {
        return;
    };
    let mut lines = Vec::new();
    if let Some(problem) = problem {
        lines.push(Line::styled(
            format!("skipped: {problem}"),
            Style::default().fg(Color::Red),
        ));
    }
    lines.push(Line::from(vec![
        Span::styled(
            format!("{} on {}", r.id, p.label),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            " · experiment {} · {}",
            r.experiment, r.description
        )),
    ]));
    if let Some(cell) = report.cell(&r.id, &p.id) {
        let what = if r.kind == RowKind::Control {
            "false alarms"
        } else {
            "detected"
        };
        lines.push(Line::from(format!(
            "SPRT {what}: {} of {} decided trials · {} · undecided {} · cutoff rule rejected {}/{}",
            cell.rejected.successes,
            cell.rejected.trials,
            cell.rejected.display(),
            cell.undecided,
            cell.cutoff_rejected,
            cell.trials.len()
        )));
        lines.push(Line::from(format!(
            "Trial-level test {what}: {} of {} · {}{}",
            cell.trial_level_rejected.successes,
            cell.trial_level_rejected.trials,
            cell.trial_level_rejected.display(),
            cell.trial_level_median_tokens
                .map_or(String::new(), |t| format!(" · median {t} tokens needed")),
        )));
        if closes_blind_spot(cell) {
            lines.push(Line::styled(
                "the trial-level test catches what the per-check test misses here",
                Style::default().fg(Color::Cyan),
            ));
        }
    }
    if let Some(cal) = report.calibration.iter().find(|c| c.pairing == p.id) {
        lines.push(Line::from(format!(
            "pairing {}: honest {} / {} checks rejected in {} control trials → p0 {:.2e}, p1 {}",
            p.id, cal.honest.rejected, cal.honest.checks, cal.honest.trials, cal.p0, cal.p1
        )));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(focus_block("Cell", false)),
        area,
    );
}
