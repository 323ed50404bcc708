//! `verillm-tui bench`: speed and memory figures for the embedded model on this machine.
//! Timings are measured here and printed; tests never assert on them.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::engine::events::{CancelToken, EventSink};
use crate::engine::inference::{generate, InferenceOutput};
use crate::engine::sampling::SamplingParams;
use crate::engine::verification::{default_chunk, verify, TokenRule, VerifyJob};
use crate::experiment::config::Role;
use crate::experiment::workspace::Workspace;
use crate::model::chat::render_prompt;
use crate::model::device::DeviceProfile;
use crate::model::embedded::EMBEDDED_MODEL_ID;
use crate::model::weights::Precision;
use crate::model::LoadedModel;
use crate::stats::metrics::CompareDtype;
use crate::stats::policy::PolicyConfig;

/// A short chat question. Rendered with SmolLM2's template (which adds its default system
/// prompt) it is 37 tokens; the figures print the count as `prompt_tokens`.
const BENCH_PROMPT: &str = "What is the capital of France?";

#[derive(Debug, Serialize)]
pub struct DecodeFigure {
    pub precision: String,
    /// Compute threads it ran on (`--threads`; run bench once per count to compare).
    pub threads: usize,
    /// Which CPU kernels ran: "verillm" (src/model/kernels.rs) or "candle"
    /// (VERILLM_CANDLE_KERNELS=1, the before of issue 19).
    pub kernels: &'static str,
    /// Which code ran the decode steps: "fast step" (src/model/transformer/decode_step.rs) or
    /// "candle ops (why)" (the one place that decides: `TappedModel::fast_decode_refusal`).
    pub decode_path: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

/// Decode speed and memory bandwidth at one thread count, all measured in this one run (a
/// rayon pool of that size: the decode step's kernels and the streaming read run on it), so
/// the counts are compared under the same neighbours' load (issue 19: ≥ 1.6× from the second
/// thread for f32 where the memory allows it).
#[derive(Debug, Serialize)]
pub struct ThreadFigure {
    pub threads: usize,
    pub native_decode_tokens_per_s: f64,
    pub full_decode_tokens_per_s: f64,
    pub streaming_read_gb_per_s: f64,
    /// Full decode traffic (weight bytes × tok/s) ÷ the streaming read at this count.
    pub full_decode_fraction: f64,
}

#[derive(Debug, Serialize)]
pub struct LoadFigure {
    pub precision: String,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct RatioFigure {
    pub new_tokens: usize,
    pub inference_s: f64,
    pub verification_s: f64,
    /// Of `verification_s`: comparing the states and deciding, on the CPU.
    pub compare_s: f64,
    pub ratio_percent: f64,
    /// The ratio without the comparison: the prefill (in chunks) and reading its states back.
    pub prefill_ratio_percent: f64,
    /// The same verification with token checks off (`verify --state-only`): the prefill stops
    /// after the last tap, no lm_head. `verification_s` includes the token checks.
    pub state_only_verification_s: f64,
    pub state_only_ratio_percent: f64,
}

#[derive(Debug, Serialize)]
pub struct ChunkFigure {
    pub new_tokens: usize,
    pub chunk: usize,
    pub verification_s: f64,
    pub compare_s: f64,
    pub ratio_percent: f64,
}

/// The inferencer's prefill of a long prompt (in chunks, as `generate` runs it) and the memory
/// it took.
#[derive(Debug, Serialize)]
pub struct LongPromptFigure {
    pub prompt_tokens: usize,
    pub chunk: usize,
    pub prefill_s: f64,
    /// Resident memory just before the prefill (the loaded models), MiB.
    pub rss_before_mib: f64,
    /// Peak resident memory during the prefill (the kernel's high-water mark, reset just
    /// before it), MiB: the models plus what the prefill needed.
    pub peak_rss_mib: f64,
}

/// How fast this machine streams memory, and how much of it the full-precision decode uses:
/// each decode step reads every f32 weight once, so bytes × tok/s is its traffic.
#[derive(Debug, Serialize)]
pub struct BandwidthFigure {
    /// Best of a few sums over a 512 MiB buffer on `threads` threads (a streaming read).
    pub streaming_read_gb_per_s: f64,
    /// Weight bytes one full decode step reads: all but the embedding table (one row of it).
    pub full_decode_bytes_per_token: usize,
    /// full_decode_bytes_per_token × the full decode's tok/s.
    pub full_decode_gb_per_s: f64,
    /// full_decode_gb_per_s ÷ streaming_read_gb_per_s.
    pub full_decode_fraction: f64,
}

/// A streaming read of a buffer far larger than the caches, split over the compute threads
/// like the kernels' rows; the best of `passes` (the others may have been interrupted).
fn streaming_read_gb_per_s(bytes: usize, passes: usize) -> f64 {
    use rayon::prelude::*;
    let data = vec![1.0f32; bytes / 4];
    let mut best = 0f64;
    for _ in 0..passes {
        let started = Instant::now();
        // A dot product of each chunk with itself: one load stream, SIMD, many accumulators
        // (a plain fold is one serial add chain and measures the adder, not the memory).
        let sum: f32 = data
            .par_chunks(1 << 16)
            .map(|c| crate::model::kernels::dot_f32(c, c))
            .sum();
        let secs = started.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max(bytes as f64 / secs / 1e9);
    }
    best
}

/// Chunk sizes `bench` tries besides one prefill of the whole sequence.
const SWEPT_CHUNKS: [usize; 5] = [64, 128, 256, 512, 1024];

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub threads: usize,
    /// Seconds to load each model, including on a GPU the first use of its kernels (which the
    /// driver compiles on a fresh machine); the timings below start after it.
    pub load_s: Vec<LoadFigure>,
    pub decode: Vec<DecodeFigure>,
    /// Decode at 1 and 2 threads (where the machine has them), CPU only.
    pub decode_by_threads: Vec<ThreadFigure>,
    /// Prefill of the full-precision model in the profile's dtype.
    pub prefill_full_tokens_per_s: f64,
    pub prefill_tokens: usize,
    pub verification_ratio: Vec<RatioFigure>,
    /// Verification of the longest generation with other prefill chunk sizes (runs use
    /// `default_chunk`: 128 on the CPU, 512 on a GPU); the last is one prefill of it all.
    pub chunk_sweep: Vec<ChunkFigure>,
    /// CPU only (on a GPU the weights stream from device memory, not measured here).
    pub memory_bandwidth: Option<BandwidthFigure>,
    pub peak_rss_mib: Option<f64>,
    /// Absent when not asked for (`--long-prompt 0`) or where the peak cannot be reset (not
    /// Linux).
    pub long_prompt: Option<LongPromptFigure>,
    pub tui_render_ms_mean: Option<f64>,
    pub tui_render_ms_max: Option<f64>,
}

fn greedy(max_new_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        repetition_penalty: 1.0,
        seed: 1,
        min_new_tokens: max_new_tokens,
        max_new_tokens,
    }
}

fn decode_figure(
    model: &LoadedModel,
    prompt_ids: &[u32],
    n: usize,
    layers: &[usize],
) -> Result<DecodeFigure> {
    let out = generate(
        model,
        prompt_ids,
        &greedy(n),
        layers,
        &EventSink::none(),
        0,
        &CancelToken::new(),
    )?;
    Ok(DecodeFigure {
        precision: model.model.precision.to_string(),
        threads: candle_core::utils::get_num_threads(),
        kernels: if crate::model::kernels::candle_only() {
            "candle"
        } else {
            "verillm"
        },
        decode_path: model.model.decode_path(),
        prompt_tokens: prompt_ids.len(),
        new_tokens: out.output_ids.len(),
        prefill_tokens_per_s: prompt_ids.len() as f64 / out.prefill_s,
        decode_tokens_per_s: (out.output_ids.len() as f64) / out.decode_s,
    })
}

pub fn run_bench(
    ws: &Workspace,
    ratio_sizes: &[usize],
    long_prompt: usize,
    device: DeviceProfile,
    measure_render: bool,
) -> Result<BenchReport> {
    let role = |precision| Role {
        model: EMBEDDED_MODEL_ID.into(),
        precision,
        device,
    };
    let mut load_s = Vec::new();
    let mut load = |precision: Precision| -> Result<LoadedModel> {
        let started = Instant::now();
        let model = ws.load(&role(precision))?;
        // Workspace::load has warmed a GPU model up; the same first pass on the CPU makes every
        // device's timings start warm.
        if !device.is_gpu() {
            model.model.warm_up()?;
        }
        load_s.push(LoadFigure {
            precision: precision.to_string(),
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(model)
    };
    let full = load(Precision::Full)?;
    let native = load(Precision::Native)?;
    let (_, prompt_ids) = render_prompt(&full, &[("user".into(), BENCH_PROMPT.into())])?;
    // Every requested N is checked before anything is measured, so a bad one costs no figures.
    let room = full.model.max_positions().saturating_sub(prompt_ids.len());
    if let Some(bad) = ratio_sizes.iter().find(|&&n| n == 0 || n > room) {
        anyhow::bail!(
            "--ratio-at {bad}: each N must be 1..={room} (the model's context minus the \
             {}-token bench prompt)",
            prompt_ids.len()
        );
    }
    if long_prompt >= full.model.max_positions() {
        anyhow::bail!(
            "--long-prompt {long_prompt}: at most {} tokens (the model's context less one new \
             token)",
            full.model.max_positions() - 1
        );
    }
    let layers: Vec<usize> = vec![8, 16, 24];
    eprintln!("bench: decoding 128 tokens on {device} (native Q4_1, then full)…");
    let decode = vec![
        decode_figure(&native, &prompt_ids, 128, &layers)?,
        decode_figure(&full, &prompt_ids, 128, &layers)?,
    ];

    let memory_bandwidth = (!device.is_gpu()).then(|| {
        let read = streaming_read_gb_per_s(512 << 20, 4);
        let cfg = &full.model.config;
        let embeddings = cfg.vocab_size * cfg.hidden * full.model.dtype().size_in_bytes();
        let bytes = full.model.weight_bytes().saturating_sub(embeddings);
        let used = bytes as f64 * decode[1].decode_tokens_per_s / 1e9;
        BandwidthFigure {
            streaming_read_gb_per_s: read,
            full_decode_bytes_per_token: bytes,
            full_decode_gb_per_s: used,
            full_decode_fraction: used / read,
        }
    });

    let mut decode_by_threads = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !device.is_gpu() {
        let cfg = &full.model.config;
        let embeddings = cfg.vocab_size * cfg.hidden * full.model.dtype().size_in_bytes();
        let bytes = full.model.weight_bytes().saturating_sub(embeddings);
        for threads in [1, 2].into_iter().filter(|&t| t <= cores) {
            eprintln!("bench: decoding on {threads} thread(s)…");
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?;
            let figure = pool.install(|| -> Result<ThreadFigure> {
                let native = decode_figure(&native, &prompt_ids, 64, &layers)?;
                let full = decode_figure(&full, &prompt_ids, 64, &layers)?;
                let read = streaming_read_gb_per_s(256 << 20, 3);
                Ok(ThreadFigure {
                    threads,
                    native_decode_tokens_per_s: native.decode_tokens_per_s,
                    full_decode_tokens_per_s: full.decode_tokens_per_s,
                    streaming_read_gb_per_s: read,
                    full_decode_fraction: bytes as f64 * full.decode_tokens_per_s / 1e9 / read,
                })
            })?;
            decode_by_threads.push(figure);
        }
    }

    // Prefill throughput on a 512-token sequence through every layer (the verifier's workload).
    let long_ids: Vec<u32> = prompt_ids.iter().copied().cycle().take(512).collect();
    let start = Instant::now();
    let out = full.model.forward(
        &long_ids,
        &mut full.model.new_cache(),
        &[full.model.config.n_layers],
        false,
    )?;
    // Reading a value back waits for asynchronous (GPU) work to finish.
    out.taps[0]
        .1
        .sum_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?;
    let prefill_rate = long_ids.len() as f64 / start.elapsed().as_secs_f64();

    let eos_ids = full.tokenizer.eos_ids();
    let verify_at = |out: &InferenceOutput, chunk: usize, token_checks: bool| {
        let policy = PolicyConfig::default();
        let sampling = greedy(out.output_ids.len());
        let job = VerifyJob {
            prompt_ids: &prompt_ids,
            output_ids: &out.output_ids,
            committed: &out.captured,
            inference_dtype: crate::stats::metrics::CompareDtype::from_name(
                crate::model::device::dtype_name(full.compute_dtype()),
            )
            .unwrap_or(CompareDtype::F32),
            inference_native: false,
            policy: &policy,
            chunk,
            tokens: token_checks.then(|| TokenRule {
                sampling: &sampling,
                eos_ids: eos_ids.clone(),
                output_complete: true,
            }),
        };
        verify(&full, &job, &EventSink::none(), 0, 0, &CancelToken::new())
    };
    let mut ratios = Vec::new();
    let mut longest = None;
    for &n in ratio_sizes {
        eprintln!("bench: verification/inference at N={n}…");
        let out = generate(
            &full,
            &prompt_ids,
            &greedy(n),
            &layers,
            &EventSink::none(),
            0,
            &CancelToken::new(),
        )?;
        let ver = verify_at(&out, default_chunk(device), true)?;
        let state_only = verify_at(&out, default_chunk(device), false)?;
        ratios.push(RatioFigure {
            state_only_verification_s: state_only.time_s,
            state_only_ratio_percent: 100.0 * state_only.time_s / out.total_s,
            new_tokens: n,
            inference_s: out.total_s,
            verification_s: ver.time_s,
            compare_s: ver.compare_s,
            ratio_percent: 100.0 * ver.time_s / out.total_s,
            prefill_ratio_percent: 100.0 * (ver.time_s - ver.compare_s) / out.total_s,
        });
        if longest
            .as_ref()
            .is_none_or(|o: &InferenceOutput| o.output_ids.len() < out.output_ids.len())
        {
            longest = Some(out);
        }
    }
    // The verifier's prefill runs in chunks (bounded memory; checks stream as each completes):
    // what the chunk size costs, on the longest generation, up to one prefill of it all.
    let mut chunk_sweep = Vec::new();
    if let Some(out) = &longest {
        let sequence = prompt_ids.len() + out.output_ids.len();
        eprintln!(
            "bench: verification by chunk size at N={}…",
            out.output_ids.len()
        );
        let chunks = SWEPT_CHUNKS.iter().copied().filter(|&c| c < sequence);
        for chunk in chunks.chain([sequence]) {
            let ver = verify_at(out, chunk, true)?;
            chunk_sweep.push(ChunkFigure {
                new_tokens: out.output_ids.len(),
                chunk,
                verification_s: ver.time_s,
                compare_s: ver.compare_s,
                ratio_percent: 100.0 * ver.time_s / out.total_s,
            });
        }
    }
    // The process's peak so far; the long prompt below resets the high-water mark.
    let peak_rss = peak_rss_mib();
    let long_prompt = if long_prompt > 0 {
        eprintln!("bench: inference with a {long_prompt}-token prompt (peak memory)…");
        long_prompt_figure(&full, &prompt_ids, long_prompt, &layers)?
    } else {
        None
    };
    // Rendering cost of the run view after a long run: 4096 tokens × 3 verifiers × 3 layers.
    let (tui_mean, tui_max) = if measure_render {
        eprintln!("bench: TUI frame rendering after 4096 tokens × 3 verifiers…");
        let (mean, max) = crate::tui::render_benchmark(4096, 3, 3, 200);
        (Some(mean), Some(max))
    } else {
        (None, None)
    };
    Ok(BenchReport {
        model: EMBEDDED_MODEL_ID.into(),
        device: device.to_string(),
        threads: candle_core::utils::get_num_threads(),
        load_s,
        decode,
        decode_by_threads,
        prefill_full_tokens_per_s: prefill_rate,
        prefill_tokens: long_ids.len(),
        verification_ratio: ratios,
        chunk_sweep,
        memory_bandwidth,
        peak_rss_mib: peak_rss,
        long_prompt,
        tui_render_ms_mean: tui_mean,
        tui_render_ms_max: tui_max,
    })
}

/// One new token after a `tokens`-long prompt (the bench prompt repeated): the prefill's time
/// and the peak memory it reached. None where the high-water mark cannot be reset.
fn long_prompt_figure(
    model: &LoadedModel,
    prompt_ids: &[u32],
    tokens: usize,
    layers: &[usize],
) -> Result<Option<LongPromptFigure>> {
    let ids: Vec<u32> = prompt_ids.iter().copied().cycle().take(tokens).collect();
    // Linux: writing 5 to clear_refs resets VmHWM to the current resident size.
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        return Ok(None);
    }
    let Some(rss_before_mib) = current_rss_mib() else {
        return Ok(None);
    };
    let out = generate(
        model,
        &ids,
        &greedy(1),
        layers,
        &EventSink::none(),
        0,
        &CancelToken::new(),
    )?;
    Ok(peak_rss_mib().map(|peak_rss_mib| LongPromptFigure {
        prompt_tokens: ids.len(),
        chunk: default_chunk(model.profile),
        prefill_s: out.prefill_s,
        rss_before_mib,
        peak_rss_mib,
    }))
}

/// Resident memory of this process now (Linux: VmRSS).
fn current_rss_mib() -> Option<f64> {
    status_kib("VmRSS:").map(|kib| kib / 1024.0)
}

fn status_kib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident memory of this process (Linux: VmHWM).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn print_report(r: &BenchReport) {
    println!(
        "verillm-tui bench — {} on {} ({} CPU threads)",
        r.model, r.device, r.threads
    );
    for l in &r.load_s {
        println!(
            "  load {:<6} (with first-use warm-up): {:.2} s",
            l.precision, l.seconds
        );
    }
    for d in &r.decode {
        println!(
            "  decode with capture, {:<6}: {:6.1} tok/s on {} thread(s), {} kernels, {}   (prefill of the {}-token prompt: {:6.1} tok/s)",
            d.precision,
            d.decode_tokens_per_s,
            d.threads,
            d.kernels,
            d.decode_path,
            d.prompt_tokens,
            d.prefill_tokens_per_s
        );
    }
    for t in &r.decode_by_threads {
        println!(
            "  on {} thread(s): native {:.1} tok/s, full {:.1} tok/s, streaming read {:.1} GB/s, full decode at {:.0}% of it",
            t.threads,
            t.native_decode_tokens_per_s,
            t.full_decode_tokens_per_s,
            t.streaming_read_gb_per_s,
            100.0 * t.full_decode_fraction
        );
    }
    println!(
        "  prefill full ({}), {} tokens: {:.1} tok/s",
        r.device, r.prefill_tokens, r.prefill_full_tokens_per_s
    );
    if let Some(b) = &r.memory_bandwidth {
        println!(
            "  memory: streaming read {:.1} GB/s; full decode reads {:.0} MB a token, {:.1} GB/s = {:.0}% of it",
            b.streaming_read_gb_per_s,
            b.full_decode_bytes_per_token as f64 / 1e6,
            b.full_decode_gb_per_s,
            100.0 * b.full_decode_fraction
        );
    }
    for v in &r.verification_ratio {
        println!(
            "  N={:<5} inference {:7.2} s  verification {:6.2} s  ratio {:5.1}%   (comparing and token checks {:.2} s; prefill alone {:.1}%; state only: {:.2} s, {:.1}%)",
            v.new_tokens,
            v.inference_s,
            v.verification_s,
            v.ratio_percent,
            v.compare_s,
            v.prefill_ratio_percent,
            v.state_only_verification_s,
            v.state_only_ratio_percent
        );
    }
    for c in &r.chunk_sweep {
        println!(
            "  N={:<5} verification in chunks of {:<5}: {:6.3} s (comparing {:.3} s)  ratio {:5.2}%",
            c.new_tokens, c.chunk, c.verification_s, c.compare_s, c.ratio_percent
        );
    }
    if let Some(m) = r.peak_rss_mib {
        println!("  peak memory: {m:.0} MiB");
    }
    if let Some(l) = &r.long_prompt {
        println!(
            "  inference with a {}-token prompt (prefilled in chunks of {}): prefill {:.1} s, \
             peak memory {:.0} MiB ({:.0} MiB above the {:.0} MiB before it)",
            l.prompt_tokens,
            l.chunk,
            l.prefill_s,
            l.peak_rss_mib,
            l.peak_rss_mib - l.rss_before_mib,
            l.rss_before_mib
        );
    }
    if let (Some(a), Some(b)) = (r.tui_render_ms_mean, r.tui_render_ms_max) {
        println!("  TUI frame render (synthetic long run): mean {a:.2} ms, max {b:.2} ms");
    }
}
