//! The model side: weights, tokenizer, chat template, and the tapped forward pass.

pub mod chat;
pub mod config;
pub mod device;
pub mod embedded;
pub mod kernels;
pub mod kernels_q8;
pub mod kernels_x8;
pub mod row_pool;
pub mod source;
pub mod tokenizer;
pub mod transformer;
pub mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use candle_core::DType;

use self::chat::ChatTemplate;
use self::config::{Arch, ModelConfig};
use self::device::DeviceProfile;
use self::source::{fetch_hub_snapshot, safetensors_files, ModelSource};
use self::tokenizer::TextTokenizer;
use self::transformer::TappedModel;
use self::weights::{Precision, WeightBuilder, WeightFile};
use crate::util::sha256_file;

/// A model ready to run: weights at one precision on one device, with its tokenizer.
#[derive(Clone)]
pub struct LoadedModel {
    /// What the user called it (registry id, path or hub id).
    pub name: String,
    /// sha256 identifying the weights (of the GGUF file, or over the safetensors shards).
    pub weights_sha256: String,
    pub profile: DeviceProfile,
    pub model: Arc<TappedModel>,
    pub tokenizer: Arc<TextTokenizer>,
    pub chat_template: Option<Arc<ChatTemplate>>,
}

impl LoadedModel {
    /// The dtype computations actually run in (quantized kernels take f32 activations).
    pub fn compute_dtype(&self) -> DType {
        self.model.dtype()
    }
}

/// Loads `source` at `precision` on `profile`.
pub fn load_model(
    name: &str,
    source: &ModelSource,
    precision: Precision,
    profile: DeviceProfile,
) -> Result<LoadedModel> {
    load_model_reporting(name, source, precision, profile, &|_| {})
}

/// [`load_model`], telling `report` what takes time on the way (downloading from the hub).
pub fn load_model_reporting(
    name: &str,
    source: &ModelSource,
    precision: Precision,
    profile: DeviceProfile,
    report: &dyn Fn(String),
) -> Result<LoadedModel> {
    let device = profile.open()?;
    // Quantized kernels take f32 inputs; the rest of the network (norms, attention, residual)
    // still runs in the profile's dtype, as a quantized model on that hardware would.
    let dtype = profile.dtype;
    match source {
        ModelSource::Gguf(path) => {
            let (mut file, _) = WeightFile::open_gguf(path)?;
            let content = file.gguf_content().expect("opened as GGUF");
            let config =
                ModelConfig::from_gguf(content).with_context(|| format!("{}", path.display()))?;
            let tokenizer = TextTokenizer::from_gguf(content)
                .with_context(|| format!("{}: tokenizer", path.display()))?;
            let chat_template = ChatTemplate::from_gguf(content)?.map(Arc::new);
            // llama.cpp permutes Llama q/k rows for interleaved rotary; Qwen2 keeps the HF layout.
            let interleaved = config.arch == Arch::Llama;
            let mut builder = WeightBuilder {
                file: &mut file,
                precision,
                device,
                dtype,
            };
            let model = TappedModel::load(config, &mut builder, interleaved)?;
            Ok(LoadedModel {
                name: name.to_string(),
                weights_sha256: cached_sha256(std::slice::from_ref(path))?,
                profile,
                model: Arc::new(model),
                tokenizer: Arc::new(tokenizer),
                chat_template,
            })
        }
        ModelSource::HfDir(dir) => load_hf_dir(name, dir, precision, profile, device, dtype),
        ModelSource::Hub { repo, revision } => {
            let dir = fetch_hub_snapshot(repo, revision, report)?;
            report(format!(
                "reading the weights of {repo} from {}",
                dir.display()
            ));
            load_hf_dir(name, &dir, precision, profile, device, dtype)
        }
    }
}

fn load_hf_dir(
    name: &str,
    dir: &Path,
    precision: Precision,
    profile: DeviceProfile,
    device: candle_core::Device,
    dtype: DType,
) -> Result<LoadedModel> {
    let config = ModelConfig::from_hf_config(&dir.join("config.json"))?;
    let tokenizer = TextTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"))?;
    // A model without a template prompts with plain text; a template that does not compile is
    // an error, never silently replaced by plain text (the prompts would not be the model's).
    // (A missing tokenizer_config.json is fine: a chat_template.jinja beside it still counts.)
    let config_path = dir.join("tokenizer_config.json");
    let chat_template = ChatTemplate::from_tokenizer_config(&config_path)
        .with_context(|| format!("{}: chat template", config_path.display()))?
        .map(Arc::new);
    let files = safetensors_files(dir)?;
    let mut file = WeightFile::open_safetensors(&files)?;
    // Native precision has no stored quantized tensors to keep in a float checkpoint.
    let mut builder = WeightBuilder {
        file: &mut file,
        precision,
        device,
        dtype,
    };
    let model = TappedModel::load(config, &mut builder, false)?;
    Ok(LoadedModel {
        name: name.to_string(),
        weights_sha256: cached_sha256(&files)?,
        profile,
        model: Arc::new(model),
        tokenizer: Arc::new(tokenizer),
        chat_template,
    })
}

/// sha256 of the weight files, computed once per process per file set, always from their
/// contents: it is what ties a bundle to the verifier's weights, so a damaged copy must not
/// pass for the real one. A hub cache blob is named by its sha256; one whose contents disagree
/// is reported as damaged rather than used.
fn cached_sha256(files: &[PathBuf]) -> Result<String> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<PathBuf>, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap().get(files) {
        return Ok(h.clone());
    }
    let mut parts = Vec::with_capacity(files.len());
    for f in files {
        let blob_name = std::fs::read_link(f)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().to_string()))
            .filter(|n| n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit()));
        let actual = sha256_file(f)?;
        if let Some(named) = blob_name.filter(|named| !named.eq_ignore_ascii_case(&actual)) {
            anyhow::bail!(
                "{}: the cached file is damaged (its contents hash to {actual}, the cache named \
                 it {named}); delete it from the Hugging Face cache and download it again",
                f.display()
            );
        }
        parts.push(actual);
    }
    let digest = if parts.len() == 1 {
        parts[0].clone()
    } else {
        crate::util::sha256_bytes(parts.join("\n").as_bytes())
    };
    cache.lock().unwrap().insert(files.to_vec(), digest.clone());
    Ok(digest)
}
#[cfg(test)]
mod decode_step_tests;
#[cfg(test)]
mod hub_tests;
#[cfg(test)]
mod kernels_x8_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;
