//! Tests of reading figure inputs and naming outputs: what a summary may list, bad files,
//! and names from result files turned into safe paths (kept apart from the figure tests).

use std::path::Path;

use super::*;
use crate::record::input::*;
use crate::testutil::trials::{honest_trials, summary_for, trial, write_json};

#[test]
fn summary_entries_leaving_its_directory_are_refused() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let trials = honest_trials();
    write_json(&scratch.path().join("outside.json"), &trials[0]);
    let run_dir = scratch.path().join("run");
    std::fs::create_dir_all(&run_dir).expect("creatable");
    for listed in ["../outside.json", "/etc/passwd", ""] {
        let summary_path = run_dir.join("summary.json");
        write_json(
            &summary_path,
            &summary_for("exp2", &trials[..1], vec![listed.to_string()]),
        );
        let error = plot_files(
            std::slice::from_ref(&summary_path),
            &scratch.path().join("figures"),
        )
        .expect_err("refused");
        let message = format!("{error:#}");
        assert!(message.contains("summary.json"), "{message}");
        assert!(
            message.contains("inside the summary's directory"),
            "{message}"
        );
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(
            scratch.path().join("outside.json"),
            run_dir.join("link.json"),
        )
        .expect("symlink");
        let summary_path = run_dir.join("summary.json");
        write_json(
            &summary_path,
            &summary_for("exp2", &trials[..1], vec!["link.json".to_string()]),
        );
        let error =
            plot_files(&[summary_path], &scratch.path().join("figures")).expect_err("refused");
        assert!(format!("{error:#}").contains("leads outside"), "{error:#}");
    }
}

#[test]
fn a_summary_must_list_each_of_its_trials_once() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let trials = honest_trials();
    write_json(&scratch.path().join("trial_0.json"), &trials[0]);
    let summary_path = scratch.path().join("summary.json");
    let figures = scratch.path().join("figures");
    // The same file twice (also spelled differently) would count one verdict twice.
    write_json(
        &summary_path,
        &summary_for(
            "exp2",
            &trials[..2],
            vec!["trial_0.json".into(), "./trial_0.json".into()],
        ),
    );
    let error = plot_files(std::slice::from_ref(&summary_path), &figures).expect_err("refused");
    assert!(
        format!("{error:#}").contains("listed more than once"),
        "{error:#}"
    );
    // A copy of one trial under another name (a hard link too) counted it twice.
    std::fs::copy(
        scratch.path().join("trial_0.json"),
        scratch.path().join("copy.json"),
    )
    .expect("copied");
    write_json(
        &summary_path,
        &summary_for(
            "exp2",
            &trials[..2],
            vec!["trial_0.json".into(), "copy.json".into()],
        ),
    );
    let error = plot_files(std::slice::from_ref(&summary_path), &figures).expect_err("refused");
    assert!(
        format!("{error:#}").contains("repeats trial 0 of another listed file"),
        "{error:#}"
    );
    // A summary of another format.
    let mut other = summary_for("exp2", &trials[..1], vec!["trial_0.json".into()]);
    other.format_version = 99;
    write_json(&summary_path, &other);
    let error = plot_files(std::slice::from_ref(&summary_path), &figures).expect_err("refused");
    assert!(
        format!("{error:#}").contains("format_version 99"),
        "{error:#}"
    );
    // A count that disagrees with the list.
    write_json(
        &summary_path,
        &summary_for("exp2", &trials[..2], vec!["trial_0.json".into()]),
    );
    let error = plot_files(std::slice::from_ref(&summary_path), &figures).expect_err("refused");
    assert!(
        format!("{error:#}").contains("lists 1 trial files but says trials: 2"),
        "{error:#}"
    );
}

#[test]
fn bad_inputs_are_errors_naming_the_file() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out_dir = scratch.path().join("figures");
    let cases: [(&str, &[u8], &str); 4] = [
        ("broken.json", b"{\"trial\": ", "not valid JSON"),
        ("unknown.json", b"{\"hello\": 1}", "not a trial result"),
        (
            "half_trial.json",
            b"{\"trial\": 0, \"verifiers\": [], \"inference\": {}}",
            "looks like a trial result",
        ),
        ("list.json", b"[1, 2, 3]", "not a trial result"),
    ];
    for (name, contents, expected) in cases {
        let path = scratch.path().join(name);
        std::fs::write(&path, contents).expect("writable");
        let error = plot_files(&[path], &out_dir).expect_err("refused");
        let message = format!("{error:#}");
        assert!(
            message.contains(name) && message.contains(expected),
            "{message}"
        );
    }

    let huge = scratch.path().join("huge.json");
    let file = std::fs::File::create(&huge).expect("creatable");
    file.set_len(MAX_INPUT_BYTES + 1).expect("sparse file");
    let error = plot_files(&[huge], &out_dir).expect_err("refused");
    assert!(format!("{error:#}").contains("huge.json"), "{error:#}");

    let missing = scratch.path().join("missing.json");
    let error = plot_files(&[missing], &out_dir).expect_err("refused");
    assert!(format!("{error:#}").contains("missing.json"), "{error:#}");
}

#[test]
fn names_from_result_files_become_one_safe_path_component() {
    use super::safe_component;
    assert_eq!(safe_component("exp1"), "exp1");
    assert_eq!(safe_component("../../escaped"), ".._.._escaped");
    assert_eq!(safe_component("/etc/passwd"), "_etc_passwd");
    for dots in ["", ".", ".."] {
        let safe = safe_component(dots);
        assert!(
            !safe.is_empty() && safe.chars().any(|c| c != '.'),
            "{dots:?} -> {safe:?}"
        );
    }
    let root = Path::new("/data/plots");
    for name in ["..", "../../escaped", "/abs", "a/../../b"] {
        let joined = root.join(safe_component(name));
        assert_eq!(joined.parent(), Some(root), "{name}");
    }
}

#[test]
fn console_exports_go_to_a_folder_per_trial_run_inside_the_plots_folder() {
    let root = Path::new("/data/plots");
    let mut a = trial("exp1", 0, true, &[8], 2);
    a.started_at = 1_795_700_000;
    let mut b = a.clone();
    b.started_at += 60;
    let (dir_a, dir_b) = (
        crate::console::trial_export_dir(root, &a),
        crate::console::trial_export_dir(root, &b),
    );
    assert_eq!(dir_a, root.join("exp1").join("20261126-133320_trial000"));
    assert_ne!(
        dir_a, dir_b,
        "another run never overwrites this one's figures"
    );
    a.experiment = "../../escaped".into();
    assert!(crate::console::trial_export_dir(root, &a).starts_with(root.join(".._.._escaped")));
}

#[test]
fn hostile_result_files_are_refused_or_drawn_but_never_hang_or_panic() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("figures");
    let write = |name: &str, trial: &TrialResult| {
        let path = scratch.path().join(name);
        write_json(&path, trial);
        path
    };
    // Values near f64's limits overflowed the axis span: a panic counting ticks.
    let mut huge = trial("exp3", 0, false, &[8, 16, 24], 12);
    for (n, check) in huge.verifiers[0].statistics.checks.iter_mut().enumerate() {
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        check.metrics.pe = sign * 1e308;
        check.metrics.mean_abs = sign * 1e308;
    }
    let path = write("huge.json", &huge);
    assert!(!plot_files(&[path], &out).expect("drawn").is_empty());
    // Positions near 2^60 (with as many generated tokens claimed) looped forever on ticks.
    let mut far = trial("exp3", 1, false, &[8], 2);
    far.inference.generated_tokens = (1 << 60) + 301;
    far.inference.output_ids = Vec::new();
    let path = write("far.json", &far);
    let err = format!("{:#}", plot_files(&[path], &out).unwrap_err());
    assert!(
        err.contains("far.json") && err.contains("output_ids holds 0"),
        "{err}"
    );
    // And the ticks of such positions, had they been drawn, end.
    let ticks = super::heatmap::position_ticks(1 << 60, (1 << 60) + 300);
    assert!(!ticks.is_empty() && ticks.len() <= 64, "{}", ticks.len());
    // Another format, a check beyond the output, a flood of verifiers: each refused by name.
    let mut other = trial("exp3", 2, false, &[8], 4);
    other.format_version = 99;
    let err = format!(
        "{:#}",
        plot_files(&[write("v99.json", &other)], &out).unwrap_err()
    );
    assert!(err.contains("v99.json: format_version 99"), "{err}");
    let mut beyond = trial("exp3", 3, false, &[8], 4);
    beyond.verifiers[1].statistics.checks[0].position = 4;
    let err = format!(
        "{:#}",
        plot_files(&[write("beyond.json", &beyond)], &out).unwrap_err()
    );
    assert!(
        err.contains("position 4 is beyond the 4 generated tokens"),
        "{err}"
    );
    let mut crowd = trial("exp3", 4, false, &[8], 4);
    crowd.verifiers = vec![crowd.verifiers[0].clone(); 300];
    let err = format!(
        "{:#}",
        plot_files(&[write("crowd.json", &crowd)], &out).unwrap_err()
    );
    assert!(err.contains("300 verifiers"), "{err}");
}
