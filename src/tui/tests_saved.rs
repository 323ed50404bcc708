//! Console tests of saved runs and untrusted text: damaged or oversized trial files, control
//! characters from models and files, exporting a whole run, runs that ended early.

use std::sync::Arc;

use ratatui::buffer::Buffer;
use tokio::sync::mpsc::unbounded_channel;

use super::app::{Action, App, ExportRequest};
use super::bench::synthetic_trial_events;
use super::event_loop::{drain_events, perform};
use super::tests::{
    app_with_run, assert_shows, catalog, find_all, key, past_run, screen, text_of, FakeBackend,
};
use super::Backend;
use crate::engine::events::{EngineEvent, LogLevel};
use crate::model::device::DeviceProfile;
use crate::record::results::TrialResult;

#[test]
fn a_damaged_or_oversized_saved_trial_is_refused_not_allocated() {
    use crossterm::event::KeyCode;
    let open_second_trial = |damage: fn(&mut TrialResult)| {
        let backend: Arc<dyn Backend> = Arc::new(FakeBackend {
            past: vec![past_run("old", 3)],
            damage: Some(damage),
            ..FakeBackend::default()
        });
        let (tx, _rx) = unbounded_channel();
        let mut app = App::new(catalog());
        for code in [KeyCode::Char('r'), KeyCode::Enter, KeyCode::Right] {
            let action = app.handle_key(key(code));
            perform(&mut app, &backend, action, &tx);
        }
        app
    };
    // A check at position 10^12 sized a heatmap of 2^41 cells: the console aborted.
    let app = open_second_trial(|t| t.verifiers[0].statistics.checks[5].position = 1 << 40);
    let log = text_of(&screen(&app, 160, 50));
    assert!(log.contains("cannot load trial"), "{log}");
    assert!(log.contains("trial_1.json"), "{log}");
    assert!(
        log.contains("checks[5]: position 1099511627776 is beyond the 21"),
        "{log}"
    );
    // Consistent, but more tokens than any heatmap here could hold.
    let app = open_second_trial(|t| {
        t.inference.generated_tokens = 1 << 23;
        t.inference.output_ids = vec![0; 1 << 23];
    });
    let log = text_of(&screen(&app, 160, 50));
    assert!(log.contains("too many heatmap cells"), "{log}");
    // A check at a layer that was never sampled.
    let app = open_second_trial(|t| t.verifiers[2].statistics.checks[0].layer = 31);
    let log = text_of(&screen(&app, 160, 50));
    assert!(
        log.contains("layer 31 is not among the sampled layers"),
        "{log}"
    );
}

#[test]
fn control_characters_in_tokens_and_errors_never_reach_the_terminal() {
    let mut events = synthetic_trial_events(0, 8, 8, 3, 4);
    for event in &mut events {
        if let EngineEvent::Token { index: 2, text, .. } = event {
            *text = "\x1b[2J".into();
        }
    }
    events.push(EngineEvent::Failed {
        message: "bad dtype \x1b]0;owned\x07".into(),
    });
    let app = app_with_run(events);
    let buffer = screen(&app, 140, 40);
    let text = text_of(&buffer);
    assert!(text.contains("\\u{1b}[2J"), "{text}");
    assert!(text.contains("bad dtype \\u{1b}]0;owned\\u{7}"), "{text}");
    assert!(
        buffer
            .content()
            .iter()
            .all(|cell| !cell.symbol().contains(char::is_control)),
        "a control character reached a cell"
    );
}

#[test]
fn control_characters_in_saved_runs_never_reach_a_cell() {
    use crossterm::event::KeyCode;
    let mut past = past_run("old", 2);
    let osc = "\x1b]2;PWN\x07";
    past.summary.experiment = format!("exp{osc}1");
    past.summary.description = format!("desc{osc}");
    past.summary.pairing = format!("pair{osc}");
    let backend: Arc<dyn Backend> = Arc::new(FakeBackend {
        past: vec![past],
        damage: Some(|t| t.verifiers[0].role.model = "model\x1b]2;PWN\x07".into()),
        ..FakeBackend::default()
    });
    let (tx, _rx) = unbounded_channel();
    let mut app = App::new(catalog());
    let clean = |buffer: &Buffer| {
        buffer
            .content()
            .iter()
            .all(|cell| !cell.symbol().contains(char::is_control))
    };
    for code in [KeyCode::Char('r'), KeyCode::Enter, KeyCode::Right] {
        let action = app.handle_key(key(code));
        perform(&mut app, &backend, action, &tx);
        let buffer = screen(&app, 140, 40);
        assert!(
            clean(&buffer),
            "a control character in a cell:\n{}",
            text_of(&buffer)
        );
    }
    assert_shows(&screen(&app, 140, 40), "]2;PWN /full");
}

#[test]
fn exporting_a_past_run_draws_the_runs_own_figures_too() {
    use crossterm::event::KeyCode;
    let backend: Arc<dyn Backend> = Arc::new(FakeBackend {
        past: vec![past_run("old", 3)],
        ..FakeBackend::default()
    });
    let (tx, mut rx) = unbounded_channel();
    let mut app = App::new(catalog());
    let action = app.handle_key(key(KeyCode::Char('r')));
    perform(&mut app, &backend, action, &tx);
    let action = app.handle_key(key(KeyCode::Char('e')));
    assert!(
        matches!(&action, Action::Export(ExportRequest::Run(summary)) if summary.ends_with("summary.json")),
        "{action:?}"
    );
    perform(&mut app, &backend, action, &tx);
    drain_events(&mut app, &mut rx);
    let shown = text_of(&screen(&app, 140, 40));
    assert!(
        shown.contains("exported 2 PNGs of the run in /tmp/plots/old"),
        "{shown}"
    );
}

#[test]
fn verifiers_of_a_run_that_ended_before_them_read_not_run() {
    // Only the trial's start and its tokens: then the run is cancelled (or fails).
    let events: Vec<EngineEvent> = synthetic_trial_events(0, 8, 8, 3, 4)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                EngineEvent::TrialStarted { .. } | EngineEvent::Token { .. }
            )
        })
        .collect();
    let mut app = app_with_run(events);
    assert_eq!(find_all(&screen(&app, 120, 40), "waiting ").len(), 3);
    app.handle_event(EngineEvent::Failed {
        message: "loading verifier 3: no such file".into(),
    });
    let buffer = screen(&app, 120, 40);
    assert_eq!(
        find_all(&buffer, "not run ").len(),
        3,
        "{}",
        text_of(&buffer)
    );
    assert!(find_all(&buffer, "waiting ").is_empty());
}

/// A summary from another build may name a precision or device this build does not parse: the
/// run still opens and loads its trials, and the log names the file, the field and the value.
#[test]
fn a_past_run_with_unknown_role_values_opens_with_a_warning() {
    use crossterm::event::KeyCode;
    let mut past = past_run("old", 3);
    past.summary.inference.precision = "q3".into();
    past.summary.verifiers[1].device = "tpu:9".into();
    let backend: Arc<dyn Backend> = Arc::new(FakeBackend {
        past: vec![past],
        ..FakeBackend::default()
    });
    let (tx, _rx) = unbounded_channel();
    let mut app = App::new(catalog());
    for code in [KeyCode::Char('r'), KeyCode::Enter] {
        let action = app.handle_key(key(code));
        perform(&mut app, &backend, action, &tx);
    }
    let run = app.review.as_ref().expect("the past run opens");
    assert_eq!(run.choice.inference.precision, None);
    assert_eq!(
        run.choice.inference.device,
        DeviceProfile::parse("cpu").ok()
    );
    assert_eq!(run.choice.verifiers[1].device, None);
    assert_eq!(run.choice.verifiers.len(), 3);
    let warnings: Vec<&str> = app
        .log
        .iter()
        .filter(|line| line.level == LogLevel::Warn)
        .map(|line| line.text.as_str())
        .collect();
    for (field, value) in [
        ("inference.precision", "`q3`"),
        ("verifiers[1].device", "`tpu:9`"),
    ] {
        assert!(
            warnings
                .iter()
                .any(|warning| warning.contains("/data/old/summary.json")
                    && warning.contains(field)
                    && warning.contains(value)),
            "no warning naming {field} {value}: {warnings:?}"
        );
    }
    // The trials load as for any past run.
    assert_shows(&screen(&app, 120, 40), "exp2-cross-device · trial 0 (1/3)");
}
