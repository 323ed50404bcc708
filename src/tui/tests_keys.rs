//! Key handling: navigation, editing, and the questions asked before cancelling or quitting.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::engine::events::EngineEvent;
use crate::model::device::DeviceProfile;

use super::app::{Action, App, Confirm, RunPane, Screen};
use super::bench::synthetic_trial_events;
use super::heatmap::HeatMetric;
use super::picker_state::{Field, PickerFocus};
use super::tests::{app_with_run, assert_shows, catalog, key, screen};
use super::trial_view::{RunStatus, TrialStatus};

fn press(app: &mut App, code: KeyCode) -> Action {
    app.handle_key(key(code))
}

fn ctrl_c() -> KeyEvent {
    KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)
}

/// A run whose first trial is decoding: tokens arrived, no verdict yet.
fn running_app() -> App {
    let events = synthetic_trial_events(0, 64, 16, 3, 4)
        .into_iter()
        .filter(|event| !matches!(event, EngineEvent::InferenceDone { .. }))
        .collect();
    app_with_run(events)
}

#[test]
fn picker_navigation_moves_between_experiments_and_fields() {
    let mut app = App::new(catalog());
    press(&mut app, KeyCode::Down);
    assert_eq!(app.picker.selected, 1);
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(app.picker.selected, 1, "stops at the last experiment");
    press(&mut app, KeyCode::Char('k'));
    press(&mut app, KeyCode::Up);
    assert_eq!(app.picker.selected, 0);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.picker.focus, PickerFocus::Fields);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.picker.current_field(), Some(Field::Precision(0)));
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.picker.focus, PickerFocus::List);
    press(&mut app, KeyCode::Char('h'));
    let untouched = &catalog().experiments[0];
    assert_eq!(
        app.picker.current(),
        Some(untouched),
        "← in the list edits nothing"
    );
    press(&mut app, KeyCode::Char('l'));
    assert_eq!(
        app.picker.focus,
        PickerFocus::Fields,
        "→ in the list enters the fields"
    );
    assert_eq!(press(&mut app, KeyCode::Esc), Action::None);
    assert_eq!(
        app.picker.focus,
        PickerFocus::List,
        "Esc in the fields goes back"
    );
}

#[test]
fn editing_fields_changes_the_started_choice() {
    let mut app = App::new(catalog());
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Right);
    assert_eq!(
        app.picker.current().unwrap().inference.model,
        "qwen2.5-0.5b"
    );
    press(&mut app, KeyCode::Right);
    assert_eq!(
        app.picker.current().unwrap().inference.model,
        "tiny-llama",
        "options wrap"
    );
    press(&mut app, KeyCode::Char('h'));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.picker.current_field(), Some(Field::Device(0)));
    press(&mut app, KeyCode::Right);
    assert_eq!(
        app.picker.current().unwrap().inference.device,
        DeviceProfile::parse("cpu:bf16").ok()
    );
    while app.picker.current_field() != Some(Field::Trials) {
        press(&mut app, KeyCode::Down);
    }
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Char('4'));
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Right);
    assert_shows(&screen(&app, 110, 30), "qwen2.5-0.5b");
    match press(&mut app, KeyCode::Enter) {
        Action::StartRun(choice) => {
            assert_eq!(choice.trials, 42);
            assert_eq!(choice.max_new_tokens, 64 + 16);
            assert_eq!(choice.inference.model, "qwen2.5-0.5b");
            assert_eq!(
                choice.inference.device,
                DeviceProfile::parse("cpu:bf16").ok()
            );
        }
        other => panic!("expected a start, got {other:?}"),
    }
}

#[test]
fn a_start_never_asks_for_zero_trials() {
    let mut app = App::new(catalog());
    press(&mut app, KeyCode::Tab);
    while app.picker.current_field() != Some(Field::Trials) {
        press(&mut app, KeyCode::Down);
    }
    press(&mut app, KeyCode::Backspace);
    assert!(
        matches!(press(&mut app, KeyCode::Enter), Action::StartRun(choice) if choice.trials == 1)
    );
}

#[test]
fn cancel_asks_first_and_keeps_what_was_computed() {
    let mut app = running_app();
    let token = app.live().unwrap().cancel.clone().unwrap();
    press(&mut app, KeyCode::Char('c'));
    assert_eq!(app.confirm, Some(Confirm::CancelRun));
    assert_shows(
        &screen(&app, 100, 30),
        "Cancel exp1-honest? What was computed is kept.",
    );
    press(&mut app, KeyCode::Char('n'));
    assert_eq!(app.confirm, None);
    assert!(!token.is_cancelled());

    press(&mut app, KeyCode::Char('c'));
    press(&mut app, KeyCode::Char('y'));
    assert!(token.is_cancelled());
    assert_eq!(app.live().unwrap().status, RunStatus::Cancelling);
    app.handle_event(EngineEvent::RunDone {
        summary_path: None,
        cancelled: true,
    });
    let run = &app.session_runs[0];
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.trials[0].status, TrialStatus::Incomplete);
    assert_eq!(run.trials[0].tokens, 64, "computed tokens are kept");
    let buffer = screen(&app, 120, 40);
    assert_shows(&buffer, "cancelled (incomplete)");
    assert_shows(&buffer, "trial incomplete");
    press(&mut app, KeyCode::Char('c'));
    assert_eq!(app.confirm, None, "nothing left to cancel");
}

#[test]
fn quitting_during_a_run_asks_for_confirmation() {
    let mut idle = App::new(catalog());
    assert_eq!(press(&mut idle, KeyCode::Char('q')), Action::Quit);

    let mut app = running_app();
    let token = app.live().unwrap().cancel.clone().unwrap();
    assert_eq!(press(&mut app, KeyCode::Esc), Action::None);
    assert_eq!(app.screen, Screen::Picker, "Esc in the run view goes back");
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::None);
    assert_eq!(app.confirm, Some(Confirm::QuitDuringRun));
    assert_shows(
        &screen(&app, 100, 30),
        "exp1-honest is running. Cancel it and quit?",
    );
    assert_eq!(press(&mut app, KeyCode::Esc), Action::None);
    assert_eq!(app.confirm, None);
    press(&mut app, KeyCode::Char('q'));
    assert_eq!(press(&mut app, KeyCode::Char('y')), Action::Quit);
    assert!(token.is_cancelled());
}

#[test]
fn ctrl_c_quits_at_once_when_idle_and_asks_during_a_run() {
    let mut idle = App::new(catalog());
    assert_eq!(idle.handle_key(ctrl_c()), Action::Quit);
    let mut app = running_app();
    assert_eq!(app.handle_key(ctrl_c()), Action::None);
    assert_eq!(app.confirm, Some(Confirm::QuitDuringRun));
    assert_eq!(
        app.handle_key(ctrl_c()),
        Action::Quit,
        "a second Ctrl-C insists"
    );
}

#[test]
fn run_view_keys_switch_pane_verifier_metric_and_trial() {
    let mut events = synthetic_trial_events(0, 8, 8, 3, 4);
    events.extend(synthetic_trial_events(1, 8, 4, 3, 4));
    let mut app = app_with_run(events);
    let run = |app: &App| app.session_runs[0].clone();
    assert_eq!(run(&app).selected_trial, 1, "follows the newest trial");
    press(&mut app, KeyCode::Left);
    assert_eq!(
        (run(&app).selected_trial, run(&app).follow_latest),
        (0, false)
    );
    press(&mut app, KeyCode::Char(']'));
    assert_eq!(
        (run(&app).selected_trial, run(&app).follow_latest),
        (1, true)
    );

    assert_eq!(app.run_pane, RunPane::Heatmap);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.run_pane, RunPane::Log);
    press(&mut app, KeyCode::BackTab);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.selected_verifier, 1);
    press(&mut app, KeyCode::Char('3'));
    assert_eq!(app.selected_verifier, 2);
    press(&mut app, KeyCode::Char('9'));
    assert_eq!(app.selected_verifier, 2, "no ninth verifier");
    press(&mut app, KeyCode::Char('m'));
    assert_eq!(app.metric, HeatMetric::MeanAbs);
    assert_shows(&screen(&app, 120, 40), "V3 cuda:2:f16 · mean_abs (log)");

    press(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Picker);
    press(&mut app, KeyCode::Char('g'));
    assert_eq!(app.screen, Screen::Run);
}

#[test]
fn help_opens_closes_and_swallows_other_keys() {
    let mut app = App::new(catalog());
    press(&mut app, KeyCode::Char('?'));
    assert!(app.show_help);
    assert_eq!(press(&mut app, KeyCode::Down), Action::None);
    assert_eq!(app.picker.selected, 0);
    assert_eq!(
        press(&mut app, KeyCode::Char('q')),
        Action::None,
        "q closes help, not the app"
    );
    assert!(!app.show_help);
    press(&mut app, KeyCode::Char('?'));
    press(&mut app, KeyCode::Esc);
    assert!(!app.show_help);
}

#[test]
fn key_releases_are_ignored() {
    let mut app = App::new(catalog());
    let mut release = key(KeyCode::Char('q'));
    release.kind = KeyEventKind::Release;
    assert_eq!(app.handle_key(release), Action::None);
}

#[test]
fn results_view_opens_and_goes_back() {
    let mut app = running_app();
    assert_eq!(press(&mut app, KeyCode::Char('r')), Action::RefreshPastRuns);
    assert_eq!(app.screen, Screen::Results);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Run, "Enter opens this session's run");
    press(&mut app, KeyCode::Char('r'));
    press(&mut app, KeyCode::Char('q'));
    assert_eq!(app.screen, Screen::Picker);
}

#[test]
fn scrolling_stops_where_the_pane_ends_so_the_way_back_is_immediate() {
    let mut app = running_app();
    for i in 0..100 {
        app.log_line(crate::engine::events::LogLevel::Info, format!("line {i}"));
    }
    screen(&app, 120, 40);
    app.run_pane = RunPane::Log;
    for _ in 0..500 {
        press(&mut app, KeyCode::Up);
    }
    let limit = app.scroll_limits.log.get();
    assert!(limit > 0 && limit < 100, "{limit}");
    assert_eq!(app.log_scroll, limit, "no scrolling past the oldest line");
    press(&mut app, KeyCode::Down);
    assert_eq!(app.log_scroll, limit - 1, "one Down moves at once");
    assert_shows(&screen(&app, 120, 40), "line 1");

    // A generated text longer than its pane scrolls up to its first row and no further.
    let long: String = (0..200).map(|i| format!("row {i}\n")).collect();
    app.session_runs[0].trials[0].text = long.clone();
    screen(&app, 120, 40);
    let limit = app.scroll_limits.text.get();
    assert!(limit > 150 && limit < 200, "{limit}");
    app.run_pane = RunPane::Text;
    for _ in 0..(limit + 50) {
        press(&mut app, KeyCode::Up);
    }
    assert_eq!(app.text_scroll, limit);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.text_scroll, limit - 1);

    // Scrolled to the top, then the window grows: the limit drops below the stored offset,
    // and the first Down must still move what is drawn.
    app.run_pane = RunPane::Log;
    screen(&app, 120, 40);
    for _ in 0..500 {
        press(&mut app, KeyCode::Up);
    }
    screen(&app, 120, 60);
    let taller = app.scroll_limits.log.get();
    assert!(taller < app.log_scroll, "{taller} vs {}", app.log_scroll);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.log_scroll, taller - 1);
}

#[test]
fn on_the_run_view_esc_is_never_spent_on_a_notice_it_does_not_show() {
    let mut plain = running_app();
    let mut replied = running_app();
    assert_eq!(replied.screen, Screen::Run);
    // A reply to a key lands in the run view's log; it is no notice to dismiss there.
    replied.reply(crate::engine::events::LogLevel::Info, "exporting PNGs…");
    assert!(!replied.shows_notice());
    press(&mut plain, KeyCode::Esc);
    assert!(
        plain.screen != Screen::Run || plain.confirm.is_some(),
        "Esc acts here"
    );
    press(&mut replied, KeyCode::Esc);
    assert_eq!(
        (replied.screen, replied.confirm),
        (plain.screen, plain.confirm),
        "one Esc does on the run view what it always does"
    );
}

#[test]
fn warnings_show_on_screens_without_a_log_until_a_key_is_pressed() {
    let mut app = running_app();
    press(&mut app, KeyCode::Char('q'));
    assert_eq!(app.screen, Screen::Picker);
    app.log_line(
        crate::engine::events::LogLevel::Error,
        "export failed: trial_001.json: not a valid result file\nsecond line",
    );
    let shown = screen(&app, 120, 40);
    assert_shows(
        &shown,
        "export failed: trial_001.json: not a valid result file",
    );
    assert_shows(&shown, "Esc dismisses");
    assert_eq!(press(&mut app, KeyCode::Esc), Action::None);
    assert!(app.notice.is_none());
    assert_eq!(
        app.screen,
        Screen::Picker,
        "dismissing does not step back or quit"
    );
    let shown = screen(&app, 120, 40);
    assert!(super::tests::find_all(&shown, "export failed").is_empty());
    // Information is not a notice: the run view's log has it.
    app.log_line(crate::engine::events::LogLevel::Info, "exporting PNGs…");
    assert!(app.notice.is_none());
}

#[test]
fn the_run_view_footer_names_as_many_verifier_keys_as_there_are_verifiers() {
    let app = running_app();
    assert_shows(&screen(&app, 160, 40), " 1-3  verifier");
}

#[test]
fn a_too_small_terminal_takes_only_the_keys_its_message_offers() {
    use super::tests::text_of;
    // Idle at the picker: keys that would start a run or move are ignored; q quits.
    let mut app = App::new(catalog());
    screen(&app, 40, 12);
    for code in [
        KeyCode::Enter,
        KeyCode::Down,
        KeyCode::Char('r'),
        KeyCode::Esc,
    ] {
        assert_eq!(press(&mut app, code), Action::None, "{code:?}");
    }
    assert_eq!((app.screen, app.picker.selected), (Screen::Picker, 0));
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);

    // During a run, q does not step back through hidden screens: it asks, on the small screen.
    let mut app = running_app();
    screen(&app, 40, 12);
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::None);
    assert_eq!(
        app.screen,
        Screen::Run,
        "no stepping back behind the message"
    );
    assert_eq!(app.confirm, Some(Confirm::QuitDuringRun));
    let small = screen(&app, 40, 12);
    // The question wraps inside the dialog's border: read it as words.
    let shown = text_of(&small)
        .replace('║', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        shown.contains("exp1-honest is running. Cancel it and quit?") && shown.contains("y yes"),
        "{shown}\n{}",
        text_of(&small)
    );
    assert_eq!(press(&mut app, KeyCode::Char('n')), Action::None);
    assert_eq!(app.confirm, None);
    // Ctrl-C works as anywhere else: asks during a run, a second one insists.
    assert_eq!(app.handle_key(ctrl_c()), Action::None);
    assert_eq!(app.confirm, Some(Confirm::QuitDuringRun));
    assert_eq!(app.handle_key(ctrl_c()), Action::Quit);

    // Enlarged again, keys act as usual.
    let mut app = App::new(catalog());
    screen(&app, 40, 12);
    screen(&app, 80, 24);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.picker.selected, 1);
}

#[test]
fn the_trial_and_token_counts_shown_are_the_counts_that_run() {
    use super::tests::find_all;
    let mut app = App::new(catalog());
    press(&mut app, KeyCode::Tab);
    while app.picker.current_field() != Some(Field::Trials) {
        press(&mut app, KeyCode::Down);
    }
    // Typing past the largest trial count a run takes stops at it.
    for digit in "10000000".chars() {
        press(&mut app, KeyCode::Char(digit));
    }
    let shown = screen(&app, 110, 30);
    assert_shows(&shown, "Trials          100000     1-100000");
    assert_shows(&shown, "expect PASS · 100000 trials");
    press(&mut app, KeyCode::Right);
    assert_eq!(app.picker.current().unwrap().trials, 100_000);

    // Erased, the field is empty while typing, never a 0 that would run as 1 ...
    for _ in 0..6 {
        press(&mut app, KeyCode::Backspace);
    }
    let shown = screen(&app, 110, 30);
    assert!(find_all(&shown, "Trials          0").is_empty());
    assert_shows(&shown, "expect PASS · 1 trial ");
    // ... and settles to the least count when the cursor leaves it.
    press(&mut app, KeyCode::Down);
    assert_shows(&screen(&app, 110, 30), "Trials          1 ");
    assert_eq!(app.picker.current().unwrap().trials, 1);
    press(&mut app, KeyCode::Left);
    assert_eq!(app.picker.current().unwrap().max_new_tokens, 64 - 16);
    for _ in 0..3 {
        press(&mut app, KeyCode::Backspace);
    }
    press(&mut app, KeyCode::Up);
    assert_shows(&screen(&app, 110, 30), "Max new tokens  1 ");
    press(&mut app, KeyCode::Left);
    assert_eq!(app.picker.current().unwrap().trials, 1, "no fewer than 1");

    // Enter on an emptied field starts what the picker then shows.
    press(&mut app, KeyCode::Backspace);
    match press(&mut app, KeyCode::Enter) {
        Action::StartRun(choice) => assert_eq!((choice.trials, choice.max_new_tokens), (1, 1)),
        other => panic!("expected a start, got {other:?}"),
    }
    assert_eq!(app.picker.current().unwrap().trials, 1);
}

#[test]
fn the_token_gauge_of_a_trial_stopped_early_shows_how_far_it_got() {
    use super::tests::find_all;
    // 22 of 48 tokens decoded, then the run is cancelled.
    let events = synthetic_trial_events(0, 48, 0, 3, 4)
        .into_iter()
        .filter(|event| match event {
            EngineEvent::Token { index, .. } => *index < 22,
            EngineEvent::InferenceDone { .. } => false,
            _ => true,
        })
        .collect();
    let mut app = app_with_run(events);
    app.handle_event(EngineEvent::RunDone {
        summary_path: None,
        cancelled: true,
    });
    assert_eq!(
        app.session_runs[0].trials[0].status,
        TrialStatus::Incomplete
    );
    let filled = |app: &App| {
        let buffer = screen(app, 100, 30);
        let (_, y) = find_all(&buffer, "tokens")[0];
        // The bar's cells: a full block, or the label drawn on the bar's colour.
        (0..buffer.area.width)
            .filter(|&x| {
                let cell = &buffer[(x, y)];
                cell.symbol() == "█" || cell.bg == ratatui::style::Color::Blue
            })
            .count()
    };
    // 22/48 of 100 columns is 45.8.
    let partial = filled(&app);
    assert!((45..=46).contains(&partial), "{partial} of 100 columns");
    assert_shows(&screen(&app, 100, 30), "22/48 tokens");

    // A finished trial fills its bar, whatever its length.
    let done = app_with_run(synthetic_trial_events(0, 48, 48, 3, 4));
    assert_eq!(
        done.session_runs[0].trials[0].status,
        TrialStatus::Verifying
    );
    assert_eq!(filled(&done), 100);
}
