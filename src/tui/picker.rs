//! Experiment picker: the configured experiments, and their settings edited before a start.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::app::App;
use super::picker_state::{Field, PickerFocus, TRIALS};
use super::widgets::cutoff_percent;
use super::widgets::{focus_block, footer_height, render_footer, verdict_style};
use super::{shown, ExperimentChoice, RoleChoice};
use crate::record::results::TrialVerdict;

const PICKER_KEYS: [(&str, &str); 9] = [
    ("↑↓", "choose"),
    ("Tab", "list/fields"),
    ("←→", "change"),
    ("0-9", "type"),
    ("Enter", "start"),
    ("r", "results"),
    ("x", "matrix"),
    ("?", "help"),
    ("q", "quit"),
];

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let [title, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(footer_height(area.width, &PICKER_KEYS)),
    ])
    .areas(area);
    render_title(frame, title, app);
    let table = RoleTable::new(app);
    let [list, details] = Layout::horizontal([
        Constraint::Length(list_width(app, body.width, table.narrowest())),
        Constraint::Min(0),
    ])
    .areas(body);
    render_list(frame, list, app);
    render_details(frame, details, app, &table);
    render_footer(frame, footer, &PICKER_KEYS);
}

fn render_title(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = vec![Span::styled(
        "VeriLLM lab · pick an experiment",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if let Some(run) = app.live() {
        spans.push(Span::styled(
            format!("   ● running: {} (g to watch)", run.choice.name),
            Style::default().fg(Color::Yellow),
        ));
    }
    frame.render_widget(Line::from(spans), area);
}

/// The list's second line for `choice`: what it should give, and how many trials.
fn list_subtitle(choice: &ExperimentChoice) -> (TrialVerdict, String) {
    // While its field is being typed into, the count that would run.
    let count = choice.trials.clamp(*TRIALS.start(), *TRIALS.end());
    let trials = if count == 1 { "trial" } else { "trials" };
    (choice.expected, format!(" · {count} {trials}"))
}

/// The experiment list is as wide as its entries need (at most 40 columns), but gives way to
/// the settings when the screen is too narrow for both: the settings are what gets edited.
fn list_width(app: &App, body_width: u16, settings_need: u16) -> u16 {
    const NARROWEST: u16 = 20;
    const WIDEST: u16 = 40;
    let entries = app.picker.choices.iter().map(|choice| {
        let (expected, rest) = list_subtitle(choice);
        let subtitle = "  expect ".len() + expected.to_string().width() + rest.width();
        choice.name.width().max(subtitle)
    });
    // Plus the highlight symbol and the border.
    let content = (entries.max().unwrap_or_default() + 4) as u16;
    let room = body_width.saturating_sub(settings_need + 2);
    content.clamp(NARROWEST, WIDEST).min(room).max(NARROWEST)
}

fn render_list(frame: &mut Frame, area: Rect, app: &App) {
    let picker = &app.picker;
    let items: Vec<ListItem> = picker
        .choices
        .iter()
        .map(|choice| {
            let (expected, rest) = list_subtitle(choice);
            ListItem::new(vec![
                Line::styled(
                    choice.name.clone(),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Line::from(vec![
                    Span::raw("  expect "),
                    Span::styled(expected.to_string(), verdict_style(expected.is_pass())),
                    Span::raw(rest),
                ]),
            ])
        })
        .collect();
    let block = focus_block("Experiments", picker.focus == PickerFocus::List);
    let list = List::new(items)
        .block(block)
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut state = ListState::default().with_selected(Some(picker.selected));
    frame.render_stateful_widget(list, area, &mut state);
}

/// Widths of the roles table's columns: each as wide as the longest option its setting can
/// take, so cycling through options never shifts the columns.
struct RoleTable {
    long_labels: Vec<String>,
    short_labels: Vec<String>,
    model: usize,
    precision: usize,
    device: usize,
}

impl RoleTable {
    fn new(app: &App) -> RoleTable {
        let roles: Vec<&RoleChoice> = app
            .picker
            .current()
            .map(|choice| {
                std::iter::once(&choice.inference)
                    .chain(&choice.verifiers)
                    .collect()
            })
            .unwrap_or_default();
        // Every value as the table shows it (`Display`), so a column fits each option.
        let widest = |header: &str, options: Vec<String>, value: fn(&RoleChoice) -> String| {
            let chosen = roles.iter().map(|role| value(role));
            chosen
                .chain(options)
                .chain([header.to_string()])
                .map(|text| text.width())
                .max()
                .unwrap_or_default()
        };
        let catalog = &app.catalog;
        RoleTable {
            long_labels: (0..roles.len().max(1))
                .map(|index| match index {
                    0 => "inference".to_string(),
                    n => format!("verifier {n}"),
                })
                .collect(),
            short_labels: (0..roles.len().max(1))
                .map(|index| match index {
                    0 => "inf".to_string(),
                    n => format!("V{n}"),
                })
                .collect(),
            model: widest("Model", all_of(&catalog.models), |role| role.model.clone()),
            precision: widest("Precision", all_of(&catalog.precisions), |role| {
                shown(&role.precision)
            }),
            device: widest("Device", all_of(&catalog.devices), |role| {
                shown(&role.device)
            }),
        }
    }

    /// Columns are one space apart.
    fn width(&self, labels: &[String]) -> usize {
        label_width(labels) + 1 + self.model + 1 + self.precision + 1 + self.device
    }

    /// The least width that shows every column in full (short role labels).
    fn narrowest(&self) -> u16 {
        self.width(&self.short_labels) as u16
    }
}

/// The role column: its widest label, or its "Role" header.
fn label_width(labels: &[String]) -> usize {
    let widest = labels.iter().map(|label| label.width()).max();
    widest.unwrap_or_default().max("Role".len())
}

/// `text` cut to `width` columns (with `…` when cut) and padded to exactly `width`.
fn fit(text: &str, width: usize) -> String {
    let mut fitted = String::new();
    let mut used = 0;
    if text.width() > width {
        for ch in text.chars() {
            let columns = ch.width().unwrap_or(0);
            if used + columns + 1 > width {
                break;
            }
            fitted.push(ch);
            used += columns;
        }
        if width > 0 {
            fitted.push('…');
            used += 1;
        }
    } else {
        fitted.push_str(text);
        used = text.width();
    }
    fitted.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
    fitted
}

fn render_details(frame: &mut Frame, area: Rect, app: &App, table: &RoleTable) {
    let picker = &app.picker;
    let editing = picker.focus == PickerFocus::Fields;
    let block = focus_block("Settings (Tab to edit, Enter to start)", editing);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(choice) = picker.current() else {
        frame.render_widget(Paragraph::new("No experiments configured."), inner);
        return;
    };
    let [description, settings] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(inner);
    let text = format!("{}: {}", choice.name, choice.description);
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), description);

    let selected = if editing {
        picker.current_field()
    } else {
        None
    };
    let cell = |text: &str, width: usize, field: Field| {
        let style = if selected == Some(field) {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        Span::styled(fit(text, width), style)
    };
    // Full role names when they fit, "inf"/"V1" when not; only if even those do not fit
    // (a screen under 80 columns) does the model name give way.
    let available = settings.width as usize;
    let labels = if table.width(&table.long_labels) <= available {
        &table.long_labels
    } else {
        &table.short_labels
    };
    let label_width = label_width(labels);
    let overflow = table.width(labels).saturating_sub(available);
    let model_width = table.model.saturating_sub(overflow).max(1);
    let header = Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
    let expected = choice.expected;
    let mut lines = vec![
        Line::from(vec![
            Span::raw(format!(
                "prompt: {}   cutoff: {:.1}%   expected: ",
                choice.prompt_category,
                cutoff_percent(choice.cutoff)
            )),
            Span::styled(expected.to_string(), verdict_style(expected.is_pass())),
        ]),
        Line::default(),
        Line::styled(
            format!(
                "{} {} {} {}",
                fit("Role", label_width),
                fit("Model", model_width),
                fit("Precision", table.precision),
                fit("Device", table.device),
            ),
            header,
        ),
    ];
    let roles = std::iter::once(&choice.inference).chain(&choice.verifiers);
    for (index, (role, label)) in roles.zip(labels).enumerate() {
        lines.push(Line::from(vec![
            Span::raw(fit(label, label_width)),
            Span::raw(" "),
            cell(&role.model, model_width, Field::Model(index)),
            Span::raw(" "),
            cell(
                &shown(&role.precision),
                table.precision,
                Field::Precision(index),
            ),
            Span::raw(" "),
            cell(&shown(&role.device), table.device, Field::Device(index)),
        ]));
    }
    lines.push(Line::default());
    // A count whose digits were all erased shows empty (not a 0 that would never run).
    let count = |value: usize| match value {
        0 => String::new(),
        value => value.to_string(),
    };
    let dim = Style::default().fg(Color::DarkGray);
    for (label, value, field, range) in [
        (
            "Trials",
            count(choice.trials),
            Field::Trials,
            format!(" {}-{}", TRIALS.start(), TRIALS.end()),
        ),
        (
            "Max new tokens",
            count(choice.max_new_tokens),
            Field::MaxNewTokens,
            " at least 1".to_string(),
        ),
        ("Seed", choice.seed.to_string(), Field::Seed, String::new()),
        (
            "Verification",
            match choice.segment_layers {
                Some(_) => "segment".to_string(),
                None => "full".to_string(),
            },
            Field::Mode,
            match choice.segment_layers {
                Some(_) => " commit, challenge, open; ←→ full".to_string(),
                None => " one prefill per verifier; ←→ segment".to_string(),
            },
        ),
    ]
    .into_iter()
    .chain(choice.segment_layers.map(|layers| {
        (
            "Layers (c)",
            count(layers),
            Field::ChallengeLayers,
            " challenged per verifier, each its own secret".to_string(),
        )
    })) {
        let mut spans = vec![Span::raw(format!("{label:<16}")), cell(&value, 10, field)];
        if selected == Some(field) {
            spans.push(Span::styled(range, dim));
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), settings);
}

/// Each option as the picker shows it.
fn all_of<T: std::fmt::Display>(options: &[T]) -> Vec<String> {
    options.iter().map(T::to_string).collect()
}
