//! `verillm-tui matrix`: every cheat and control of configs/matrix.yaml on every pairing, then
//! matrix.json, matrix.md and the two PNGs (docs/policy.md "The cheat matrix").

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use clap::Args;

use super::GlobalArgs;
use crate::engine::events::CancelToken;
use crate::experiment::matrix::MatrixConfig;
use crate::experiment::matrix_run::{default_matrix_dir, run_matrix, write_outputs};

#[derive(Args, Debug)]
pub struct MatrixArgs {
    /// Trials per cell (default: the matrix file's).
    #[arg(long)]
    pub trials: Option<usize>,
    /// Pairing ids to run, comma-separated (default: all of the matrix file's).
    #[arg(long)]
    pub pairings: Option<String>,
    /// Cheat row ids to run, comma-separated (controls always run: they calibrate).
    #[arg(long)]
    pub cheats: Option<String>,
    /// New tokens per trial at most (default: the matrix file's).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Results folder, new or empty (default: <data>/matrix/matrix-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Trials run side by side within a cell.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// A matrix file instead of <config dir>/matrix.yaml or the built-in one.
    #[arg(long, value_name = "FILE")]
    pub matrix: Option<PathBuf>,
    /// Print matrix.json on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// Run nothing: judge the trials already in this matrix folder again (as they are now,
    /// finished or not) and rewrite its matrix.json, matrix.md and PNGs.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["trials", "pairings", "cheats", "max_tokens", "out", "matrix"])]
    pub from: Option<PathBuf>,
}

/// matrix.json, matrix.md, both PNGs, and the table on stderr.
fn finish(
    out: &std::path::Path,
    report: &crate::experiment::matrix::MatrixReport,
    json: bool,
) -> Result<()> {
    write_outputs(out, report)?;
    if report.cells.iter().any(|c| !c.trials.is_empty()) {
        crate::plot::matrix::draw_matrix(report, &out.join("matrix.png"))?;
        crate::plot::matrix::draw_detection_curves(report, &out.join("tokens_to_detection.png"))?;
    }
    eprintln!("{}", crate::experiment::matrix_output::markdown(report));
    eprintln!("matrix written to {}", out.display());
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(())
}

pub async fn matrix(global: &GlobalArgs, args: MatrixArgs) -> Result<ExitCode> {
    if let Some(dir) = &args.from {
        let report = crate::experiment::matrix_run::report_of(dir)?;
        finish(dir, &report, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let ws = Arc::new(super::workspace(global)?);
    let config_dir = global
        .config_dir
        .clone()
        .or_else(|| std::env::var_os(crate::experiment::config::CONFIG_DIR_ENV).map(PathBuf::from));
    let (mut config, file) = MatrixConfig::load(args.matrix.as_deref(), config_dir.as_deref())?;
    config.select(args.pairings.as_deref(), args.cheats.as_deref())?;
    if let Some(t) = args.trials {
        config.trials = t;
    }
    if let Some(t) = args.max_tokens {
        config.max_new_tokens = t;
    }
    anyhow::ensure!(
        args.jobs >= 1,
        "--jobs {}: at least one trial must run at a time",
        args.jobs
    );
    config.validate(&|id| ws.config.experiments.get(id).cloned(), &file)?;
    let out = match &args.out {
        Some(dir) => {
            crate::util::check_new_or_empty_dir(dir, "--out")?;
            std::fs::create_dir_all(dir).map_err(|e| anyhow!("creating {}: {e}", dir.display()))?;
            dir.clone()
        }
        None => default_matrix_dir(&ws.data_dir)?,
    };
    eprintln!(
        "matrix: {} rows × {} pairings, {} trials per cell, results in {}",
        config.rows.len(),
        config.pairings.len(),
        config.trials,
        out.display()
    );
    let cancel = CancelToken::new();
    let signal = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let watcher = tokio::spawn(super::run::cancel_on_signal(cancel.clone(), signal.clone()));
    let (sink, printer) = crate::progress::sink_with_progress();
    let report = run_matrix(ws, config, file, out.clone(), args.jobs, sink, cancel).await;
    let _ = printer.await;
    watcher.abort();
    let report = report?;
    finish(&out, &report, args.json)?;
    let signal = signal.load(std::sync::atomic::Ordering::SeqCst);
    if signal != 0 {
        return Ok(ExitCode::from((128 + signal) as u8));
    }
    Ok(ExitCode::SUCCESS)
}
