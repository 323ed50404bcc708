//! The run view of a segment-mode trial: per verifier, the strip of the model's layers with
//! the challenged ones marked and coloured by result, and the heatmap over that verifier's
//! challenged layers only.

use ratatui::style::Color;

use crate::engine::events::EngineEvent;
use crate::record::results::*;

use super::bench::synthetic_trial_events;
use super::challenge_strip::tests::record;
use super::tests::{app_with_run, assert_shows, find_all, screen, text_of, trial_result};

/// A finished trial of two verifiers in segment mode: V1 challenged layers 3 and 7 (both
/// matched), V2 layers 11 and 15 (15 did not).
fn segment_trial() -> TrialResult {
    let mut result = trial_result("exp1-honest", 0, 24, 2);
    let challenges = [[(3, true), (7, true)], [(11, true), (15, false)]];
    for (verifier, layers) in result.verifiers.iter_mut().zip(challenges) {
        let columns: Vec<usize> = layers.iter().map(|(l, _)| l + 1).collect();
        verifier
            .statistics
            .checks
            .retain(|c| columns.contains(&c.layer));
        verifier.segment = Some(record(30, &layers));
        verifier.verdict = if layers.iter().all(|l| l.1) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
    }
    result.sampled_layers = vec![4, 8, 12, 16];
    result
}

fn finished_app() -> super::app::App {
    let mut events = synthetic_trial_events(0, 24, 24, 2, 4)
        .into_iter()
        .filter(|e| !matches!(e, EngineEvent::Check { .. }))
        .collect::<Vec<_>>();
    events.push(EngineEvent::TrialDone {
        trial: 0,
        result: Box::new(segment_trial()),
    });
    app_with_run(events)
}

#[test]
fn each_verifier_shows_the_layers_it_challenged_coloured_by_result() {
    let app = finished_app();
    let buffer = screen(&app, 140, 44);
    assert_shows(&buffer, "2/30 · all matched");
    assert_shows(&buffer, "2/30 · 1 failed");
    let strips = find_all(&buffer, "L0 ");
    assert_eq!(strips.len(), 2, "{}", text_of(&buffer));
    // One cell per layer after "L0 ": V1's layers 3 and 7 green, V2's 11 green and 15 red,
    // every other cell dim.
    let cell = |strip: usize, layer: u16| {
        let (x, y) = strips[strip];
        let c = &buffer[(x + 3 + layer, y)];
        (c.symbol().to_string(), c.fg)
    };
    assert_eq!(cell(0, 3), ("■".into(), Color::Green));
    assert_eq!(cell(0, 7), ("■".into(), Color::Green));
    assert_eq!(cell(0, 4), ("·".into(), Color::DarkGray));
    assert_eq!(cell(1, 11), ("■".into(), Color::Green));
    assert_eq!(cell(1, 15), ("✗".into(), Color::Red));
    assert_eq!(cell(1, 3), ("·".into(), Color::DarkGray));
    let (x, y) = strips[0];
    assert_eq!(buffer[(x + 3 + 30, y)].symbol(), " ");
    assert!(find_all(&buffer, " L29").len() == 2);
}

#[test]
fn the_heatmap_shows_the_selected_verifiers_challenged_layers_only() {
    let mut app = finished_app();
    let buffer = screen(&app, 140, 44);
    assert_shows(&buffer, "challenged layers");
    // V1 is selected: rows L4 and L8 (the states leaving layers 3 and 7), not V2's.
    assert!(!find_all(&buffer, "L4 ").is_empty(), "{}", text_of(&buffer));
    assert!(!find_all(&buffer, "L8 ").is_empty());
    assert!(find_all(&buffer, "L12").is_empty());
    assert!(find_all(&buffer, "L16").is_empty());
    app.selected_verifier = 1;
    let buffer = screen(&app, 140, 44);
    assert!(!find_all(&buffer, "L12").is_empty(), "{}", text_of(&buffer));
    assert!(!find_all(&buffer, "L16").is_empty());
    assert!(find_all(&buffer, "L8 ").is_empty());
}

#[test]
fn the_picker_chooses_segment_mode_and_the_challenged_layers() {
    use super::app::{Action, App};
    use super::picker_state::Field;
    use super::tests::{catalog, key};
    use crossterm::event::KeyCode;
    let mut app = App::new(catalog());
    let press = |app: &mut App, code| app.handle_key(key(code));
    press(&mut app, KeyCode::Tab);
    while app.picker.current_field() != Some(Field::Mode) {
        press(&mut app, KeyCode::Down);
    }
    let buffer = screen(&app, 110, 34);
    assert_shows(&buffer, "Verification    full");
    assert!(find_all(&buffer, "Layers (c)").is_empty());
    press(&mut app, KeyCode::Right);
    let buffer = screen(&app, 110, 34);
    assert_shows(&buffer, "Verification    segment");
    assert_shows(&buffer, "Layers (c)      4");
    press(&mut app, KeyCode::Down);
    assert_eq!(app.picker.current_field(), Some(Field::ChallengeLayers));
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Char('7'));
    assert_shows(
        &screen(&app, 110, 34),
        "challenged per verifier, each its own secret",
    );
    match press(&mut app, KeyCode::Enter) {
        Action::StartRun(choice) => assert_eq!(choice.segment_layers, Some(7)),
        other => panic!("expected a start, got {other:?}"),
    }
    // Back to full mode: the count is gone with it.
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Left);
    assert_eq!(app.picker.current().unwrap().segment_layers, None);
}

#[test]
fn a_verifier_shows_the_reference_prefill_beside_its_segment_time() {
    let mut result = segment_trial();
    // V1's record carries the reference prefill (2.5 s); V2's does not.
    let record = result.verifiers[0].segment.as_mut().unwrap();
    record.set_full_prefill(Some(2.5));
    let events = vec![EngineEvent::TrialDone {
        trial: 0,
        result: Box::new(result),
    }];
    let app = app_with_run(
        synthetic_trial_events(0, 24, 24, 2, 4)
            .into_iter()
            .filter(|e| !matches!(e, EngineEvent::Check { .. }))
            .chain(events)
            .collect(),
    );
    let buffer = screen(&app, 140, 44);
    // 0.10 s of segment verification and 0.02 s a layer against 2.5 s.
    assert_shows(&buffer, "full prefill 2.50 s");
    assert_shows(&buffer, "segment 0.04×");
    assert_shows(&buffer, "a layer 0.008×");
    assert_eq!(
        find_all(&buffer, "full prefill").len(),
        1,
        "{}",
        text_of(&buffer)
    );
    // Both strips still show.
    assert_shows(&buffer, "2/30 · all matched");
    assert_shows(&buffer, "2/30 · 1 failed");
}

#[test]
fn a_segment_verification_cancelled_midway_shows_what_was_recomputed_and_the_trial_incomplete() {
    let mut result = segment_trial();
    // V2 was cancelled after its first challenged layer (11): layer 15 never ran.
    let v2 = &mut result.verifiers[1];
    v2.segment.as_mut().unwrap().layers.truncate(1);
    v2.statistics.checks.retain(|c| c.layer == 12);
    v2.complete = false;
    result.complete = false;
    let events = synthetic_trial_events(0, 24, 24, 2, 4)
        .into_iter()
        .filter(|e| !matches!(e, EngineEvent::Check { .. }))
        .chain([EngineEvent::TrialDone {
            trial: 0,
            result: Box::new(result),
        }])
        .collect();
    let app = app_with_run(events);
    let buffer = screen(&app, 140, 44);
    assert_shows(&buffer, "trial incomplete");
    assert_shows(&buffer, "2/30 · cancelled 1/2 ·");
    let strips = find_all(&buffer, "L0 ");
    let cell = |layer: u16| {
        let (x, y) = strips[1];
        let c = &buffer[(x + 3 + layer, y)];
        (c.symbol().to_string(), c.fg)
    };
    assert_eq!(cell(11), ("■".into(), Color::Green));
    assert_eq!(cell(15), ("○".into(), Color::Yellow));
    // V1 finished: its strip is unchanged.
    assert_shows(&buffer, "2/30 · all matched");
}
