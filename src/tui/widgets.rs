//! Small drawing helpers every view shares (blocks, footers, verdict colours, number and time
//! formats). A leaf: it imports no view and no app state, so views never import each other or
//! the dispatcher (`draw.rs`) for them.

use std::time::Duration;

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use crate::engine::events::LogLevel;

/// A `width`×`height` rectangle in the middle of `area` (shrunk to fit).
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

/// `key description` hints, as many per row as fit `width`; a hint is never split, so every
/// key stays visible however narrow the screen (down to 80 columns the footers take 2 rows).
fn footer_rows<'h>(width: u16, hints: &'h [(&'h str, &'h str)]) -> Vec<&'h [(&'h str, &'h str)]> {
    // " key " + " what", and two spaces before the next hint.
    let hint_width = |(keys, what): &(&str, &str)| keys.width() + what.width() + 3;
    let mut rows = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (index, hint) in hints.iter().enumerate() {
        let needed = if index == start { 0 } else { 2 } + hint_width(hint);
        if index > start && used + needed > usize::from(width) {
            rows.push(&hints[start..index]);
            (start, used) = (index, hint_width(hint));
        } else {
            used += needed;
        }
    }
    if start < hints.len() {
        rows.push(&hints[start..]);
    }
    rows
}

/// Rows the footer needs at `width` (see [`render_footer`]).
pub fn footer_height(width: u16, hints: &[(&str, &str)]) -> u16 {
    footer_rows(width, hints).len().max(1) as u16
}

/// The key hints, on as many rows as [`footer_height`] says.
pub fn render_footer(frame: &mut Frame, area: Rect, hints: &[(&str, &str)]) {
    let key = Style::default().fg(Color::Black).bg(Color::Gray);
    let lines: Vec<Line> = footer_rows(area.width, hints)
        .into_iter()
        .map(|row| {
            let mut spans = Vec::new();
            for (keys, what) in row {
                spans.push(Span::styled(format!(" {keys} "), key));
                spans.push(Span::raw(format!(" {what}  ")));
            }
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}

/// A bordered pane whose border lights up when it has the keyboard.
pub fn focus_block(title: &str, focused: bool) -> Block<'static> {
    let (style, border) = if focused {
        (Style::default().fg(Color::Cyan), BorderType::Thick)
    } else {
        (Style::default().fg(Color::DarkGray), BorderType::Plain)
    };
    Block::bordered()
        .border_type(border)
        .border_style(style)
        .title(Span::styled(
            format!(" {title} "),
            Style::default().add_modifier(Modifier::BOLD),
        ))
}

/// Warnings are yellow and errors red, in the log and in notices; information is plain.
pub fn level_colour(level: LogLevel) -> Option<Color> {
    match level {
        LogLevel::Info => None,
        LogLevel::Warn => Some(Color::Yellow),
        LogLevel::Error => Some(Color::Red),
    }
}

/// A verdict's colour: PASS green, FAIL and REJECT red (`Verdict::is_pass`,
/// `TrialVerdict::is_pass`).
pub fn verdict_style(pass: bool) -> Style {
    let colour = if pass { Color::Green } else { Color::Red };
    Style::default().fg(colour).add_modifier(Modifier::BOLD)
}

pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Unix seconds as `YYYY-MM-DD HH:MM` UTC.
pub fn format_unix(seconds: u64) -> String {
    let (year, month, day, hour, minute, _) = crate::util::utc_from_unix(seconds);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

/// Cutoffs are fractions; a value above 1 was written as a percentage already.
pub fn cutoff_percent(cutoff: f64) -> f64 {
    if cutoff > 1.0 {
        cutoff
    } else {
        cutoff * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations_read_right() {
        assert_eq!(format_unix(0), "1970-01-01 00:00");
        assert_eq!(format_unix(1_709_210_096), "2024-02-29 12:34");
        assert_eq!(format_duration(Duration::from_secs(3_725)), "01:02:05");
    }
}
