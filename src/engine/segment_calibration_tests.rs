//! Measurement behind the segment check's layer-update rule (docs/policy.md, "Segment mode:
//! the layer's own update"): for honest pairings and cheats, every layer recomputed from the
//! committed column entering it, per position, the figures the rule could be built from. A
//! measurement, not a check; it writes one CSV row per (run, layer, position):
//! `VERILLM_SEGMENT_CSV=/tmp/seg.csv cargo test --release --lib measure_segment_update -- --ignored --nocapture`
//! (PyTorch runs are read from `VERILLM_PYTORCH_RUNS`, the shared reference set's
//! `pytorch_runs/` folder, when it is set.)

use std::io::Write;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

use super::*;
use crate::engine::capture::CapturedStates;
use crate::engine::events::{CancelToken, EventSink};
use crate::engine::inference::generate_committed;
use crate::engine::sampling::SamplingParams;
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;
use crate::testutil::embedded;

const PROMPTS: [&str; 2] = [
    "Name a color.",
    "Explain in two sentences why bread rises when it is baked.",
];

fn sampling(tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.7,
        seed: 5,
        max_new_tokens: tokens,
        min_new_tokens: tokens,
        ..SamplingParams::default()
    }
}

/// All positions' rows of one column, widened to f32.
fn column(store: &CapturedStates, c: usize) -> Vec<Vec<f32>> {
    (0..store.rows).map(|r| store.row_f32(c, r)).collect()
}

fn storage(dtype: DType) -> CompareDtype {
    match dtype {
        DType::BF16 => CompareDtype::Bf16,
        DType::F16 => CompareDtype::F16,
        _ => CompareDtype::F32,
    }
}

/// One CSV row per position of every layer in `layers`, comparing committed column l + 1
/// with layer l recomputed by `verifier` from committed column l. Positions before `from`
/// are context only (not written).
#[allow(clippy::too_many_arguments)]
fn measure(
    out: &mut impl Write,
    name: &str,
    verifier: &LoadedModel,
    entering: &dyn Fn(usize) -> Vec<Vec<f32>>,
    leaving: &dyn Fn(usize) -> Vec<Vec<f32>>,
    layers: std::ops::Range<usize>,
    from: usize,
    stored: CompareDtype,
    tier: CompareDtype,
) {
    let policy = PolicyConfig::default();
    for l in layers {
        let x = entering(l);
        let y = leaving(l);
        let recomputed: Vec<Vec<f32>> = verifier
            .model
            .run_layer(l, &as_tensor(&x, verifier).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2()
            .unwrap();
        for p in from..y.len() {
            let m = compare(&y[p], &recomputed[p], stored).unwrap();
            let u =
                crate::stats::update::update_metrics(&x[p], &y[p], &recomputed[p], stored).unwrap();
            let accept = policy.decide(&m, tier, tier);
            writeln!(
                out,
                "{name},{},{l},{p},{},{},{},{},{:.4},{},{}",
                tier.name(),
                u.error_l2,
                u.update_l2,
                u.rounding_floor_l2,
                m.rel_l2,
                m.pe,
                accept as u8,
                u.z(tier)
            )
            .unwrap();
        }
    }
}

fn engine_run(
    out: &mut impl Write,
    name: &str,
    inferencer: &LoadedModel,
    verifier: &LoadedModel,
    tier: CompareDtype,
) {
    for (k, prompt) in PROMPTS.iter().enumerate() {
        let ids =
            crate::model::chat::render_prompt(inferencer, &[("user".into(), prompt.to_string())])
                .unwrap()
                .1;
        let (_, store) = generate_committed(
            inferencer,
            &ids,
            &sampling(24),
            &[],
            &EventSink::none(),
            0,
            &CancelToken::new(),
        )
        .unwrap();
        let stored = storage(store.dtype);
        measure(
            out,
            &format!("{name}/p{k}"),
            verifier,
            &|l| column(&store, l),
            &|l| column(&store, l + 1),
            0..inferencer.model.config.n_layers,
            0,
            stored,
            tier,
        );
        eprintln!("{name} p{k}: {} rows", store.rows);
    }
}

/// A PyTorch run of the shared reference set: its `hidden` [64, 31, 576] holds the generated
/// positions only (column 30 is after the final norm, so layers 0..29 are measured); the
/// prompt positions the attention needs come from this project's honest f32 prefill, rounded
/// to the run's dtype — a perturbation of the context another engine would not add, so the
/// control is, if anything, harder than the run itself.
fn pytorch_run(out: &mut impl Write, dir: &std::path::Path, run: &str, verifier: &LoadedModel) {
    for k in 0..3 {
        let path = dir.join(format!("{run}_p{k}.safetensors"));
        let t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let ids = |n: &str| -> Vec<u32> {
            t[n].to_vec1::<i64>()
                .unwrap()
                .into_iter()
                .map(|v| v as u32)
                .collect()
        };
        let prompt = ids("prompt_ids");
        let hidden = &t["hidden"];
        let stored = storage(hidden.dtype());
        let hidden: Vec<Vec<Vec<f32>>> = hidden.to_dtype(DType::F32).unwrap().to_vec3().unwrap();
        // This project's honest f32 states at the prompt positions (a prefill: rows 0..P).
        let greedy = SamplingParams {
            temperature: 0.0,
            ..sampling(1)
        };
        let (_, ours) = generate_committed(
            verifier,
            &prompt,
            &greedy,
            &[],
            &EventSink::none(),
            0,
            &CancelToken::new(),
        )
        .unwrap();
        let round = |v: Vec<f32>| -> Vec<f32> {
            Tensor::new(v.as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(hidden_dtype(stored))
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let entering = |l: usize| -> Vec<Vec<f32>> {
            let mut rows: Vec<Vec<f32>> = (0..prompt.len())
                .map(|r| round(ours.row_f32(l, r)))
                .collect();
            rows.extend(hidden.iter().map(|h| h[l].clone()));
            rows
        };
        let leaving = |l: usize| -> Vec<Vec<f32>> {
            let mut rows: Vec<Vec<f32>> = vec![vec![0.0; 576]; prompt.len()];
            rows.extend(hidden.iter().map(|h| h[l + 1].clone()));
            rows
        };
        measure(
            out,
            &format!("pytorch_{run}/p{k}"),
            verifier,
            &entering,
            &leaving,
            0..verifier.model.config.n_layers - 1,
            prompt.len(),
            stored,
            stored,
        );
        eprintln!("pytorch {run} p{k}");
    }
}

fn hidden_dtype(d: CompareDtype) -> DType {
    match d {
        CompareDtype::F32 => DType::F32,
        CompareDtype::F16 => DType::F16,
        CompareDtype::Bf16 => DType::BF16,
    }
}

#[test]
#[ignore]
fn measure_segment_update_statistics() {
    let path = std::env::var("VERILLM_SEGMENT_CSV").unwrap_or("/tmp/segment_update.csv".into());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        out,
        "run,tier,layer,position,error_l2,update_l2,floor_l2,state_rel_l2,pe,state_accept,z"
    )
    .unwrap();
    let f32v = embedded(Precision::Full, DeviceProfile::CPU_F32);
    let bf16 = DeviceProfile::parse("cpu:bf16").unwrap();
    let f16 = DeviceProfile::parse("cpu:f16").unwrap();
    use CompareDtype::{Bf16, F16, F32};
    if let Some(dir) = std::env::var_os("VERILLM_PYTORCH_RUNS") {
        let dir = std::path::PathBuf::from(dir);
        for run in [
            "honest_f32",
            "honest_f16",
            "honest_bf16",
            "cheat_q8_f32",
            "cheat_q4_f32",
        ] {
            pytorch_run(&mut out, &dir, run, &f32v);
        }
    }
    let runs: Vec<(&str, LoadedModel, CompareDtype)> = vec![
        ("f32", f32v.clone(), F32),
        ("bf16", embedded(Precision::Full, bf16), Bf16),
        ("f16", embedded(Precision::Full, f16), F16),
        (
            "native",
            embedded(Precision::Native, DeviceProfile::CPU_F32),
            Bf16,
        ),
        (
            "q4_0_f32",
            embedded(
                Precision::Quantized(GgmlDType::Q4_0),
                DeviceProfile::CPU_F32,
            ),
            F32,
        ),
        (
            "q4_0_bf16",
            embedded(Precision::Quantized(GgmlDType::Q4_0), bf16),
            Bf16,
        ),
        (
            "q4_1_bf16",
            embedded(Precision::Quantized(GgmlDType::Q4_1), bf16),
            Bf16,
        ),
        (
            "q8_0_f32",
            embedded(
                Precision::Quantized(GgmlDType::Q8_0),
                DeviceProfile::CPU_F32,
            ),
            F32,
        ),
        (
            "q8_0_bf16",
            embedded(Precision::Quantized(GgmlDType::Q8_0), bf16),
            Bf16,
        ),
        (
            "skip13",
            LoadedModel {
                model: Arc::new(f32v.model.with_layer_skipped(13).unwrap()),
                ..f32v.clone()
            },
            F32,
        ),
        (
            "l13_q4_0",
            LoadedModel {
                model: Arc::new(
                    f32v.model
                        .with_layer_requantized(13, GgmlDType::Q4_0)
                        .unwrap(),
                ),
                ..f32v.clone()
            },
            F32,
        ),
        (
            "l13_q8_0",
            LoadedModel {
                model: Arc::new(
                    f32v.model
                        .with_layer_requantized(13, GgmlDType::Q8_0)
                        .unwrap(),
                ),
                ..f32v.clone()
            },
            F32,
        ),
    ];
    for (name, model, tier) in &runs {
        engine_run(&mut out, name, model, &f32v, *tier);
    }
    let native = embedded(Precision::Native, DeviceProfile::CPU_F32);
    engine_run(&mut out, "native_native", &native, &native, Bf16);
    out.flush().unwrap();
    eprintln!("wrote {path}");
}
