//! The command line: `verillm-tui` alone opens the TUI; subcommands run headless.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod bundles;
mod matrix;
mod slurm;

use crate::engine::events::CancelToken;
use crate::engine::sampling::SamplingParams;
use crate::experiment::config::{ConfigSet, LayerSelection};
use crate::experiment::results::TrialVerdict;
use crate::experiment::runner::{self, Role, RunRequest, RunStep, Workspace};
use crate::model::device::DeviceProfile;
use crate::model::embedded::{model_dir, refetch_embedded_model, EMBEDDED_MODEL_ID};
use crate::model::weights::Precision;

#[derive(Parser, Debug)]
#[command(
    name = "verillm-tui",
    version,
    about = "Lab console for verifiable LLM inference (VeriLLM): record hidden states while decoding, verify them with one prefill."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Configuration directory (models.yaml, experiments.yaml, prompts.yaml); also VERILLM_CONFIG_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Model cache directory; also VERILLM_MODEL_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Where results and logs are written; also VERILLM_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Compute threads for candle's CPU kernels (default: RAYON_NUM_THREADS, else one per
    /// physical core but one, left for the console and other work: candle's thread pool
    /// spin-waits, and collapses when a core it counts on is busy). On an idle machine all
    /// cores are faster: see the README's "Threads".
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Show the full error chain with backtraces (also set by RUST_LIB_BACKTRACE=1); without it
    /// an error is one message, whatever RUST_BACKTRACE says.
    #[arg(long, global = true)]
    pub debug: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the interactive console (the default).
    Tui,
    /// Write a request (model, prompt, sampling, seed, limits, random nonce) for a provider.
    Request(RequestArgs),
    /// Generate tokens, record hidden states, and write an inference bundle.
    Infer(InferArgs),
    /// Verify an inference bundle made here or on another machine.
    Verify(VerifyArgs),
    /// Draw a verifier's challenge for a committed bundle (docs/commitment.md).
    Challenge(ChallengeArgs),
    /// Open a bundle's private store for a challenge: the challenged columns with Merkle proofs.
    Open(OpenArgs),
    /// Run an experiment (an id from experiments.yaml: exp1..exp5 built in; or all) end to end.
    Run(RunArgs),
    /// Print the token ids of a text as a JSON array.
    Tokenize(TokenizeArgs),
    /// Fetch the embedded default model into the model cache.
    FetchModel,
    /// List the device profiles this build and machine offer.
    Devices,
    /// Measure decode/prefill speed, verification overhead and memory on this machine.
    Bench(BenchArgs),
    /// Run honest and cheating scenarios and derive thresholds from the measured separation.
    Optimize(OptimizeArgs),
    /// Every cheat and control of matrix.yaml on every pairing: matrix.json, a Markdown table
    /// and two PNGs (detection rate, tokens to detection, false alarms, with intervals).
    Matrix(matrix::MatrixArgs),
    /// Draw PNG figures from result, summary or optimization JSON files.
    Plot(PlotArgs),
    /// One table row per run (accept rate, verdicts, drift, speed) from run summaries.
    Report(ReportArgs),
    /// Check that this build, machine, model cache and configuration are ready.
    Doctor,
    /// One task of a run submitted with `run --slurm` (what its job scripts run).
    #[command(hide = true)]
    SlurmTask(slurm::SlurmTaskArgs),
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Device profile to measure (e.g. cpu, cuda:0:f16).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceProfile,
    /// Output lengths at which verification time / inference time is measured.
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    pub ratio_at: Vec<usize>,
    /// Prompt length whose inference prefill is timed and its peak memory measured (0 skips).
    #[arg(long, default_value_t = 8000, value_name = "TOKENS")]
    pub long_prompt: usize,
}

#[derive(Args, Debug)]
pub struct OptimizeArgs {
    /// An experiment id from experiments.yaml (exp1..exp5 built in), or all.
    #[arg(long, default_value = "all")]
    pub experiment: String,
    #[arg(long, default_value_t = 2)]
    pub trials: usize,
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Device profile for every role that has a gpu_device (see `run --gpu`).
    #[arg(long, value_parser = parse_device)]
    pub gpu: Option<DeviceProfile>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// summary.json files, or folders searched for them (e.g. a data folder).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print the rows as JSON instead of a Markdown table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// trial_*.json, summary.json or optimization.json files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output directory (default: <data>/plots).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// Registry id, .gguf path, Hugging Face directory, or hf:org/name.
    #[arg(long, default_value = EMBEDDED_MODEL_ID)]
    pub model: String,
    #[arg(long, default_value = "full", value_parser = parse_precision)]
    pub precision: Precision,
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceProfile,
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present_any = ["prompt_file", "request"]
    )]
    pub prompt: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Serve this request (`verillm-tui request`): model, prompt, sampling, seed, limits and
    /// nonce come from it.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "prompt", "prompt_file", "raw", "max_tokens", "min_tokens", "temperature", "top_p",
        "top_k", "repetition_penalty", "seed",
    ])]
    pub request: Option<PathBuf>,
    /// Send the text as it is, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Hidden-state indices to record: `every:8`, `all`, or a list like `8,16,24`.
    #[arg(long, default_value = "every:8", value_parser = parse_layers)]
    pub layers: LayerSelection,
    /// Bundle directory to write (new or empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Keep no commitment store (no `states/`, no root): the bundle can then only be verified
    /// in full mode. For measuring the store's overhead.
    #[arg(long)]
    pub no_store: bool,
}

/// The sampling rule's flags (docs/sampling.md), shared by `infer` and `request`.
#[derive(Args, Debug)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub min_tokens: usize,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.1)]
    pub repetition_penalty: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            min_new_tokens: self.min_tokens,
            max_new_tokens: self.max_tokens,
        }
    }
}

#[derive(Args, Debug)]
pub struct RequestArgs {
    /// Registry id, .gguf path, Hugging Face directory, or hf:org/name.
    #[arg(long, default_value = EMBEDDED_MODEL_ID)]
    pub model: String,
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    pub prompt: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Send the text as it is, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Request file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Bundle directory (manifest.json + hidden_states.safetensors).
    pub bundle: PathBuf,
    /// The request the bundle must answer: the verifier renders its prompt, takes the sampling
    /// parameters from it and rejects a bundle whose prompt, sampling, seed, limits, model or
    /// nonce differ. Without it the bundle's own prompt and sampling are taken at their word
    /// (`request_checked: false`).
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    /// Check hidden states only: the prefill stops after the last sampled layer and no token
    /// is held to the sampling rule (the cheaper, weaker check; results say so).
    #[arg(long, conflicts_with = "request")]
    pub state_only: bool,
    #[arg(long, default_value_t = 3)]
    pub verifiers: usize,
    /// Model to verify with (default: the bundle's model name).
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceProfile,
    #[arg(long, default_value = "full", value_parser = parse_precision)]
    pub precision: Precision,
    /// Built-in thresholds: precision-aware (the default) or the seed project's fixed ones.
    #[arg(long, value_enum, default_value_t = PolicyChoice::PrecisionAware)]
    pub policy: PolicyChoice,
    /// Judge as this experiment of experiments.yaml does: its policy thresholds (e.g. those
    /// `optimize` wrote), its cutoff and the layers it checks, unless --cutoff/--layers say
    /// otherwise.
    #[arg(long, conflicts_with = "policy")]
    pub experiment: Option<String>,
    /// With --experiment: the profile the bundle's inference ran on when it was made with
    /// `run --gpu PROFILE` (e.g. cuda:0:bf16), so that its dtype is admitted too. This is the
    /// verifier's decision, not the bundle's: a bf16/f16 profile admits that precision tier,
    /// which cannot tell 8-bit weights from honest ones (docs/policy.md).
    #[arg(long, value_parser = parse_device, requires = "experiment")]
    pub gpu: Option<DeviceProfile>,
    /// Hidden-state indices the bundle must have committed (`every:8`, `all`, `8,16,24`): the
    /// verifier decides what is checked, not the bundle. Every layer it holds is checked.
    /// Default: the experiment's (--experiment), else every:8, what `infer` records.
    #[arg(long, value_parser = parse_layers)]
    pub layers: Option<LayerSelection>,
    /// Accept the bundle's claim of `native` precision (the model's own quantized weights on
    /// quantized kernels, which round activations) and judge it in the bf16 tier. Without it
    /// that claim, one string in an untrusted file, is judged by the declared dtype alone.
    #[arg(long)]
    pub native_inference: bool,
    /// Admit a bundle that declares bf16 inference. Its tier tolerates the most drift (token
    /// margins down to −2 logits, docs/policy.md), within which a cheater may pick among
    /// near-top tokens: the verifier admits it, never the bundle's dtype alone.
    /// (`--experiment ID` admits what that experiment's inferencer runs instead.)
    #[arg(long)]
    pub admit_bf16: bool,
    /// Accept-rate cutoff a verifier must exceed to pass (default: the experiment's, else 0.95).
    #[arg(long)]
    pub cutoff: Option<f64>,
    #[arg(long)]
    pub json: bool,
    /// An opening of this bundle's commitment (`open`): verify the challenged segments.
    #[arg(long, value_name = "DIR", requires = "request")]
    pub opening: Option<PathBuf>,
    /// `segment` (the default with --opening) or `full` (one prefill; the default otherwise).
    #[arg(long, value_enum)]
    pub mode: Option<VerifyMode>,
}

#[derive(Args, Debug)]
pub struct ChallengeArgs {
    /// Bundle directory whose manifest carries a commitment (`infer` writes one).
    pub bundle: PathBuf,
    /// The verifier's secret: 16..=4096 bytes of its own, revealed in the challenge afterwards.
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// How many decoder layers to challenge.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Check only this many generated tokens, drawn with the layers (default: every token).
    #[arg(long)]
    pub token_positions: Option<usize>,
    /// Challenge file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct OpenArgs {
    /// Bundle directory with its private store (`states/`).
    pub bundle: PathBuf,
    /// A verifier's challenge (`challenge`).
    #[arg(long, value_name = "FILE")]
    pub challenge: PathBuf,
    /// Opening directory to write (new or empty).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// One prefill over prompt + output (today's verification).
    Full,
    /// The challenged layers alone, from a proven opening (docs/commitment.md).
    Segment,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum PolicyChoice {
    PrecisionAware,
    Seed,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// An experiment id from experiments.yaml (exp1..exp5 built in), or `all`.
    pub experiment: String,
    #[arg(long)]
    pub trials: Option<usize>,
    #[arg(long)]
    pub verifiers: Option<usize>,
    #[arg(long)]
    pub max_tokens: Option<usize>,
    #[arg(long)]
    pub min_tokens: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Device profile for every role that has a gpu_device in the experiment, instead of that
    /// gpu_device (e.g. cuda:0:bf16); roles without one keep their device. Also applies
    /// without a GPU (e.g. cpu:bf16 to rehearse a GPU setup).
    #[arg(long, value_parser = parse_device)]
    pub gpu: Option<DeviceProfile>,
    /// Trials run in parallel (never two on one GPU at once).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Results directory, new or empty (default: <data>/<experiment>/run-<time>); bundle
    /// directory with --step infer; with `all`, one folder per experiment inside it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = StepChoice::Both)]
    pub step: StepChoice,
    /// Bundle directory to verify (with --step verify).
    #[arg(long)]
    pub from: Option<PathBuf>,
    #[command(flatten)]
    pub slurm: slurm::SlurmArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepChoice {
    Both,
    Infer,
    Verify,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[arg(long, default_value = EMBEDDED_MODEL_ID)]
    pub model: String,
    pub text: String,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
}

fn parse_device(s: &str) -> Result<DeviceProfile, String> {
    DeviceProfile::parse(s)
}

pub fn parse_layers(s: &str) -> Result<LayerSelection, String> {
    if s == "all" {
        return Ok(LayerSelection::All);
    }
    if let Some(n) = s.strip_prefix("every:") {
        let n: usize = n
            .parse()
            .map_err(|_| format!("`{s}`: expected every:N with N a positive integer"))?;
        if n == 0 {
            return Err(format!("`{s}`: N must be at least 1"));
        }
        return Ok(LayerSelection::Every(n));
    }
    let list: Result<Vec<usize>, _> = s.split(',').map(|x| x.trim().parse::<usize>()).collect();
    match list {
        Ok(l) if !l.iter().any(|&layer| layer >= 1) => Err(format!(
            "`{s}`: no checked layer (0 is the embeddings; expected at least one index >= 1)"
        )),
        Ok(l) => Ok(LayerSelection::List(l)),
        _ => Err(format!(
            "`{s}`: expected every:N, all, or a comma-separated list like 8,16,24"
        )),
    }
}

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
    let config_dir = global
        .config_dir
        .clone()
        .or_else(|| std::env::var_os("VERILLM_CONFIG_DIR").map(PathBuf::from));
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
            let config_dir = global
                .config_dir
                .clone()
                .or_else(|| std::env::var_os("VERILLM_CONFIG_DIR").map(PathBuf::from));
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

/// `expN` or `all` (every configured experiment, a user file's own ids included, in natural
/// order), refusing unknown names.
fn experiments_named(ws: &Workspace, arg: &str) -> Result<Vec<String>> {
    if arg == "all" {
        return Ok(ws
            .config
            .experiments
            .experiment_names()
            .into_iter()
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

async fn run(global: &GlobalArgs, args: RunArgs) -> Result<ExitCode> {
    let ws = Arc::new(workspace(global)?);
    let names = experiments_named(&ws, &args.experiment)?;
    let step = match args.step {
        StepChoice::Both => RunStep::Both,
        StepChoice::Infer => RunStep::Infer,
        StepChoice::Verify => RunStep::Verify,
    };
    if step == RunStep::Infer && args.out.is_none() {
        bail!("--step infer needs --out DIR for the bundles");
    }
    // With `all`, each experiment writes to its own folder inside --out.
    let out_of = |name: &str| {
        args.out.as_ref().map(|o| {
            if args.experiment == "all" {
                o.join(name)
            } else {
                o.clone()
            }
        })
    };
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
            from: args.from.as_ref().map(|f| {
                if args.experiment == "all" {
                    f.join(&name)
                } else {
                    f.clone()
                }
            }),
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
async fn cancel_on_signal(cancel: CancelToken, received: Arc<std::sync::atomic::AtomicI32>) {
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
fn report_interrupted(name: &str, step: RunStep, outcome: &runner::RunOutcome) {
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
