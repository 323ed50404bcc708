//! The `?` overlay: every key, grouped by where it works. Two columns so it fits 80×24.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};
use ratatui::Frame;

use super::widgets::centered;

/// (section, [(keys, what they do)]) — the single source of truth for the key map.
pub const KEYS: [(&str, &[(&str, &str)]); 5] = [
    (
        "Anywhere",
        &[
            ("?", "show / hide this help"),
            ("q Esc", "back; quit from picker"),
            ("Ctrl-C", "quit (asks during a run)"),
            ("r", "results: past + session"),
            ("g", "go to the current run"),
            ("x", "cheat matrix (live)"),
            ("c", "cancel the run (asks)"),
            ("e", "export PNGs of the trial"),
            ("m", "metric: rel_l2 mean_abs"),
            ("", "        pe ulp_mean"),
            ("y / n", "answer a question"),
        ],
    ),
    (
        "Picker",
        &[
            ("↑↓ j k", "experiment / field"),
            ("Tab S-Tab", "list ⇄ fields"),
            ("←→ h l", "change the field"),
            ("0-9 Bksp", "type a number"),
            ("Enter", "start the experiment"),
        ],
    ),
    (
        "Run view",
        &[
            ("Tab S-Tab", "next / previous pane"),
            ("↑↓ j k", "verifier, or scroll pane"),
            ("←→ h l [ ]", "previous / next trial"),
            ("1-9", "verifier for heatmap"),
        ],
    ),
    (
        "Results",
        &[("↑↓ j k", "choose a run"), ("Enter", "open its trials")],
    ),
    (
        "Matrix",
        &[
            ("↑↓←→ hjkl", "choose a cell"),
            ("Enter", "open the cell's run"),
        ],
    ),
];

fn section_lines(sections: &[(&str, &[(&str, &str)])]) -> Vec<Line<'static>> {
    let heading = Style::default()
        .fg(Color::Cyan)
        .add_modifier(Modifier::BOLD);
    let key = Style::default().fg(Color::Yellow);
    let mut lines = Vec::new();
    for (title, keys) in sections {
        lines.push(Line::styled(title.to_string(), heading));
        for (keys, what) in keys.iter() {
            lines.push(Line::from(vec![
                Span::styled(format!(" {keys:<11}"), key),
                Span::raw(what.to_string()),
            ]));
        }
    }
    lines
}

pub fn render(frame: &mut Frame, area: Rect) {
    let (left, right) = (section_lines(&KEYS[..1]), section_lines(&KEYS[1..]));
    let height = left.len().max(right.len()) as u16 + 2;
    let popup = centered(area, 78, height);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(Style::default().fg(Color::Cyan))
        .title(" Keys — ? or Esc to close ");
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(inner);
    frame.render_widget(Paragraph::new(left), left_area);
    frame.render_widget(Paragraph::new(right), right_area);
}
