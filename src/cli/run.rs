//! `run`: one experiment or `all`, headless, with Ctrl-C handled as the console's cancel.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::engine::events::CancelToken;
use crate::experiment::output::RunOutcome;
use crate::experiment::plan::{RunRequest, RunStep};
use crate::experiment::runner;
use crate::experiment::workspace::Workspace;

use super::*;

/// `expN` or `all` (every configured experiment, a user file's own ids included, in natural
/// order), refusing unknown names.
pub(super) fn experiments_named(ws: &Workspace, arg: &str) -> Result<Vec<String>> {
    if arg == "all" {
        return Ok(ws
            .config
            .experiments
            .experiment_names()
            .into_iter()
            .filter(|name| !crate::experiment::config::is_matrix_scenario(name))
            .map(str::to_string)
            .collect());
    }
    if ws.config.experiments.get(arg).is_none() {
        bail!(
            "unknown experiment `{arg}`; known: {}, all",
            ws.config.experiments.experiment_names().join(", ")
        );
    }
    Ok(vec![arg.to_string()])
}

pub(super) async fn run(global: &GlobalArgs, args: RunArgs) -> Result<ExitCode> {
    let ws = Arc::new(workspace(global)?);
    let names = experiments_named(&ws, &args.experiment)?;
    let step = match args.step {
        StepChoice::Both => RunStep::Both,
        StepChoice::Infer => RunStep::Infer,
        StepChoice::Verify => RunStep::Verify,
        StepChoice::Challenge => RunStep::Challenge,
        StepChoice::Open => RunStep::Open,
    };
    if step == RunStep::Infer && args.out.is_none() {
        bail!("--step infer needs --out DIR for the bundles");
    }
    // With `all`, each experiment writes to (and reads bundles from) its own folder inside
    // --out (--from).
    let per_experiment = |dir: &Option<PathBuf>, name: &str| {
        dir.as_ref().map(|d| {
            if args.experiment == "all" {
                d.join(name)
            } else {
                d.clone()
            }
        })
    };
    let out_of = |name: &str| per_experiment(&args.out, name);
    // Every output folder is checked before the first experiment spends any time.
    for out in names.iter().filter_map(|name| out_of(name)) {
        crate::util::check_new_or_empty_dir(&out, "--out")?;
    }
    let mut summaries = Vec::new();
    let mut all_held = true;
    // Ctrl-C (or SIGTERM) stops the run as the console's cancel does: the trials that finished
    // keep their files and an incomplete summary, the inference in progress is saved as a bundle.
    let cancel = CancelToken::new();
    let signal = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let watcher = tokio::spawn(cancel_on_signal(cancel.clone(), signal.clone()));
    for name in names {
        if cancel.is_cancelled() {
            break;
        }
        let req = RunRequest {
            experiment: name.clone(),
            trials: args.trials,
            verifiers: args.verifiers,
            max_new_tokens: args.max_tokens,
            min_new_tokens: args.min_tokens,
            seed: args.seed,
            gpu_profile: args.gpu,
            jobs: args.jobs,
            out: out_of(&name),
            step,
            mode: args.mode.map(VerifyMode::protocol),
            challenge_layers: args.challenge_layers,
            token_positions: args.token_positions,
            no_reference_prefill: args.no_reference_prefill,
            from: per_experiment(&args.from, &name),
            ..Default::default()
        };
        let (sink, printer) = crate::progress::sink_with_progress();
        let outcome = runner::run_experiment(ws.clone(), req, sink, cancel.clone()).await;
        let _ = printer.await;
        let outcome = outcome?;
        if cancel.is_cancelled() {
            report_interrupted(&name, step, &outcome);
            continue;
        }
        if let (Some(s), Some(p)) = (&outcome.summary, &outcome.summary_path) {
            eprintln!(
                "{name}: avg accept rate {:.4}, pass rate {:.2}, expected {:?} held in {:.0}% of trials — {}",
                s.aggregate.avg_accept_rate,
                s.aggregate.pass_rate,
                s.expected_verdict,
                100.0 * s.aggregate.expectation_rate,
                p.display()
            );
            all_held &= s.aggregate.expectation_rate == 1.0;
            summaries.push(s.clone());
        } else if step == RunStep::Infer {
            eprintln!("{name}: bundles written to {}", outcome.out_dir.display());
        }
    }
    watcher.abort();
    let signal = signal.load(std::sync::atomic::Ordering::SeqCst);
    if signal != 0 {
        // As a shell reports a process a signal ended, now that everything is saved.
        return Ok(ExitCode::from((128 + signal) as u8));
    }
    if args.json {
        let out = if summaries.len() == 1 {
            serde_json::to_string_pretty(&summaries[0])?
        } else {
            serde_json::to_string_pretty(&summaries)?
        };
        println!("{out}");
    }
    Ok(if all_held {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Waits for SIGINT or SIGTERM: the first cancels the run (which then saves what it has), a
/// second one ends the process at once.
pub(super) async fn cancel_on_signal(
    cancel: CancelToken,
    received: Arc<std::sync::atomic::AtomicI32>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        let number = tokio::select! {
            _ = int.recv() => 2,
            _ = term.recv() => 15,
        };
        if cancel.is_cancelled() {
            eprintln!("interrupted again: quitting without waiting");
            std::process::exit(128 + number);
        }
        received.store(number, std::sync::atomic::Ordering::SeqCst);
        eprintln!(
            "interrupted: stopping; the finished trials and the inference in progress are being \
             saved (interrupt again to quit at once)"
        );
        cancel.cancel();
    }
}

/// Says where an interrupted run's work is: its incomplete summary, its trial files and the
/// bundle of the inference that was stopped.
pub(super) fn report_interrupted(name: &str, step: RunStep, outcome: &RunOutcome) {
    let dir = &outcome.out_dir;
    if !dir.exists() {
        eprintln!("{name}: interrupted before anything was computed; nothing was written");
        return;
    }
    let bundles: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest.json").is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    match (&outcome.summary, &outcome.summary_path) {
        (Some(s), Some(path)) => eprintln!(
            "{name}: interrupted after {} of {} trial(s); their results and a summary marked \
             incomplete are in {}",
            s.trials,
            s.planned_trials.unwrap_or(s.trials),
            path.display()
        ),
        _ if step == RunStep::Infer => {
            eprintln!(
                "{name}: interrupted; the bundles written are in {}",
                dir.display()
            )
        }
        _ => eprintln!(
            "{name}: interrupted before any trial finished, so there is no summary; what was \
             computed is in {}",
            dir.display()
        ),
    }
    let mut bundles = bundles;
    bundles.sort();
    for bundle in bundles {
        eprintln!("{name}: bundle kept: {bundle}");
    }
}
