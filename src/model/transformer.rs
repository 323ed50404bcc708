//! The tapped forward pass: a Llama/Qwen2 decoder that can hand out the residual stream at any
//! chosen set of hidden-state indices (Hugging Face `output_hidden_states` convention: 0 = token
//! embeddings, l = residual stream entering decoder layer l, L = after the final norm), and that
//! stops early when no later layer is needed.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor, D};

use super::config::{Arch, ModelConfig};
use super::weights::{Linear, Precision, WeightBuilder};

mod decode_step;
pub use decode_step::FastPathRefusal;

/// Rotary tables are built up to this many positions (or the model's own limit if lower).
const MAX_ROTARY_POSITIONS: usize = 32_768;

#[derive(Debug, Clone)]
struct DecoderLayer {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    input_norm: Tensor,
    post_attention_norm: Tensor,
}

/// The weights of one model at one precision on one device. Immutable, so several verifiers
/// can share it; the per-sequence state lives in [`KvCache`].
#[derive(Debug, Clone)]
pub struct TappedModel {
    pub config: ModelConfig,
    pub precision: Precision,
    /// The weights file stores the linear layers block-quantized, so this model's `native`
    /// form runs quantized kernels that round activations to 8-bit blocks.
    pub native_rounds_activations: bool,
    device: Device,
    dtype: DType,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    final_norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    /// llama.cpp permutes Llama q/k rows for interleaved rotary; Hugging Face files and Qwen2
    /// GGUFs use the half-split ("neox") layout.
    rope_interleaved: bool,
    /// A decoder layer this copy leaves out (the residual stream passes it unchanged): a real,
    /// cheaper computation that a cheating provider could run, used to test that verifiers
    /// catch it. None for every model loaded from weights.
    skipped_layer: Option<usize>,
    /// Attention sees only the last W positions (the query's own included) and the cache keeps
    /// only the W − 1 before it: Mistral's sliding window, or the kv-window cheat
    /// (engine::cheat). None: full causal attention.
    attention_window: Option<usize>,
    /// One-token forwards run the fast step where it applies (decode_step.rs).
    fast_decode: bool,
}

/// Keys and values of the positions processed so far, per layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    /// The fast decode step's rows; when set, `layers` is empty and these hold the cache.
    fast: Option<decode_step::FastKv>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What one forward call returns.
#[derive(Debug)]
pub struct ForwardOutput {
    /// (hidden-state index, [tokens, hidden]) for each requested tap, in the compute dtype.
    pub taps: Vec<(usize, Tensor)>,
    /// Logits of the last position, [vocab] in f32, when asked for.
    pub logits: Option<Tensor>,
    /// Logits of the positions `first_logit_row..` of this call, [rows, vocab] in f32, when
    /// asked for (`forward_with_logits_from`): what a verifier's token checks need.
    pub row_logits: Option<Tensor>,
}

/// Which positions of a forward call go through the final norm and lm_head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogitsWanted {
    None,
    Last,
    From(usize),
}

impl TappedModel {
    pub fn load(
        config: ModelConfig,
        builder: &mut WeightBuilder<'_>,
        rope_interleaved: bool,
    ) -> Result<Self> {
        config.validate()?;
        let qkv_bias = config.arch == Arch::Qwen2;
        let embed_tokens = builder.float("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = format!("model.layers.{i}");
            let bias = |name: &str| qkv_bias.then(|| format!("{p}.self_attn.{name}.bias"));
            let (qb, kb, vb) = (bias("q_proj"), bias("k_proj"), bias("v_proj"));
            layers.push(DecoderLayer {
                q_proj: builder.linear(&format!("{p}.self_attn.q_proj.weight"), qb.as_deref())?,
                k_proj: builder.linear(&format!("{p}.self_attn.k_proj.weight"), kb.as_deref())?,
                v_proj: builder.linear(&format!("{p}.self_attn.v_proj.weight"), vb.as_deref())?,
                o_proj: builder.linear(&format!("{p}.self_attn.o_proj.weight"), None)?,
                gate_proj: builder.linear(&format!("{p}.mlp.gate_proj.weight"), None)?,
                up_proj: builder.linear(&format!("{p}.mlp.up_proj.weight"), None)?,
                down_proj: builder.linear(&format!("{p}.mlp.down_proj.weight"), None)?,
                input_norm: builder.float(&format!("{p}.input_layernorm.weight"))?,
                post_attention_norm: builder
                    .float(&format!("{p}.post_attention_layernorm.weight"))?,
            });
        }
        let final_norm = builder.float("model.norm.weight")?;
        let lm_head = if !config.tie_embeddings && builder.file.contains("lm_head.weight") {
            builder.linear("lm_head.weight", None)?
        } else if builder.precision == Precision::Native
            && builder.file.stores_quantized("model.embed_tokens.weight")
        {
            // The model's own form of a tied output, as llama.cpp runs it: the stored
            // (block-quantized) embedding rows, not their dequantized f32 copy (≈ 4× the bytes).
            builder.linear("model.embed_tokens.weight", None)?
        } else {
            builder.linear_from_float(&embed_tokens, "lm_head (tied to embeddings)")?
        };
        let (cos, sin) = rotary_tables(&config, &builder.device, builder.dtype)?;
        let attention_window = config.sliding_window;
        let native_rounds_activations = builder
            .file
            .stores_quantized("model.layers.0.self_attn.q_proj.weight");
        Ok(TappedModel {
            config,
            precision: builder.precision,
            native_rounds_activations,
            device: builder.device.clone(),
            dtype: builder.dtype,
            embed_tokens,
            layers,
            final_norm,
            lm_head,
            cos,
            sin,
            rope_interleaved,
            skipped_layer: None,
            attention_window,
            fast_decode: true,
        })
    }

    /// This model with decoder layer `index` left out of every forward pass (a cheat: the
    /// residual stream skips it). Shares the weights.
    pub fn with_layer_skipped(&self, index: usize) -> Result<TappedModel> {
        ensure!(
            index < self.config.n_layers,
            "layer {index} is beyond the model's {} layers",
            self.config.n_layers
        );
        Ok(TappedModel {
            skipped_layer: Some(index),
            ..self.clone()
        })
    }

    /// This model with attention limited to the last `window` positions (the KV cache
    /// truncated to them): a cheat when the model has no window of its own. Shares the weights.
    pub fn with_attention_window(&self, window: usize) -> Result<TappedModel> {
        ensure!(
            window >= 1,
            "an attention window of 0 positions sees nothing"
        );
        Ok(TappedModel {
            attention_window: Some(window),
            ..self.clone()
        })
    }

    /// The attention window in effect (Mistral's sliding window, or a cheat's); None: full.
    pub fn attention_window(&self) -> Option<usize> {
        self.attention_window
    }

    /// This model with every decoder layer's seven linear weights replaced by `change(layer,
    /// name, weight)` ([out, in], the compute dtype): how a substitute model of the same shape
    /// is made (engine::cheat's low-rank change). Float weights only.
    pub fn with_linear_weights_changed(
        &self,
        mut change: impl FnMut(usize, &str, &Tensor) -> Result<Tensor>,
    ) -> Result<TappedModel> {
        let mut layers = self.layers.clone();
        for (index, layer) in layers.iter_mut().enumerate() {
            for (name, linear) in [
                ("q_proj", &mut layer.q_proj),
                ("k_proj", &mut layer.k_proj),
                ("v_proj", &mut layer.v_proj),
                ("o_proj", &mut layer.o_proj),
                ("gate_proj", &mut layer.gate_proj),
                ("up_proj", &mut layer.up_proj),
                ("down_proj", &mut layer.down_proj),
            ] {
                let weight = linear.dense_weight().with_context(|| {
                    format!(
                        "layer {index} {name} is block-quantized: only float weights can be \
                         changed (use precision full)"
                    )
                })?;
                let changed = change(index, name, weight)?;
                ensure!(
                    changed.dims() == weight.dims(),
                    "layer {index} {name}: a changed weight must keep its shape {:?}",
                    weight.dims()
                );
                *linear = linear.with_dense_weight(changed.to_dtype(weight.dtype())?);
            }
        }
        Ok(TappedModel {
            layers,
            ..self.clone()
        })
    }

    /// This model with every linear of decoder layer `index` block-quantized to `ty` (a
    /// cheat: one layer's weights cheaper, the others untouched). The other layers share the
    /// weights.
    pub fn with_layer_requantized(
        &self,
        index: usize,
        ty: candle_core::quantized::GgmlDType,
    ) -> Result<TappedModel> {
        ensure!(
            index < self.config.n_layers,
            "layer {index} is beyond the model's {} layers",
            self.config.n_layers
        );
        let mut model = self.clone();
        let layer = &mut model.layers[index];
        for linear in [
            &mut layer.q_proj,
            &mut layer.k_proj,
            &mut layer.v_proj,
            &mut layer.o_proj,
            &mut layer.gate_proj,
            &mut layer.up_proj,
            &mut layer.down_proj,
        ] {
            *linear = linear
                .requantized(ty, &self.device)
                .with_context(|| format!("requantizing layer {index}"))?;
        }
        Ok(model)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of hidden-state indices (n_layers + 1: embeddings .. final norm).
    pub fn n_hidden_states(&self) -> usize {
        self.config.n_layers + 1
    }

    /// Bytes taken by the weights.
    pub fn weight_bytes(&self) -> usize {
        let t = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [
                    &l.q_proj,
                    &l.k_proj,
                    &l.v_proj,
                    &l.o_proj,
                    &l.gate_proj,
                    &l.up_proj,
                    &l.down_proj,
                ]
                .iter()
                .map(|x| x.bytes())
                .sum::<usize>()
                    + t(&l.input_norm)
                    + t(&l.post_attention_norm)
            })
            .sum();
        layers + t(&self.embed_tokens) + t(&self.final_norm) + self.lm_head.bytes()
    }

    /// Runs a short prefill and one cached decode step through every layer and the lm_head, and
    /// waits for the result. On a GPU the first use of each kernel in a fresh process loads it,
    /// and on a fresh machine the driver also compiles its PTX (≈15 s for candle's kernels):
    /// doing that here, announced, keeps it out of the first trial's timings and progress.
    pub fn warm_up(&self) -> Result<()> {
        let ids: Vec<u32> = (0..4u32)
            .map(|id| id % self.config.vocab_size as u32)
            .collect();
        let mut cache = self.new_cache();
        self.forward(&ids, &mut cache, &[], true)?;
        let out = self.forward(&ids[..1], &mut cache, &[self.config.n_layers], true)?;
        // Reading a value back waits for queued device work.
        let logits = out
            .logits
            .context("warm-up: the forward pass gave no logits")?;
        let sum = logits.sum_all()?.to_scalar::<f32>()?;
        ensure!(
            sum.is_finite(),
            "warm-up: the logits are not finite ({sum})"
        );
        Ok(())
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.config.n_layers],
            len: 0,
            fast: None,
        }
    }

    /// Positions a sequence may use here: the model's context, capped by the rotary table
    /// built for it.
    pub fn max_positions(&self) -> usize {
        self.cos.dims().first().copied().unwrap_or(0)
    }

    /// Runs `ids` (the positions following those in `cache`) through the model.
    ///
    /// `taps` are hidden-state indices in 0..=n_layers. With `want_logits` false the pass stops
    /// after the last layer a tap needs (no later layers, no lm_head); the cache then only
    /// holds the layers that ran, which is all the next call of the same kind needs.
    pub fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        taps: &[usize],
        want_logits: bool,
    ) -> Result<ForwardOutput> {
        let wanted = if want_logits {
            LogitsWanted::Last
        } else {
            LogitsWanted::None
        };
        self.forward_inner(ids, cache, taps, wanted, None)
    }

    /// Like `forward`, through every layer, also handing out in `columns` the residual stream
    /// entering each decoder layer (columns 0..L) and entering the final norm (column L), each
    /// [tokens, hidden] in the compute dtype: what the inferencer's commitment store keeps
    /// (docs/commitment.md).
    pub fn forward_recording(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        taps: &[usize],
        want_logits: bool,
        columns: &mut Vec<Tensor>,
    ) -> Result<ForwardOutput> {
        let wanted = if want_logits {
            LogitsWanted::Last
        } else {
            LogitsWanted::None
        };
        columns.clear();
        self.forward_inner(ids, cache, taps, wanted, Some(columns))
    }

    /// Decoder layer `index` alone over positions 0..n, given the residual stream entering it
    /// at each of them ([n, hidden]): causal attention over those states, a fresh cache. What
    /// a segment verifier recomputes from an opened column (docs/commitment.md).
    pub fn run_layer(&self, index: usize, entering: &Tensor) -> Result<Tensor> {
        ensure!(
            index < self.config.n_layers,
            "layer {index} is beyond the model's {} layers",
            self.config.n_layers
        );
        let (n, hidden) = entering.dims2()?;
        ensure!(
            hidden == self.config.hidden,
            "a column {hidden} wide for a model {} wide",
            self.config.hidden
        );
        ensure!(
            n > 0 && n <= self.max_positions(),
            "{n} positions for a model of {} positions",
            self.max_positions()
        );
        let x = entering.to_dtype(self.dtype)?;
        if self.skipped_layer == Some(index) {
            return Ok(x);
        }
        let mut cache = self.new_cache();
        let mask = causal_mask(n, 0, &self.device, self.dtype)?;
        self.decoder_layer(&self.layers[index], &x, index, &mut cache, 0, mask.as_ref())
    }

    /// Final norm and lm_head over residual-stream rows entering the final norm ([n, hidden]):
    /// [n, vocab] logits in f32.
    pub fn final_logits(&self, entering_norm: &Tensor) -> Result<Tensor> {
        let x = entering_norm.to_dtype(self.dtype)?;
        let normed = candle_nn::ops::rms_norm(&x, &self.final_norm, self.config.rms_eps as f32)?;
        let normed = self.to_matmul_dtype(&normed)?;
        Ok(self.lm_head.forward(&normed)?.to_dtype(DType::F32)?)
    }

    /// The token embeddings of `ids` ([n, hidden], compute dtype): column 0 of a commitment.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let input = Tensor::new(ids, &self.device)?;
        Ok(self.embed_tokens.index_select(&input, 0)?)
    }

    /// Like `forward`, through every layer, the final norm and the lm_head for the positions
    /// `first_row..ids.len()` of this call (`row_logits`): the verifier's prefill, which
    /// recomputes the logits that chose each generated token.
    pub fn forward_with_logits_from(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        taps: &[usize],
        first_row: usize,
    ) -> Result<ForwardOutput> {
        ensure!(
            first_row < ids.len(),
            "logits asked from row {first_row} of a {}-token call",
            ids.len()
        );
        self.forward_inner(ids, cache, taps, LogitsWanted::From(first_row), None)
    }

    fn forward_inner(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        taps: &[usize],
        wanted: LogitsWanted,
        mut record: Option<&mut Vec<Tensor>>,
    ) -> Result<ForwardOutput> {
        let want_logits = wanted != LogitsWanted::None;
        ensure!(!ids.is_empty(), "forward called with no tokens");
        let n_layers = self.config.n_layers;
        if let Some(&bad) = taps.iter().find(|&&t| t > n_layers) {
            bail!(
                "hidden-state index {bad} is beyond the model's {n_layers} layers (0..={n_layers})"
            );
        }
        let offset = cache.len;
        if offset + ids.len() > self.cos.dim(0)? {
            bail!(
                "sequence of {} tokens exceeds the {} positions this model supports here",
                offset + ids.len(),
                self.cos.dim(0)?
            );
        }
        let wants = |index: usize| taps.contains(&index);
        let last_layer_needed = if want_logits || record.is_some() {
            n_layers
        } else {
            // Tap l needs layers 0..l; tap L needs every layer plus the final norm.
            taps.iter().copied().max().unwrap_or(0)
        };

        if ids.len() == 1 && self.fast_decode_refusal().is_none() {
            let record = record.as_deref_mut();
            if let Some(out) =
                self.fast_step(ids[0], cache, taps, wanted, last_layer_needed, record)?
            {
                return Ok(out);
            }
        }
        if let Some(fast) = cache.fast.take() {
            cache.layers = fast.to_candle(self, offset)?;
        }

        let input = Tensor::new(ids, &self.device)?;
        let mut x = self.embed_tokens.index_select(&input, 0)?;
        let mut out = Vec::with_capacity(taps.len());
        if wants(0) {
            out.push((0, x.clone()));
        }
        let mask = causal_mask(ids.len(), offset, &self.device, self.dtype)?;
        for (i, layer) in self.layers.iter().enumerate().take(last_layer_needed) {
            if let Some(columns) = record.as_deref_mut() {
                columns.push(x.clone());
            }
            if self.skipped_layer != Some(i) {
                x = self.decoder_layer(layer, &x, i, cache, offset, mask.as_ref())?;
            }
            if i + 1 < n_layers && wants(i + 1) {
                out.push((i + 1, x.clone()));
            }
        }
        cache.len = offset + ids.len();
        if let Some(columns) = record {
            columns.push(x.clone());
        }
        if last_layer_needed < n_layers {
            return Ok(ForwardOutput {
                taps: out,
                logits: None,
                row_logits: None,
            });
        }
        let normed = candle_nn::ops::rms_norm(&x, &self.final_norm, self.config.rms_eps as f32)?;
        if wants(n_layers) {
            out.push((n_layers, normed.clone()));
        }
        if let LogitsWanted::From(first) = wanted {
            let rows = normed.narrow(0, first, ids.len() - first)?;
            let rows = self.to_matmul_dtype(&rows)?;
            let row_logits = self.lm_head.forward(&rows)?.to_dtype(DType::F32)?;
            return Ok(ForwardOutput {
                taps: out,
                logits: None,
                row_logits: Some(row_logits),
            });
        }
        let logits = if want_logits {
            let last = normed.i((ids.len() - 1)..ids.len())?;
            let last = self.to_matmul_dtype(&last)?;
            Some(
                self.lm_head
                    .forward(&last)?
                    .squeeze(0)?
                    .to_dtype(DType::F32)?,
            )
        } else {
            None
        };
        Ok(ForwardOutput {
            taps: out,
            logits,
            row_logits: None,
        })
    }

    /// Quantized kernels take f32 activations; float weights take the compute dtype.
    fn to_matmul_dtype(&self, x: &Tensor) -> Result<Tensor> {
        Ok(if self.precision.uses_quantized_kernels() {
            x.to_dtype(DType::F32)?
        } else {
            x.clone()
        })
    }

    fn decoder_layer(
        &self,
        layer: &DecoderLayer,
        x: &Tensor,
        index: usize,
        cache: &mut KvCache,
        offset: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let eps = self.config.rms_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &layer.input_norm, eps)?;
        let attn = self.attention(layer, &h, index, cache, offset, mask)?;
        let x = (x + attn)?;
        let h = candle_nn::ops::rms_norm(&x, &layer.post_attention_norm, eps)?;
        let h = self.to_matmul_dtype(&h)?;
        let gate = candle_nn::ops::silu(&layer.gate_proj.forward(&h)?)?;
        let up = layer.up_proj.forward(&h)?;
        let mlp = layer
            .down_proj
            .forward(&(gate * up)?)?
            .to_dtype(self.dtype)?;
        Ok((x + mlp)?)
    }

    fn attention(
        &self,
        layer: &DecoderLayer,
        h: &Tensor,
        index: usize,
        cache: &mut KvCache,
        offset: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (seq, _) = h.dims2()?;
        let (n_heads, n_kv, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let h = self.to_matmul_dtype(h)?;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.to_dtype(self.dtype)?
                .reshape((seq, n, d))?
                .transpose(0, 1)?
                .contiguous()?)
        };
        let q = heads(layer.q_proj.forward(&h)?, n_heads)?;
        let k = heads(layer.k_proj.forward(&h)?, n_kv)?;
        let v = heads(layer.v_proj.forward(&h)?, n_kv)?;
        let q = self.rotate(&q, offset)?;
        let k = self.rotate(&k, offset)?;

        let (k, v) = match &cache.layers[index] {
            Some((pk, pv)) if offset > 0 => (
                Tensor::cat(&[pk, &k], 1)?.contiguous()?,
                Tensor::cat(&[pv, &v], 1)?.contiguous()?,
            ),
            _ => (k, v),
        };
        // The keys held here are those of the last positions before this call, then this
        // call's: the first of them is at `key_start`.
        let key_start = offset + seq - k.dim(1)?;
        let windowed_mask;
        let mask = match self.attention_window {
            Some(window) => {
                // The next call's first query sees back to W − 1 positions before it.
                let keep = (window - 1).min(k.dim(1)?);
                let from = k.dim(1)? - keep;
                cache.layers[index] = (keep > 0)
                    .then(|| -> Result<(Tensor, Tensor)> {
                        Ok((
                            k.narrow(1, from, keep)?.contiguous()?,
                            v.narrow(1, from, keep)?.contiguous()?,
                        ))
                    })
                    .transpose()?;
                windowed_mask =
                    window_mask(seq, offset, key_start, k.dim(1)?, window, &self.device)?;
                windowed_mask.as_ref()
            }
            None => {
                cache.layers[index] = Some((k.clone(), v.clone()));
                mask
            }
        };

        // Grouped-query attention without copying K/V: query heads sharing a K/V head are
        // stacked along the row axis, so each group is one batched matmul.
        let group = n_heads / n_kv;
        let q = q.reshape((n_kv, group * seq, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(&m.repeat((group, 1))?)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(self.dtype)?;
        let y = probs.matmul(&v)?; // [n_kv, group*seq, d]
        let y = y
            .reshape((n_heads, seq, d))?
            .transpose(0, 1)?
            .reshape((seq, n_heads * d))?;
        let y = self.to_matmul_dtype(&y)?;
        Ok(layer.o_proj.forward(&y)?.to_dtype(self.dtype)?)
    }

    /// Applies rotary embeddings to [heads, seq, head_dim] starting at position `offset`.
    fn rotate(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(1)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        let x4 = x.unsqueeze(0)?;
        let y = if self.rope_interleaved {
            candle_nn::rotary_emb::rope_i(&x4, &cos, &sin)?
        } else {
            candle_nn::rotary_emb::rope(&x4, &cos, &sin)?
        };
        Ok(y.squeeze(0)?)
    }
}

/// Additive mask [seq, keys] for attention limited to the last `window` positions: query i
/// (position offset + i) sees key j (position key_start + j) when offset + i − window < key
/// position ≤ offset + i. None when every query sees every key.
fn window_mask(
    seq: usize,
    offset: usize,
    key_start: usize,
    keys: usize,
    window: usize,
    device: &Device,
) -> Result<Option<Tensor>> {
    let visible = |i: usize, j: usize| {
        let (query, key) = (offset + i, key_start + j);
        key <= query && key + window > query
    };
    if (0..seq).all(|i| (0..keys).all(|j| visible(i, j))) {
        return Ok(None);
    }
    let values: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..keys).map(move |j| {
                if visible(i, j) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(values, (seq, keys), device)?))
}

/// Additive mask [seq, offset+seq]: 0 where query i may see key j (j ≤ offset+i), −∞ elsewhere.
/// None for a single query, which may see everything before it.
fn causal_mask(
    seq: usize,
    offset: usize,
    device: &Device,
    _dtype: DType,
) -> Result<Option<Tensor>> {
    if seq == 1 {
        return Ok(None);
    }
    let total = offset + seq;
    let values: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(values, (seq, total), device)?))
}

fn rotary_tables(cfg: &ModelConfig, device: &Device, dtype: DType) -> Result<(Tensor, Tensor)> {
    let d = cfg.head_dim;
    let positions = cfg.max_positions.clamp(1, MAX_ROTARY_POSITIONS);
    let inv_freq: Vec<f32> = (0..d / 2)
        .map(|i| {
            let base = 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d as f64);
            match cfg.rope_scaling {
                None => base as f32,
                Some(s) => llama3_scaled_frequency(base, &s) as f32,
            }
        })
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, d / 2), device)?;
    let pos = Tensor::arange(0u32, positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    let angles = pos.broadcast_mul(&inv_freq)?;
    Ok((
        angles.cos()?.to_dtype(dtype)?,
        angles.sin()?.to_dtype(dtype)?,
    ))
}

/// Llama 3.1's rule: keep high frequencies, divide low ones by `factor`, blend in between.
fn llama3_scaled_frequency(freq: f64, s: &super::config::Llama3RopeScaling) -> f64 {
    let old = s.original_max_position_embeddings as f64;
    let low_wavelen = old / s.low_freq_factor;
    let high_wavelen = old / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    if wavelen < high_wavelen {
        freq
    } else if wavelen > low_wavelen {
        freq / s.factor
    } else {
        let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}

/// Index of the largest logits, best first.
pub fn top_k_ids(logits: &Tensor, k: usize) -> Result<Vec<u32>> {
    let v: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    idx.sort_by(|&a, &b| v[b as usize].total_cmp(&v[a as usize]));
    idx.truncate(k);
    Ok(idx)
}

#[allow(unused)]
fn last_dim(t: &Tensor) -> Result<usize> {
    Ok(t.dim(D::Minus1)?)
}
