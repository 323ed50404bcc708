//! The results view watching runs submitted to Slurm: trials appear as their result files land
//! in the run folder, with the job ids that produce them.

use super::app::{App, Screen};
use super::tests::{assert_shows, catalog, screen, text_of};
use crate::experiment::slurm::submit::{ArrayJob, Submission};
use crate::experiment::slurm::watch::scan;
use crate::experiment::slurm::{
    write_json, JobFolder, JobPlan, SlurmOptions, SLURM_FORMAT_VERSION,
};

/// A job folder as `run exp3 --slurm` leaves it after submission, under `<data>/exp3/`.
fn submitted_run(data: &std::path::Path) -> JobFolder {
    let folder = JobFolder::new(data.join("exp3").join("run-20261207-140000"));
    let plan = JobPlan {
        format_version: SLURM_FORMAT_VERSION,
        experiment: "exp3".into(),
        trials: 2,
        verifiers: None,
        max_new_tokens: Some(8),
        min_new_tokens: None,
        seed: None,
        gpu: None,
        binary: "/usr/local/bin/verillm-tui".into(),
        model_dir: "/models".into(),
        threads: None,
        options: SlurmOptions::default(),
        created_at: 1_796_651_000,
        protocol: Default::default(),
    };
    folder.create(&plan, None).unwrap();
    let submission = Submission {
        submitted_at: 1_796_651_000,
        trials: vec![0, 1],
        infer: Some(ArrayJob {
            job_id: "412".into(),
            trials: vec![0, 1],
        }),
        verify: vec![ArrayJob {
            job_id: "413".into(),
            trials: vec![0, 1],
        }],
        collect_job: "414".into(),
    };
    write_json(&folder.submissions_path(), &vec![submission]).unwrap();
    folder
}

fn land(folder: &JobFolder, trial: usize) {
    let result = crate::testutil::trials::trial("exp3", trial, false, &[8, 16], 4);
    write_json(&folder.trial_result_path(trial), &result).unwrap();
}

#[test]
fn results_view_shows_a_submitted_runs_trials_as_they_land() {
    let data = tempfile::tempdir().unwrap();
    let folder = submitted_run(data.path());
    let mut app = App::new(catalog());
    app.screen = Screen::Results;

    // Nothing has landed yet: the run and its jobs are shown all the same.
    app.slurm_runs = scan(data.path());
    let buffer = screen(&app, 140, 34);
    assert_shows(&buffer, "Submitted to Slurm");
    assert_shows(
        &buffer,
        "exp3 · 0/2 trials landed, 0/2 bundles · queued or running",
    );
    assert_shows(&buffer, "jobs infer 412, verify 413, collect 414 · /");

    // Trial 1 lands first (array tasks finish in any order), then the view is polled again.
    land(&folder, 1);
    app.slurm_runs = scan(data.path());
    let buffer = screen(&app, 140, 34);
    assert_shows(&buffer, "exp3 · 1/2 trials landed");
    let text = text_of(&buffer);
    assert!(text.contains("trial 1 REJECT"), "{text}");
    assert!(!text.contains("trial 0 "), "{text}");

    land(&folder, 0);
    app.slurm_runs = scan(data.path());
    let buffer = screen(&app, 140, 34);
    assert_shows(&buffer, "exp3 · 2/2 trials landed");
    let text = text_of(&buffer);
    assert!(
        text.contains("trial 0 REJECT") && text.contains("trial 1 REJECT"),
        "{text}"
    );
}

#[test]
fn a_collected_run_with_a_missing_trial_says_so() {
    let data = tempfile::tempdir().unwrap();
    let folder = submitted_run(data.path());
    land(&folder, 0);
    let report = crate::experiment::slurm::tasks::CollectReport {
        format_version: SLURM_FORMAT_VERSION,
        experiment: "exp3".into(),
        collected_at: 1_796_651_100,
        planned_trials: 2,
        landed: vec![0],
        missing: vec![crate::experiment::slurm::tasks::MissingTrial {
            trial: 1,
            lacking: "inference".into(),
            tasks: Vec::new(),
        }],
        submissions: vec![vec!["412".into(), "413".into(), "414".into()]],
    };
    write_json(&folder.collect_report_path(), &report).unwrap();
    let mut app = App::new(catalog());
    app.screen = Screen::Results;
    app.slurm_runs = scan(data.path());
    let buffer = screen(&app, 140, 34);
    assert_shows(&buffer, "collected, missing trial 1 (run --resume)");
}

#[test]
fn a_segment_mode_run_on_slurm_is_labelled_with_its_challenge() {
    let data = tempfile::tempdir().unwrap();
    let folder = submitted_run(data.path());
    let mut plan = folder.read_plan().unwrap();
    plan.protocol = crate::experiment::slurm::segment::ProtocolOptions {
        mode: Some(crate::experiment::config::VerificationMode::Segment),
        challenge_layers: Some(2),
        ..Default::default()
    };
    write_json(&folder.plan_path(), &plan).unwrap();
    let mut app = App::new(catalog());
    app.screen = Screen::Results;
    app.slurm_runs = scan(data.path());
    let buffer = screen(&app, 140, 34);
    assert_shows(
        &buffer,
        "exp3 · segment, c = 2 · 0/2 trials landed, 0/2 bundles · queued or running",
    );
}
