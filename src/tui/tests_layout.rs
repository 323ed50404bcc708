//! What a person sees in awkward conditions: notices longer than a row, wide (CJK, emoji)
//! text, large counts, the minimum terminal size, long errors; and that every key gets a
//! visible answer.

use std::sync::Arc;

use ratatui::buffer::Buffer;
use tokio::sync::mpsc::unbounded_channel;

use crate::engine::events::LogLevel;

use super::app::{App, RunPane, Screen};
use super::bench::synthetic_trial_events;
use super::tests::{
    app_with_run, assert_shows, catalog, find_all, key, past_run, row_text, screen, text_of,
    FakeBackend,
};
use super::*;

#[test]
fn a_long_notice_wraps_so_its_end_and_the_way_to_dismiss_it_stay_visible() {
    let mut app = App::new(catalog());
    app.screen = Screen::Results;
    let folder = "/home/someone/verillm-data/plots/exp1/20261126-213434_trial000";
    app.reply(
        crate::engine::events::LogLevel::Info,
        format!("exported 6 PNGs of 1 trial in {folder}"),
    );
    let shown = screen(&app, MIN_WIDTH, MIN_HEIGHT);
    assert_shows(&shown, folder);
    assert_shows(&shown, "Esc dismisses");
}

#[test]
fn keys_on_the_picker_and_results_always_get_a_visible_answer() {
    use crossterm::event::KeyCode;
    let backend: Arc<dyn Backend> = Arc::new(FakeBackend {
        past: vec![past_run("old", 3)],
        ..FakeBackend::default()
    });
    let (tx, mut rx) = unbounded_channel();
    let mut app = App::new(catalog());
    let mut press = |app: &mut App, code| {
        let action = app.handle_key(key(code));
        perform(app, &backend, action, &tx);
        drain_events(app, &mut rx);
        screen(app, 80, 24)
    };
    let answers = [
        ('g', "no run yet: pick an experiment and press Enter"),
        ('c', "no run is going: nothing to cancel"),
        ('e', "open a run or pick one in the results to export"),
    ];
    for (letter, answer) in answers {
        assert_shows(&press(&mut app, KeyCode::Char(letter)), answer);
        assert_eq!(app.screen, Screen::Picker);
    }

    // The results screen, with an empty list and then with a past run.
    let mut empty = App::new(catalog());
    empty.screen = Screen::Results;
    for (letter, answer) in answers {
        assert_shows(&press(&mut empty, KeyCode::Char(letter)), answer);
    }

    // Exporting a past run says where its PNGs went, on the results screen itself.
    press(&mut app, KeyCode::Char('r'));
    let shown = press(&mut app, KeyCode::Char('e'));
    assert_eq!(app.screen, Screen::Results);
    assert_shows(&shown, "exported 2 PNGs of the run");
    assert_shows(&shown, "Esc dismisses");
    press(&mut app, KeyCode::Esc);
    assert!(app.notice.is_none());

    // Background lines from an engine stay in the log: no notice for progress.
    app.handle_event(EngineEvent::Log {
        level: LogLevel::Info,
        message: "trial 2: decoding".into(),
    });
    assert!(app.notice.is_none());
}

#[test]
fn wide_text_in_the_generated_text_pane_is_all_on_screen() {
    // One ASCII letter first, so a two-column character falls on each row's last column and
    // must move to the next row instead of being clipped.
    let text: String = std::iter::once("a")
        .chain(std::iter::repeat_n("検証🔍テスト✅❤\u{fe0f}", 10))
        .collect();
    let mut app = app_with_run(synthetic_trial_events(0, 8, 8, 3, 4));
    app.session_runs[0].trials[0].text = text.clone();
    let buffer = screen(&app, 120, 40);
    // The pane is 55% of 120 columns: 64 inside its border, 6 rows high.
    let (x, y) = find_all(&buffer, "┌ Generated text")[0];
    let pane_cells =
        (y + 1..y + 7).flat_map(|row| (x + 1..x + 65).map(move |column| (column, row)));
    // A wide character fills its cell; the cell it covers reads as blank.
    let shown: String = pane_cells
        .map(|cell| buffer[cell].symbol().trim().to_string())
        .collect();
    assert_eq!(shown, text, "{}", text_of(&buffer));
    // Scrolling stops at the first row of the wrapped text, counted in display columns:
    // 1 + 10 × 14 columns on rows of 64 → 3 rows, all shown.
    assert_eq!(app.scroll_limits.text.get(), 0);
}

#[test]
fn results_trial_counts_are_never_cut() {
    let mut app = App::new(catalog());
    app.set_past_runs(vec![past_run("hundred", 100), past_run("most", 100_000)]);
    app.screen = Screen::Results;
    for (width, height) in [(120, 30), (MIN_WIDTH, MIN_HEIGHT)] {
        let buffer = screen(&app, width, height);
        assert_shows(&buffer, "100/101 ");
        assert_shows(&buffer, "100000/100001 ");
    }
}

#[test]
fn at_the_minimum_size_every_settings_column_and_footer_key_is_visible() {
    let mut catalog = catalog();
    catalog.models.push("mistral-7b-instruct-v0.3".into());
    let wide = DeviceProfile::parse("cuda:0:bf16").unwrap();
    catalog.devices.push(wide);
    catalog.experiments[0].inference.model = "mistral-7b-instruct-v0.3".into();
    catalog.experiments[0].verifiers[2].device = Some(wide);
    let app = App::new(catalog);
    let picker = screen(&app, MIN_WIDTH, MIN_HEIGHT);
    for text in [
        "Model",
        "Precision",
        "Device",
        "mistral-7b-instruct-v0.3 full",
        "cuda:0:bf16",
        "cuda:1:f16",
        "expect REJECT",
    ] {
        assert_shows(&picker, text);
    }
    for (key, what) in [
        ("↑↓", "choose"),
        ("Tab", "list/fields"),
        ("←→", "change"),
        ("0-9", "type"),
        ("Enter", "start"),
        ("r", "results"),
        ("?", "help"),
        ("q", "quit"),
    ] {
        assert_shows(&picker, &format!(" {key}  {what}"));
    }

    let mut run = app_with_run(synthetic_trial_events(0, 8, 8, 3, 4));
    run.catalog = app.catalog.clone();
    let view = screen(&run, MIN_WIDTH, MIN_HEIGHT);
    for (key, what) in [
        ("q", "back"),
        ("Tab", "pane"),
        ("←→", "trial"),
        ("1-3", "verifier"),
        ("m", "metric"),
        ("c", "cancel"),
        ("e", "export"),
        ("r", "results"),
        ("?", "help"),
    ] {
        assert_shows(&view, &format!(" {key}  {what}"));
    }
    // The panes keep their place above the two footer rows.
    assert_shows(&view, "Generated text");
    assert_shows(&view, "Log");
}

/// The words of `rows` of the screen, borders left out: what a person reads there when lines
/// wrap.
fn words_in_rows(buffer: &Buffer, rows: std::ops::Range<u16>) -> String {
    let text: String = rows.map(|y| row_text(buffer, y) + " ").collect();
    let text = text.replace(['│', '┃', '║'], " ");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn a_long_error_wraps_in_the_header_and_the_log_and_its_end_stays_readable() {
    let error = "1200 prompt tokens + 8000 new tokens exceed the model's context of 9342 \
                 positions (lower the new-token budget, --max-tokens, to at most 8142)";
    let mut app = app_with_run(Vec::new());
    app.handle_event(EngineEvent::Failed {
        message: error.into(),
    });
    for (width, height) in [(MIN_WIDTH, MIN_HEIGHT), (120, 40)] {
        let buffer = screen(&app, width, height);
        let header = words_in_rows(&buffer, 0..3);
        assert!(header.contains(&format!("failed: {error}")), "{header}");
        let (_, log_top) = find_all(&buffer, "┌ Log")[0];
        let log = words_in_rows(&buffer, log_top + 1..height - 2);
        assert!(log.contains(&format!("run failed: {error}")), "{log}");
    }

    // Scrolling the log goes row by row through the wrapped lines, back to the first line.
    app.run_pane = RunPane::Log;
    let buffer = screen(&app, MIN_WIDTH, MIN_HEIGHT);
    assert!(
        find_all(&buffer, "starting exp1-honest").is_empty(),
        "the error fills the log"
    );
    assert_eq!(app.scroll_limits.log.get(), 1, "3 rows in a pane of 2");
    for _ in 0..5 {
        app.handle_key(key(crossterm::event::KeyCode::Up));
    }
    assert_eq!(app.log_scroll, 1);
    assert_shows(&screen(&app, MIN_WIDTH, MIN_HEIGHT), "starting exp1-honest");
}
