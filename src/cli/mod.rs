//! The command line: `verillm-tui` alone opens the TUI; subcommands run headless.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use clap::Parser;

mod args;
mod bundles;
mod matrix;
mod run;
mod segment_verify;
mod slurm;

pub use args::*;
use run::{experiments_named, run};

use crate::engine::events::CancelToken;
use crate::experiment::config::ConfigSet;
use crate::experiment::config::Role;
use crate::experiment::workspace::Workspace;
use crate::model::device::DeviceProfile;
use crate::model::embedded::{model_dir, refetch_embedded_model};
use crate::model::weights::Precision;
use crate::record::results::TrialVerdict;

/// Directories from flags, then environment, then platform defaults.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("VERILLM_DATA_DIR") {
        return PathBuf::from(d);
    }
    match directories::ProjectDirs::from("org", "verillm", "verillm-tui") {
        Some(dirs) => dirs.data_dir().to_path_buf(),
        None => PathBuf::from("data"),
    }
}

pub fn workspace(global: &GlobalArgs) -> Result<Workspace> {
    let config_dir = global.config_dir();
    let config = ConfigSet::load(config_dir.as_deref()).map_err(|e| anyhow!("{e}"))?;
    Ok(Workspace::new(
        config,
        model_dir(global.model_dir.as_deref()),
        data_dir(global.data_dir.as_deref()),
    ))
}

/// Sets the CPU thread count before any compute thread exists (candle sizes its pool from
/// RAYON_NUM_THREADS). The default is one thread per physical core but one: SMT siblings add
/// little to matmuls, and candle's pool synchronises with spin barriers, which collapse when a
/// core they count on is busy with anything else (the console's own drawing included) —
/// measured on 2 vCPUs with one core busy: native decode 3.4 tok/s with 2 threads, 25.6 with 1
/// (README, "Threads").
fn configure_threads(flag: Option<usize>) {
    let chosen = match flag {
        Some(n) => n.max(1),
        None if std::env::var_os("RAYON_NUM_THREADS").is_some() => return,
        None => physical_cores().saturating_sub(1).max(1),
    };
    // SAFETY of set_var: called at the start of main, before any other thread is spawned.
    std::env::set_var("RAYON_NUM_THREADS", chosen.to_string());
}

/// Physical cores: distinct (physical id, core id) pairs of /proc/cpuinfo on Linux; elsewhere
/// the logical CPUs.
fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::HashSet::new();
    let mut package = "";
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => package = value.trim(),
            "core id" => {
                cores.insert((package.to_string(), value.trim().to_string()));
            }
            _ => {}
        }
    }
    // A container may see fewer CPUs than the host's cores listed.
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Errors are one clear message: library errors (candle's) capture a backtrace whenever
    // RUST_BACKTRACE is set, and print it as part of their text. Only --debug asks for them.
    // Set before any thread exists.
    let debug = cli.global.debug;
    std::env::set_var("RUST_LIB_BACKTRACE", if debug { "1" } else { "0" });
    if !matches!(cli.command, None | Some(Command::Tui)) {
        // A headless command whose reader went away (`verillm-tui report … | head -1`) ends
        // quietly, as Unix tools do, instead of panicking on the broken pipe. The console keeps
        // SIGPIPE ignored: it writes to its terminal, and restores it before it exits.
        // SAFETY: called before any thread exists; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    configure_threads(cli.global.threads);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(dispatch(cli));
    // Blocking engine tasks of a run that was cancelled by quitting must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(code) => code,
        Err(e) if debug => {
            eprintln!("error: {}", crate::util::escape_controls(&format!("{e:?}")));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", crate::util::escape_controls(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Exit status for a verdict: 0 PASS, 3 REJECT (1 is left for errors).
fn verdict_code(v: TrialVerdict) -> ExitCode {
    match v {
        TrialVerdict::Pass => ExitCode::SUCCESS,
        TrialVerdict::Reject => ExitCode::from(3),
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        None | Some(Command::Tui) => tui(&global).await,
        Some(Command::FetchModel) => {
            let path = refetch_embedded_model(&model_dir(global.model_dir.as_deref()))?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Devices) => {
            for p in crate::model::device::available_profiles() {
                println!("{p}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Tokenize(args)) => {
            let ws = workspace(&global)?;
            let m = ws.load(&Role {
                model: args.model,
                precision: Precision::Full,
                device: DeviceProfile::CPU_F32,
            })?;
            println!(
                "{}",
                serde_json::to_string(&m.tokenizer.encode(&args.text)?)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Request(args)) => bundles::request(&global, args).await,
        Some(Command::Infer(args)) => bundles::infer(&global, args).await,
        Some(Command::Verify(args)) => bundles::verify(&global, args).await,
        Some(Command::Challenge(args)) => bundles::challenge(args),
        Some(Command::Open(args)) => bundles::open(args),
        Some(Command::Run(args)) if args.slurm.slurm => slurm::run(&global, args).await,
        Some(Command::Run(args)) => run(&global, args).await,
        Some(Command::SlurmTask(args)) => slurm::task(&global, args).await,
        Some(Command::Bench(args)) => bench(&global, args).await,
        Some(Command::Optimize(args)) => optimize(&global, args).await,
        Some(Command::Matrix(args)) => matrix::matrix(&global, args).await,
        Some(Command::Plot(args)) => {
            let out = args
                .out
                .unwrap_or_else(|| data_dir(global.data_dir.as_deref()).join("plots"));
            for p in crate::plot::plot_files(&args.files, &out)? {
                println!("{}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Report(args)) => {
            crate::experiment::report::print_rows(&args.paths, args.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Doctor) => {
            let config_dir = global.config_dir();
            let checks = crate::doctor::run_checks(
                config_dir.as_deref(),
                &model_dir(global.model_dir.as_deref()),
                &data_dir(global.data_dir.as_deref()),
            );
            Ok(if crate::doctor::print_checks(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The main job: the interactive console.
async fn tui(global: &GlobalArgs) -> Result<ExitCode> {
    Ok(
        match crate::console::run_console(workspace(global)?).await? {
            crate::tui::Ending::Quit => ExitCode::SUCCESS,
            // As a shell reports a process a signal ended, so scripts can tell a kill from a quit.
            crate::tui::Ending::Signal(signal) => ExitCode::from((128 + signal) as u8),
        },
    )
}

async fn bench(global: &GlobalArgs, args: BenchArgs) -> Result<ExitCode> {
    let ws = Arc::new(workspace(global)?);
    let sizes = args.ratio_at.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::bench::run_bench(&ws, &sizes, args.long_prompt, args.device, true)
    })
    .await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::bench::print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

async fn optimize(global: &GlobalArgs, args: OptimizeArgs) -> Result<ExitCode> {
    let ws = Arc::new(workspace(global)?);
    let names = experiments_named(&ws, &args.experiment)?;
    if args.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let (sink, printer) = crate::progress::sink_with_progress();
    let outcome = crate::experiment::optimize::optimize(
        ws,
        names,
        args.trials,
        args.max_tokens,
        args.gpu,
        sink,
        CancelToken::new(),
    )
    .await;
    let _ = printer.await;
    let outcome = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.report)?);
    } else {
        print!(
            "{}",
            crate::experiment::optimize::format_report(&outcome.report)
        );
        println!(
            "{}",
            crate::experiment::optimize_holdout::format_held_out(&outcome.held_out)
        );
        println!("\n{}", outcome.report.recommended_yaml);
    }
    eprintln!(
        "wrote {} and {}",
        outcome.json_path.display(),
        outcome.yaml_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::plan::RunRequest;
    use crate::experiment::runner;
    use crate::tui::Backend;

    /// A user's experiments.yaml replaces the built-in one, ids of its own included: `all` and
    /// the console's picker must offer what it defines, not a fixed exp1..exp5.
    #[test]
    fn all_and_the_console_offer_every_configured_experiment() {
        let dir = tempfile::tempdir().unwrap();
        let experiment = |name: &str| {
            format!(
                "  {name}:\n    description: {name} test\n    \
                 inference: {{model: smollm2-135m, precision: full, device: cpu}}\n    \
                 verifiers: [{{precision: full, device: cpu}}]\n    \
                 cutoff: 0.9\n    expected: PASS\n    trials: 1\n    prompts: {{category: short}}\n"
            )
        };
        let yaml = format!(
            "experiments:\n{}{}{}",
            experiment("mine"),
            experiment("exp10"),
            experiment("exp2")
        );
        std::fs::write(dir.path().join("experiments.yaml"), yaml).unwrap();
        let config = ConfigSet::load(Some(dir.path())).unwrap();
        let ws = Workspace::new(config, dir.path().into(), dir.path().join("data"));

        let expected = ["exp2", "exp10", "mine"];
        assert_eq!(experiments_named(&ws, "all").unwrap(), expected);
        let console = crate::console::WorkspaceBackend::new(Arc::new(ws));
        let offered: Vec<String> = console.experiments().into_iter().map(|e| e.name).collect();
        assert_eq!(offered, expected);
    }

    /// After a run whose roles were edited (as the console allows: here inference at q4_1,
    /// which exp1's inferencer does not run), the command the log suggests for the cancelled
    /// trial's bundle is one that verifies it, not one that refuses it.
    #[test]
    fn the_cancel_hint_verifies_a_bundle_whose_roles_were_edited() {
        use crate::engine::events::{EngineEvent, EventSink};
        let data = tempfile::tempdir().unwrap();
        let gguf = crate::testutil::embedded_gguf();
        let model_dir = gguf.parent().unwrap().to_path_buf();
        let ws = Arc::new(Workspace::new(
            ConfigSet::builtin().unwrap(),
            model_dir.clone(),
            data.path().into(),
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let hint = runtime.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let cancel = CancelToken::new();
            let req = RunRequest {
                experiment: "exp1".into(),
                trials: Some(1),
                max_new_tokens: Some(64),
                min_new_tokens: Some(64),
                jobs: 1,
                inference_role: Some(Role {
                    model: "smollm2-135m".into(),
                    precision: "q4_1".parse().unwrap(),
                    device: DeviceProfile::CPU_F32,
                }),
                ..Default::default()
            };
            let run = tokio::spawn(runner::run_experiment(
                ws,
                req,
                EventSink::new(tx),
                cancel.clone(),
            ));
            let mut hint = None;
            while let Some(event) = rx.recv().await {
                match event {
                    EngineEvent::Token { index, .. } if index >= 3 => cancel.cancel(),
                    EngineEvent::Log { message, .. } if message.contains("checks it") => {
                        hint = Some(message)
                    }
                    _ => {}
                }
            }
            run.await.unwrap().unwrap();
            hint.expect("a hint for the cancelled trial's bundle")
        });
        let command = hint.split('`').nth(1).unwrap();
        assert!(command.starts_with("verillm-tui verify "), "{hint}");
        let mut words: Vec<String> = command.split_whitespace().map(String::from).collect();
        words.extend(["--verifiers".into(), "1".into(), "--model-dir".into()]);
        words.push(model_dir.to_string_lossy().into_owned());
        let cli = Cli::try_parse_from(&words).unwrap();
        // A verdict (exit 0 or 3), not a refusal of the bundle.
        let code = runtime
            .block_on(dispatch(cli))
            .unwrap_or_else(|e| panic!("{hint}: {e:#}"));
        assert!(
            code == ExitCode::SUCCESS || code == ExitCode::from(3),
            "{code:?}"
        );
    }
}
