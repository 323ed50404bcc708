//! Run view: one trial of a live or past run — generated text, token progress, one accept-rate
//! gauge per verifier, the per-layer error heatmap of the selected verifier, and the log.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};
use ratatui::Frame;

use crate::record::results::Verdict;

use super::app::{App, RunPane};
use super::heatmap::{self, ColourScale, ValueRange};
use super::trial_view::{RunState, RunStatus, TrialStatus, TrialView, VerifierView};
use super::widgets::cutoff_percent;
use super::widgets::{
    focus_block, footer_height, format_duration, level_colour, render_footer, verdict_style,
};
use super::wrap::{row_count, tail_rows, wrap_spans};

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let Some(run) = app.shown_run() else {
        frame.render_widget(Paragraph::new("No run yet: press Esc and start one."), area);
        return;
    };
    let trial = run.selected();
    let verifier_rows = trial
        .map_or(run.choice.verifiers.len(), |t| t.verifiers.len())
        .max(1);
    // Segment mode adds a row per verifier: the strip of the layers it challenged.
    let rows_per_verifier = 2 + trial.map_or(0, segment_rows);
    let log_height = (area.height / 5).clamp(4, 10);
    let verifier_keys = format!("1-{}", run.choice.verifiers.len().clamp(1, 9));
    let keys = [
        ("q", "back"),
        ("Tab", "pane"),
        ("←→", "trial"),
        (verifier_keys.as_str(), "verifier"),
        ("m", "metric"),
        ("c", "cancel"),
        ("e", "export"),
        ("r", "results"),
        ("?", "help"),
    ];
    let header_lines = header_lines(run, area.width);
    let [header, tokens, middle, heat, log, footer] = Layout::vertical([
        Constraint::Length(header_lines.len() as u16),
        Constraint::Length(1),
        Constraint::Length((rows_per_verifier * verifier_rows as u16 + 2).max(8)),
        Constraint::Min(5),
        Constraint::Length(log_height),
        Constraint::Length(footer_height(area.width, &keys)),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_lines), header);
    if run.preparing.is_empty() {
        render_token_gauge(frame, tokens, trial);
    } else {
        render_preparing(frame, tokens, run);
    }
    let [text, verifiers] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(middle);
    render_text(frame, text, app, trial);
    render_verifiers(frame, verifiers, app, run, trial);
    render_heatmap(frame, heat, app, trial);
    render_log(frame, log, app);
    render_footer(frame, footer, &keys);
}

/// The run's name, trial, status (a failure with its whole message) and verdict, wrapped to
/// `width`: at most [`HEADER_ROWS`] rows, the log keeps the rest.
fn header_lines(run: &RunState, width: u16) -> Vec<Line<'static>> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let (status, colour) = match &run.status {
        RunStatus::Running => ("● running".to_string(), Color::Yellow),
        RunStatus::Cancelling => ("cancelling…".to_string(), Color::Yellow),
        RunStatus::Cancelled => ("cancelled (incomplete)".to_string(), Color::Magenta),
        RunStatus::Finished => ("finished".to_string(), Color::Green),
        RunStatus::Failed(message) => (format!("failed: {message}"), Color::Red),
    };
    // The trial's own number, as its file (trial_000.json), its JSON and its exported figures
    // name it, then where it stands among the run's trials.
    let number = run
        .selected()
        .map_or(String::new(), |trial| format!("{} ", trial.trial));
    let mut spans = vec![
        Span::styled(run.choice.name.clone(), bold),
        Span::raw(format!(
            " · trial {number}({}/{})",
            run.selected_trial + 1,
            run.trial_count().max(1)
        )),
    ];
    if run.trials.len() > 1 {
        spans.push(Span::styled(" ◀▶", Style::default().fg(Color::DarkGray)));
    }
    spans.push(Span::raw(" · "));
    spans.push(Span::styled(status, Style::default().fg(colour)));
    if let Some(elapsed) = run.elapsed() {
        spans.push(Span::raw(format!(" · {}", format_duration(elapsed))));
    }
    if let Some(trial) = run.selected() {
        if trial.status == TrialStatus::Incomplete {
            spans.push(Span::styled(
                " · trial incomplete",
                Style::default().fg(Color::Magenta),
            ));
        }
        if let Some(result) = &trial.result {
            spans.push(if result.request_checked {
                Span::styled(" · request ✓", Style::default().fg(Color::Green))
            } else {
                Span::styled(" · request not checked", Style::default().fg(Color::Yellow))
            });
        }
        if let Some((verdict, expected)) = trial.verdict() {
            let held = if verdict == expected { "✓" } else { "✗" };
            spans.push(Span::raw(" · verdict "));
            spans.push(Span::styled(
                verdict.to_string(),
                verdict_style(verdict.is_pass()),
            ));
            spans.push(Span::raw(format!(" (expected {expected} {held})")));
        }
        // The sequential test that set the verdict, with the tokens it took (issue 18).
        if let Some(decision) = trial.result.as_ref().and_then(|r| r.decision.as_ref()) {
            spans.push(Span::raw(format!(
                " · {}",
                crate::experiment::decision::describe(decision)
            )));
        }
    }
    let mut lines = wrap_spans(&spans, width as usize);
    lines.truncate(HEADER_ROWS);
    lines
}

const HEADER_ROWS: usize = 3;

/// The newest preparation (model load, GPU kernel warm-up) with its running time, so a long one
/// is seen to be work and not a hang.
fn render_preparing(frame: &mut Frame, area: Rect, run: &RunState) {
    let Some(newest) = run.preparing.last() else {
        return;
    };
    let mut text = format!(
        "⧗ {} ({} s)",
        newest.message,
        newest.since.elapsed().as_secs()
    );
    if run.preparing.len() > 1 {
        text.push_str(&format!(" (+{} more)", run.preparing.len() - 1));
    }
    frame.render_widget(Line::styled(text, Style::default().fg(Color::Yellow)), area);
}

fn render_token_gauge(frame: &mut Frame, area: Rect, trial: Option<&TrialView>) {
    let Some(trial) = trial else {
        frame.render_widget(Line::from("waiting for the first trial…"), area);
        return;
    };
    let ratio = match trial.status {
        // Generation ended (its budget or the end of the text): the bar is full.
        TrialStatus::Verifying | TrialStatus::Done => 1.0,
        // Still decoding, or stopped early (cancelled, failed): as far as it got.
        TrialStatus::Decoding | TrialStatus::Incomplete if trial.max_new_tokens > 0 => {
            trial.tokens as f64 / trial.max_new_tokens as f64
        }
        TrialStatus::Decoding | TrialStatus::Incomplete | TrialStatus::NotLoaded => 0.0,
    };
    let speed = trial
        .tokens_per_s()
        .map(|rate| format!(" · {rate:.1} tok/s"))
        .unwrap_or_default();
    let path = if trial.decode_path.is_empty() {
        String::new()
    } else {
        format!(" ({})", trial.decode_path)
    };
    let label = format!(
        "{}/{} tokens{speed}{path} · prompt {} tok ({})",
        trial.tokens, trial.max_new_tokens, trial.prompt_tokens, trial.prompt_category
    );
    let gauge = Gauge::default()
        .ratio(ratio.clamp(0.0, 1.0))
        .label(label)
        .use_unicode(true)
        .gauge_style(Style::default().fg(Color::Blue).bg(Color::Black));
    frame.render_widget(gauge, area);
}

fn render_text(frame: &mut Frame, area: Rect, app: &App, trial: Option<&TrialView>) {
    // Which tokens the shown verifier rejected, in the title: a saved trial's text comes whole,
    // without the token boundaries the live view marks them by.
    let title = match trial.and_then(|t| t.verifiers.get(app.selected_verifier)) {
        Some(verifier) if !verifier.rejected_tokens.is_empty() => format!(
            "Generated text · V{} rejected {} token{} (first at {})",
            app.selected_verifier + 1,
            verifier.rejected_tokens.len(),
            if verifier.rejected_tokens.len() == 1 {
                ""
            } else {
                "s"
            },
            verifier.rejected_tokens.iter().min().unwrap_or(&0)
        ),
        _ => "Generated text".to_string(),
    };
    let block = focus_block(&title, app.run_pane == RunPane::Text);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let text = trial.map_or("", |trial| trial.text.as_str());
    let width = inner.width as usize;
    let total_rows: usize = text.split('\n').map(|line| row_count(line, width)).sum();
    app.scroll_limits
        .text
        .set(total_rows.saturating_sub(inner.height as usize));
    let lines = text.split('\n').map(|line| ((), line));
    let rows = tail_rows(lines, width, inner.height as usize, app.text_scroll);
    // Tokens the shown verifier rejected, as byte ranges of the text (live runs record each
    // token's range as it streams).
    let rejected: Vec<(usize, usize)> = trial
        .and_then(|trial| {
            let verifier = trial.verifiers.get(app.selected_verifier)?;
            Some(
                verifier
                    .rejected_tokens
                    .iter()
                    .filter_map(|&position| trial.token_spans.get(position).copied())
                    .collect(),
            )
        })
        .unwrap_or_default();
    frame.render_widget(
        Paragraph::new(
            rows.into_iter()
                .map(|(_, row)| {
                    // Rows are slices of `text`: their offset in it places the rejected ranges.
                    let start = row.as_ptr() as usize - text.as_ptr() as usize;
                    marked_row(row, start, &rejected)
                })
                .collect::<Vec<_>>(),
        ),
        inner,
    );
}

/// Style of a generated token the shown verifier rejected.
pub const REJECTED_TOKEN_STYLE: Style = Style::new().fg(Color::Black).bg(Color::Red);

/// One row of the generated text (starting at byte `start` of it), the parts inside
/// `rejected` byte ranges in `REJECTED_TOKEN_STYLE`.
fn marked_row<'a>(row: &'a str, start: usize, rejected: &[(usize, usize)]) -> Line<'a> {
    let end = start + row.len();
    let mut cuts: Vec<(usize, usize)> = rejected
        .iter()
        .map(|&(a, b)| (a.max(start), b.min(end)))
        .filter(|(a, b)| a < b)
        .collect();
    if cuts.is_empty() {
        return Line::from(row);
    }
    cuts.sort_unstable();
    let mut spans = Vec::new();
    let mut at = start;
    for (a, b) in cuts {
        if a > at {
            spans.push(Span::raw(&row[at - start..a - start]));
        }
        let from = a.max(at);
        if b > from {
            spans.push(Span::styled(
                &row[from - start..b - start],
                REJECTED_TOKEN_STYLE,
            ));
            at = b;
        }
    }
    if at < end {
        spans.push(Span::raw(&row[at - start..]));
    }
    Line::from(spans)
}

fn render_verifiers(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    run: &RunState,
    trial: Option<&TrialView>,
) {
    let cutoff = cutoff_percent(run.choice.cutoff);
    let title = format!("Verifiers · cutoff {cutoff:.1}%");
    let block = focus_block(&title, app.run_pane == RunPane::Verifiers);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(trial) = trial else { return };
    let height = 2 + segment_rows(trial);
    let rows =
        Layout::vertical(vec![Constraint::Length(height); trial.verifiers.len()]).split(inner);
    for (index, (verifier, row)) in trial.verifiers.iter().zip(rows.iter()).enumerate() {
        let selected = index == app.selected_verifier;
        let [main, strip] =
            Layout::vertical([Constraint::Length(2), Constraint::Length(height - 2)]).areas(*row);
        render_verifier(frame, main, index, verifier, run, selected, cutoff);
        if let Some(record) = segment_of(trial, index) {
            let mut lines = vec![super::challenge_strip::strip_line(record, strip.width)];
            lines.extend(super::challenge_strip::full_prefill_line(record));
            frame.render_widget(Paragraph::new(lines), strip);
        }
    }
}

/// Rows under each verifier in segment mode: its strip, and the reference prefill's line
/// where any verifier has one.
fn segment_rows(trial: &TrialView) -> u16 {
    let Some(result) = trial
        .result
        .as_ref()
        .filter(|_| segment_of(trial, 0).is_some())
    else {
        return 0;
    };
    let prefill = result.verifiers.iter().any(|v| {
        v.segment
            .as_ref()
            .is_some_and(|s| s.full_prefill_s.is_some())
    });
    1 + u16::from(prefill)
}

/// Verifier `index`'s segment-mode record, once its trial has finished.
fn segment_of(
    trial: &TrialView,
    index: usize,
) -> Option<&crate::record::segment_result::SegmentRecord> {
    trial
        .result
        .as_ref()?
        .verifiers
        .get(index)?
        .segment
        .as_ref()
}

fn verifier_label(index: usize, verifier: &VerifierView, run: &RunState) -> String {
    match (&verifier.role, run.choice.verifiers.get(index)) {
        (Some(role), _) => format!(
            "{}/{}/{} ({})",
            role.model, role.precision, role.device, role.dtype
        ),
        (None, Some(role)) => role.to_string(),
        (None, None) => "?".to_string(),
    }
}

fn render_verifier(
    frame: &mut Frame,
    area: Rect,
    index: usize,
    verifier: &VerifierView,
    run: &RunState,
    selected: bool,
    cutoff: f64,
) {
    let [title, bar] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    let marker = if selected { "▶" } else { " " };
    let mut spans = vec![Span::styled(
        format!("{marker}V{} ", index + 1),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    let state = match verifier.outcome {
        Some(outcome) => {
            vec![
                Span::styled(
                    outcome.verdict.to_string(),
                    verdict_style(outcome.verdict.is_pass()),
                ),
                Span::raw(format!(" overhead {:.1}% ", outcome.overhead_percentage)),
            ]
        }
        None if verifier.started && run.is_active() => {
            vec![Span::styled("running ", Style::default().fg(Color::Yellow))]
        }
        None if verifier.started => vec![Span::styled(
            "incomplete ",
            Style::default().fg(Color::Magenta),
        )],
        // The run ended (done, cancelled or failed) before this verifier began: it never will.
        None if !run.is_active() => vec![Span::styled(
            "not run ",
            Style::default().fg(Color::Magenta),
        )],
        None => vec![Span::styled(
            "waiting ",
            Style::default().fg(Color::DarkGray),
        )],
    };
    spans.extend(state);
    spans.push(Span::styled(
        verifier_label(index, verifier, run),
        Style::default().fg(Color::Gray),
    ));
    frame.render_widget(Line::from(spans), title);

    let rate = verifier.accept_rate();
    let colour = match (verifier.outcome, rate) {
        (Some(outcome), _) if outcome.verdict == Verdict::Pass => Color::Green,
        (Some(_), _) => Color::Red,
        (None, Some(rate)) if rate * 100.0 >= cutoff => Color::Green,
        (None, Some(_)) => Color::Yellow,
        (None, None) => Color::DarkGray,
    };
    let label = match rate {
        Some(rate) => format!(
            "{:.1}% accepted · {}/{} checks",
            rate * 100.0,
            verifier.accepted,
            verifier.checks
        ),
        None => "no checks yet".to_string(),
    };
    let [state_bar, token_bar] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(TOKEN_GAUGE_WIDTH)])
            .spacing(1)
            .areas(bar);
    let gauge = Gauge::default()
        .ratio(rate.unwrap_or(0.0).clamp(0.0, 1.0))
        .label(label)
        .use_unicode(true)
        .gauge_style(Style::default().fg(colour).bg(Color::Black));
    frame.render_widget(gauge, state_bar);
    frame.render_widget(token_gauge(verifier), token_bar);
}

/// Columns of the token-check gauge beside each verifier's state gauge.
const TOKEN_GAUGE_WIDTH: u16 = 16;

/// Generated tokens held to the sampling rule: accepted / checked, red once one is rejected.
fn token_gauge(verifier: &VerifierView) -> Gauge<'static> {
    let (ratio, label, colour) = match verifier.token_accept_rate() {
        Some(rate) => {
            let rejected = verifier.token_checks - verifier.tokens_accepted;
            let colour = if rejected == 0 {
                Color::Green
            } else {
                Color::Red
            };
            (
                rate,
                format!(
                    "tok {}/{}{}",
                    verifier.tokens_accepted,
                    verifier.token_checks,
                    if rejected == 0 { " ✓" } else { " ✗" }
                ),
                colour,
            )
        }
        None if verifier.outcome.is_some() => (0.0, "tok unchecked".to_string(), Color::DarkGray),
        None => (0.0, "tok —".to_string(), Color::DarkGray),
    };
    Gauge::default()
        .ratio(ratio.clamp(0.0, 1.0))
        .label(label)
        .use_unicode(true)
        .gauge_style(Style::default().fg(colour).bg(Color::Black))
}

fn render_heatmap(frame: &mut Frame, area: Rect, app: &App, trial: Option<&TrialView>) {
    let verifier = trial.and_then(|trial| {
        let index = app
            .selected_verifier
            .min(trial.verifiers.len().saturating_sub(1));
        trial.verifiers.get(index).map(|verifier| (index, verifier))
    });
    let title = match verifier {
        Some((index, view)) => {
            let who = view
                .role
                .as_ref()
                .map_or(String::new(), |role| format!(" {}", role.device));
            let challenged = if trial.is_some_and(|t| segment_of(t, index).is_some()) {
                " · challenged layers (row Ln: the state leaving layer n−1)"
            } else {
                ""
            };
            format!(
                "Errors by layer · V{}{who}{challenged} · {} (log) · worst per cell",
                index + 1,
                app.metric.name()
            )
        }
        None => "Errors by layer".to_string(),
    };
    let block = focus_block(&title, app.run_pane == RunPane::Heatmap);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (Some(trial), Some((_, view))) = (trial, verifier) else {
        frame.render_widget(
            Line::styled("waiting for checks…", Style::default().fg(Color::DarkGray)),
            inner,
        );
        return;
    };
    // One scale for all verifiers of the trial, so switching verifier compares like with like.
    let range = trial
        .verifiers
        .iter()
        .map(|verifier| verifier.grid.range(app.metric))
        .fold(ValueRange::default(), ValueRange::union);
    let scale = ColourScale::from_range(range);
    heatmap::render(
        frame.buffer_mut(),
        inner,
        &view.grid,
        app.metric,
        trial.columns(),
        scale,
    );
}

fn render_log(frame: &mut Frame, area: Rect, app: &App) {
    let block = focus_block("Log", app.run_pane == RunPane::Log);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // Long lines (an error with its advice at the end) wrap: scrolling counts rows, not lines.
    let (width, height) = (inner.width as usize, inner.height as usize);
    let total_rows: usize = app
        .log
        .iter()
        .map(|line| row_count(&line.text, width))
        .sum();
    let limit = total_rows.saturating_sub(height);
    app.scroll_limits.log.set(limit);
    let lines = app.log.iter().map(|line| (line.level, line.text.as_str()));
    let rows: Vec<Line> = tail_rows(lines, width, height, app.log_scroll.min(limit))
        .into_iter()
        .map(|(level, row)| {
            let style =
                level_colour(level).map_or(Style::default(), |colour| Style::default().fg(colour));
            Line::styled(row, style)
        })
        .collect();
    frame.render_widget(Paragraph::new(rows), inner);
}
