//! The matrix configuration, cell roles and aggregation, on the built-in matrix and synthetic
//! trials.

use super::*;

#[test]
fn the_builtin_matrix_is_valid_and_names_existing_experiments() {
    let (config, name) = MatrixConfig::load(None, None).unwrap();
    let builtin = super::super::config::ConfigSet::load(None).unwrap();
    config
        .validate(&|id| builtin.experiments.get(id).cloned(), &name)
        .unwrap();
    assert!(config.rows.iter().any(|r| r.kind == RowKind::Control));
    let mut picked = config.clone();
    picked.select(Some("f32,native"), Some("q4_0")).unwrap();
    assert_eq!(picked.pairings.len(), 2);
    // Controls stay: they calibrate the pairings.
    let controls: Vec<&str> = config
        .rows
        .iter()
        .filter(|r| r.kind == RowKind::Control)
        .map(|r| r.id.as_str())
        .collect();
    let kept: Vec<&str> = picked.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(kept.len(), controls.len() + 1, "{kept:?}");
    assert!(kept.contains(&"q4_0") && controls.iter().all(|c| kept.contains(c)));
    assert!(picked
        .clone()
        .select(Some("f64"), None)
        .unwrap_err()
        .to_string()
        .contains("f64"));
    assert!(picked.select(None, Some("honest")).is_err());
    // Controls come first.
    let cells = config.cells();
    assert_eq!(config.rows[cells[0].0].kind, RowKind::Control);
}

#[test]
fn a_cell_takes_device_and_verifier_from_the_pairing_and_keeps_the_rows_cheat() {
    let (config, _) = MatrixConfig::load(None, None).unwrap();
    let set = super::super::config::ConfigSet::load(None).unwrap();
    let pairing = |id: &str| config.pairings.iter().find(|p| p.id == id).unwrap();
    let row = |id: &str| config.rows.iter().find(|r| r.id == id).unwrap();
    let (inf, ver) = cell_roles(
        &set.experiments.get("exp1").unwrap().clone(),
        row("honest"),
        pairing("native"),
        1,
    )
    .unwrap();
    assert_eq!(
        (inf.precision, ver[0].precision),
        (Precision::Native, Precision::Native)
    );
    let (inf, ver) = cell_roles(
        &set.experiments.get("exp3").unwrap().clone(),
        row("q4_0"),
        pairing("bf16-f32"),
        2,
    )
    .unwrap();
    assert_eq!(inf.precision.to_string(), "q4_0");
    assert_eq!(inf.device.to_string(), "cpu:bf16");
    assert_eq!((ver.len(), ver[0].precision), (2, Precision::Full));
    let (_, ver) = cell_roles(
        &set.experiments.get("exp5").unwrap().clone(),
        row("lazy-q4_0"),
        pairing("f32"),
        1,
    )
    .unwrap();
    assert_eq!(ver[0].precision.to_string(), "q4_0");
    let (inf, _) = cell_roles(
        &set.experiments.get("exp1").unwrap().clone(),
        row("q8_0"),
        pairing("native"),
        1,
    )
    .unwrap();
    assert_eq!(inf.precision.to_string(), "q8_0");
}

#[test]
fn aggregation_calibrates_on_controls_and_measures_detection_and_false_alarms() {
    let (mut config, name) = MatrixConfig::load(None, None).unwrap();
    config.select(Some("f32"), Some("q4_0")).unwrap();
    config
        .rows
        .retain(|row| row.id == "honest" || row.id == "q4_0");
    config.trials = 4;
    let mut cells = CellTrials::new();
    let honest: Vec<TrialResult> = (0..4)
        .map(|i| crate::testutil::trials::trial("exp1", i, true, &[8, 16, 24], 40))
        .collect();
    let cheat: Vec<TrialResult> = (0..4)
        .map(|i| crate::testutil::trials::trial("exp3", i, false, &[8, 16, 24], 40))
        .collect();
    cells.insert(("honest".into(), "f32".into()), honest);
    cells.insert(("q4_0".into(), "f32".into()), cheat);
    let report = aggregate(&config, &name, 0, &cells);
    assert!(report.complete);
    let control = report.cell("honest", "f32").unwrap();
    assert_eq!(
        (control.rejected.successes, control.rejected.trials),
        (0, 4)
    );
    let cheat = report.cell("q4_0", "f32").unwrap();
    assert_eq!((cheat.rejected.successes, cheat.rejected.trials), (4, 4));
    assert!(cheat.median_tokens_to_detection.unwrap() <= 5);
    assert_eq!(report.calibration[0].honest.trials, 4);
    // Nothing run yet: nothing decided, nothing claimed.
    let none = aggregate(&config, &name, 0, &CellTrials::new());
    assert!(!none.complete);
    assert_eq!(none.cell("q4_0", "f32").unwrap().rejected.trials, 0);
    assert!(none.calibration.is_empty());
}
