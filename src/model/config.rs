//! Architecture hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use serde::Deserialize;

/// The transformer families the tapped forward pass implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3.x, SmolLM, Mistral: RMSNorm, SwiGLU, rotary, no biases.
    Llama,
    /// Qwen2 / Qwen2.5: like Llama plus q/k/v biases.
    Qwen2,
}

/// Llama 3.1-style frequency-dependent rotary scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_positions: usize,
    pub tie_embeddings: bool,
    /// Attention over the last this-many positions only (Mistral's sliding window); None: full
    /// causal attention.
    pub sliding_window: Option<usize>,
}

impl ModelConfig {
    /// Reads the `<arch>.*` keys llama.cpp writes.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let arch_name = gguf_string(content, "general.architecture")?;
        let arch = match arch_name.as_str() {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => bail!(
                "GGUF general.architecture = `{other}` is not supported (supported: llama, mistral, qwen2)"
            ),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let get_usize = |k: &str| -> Result<usize> {
            let name = key(k);
            let v = content
                .metadata
                .get(&name)
                .ok_or_else(|| anyhow!("GGUF metadata key `{name}` is missing"))?;
            Ok(v.to_u64()
                .or_else(|_| v.to_u32().map(u64::from))
                .or_else(|_| v.to_i32().map(|x| x as u64))
                .with_context(|| format!("GGUF metadata key `{name}` is not an integer"))?
                as usize)
        };
        let n_heads = get_usize("attention.head_count")?;
        let hidden = get_usize("embedding_length")?;
        let n_kv_heads = get_usize("attention.head_count_kv").unwrap_or(n_heads);
        let head_dim = get_usize("attention.key_length").unwrap_or(hidden / n_heads);
        let rms_eps = content
            .metadata
            .get(&key("attention.layer_norm_rms_epsilon"))
            .map(|v| v.to_f32())
            .transpose()?
            .unwrap_or(1e-5) as f64;
        let rope_theta = content
            .metadata
            .get(&key("rope.freq_base"))
            .map(|v| v.to_f32())
            .transpose()?
            .unwrap_or(10_000.0) as f64;
        let vocab_size = match content.metadata.get("tokenizer.ggml.tokens") {
            Some(v) => v.to_vec()?.len(),
            None => content
                .tensor_infos
                .get("token_embd.weight")
                .map(|t| t.shape.dims()[0])
                .ok_or_else(|| {
                    anyhow!("GGUF has neither tokenizer.ggml.tokens nor token_embd.weight")
                })?,
        };
        let tie_embeddings = !content.tensor_infos.contains_key("output.weight");
        Ok(ModelConfig {
            arch,
            n_layers: get_usize("block_count")?,
            hidden,
            intermediate: get_usize("feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            rms_eps,
            rope_theta,
            rope_scaling: None,
            max_positions: get_usize("context_length").unwrap_or(4096),
            tie_embeddings,
            sliding_window: None,
        })
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let text = crate::util::read_text(path, crate::util::MAX_MODEL_TEXT_BYTES)?;
        let raw: HfConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid Hugging Face config.json", path.display()))?;
        let arch = match raw.model_type.as_str() {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => bail!(
                "{}: model_type `{other}` is not supported (supported: llama, mistral, qwen2)",
                path.display()
            ),
        };
        let at = |field: &str| format!("{}: {field}", path.display());
        // Features this forward pass does not compute are refused, never run as plain Llama.
        if let Some(act) = raw
            .hidden_act
            .as_deref()
            .filter(|a| !matches!(*a, "silu" | "swish"))
        {
            bail!("{}: `{act}` is not supported (only silu)", at("hidden_act"));
        }
        if raw.attention_bias == Some(true) && arch == Arch::Llama {
            bail!(
                "{}: attention biases are not supported for llama/mistral",
                at("attention_bias")
            );
        }
        if raw.mlp_bias == Some(true) {
            bail!("{}: MLP biases are not supported", at("mlp_bias"));
        }
        // transformers >= 5 keeps theta and scaling in `rope_parameters`; older configs in
        // `rope_theta` and `rope_scaling` (whose type key was once `type`).
        let rope_parameters = raw.rope_parameters;
        let rope_theta = raw
            .rope_theta
            .or(rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(10_000.0);
        let (scaling, scaling_field) = match (raw.rope_scaling, rope_parameters) {
            (Some(s), _) => (Some(s), "rope_scaling"),
            (None, p) => (p, "rope_parameters"),
        };
        let rope_scaling = match scaling {
            Some(s) => match s.rope_type.or(s.legacy_type).as_deref() {
                Some("llama3") => Some(Llama3RopeScaling {
                    factor: s.factor.unwrap_or(8.0),
                    low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                    high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                    original_max_position_embeddings: s
                        .original_max_position_embeddings
                        .unwrap_or(8192),
                }),
                None | Some("default") => None,
                Some(other) => bail!(
                    "{}: rope type `{other}` is not supported (supported: llama3, default)",
                    at(scaling_field)
                ),
            },
            None => None,
        };
        // transformers' defaults: Mistral slides (4096 when the key is absent, off when null);
        // Qwen2 only with `use_sliding_window: true`; Llama never. Mistral's window is computed
        // (windowed attention, the KV cache truncated to it), so it no longer bounds the
        // context. Qwen2's window applies from layer `max_window_layers` on, which this forward
        // pass does not model: there the window still bounds the context (where full causal
        // attention and the window agree).
        let mut max_positions = raw.max_position_embeddings.unwrap_or(4096);
        let mut sliding_window = None;
        match raw.model_type.as_str() {
            "mistral" => {
                sliding_window = match &raw.sliding_window {
                    None => Some(4096),
                    Some(w) => w.as_u64().map(|w| w as usize),
                }
                .filter(|&w| w > 0);
            }
            "qwen2" if raw.use_sliding_window == Some(true) => {
                if let Some(window) = raw
                    .sliding_window
                    .as_ref()
                    .and_then(|w| w.as_u64())
                    .filter(|&w| w > 0)
                {
                    max_positions = max_positions.min(window as usize);
                }
            }
            _ => {}
        }
        let n_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        Ok(ModelConfig {
            arch,
            n_layers: raw.num_hidden_layers,
            hidden: raw.hidden_size,
            intermediate: raw.intermediate_size,
            n_heads: raw.num_attention_heads,
            n_kv_heads,
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size / raw.num_attention_heads),
            vocab_size: raw.vocab_size,
            rms_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_positions,
            tie_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            sliding_window,
        })
    }

    pub fn validate(&self) -> Result<()> {
        if self.n_heads == 0
            || self.n_kv_heads == 0
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            bail!(
                "attention heads {} are not a multiple of key/value heads {}",
                self.n_heads,
                self.n_kv_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!(
                "head dimension {} is odd; rotary embeddings need an even one",
                self.head_dim
            );
        }
        Ok(())
    }
}

fn gguf_string(content: &gguf_file::Content, key: &str) -> Result<String> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| anyhow!("GGUF metadata key `{key}` is missing"))?
        .to_string()
        .cloned()
        .with_context(|| format!("GGUF metadata key `{key}` is not a string"))
}

#[derive(Deserialize)]
struct HfRopeScaling {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    /// Only in transformers >= 5 `rope_parameters`.
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRopeScaling>,
    rope_parameters: Option<HfRopeScaling>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    /// Absent, null or a number: absent and null mean different things for Mistral.
    #[serde(default, deserialize_with = "keep_null")]
    sliding_window: Option<serde_json::Value>,
    use_sliding_window: Option<bool>,
}

/// Deserializes a present field as `Some(value)`, a JSON null included, so that an absent
/// field (`None` via `default`) and an explicit null can be told apart.
fn keep_null<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}
