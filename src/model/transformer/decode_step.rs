//! One token through the decoder on the CPU in plain slices (issue 19): what a decode step
//! costs without candle's ~25 tensor ops per layer (each a fresh tensor) and without growing
//! the KV cache by `Tensor::cat`, which copied the whole cache at every token.
//!
//! It computes what `forward_inner` computes for one token, in the same order: the same linear
//! kernels (`Linear::matvec_cpu`, so matrix products are the candle path's numbers bit for bit),
//! then RMSNorm, rotary and SiLU·up in plain loops and attention in `kernels::attend` (f32
//! rounding apart, the candle ops' formulas). It hands out the same taps and recording columns. Keys and values live in
//! per-layer, per-head rows that grow by doubling; a cache filled by candle's prefill is copied
//! into them once, at the first step.
//!
//! Where it does not apply the candle path runs, for one named reason decided in
//! [`TappedModel::fast_decode_refusal`].

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::{ForwardOutput, KvCache, LogitsWanted, TappedModel};
use crate::model::weights::with_cpu_f32;

/// Why a one-token forward runs on candle's ops rather than the fast step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPathRefusal {
    /// Not on the CPU: the GPU runs candle's kernels.
    NotCpu,
    /// The compute dtype is not f32 (bf16/f16 profiles keep candle's rounding per op).
    NotF32,
    /// Attention limited to a window (Mistral's, or the kv-window cheat).
    AttentionWindow,
    /// `VERILLM_CANDLE_KERNELS=1`: candle's own kernels and ops, the A/B "before".
    CandleKernelsForced,
    /// Turned off for this model copy (tests compare the two paths).
    TurnedOff,
}

impl std::fmt::Display for FastPathRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FastPathRefusal::NotCpu => "not on the CPU",
            FastPathRefusal::NotF32 => "compute dtype is not f32",
            FastPathRefusal::AttentionWindow => "attention window",
            FastPathRefusal::CandleKernelsForced => "VERILLM_CANDLE_KERNELS=1",
            FastPathRefusal::TurnedOff => "turned off for this model",
        })
    }
}

/// Keys and values of every position so far, per layer, as f32 rows: layer → [kv head]
/// [capacity][head_dim], the first `len` positions filled.
#[derive(Debug, Clone, Default)]
pub(super) struct FastKv {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    capacity: usize,
}

impl FastKv {
    /// Copies the candle cache's layers ([kv heads, len, head_dim] each) into rows with room
    /// to grow. None when a layer the step needs has no cache (a pass that stopped early).
    fn from_candle(
        model: &TappedModel,
        cache: &KvCache,
        layers_needed: usize,
    ) -> Result<Option<FastKv>> {
        let (n_kv, d) = (model.config.n_kv_heads, model.config.head_dim);
        let len = cache.len;
        let capacity = (len + 1).next_power_of_two().max(64);
        let mut kv = FastKv {
            keys: Vec::with_capacity(model.config.n_layers),
            values: Vec::with_capacity(model.config.n_layers),
            capacity,
        };
        for (index, layer) in cache.layers.iter().enumerate() {
            let mut rows = [
                vec![0f32; n_kv * capacity * d],
                vec![0f32; n_kv * capacity * d],
            ];
            match layer {
                Some((k, v)) => {
                    for (t, rows) in [k, v].into_iter().zip(rows.iter_mut()) {
                        ensure!(
                            t.dims() == [n_kv, len, d],
                            "layer {index}: cache of shape {:?}, expected [{n_kv}, {len}, {d}]",
                            t.dims()
                        );
                        let t = t.to_dtype(DType::F32)?.contiguous()?;
                        with_cpu_f32(&t, |all| {
                            for h in 0..n_kv {
                                rows[h * capacity * d..][..len * d]
                                    .copy_from_slice(&all[h * len * d..][..len * d]);
                            }
                        })?;
                    }
                }
                None if len > 0 && index < layers_needed && model.skipped_layer != Some(index) => {
                    return Ok(None)
                }
                None => {}
            }
            let [k, v] = rows;
            kv.keys.push(k);
            kv.values.push(v);
        }
        Ok(Some(kv))
    }

    /// Back to candle's form ([kv heads, len, head_dim] per layer), for a call of several
    /// tokens after fast steps.
    pub(super) fn to_candle(&self, model: &TappedModel, len: usize) -> Result<KvLayers> {
        let (n_kv, d) = (model.config.n_kv_heads, model.config.head_dim);
        self.keys
            .iter()
            .zip(&self.values)
            .map(|(k, v)| {
                if len == 0 {
                    return Ok(None);
                }
                let pack = |rows: &[f32]| -> Result<Tensor> {
                    let mut out = Vec::with_capacity(n_kv * len * d);
                    for h in 0..n_kv {
                        out.extend_from_slice(&rows[h * self.capacity * d..][..len * d]);
                    }
                    Ok(Tensor::from_vec(out, (n_kv, len, d), &Device::Cpu)?
                        .to_dtype(model.dtype)?)
                };
                Ok(Some((pack(k)?, pack(v)?)))
            })
            .collect()
    }

    /// Room for position `len` (doubling: each position is copied O(1) times on average).
    fn reserve(&mut self, len: usize, n_kv: usize, d: usize) {
        if len < self.capacity {
            return;
        }
        let grown = (self.capacity * 2).max(len + 1);
        for rows in self.keys.iter_mut().chain(self.values.iter_mut()) {
            let mut bigger = vec![0f32; n_kv * grown * d];
            for h in 0..n_kv {
                bigger[h * grown * d..][..len * d]
                    .copy_from_slice(&rows[h * self.capacity * d..][..len * d]);
            }
            *rows = bigger;
        }
        self.capacity = grown;
    }
}

type KvLayers = Vec<Option<(Tensor, Tensor)>>;

impl TappedModel {
    /// The one place deciding whether a one-token forward runs the fast step; None: it does.
    pub fn fast_decode_refusal(&self) -> Option<FastPathRefusal> {
        if !self.fast_decode {
            Some(FastPathRefusal::TurnedOff)
        } else if crate::model::kernels::candle_only() {
            Some(FastPathRefusal::CandleKernelsForced)
        } else if !self.device.is_cpu() {
            Some(FastPathRefusal::NotCpu)
        } else if self.dtype != DType::F32 {
            Some(FastPathRefusal::NotF32)
        } else if self.attention_window.is_some() {
            Some(FastPathRefusal::AttentionWindow)
        } else {
            None
        }
    }

    /// How a decode step runs, for people: "fast step, VNNI kernels" (the instruction set
    /// the CPU kernels use: `kernels_x8::Isa`), or "candle ops (why not)". `bench` reports it
    /// per figure and the console shows it beside the decode speed.
    pub fn decode_path(&self) -> String {
        match self.fast_decode_refusal() {
            None => format!(
                "fast step, {} kernels",
                crate::model::kernels_x8::Isa::best().name()
            ),
            Some(why) => format!("candle ops ({why})"),
        }
    }

    /// This model with the fast step on or off (tests compare it with the candle path).
    pub fn with_fast_decode(&self, on: bool) -> TappedModel {
        TappedModel {
            fast_decode: on,
            ..self.clone()
        }
    }

    /// One token at position `cache.len`; None when this cache cannot take it (then the caller
    /// runs the candle path, which also keeps the cache in candle's form).
    pub(super) fn fast_step(
        &self,
        id: u32,
        cache: &mut KvCache,
        taps: &[usize],
        wanted: LogitsWanted,
        last_layer_needed: usize,
        mut record: Option<&mut Vec<Tensor>>,
    ) -> Result<Option<ForwardOutput>> {
        let cfg = &self.config;
        let (hidden, n_heads, n_kv, d) = (cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let eps = cfg.rms_eps as f32;
        ensure!(
            (id as usize) < cfg.vocab_size,
            "token id {id} is beyond the model's vocabulary of {}",
            cfg.vocab_size
        );
        if cache.fast.is_none() {
            match FastKv::from_candle(self, cache, last_layer_needed)? {
                Some(kv) => {
                    cache.fast = Some(kv);
                    cache.layers.iter_mut().for_each(|l| *l = None);
                }
                None => return Ok(None),
            }
        }
        let pos = cache.len;
        let kv = cache.fast.as_mut().expect("filled above");
        kv.reserve(pos, n_kv, d);
        let capacity = kv.capacity;

        let vec_tensor =
            |x: &[f32]| -> Result<Tensor> { Ok(Tensor::from_slice(x, (1, hidden), &Device::Cpu)?) };
        let wants = |index: usize| taps.contains(&index);
        let mut x = with_cpu_f32(&self.embed_tokens, |e| {
            e[id as usize * hidden..][..hidden].to_vec()
        })?;
        let mut out = Vec::with_capacity(taps.len());
        if wants(0) {
            out.push((0, vec_tensor(&x)?));
        }
        let (cos, sin) = (
            with_cpu_f32(&self.cos, |c| c[pos * d / 2..][..d / 2].to_vec())?,
            with_cpu_f32(&self.sin, |s| s[pos * d / 2..][..d / 2].to_vec())?,
        );
        let group = n_heads / n_kv;
        let scale = 1.0 / (d as f32).sqrt();
        let mut scores = vec![0f32; pos + 1];
        for (i, layer) in self.layers.iter().enumerate().take(last_layer_needed) {
            if let Some(columns) = record.as_deref_mut() {
                columns.push(vec_tensor(&x)?);
            }
            if self.skipped_layer != Some(i) {
                // Attention.
                let h = rms_norm(&x, &layer.input_norm, eps)?;
                let mut q = layer.q_proj.matvec_cpu(&h)?;
                let mut k = layer.k_proj.matvec_cpu(&h)?;
                let v = layer.v_proj.matvec_cpu(&h)?;
                for head in q.chunks_exact_mut(d).chain(k.chunks_exact_mut(d)) {
                    rotate(head, &cos, &sin, self.rope_interleaved);
                }
                let (keys, values) = (&mut kv.keys[i], &mut kv.values[i]);
                for hk in 0..n_kv {
                    let at = hk * capacity * d + pos * d;
                    keys[at..at + d].copy_from_slice(&k[hk * d..][..d]);
                    values[at..at + d].copy_from_slice(&v[hk * d..][..d]);
                }
                let mut y = vec![0f32; n_heads * d];
                for (head, (qh, yh)) in q.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
                    let base = (head / group) * capacity * d;
                    let (kh, vh) = (
                        &keys[base..][..(pos + 1) * d],
                        &values[base..][..(pos + 1) * d],
                    );
                    crate::model::kernels::attend(qh, kh, vh, scale, &mut scores, yh);
                }
                let attn = layer.o_proj.matvec_cpu(&y)?;
                x.iter_mut().zip(&attn).for_each(|(x, a)| *x += a);
                // MLP.
                let h = rms_norm(&x, &layer.post_attention_norm, eps)?;
                let gate = layer.gate_proj.matvec_cpu(&h)?;
                let up = layer.up_proj.matvec_cpu(&h)?;
                let act: Vec<f32> = gate.iter().zip(&up).map(|(g, u)| silu(*g) * u).collect();
                let mlp = layer.down_proj.matvec_cpu(&act)?;
                x.iter_mut().zip(&mlp).for_each(|(x, m)| *x += m);
            }
            if i + 1 < cfg.n_layers && wants(i + 1) {
                out.push((i + 1, vec_tensor(&x)?));
            }
        }
        cache.len = pos + 1;
        if let Some(columns) = record {
            columns.push(vec_tensor(&x)?);
        }
        let done = |taps| ForwardOutput {
            taps,
            logits: None,
            row_logits: None,
        };
        if last_layer_needed < cfg.n_layers {
            return Ok(Some(done(out)));
        }
        let normed = rms_norm(&x, &self.final_norm, eps)?;
        if wants(cfg.n_layers) {
            out.push((cfg.n_layers, vec_tensor(&normed)?));
        }
        let mut result = done(out);
        match wanted {
            LogitsWanted::None => {}
            LogitsWanted::Last => {
                let logits = self.lm_head.matvec_cpu(&normed)?;
                let n = logits.len();
                result.logits = Some(Tensor::from_vec(logits, n, &Device::Cpu)?);
            }
            LogitsWanted::From(first) => {
                ensure!(first == 0, "logits from row {first} of a 1-token call");
                let logits = self.lm_head.matvec_cpu(&normed)?;
                let n = logits.len();
                result.row_logits = Some(Tensor::from_vec(logits, (1, n), &Device::Cpu)?);
            }
        }
        Ok(Some(result))
    }
}

/// candle's `rms_norm` for one row: x / √(mean(x²) + ε) · w, the sum in f32 in order.
fn rms_norm(x: &[f32], weight: &Tensor, eps: f32) -> Result<Vec<f32>> {
    let sum2: f32 = x.iter().map(|v| v * v).sum();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    with_cpu_f32(weight, |w| {
        x.iter()
            .zip(w)
            .map(|(v, w)| *v / m * *w)
            .collect::<Vec<f32>>()
    })
    .context("RMSNorm weight")
}

/// candle's `rope` (half-split, Hugging Face and Qwen2 GGUFs) or `rope_i` (interleaved pairs,
/// llama.cpp's Llama layout) on one head at one position.
fn rotate(head: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = head.len() / 2;
    if interleaved {
        for i in 0..half {
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * cos[i] - b * sin[i];
            head[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    } else {
        for i in 0..half {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos[i] - b * sin[i];
            head[i + half] = a * sin[i] + b * cos[i];
        }
    }
}

/// candle's `silu`: x / (1 + e^(−x)).
fn silu(x: f32) -> f32 {
    x / ((-x).exp() + 1.0)
}
