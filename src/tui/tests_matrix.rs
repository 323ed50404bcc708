//! The matrix view, drawn into TestBackend from a real matrix folder that fills between frames.

use std::path::Path;

use crossterm::event::KeyCode;

use super::app::{Action, App, Screen, Viewing};
use super::tests::{assert_shows, catalog, key, screen, text_of};
use crate::experiment::matrix::{cell_dir, MatrixConfig};
use crate::experiment::matrix_run::{MatrixPlan, PLAN_FILE};
use crate::experiment::output::{summarize, trial_file_name, RunContext};
use crate::record::results::{TrialResult, TrialVerdict};

fn write_plan(dir: &Path) {
    let (mut config, file) = MatrixConfig::load(None, None).unwrap();
    config.select(Some("f32,bf16-f32"), Some("q4_0")).unwrap();
    // One control and one cheat, whatever else the built-in matrix holds.
    config
        .rows
        .retain(|row| row.id == "honest" || row.id == "q4_0");
    config.trials = 2;
    let plan = MatrixPlan {
        config,
        config_file: file,
        started_at: 1_700_000_000,
    };
    std::fs::write(dir.join(PLAN_FILE), serde_json::to_vec(&plan).unwrap()).unwrap();
}

fn write_cell(dir: &Path, row: &str, pairing: &str, trials: &[TrialResult], summary: bool) {
    let cell = cell_dir(dir, row, pairing);
    std::fs::create_dir_all(&cell).unwrap();
    for t in trials {
        std::fs::write(
            cell.join(trial_file_name(t.trial)),
            serde_json::to_vec(t).unwrap(),
        )
        .unwrap();
    }
    if summary {
        let run = RunContext {
            experiment: trials[0].experiment.clone(),
            description: String::new(),
            cutoff: 0.9,
            expected: TrialVerdict::Pass,
            started_at: 1_700_000_000,
            planned_trials: trials.len(),
            jobs: 1,
        };
        let s = summarize(&run, trials, true).unwrap();
        std::fs::write(cell.join("summary.json"), serde_json::to_vec(&s).unwrap()).unwrap();
    }
}

fn trials(experiment: &str, honest: bool) -> Vec<TrialResult> {
    (0..2)
        .map(|i| crate::testutil::trials::trial(experiment, i, honest, &[8, 16, 24], 30))
        .collect()
}

#[test]
fn the_matrix_fills_as_trials_finish_and_enter_opens_a_cells_run() {
    let root = tempfile::tempdir().unwrap();
    let mut app = App::new(catalog());
    // No matrix yet: the view says how to make one.
    assert_eq!(
        app.handle_key(key(KeyCode::Char('x'))),
        Action::RefreshMatrix
    );
    assert_eq!(app.screen, Screen::Matrix);
    app.matrix.refresh(root.path());
    assert_shows(&screen(&app, 100, 30), "run `verillm-tui matrix`");

    let dir = root.path().join("matrix-20261207-170000");
    std::fs::create_dir_all(&dir).unwrap();
    write_plan(&dir);
    assert!(app.matrix.refresh(root.path()));
    let empty = screen(&app, 100, 30);
    assert_shows(&empty, "0/8 trials (filling)");
    assert_shows(&empty, "bf16→f32");
    assert_shows(&empty, "honest (ctl)");
    assert_shows(&empty, "0/2 run");

    // The f32 controls and cheats finish: that column is decided, the other still waits.
    write_cell(&dir, "honest", "f32", &trials("exp1", true), true);
    write_cell(&dir, "q4_0", "f32", &trials("exp3", false), true);
    assert!(app.matrix.refresh(root.path()));
    let half = screen(&app, 100, 30);
    assert_shows(&half, "4/8 trials (filling)");
    assert_shows(&half, "FA 0.00");
    assert_shows(&half, "1.00 ");
    assert!(
        text_of(&half).contains("tok"),
        "tokens to detection shown:\n{}",
        text_of(&half)
    );
    // Nothing new: nothing to redraw.
    assert!(!app.matrix.refresh(root.path()));

    // Down to the cheat row (f32 column): Enter opens its run in the run view.
    app.handle_key(key(KeyCode::Down));
    let details = screen(&app, 100, 30);
    assert_shows(&details, "q4_0 on f32");
    assert_shows(&details, "SPRT detected: 2 of 2");
    let opened = app.handle_key(key(KeyCode::Enter));
    assert!(
        matches!(opened, Action::LoadTrial { slot: 0, .. }),
        "{opened:?}"
    );
    assert_eq!((app.screen, app.viewing), (Screen::Run, Viewing::Past));
    // q comes back to the matrix, not to the results list.
    app.handle_key(key(KeyCode::Char('q')));
    assert_eq!(app.screen, Screen::Matrix);

    // A cell without a finished run says so instead of opening anything.
    app.handle_key(key(KeyCode::Right));
    assert_eq!(app.handle_key(key(KeyCode::Enter)), Action::None);
    assert_eq!(app.screen, Screen::Matrix);
    assert_shows(&screen(&app, 100, 30), "no finished run yet");
}

#[test]
fn a_damaged_trial_file_is_named_and_the_rest_still_shows() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("matrix-20261207-170000");
    std::fs::create_dir_all(&dir).unwrap();
    write_plan(&dir);
    write_cell(&dir, "honest", "f32", &trials("exp1", true), false);
    std::fs::write(cell_dir(&dir, "honest", "f32").join("trial_009.json"), b"{").unwrap();
    let mut app = App::new(catalog());
    app.handle_key(key(KeyCode::Char('x')));
    app.matrix.refresh(root.path());
    assert!(app
        .matrix
        .problem
        .as_deref()
        .is_some_and(|p| p.contains("trial_009.json")));
    let cell = app
        .matrix
        .report
        .as_ref()
        .unwrap()
        .cell("honest", "f32")
        .unwrap();
    assert_eq!(cell.trials.len(), 2);
    assert_shows(&screen(&app, 100, 30), "trial_009.json");
}

#[test]
fn the_run_view_header_names_the_sequential_decision_and_the_cutoff_verdict() {
    let dir = tempfile::tempdir().unwrap();
    write_plan(dir.path());
    let mut cheat = trials("exp3", false);
    for t in &mut cheat {
        crate::experiment::decision::decide(
            t,
            &Default::default(),
            crate::experiment::decision::CalibrationFile::builtin(),
        );
    }
    write_cell(dir.path(), "q4_0", "f32", &cheat, true);
    let mut app = App::new(catalog());
    app.matrix.load(dir.path());
    app.screen = Screen::Matrix;
    app.handle_key(key(KeyCode::Down));
    let Action::LoadTrial { slot, path } = app.handle_key(key(KeyCode::Enter)) else {
        panic!("Enter did not open the cell's run");
    };
    let loaded: TrialResult = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    app.trial_loaded(slot, Ok(loaded));
    let shown = screen(&app, 150, 40);
    assert_shows(
        &shown,
        "SPRT cheat after 1 tokens at α=0.001 β=0.001 (cutoff",
    );
    assert_shows(&shown, "rule: REJECT)");
}
