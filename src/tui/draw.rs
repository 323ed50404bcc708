//! Top-level drawing: picks the screen, then overlays help and questions. Also the small pieces
//! every view shares (footer, focus borders, verdict colours, time formats).

use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, Confirm, Screen};
use super::widgets::{centered, level_colour};
use super::{help, picker, results, run_view};

/// Below this size the layout cannot show its panes; a message says so instead.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub fn draw(frame: &mut Frame, app: &App) {
    draw_screen(frame, app);
    scrub_control_characters(frame);
}

/// The last guard between strings and the terminal: result files, configs and models put
/// text on screen, and a control character in a cell (an ESC sequence that retitles the
/// window or clears the screen) would reach the terminal as it is. Every cell is cleaned
/// after drawing, whatever drew it.
fn scrub_control_characters(frame: &mut Frame) {
    for cell in frame.buffer_mut().content.iter_mut() {
        if cell.symbol().contains(char::is_control) {
            let cleaned: String = cell.symbol().chars().filter(|c| !c.is_control()).collect();
            cell.set_symbol(if cleaned.is_empty() { " " } else { &cleaned });
        }
    }
}

fn draw_screen(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let too_small = area.width < MIN_WIDTH || area.height < MIN_HEIGHT;
    app.too_small.set(too_small);
    if too_small {
        render_too_small(frame, area);
        // A question (quit or cancel during a run) is the one thing keys act on here, so it
        // must be seen even on a small screen.
        if let Some(question) = app.confirm {
            render_confirm(frame, area, app, question);
        }
        return;
    }
    match app.screen {
        Screen::Picker => picker::render(frame, area, app),
        Screen::Run => run_view::render(frame, area, app),
        Screen::Results => results::render(frame, area, app),
        Screen::Matrix => super::matrix_view::render(frame, area, app),
    }
    if app.shows_notice() {
        render_notice(frame, area, app);
    }
    if app.show_help {
        help::render(frame, area);
    }
    if let Some(question) = app.confirm {
        render_confirm(frame, area, app, question);
    }
}

/// The newest warning, error or reply to a key, over the footer row, on screens that have no
/// log pane.
fn render_notice(frame: &mut Frame, area: Rect, app: &App) {
    let Some(notice) = &app.notice else { return };
    // Information (a reply to a key) in a calmer colour than a warning.
    let colour = level_colour(notice.level).unwrap_or(Color::Cyan);
    let spans = [
        Span::styled(
            format!(" {} ", notice.text),
            Style::default().fg(Color::Black).bg(colour),
        ),
        Span::raw("  Esc dismisses"),
    ];
    // A long reply (an export folder's path) wraps upward over the footer, up to three rows,
    // rather than losing its end.
    let mut lines = super::wrap::wrap_spans(&spans, usize::from(area.width));
    if lines.len() > 3 {
        // Its start and its last row, which says how to dismiss it.
        let last = lines.pop().expect("more than three rows");
        lines.truncate(2);
        lines.push(last);
    }
    let rows = Rect {
        y: area.bottom().saturating_sub(lines.len() as u16),
        height: lines.len() as u16,
        ..area
    };
    frame.render_widget(Clear, rows);
    frame.render_widget(Paragraph::new(lines), rows);
}

fn render_too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::styled(
            "Terminal too small",
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Line::from(format!(
            "need at least {MIN_WIDTH}×{MIN_HEIGHT}, now {}×{}",
            area.width, area.height
        )),
        Line::from("enlarge the window, or press q to quit"),
    ];
    let [middle] = Layout::vertical([Constraint::Length(3)])
        .flex(Flex::Center)
        .areas(area);
    let paragraph = Paragraph::new(text)
        .alignment(Alignment::Center)
        .wrap(Wrap { trim: true });
    frame.render_widget(paragraph, if area.height >= 3 { middle } else { area });
}

fn render_confirm(frame: &mut Frame, area: Rect, app: &App, question: Confirm) {
    let name = app
        .live()
        .map_or("the experiment", |run| run.choice.name.as_str());
    let text = match question {
        Confirm::QuitDuringRun => format!("{name} is running. Cancel it and quit?"),
        Confirm::CancelRun => format!("Cancel {name}? What was computed is kept."),
    };
    // Tall enough for the question wrapped at the popup's width (it may be narrowed to fit a
    // small terminal), the y/n line, the border and a blank row.
    let width = 56.min(area.width);
    let inner_width = usize::from(width.saturating_sub(2)).max(1);
    let question_rows = if text.chars().count() <= inner_width {
        1
    } else {
        // Word wrapping can leave a row short: one row of slack.
        text.chars().count().div_ceil(inner_width) + 1
    };
    let popup = centered(area, width, question_rows as u16 + 4);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .border_style(Style::default().fg(Color::Yellow))
        .title(" Confirm ");
    let lines = vec![
        Line::from(text),
        Line::from(vec![
            Span::styled(
                "y",
                Style::default()
                    .fg(Color::Green)
                    .add_modifier(Modifier::BOLD),
            ),
            Span::raw(" yes    "),
            Span::styled(
                "n",
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Span::raw(" no"),
        ]),
    ];
    frame.render_widget(Clear, popup);
    let paragraph = Paragraph::new(lines).block(block).wrap(Wrap { trim: true });
    frame.render_widget(paragraph.alignment(Alignment::Center), popup);
}
