//! `run EXP --slurm` (submit a run as Slurm array jobs), `run EXP --slurm --resume RUN_DIR`
//! (submit what is missing) and the hidden `slurm-task` the job scripts run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use clap::{Args, ValueEnum};

use super::{data_dir, workspace, GlobalArgs, RunArgs, StepChoice};
use crate::experiment::output::{new_run_dir, utc_stamp};
use crate::experiment::plan::{plan_trials, RunRequest};
use crate::experiment::slurm::scripts::{experiment_scripts, write_scripts};
use crate::experiment::slurm::submit::{calls_for, dry_run_lines, still_queued, submit};
use crate::experiment::slurm::tasks::{
    collect_task, infer_task, verify_task, TaskOutcome, ACCOUNTING_SETTLE,
};
use crate::experiment::slurm::{watch, JobFolder, JobPlan, SlurmOptions, SLURM_FORMAT_VERSION};
use crate::model::embedded::model_dir;

/// `run` flags for Slurm (docs/slurm.md).
#[derive(Args, Debug, Clone, Default)]
pub struct SlurmArgs {
    /// Submit the run to Slurm with sbatch: an array of inference tasks (one per trial), a
    /// dependent array of verification tasks, one collect job writing summary.json.
    #[arg(long)]
    pub slurm: bool,
    /// Slurm partition of every job.
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// Generic resources of each inference and verification task, e.g. gpu:1.
    #[arg(long, requires = "slurm")]
    pub gres: Option<String>,
    /// Time limit of each task (sbatch --time: 30, 1:00:00, 1-0).
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// Slurm account to charge.
    #[arg(long, requires = "slurm")]
    pub account: Option<String>,
    /// Array tasks running at once (sbatch --array=…%K).
    #[arg(long, value_name = "K", requires = "slurm")]
    pub array_parallel: Option<usize>,
    /// Print the job scripts and sbatch commands; write and submit nothing.
    #[arg(long, requires = "slurm")]
    pub dry_run: bool,
    /// Submit the jobs held (sbatch --hold); `scontrol release JOBID…` starts them.
    #[arg(long, requires = "slurm")]
    pub hold: bool,
    /// A run folder submitted earlier: submit only its trials without a result (inference only
    /// for those without a bundle), then collect again.
    #[arg(long, value_name = "RUN_DIR", requires = "slurm")]
    pub resume: Option<PathBuf>,
}

/// What a job script asks of the binary.
#[derive(Args, Debug)]
pub struct SlurmTaskArgs {
    #[arg(value_enum)]
    pub stage: TaskStage,
    /// The run folder (RUN_DIR of the job scripts).
    pub run_dir: PathBuf,
    /// Trial number (default: SLURM_ARRAY_TASK_ID).
    #[arg(long)]
    pub trial: Option<usize>,
    /// Node-local scratch folder for work files (default: the system's temporary folder).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum TaskStage {
    Infer,
    Verify,
    Collect,
}

fn options_of(args: &SlurmArgs) -> SlurmOptions {
    SlurmOptions {
        partition: args.partition.clone(),
        gres: args.gres.clone(),
        time: args.time.clone(),
        account: args.account.clone(),
        array_parallel: args.array_parallel,
        hold: args.hold,
    }
}

/// `run … --slurm`.
pub async fn run(global: &GlobalArgs, args: RunArgs) -> Result<ExitCode> {
    ensure!(
        args.step == StepChoice::Both,
        "--slurm runs both steps (inference tasks, then verification tasks); drop --step"
    );
    ensure!(
        args.from.is_none(),
        "--from is for --step verify, not --slurm"
    );
    ensure!(
        args.jobs == 1,
        "--jobs is for local runs; on Slurm every trial is its own task (--array-parallel K \
         limits how many run at once)"
    );
    ensure!(
        !args.json,
        "--json prints a local run's summary; a Slurm run's summary is written by its collect \
         job (RUN_DIR/summary.json)"
    );
    let slurm = &args.slurm;
    let options = options_of(slurm);
    options.validate()?;
    if let Some(dir) = &slurm.resume {
        return resume(global, &args, dir, options);
    }
    let ws = workspace(global)?;
    let names = super::experiments_named(&ws, &args.experiment)?;
    let binary = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding this binary's absolute path")?;
    let models = std::path::absolute(model_dir(global.model_dir.as_deref()))?;
    let config_source = global
        .config_dir()
        .or_else(crate::experiment::config::user_config_dir)
        .filter(|d| d.is_dir());
    let data = data_dir(global.data_dir.as_deref());
    for name in names {
        let req = RunRequest {
            experiment: name.clone(),
            trials: args.trials,
            verifiers: args.verifiers,
            max_new_tokens: args.max_tokens,
            min_new_tokens: args.min_tokens,
            seed: args.seed,
            gpu_profile: args.gpu,
            jobs: 1,
            mode: args.mode.map(super::VerifyMode::protocol),
            challenge_layers: args.challenge_layers,
            token_positions: args.token_positions,
            no_reference_prefill: args.no_reference_prefill,
            ..Default::default()
        };
        // Everything a task would refuse is refused here, before anything is submitted.
        let plans = plan_trials(&ws, &req)?;
        let trials = plans.len();
        let plan = JobPlan {
            format_version: SLURM_FORMAT_VERSION,
            experiment: name.clone(),
            trials,
            verifiers: args.verifiers,
            max_new_tokens: args.max_tokens,
            min_new_tokens: args.min_tokens,
            seed: args.seed,
            gpu: args.gpu.map(|g| g.to_string()),
            binary: binary.clone(),
            model_dir: models.clone(),
            threads: global.threads,
            options: options.clone(),
            created_at: crate::util::unix_now(),
            protocol: crate::experiment::slurm::segment::ProtocolOptions::of(&req),
        };
        let out = args.out.as_ref().map(|o| {
            if args.experiment == "all" {
                o.join(&name)
            } else {
                o.clone()
            }
        });
        if slurm.dry_run {
            let root = match &out {
                Some(o) => std::path::absolute(o)?,
                None => std::path::absolute(
                    data.join(&name)
                        .join(format!("run-{}", utc_stamp(plan.created_at))),
                )?,
            };
            print_dry_run(
                &JobFolder::new(root),
                &plan,
                &(0..trials).collect::<Vec<_>>(),
            );
            continue;
        }
        // Removed again if nothing could be written into it.
        let guard = match &out {
            Some(o) => crate::util::create_empty_dir(o, "--out")?,
            None => crate::util::OutputDir::created(new_run_dir(&data, &name)?),
        };
        let root = std::path::absolute(guard.path())?;
        let folder = JobFolder::new(&root);
        folder.create(&plan, config_source.as_deref())?;
        write_scripts(&plan, &folder)?;
        let all: Vec<usize> = (0..trials).collect();
        let submission =
            submit(&folder, &plan, &calls_for(&folder, &all), &all).with_context(|| {
                format!(
                    "the job folder {} is written; `run {name} --slurm --resume {}` submits it \
                 once sbatch works",
                    root.display(),
                    root.display()
                )
            })?;
        let _ = watch::register(&data, &root);
        print_submitted(&name, &folder, &submission);
    }
    Ok(ExitCode::SUCCESS)
}

fn resume(
    global: &GlobalArgs,
    args: &RunArgs,
    dir: &Path,
    options: SlurmOptions,
) -> Result<ExitCode> {
    let root = std::path::absolute(dir)?;
    let folder = JobFolder::new(&root);
    let mut plan = folder
        .read_plan()
        .with_context(|| format!("--resume {}: not a run folder of --slurm", root.display()))?;
    ensure!(
        plan.experiment == args.experiment,
        "--resume {}: that run is of {}, not {}",
        root.display(),
        plan.experiment,
        args.experiment
    );
    // The resubmission is held or limited as asked now; the rest of the plan stays as it was.
    plan.options.hold = options.hold;
    if options.array_parallel.is_some() {
        plan.options.array_parallel = options.array_parallel;
    }
    // The scripts are written again by this binary, which the tasks then run: nothing that was
    // left in the folder (an edited script, another binary named in plan.json) is executed.
    let binary = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding this binary's absolute path")?;
    if binary != plan.binary {
        eprintln!(
            "note: the run was submitted by {}; its missing trials run {}",
            plan.binary.display(),
            binary.display()
        );
        plan.binary = binary;
    }
    let missing = folder.missing_trials(&plan);
    let calls = calls_for(&folder, &missing);
    if args.slurm.dry_run {
        print_dry_run(&folder, &plan, &missing);
        return Ok(ExitCode::SUCCESS);
    }
    let submissions = folder.read_submissions()?;
    let queued = still_queued(&submissions)?;
    ensure!(
        queued.is_empty(),
        "--resume {}: jobs {} of this run are still queued or running; wait for them (or \
         scancel them) first, so that no trial is run twice",
        root.display(),
        queued.join(", ")
    );
    crate::experiment::slurm::write_json(&folder.plan_path(), &plan)?;
    write_scripts(&plan, &folder)?;
    let submission = submit(&folder, &plan, &calls, &missing)?;
    let _ = watch::register(&data_dir(global.data_dir.as_deref()), &root);
    if missing.is_empty() {
        eprintln!(
            "{}: every trial has its result; collecting again (job {})",
            plan.experiment, submission.collect_job
        );
    } else {
        print_submitted(&plan.experiment, &folder, &submission);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_dry_run(folder: &JobFolder, plan: &JobPlan, trials: &[usize]) {
    for (stage, spec) in experiment_scripts(plan, folder) {
        println!("# ==> {} <==", folder.script_path(stage).display());
        println!("{}", spec.render());
    }
    println!("# ==> submission (dry run: nothing written, nothing submitted) <==");
    for line in dry_run_lines(folder, plan, &calls_for(folder, trials)) {
        println!("{line}");
    }
}

fn print_submitted(
    name: &str,
    folder: &JobFolder,
    submission: &crate::experiment::slurm::submit::Submission,
) {
    let mut jobs = Vec::new();
    if let Some(infer) = &submission.infer {
        jobs.push(format!("infer {}", infer.job_id));
    }
    for verify in &submission.verify {
        jobs.push(format!("verify {}", verify.job_id));
    }
    jobs.push(format!("collect {}", submission.collect_job));
    eprintln!(
        "{name}: submitted {} trial(s) as jobs {} — {}",
        submission.trials.len(),
        jobs.join(", "),
        folder.root.display()
    );
    eprintln!(
        "  watch: squeue, or the console's results view (r); summary: {}",
        folder.summary_path().display()
    );
    println!("{}", folder.root.display());
}

/// `slurm-task STAGE RUN_DIR`: what a job script runs.
pub async fn task(global: &GlobalArgs, args: SlurmTaskArgs) -> Result<ExitCode> {
    let ws = Arc::new(workspace(global)?);
    let folder = JobFolder::new(&args.run_dir);
    let trial = || -> Result<usize> {
        match args.trial {
            Some(t) => Ok(t),
            None => {
                let id = std::env::var("SLURM_ARRAY_TASK_ID").context(
                    "no --trial and no SLURM_ARRAY_TASK_ID: run this as a Slurm array task",
                )?;
                id.parse()
                    .with_context(|| format!("SLURM_ARRAY_TASK_ID {id:?}: not a trial number"))
            }
        }
    };
    let outcome = match args.stage {
        TaskStage::Infer => {
            let trial = trial()?;
            let scratch = match &args.scratch {
                Some(s) => s.clone(),
                None => std::env::temp_dir(),
            };
            let (sink, printer) = crate::progress::sink_with_progress();
            let outcome = infer_task(ws, &folder, trial, &scratch, sink).await;
            let _ = printer.await;
            outcome?
        }
        TaskStage::Verify => {
            let trial = trial()?;
            let (sink, printer) = crate::progress::sink_with_progress();
            let outcome = verify_task(ws, &folder, trial, sink).await;
            let _ = printer.await;
            outcome?
        }
        TaskStage::Collect => {
            let report = collect_task(&ws, &folder, ACCOUNTING_SETTLE)?;
            eprintln!(
                "{}: {} of {} trials landed; summary: {}",
                report.experiment,
                report.landed.len(),
                report.planned_trials,
                folder.summary_path().display()
            );
            for missing in &report.missing {
                let states: Vec<String> = missing
                    .tasks
                    .iter()
                    .map(|t| format!("{} {} {} ({})", t.stage, t.job_id, t.state, t.source))
                    .collect();
                eprintln!(
                    "  trial {} missing (no {}): {}",
                    missing.trial,
                    missing.lacking,
                    if states.is_empty() {
                        "never submitted".to_string()
                    } else {
                        states.join(", ")
                    }
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match outcome {
        TaskOutcome::Wrote(path) => eprintln!("wrote {}", path.display()),
        TaskOutcome::AlreadyThere(path) => {
            eprintln!("{} is already there: nothing run again", path.display())
        }
    }
    Ok(ExitCode::SUCCESS)
}
