//! Reading weights from a GGUF file or a Hugging Face safetensors directory, and turning them
//! into linear layers of the requested precision.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::kernels::{self, Q4_1Matrix};
use super::kernels_q8::{self, Q8_0Matrix};

/// How the weights are held while computing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Float weights (quantized GGUF tensors dequantized), computed in the profile's dtype.
    Full,
    /// Weights quantized at load time to this GGML type (the "cheat" of experiments 3–5).
    Quantized(GgmlDType),
    /// A GGUF's own tensors as stored (e.g. Q4_1), with candle's quantized kernels.
    Native,
}

impl Precision {
    pub const NAMES: [&'static str; 7] = ["full", "q4_0", "q4_1", "q4_k", "q5_k", "q8_0", "native"];

    /// True when linear layers run on quantized kernels, which take f32 activations.
    pub fn uses_quantized_kernels(&self) -> bool {
        !matches!(self, Precision::Full)
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "full" => Precision::Full,
            "native" => Precision::Native,
            "q4_0" => Precision::Quantized(GgmlDType::Q4_0),
            "q4_1" => Precision::Quantized(GgmlDType::Q4_1),
            "q4_k" => Precision::Quantized(GgmlDType::Q4K),
            "q5_k" => Precision::Quantized(GgmlDType::Q5K),
            "q8_0" => Precision::Quantized(GgmlDType::Q8_0),
            other => {
                return Err(format!(
                    "precision `{other}` is not one of {}",
                    Precision::NAMES.join(", ")
                ))
            }
        })
    }
}

/// Written as its name (`q4_0`); unknown names are refused with the list of known ones.
impl serde::Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor (not String then parse) so the error is raised at the value itself and
        // YAML errors keep the full key path, like an enum's unknown variant.
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Precision;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "one of {}", Precision::NAMES.join(", "))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Precision, E> {
                v.parse()
                    .map_err(|_| E::unknown_variant(v, &Precision::NAMES))
            }
        }
        d.deserialize_str(Name)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Precision::Full => "full",
            Precision::Native => "native",
            Precision::Quantized(GgmlDType::Q4_0) => "q4_0",
            Precision::Quantized(GgmlDType::Q4_1) => "q4_1",
            Precision::Quantized(GgmlDType::Q4K) => "q4_k",
            Precision::Quantized(GgmlDType::Q5K) => "q5_k",
            Precision::Quantized(GgmlDType::Q8_0) => "q8_0",
            Precision::Quantized(other) => return write!(f, "{other:?}"),
        };
        f.write_str(s)
    }
}

/// A linear layer `y = x Wᵀ + b` whose weight is either a float tensor or a quantized one.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum LinearWeight {
    /// [out, in], in the compute dtype.
    Dense(Tensor),
    Quantized(QMatMul),
    /// Q4_1 on the CPU: this crate's kernels (candle 0.11 has only a scalar one); candle's
    /// results up to f32 rounding (blocks summed in float lanes, as ggml does).
    Q4_1(Arc<Q4_1Matrix>),
    /// Q8_0 on the CPU (the GGUF's lm_head at `native`): this crate's kernel on rayon, which
    /// sums blocks in float lanes as ggml does.
    Q8_0(Arc<Q8_0Matrix>),
}

impl Linear {
    /// `x` is [tokens, in]; returns [tokens, out] in `x`'s dtype. The product runs in the
    /// weight's dtype (f32 for quantized kernels): a GGUF can mix quantized and float tensors,
    /// so one layer's linears may want different input dtypes.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let wanted = match &self.weight {
            LinearWeight::Dense(w) => w.dtype(),
            LinearWeight::Quantized(_) | LinearWeight::Q4_1(_) | LinearWeight::Q8_0(_) => {
                DType::F32
            }
        };
        let input = x.to_dtype(wanted)?;
        let y = match &self.weight {
            LinearWeight::Dense(w) => match dense_f32_matvec(w, &input)? {
                Some(y) => y,
                None => input.matmul(&w.t()?)?,
            },
            LinearWeight::Quantized(q) => q.forward(&input)?,
            LinearWeight::Q4_1(q) => {
                let (m, k) = input.dims2()?;
                anyhow::ensure!(
                    k == q.cols(),
                    "Q4_1 linear: input {k} wide, weight {}",
                    q.cols()
                );
                let x: Vec<f32> = input.flatten_all()?.to_vec1()?;
                Tensor::from_vec(q.matmul(&x, m), (m, q.rows()), input.device())?
            }
            LinearWeight::Q8_0(q) => {
                let (m, k) = input.dims2()?;
                anyhow::ensure!(
                    k == q.cols(),
                    "Q8_0 linear: input {k} wide, weight {}",
                    q.cols()
                );
                let x: Vec<f32> = input.flatten_all()?.to_vec1()?;
                Tensor::from_vec(q.matmul(&x, m), (m, q.rows()), input.device())?
            }
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        Ok(y.to_dtype(x.dtype())?)
    }

    /// One token through this linear on the CPU, slice in, vector out (the fast decode step):
    /// the kernels `forward` runs for one row, so the same numbers. Weights without a slice
    /// kernel (candle's other quantized types) go through `forward`.
    pub fn matvec_cpu(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut y = match &self.weight {
            LinearWeight::Dense(w)
                if w.dtype() == DType::F32 && w.device().is_cpu() && w.is_contiguous() =>
            {
                let (rows, cols) = w.dims2()?;
                anyhow::ensure!(
                    x.len() == cols,
                    "linear: input {} wide, weight {cols}",
                    x.len()
                );
                with_cpu_f32(w, |w| kernels::matvec_f32(w, rows, x))?
            }
            LinearWeight::Q4_1(q) => {
                anyhow::ensure!(x.len() == q.cols(), "Q4_1 linear: input {} wide", x.len());
                q.matmul(x, 1)
            }
            LinearWeight::Q8_0(q) => {
                anyhow::ensure!(x.len() == q.cols(), "Q8_0 linear: input {} wide", x.len());
                q.matmul(x, 1)
            }
            _ => {
                let input = Tensor::from_slice(x, (1, x.len()), &Device::Cpu)?;
                return Ok(self.forward(&input)?.flatten_all()?.to_vec1()?);
            }
        };
        if let Some(b) = &self.bias {
            let b = b.to_dtype(DType::F32)?;
            with_cpu_f32(&b, |b| y.iter_mut().zip(b).for_each(|(y, b)| *y += b))?;
        }
        Ok(y)
    }

    /// The float weight ([out, in]); None when it is block-quantized.
    pub fn dense_weight(&self) -> Option<&Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => Some(w),
            _ => None,
        }
    }

    /// This linear with another float weight of the same shape, the bias kept.
    pub fn with_dense_weight(&self, weight: Tensor) -> Linear {
        Linear {
            weight: LinearWeight::Dense(weight),
            bias: self.bias.clone(),
        }
    }

    /// This linear with its float weight block-quantized to `ty` (the real rounding of
    /// `QTensor::quantize`) and run by the quantized kernels: a cheat confined to the layers a
    /// provider chooses. Refused for a weight that is quantized already.
    pub fn requantized(&self, ty: GgmlDType, device: &Device) -> Result<Linear> {
        let LinearWeight::Dense(w) = &self.weight else {
            bail!("the weight is quantized already; requantize a full-precision model");
        };
        let float = w.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let in_dim = *float.dims().last().unwrap_or(&0);
        anyhow::ensure!(
            in_dim % ty.block_size() == 0,
            "input dimension {in_dim} is not a multiple of {ty:?}'s block size {}",
            ty.block_size()
        );
        let q = if device.is_cpu() {
            QTensor::quantize(&float, ty)?
        } else {
            QTensor::quantize_onto(&float, ty, device)?
        };
        Ok(Linear {
            weight: LinearWeight::Quantized(QMatMul::QTensor(Arc::new(q))),
            bias: self.bias.clone(),
        })
    }

    pub fn bytes(&self) -> usize {
        let w = match &self.weight {
            LinearWeight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            LinearWeight::Quantized(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            LinearWeight::Quantized(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                t.elem_count() * t.dtype().size_in_bytes()
            }
            LinearWeight::Q4_1(q) => q.bytes(),
            LinearWeight::Q8_0(q) => q.bytes(),
        };
        w + self
            .bias
            .as_ref()
            .map_or(0, |b| b.elem_count() * b.dtype().size_in_bytes())
    }
}

/// One token through an f32 weight on the CPU: this crate's row-split matrix–vector product
/// (candle's gemm runs it on one thread). None where it does not apply.
fn dense_f32_matvec(w: &Tensor, input: &Tensor) -> Result<Option<Tensor>> {
    let applies = !kernels::candle_only()
        && w.device().is_cpu()
        && w.dtype() == DType::F32
        && w.is_contiguous()
        && input.dims2().is_ok_and(|(m, _)| m == 1);
    if !applies {
        return Ok(None);
    }
    let (rows, cols) = w.dims2()?;
    let x: Vec<f32> = input.flatten_all()?.to_vec1()?;
    anyhow::ensure!(
        x.len() == cols,
        "linear: input {} wide, weight {cols}",
        x.len()
    );
    let (storage, layout) = w.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let all = cpu.as_slice::<f32>()?;
    let start = layout.start_offset();
    let y = kernels::matvec_f32(&all[start..start + rows * cols], rows, &x);
    Ok(Some(Tensor::from_vec(y, (1, rows), input.device())?))
}

/// Runs `f` on a contiguous f32 CPU tensor's elements, without copying them.
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        bail!("a tensor on {:?}, expected the CPU", t.device());
    };
    let all = cpu.as_slice::<f32>()?;
    let (start, end) = layout
        .contiguous_offsets()
        .context("a strided tensor where a contiguous one was expected")?;
    Ok(f(&all[start..end]))
}

/// This crate's kernels' form of a Q4_1 or Q8_0 CPU weight, or the weight as it is.
fn cpu_q4_1(q: QMatMul) -> Result<LinearWeight> {
    if kernels::candle_only() {
        return Ok(LinearWeight::Quantized(q));
    }
    if let QMatMul::QTensor(t) = &q {
        if t.device().is_cpu() {
            if let Ok((rows, cols)) = t.shape().dims2() {
                if t.dtype() == GgmlDType::Q4_1 && cols.is_multiple_of(kernels::BLOCK) {
                    let m = Q4_1Matrix::from_bytes(rows, cols, &t.data()?)?;
                    return Ok(LinearWeight::Q4_1(Arc::new(m)));
                }
                if t.dtype() == GgmlDType::Q8_0 && cols.is_multiple_of(kernels_q8::BLOCK) {
                    let m = Q8_0Matrix::from_bytes(rows, cols, &t.data()?)?;
                    return Ok(LinearWeight::Q8_0(Arc::new(m)));
                }
            }
        }
    }
    Ok(LinearWeight::Quantized(q))
}

/// One tensor as found in the file.
pub enum RawTensor {
    Quantized(QTensor),
    Float(Tensor),
}

/// Where the weights come from; tensors are looked up by their Hugging Face names and mapped
/// to llama.cpp's names for GGUF.
pub enum WeightFile {
    Gguf {
        path: PathBuf,
        content: gguf_file::Content,
        file: File,
    },
    Safetensors {
        tensors: candle_core::safetensors::MmapedSafetensors,
    },
}

impl WeightFile {
    pub fn open_gguf(path: &Path) -> Result<(Self, usize)> {
        let mut file =
            File::open(path).with_context(|| format!("opening GGUF file {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file)
            .with_context(|| format!("{}: not a readable GGUF file", path.display()))?;
        let n = content.tensor_infos.len();
        Ok((
            WeightFile::Gguf {
                path: path.to_path_buf(),
                content,
                file,
            },
            n,
        ))
    }

    pub fn open_safetensors(paths: &[PathBuf]) -> Result<Self> {
        // SAFETY: the files are memory-mapped read-only; they must not be modified while loaded,
        // which is the same contract every safetensors loader relies on.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(paths) }
            .with_context(|| format!("memory-mapping safetensors {paths:?}"))?;
        Ok(WeightFile::Safetensors { tensors })
    }

    pub fn gguf_content(&self) -> Option<&gguf_file::Content> {
        match self {
            WeightFile::Gguf { content, .. } => Some(content),
            WeightFile::Safetensors { .. } => None,
        }
    }

    pub fn contains(&self, hf_name: &str) -> bool {
        match self {
            WeightFile::Gguf { content, .. } => {
                content.tensor_infos.contains_key(&gguf_name(hf_name))
            }
            WeightFile::Safetensors { tensors } => tensors.get(hf_name).is_ok(),
        }
    }

    /// True when the file stores this tensor block-quantized (Q4_1, Q8_0, …): at `native`
    /// precision it then runs on candle's quantized kernels, which round activations too.
    pub fn stores_quantized(&self, hf_name: &str) -> bool {
        match self {
            WeightFile::Gguf { content, .. } => content
                .tensor_infos
                .get(&gguf_name(hf_name))
                .is_some_and(|info| {
                    !matches!(
                        info.ggml_dtype,
                        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
                    )
                }),
            WeightFile::Safetensors { .. } => false,
        }
    }

    /// Reads a tensor onto the CPU (quantization happens there; the caller moves it).
    pub fn read(&mut self, hf_name: &str) -> Result<RawTensor> {
        match self {
            WeightFile::Gguf {
                path,
                content,
                file,
            } => {
                let name = gguf_name(hf_name);
                let q = content
                    .tensor(file, &name, &Device::Cpu)
                    .with_context(|| format!("{}: reading tensor `{name}`", path.display()))?;
                Ok(RawTensor::Quantized(q))
            }
            WeightFile::Safetensors { tensors } => {
                let t = tensors
                    .load(hf_name, &Device::Cpu)
                    .with_context(|| format!("safetensors: reading tensor `{hf_name}`"))?;
                Ok(RawTensor::Float(t))
            }
        }
    }
}

/// llama.cpp's tensor names for the Hugging Face ones this model uses.
fn gguf_name(hf: &str) -> String {
    let fixed: HashMap<&str, &str> = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ]
    .into_iter()
    .collect();
    if let Some(name) = fixed.get(hf) {
        return name.to_string();
    }
    if let Some(rest) = hf.strip_prefix("model.layers.") {
        let (layer, tail) = rest.split_once('.').unwrap_or((rest, ""));
        let mapped = match tail {
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.q_proj.bias" => "attn_q.bias",
            "self_attn.k_proj.bias" => "attn_k.bias",
            "self_attn.v_proj.bias" => "attn_v.bias",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            "input_layernorm.weight" => "attn_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            other => return format!("blk.{layer}.{other}"),
        };
        return format!("blk.{layer}.{mapped}");
    }
    hf.to_string()
}

/// Turns file tensors into compute tensors for one precision, device and dtype.
pub struct WeightBuilder<'a> {
    pub file: &'a mut WeightFile,
    pub precision: Precision,
    pub device: Device,
    /// Dtype of float tensors (activations follow it).
    pub dtype: DType,
}

impl WeightBuilder<'_> {
    /// A float tensor in the compute dtype on the target device (norms, embeddings, biases).
    pub fn float(&mut self, hf_name: &str) -> Result<Tensor> {
        let t = match self.file.read(hf_name)? {
            RawTensor::Quantized(q) => q.dequantize(&Device::Cpu)?,
            RawTensor::Float(t) => t,
        };
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    pub fn optional_float(&mut self, hf_name: &str) -> Result<Option<Tensor>> {
        if self.file.contains(hf_name) {
            self.float(hf_name).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn linear(&mut self, weight_name: &str, bias_name: Option<&str>) -> Result<Linear> {
        let raw = self.file.read(weight_name)?;
        let weight = self.linear_weight(raw, weight_name)?;
        // An architecture with biases must have them: running without would silently
        // compute another model.
        let bias = match bias_name {
            Some(b) => Some(self.float(b)?),
            None => None,
        };
        // A quantized matmul returns f32, so its bias must be f32 too.
        let bias = match (&weight, bias) {
            (
                LinearWeight::Quantized(_) | LinearWeight::Q4_1(_) | LinearWeight::Q8_0(_),
                Some(b),
            ) => Some(b.to_dtype(DType::F32)?),
            (_, b) => b,
        };
        Ok(Linear { weight, bias })
    }

    /// Same as `linear` but from a tensor already in hand (tied embeddings).
    pub fn linear_from_float(&self, weight: &Tensor, name: &str) -> Result<Linear> {
        let raw = RawTensor::Float(weight.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
        Ok(Linear {
            weight: self.linear_weight(raw, name)?,
            bias: None,
        })
    }

    fn linear_weight(&self, raw: RawTensor, name: &str) -> Result<LinearWeight> {
        match (self.precision, raw) {
            (Precision::Full, RawTensor::Quantized(q)) => Ok(LinearWeight::Dense(
                q.dequantize(&Device::Cpu)?
                    .to_dtype(self.dtype)?
                    .to_device(&self.device)?,
            )),
            (Precision::Full, RawTensor::Float(t)) | (Precision::Native, RawTensor::Float(t)) => {
                Ok(LinearWeight::Dense(
                    t.to_dtype(self.dtype)?.to_device(&self.device)?,
                ))
            }
            (Precision::Native, RawTensor::Quantized(q)) => {
                let q = if self.device.is_cpu() {
                    q
                } else {
                    QTensor::quantize_onto(&q.dequantize(&Device::Cpu)?, q.dtype(), &self.device)?
                };
                cpu_q4_1(QMatMul::from_qtensor(q)?)
            }
            (Precision::Quantized(ty), raw) => {
                let float = match raw {
                    RawTensor::Quantized(q) => q.dequantize(&Device::Cpu)?,
                    RawTensor::Float(t) => t.to_dtype(DType::F32)?,
                };
                let in_dim = *float.dims().last().unwrap_or(&0);
                if in_dim % ty.block_size() != 0 {
                    bail!(
                        "cannot quantize `{name}` to {}: its input dimension {in_dim} is not a multiple of the block size {}",
                        Precision::Quantized(ty),
                        ty.block_size()
                    );
                }
                let q = if self.device.is_cpu() {
                    QTensor::quantize(&float, ty)?
                } else {
                    QTensor::quantize_onto(&float, ty, &self.device)?
                };
                // Keep it quantized: `QMatMul::from_qtensor` would honour CANDLE_DEQUANTIZE_ALL.
                cpu_q4_1(QMatMul::QTensor(Arc::new(q)))
            }
        }
    }
}

pub fn missing(name: &str) -> anyhow::Error {
    anyhow!("weight `{name}` is missing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_hf_names_to_llama_cpp_names() {
        assert_eq!(
            gguf_name("model.layers.3.self_attn.q_proj.weight"),
            "blk.3.attn_q.weight"
        );
        assert_eq!(
            gguf_name("model.layers.12.mlp.down_proj.weight"),
            "blk.12.ffn_down.weight"
        );
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
    }

    #[test]
    fn precision_names_round_trip() {
        for name in Precision::NAMES {
            let p: Precision = name.parse().unwrap();
            assert_eq!(p.to_string(), name);
        }
        let e = "q3".parse::<Precision>().unwrap_err();
        assert!(e.contains("`q3`"), "{e}");
    }
}
