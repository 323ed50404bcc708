//! The command line's arguments (clap): every command, its flags and their parsers. What the
//! commands do is in `mod.rs` (dispatch), `run.rs`, `bundles.rs` and `slurm.rs`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::sampling::SamplingParams;
use crate::experiment::config::LayerSelection;
use crate::model::device::DeviceProfile;
use crate::model::embedded::EMBEDDED_MODEL_ID;
use crate::model::weights::Precision;

use super::slurm;

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
    /// Compute threads for the CPU kernels (default: RAYON_NUM_THREADS, else one per physical
    /// core but one, left for the console and other work: the row pool's workers spin 50 µs
    /// between products, and candle's prefill pool spin-waits). Whether all cores are faster
    /// depends on the machine: see the README's "Threads".
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Show the full error chain with backtraces (also set by RUST_LIB_BACKTRACE=1); without it
    /// an error is one message, whatever RUST_BACKTRACE says.
    #[arg(long, global = true)]
    pub debug: bool,
}

impl GlobalArgs {
    /// `--config-dir`, else the `VERILLM_CONFIG_DIR` environment variable.
    pub fn config_dir(&self) -> Option<PathBuf> {
        self.config_dir.clone().or_else(|| {
            std::env::var_os(crate::experiment::config::CONFIG_DIR_ENV).map(PathBuf::from)
        })
    }
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
    /// Run an experiment (an id from experiments.yaml: exp1..exp5, the cheats cheat-* and the honest controls control-* built in; or all) end to end.
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
    Matrix(super::matrix::MatrixArgs),
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
    /// An experiment id from experiments.yaml (exp1..exp5, cheat-*, control-* built in), or all (every one but the cheat-*/control-* scenarios).
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
    #[arg(long, conflicts_with = "root_only")]
    pub no_store: bool,
    /// Segment mode's bundle: the manifest with its commitment root alone, no hidden-states
    /// file (a few KB); verified only from openings of the private store (docs/commitment.md).
    #[arg(long)]
    pub root_only: bool,
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
    /// With --opening: do not time the reference full prefill shown beside the segment time.
    #[arg(long)]
    pub no_reference_prefill: bool,
}

#[derive(Args, Debug)]
pub struct ChallengeArgs {
    /// Bundle directory whose manifest carries a commitment (`infer` writes one).
    pub bundle: PathBuf,
    /// The verifier's secret: 16..=4096 bytes of its own, revealed in the challenge afterwards.
    /// Omitted: 32 fresh bytes from the operating system. A file's secret is refused once it
    /// was revealed for another root (listed in FILE.revealed): reuse lets the inferencer grind.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
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

impl VerifyMode {
    pub(super) fn protocol(self) -> crate::experiment::config::VerificationMode {
        match self {
            VerifyMode::Full => crate::experiment::config::VerificationMode::Full,
            VerifyMode::Segment => crate::experiment::config::VerificationMode::Segment,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum PolicyChoice {
    PrecisionAware,
    Seed,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// An experiment id from experiments.yaml (exp1..exp5, cheat-*, control-* built in), or `all` (every one but the cheat-*/control-* scenarios).
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
    /// `full` (one prefill per verifier) or `segment` (commit, each verifier its own
    /// challenge, open, recompute the challenged layers); default: the experiment's `mode:`.
    #[arg(long, value_enum)]
    pub mode: Option<VerifyMode>,
    /// Segment mode: decoder layers each verifier challenges (default: the experiment's
    /// `challenge_layers:`, else 4).
    #[arg(long, value_name = "C")]
    pub challenge_layers: Option<usize>,
    /// Segment mode: check only this many generated tokens per verifier, drawn with its
    /// layers (default: every token).
    #[arg(long, value_name = "K")]
    pub token_positions: Option<usize>,
    /// Segment mode: skip the reference full prefill each verifier role times beside its
    /// segments (it is never part of the verdict; default: timed, or the experiment's
    /// `reference_prefill:`).
    #[arg(long)]
    pub no_reference_prefill: bool,
    #[command(flatten)]
    pub slurm: slurm::SlurmArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepChoice {
    Both,
    Infer,
    Verify,
    /// Segment mode, verifiers' side: draw challenges for the bundles in --from.
    Challenge,
    /// Segment mode, inferencer's side: answer the challenges in --from with openings.
    Open,
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
