//! Results view: this session's runs and those found on disk, with their summaries; Enter opens
//! one in the run view.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::app::App;
use super::results_list::{results_entries, EntrySource, ResultsEntry};
use super::widgets::cutoff_percent;
use super::widgets::{focus_block, footer_height, format_unix, render_footer, verdict_style};

fn percent(value: Option<f64>) -> String {
    value.map_or("—".to_string(), |value| format!("{:.1}%", value * 100.0))
}

const RESULTS_KEYS: [(&str, &str); 5] = [
    ("↑↓", "choose"),
    ("Enter", "open"),
    ("e", "export"),
    ("q", "back"),
    ("?", "help"),
];

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let [title, list, details, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(7),
        Constraint::Length(footer_height(area.width, &RESULTS_KEYS)),
    ])
    .areas(area);
    let entries = results_entries(&app.session_runs, &app.past_runs);
    let heading = format!(
        "Results · {} runs (this session first, then the data directory)",
        entries.len()
    );
    frame.render_widget(
        Line::styled(heading, Style::default().add_modifier(Modifier::BOLD)),
        title,
    );
    let list = if app.slurm_runs.is_empty() {
        list
    } else {
        let [list, slurm] = Layout::vertical([
            Constraint::Min(5),
            Constraint::Length(super::slurm_panel::height(&app.slurm_runs)),
        ])
        .areas(list);
        super::slurm_panel::render(frame, slurm, &app.slurm_runs);
        list
    };
    render_table(frame, list, app, &entries);
    render_details(frame, details, entries.get(app.results_selected));
    render_footer(frame, footer, &RESULTS_KEYS);
}

/// Headers of the runs table, short enough that every column fits 80 columns.
const HEADERS: [&str; 9] = [
    "",
    "Experiment",
    "Started (UTC)",
    "Trials",
    "Accept",
    "Pass",
    "Expect",
    "Held",
    "Status",
];
const EXPERIMENT_COLUMN: usize = 1;

fn render_table(frame: &mut Frame, area: Rect, app: &App, entries: &[ResultsEntry]) {
    let block = focus_block("Runs", true);
    if entries.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        frame.render_widget(
            Paragraph::new("No runs yet: none in the data directory, none started."),
            inner,
        );
        return;
    }
    let cells: Vec<[String; 9]> = entries
        .iter()
        .map(|entry| {
            let source = match entry.source {
                EntrySource::Session(_) => "now",
                EntrySource::Past(_) => "disk",
            };
            [
                source.to_string(),
                entry.experiment.clone(),
                entry.started_unix.map_or("—".to_string(), format_unix),
                format!("{}/{}", entry.trials_done, entry.trials_planned),
                percent(entry.avg_accept_rate),
                percent(entry.pass_rate),
                entry.expected.to_string(),
                percent(entry.expectation_rate),
                entry.status.clone(),
            ]
        })
        .collect();
    let widths = column_widths(&cells, block.inner(area).width);
    let rows = entries.iter().zip(cells).map(|(entry, cells)| {
        let held_style = match entry.expectation_rate {
            Some(rate) if rate >= 1.0 => Style::default().fg(Color::Green),
            Some(_) => Style::default().fg(Color::Red),
            None => Style::default(),
        };
        Row::new(cells.into_iter().enumerate().map(|(column, text)| {
            let style = match column {
                6 => verdict_style(entry.expected.is_pass()),
                7 => held_style,
                _ => Style::default(),
            };
            Cell::from(Span::styled(text, style))
        }))
    });
    let header = Row::new(HEADERS)
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let table = Table::new(rows, widths.map(Constraint::Length))
        .header(header)
        .block(block)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(app.results_selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// Each column as wide as its widest text (so no count such as "100000/100000" is cut); the
/// experiment name alone gives way when the table is too wide, as the summary below shows it
/// in full.
fn column_widths(cells: &[[String; 9]], available: u16) -> [u16; 9] {
    let mut widths = HEADERS.map(|header| header.width() as u16);
    for row in cells {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.width() as u16);
        }
    }
    let spacing = HEADERS.len() as u16 - 1;
    let others: u16 = widths.iter().sum::<u16>() - widths[EXPERIMENT_COLUMN] + spacing;
    widths[EXPERIMENT_COLUMN] = widths[EXPERIMENT_COLUMN].min(available.saturating_sub(others));
    widths
}

fn render_details(frame: &mut Frame, area: Rect, entry: Option<&ResultsEntry>) {
    let block = focus_block("Summary", false);
    let Some(entry) = entry else {
        frame.render_widget(block, area);
        return;
    };
    let dim = Style::default().fg(Color::DarkGray);
    let detection = entry
        .detection_rate
        .map(|rate| format!(" · detection {:.1}%", rate * 100.0));
    let lines = vec![
        Line::from(format!("{}: {}", entry.experiment, entry.description)),
        Line::from(vec![
            Span::styled("roles ", dim),
            Span::raw(entry.roles.clone()),
        ]),
        Line::from(vec![
            Span::styled("pairing ", dim),
            Span::raw(entry.pairing.clone()),
        ]),
        Line::from(format!(
            "cutoff {:.1}% · avg overhead {} · pass rate {}{}",
            cutoff_percent(entry.cutoff),
            entry
                .avg_overhead
                .map_or("—".to_string(), |value| format!("{value:.1}%")),
            percent(entry.pass_rate),
            detection.unwrap_or_default()
        )),
        Line::styled(
            entry
                .summary_path
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string()),
            dim,
        ),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(block).wrap(Wrap { trim: true }),
        area,
    );
}
