//! Runs the cheat matrix: every cell an ordinary experiment run (its own folder with
//! `trial_*.json` and `summary.json`, readable by the results view and `plot`), controls first,
//! then the aggregate (`matrix.json`, `matrix.md`) rewritten after every cell so
//! that a reader (the console's matrix view) sees it fill.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Result};

use super::matrix::{aggregate, cell_dir, cell_roles, read_all_cells, MatrixConfig, MatrixReport};
use super::plan::RunRequest;
use super::runner::run_experiment;
use super::workspace::Workspace;
use crate::engine::events::{CancelToken, EventSink, LogLevel};
use crate::util::{unix_now, write_file_atomic};

/// The effective configuration (after `--trials/--pairings/--cheats`), written first so that a
/// reader of a matrix in progress knows its plan.
pub const PLAN_FILE: &str = "matrix-plan.json";
pub const REPORT_FILE: &str = "matrix.json";
pub const TABLE_FILE: &str = "matrix.md";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MatrixPlan {
    pub config: MatrixConfig,
    pub config_file: String,
    pub started_at: u64,
}

/// Reads a matrix folder's plan.
pub fn read_plan(out: &Path) -> Result<MatrixPlan> {
    let path = out.join(PLAN_FILE);
    let bytes = std::fs::read(&path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The matrix of a folder as far as its trials have finished.
pub fn report_of(out: &Path) -> Result<MatrixReport> {
    let plan = read_plan(out)?;
    let cells = read_all_cells(&plan.config, out)?;
    Ok(aggregate(
        &plan.config,
        &plan.config_file,
        plan.started_at,
        &cells,
    ))
}

/// Where `matrix` writes without `--out`: `<data>/matrix/matrix-<UTC time>`.
pub fn default_matrix_dir(data_dir: &Path) -> Result<PathBuf> {
    let parent = data_dir.join("matrix");
    std::fs::create_dir_all(&parent).map_err(|e| anyhow!("creating {}: {e}", parent.display()))?;
    let stamp = super::output::utc_stamp(unix_now());
    for n in 0..1000 {
        let name = if n == 0 {
            format!("matrix-{stamp}")
        } else {
            format!("matrix-{stamp}-{n}")
        };
        let dir = parent.join(name);
        if std::fs::create_dir(&dir).is_ok() {
            return Ok(dir);
        }
    }
    Err(anyhow!("no free matrix folder under {}", parent.display()))
}

/// Runs every cell of `config` into `out` (an empty folder), `jobs` trials at a time.
pub async fn run_matrix(
    ws: Arc<Workspace>,
    config: MatrixConfig,
    config_file: String,
    out: PathBuf,
    jobs: usize,
    sink: EventSink,
    cancel: CancelToken,
) -> Result<MatrixReport> {
    let plan = MatrixPlan {
        config: config.clone(),
        config_file: config_file.clone(),
        started_at: unix_now(),
    };
    write_file_atomic(&out.join(PLAN_FILE), &serde_json::to_vec_pretty(&plan)?)?;
    let cells = config.cells();
    for (n, (r, p)) in cells.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        let (row, pairing) = (&config.rows[*r], &config.pairings[*p]);
        let spec = ws
            .config
            .experiments
            .get(&row.experiment)
            .cloned()
            .ok_or_else(|| anyhow!("matrix row {}: no experiment {}", row.id, row.experiment))?;
        let (inference, verifiers) = cell_roles(&spec, row, pairing, config.verifiers)?;
        let dir = cell_dir(&out, &row.id, &pairing.id);
        std::fs::create_dir_all(dir.parent().expect("a cell folder has a parent"))?;
        sink.log(
            LogLevel::Info,
            format!(
                "matrix cell {}/{}: {} on {} ({} → {}), {} trials",
                n + 1,
                cells.len(),
                row.id,
                pairing.label,
                describe_role(&inference),
                describe_role(&verifiers[0]),
                config.trials
            ),
        );
        let req = RunRequest {
            experiment: row.experiment.clone(),
            trials: Some(config.trials),
            max_new_tokens: Some(config.max_new_tokens),
            // The experiment's minimum may exceed the matrix's budget.
            min_new_tokens: Some(
                spec.new_token_budget(&ws.config.prompts)
                    .0
                    .min(config.max_new_tokens),
            ),
            jobs,
            out: Some(dir.clone()),
            inference_role: Some(inference),
            verifier_roles: Some(verifiers),
            ..Default::default()
        };
        // A failed cell is reported and the matrix goes on: its finished trials still count.
        if let Err(e) = run_experiment(ws.clone(), req, sink.clone(), cancel.clone()).await {
            sink.log(
                LogLevel::Error,
                format!("matrix cell {} on {}: {e:#}", row.id, pairing.id),
            );
        }
        let report = report_of(&out)?;
        write_outputs(&out, &report)?;
    }
    let report = report_of(&out)?;
    write_outputs(&out, &report)?;
    Ok(report)
}

fn describe_role(role: &super::config::Role) -> String {
    format!("{}/{}", role.precision, role.device)
}

/// matrix.json and matrix.md (the PNGs are drawn by the caller: plot sits above this layer).
pub fn write_outputs(out: &Path, report: &MatrixReport) -> Result<()> {
    write_file_atomic(&out.join(REPORT_FILE), &serde_json::to_vec_pretty(report)?)?;
    write_file_atomic(
        &out.join(TABLE_FILE),
        super::matrix_output::markdown(report).as_bytes(),
    )
}
