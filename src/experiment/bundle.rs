//! Inference bundles: what an inferencer commits to and hands to verifiers, possibly on another
//! machine. A directory with `manifest.json` and `hidden_states.safetensors` (one tensor per
//! sampled layer, `layer.<L>`, shape [generated tokens, hidden]); nothing executable, and
//! numpy/torch read it directly. A bundle from elsewhere is untrusted: sizes are bounded, the
//! tensor file's sha256 is checked before it is parsed, and only these two names are opened.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::engine::capture::CapturedStates;
use crate::engine::sampling::SamplingParams;
use crate::model::device::{dtype_from_name, dtype_name};
use crate::util::{sha256_bytes, sha256_file};

pub const BUNDLE_FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const TENSORS_FILE: &str = "hidden_states.safetensors";
/// A manifest holds text and ids, never tensors.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Hidden states of 1M tokens × 8 layers × 16k wide in f32 would be 512 GiB; 32 GiB is plenty.
const MAX_TENSOR_BYTES: u64 = 32 << 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    pub name: String,
    pub weights_sha256: String,
    pub n_layers: usize,
    pub hidden: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    pub prefill_s: f64,
    pub decode_s: f64,
    pub total_s: f64,
    pub tokens_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorFile {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub model: ModelIdentity,
    pub precision: String,
    pub device: String,
    /// The dtype the inference computed and captured in.
    pub dtype: String,
    /// sha256 over the tokenizer's vocabulary and merges.
    pub tokenizer: String,
    pub prompt_text: String,
    pub prompt_ids: Vec<u32>,
    pub output_ids: Vec<u32>,
    pub output_text: String,
    pub sampling: SamplingParams,
    pub layers: Vec<usize>,
    pub timings: Timings,
    pub hidden_states: TensorFile,
    /// Where the bundle came from in an experiment run (absent for a plain `infer`).
    #[serde(default)]
    pub context: Option<BundleContext>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleContext {
    pub experiment: String,
    pub trial: usize,
    pub prompt_category: String,
    pub prompt_id: String,
}

pub struct Bundle {
    pub manifest: Manifest,
    pub states: CapturedStates,
}

/// Writes a bundle into `dir` (created if needed; existing bundle files are replaced).
pub fn write_bundle(dir: &Path, mut manifest: Manifest, states: &CapturedStates) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating bundle directory {}", dir.display()))?;
    let st_dtype = match states.dtype {
        DType::F32 => safetensors::Dtype::F32,
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        other => bail!("cannot write hidden states of dtype {other:?}"),
    };
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = states
        .layers
        .iter()
        .zip(&states.data)
        .map(|(layer, data)| {
            let view = safetensors::tensor::TensorView::new(
                st_dtype,
                vec![states.rows, states.hidden],
                data,
            )
            .map_err(|e| anyhow!("layer {layer}: {e}"))?;
            Ok((format!("layer.{layer}"), view))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::tensor::serialize(views, None).context("serializing hidden states")?;
    manifest.hidden_states = TensorFile {
        file: TENSORS_FILE.into(),
        sha256: sha256_bytes(&bytes),
        bytes: bytes.len() as u64,
    };
    manifest.layers = states.layers.clone();
    std::fs::write(dir.join(TENSORS_FILE), &bytes)?;
    std::fs::write(
        dir.join(MANIFEST_FILE),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(())
}

/// Reads and checks a bundle. Everything is validated before use: sizes, checksum, names,
/// shapes, dtypes.
pub fn read_bundle(dir: &Path) -> Result<Bundle> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let size = std::fs::metadata(&manifest_path)
        .with_context(|| format!("{}: no bundle manifest", manifest_path.display()))?
        .len();
    ensure!(
        size <= MAX_MANIFEST_BYTES,
        "{}: {size} bytes exceeds the {MAX_MANIFEST_BYTES}-byte limit",
        manifest_path.display()
    );
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(&manifest_path)?)
        .with_context(|| format!("{}: not a valid bundle manifest", manifest_path.display()))?;
    ensure!(
        manifest.format_version == BUNDLE_FORMAT_VERSION,
        "{}: format_version {} is not supported (expected {BUNDLE_FORMAT_VERSION})",
        manifest_path.display(),
        manifest.format_version
    );
    // Only the one fixed name is ever opened: no path from the manifest is followed.
    ensure!(
        manifest.hidden_states.file == TENSORS_FILE,
        "{}: hidden_states.file is `{}`; only `{TENSORS_FILE}` inside the bundle is accepted",
        manifest_path.display(),
        manifest.hidden_states.file
    );
    let tensor_path = dir.join(TENSORS_FILE);
    let actual_size = std::fs::metadata(&tensor_path)
        .with_context(|| format!("{}: missing", tensor_path.display()))?
        .len();
    ensure!(
        actual_size <= MAX_TENSOR_BYTES,
        "{}: {actual_size} bytes exceeds the limit",
        tensor_path.display()
    );
    ensure!(
        actual_size == manifest.hidden_states.bytes,
        "{}: {actual_size} bytes, but the manifest says {}",
        tensor_path.display(),
        manifest.hidden_states.bytes
    );
    let sha = sha256_file(&tensor_path)?;
    ensure!(
        sha == manifest.hidden_states.sha256,
        "{}: sha256 {sha} does not match the manifest's {} — the bundle was altered or damaged",
        tensor_path.display(),
        manifest.hidden_states.sha256
    );
    let dtype = dtype_from_name(&manifest.dtype).ok_or_else(|| {
        anyhow!(
            "{}: dtype `{}` is not f32, f16 or bf16",
            manifest_path.display(),
            manifest.dtype
        )
    })?;
    let n = manifest.output_ids.len();
    let hidden = manifest.model.hidden;
    let mut layers = manifest.layers.clone();
    layers.sort_unstable();
    layers.dedup();
    ensure!(
        layers == manifest.layers,
        "{}: layers must be ascending and distinct",
        manifest_path.display()
    );
    if let Some(bad) = layers.iter().find(|&&l| l > manifest.model.n_layers) {
        bail!(
            "{}: layer {bad} is beyond the model's {} layers",
            manifest_path.display(),
            manifest.model.n_layers
        );
    }
    let bytes = std::fs::read(&tensor_path)?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        anyhow!(
            "{}: not a valid safetensors file: {e}",
            tensor_path.display()
        )
    })?;
    let mut by_name: HashMap<String, Vec<u8>> = HashMap::new();
    for (name, view) in tensors.tensors() {
        let expected_dtype = match dtype {
            DType::F32 => safetensors::Dtype::F32,
            DType::F16 => safetensors::Dtype::F16,
            _ => safetensors::Dtype::BF16,
        };
        ensure!(
            view.dtype() == expected_dtype,
            "{}: tensor `{name}` is {:?}, manifest says {}",
            tensor_path.display(),
            view.dtype(),
            dtype_name(dtype)
        );
        ensure!(
            view.shape() == [n, hidden],
            "{}: tensor `{name}` has shape {:?}, expected [{n}, {hidden}]",
            tensor_path.display(),
            view.shape()
        );
        by_name.insert(name, view.data().to_vec());
    }
    let mut data = Vec::with_capacity(layers.len());
    for l in &layers {
        let name = format!("layer.{l}");
        data.push(
            by_name
                .remove(&name)
                .ok_or_else(|| anyhow!("{}: tensor `{name}` is missing", tensor_path.display()))?,
        );
    }
    if let Some(extra) = by_name.keys().next() {
        bail!("{}: unexpected tensor `{extra}`", tensor_path.display());
    }
    let states = CapturedStates::from_parts(layers, hidden, dtype, n, data)?;
    Ok(Bundle { manifest, states })
}
