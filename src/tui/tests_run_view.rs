//! Console tests of the run view: the text streaming in, the heatmap filling, the model load
//! and prefill progress, verdicts in colour, token checks, and runs started through the backend.

use std::sync::Arc;
use std::time::Instant;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use tokio::sync::mpsc::unbounded_channel;

use super::app::{Action, App, Screen};
use super::bench::{synthetic_metrics, synthetic_trial_events};
use super::event_loop::{drain_events, perform};
use super::heatmap::{self, ColourScale, ErrorGrid, HeatMetric, NON_FINITE_COLOUR};
use super::tests::{
    app_with_run, assert_shows, catalog, find_all, key, screen, text_of, trial_result, FakeBackend,
};
use super::*;
use crate::engine::events::{EngineEvent, LogLevel};

#[test]
fn run_view_mid_run_streams_text_and_fills_part_of_the_heatmap() {
    let events: Vec<EngineEvent> = synthetic_trial_events(0, 64, 32, 3, 4)
        .into_iter()
        .filter(|event| match event {
            EngineEvent::Token { index, .. } => *index < 40,
            EngineEvent::InferenceDone { .. } => false,
            _ => true,
        })
        .collect();
    let mut app = app_with_run(events);
    app.handle_event(EngineEvent::Log {
        level: LogLevel::Warn,
        message: "slow step on cpu".into(),
    });
    let buffer = screen(&app, 120, 40);
    for text in [
        "exp1-honest",
        "● running",
        "40/64 tokens",
        // How the inferencer decodes, beside its speed.
        "(fast step, AVX2 kernels)",
        "w39",
        "100.0% accepted · 128/128 checks",
        "running",
        "Errors by layer · V1",
        "rel_l2",
        "L4",
        "L16",
        "slow step on cpu",
    ] {
        assert_shows(&buffer, text);
    }
    // 40 columns of 2 cells each across 111 cells; the first 32 positions are checked.
    let (x, y) = *find_all(&buffer, "L4 ").last().unwrap();
    let filled = (x + 7..buffer.area.width - 1)
        .filter(|&cx| buffer[(cx, y)].symbol() == heatmap::CELL)
        .count();
    assert_eq!(filled, 64);
    assert!(matches!(buffer[(x + 7, y)].fg, Color::Rgb(..)));
    assert_eq!(
        find_all(&buffer, "PASS").len(),
        0,
        "no verdict before the verifiers finish"
    );
}

#[test]
fn model_load_and_gpu_warm_up_are_shown_until_they_end() {
    let preparing = |key: &str, message: Option<&str>| EngineEvent::Preparing {
        key: key.into(),
        message: message.map(String::from),
    };
    let mut app = app_with_run(vec![
        preparing("load a", Some("loading tiny-llama (full, cuda:0:f16)…")),
        preparing(
            "load a",
            Some("preparing GPU kernels on cuda:0 for tiny-llama"),
        ),
    ]);
    let buffer = screen(&app, 120, 40);
    assert_shows(
        &buffer,
        "⧗ preparing GPU kernels on cuda:0 for tiny-llama (0 s)",
    );
    assert!(
        find_all(&buffer, "loading tiny-llama").is_empty(),
        "replaced by its next stage"
    );

    // A second load at the same time: the newest is shown, with a count of the others.
    app.handle_event(preparing(
        "load b",
        Some("loading tiny-llama (q4_0, cpu:f32)…"),
    ));
    assert_shows(
        &screen(&app, 120, 40),
        "loading tiny-llama (q4_0, cpu:f32)… (0 s) (+1 more)",
    );

    app.handle_event(preparing("load b", None));
    app.handle_event(preparing("load a", None));
    let buffer = screen(&app, 120, 40);
    assert!(find_all(&buffer, "⧗").is_empty(), "{}", text_of(&buffer));
    assert_shows(&buffer, "waiting for the first trial");

    // A run that fails during a load leaves nothing pending on screen.
    app.handle_event(preparing("load c", Some("loading other…")));
    app.handle_event(EngineEvent::Failed {
        message: "loading other: no such file".into(),
    });
    assert!(app.session_runs[0].preparing.is_empty());
}

#[test]
fn a_long_prompt_shows_its_prefill_progress_in_the_run_view() {
    use crate::model::device::DeviceProfile;
    use crate::model::weights::Precision;
    // The real inferencer's events for a 301-token prompt (chunks of 128), as the console
    // receives them, up to the start of its second chunk.
    let model = crate::testutil::embedded(Precision::Full, DeviceProfile::CPU_F32);
    let prompt = model.tokenizer.encode(&"hello ".repeat(300)).unwrap();
    let (tx, mut rx) = unbounded_channel();
    let params = crate::engine::sampling::SamplingParams {
        max_new_tokens: 1,
        ..Default::default()
    };
    crate::engine::inference::generate(
        &model,
        &prompt,
        &params,
        &[8],
        &crate::engine::events::EventSink::new(tx),
        0,
        &CancelToken::new(),
    )
    .unwrap();
    let mut events = vec![EngineEvent::TrialStarted {
        trial: 0,
        prompt_category: "long".into(),
        prompt_tokens: prompt.len(),
        max_new_tokens: 1,
        decode_path: model.model.decode_path(),
        sampled_layers: vec![8],
        verifiers: Vec::new(),
    }];
    while let Ok(event) = rx.try_recv() {
        let second = matches!(&event, EngineEvent::Preparing { message: Some(m), .. }
            if m.contains("128 of"));
        events.push(event);
        if second {
            break;
        }
    }
    let app = app_with_run(events);
    assert_shows(
        &screen(&app, 120, 40),
        "trial 0: prefilling the prompt, 128 of 301 tokens",
    );
}

#[test]
fn finished_run_shows_verdicts_in_colour() {
    let mut events = synthetic_trial_events(0, 24, 24, 3, 4);
    events.push(EngineEvent::TrialDone {
        trial: 0,
        result: Box::new(trial_result("exp1-honest", 0, 24, 3)),
    });
    events.push(EngineEvent::RunDone {
        summary_path: Some("/data/run1/summary.json".into()),
        cancelled: false,
    });
    let app = app_with_run(events);
    let buffer = screen(&app, 120, 40);
    for text in [
        "finished",
        "verdict REJECT (expected PASS ✗)",
        "overhead 40.0%",
        "24/24 tokens",
        "run finished (/data/run1/summary.json)",
    ] {
        assert_shows(&buffer, text);
    }
    let coloured = |word: &str| {
        find_all(&buffer, word)
            .iter()
            .map(|&(x, y)| buffer[(x, y)].fg)
            .collect::<Vec<_>>()
    };
    assert!(coloured("PASS").contains(&Color::Green));
    assert_eq!(coloured("FAIL"), vec![Color::Red, Color::Red]);
    assert_eq!(coloured("REJECT")[0], Color::Red);
}

#[test]
fn draining_a_flood_of_events_then_drawing_works() {
    let (tx, mut rx) = unbounded_channel();
    let mut sent = 0;
    for event in synthetic_trial_events(0, 2500, 2500, 3, 13) {
        tx.send(event).unwrap();
        sent += 1;
    }
    assert!(sent >= 100_000, "only {sent} events");
    let mut app = app_with_run(Vec::new());
    let start = Instant::now();
    // Each call stops after its time budget; the event loop calls it once per frame.
    while drain_events(&mut app, &mut rx) {}
    let buffer = screen(&app, 160, 48);
    assert!(start.elapsed().as_secs() < 30);
    assert_shows(&buffer, "2500/2500 tokens");
    assert_shows(&buffer, "PASS");
    assert_shows(&buffer, "tok/col, worst shown");
}

#[test]
fn heatmap_bins_show_the_worst_value() {
    let mut grid = ErrorGrid::with_layers(&[4, 8]);
    for position in 0..2000 {
        grid.record(position, 4, &synthetic_metrics(1e-4));
    }
    let mut broken = synthetic_metrics(1e-4);
    broken.rel_l2 = f64::NAN;
    grid.record(1234, 4, &broken);
    let area = Rect::new(0, 0, 107, 5);
    let mut buffer = Buffer::empty(area);
    let scale = ColourScale::from_range(grid.range(HeatMetric::RelL2));
    heatmap::render(&mut buffer, area, &grid, HeatMetric::RelL2, 2000, scale);
    let worst: Vec<u16> = (7..107)
        .filter(|&x| buffer[(x, 0)].fg == NON_FINITE_COLOUR)
        .collect();
    assert_eq!(
        worst,
        vec![7 + 61],
        "position 1234 of 2000 falls in bin 61 of 100"
    );
    assert!(
        (7..107).all(|x| buffer[(x, 1)].symbol() == " "),
        "layer 8 has no checks"
    );
    assert!(text_of(&buffer).contains("L8"));
}

#[test]
fn starting_a_run_through_the_backend_shows_its_events() {
    let backend: Arc<dyn Backend> = Arc::new(FakeBackend::default());
    let (tx, mut rx) = unbounded_channel();
    let mut app = App::new(catalog());
    let action = app.handle_key(key(crossterm::event::KeyCode::Enter));
    assert!(matches!(action, Action::StartRun(ref choice) if choice.name == "exp1-honest"));
    perform(&mut app, &backend, action, &tx);
    while let Ok(event) = rx.try_recv() {
        app.handle_event(event);
    }
    assert_eq!(app.screen, Screen::Run);
    let buffer = screen(&app, 120, 40);
    assert_shows(&buffer, "16/16 tokens");
    assert_shows(&buffer, "PASS");
}

#[test]
fn a_refused_start_is_reported() {
    let backend: Arc<dyn Backend> = Arc::new(FakeBackend {
        refuse_start: true,
        ..FakeBackend::default()
    });
    let (tx, _rx) = unbounded_channel();
    let mut app = App::new(catalog());
    let action = app.handle_key(key(crossterm::event::KeyCode::Enter));
    perform(&mut app, &backend, action, &tx);
    assert!(app.live().is_none());
    assert_shows(
        &screen(&app, 120, 40),
        "failed: could not start: no such model",
    );
}

/// Token checks stream in beside the state checks: each verifier gets a token gauge, and the
/// tokens the shown verifier rejected are marked in the generated text; another verifier that
/// accepted them leaves the text unmarked.
#[test]
fn token_checks_show_as_a_gauge_and_rejected_tokens_are_marked_in_the_text() {
    let mut events = synthetic_trial_events(0, 24, 24, 2, 2);
    for verifier in 0..2 {
        for position in 0..24 {
            events.push(EngineEvent::TokenCheck {
                trial: 0,
                verifier,
                position,
                // Verifier 1 rejects token 5 ("w5 "); verifier 2 accepts everything.
                accept: !(verifier == 0 && position == 5),
                margin: if verifier == 0 && position == 5 {
                    -2.0
                } else {
                    0.5
                },
            });
        }
    }
    let mut app = app_with_run(events);
    let buffer = screen(&app, 120, 40);
    assert_shows(&buffer, "tok 23/24 ✗");
    assert_shows(&buffer, "V1 rejected 1 token (first at 5)");
    assert_shows(&buffer, "tok 24/24 ✓");
    let (x, y) = find_all(&buffer, "w5 ")[0];
    for dx in 0..2 {
        assert_eq!(buffer[(x + dx, y)].bg, Color::Red, "w5 is marked");
    }
    let (x4, y4) = find_all(&buffer, "w4 ")[0];
    assert_ne!(buffer[(x4, y4)].bg, Color::Red, "w4 was accepted");
    // The second verifier accepted every token: nothing is marked while it is shown.
    app.selected_verifier = 1;
    let buffer = screen(&app, 120, 40);
    let (x, y) = find_all(&buffer, "w5 ")[0];
    assert_ne!(buffer[(x, y)].bg, Color::Red);
}

/// A trial whose bundle was not held to a request says so in the run view's header.
#[test]
fn an_unchecked_request_is_shown_in_the_header() {
    let mut result = trial_result("exp1-honest", 0, 8, 2);
    result.request_checked = false;
    let mut app = app_with_run(vec![EngineEvent::TrialDone {
        trial: 0,
        result: Box::new(result.clone()),
    }]);
    assert_shows(&screen(&app, 120, 40), "request not checked");
    result.request_checked = true;
    app.handle_event(EngineEvent::TrialDone {
        trial: 0,
        result: Box::new(result),
    });
    let buffer = screen(&app, 120, 40);
    assert_shows(&buffer, "request ✓");
    assert!(find_all(&buffer, "request not checked").is_empty());
}

/// A saved trial brings its token checks back: gauge counts and the rejected positions.
#[test]
fn a_saved_trial_restores_its_token_checks() {
    use crate::record::results::TokenCheckRecord;
    let mut result = trial_result("exp1-honest", 0, 8, 2);
    result.verifiers[1].statistics.token_checks = (0..8)
        .map(|position| TokenCheckRecord {
            position,
            token: position as u32,
            in_set: true,
            margin: if position == 6 { -1.0 } else { 1.0 },
            accept: position != 6,
        })
        .collect();
    let view = super::trial_view::TrialView::from_result(result);
    assert_eq!(view.verifiers[0].token_checks, 0);
    let second = &view.verifiers[1];
    assert_eq!((second.token_checks, second.tokens_accepted), (8, 7));
    assert_eq!(second.rejected_tokens, vec![6]);
}
