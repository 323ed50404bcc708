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
use crate::record::limits::MAX_MODEL_LAYERS;
use crate::util::{read_untrusted_file, sha256_bytes, write_file_atomic};

pub const BUNDLE_FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const TENSORS_FILE: &str = "hidden_states.safetensors";
/// A manifest holds text and ids, never tensors.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Hidden states of 1M tokens × 8 layers × 16k wide in f32 would be 512 GiB; 32 GiB is plenty.
const MAX_TENSOR_BYTES: u64 = 32 << 30;
const MAX_MODEL_HIDDEN: usize = 1 << 17;
/// A safetensors header names each layer's tensor: a few dozen bytes per layer.
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Names, labels and checksums in a manifest: far beyond any real one, small enough that a
/// copy into every result and log line costs nothing.
pub const MAX_MANIFEST_NAME_BYTES: usize = 256;
/// A prompt or output text: 1M token positions (beyond any context) at a few bytes each.
pub const MAX_MANIFEST_TEXT_BYTES: usize = 8 << 20;
/// Token ids in a prompt or output: beyond any model's context (which is checked later).
pub const MAX_MANIFEST_TOKENS: usize = 1 << 20;

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
    /// True when the inference was stopped before EOS or `max_new_tokens`: its output is a
    /// prefix, so a trial verified from it is incomplete.
    #[serde(default)]
    pub cancelled: bool,
    pub hidden_states: TensorFile,
    /// Where the bundle came from in an experiment run (absent for a plain `infer`).
    #[serde(default)]
    pub context: Option<BundleContext>,
    /// The request the inference served, with its sha256 (absent from older bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<super::request::Request>,
    /// The Merkle root over every column at every position, bound to the request
    /// (docs/commitment.md); absent when the inference kept no store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<crate::engine::commitment::Commitment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleContext {
    pub experiment: String,
    pub trial: usize,
    pub prompt_category: String,
    pub prompt_id: String,
}

impl Manifest {
    /// The commitment, checked to cover exactly this bundle's model and tokens; an error
    /// naming the bundle's directory when there is none.
    pub fn checked_commitment(&self, dir: &Path) -> Result<&crate::engine::commitment::Commitment> {
        let c = self.commitment.as_ref().with_context(|| {
            format!(
                "{}: the manifest carries no commitment (a bundle of an older `infer`, of \
                 `infer --no-store`, or of `run`)",
                dir.display()
            )
        })?;
        c.check().context("manifest commitment")?;
        ensure!(
            c.shape.columns == self.model.n_layers + 1
                && c.shape.hidden == self.model.hidden
                && c.shape.positions == self.prompt_ids.len() + self.output_ids.len()
                && !self.prompt_ids.is_empty(),
            "{}: manifest commitment: {} columns × {} positions × {} wide do not fit a \
             {}-layer model {} wide and {} + {} tokens",
            dir.display(),
            c.shape.columns,
            c.shape.positions,
            c.shape.hidden,
            self.model.n_layers,
            self.model.hidden,
            self.prompt_ids.len(),
            self.output_ids.len()
        );
        Ok(c)
    }
}

pub struct Bundle {
    pub manifest: Manifest,
    pub states: CapturedStates,
}

/// Writes a bundle into `dir` (created if needed; existing bundle files are replaced).
pub fn write_bundle(dir: &Path, mut manifest: Manifest, states: &CapturedStates) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating bundle directory {}", dir.display()))?;
    // Refused before writing: a bundle no verifier would read is of no use (the header adds
    // well under a MiB to the data).
    ensure!(
        (states.bytes() as u64) < MAX_TENSOR_BYTES - MAX_HEADER_BYTES,
        "{} bytes of hidden states exceed the {MAX_TENSOR_BYTES}-byte limit a verifier accepts; \
         capture fewer layers (--layers) or tokens",
        states.bytes()
    );
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
    // Streamed to disk (safetensors writes a temporary file and renames it, so a link planted
    // at the name is replaced, not followed), then hashed from the file: no second in-memory
    // copy of the captured states, which for a large model run in the GBs.
    let tensor_path = dir.join(TENSORS_FILE);
    safetensors::tensor::serialize_to_file(views, None, &tensor_path)
        .with_context(|| format!("writing hidden states to {}", tensor_path.display()))?;
    // On disk before the manifest vouches for it (write_file_atomic syncs the manifest); the
    // same handle is then read back for its checksum and size.
    let file = std::fs::File::open(&tensor_path)
        .and_then(|file| file.sync_all().map(|()| file))
        .with_context(|| format!("syncing {}", tensor_path.display()))?;
    let (sha256, bytes) = crate::util::sha256_stream(file, &tensor_path)?;
    manifest.hidden_states = TensorFile {
        file: TENSORS_FILE.into(),
        sha256,
        bytes,
    };
    manifest.layers = states.layers.clone();
    let manifest_path = dir.join(MANIFEST_FILE);
    write_file_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    // safetensors' temporary file is private (0600); give the tensors the permissions an
    // ordinary new file gets here, as the manifest did, so a bundle copied with its modes
    // stays readable by whoever verifies it.
    let permissions = std::fs::metadata(&manifest_path)
        .with_context(|| format!("{}: reading its permissions", manifest_path.display()))?
        .permissions();
    std::fs::set_permissions(&tensor_path, permissions)
        .with_context(|| format!("{}: setting its permissions", tensor_path.display()))?;
    Ok(())
}

/// Writes the bundle of segment mode (docs/commitment.md): the manifest alone, its commitment
/// root standing for every state; no hidden-states file, no layers. A few KB whatever the
/// model; the states stay in the inferencer's private store until a challenge opens them.
pub fn write_root_only_bundle(dir: &Path, mut manifest: Manifest) -> Result<()> {
    ensure!(
        manifest.commitment.is_some(),
        "a root-only bundle needs the commitment of a store"
    );
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating bundle directory {}", dir.display()))?;
    manifest.layers = Vec::new();
    manifest.hidden_states = TensorFile {
        file: TENSORS_FILE.into(),
        sha256: String::new(),
        bytes: 0,
    };
    write_file_atomic(
        &dir.join(MANIFEST_FILE),
        &serde_json::to_vec_pretty(&manifest)?,
    )
}

impl Manifest {
    /// A segment-mode bundle: a commitment, and no shipped states at all.
    pub fn is_root_only(&self) -> bool {
        self.commitment.is_some() && self.layers.is_empty() && self.hidden_states.bytes == 0
    }
}

/// Reads and checks a bundle. Everything is validated before use: sizes, checksum, names,
/// shapes, dtypes.
pub fn read_bundle(dir: &Path) -> Result<Bundle> {
    let manifest = read_manifest(dir)?;
    let states = read_states(dir, &manifest)?;
    Ok(Bundle { manifest, states })
}

/// Reads and checks a bundle's manifest alone: cheap, so a verifier can hold its claims
/// against the model (shape, context) before the hidden states are read.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_bytes = read_untrusted_file(&manifest_path, MAX_MANIFEST_BYTES)
        .context("reading the bundle manifest")?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .with_context(|| format!("{}: not a valid bundle manifest", manifest_path.display()))?;
    ensure!(
        manifest.format_version == BUNDLE_FORMAT_VERSION,
        "{}: format_version {} is not supported (expected {BUNDLE_FORMAT_VERSION})",
        manifest_path.display(),
        manifest.format_version
    );
    check_bounds(&manifest).with_context(|| format!("{}", manifest_path.display()))?;
    // Only the one fixed name is ever opened: no path from the manifest is followed.
    ensure!(
        manifest.hidden_states.file == TENSORS_FILE,
        "{}: hidden_states.file is `{}`; only `{TENSORS_FILE}` inside the bundle is accepted",
        manifest_path.display(),
        manifest.hidden_states.file
    );
    ensure!(
        manifest.hidden_states.bytes <= MAX_TENSOR_BYTES,
        "{}: hidden_states.bytes {} exceeds the {MAX_TENSOR_BYTES}-byte limit",
        manifest_path.display(),
        manifest.hidden_states.bytes
    );
    let model = &manifest.model;
    ensure!(
        (1..=MAX_MODEL_LAYERS).contains(&model.n_layers)
            && (1..=MAX_MODEL_HIDDEN).contains(&model.hidden),
        "{}: model.n_layers {} / model.hidden {} are not those of a transformer (at most \
         {MAX_MODEL_LAYERS} layers, {MAX_MODEL_HIDDEN} wide)",
        manifest_path.display(),
        model.n_layers,
        model.hidden
    );
    let timings = &manifest.timings;
    ensure!(
        [
            timings.prefill_s,
            timings.decode_s,
            timings.total_s,
            timings.tokens_per_s
        ]
        .iter()
        .all(|t| t.is_finite() && *t >= 0.0)
            && timings.total_s > 0.0,
        "{}: timings {:?} are not durations (finite, not negative, total_s above 0)",
        manifest_path.display(),
        timings
    );
    let dtype = dtype_from_name(&manifest.dtype).ok_or_else(|| {
        anyhow!(
            "{}: dtype `{}` is not f32, f16 or bf16",
            manifest_path.display(),
            manifest.dtype
        )
    })?;
    if manifest.is_root_only() {
        // Nothing else to size: the commitment was bounded above, and its fit to the model and
        // tokens is checked where it is used.
        return Ok(manifest);
    }
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
    ensure!(
        layers.iter().any(|&l| l >= 1),
        "{}: layers {:?} hold no checked layer (0 is the embeddings; expected an index >= 1)",
        manifest_path.display(),
        manifest.layers
    );
    if let Some(bad) = layers.iter().find(|&&l| l > manifest.model.n_layers) {
        bail!(
            "{}: layer {bad} is beyond the model's {} layers",
            manifest_path.display(),
            manifest.model.n_layers
        );
    }
    // The file holds exactly the layers × tokens × hidden values the manifest describes,
    // plus a header: a size claimed beyond that is refused before anything is read.
    let data_bytes =
        layers.len() as u128 * n as u128 * hidden as u128 * dtype.size_in_bytes() as u128;
    let claimed = manifest.hidden_states.bytes as u128;
    ensure!(
        claimed > data_bytes && claimed <= data_bytes + MAX_HEADER_BYTES as u128,
        "{}: hidden_states.bytes {claimed} is not the size of {} layers × {n} tokens × {hidden} \
         {} values ({data_bytes} bytes) and a header",
        manifest_path.display(),
        layers.len(),
        dtype_name(dtype)
    );
    Ok(manifest)
}

/// Every number and string of an untrusted manifest is bounded before it is used, copied into
/// a result or turned into a file name (a trial of 2^64 - 1, a megabyte of category).
fn check_bounds(manifest: &Manifest) -> Result<()> {
    if let Some(c) = &manifest.commitment {
        c.check().context("manifest commitment")?;
    }
    let context = manifest.context.as_ref();
    let names = [
        ("model.name", Some(&manifest.model.name)),
        ("model.weights_sha256", Some(&manifest.model.weights_sha256)),
        ("precision", Some(&manifest.precision)),
        ("device", Some(&manifest.device)),
        ("dtype", Some(&manifest.dtype)),
        ("tokenizer", Some(&manifest.tokenizer)),
        ("hidden_states.file", Some(&manifest.hidden_states.file)),
        ("hidden_states.sha256", Some(&manifest.hidden_states.sha256)),
        ("context.experiment", context.map(|c| &c.experiment)),
        (
            "context.prompt_category",
            context.map(|c| &c.prompt_category),
        ),
        ("context.prompt_id", context.map(|c| &c.prompt_id)),
    ];
    for (field, value) in names {
        if let Some(value) = value {
            ensure!(
                value.len() <= MAX_MANIFEST_NAME_BYTES,
                "{field} is {} bytes long (at most {MAX_MANIFEST_NAME_BYTES})",
                value.len()
            );
        }
    }
    for (field, text) in [
        ("prompt_text", &manifest.prompt_text),
        ("output_text", &manifest.output_text),
    ] {
        ensure!(
            text.len() <= MAX_MANIFEST_TEXT_BYTES,
            "{field} is {} bytes long (at most {MAX_MANIFEST_TEXT_BYTES})",
            text.len()
        );
    }
    for (field, ids) in [
        ("prompt_ids", &manifest.prompt_ids),
        ("output_ids", &manifest.output_ids),
    ] {
        ensure!(
            ids.len() <= MAX_MANIFEST_TOKENS,
            "{field} holds {} ids (at most {MAX_MANIFEST_TOKENS})",
            ids.len()
        );
    }
    ensure!(!manifest.prompt_ids.is_empty(), "prompt_ids is empty");
    if let Some(c) = context {
        let limit = crate::record::limits::MAX_TRIALS;
        ensure!(
            c.trial < limit,
            "context.trial {} is not a trial number (at most {})",
            c.trial,
            limit - 1
        );
    }
    manifest
        .sampling
        .validate()
        .map_err(|e| anyhow!("sampling: {e}"))?;
    ensure!(
        manifest.sampling.max_new_tokens <= MAX_MANIFEST_TOKENS,
        "sampling.max_new_tokens {} is beyond any context (at most {MAX_MANIFEST_TOKENS})",
        manifest.sampling.max_new_tokens
    );
    Ok(())
}

/// Reads the safetensors header itself, so that a tensor whose shape is not the manifest's
/// (say 10^12 rows) is refused by name; the library's own check only says that some tensor
/// has an "invalid shape, data type, or offset".
fn check_tensor_shapes(bytes: &[u8], path: &Path, n: usize, hidden: usize) -> Result<()> {
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| anyhow!("{}: too short for a safetensors file", path.display()))?;
    ensure!(
        header_len <= MAX_HEADER_BYTES && 8 + header_len <= bytes.len() as u64,
        "{}: a safetensors header of {header_len} bytes does not fit the file",
        path.display()
    );
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len as usize])
            .with_context(|| format!("{}: the safetensors header is not JSON", path.display()))?;
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let shown: String = name.chars().take(64).collect();
        let shape = info.get("shape").and_then(|s| s.as_array());
        let expected = [n as u64, hidden as u64];
        let matches = shape.is_some_and(|s| {
            s.len() == 2 && s.iter().zip(expected).all(|(v, e)| v.as_u64() == Some(e))
        });
        if !matches {
            let claimed = shape.map_or_else(
                || "none".to_string(),
                |s| serde_json::Value::Array(s.iter().take(8).cloned().collect()).to_string(),
            );
            bail!(
                "{}: tensor `{shown}` has shape {claimed}, expected [{n}, {hidden}] (the manifest's \
                 tokens × hidden)",
                path.display()
            );
        }
    }
    Ok(())
}

/// Reads a bundle's hidden states as its (checked) manifest describes them.
pub fn read_states(dir: &Path, manifest: &Manifest) -> Result<CapturedStates> {
    ensure!(
        !manifest.is_root_only(),
        "{}: a root-only bundle (segment mode) ships no hidden states, only its commitment root: \
         verify it from an opening (`challenge`, `open`, `verify --opening`, or `run --step \
         challenge|open|verify --mode segment`)",
        dir.display()
    );
    let tensor_path = dir.join(TENSORS_FILE);
    let dtype = dtype_from_name(&manifest.dtype).expect("read_manifest checked the dtype");
    let n = manifest.output_ids.len();
    let hidden = manifest.model.hidden;
    let layers = manifest.layers.clone();
    // The checksum is checked on the file as it streams past, before any memory is sized by
    // it (a sparse 16 GB file costs nothing on disk); then the bytes are read once and checked
    // again, so that what is parsed is what was hashed.
    let streamed = crate::util::sha256_untrusted_file(&tensor_path, manifest.hidden_states.bytes)
        .context("checking the bundle's hidden states (size from the manifest)")?;
    ensure!(
        streamed == manifest.hidden_states.sha256,
        "{}: sha256 {streamed} does not match the manifest's {} — the bundle was altered or damaged",
        tensor_path.display(),
        manifest.hidden_states.sha256
    );
    let bytes = read_untrusted_file(&tensor_path, manifest.hidden_states.bytes)
        .context("reading the bundle's hidden states (size from the manifest)")?;
    ensure!(
        bytes.len() as u64 == manifest.hidden_states.bytes,
        "{}: {} bytes, but the manifest says {}",
        tensor_path.display(),
        bytes.len(),
        manifest.hidden_states.bytes
    );
    let sha = sha256_bytes(&bytes);
    ensure!(
        sha == manifest.hidden_states.sha256,
        "{}: sha256 {sha} does not match the manifest's {} — the bundle was altered or damaged",
        tensor_path.display(),
        manifest.hidden_states.sha256
    );
    check_tensor_shapes(&bytes, &tensor_path, n, hidden)?;
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
    CapturedStates::from_parts(layers, hidden, dtype, n, data)
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
