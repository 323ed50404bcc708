//! A run looks its experiment up once (`plan::experiment_spec`) and carries the spec: an unknown
//! name is a clear error naming the known ones, in both the full run and `--step verify`, before
//! anything is written; planning from the carried spec is planning by name.

use std::sync::Arc;

use super::config::ConfigSet;
use super::plan::{experiment_spec, plan_trials, plan_trials_of, RunRequest, RunStep};
use super::runner::run_experiment;
use super::workspace::Workspace;
use crate::engine::events::{CancelToken, EventSink};

fn workspace(data: &std::path::Path) -> Workspace {
    Workspace::new(
        ConfigSet::builtin().unwrap(),
        data.join("models"),
        data.to_path_buf(),
    )
}

#[tokio::test]
async fn an_unknown_experiment_is_named_with_the_known_ones_and_nothing_is_written() {
    let data = tempfile::tempdir().unwrap();
    let bundles = tempfile::tempdir().unwrap();
    for (step, from) in [
        (RunStep::Both, None),
        (RunStep::Infer, None),
        (RunStep::Verify, Some(bundles.path().to_path_buf())),
    ] {
        let ws = Arc::new(workspace(data.path()));
        let req = RunRequest {
            experiment: "exp-nope".into(),
            step,
            from,
            jobs: 1,
            ..RunRequest::default()
        };
        let error = run_experiment(ws, req, EventSink::none(), CancelToken::new())
            .await
            .err()
            .unwrap_or_else(|| panic!("{step:?}: an unknown experiment ran"));
        let message = format!("{error:#}");
        assert!(
            message.contains("unknown experiment `exp-nope`") && message.contains("exp1"),
            "{step:?}: {message}"
        );
    }
    let written: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
    assert!(written.is_empty(), "{written:?}");
}

#[test]
fn planning_from_the_carried_spec_is_planning_by_name() {
    let data = tempfile::tempdir().unwrap();
    let ws = workspace(data.path());
    let req = RunRequest {
        experiment: "exp1".into(),
        trials: Some(2),
        seed: Some(7),
        jobs: 1,
        ..RunRequest::default()
    };
    let spec = experiment_spec(&ws, "exp1").unwrap();
    let by_name = plan_trials(&ws, &req).unwrap();
    let carried = plan_trials_of(&ws, spec, &req).unwrap();
    assert_eq!(by_name.len(), 2);
    assert_eq!(format!("{by_name:?}"), format!("{carried:?}"));
}
