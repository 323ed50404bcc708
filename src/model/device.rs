//! Device profiles: where a role computes and in which float dtype.
//! Written as `cpu`, `cpu:bf16`, `cuda:0`, `cuda:0:f16`, `metal:0:bf16`.

use std::fmt;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Cpu,
    Cuda(usize),
    Metal(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceProfile {
    pub kind: DeviceKind,
    pub dtype: DType,
}

impl DeviceProfile {
    pub const CPU_F32: DeviceProfile = DeviceProfile {
        kind: DeviceKind::Cpu,
        dtype: DType::F32,
    };

    /// Parses a profile string. The dtype defaults to f32 on CPU and f16 on GPUs.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let parse_index = |s: &str| {
            s.parse::<usize>().map_err(|_| {
                format!("device `{text}`: `{s}` is not a device index (expected e.g. cuda:0)")
            })
        };
        let (kind, dtype_part) = match parts.as_slice() {
            ["cpu"] => (DeviceKind::Cpu, None),
            ["cpu", d] => (DeviceKind::Cpu, Some(*d)),
            ["cuda"] => (DeviceKind::Cuda(0), None),
            ["cuda", i] => (DeviceKind::Cuda(parse_index(i)?), None),
            ["cuda", i, d] => (DeviceKind::Cuda(parse_index(i)?), Some(*d)),
            ["metal"] => (DeviceKind::Metal(0), None),
            ["metal", i] => (DeviceKind::Metal(parse_index(i)?), None),
            ["metal", i, d] => (DeviceKind::Metal(parse_index(i)?), Some(*d)),
            _ => {
                return Err(format!(
                    "device `{text}` not understood: expected cpu[:f32|f16|bf16], cuda:N[:dtype] or metal:N[:dtype]"
                ))
            }
        };
        let dtype = match dtype_part {
            None if kind == DeviceKind::Cpu => DType::F32,
            None => DType::F16,
            Some(d) => dtype_from_name(d).ok_or_else(|| {
                format!("device `{text}`: dtype `{d}` is not one of f32, f16, bf16")
            })?,
        };
        Ok(DeviceProfile { kind, dtype })
    }

    /// Opens the candle device; fails clearly when this build lacks the backend. A GPU is
    /// opened once per process and shared by every model on it: each candle device loads its
    /// own copy of the kernel modules, which on a fresh machine means compiling them again.
    pub fn open(&self) -> Result<Device> {
        static OPENED: std::sync::OnceLock<
            std::sync::Mutex<std::collections::HashMap<DeviceKind, Device>>,
        > = std::sync::OnceLock::new();
        if self.kind == DeviceKind::Cpu {
            return Ok(Device::Cpu);
        }
        let mut opened = OPENED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(device) = opened.get(&self.kind) {
            return Ok(device.clone());
        }
        let device = self.open_new()?;
        opened.insert(self.kind, device.clone());
        Ok(device)
    }

    /// Fails when this build lacks the profile's backend, without touching any device: runs
    /// check it before they create their results directory.
    pub fn check_built(&self) -> Result<()> {
        match self.kind {
            DeviceKind::Cpu => Ok(()),
            DeviceKind::Cuda(_) if !cfg!(feature = "cuda") => {
                bail!("device {self}: this build has no CUDA support (rebuild with `make build-cuda`)")
            }
            DeviceKind::Metal(_) if !cfg!(feature = "metal") => {
                bail!("device {self}: this build has no Metal support (rebuild with `--features metal`)")
            }
            _ => Ok(()),
        }
    }

    fn open_new(&self) -> Result<Device> {
        self.check_built()?;
        match self.kind {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda(i) => {
                Device::new_cuda(i).with_context(|| format!("opening CUDA device {i}"))
            }
            DeviceKind::Metal(i) => {
                Device::new_metal(i).with_context(|| format!("opening Metal device {i}"))
            }
        }
    }

    pub fn is_gpu(&self) -> bool {
        !matches!(self.kind, DeviceKind::Cpu)
    }

    /// A name for the physical device without the dtype (`cpu`, `cuda:0`).
    pub fn device_name(&self) -> String {
        match self.kind {
            DeviceKind::Cpu => "cpu".into(),
            DeviceKind::Cuda(i) => format!("cuda:{i}"),
            DeviceKind::Metal(i) => format!("metal:{i}"),
        }
    }
}

impl fmt::Display for DeviceProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.device_name(), dtype_name(self.dtype))
    }
}

pub fn dtype_from_name(name: &str) -> Option<DType> {
    match name {
        "f32" => Some(DType::F32),
        "f16" => Some(DType::F16),
        "bf16" => Some(DType::BF16),
        _ => None,
    }
}

pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => other.as_str(),
    }
}

/// The profiles this build and machine can actually open, probed once per process. Probing
/// opens each GPU and lets it go again, so GPUs no model uses hold no context.
pub fn available_profiles() -> Vec<DeviceProfile> {
    static PROFILES: std::sync::OnceLock<Vec<DeviceProfile>> = std::sync::OnceLock::new();
    PROFILES.get_or_init(probe_profiles).clone()
}

fn probe_profiles() -> Vec<DeviceProfile> {
    let mut out = vec![
        DeviceProfile::CPU_F32,
        DeviceProfile {
            kind: DeviceKind::Cpu,
            dtype: DType::F16,
        },
        DeviceProfile {
            kind: DeviceKind::Cpu,
            dtype: DType::BF16,
        },
    ];
    if cfg!(feature = "cuda") {
        for i in 0..16 {
            let probe = DeviceProfile {
                kind: DeviceKind::Cuda(i),
                dtype: DType::F16,
            };
            if probe.open_new().is_err() {
                break;
            }
            for dtype in [DType::F16, DType::BF16, DType::F32] {
                out.push(DeviceProfile {
                    kind: DeviceKind::Cuda(i),
                    dtype,
                });
            }
        }
    }
    if cfg!(feature = "metal") && Device::new_metal(0).is_ok() {
        for dtype in [DType::F16, DType::BF16, DType::F32] {
            out.push(DeviceProfile {
                kind: DeviceKind::Metal(0),
                dtype,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profiles() {
        assert_eq!(DeviceProfile::parse("cpu").unwrap(), DeviceProfile::CPU_F32);
        let p = DeviceProfile::parse("cpu:bf16").unwrap();
        assert_eq!(p.dtype, DType::BF16);
        let p = DeviceProfile::parse("cuda:1").unwrap();
        assert_eq!((p.kind, p.dtype), (DeviceKind::Cuda(1), DType::F16));
        assert_eq!(
            DeviceProfile::parse("cuda:0:bf16").unwrap().to_string(),
            "cuda:0:bf16"
        );
    }

    #[test]
    fn rejects_bad_profiles_naming_the_value() {
        let e = DeviceProfile::parse("tpu:0").unwrap_err();
        assert!(e.contains("tpu:0"), "{e}");
        let e = DeviceProfile::parse("cpu:f64").unwrap_err();
        assert!(e.contains("f64"), "{e}");
        let e = DeviceProfile::parse("cuda:x").unwrap_err();
        assert!(e.contains("`x`"), "{e}");
    }
}
