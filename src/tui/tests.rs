//! Screen tests: draw into an off-screen terminal and check what a person would see.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::Terminal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::engine::events::{EngineEvent, LogLevel};
use crate::record::results::*;

use super::app::{Action, App, Catalog, Screen};
use super::bench::{synthetic_choice, synthetic_error, synthetic_metrics, synthetic_trial_events};
use super::heatmap::{self, ColourScale, ErrorGrid, HeatMetric, NON_FINITE_COLOUR};
use super::*;

pub(super) fn catalog() -> Catalog {
    let honest = synthetic_choice("exp1-honest", 3, 64);
    let cheat = ExperimentChoice {
        name: "exp4-cheat".into(),
        description: "inference swaps in a smaller model; verifiers should catch it".into(),
        expected: TrialVerdict::Reject,
        ..synthetic_choice("exp4-cheat", 3, 32)
    };
    Catalog {
        experiments: vec![honest, cheat],
        models: vec!["tiny-llama".into(), "qwen2.5-0.5b".into()],
        devices: vec!["cpu".into(), "cpu:bf16".into(), "cuda:0:f16".into()],
        precisions: vec!["full".into(), "q8_0".into(), "q4_0".into()],
    }
}

pub(super) fn screen(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, app)).unwrap();
    terminal.backend().buffer().clone()
}

pub(super) fn row_text(buffer: &Buffer, y: u16) -> String {
    (0..buffer.area.width)
        .map(|x| buffer[(x, y)].symbol())
        .collect()
}

pub(super) fn text_of(buffer: &Buffer) -> String {
    (0..buffer.area.height)
        .map(|y| row_text(buffer, y))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every (x, y) where `needle` starts, counting one character per cell.
pub(super) fn find_all(buffer: &Buffer, needle: &str) -> Vec<(u16, u16)> {
    let mut hits = Vec::new();
    for y in 0..buffer.area.height {
        let row = row_text(buffer, y);
        for (byte, _) in row.match_indices(needle) {
            hits.push((row[..byte].chars().count() as u16, y));
        }
    }
    hits
}

pub(super) fn assert_shows(buffer: &Buffer, needle: &str) {
    assert!(
        !find_all(buffer, needle).is_empty(),
        "{needle:?} not on screen:\n{}",
        text_of(buffer)
    );
}

pub(super) fn trial_result(
    experiment: &str,
    trial: usize,
    tokens: usize,
    verifiers: usize,
) -> TrialResult {
    let layers: Vec<usize> = (1..=4).map(|l| l * 4).collect();
    let role = |device: &str| RoleSpec {
        model: "tiny-llama".into(),
        precision: "full".into(),
        device: device.into(),
        dtype: "f32".into(),
    };
    let results: Vec<VerifierResult> = (0..verifiers)
        .map(|v| {
            let checks: Vec<CheckRecord> = (0..tokens)
                .flat_map(|position| layers.iter().map(move |&layer| (position, layer)))
                .map(|(position, layer)| {
                    let error = synthetic_error(v, position, layer);
                    CheckRecord {
                        position,
                        layer,
                        accept: error < 1e-3,
                        metrics: synthetic_metrics(error),
                    }
                })
                .collect();
            let accepted = checks.iter().filter(|c| c.accept).count();
            let accept_rate = accepted as f64 / checks.len() as f64;
            VerifierResult {
                name: format!("verifier{}", v + 1),
                role: role(&format!("cpu:v{}", v + 1)),
                policy: "tiered".into(),
                tier: None,
                limits: None,
                cutoff: 0.95,
                statistics: VerifierStatistics {
                    summary: VerifierSummary {
                        accept_rate,
                        accepted,
                        total_checks: checks.len(),
                        mean_rel_l2: 0.0,
                        max_rel_l2: 0.0,
                        mean_pe: 0.0,
                        mean_abs: 0.0,
                        max_abs: 0.0,
                    },
                    checks,
                    embedding_checks: Vec::new(),
                    token_checks: Vec::new(),
                },
                token_checks: None,
                overhead: Overhead {
                    verification_time_s: 1.0,
                    inference_time_s: 2.0,
                    percentage: 50.0,
                },
                verdict: if accept_rate >= 0.95 {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                complete: true,
                segment: None,
            }
        })
        .collect();
    let all_pass = results.iter().all(|v| v.verdict == Verdict::Pass);
    let final_verdict = if all_pass {
        TrialVerdict::Pass
    } else {
        TrialVerdict::Reject
    };
    TrialResult {
        request_checked: false,
        decision: None,
        format_version: RESULT_FORMAT_VERSION,
        experiment: experiment.into(),
        trial,
        started_at: 1_709_210_096,
        pairing: "same device".into(),
        prompt: PromptInfo {
            category: "general".into(),
            id: "p1".into(),
            text: "Hello".into(),
        },
        sampled_layers: layers,
        inference: InferenceInfo {
            role: role("cpu"),
            prompt_tokens: 5,
            generated_tokens: tokens,
            time_s: 2.0,
            tokens_per_s: tokens as f64 / 2.0,
            decode_s: Some(1.5),
            output_text: "saved output text".into(),
            output_ids: (0..tokens as u32).collect(),
            captured_bytes: 0,
        },
        verifiers: results,
        summary: TrialSummary {
            avg_accept_rate: 0.9,
            final_verdict,
            expected_verdict: TrialVerdict::Pass,
            expectation_held: final_verdict == TrialVerdict::Pass,
            detected: None,
        },
        complete: true,
    }
}

pub(super) fn past_run(dir: &str, trials: usize) -> PastRun {
    let role = RoleSpec {
        model: "tiny-llama".into(),
        precision: "full".into(),
        device: "cpu".into(),
        dtype: "f32".into(),
    };
    PastRun {
        summary_path: PathBuf::from(format!("/data/{dir}/summary.json")),
        summary: RunSummary {
            format_version: RESULT_FORMAT_VERSION,
            experiment: "exp2-cross-device".into(),
            description: "verify on another device".into(),
            started_at: 1_709_210_096,
            pairing: "cpu -> cpu:bf16".into(),
            inference: role.clone(),
            verifiers: vec![role.clone(), role.clone(), role],
            cutoff: 0.95,
            expected_verdict: TrialVerdict::Pass,
            trials,
            // One more planned than finished: a run cut short shows it as done/planned.
            planned_trials: Some(trials + 1),
            jobs: None,
            trial_files: (0..trials).map(|t| format!("trial_{t}.json")).collect(),
            aggregate: Aggregate {
                avg_accept_rate: 0.987,
                avg_overhead_percentage: 41.5,
                pass_rate: 1.0,
                detection_rate: None,
                expectation_rate: 1.0,
            },
            complete: true,
        },
    }
}

/// A backend that answers from memory and records what it was asked.
#[derive(Default)]
pub(super) struct FakeBackend {
    pub started: Mutex<Vec<ExperimentChoice>>,
    pub refuse_start: bool,
    pub past: Vec<PastRun>,
    /// Alters a saved trial as a damaged or hostile file would.
    pub damage: Option<fn(&mut TrialResult)>,
}

impl Backend for FakeBackend {
    fn experiments(&self) -> Vec<ExperimentChoice> {
        catalog().experiments
    }
    fn models(&self) -> Vec<String> {
        catalog().models
    }
    fn devices(&self) -> Vec<String> {
        catalog().devices
    }
    fn precisions(&self) -> Vec<String> {
        catalog().precisions
    }
    fn start(
        &self,
        choice: ExperimentChoice,
        events: UnboundedSender<EngineEvent>,
        _cancel: CancelToken,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(!self.refuse_start, "no such model");
        self.started.lock().unwrap().push(choice);
        for event in synthetic_trial_events(0, 16, 16, 3, 4) {
            events.send(event).unwrap();
        }
        Ok(())
    }
    fn past_runs(&self) -> Vec<PastRun> {
        self.past.clone()
    }
    fn load_trial(&self, path: &Path) -> anyhow::Result<TrialResult> {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let trial: usize = name.trim_start_matches("trial_").parse()?;
        let mut result = trial_result("exp2-cross-device", trial, 20 + trial, 3);
        if let Some(damage) = self.damage.filter(|_| trial > 0) {
            damage(&mut result);
        }
        Ok(result)
    }
    fn export_pngs(&self, trial: &TrialResult) -> anyhow::Result<Vec<PathBuf>> {
        Ok(vec![PathBuf::from(format!(
            "/tmp/plots/trial{}_heatmap.png",
            trial.trial
        ))])
    }
    fn export_run(&self, summary: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let run = summary
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        Ok(["accept_rates", "threshold_distributions"]
            .iter()
            .map(|figure| PathBuf::from(format!("/tmp/plots/{run}/{figure}.png")))
            .collect())
    }
}

/// A run of the honest experiment fed with `events`.
pub(super) fn app_with_run(events: Vec<EngineEvent>) -> App {
    let mut app = App::new(catalog());
    let choice = app.catalog.experiments[0].clone();
    app.begin_run(choice, CancelToken::new());
    for event in events {
        app.handle_event(event);
    }
    app
}

#[test]
fn picker_shows_experiments_roles_and_settings() {
    let app = App::new(catalog());
    let buffer = screen(&app, 110, 30);
    for text in [
        "exp1-honest",
        "exp4-cheat",
        "expect PASS",
        "expect REJECT",
        "synthetic experiment",
        "inference",
        "verifier 3",
        "cpu:v2",
        "Trials",
        "Max new tokens",
        "64",
        "Seed",
        "cutoff: 95.0%",
    ] {
        assert_shows(&buffer, text);
    }
    let (x, y) = find_all(&buffer, "expect REJECT")[0];
    assert_eq!(buffer[(x + 8, y)].fg, Color::Red);
}

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
fn results_list_shows_session_and_past_runs() {
    let mut events = synthetic_trial_events(0, 8, 8, 3, 4);
    events.push(EngineEvent::TrialDone {
        trial: 0,
        result: Box::new(trial_result("exp1-honest", 0, 8, 3)),
    });
    events.push(EngineEvent::RunDone {
        summary_path: Some("/data/now/summary.json".into()),
        cancelled: false,
    });
    let mut app = app_with_run(events);
    // The session's own run is also on disk: listed once, as this session's.
    app.set_past_runs(vec![past_run("old", 3), past_run("now", 1)]);
    app.screen = Screen::Results;
    let buffer = screen(&app, 120, 30);
    for text in [
        "Results · 2 runs",
        "now ",
        "disk",
        "exp1-honest",
        "exp2-cross-device",
        "2024-02-29 12:34",
        "98.7%",
        "100.0%",
        "3/4",
        "Accept",
        "Held",
    ] {
        assert_shows(&buffer, text);
    }
    assert_eq!(find_all(&buffer, "exp2-cross-device").len(), 1);
}

#[test]
fn help_overlay_lists_every_key_even_at_minimum_size() {
    let mut app = App::new(catalog());
    app.show_help = true;
    let buffer = screen(&app, MIN_WIDTH, MIN_HEIGHT);
    assert_shows(&buffer, "Keys — ? or Esc to close");
    for (section, keys) in super::help::KEYS {
        assert_shows(&buffer, section);
        for (key, what) in keys {
            assert_shows(&buffer, &format!(" {key:<11}{what}"));
        }
    }
}

#[test]
fn too_small_terminal_says_what_it_needs() {
    let app = App::new(catalog());
    let buffer = screen(&app, 70, 20);
    assert_shows(&buffer, "Terminal too small");
    assert_shows(&buffer, "need at least 80×24, now 70×20");
    assert_shows(&screen(&app, 80, 24), "exp1-honest");
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

#[test]
fn opening_a_past_run_loads_its_trials_on_demand() {
    use crossterm::event::KeyCode;
    let backend: Arc<dyn Backend> = Arc::new(FakeBackend {
        past: vec![past_run("old", 3)],
        ..FakeBackend::default()
    });
    let (tx, _rx) = unbounded_channel();
    let mut app = App::new(catalog());
    let press = |app: &mut App, code| {
        let action = app.handle_key(key(code));
        perform(app, &backend, action, &tx)
    };
    press(&mut app, KeyCode::Char('r'));
    assert_eq!(app.screen, Screen::Results);
    press(&mut app, KeyCode::Enter);
    let buffer = screen(&app, 120, 40);
    for text in [
        "exp2-cross-device · trial 0 (1/3)",
        "20/20 tokens",
        // The decode rate (20 tokens in the 1.5 s decode loop), not 20 per 2 s end to end.
        "13.3 tok/s",
        "saved output text",
        "FAIL",
    ] {
        assert_shows(&buffer, text);
    }
    assert!(!find_all(&buffer, heatmap::CELL).is_empty());
    press(&mut app, KeyCode::Right);
    let buffer = screen(&app, 120, 40);
    assert_shows(&buffer, "21/21 tokens");
    // Numbered as its file (trial_1.json here) and its exported figures are.
    assert_shows(&buffer, "trial 1 (2/3)");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Results);
}

#[test]
fn export_writes_pngs_and_logs_their_paths() {
    let backend: Arc<dyn Backend> = Arc::new(FakeBackend::default());
    let (tx, mut rx) = unbounded_channel();
    let mut events = synthetic_trial_events(0, 8, 8, 3, 4);
    events.push(EngineEvent::TrialDone {
        trial: 0,
        result: Box::new(trial_result("exp1-honest", 0, 8, 3)),
    });
    let mut app = app_with_run(events);
    let action = app.handle_key(key(crossterm::event::KeyCode::Char('e')));
    assert!(matches!(action, Action::Export(_)));
    perform(&mut app, &backend, action, &tx);
    drain_events(&mut app, &mut rx);
    assert_shows(
        &screen(&app, 120, 40),
        "wrote /tmp/plots/trial0_heatmap.png",
    );
}

#[test]
fn benchmark_reports_frame_times() {
    let (mean, max) = render_benchmark(300, 3, 4, 8);
    assert!(mean > 0.0 && max >= mean);
}

pub(super) fn key(code: crossterm::event::KeyCode) -> crossterm::event::KeyEvent {
    crossterm::event::KeyEvent::new(code, crossterm::event::KeyModifiers::NONE)
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
