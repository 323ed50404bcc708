//! Screen tests: draw into an off-screen terminal and check what a person would see. This file
//! holds the fixtures every `tests_*.rs` of the console shares (catalog, fake backend, trial
//! results, screen readers) and the tests of the picker, results list, help and size checks;
//! the run view's tests are in `tests_run_view.rs`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::engine::events::EngineEvent;
use crate::record::results::*;

use super::app::{Action, App, Catalog, Screen};
use super::bench::{
    synthetic_choice, synthetic_device, synthetic_error, synthetic_metrics, synthetic_trial_events,
};
use super::heatmap;
use super::*;
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;

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
        devices: ["cpu", "cpu:bf16", "cuda:0:f16"]
            .map(|device| DeviceProfile::parse(device).unwrap())
            .to_vec(),
        precisions: ["full", "q8_0", "q4_0"]
            .map(|p| p.parse().unwrap())
            .to_vec(),
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
                role: role(&synthetic_device(v).to_string()),
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
    fn devices(&self) -> Vec<DeviceProfile> {
        catalog().devices
    }
    fn precisions(&self) -> Vec<Precision> {
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
        "cuda:1:f16",
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
